"""Read and validate request bodies and path parameters into wire models."""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request

from api.problems import field_errors
from api.schemas import MAX_ID
from relay.errors import InvalidInput, NotFound

M = TypeVar("M", bound=BaseModel)


async def read_json(request: Request, model: type[M]) -> M:
    if "json" not in request.headers.get("content-type", ""):
        raise HTTPException(415, "Send the body as application/json.")
    try:
        data = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HTTPException(400, "The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise HTTPException(400, "The body must be a JSON object.")
    try:
        # Wire names only: snake_case spellings are Python's business, not the API's.
        return model.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise InvalidInput(field_errors(exc)) from None


async def read_optional_json(request: Request, model: type[M]) -> M:
    """A body that may be left out entirely: no body means every field's default."""
    if not await request.body():
        return model.model_validate({})
    return await read_json(request, model)


def int_param(request: Request, name: str, what: str) -> int:
    raw = request.path_params[name]
    try:
        value = int(raw)
    except ValueError:
        raise NotFound(what) from None
    if not 0 < value <= MAX_ID:
        raise NotFound(what)
    return value


def str_param(request: Request, name: str, what: str, max_length: int = 200) -> str:
    value = str(request.path_params[name])
    if not value or len(value) > max_length:
        raise NotFound(what)
    return value

"""Errors → application/problem+json (RFC 9457). One table; exception text never leaks."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from relay.errors import Conflict, InvalidInput, NotFound
from storage.group_commit import GroupClosed

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def problem(
    status: int,
    detail: str | None = None,
    *,
    invalid_params: list[dict[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
    extensions: Mapping[str, object] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "status": status,
        "title": _TITLES.get(status, "Error"),
    }
    if detail:
        body["detail"] = detail
    if invalid_params is not None:
        body["invalidParams"] = invalid_params
    body.update(extensions or {})
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _field_name(loc: tuple[int | str, ...]) -> str:
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


def field_errors(exc: ValidationError) -> dict[str, str]:
    """Per-field messages of a request body's validation, keyed by the wire field name."""
    fields: dict[str, str] = {}
    for err in exc.errors(include_url=False, include_input=False):
        fields.setdefault(_field_name(tuple(err["loc"])), _reason(err))
    return fields


def _reason(err: Any) -> str:
    message = str(err["msg"])
    if err["type"] == "missing":
        return "This field is required."
    if err["type"] == "extra_forbidden":
        return "Unknown field."
    return message.removeprefix("Value error, ")


async def on_not_found(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NotFound)
    return problem(404, f"{exc.what[:1].upper()}{exc.what[1:]} not found.")


async def on_conflict(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Conflict)
    return problem(409, str(exc), extensions=exc.extensions)


async def on_invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidInput)
    params = [{"name": k, "reason": v} for k, v in exc.fields.items()]
    return problem(422, "The request has invalid fields.", invalid_params=params)


async def on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return problem(exc.status_code, exc.detail, headers=exc.headers)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "Something went wrong on our side. Nothing was changed; please retry.")


async def on_shutting_down(request: Request, exc: Exception) -> Response:
    # The group commit takes no new work once the relay is stopping (storage.group_commit).
    detail = "The relay is shutting down. Nothing was changed; retry in a few seconds."
    return problem(503, detail, headers={"Retry-After": "5"})


EXCEPTION_HANDLERS: dict[Any, Any] = {
    GroupClosed: on_shutting_down,
    NotFound: on_not_found,
    Conflict: on_conflict,
    InvalidInput: on_invalid,
    HTTPException: on_http,
    Exception: on_unexpected,
}

"""Each route's contract: the schema classes it validates and answers with. `api.openapi`
turns these into the OpenAPI document, so the document cannot drift from the code."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from starlette.routing import Route

Auth = Literal["partner", "admin", "none"]


@dataclass(frozen=True)
class Contract:
    summary: str
    tag: str
    auth: Auth = "partner"
    # The JSON body the handler validates with (`read_json`), if any.
    body: type[BaseModel] | None = None
    body_optional: bool = False
    # A multipart upload with one part named `file`.
    upload: bool = False
    # The query parameters the handler validates with, if any.
    query: type[BaseModel] | None = None
    # Success statuses and the model each answers with (None: no body).
    ok: Mapping[int, type[BaseModel] | None] = field(default_factory=lambda: {200: None})
    # The success body is the stored file itself, in its own content type.
    binary: bool = False
    # Error statuses beyond the ones implied by auth, body, query and path parameters.
    errors: tuple[int, ...] = ()
    # The route honours an Idempotency-Key header.
    idempotent: bool = False
    description: str = ""


class ApiRoute(Route):
    """A Starlette route for one method, carrying its contract."""

    def __init__(
        self, path: str, endpoint: Callable[..., Any], method: str, contract: Contract
    ) -> None:
        super().__init__(path, endpoint, methods=[method])
        self.method = method
        self.contract = contract

"""Request body limits: a 413 problem before an oversized body is read, or as soon as a
streamed (chunked) body passes the limit of its route."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem
from relay.config import Settings

UPLOAD_PATH = "/v1/support/upload-attachment"
# Boundaries and part headers around the file; the upload route allows the same slack.
MULTIPART_FRAMING = 64 * 1024


class _LimitPassed(Exception):
    """Raised from `receive` inside the app; only `BodyLimit` catches it."""


class BodyLimit:
    """Pure ASGI middleware: each path gets a byte limit for its request body.

    A declared Content-Length over the limit is refused before the app runs, so neither
    authentication nor the database is touched. A body without Content-Length (chunked) is
    counted as the app reads it, and the read that passes the limit ends the request.
    """

    def __init__(self, app: ASGIApp, *, default: int, by_path: Mapping[str, int]) -> None:
        self.app = app
        self.default = default
        self.by_path = dict(by_path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.by_path.get(_route_path(scope), self.default)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _too_large(limit)(scope, receive, send)
            return

        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _LimitPassed
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except _LimitPassed:
            if started:
                # No route of ours answers before reading its body; if one ever does, the
                # half-sent response cannot become a 413, and hiding that would be worse.
                raise
            await _too_large(limit)(scope, receive, send)


def _route_path(scope: Scope) -> str:
    # Behind a proxy that mounts the API under a prefix (uvicorn --root-path), `path` carries
    # the prefix; routes are matched without it, and so are limits.
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path.removeprefix(root)


def _content_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length")
    # The HTTP server has already refused a malformed one; be lenient rather than crash.
    if value is None or not (value.isascii() and value.isdigit()):
        return None
    return int(value)


def _too_large(limit: int) -> ASGIApp:
    return problem(413, f"The request body is larger than the {limit} bytes this endpoint takes.")


def body_limits(settings: Settings) -> Middleware:
    """`BodyLimit` configured from the settings: JSON routes take `max_request_body`."""
    upload = settings.max_attachment_size + MULTIPART_FRAMING
    # Between the upload's own limit and this ceiling the route answers with its field error
    # ("File is too big. Max filesize: …"), which tells a partner what went wrong; only a size
    # no honest upload comes near is cut off here. The upload path never takes less than any
    # other path does.
    ceiling = max(2 * upload, settings.max_request_body)
    return Middleware(BodyLimit, default=settings.max_request_body, by_path={UPLOAD_PATH: ceiling})

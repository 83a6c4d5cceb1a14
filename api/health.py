"""`GET /healthz`: the process is up and its database answers."""

from __future__ import annotations

from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth import relay_of
from api.contract import ApiRoute, Contract
from api.schemas import Health


async def health(request: Request) -> Response:
    async with relay_of(request).reads() as session:
        await session.exec(text("SELECT 1"))  # type: ignore[call-overload]
    return JSONResponse(Health(status="ok").dump())


routes = [
    ApiRoute(
        "/healthz",
        health,
        "GET",
        Contract("Liveness: the database answers", tag="operations", auth="none", ok={200: Health}),
    )
]

"""create_app(relay) → the Starlette application, with the relay in lifespan state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api import admin, attachments, catalog, orders, support, trips, uploads
from api.auth import relay_of
from api.limits import body_limits
from api.problems import EXCEPTION_HANDLERS
from relay.runtime import Relay


async def health(request: Request) -> Response:
    async with relay_of(request).sessions() as session:
        await session.exec(text("SELECT 1"))  # type: ignore[call-overload]
    return JSONResponse({"status": "ok"})


def create_app(relay: Relay) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        yield {"relay": relay}

    return Starlette(
        routes=[
            Route("/healthz", health),
            *admin.routes,
            *trips.routes,
            *support.routes,
            *uploads.routes,
            *orders.routes,
            *catalog.routes,
            *attachments.routes,
        ],
        middleware=[body_limits(relay.settings)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )

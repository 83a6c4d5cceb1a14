"""create_app(relay) → the Starlette application, with the relay in lifespan state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from api import (
    admin,
    attachments,
    catalog,
    health,
    openapi,
    orders,
    raw,
    release,
    support,
    trips,
    uploads,
)
from api.limits import body_limits
from api.problems import EXCEPTION_HANDLERS
from relay.runtime import Relay

MODULES = (
    health,
    admin,
    trips,
    support,
    raw,
    release,
    uploads,
    orders,
    catalog,
    attachments,
    openapi,
)


def all_routes() -> list[BaseRoute]:
    """Every route of the API, in matching order; the OpenAPI document is built from these."""
    return [route for module in MODULES for route in module.routes]


def create_app(relay: Relay) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        yield {"relay": relay}

    return Starlette(
        routes=all_routes(),
        middleware=[body_limits(relay.settings)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )

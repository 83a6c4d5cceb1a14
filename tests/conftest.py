"""Fixtures: a real database per test (SQLite file or a fresh PostgreSQL schema), a live relay."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.common import postgres_schema
from storage.db import make_engine
from tests.harness import LiveRelay, live_relay

PG_URL = os.environ.get("RELAY_TEST_DATABASE_URL")


@dataclass(frozen=True)
class Database:
    url: str
    schema: str | None


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    """A SQLite file, or a PostgreSQL schema of its own when RELAY_TEST_DATABASE_URL is set."""
    if not PG_URL:
        yield Database(f"sqlite+aiosqlite:///{tmp_path / 'relay.db'}", None)
        return
    async with postgres_schema(PG_URL, "t") as schema:
        yield Database(PG_URL, schema)


@asynccontextmanager
async def engine_with(database: Database, metadata: MetaData) -> AsyncIterator[AsyncEngine]:
    """An engine on the test's database with `metadata`'s tables, dropped afterwards."""
    engine = make_engine(database.url, database.schema)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    try:
        yield engine
    finally:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
        await engine.dispose()


def count_driver_trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, each hand-off to aiosqlite's thread is recorded (the statement's first
    word, or the function's name: commit, rollback) and still made."""
    trips: list[str] = []
    hand_off = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(args[1].split()[0] if len(args) > 1 else fn.__name__)
        return await hand_off(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return trips


@pytest.fixture
async def live(database: Database) -> AsyncIterator[LiveRelay]:
    async with live_relay(database.url, database.schema) as relay:
        yield relay

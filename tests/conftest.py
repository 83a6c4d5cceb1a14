"""Fixtures: a real database per test (SQLite file or a fresh PostgreSQL schema), a live relay."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from tests.harness import LiveRelay, live_relay

PG_URL = os.environ.get("RELAY_TEST_DATABASE_URL")


@dataclass(frozen=True)
class Database:
    url: str
    schema: str | None


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    """A SQLite file, or a PostgreSQL schema of its own when RELAY_TEST_DATABASE_URL is set."""
    if not PG_URL:
        yield Database(f"sqlite+aiosqlite:///{tmp_path / 'relay.db'}", None)
        return
    schema = f"t_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(_asyncpg_dsn(PG_URL))
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    try:
        yield Database(PG_URL, schema)
    finally:
        conn = await asyncpg.connect(_asyncpg_dsn(PG_URL))
        try:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        finally:
            await conn.close()


@pytest.fixture
async def live(database: Database) -> AsyncIterator[LiveRelay]:
    async with live_relay(database.url, database.schema) as relay:
        yield relay

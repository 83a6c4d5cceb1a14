"""Small pieces every benchmark uses; imports no other bench module, so any can use it."""

from __future__ import annotations

import math
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx

from storage.db import asyncpg_dsn


def pct(samples: Sequence[float], q: float) -> float:
    """The q-quantile by the nearest-rank method (NaN for no samples)."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def ints(text: str) -> list[int]:
    """A comma-separated command-line list of integers."""
    return [int(x) for x in text.split(",") if x]


def created(response: httpx.Response) -> dict[str, Any]:
    """The JSON object of a 200/201, or an error naming the request."""
    if response.status_code not in (200, 201):
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text}")
    data = response.json()
    assert isinstance(data, dict)
    return data


async def pg_execute(url: str, sql: str) -> None:
    """One statement on its own connection (CREATE/DROP SCHEMA or DATABASE cannot run in a
    transaction, so not through the relay's engine)."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@asynccontextmanager
async def postgres_schema(url: str, prefix: str) -> AsyncIterator[str]:
    """A PostgreSQL schema of the run's own on the server `url` names, dropped afterwards."""
    schema = f"{prefix}_{secrets.token_hex(6)}"
    await pg_execute(url, f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        await pg_execute(url, f'DROP SCHEMA "{schema}" CASCADE')

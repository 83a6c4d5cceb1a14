"""Stored responses of requests made with an Idempotency-Key."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.models import IdempotencyRecord
from storage.sqlite_driver import OFF_LOOP
from storage.types import utcnow


async def live_record(session: AsyncSession, owner: str, key: str) -> IdempotencyRecord | None:
    """This owner's record for the key, unless it has expired."""
    query = select(IdempotencyRecord).where(
        IdempotencyRecord.owner == owner,
        IdempotencyRecord.key == key,
        col(IdempotencyRecord.expires_at) > utcnow(),
    )
    return (await session.exec(query)).first()


async def forget_expired(session: AsyncSession, owner: str, key: str) -> None:
    """Free this one key if its record has expired, so it can be used again (one row, by the
    unique index; the sweep of all expired rows is the housekeeper's)."""
    await session.exec(
        delete(IdempotencyRecord).where(
            col(IdempotencyRecord.owner) == owner,
            col(IdempotencyRecord.key) == key,
            col(IdempotencyRecord.expires_at) <= utcnow(),
        )
    )


async def purge_expired(session: AsyncSession, now: datetime) -> int:
    # Any number of rows with their response bodies: not on the event loop (SQLite).
    expired = delete(IdempotencyRecord).where(col(IdempotencyRecord.expires_at) <= now)
    result = await session.exec(expired.execution_options(**{OFF_LOOP: True}))
    return int(result.rowcount or 0)

"""The outbox: a leased queue of rendered emails. Claims never hand one row to two workers."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, or_, text, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.models import OutboxItem
from storage.types import utcnow

PENDING = "pending"
SENDING = "sending"
SENT = "sent"
FAILED = "failed"
# Accepted by the next server, then reported undeliverable to the item's bounce address.
BOUNCED = "bounced"


CHANNEL = "relay_outbox"


async def enqueue(
    session: AsyncSession,
    *,
    ticket_id: int,
    message_id: int | None,
    recipient_side: str,
    mail_from: str,
    rcpt_to: str,
    raw: bytes,
    lifetime: timedelta,
) -> OutboxItem:
    now = utcnow()
    item = OutboxItem(
        ticket_id=ticket_id,
        message_id=message_id,
        recipient_side=recipient_side,
        mail_from=mail_from,
        rcpt_to=rcpt_to,
        raw=raw,
        next_attempt_at=now,
        expires_at=now + lifetime,
    )
    session.add(item)
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        # Delivered at commit, and only then: workers in other processes wake at once.
        await (await session.connection()).execute(text(f"NOTIFY {CHANNEL}"))
    return item


def _claimable(now: datetime) -> ColumnElement[bool]:
    due = (col(OutboxItem.status) == PENDING) & (col(OutboxItem.next_attempt_at) <= now)
    # A 'sending' row whose lease ran out belongs to a worker that died mid-send.
    orphaned = (col(OutboxItem.status) == SENDING) & (col(OutboxItem.lease_until) < now)
    return or_(due, orphaned)


async def claim_due(session: AsyncSession, limit: int, lease: timedelta) -> list[OutboxItem]:
    """Lease up to `limit` due rows to the caller (commit the session to make the lease hold)."""
    now = utcnow()
    owner = secrets.token_hex(8)
    query = (
        select(OutboxItem.id)
        .where(_claimable(now))
        .order_by(col(OutboxItem.next_attempt_at))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list((await session.exec(query)).all())
    if not ids:
        return []
    # The conditional UPDATE is the claim on SQLite, where FOR UPDATE does not exist.
    await session.exec(
        update(OutboxItem)
        .where(col(OutboxItem.id).in_(ids), _claimable(now))
        .values(
            status=SENDING,
            lease_until=now + lease,
            lease_owner=owner,
            attempts=col(OutboxItem.attempts) + 1,
        )
    )
    claimed = select(OutboxItem).where(OutboxItem.lease_owner == owner)
    return list((await session.exec(claimed.execution_options(populate_existing=True))).all())


async def load(session: AsyncSession, item_ids: list[int]) -> dict[int, OutboxItem]:
    """These rows as they are now, in one query, by id (to hand to `mark`)."""
    query = select(OutboxItem).where(col(OutboxItem.id).in_(item_ids))
    rows = (await session.exec(query.execution_options(populate_existing=True))).all()
    return {row.id: row for row in rows if row.id is not None}


def mark(
    session: AsyncSession,
    item: OutboxItem,
    *,
    status: str,
    error: str | None = None,
    retry_at: datetime | None = None,
) -> OutboxItem:
    item.status = status
    item.last_error = error[:1000] if error else None
    item.lease_until = None
    item.lease_owner = None
    if retry_at is not None:
        item.next_attempt_at = retry_at
    if status in (SENT, FAILED):
        item.finished_at = utcnow()
    session.add(item)
    return item

"""The outbox: a leased queue of rendered emails. Claims never hand one row to two workers."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, literal, or_, update
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.db import connection_of
from storage.direct import Prepared
from storage.models import OutboxItem
from storage.rows import insert_row
from storage.types import UTCDateTime, utcnow

PENDING = "pending"
SENDING = "sending"
SENT = "sent"
FAILED = "failed"
# Accepted by the next server, then reported undeliverable to the item's bounce address.
BOUNCED = "bounced"


CHANNEL = "relay_outbox"
# Sent at commit, and only then, like NOTIFY; pg_notify takes the payload as a parameter.
_NOTIFY = Prepared(select(func.pg_notify(literal(CHANNEL), bindparam("origin"))))


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
    origin: str = "",
) -> OutboxItem:
    """Queue a rendered email. `origin` names the relay instance queueing it: on PostgreSQL
    the NOTIFY carries it, and that instance's own listener, whose worker the instance
    wakes directly, ignores it (relay.wakeup)."""
    now = utcnow()
    item = await insert_row(
        session,
        OutboxItem,
        ticket_id=ticket_id,
        message_id=message_id,
        recipient_side=recipient_side,
        mail_from=mail_from,
        rcpt_to=rcpt_to,
        raw=raw,
        next_attempt_at=now,
        expires_at=now + lifetime,
    )
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        # Delivered at commit, and only then: workers in other processes wake at once.
        await _NOTIFY.rows(session, {"origin": origin})
    return item


_TABLE = OutboxItem.__table__  # type: ignore[attr-defined]


def _claimable(table: Any) -> ColumnElement[bool]:
    now = bindparam("now", type_=UTCDateTime())
    due = (table.c.status == PENDING) & (table.c.next_attempt_at <= now)
    # A 'sending' row whose lease ran out belongs to a worker that died mid-send.
    orphaned = (table.c.status == SENDING) & (table.c.lease_until < now)
    return or_(due, orphaned)


def _claim_statement() -> Any:
    due = _TABLE.alias("due")
    # SKIP LOCKED: PostgreSQL workers skip the rows another one is claiming. SQLite has no
    # FOR UPDATE (SQLAlchemy leaves it out); its write lock serialises claims instead, and
    # the outer condition is the claim.
    # MATERIALIZED: run once. As a plain IN (subquery), PostgreSQL may run the subquery
    # again per outer row (a nested-loop semi-join), each run locking and returning other
    # rows, so one claim could lease more than `limit`.
    oldest_due = (
        select(due.c.id)
        .where(_claimable(due))
        .order_by(due.c.next_attempt_at)
        .limit(bindparam("limit"))
        .with_for_update(skip_locked=True)
        .cte("oldest_due")
        .prefix_with("MATERIALIZED")
    )
    return (
        update(_TABLE)
        .where(_TABLE.c.id.in_(select(oldest_due.c.id)), _claimable(_TABLE))
        .values(
            status=SENDING,
            lease_until=bindparam("lease_end", type_=UTCDateTime()),
            lease_owner=bindparam("claimer"),
            attempts=_TABLE.c.attempts + 1,
        )
        .returning(*_TABLE.c)
    )


# One statement claims a round (UPDATE … RETURNING): no SELECT of ids before it, no SELECT of
# the rows after it. Built once with bound parameters.
# It returns a round's messages, up to delivery_concurrency of them at their full size: on
# SQLite it runs in the driver's thread, not on the event loop (storage.sqlite_driver).
_CLAIM = Prepared(_claim_statement(), off_loop=True)


async def claim_due(session: AsyncSession, limit: int, lease: timedelta) -> list[OutboxItem]:
    """Lease up to `limit` due rows to the caller (commit the session to make the lease hold).
    The rows are returned as they are after the claim, outside the session."""
    now = utcnow()
    params = {
        "now": now,
        "limit": limit,
        "lease_end": now + lease,
        "claimer": secrets.token_hex(8),
    }
    result = await _CLAIM.rows(session, params)
    # Read-only instances: the worker only reads them, and __init__ costs ~100 µs a row.
    return [OutboxItem.model_construct(**row) for row in result.mappings()]


@dataclass(frozen=True)
class Settlement:
    """What a delivery round decided for one leased row."""

    item_id: int
    status: str
    error: str | None = None
    retry_at: datetime | None = None


# FOR UPDATE (PostgreSQL; SQLite's write lock already holds every row): a delivery report
# filed while the round records waits for it, so what the round reads here stays true
# until it commits, and the row and the round's events agree.
_STATES = (
    select(_TABLE.c.id, _TABLE.c.status, _TABLE.c.last_error)
    .where(_TABLE.c.id.in_(bindparam("ids", expanding=True)))
    .with_for_update()
)

# One statement for a whole round (executemany). A NULL retry time or finish time keeps the
# row's own: only a retry moves the next attempt, only sent and failed rows are finished.
_SETTLE = Prepared(
    update(_TABLE)
    .where(_TABLE.c.id == bindparam("row_id"))
    .values(
        status=bindparam("new_status"),
        last_error=bindparam("error"),
        lease_until=None,
        lease_owner=None,
        next_attempt_at=func.coalesce(
            bindparam("retry_at", type_=UTCDateTime()), _TABLE.c.next_attempt_at
        ),
        finished_at=func.coalesce(bindparam("finished", type_=UTCDateTime()), _TABLE.c.finished_at),
    )
)


@dataclass(frozen=True)
class RowState:
    status: str
    last_error: str | None


async def states(session: AsyncSession, item_ids: list[int]) -> dict[int, RowState]:
    """Each row's status and error as they are now, by id, locked until the commit."""
    connection = await connection_of(session)
    result = await connection.execute(_STATES, {"ids": item_ids})
    return {row.id: RowState(row.status, row.last_error) for row in result}


async def settle(session: AsyncSession, settlements: Sequence[Settlement]) -> None:
    """Release the leases of a round's rows with what became of each, in one statement."""
    if not settlements:
        return
    now = utcnow()
    values = [
        {
            "row_id": s.item_id,
            "new_status": s.status,
            "error": s.error[:1000] if s.error else None,
            "retry_at": s.retry_at,
            "finished": now if s.status in (SENT, FAILED) else None,
        }
        for s in settlements
    ]
    await _SETTLE.many(session, values)

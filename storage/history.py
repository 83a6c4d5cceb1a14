"""A partner's ticket history: filtered, sorted and keyset-paginated on indexed columns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import BindParameter, ColumnElement, and_, bindparam, exists, func, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.direct import Prepared
from storage.models import Ticket, TicketTag
from storage.tickets import category_title, partner_trip_ref

SortKey = Literal["created", "-created", "updated", "-updated"]


@dataclass(frozen=True)
class TicketFilter:
    status: str | None = None
    category_ids: Sequence[int] | None = None
    priority: str | None = None
    tag_ids: Sequence[int] = ()
    subject: str | None = None
    trip_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None


@dataclass(frozen=True)
class TicketPage:
    tickets: list[Ticket]
    # (sort column value, id) of the last ticket, when there is a next page.
    next_cursor: tuple[datetime, int] | None
    # What a page shows beside each ticket, read by the same query: trip id → the
    # partner's own id for the trip, category id → its name.
    partner_trip_ids: dict[str, str]
    category_names: dict[int, str]


def _where(partner_id: int, f: TicketFilter) -> list[Any]:
    clauses: list[Any] = [col(Ticket.partner_id) == partner_id]
    if f.status is not None:
        clauses.append(col(Ticket.status) == f.status)
    if f.category_ids is not None:
        clauses.append(col(Ticket.category_id).in_(list(f.category_ids)))
    if f.priority is not None:
        clauses.append(col(Ticket.priority) == f.priority)
    for tag_id in f.tag_ids:  # several tags: the ticket carries all of them
        clauses.append(
            exists().where(
                col(TicketTag.ticket_id) == col(Ticket.id), col(TicketTag.tag_id) == tag_id
            )
        )
    if f.subject:
        # Case-insensitive substring; % and _ in the text are literal, not wildcards.
        needle = f.subject.lower()
        clauses.append(func.lower(col(Ticket.subject)).contains(needle, autoescape=True))
    if f.trip_id is not None:
        clauses.append(col(Ticket.trip_id) == f.trip_id)
    if f.created_after is not None:
        clauses.append(col(Ticket.created_at) > f.created_after)
    if f.created_before is not None:
        clauses.append(col(Ticket.created_at) < f.created_before)
    if f.updated_after is not None:
        clauses.append(col(Ticket.updated_at) > f.updated_after)
    if f.updated_before is not None:
        clauses.append(col(Ticket.updated_at) < f.updated_before)
    return clauses


async def search_tickets(
    session: AsyncSession,
    partner_id: int,
    filters: TicketFilter,
    *,
    sort: SortKey = "-created",
    limit: int,
    after: tuple[datetime, int] | None = None,
) -> TicketPage:
    """One page of tickets. Keyset pagination on (sort column, id): a page never repeats or
    skips a ticket because new tickets arrived meanwhile, and page N costs what page 1 does."""
    column = col(Ticket.updated_at) if sort.endswith("updated") else col(Ticket.created_at)
    descending = sort.startswith("-")
    if after is not None:
        # The cursor came from a page of this very search, so its bound is tighter than the
        # filter on the same side of the sort column; dropping that filter leaves the cursor
        # as the one range the index seeks to (SQLite would otherwise pick the filter).
        implied: dict[str, Any] = {
            "-created": {"created_before": None},
            "created": {"created_after": None},
            "-updated": {"updated_before": None},
            "updated": {"updated_after": None},
        }[sort]
        filters = replace(filters, **implied)
    # Looked up per returned row by primary key, so the plan of the search is unchanged;
    # one query instead of three for a page.
    query = select(Ticket, partner_trip_ref(), category_title()).where(*_where(partner_id, filters))
    if after is not None:
        value, last_id = after
        beyond = column < value if descending else column > value
        tie = col(Ticket.id) < last_id if descending else col(Ticket.id) > last_id
        # The plain bound is implied by the OR, but only it is an index range: without it
        # both databases walk every row before the cursor (bench/history_plan.py).
        bound = column <= value if descending else column >= value
        query = query.where(bound, or_(beyond, and_(column == value, tie)))
    order = (column.desc(), col(Ticket.id).desc()) if descending else (column, col(Ticket.id))
    found = list((await session.exec(query.order_by(*order).limit(limit + 1))).all())
    more = len(found) > limit
    found = found[:limit]
    rows = [ticket for ticket, _, _ in found]
    cursor = None
    if more and rows:
        last = rows[-1]
        assert last.id is not None
        cursor = (last.updated_at if sort.endswith("updated") else last.created_at, last.id)
    return TicketPage(
        tickets=rows,
        next_cursor=cursor,
        partner_trip_ids={t.trip_id: trip_ref for t, trip_ref, _ in found},
        category_names={
            t.category_id: name for t, _, name in found if t.category_id is not None and name
        },
    )


# relay.lifecycle's statuses but closed (tests/test_open_limits.py checks they agree).
OPEN_STATUSES = ("open", "processing")
_TICKETS = Ticket.__table__  # type: ignore[attr-defined]
_PARTNER: BindParameter[int] = bindparam("partner_id")
_TRIP: BindParameter[str] = bindparam("trip_id")


def _open() -> ColumnElement[bool]:
    # Equalities, not `!= 'closed'`: each open status is an index range of its own.
    return or_(*(_TICKETS.c.status == status for status in OPEN_STATUSES))


_OPEN_COUNTS = Prepared(
    select(
        # The trip's few tickets, through ix_ticket_trip_id. A trip is one partner's (its
        # tickets are opened through that partner's own trip id), so its tickets are the
        # partner's: naming the partner here too let SQLite walk the partner's index instead.
        select(func.count()).where(_TICKETS.c.trip_id == _TRIP, _open()).scalar_subquery(),
        # The partner's open tickets only, counted in ix_ticket_partner_status_created alone:
        # one index range per open status. One pass over all the partner's tickets reading
        # each one's trip (as before) cost a table row per ticket, closed ones included.
        select(func.count()).where(_TICKETS.c.partner_id == _PARTNER, _open()).scalar_subquery(),
    )
)


async def open_ticket_counts(
    session: AsyncSession, partner_id: int, trip_id: str
) -> tuple[int, int]:
    """(open tickets of this partner on this trip, open tickets of this partner overall),
    in one statement whose cost grows with the partner's open tickets, not its history.
    Run directly (storage.direct), so without the session's autoflush: the tickets it
    counts are written by Core statements, never left pending in the session."""
    found = await _OPEN_COUNTS.rows(session, {"partner_id": partner_id, "trip_id": trip_id})
    trip_count, partner_count = found.one()
    return int(trip_count), int(partner_count)


async def session_ticket(session: AsyncSession, partner_id: int, trip_id: str) -> Ticket | None:
    """The ticket an order-keyed support session is about: the newest one still open (open
    or processing), else the newest closed one."""
    query = (
        select(Ticket)
        .where(col(Ticket.partner_id) == partner_id, col(Ticket.trip_id) == trip_id)
        .order_by((col(Ticket.status) == "closed").asc(), col(Ticket.id).desc())
    )
    return (await session.exec(query)).first()

"""A ticket with its trip, partner, fleet and both aliases, read by one Core query.

Every inbound message reads this before anything else, and every email the API queues reads
its parties. As ORM entities the six objects cost about 450 µs of CPU on top of the 150 µs
query (measured on the inbound path, SQLite); nothing changes them through the session, so
they are read-only instances (`storage.read_only`). A ticket changes through
`PendingTicketUpdate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, bindparam
from sqlalchemy.sql import FromClause
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.direct import Prepared
from storage.models import Alias, Fleet, Partner, Ticket, Trip
from storage.read_only import Columns, flush_pending, select_models, table_of

_TICKETS, _TRIPS, _PARTNERS, _FLEETS = (table_of(m) for m in (Ticket, Trip, Partner, Fleet))
_EACH_ALIAS = table_of(Alias).alias("each_alias")
_ADDRESSED = table_of(Alias).alias("addressed")


_PARTIES = ((Ticket, _TICKETS), (Trip, _TRIPS), (Partner, _PARTNERS), (Fleet, _FLEETS))


def _with_parties(
    *more: tuple[type[SQLModel], FromClause],
) -> tuple[Select[Any], tuple[Columns, ...]]:
    """A ticket with its trip, partner, fleet and each of its aliases: a row per alias."""
    query, slices = select_models(*_PARTIES, (Alias, _EACH_ALIAS), *more)
    query = (
        query.select_from(_TICKETS)
        .join(_TRIPS, _TRIPS.c.id == _TICKETS.c.trip_id)
        .join(_PARTNERS, _PARTNERS.c.id == _TICKETS.c.partner_id)
        .join(_FLEETS, _FLEETS.c.id == _TICKETS.c.fleet_id)
        .outerjoin(_EACH_ALIAS, _EACH_ALIAS.c.ticket_id == _TICKETS.c.id)
    )
    return query, slices


# Built once, with bound parameters: every message and every new ticket runs one of them,
# and SQLAlchemy's statement cache spares the compile, not the building (building this
# join was 6 % of a reply's CPU in the profile).
# They run on the driver's connection (storage.direct).
_ticket_parties, _TICKET_SLICES = _with_parties()
_TICKET_PARTIES = Prepared(_ticket_parties.where(_TICKETS.c.id == bindparam("ticket_id")))
_addressed_ticket, _ADDRESSED_SLICES = _with_parties((Alias, _ADDRESSED))
_ADDRESSED_TICKET = Prepared(
    _addressed_ticket.join(_ADDRESSED, _ADDRESSED.c.ticket_id == _TICKETS.c.id).where(
        _ADDRESSED.c.local_part == bindparam("local_part"), _ADDRESSED.c.active
    )
)


@dataclass(frozen=True)
class Parties:
    """A ticket's trip, partner, fleet and aliases (by side)."""

    trip: Trip
    partner: Partner
    fleet: Fleet
    aliases: dict[str, Alias]


def _parties(rows: Sequence[Sequence[Any]], slices: tuple[Columns, ...]) -> Parties:
    """The parties from `_with_parties` rows (slices 1-4: trip, partner, fleet, alias)."""
    trip, partner, fleet = (s.build(rows[0]) for s in slices[1:4])
    aliases = {a.side: a for a in (slices[4].build(row) for row in rows) if a is not None}
    return Parties(trip, partner, fleet, aliases)


async def ticket_parties(session: AsyncSession, ticket: Ticket) -> Parties:
    """A ticket's trip, partner, fleet and aliases in one query: each round trip to the
    database costs more than the rows it returns."""
    await flush_pending(session)
    rows = (await _TICKET_PARTIES.rows(session, {"ticket_id": ticket.id})).all()
    assert rows, f"ticket {ticket.id} lost its trip, partner or fleet"
    return _parties(rows, _TICKET_SLICES)


@dataclass(frozen=True)
class AddressedTicket:
    """What mail to one alias needs: the alias, its ticket, and the ticket's parties."""

    alias: Alias
    ticket: Ticket
    parties: Parties


async def addressed_ticket(session: AsyncSession, local_part: str) -> AddressedTicket | None:
    """An active alias with its ticket, trip, partner, fleet and both aliases, in one query:
    inbound mail reads all of it before anything else."""
    rows = (await _ADDRESSED_TICKET.rows(session, {"local_part": local_part.lower()})).all()
    if not rows:
        return None
    ticket, alias = _ADDRESSED_SLICES[0].build(rows[0]), _ADDRESSED_SLICES[5].build(rows[0])
    return AddressedTicket(alias, ticket, _parties(rows, _ADDRESSED_SLICES))

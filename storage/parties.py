"""A ticket with its trip, partner, fleet and both aliases, read by one Core query.

Every inbound message reads this before anything else, and every email the API queues reads
its parties. Loaded as ORM entities, the six objects cost about 450 µs of CPU on top of the
150 µs query (identity map, instance state, loader callables: measured on the inbound path,
SQLite). Nothing changes them through the session, so they are built here as read-only
model instances from the Core rows (`model_construct`, about 9 µs each): setting an
attribute on one raises. A change to a ticket goes through `PendingTicketUpdate`.

A Core query does not flush the session first, as an ORM query would: `ticket_parties`
flushes pending ORM changes itself, so what it reads is what the transaction wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, Select, Table, bindparam, select
from sqlalchemy.orm import configure_mappers
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.db import connection_of
from storage.models import Alias, Fleet, Partner, Ticket, Trip


def _table(model: type[SQLModel]) -> Table:
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, Table)
    return table


# model_construct's instances read their fields through the mapped attributes.
configure_mappers()
_TICKETS, _TRIPS, _PARTNERS, _FLEETS = (_table(m) for m in (Ticket, Trip, Partner, Fleet))
_EACH_ALIAS = _table(Alias).alias("each_alias")
_ADDRESSED = _table(Alias).alias("addressed")


@dataclass(frozen=True)
class _Slice:
    """Where one model's columns sit in a row, and their names."""

    model: type[SQLModel]
    start: int
    names: tuple[str, ...]

    def build(self, row: Row[Any]) -> Any:
        values = row[self.start : self.start + len(self.names)]
        if values[0] is None:  # the outer join found no alias
            return None
        return self.model.model_construct(**dict(zip(self.names, values, strict=True)))


def _query(*parts: tuple[type[SQLModel], Any]) -> tuple[Select[Any], tuple[_Slice, ...]]:
    """SELECT every column of each (model, table) in order, and where each one's are."""
    columns: list[Any] = []
    slices: list[_Slice] = []
    for model, table in parts:
        # `id` first: a NULL there means an outer join found nothing.
        names = ("id", *(n for n in table.c.keys() if n != "id"))
        slices.append(_Slice(model, len(columns), names))
        columns += [table.c[n].label(f"c{len(columns) + i}") for i, n in enumerate(names)]
    return select(*columns), tuple(slices)


_PARTIES = ((Ticket, _TICKETS), (Trip, _TRIPS), (Partner, _PARTNERS), (Fleet, _FLEETS))


def _with_parties(*more: tuple[type[SQLModel], Any]) -> tuple[Select[Any], tuple[_Slice, ...]]:
    """A ticket with its trip, partner, fleet and each of its aliases: a row per alias."""
    query, slices = _query(*_PARTIES, (Alias, _EACH_ALIAS), *more)
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
_TICKET_PARTIES, _TICKET_SLICES = _with_parties()
_TICKET_PARTIES = _TICKET_PARTIES.where(_TICKETS.c.id == bindparam("ticket_id"))
_ADDRESSED_TICKET, _ADDRESSED_SLICES = _with_parties((Alias, _ADDRESSED))
_ADDRESSED_TICKET = _ADDRESSED_TICKET.join(
    _ADDRESSED, _ADDRESSED.c.ticket_id == _TICKETS.c.id
).where(_ADDRESSED.c.local_part == bindparam("local_part"), _ADDRESSED.c.active)


@dataclass(frozen=True)
class Parties:
    """A ticket's trip, partner, fleet and aliases (by side)."""

    trip: Trip
    partner: Partner
    fleet: Fleet
    aliases: dict[str, Alias]


def _parties(rows: Sequence[Row[Any]], slices: tuple[_Slice, ...]) -> tuple[Ticket, Parties]:
    first = rows[0]
    ticket, trip, partner, fleet = (s.build(first) for s in slices[:4])
    aliases = {a.side: a for a in (slices[4].build(row) for row in rows) if a is not None}
    return ticket, Parties(trip, partner, fleet, aliases)


async def ticket_parties(session: AsyncSession, ticket: Ticket) -> Parties:
    """A ticket's trip, partner, fleet and aliases in one query: each round trip to the
    database costs more than the rows it returns."""
    if session.sync_session.new or session.sync_session.dirty:
        await session.flush()  # what an ORM query would have done first
    connection = await connection_of(session)
    result = await connection.execute(_TICKET_PARTIES, {"ticket_id": ticket.id})
    rows = result.all()
    assert rows, f"ticket {ticket.id} lost its trip, partner or fleet"
    return _parties(rows, _TICKET_SLICES)[1]


@dataclass(frozen=True)
class AddressedTicket:
    """What mail to one alias needs: the alias, its ticket, and the ticket's parties."""

    alias: Alias
    ticket: Ticket
    parties: Parties


async def addressed_ticket(session: AsyncSession, local_part: str) -> AddressedTicket | None:
    """An active alias with its ticket, trip, partner, fleet and both aliases, in one query:
    inbound mail reads all of it before anything else."""
    connection = await connection_of(session)
    result = await connection.execute(_ADDRESSED_TICKET, {"local_part": local_part.lower()})
    rows = result.all()
    if not rows:
        return None
    ticket, parties = _parties(rows, _ADDRESSED_SLICES)
    alias = _ADDRESSED_SLICES[5].build(rows[0])
    return AddressedTicket(alias, ticket, parties)

"""Rows read by a Core query and handed out as read-only model instances.

Loading entities through the ORM costs far more than the query (identity map, instance
state, loader callables: about 450 µs for a ticket and its five parties, on top of a
150 µs query). Code that only reads what it loaded can have the same values as instances
built by `model_construct` (about 9 µs each). Setting an attribute on one raises, and
`session.add` refuses one, so such a change is not silently dropped; a JSON list or dict
changed in place would be, as on any detached instance. Changes go through the session (an
ORM-loaded instance) or a Core UPDATE.

A Core query does not flush the session first, as an ORM query would: a caller that may have
pending ORM changes flushes them itself (`flush_pending`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, Table, select
from sqlalchemy.orm import configure_mappers
from sqlalchemy.sql import FromClause
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession


def table_of(model: type[SQLModel]) -> Table:
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, Table)
    return table


@dataclass(frozen=True)
class Columns:
    """Where one model's columns sit in a row, and their names."""

    model: type[SQLModel]
    start: int
    names: tuple[str, ...]

    def build(self, row: Sequence[Any]) -> Any:
        """The model's instance from its columns of `row`; None when its id is NULL (an
        outer join that found nothing)."""
        values = row[self.start : self.start + len(self.names)]
        if values[0] is None:
            return None
        return self.model.model_construct(**dict(zip(self.names, values, strict=True)))


def select_models(
    *parts: tuple[type[SQLModel], FromClause], leading: tuple[Any, ...] = ()
) -> tuple[Select[Any], tuple[Columns, ...]]:
    """SELECT the `leading` columns, then every column of each (model, table or alias) in
    order; and where each model's columns are in the rows."""
    # model_construct's instances read their fields through the mapped attributes, which
    # exist once the mappers are configured: here, where every model is surely imported.
    configure_mappers()
    columns: list[Any] = list(leading)
    found: list[Columns] = []
    for model, table in parts:
        # `id` first: a NULL there means an outer join found nothing.
        names = ("id", *(n for n in table.c.keys() if n != "id"))
        found.append(Columns(model, len(columns), names))
        columns += [table.c[n].label(f"c{len(columns) + i}") for i, n in enumerate(names)]
    return select(*columns), tuple(found)


async def flush_pending(session: AsyncSession) -> None:
    """What an ORM query does before it runs: write the session's pending changes."""
    pending = session.sync_session
    if pending.new or pending.dirty or pending.deleted:
        await session.flush()

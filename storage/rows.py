"""New rows written at once by one Core INSERT, not through the ORM's unit of work.

The paths every message takes (store an email, queue its forward, record what happened)
add rows they never change again in the same transaction. Through `session.add`, each such
row cost a model `__init__` (about 100 µs: SQLModel sets every field through SQLAlchemy's
instrumentation) and the flush's bookkeeping at commit, which in the profile cost more than
the INSERT itself. Here the row is written when it is known, and comes back as a read-only
instance built by `model_construct` (no ORM state: setting an attribute on it raises).

Rows a new row refers to must already be in the database (a Core INSERT does not wait for
the flush). That holds for everything that has an id: the ORM assigns integer ids at flush.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Insert, Table, insert
from sqlalchemy.orm import configure_mappers
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

Row = TypeVar("Row", bound=SQLModel)


@dataclass(frozen=True)
class _Inserts:
    """A table's INSERT statements, built once: the statement cache spares the compile,
    not the building."""

    one: Insert  # RETURNING the id when the database assigns it
    many: Insert
    names: list[str]
    known: frozenset[str]
    generated_id: bool


_INSERTS: dict[type[SQLModel], _Inserts] = {}


def _inserts(model: type[SQLModel]) -> _Inserts:
    found = _INSERTS.get(model)
    if found is None:
        # model_construct's instances read their fields through SQLAlchemy's instrumented
        # attributes, which exist once the mappers are configured.
        configure_mappers()
        table = model.__table__  # type: ignore[attr-defined]
        assert isinstance(table, Table)
        id_column = table.c.get("id")
        generated = id_column is not None and id_column.type.python_type is int
        names = [c.name for c in table.columns if not (generated and c.name == "id")]
        many = insert(table)
        one = many.returning(table.c.id) if generated else many
        found = _Inserts(one, many, names, frozenset(table.c.keys()), generated)
        _INSERTS[model] = found
    return found


def _complete(model: type[Row], inserts: _Inserts, values: Mapping[str, Any]) -> Row:
    """The row with the model's defaults filled in (created_at, a UUID id, …)."""
    unknown = values.keys() - inserts.known
    if unknown:  # model_construct would drop them silently
        raise TypeError(f"{model.__name__} has no column {', '.join(sorted(unknown))}")
    row = model.model_construct(**values)
    assert isinstance(row, model)  # SQLModel types model_construct as returning SQLModel
    return row


async def insert_row(session: AsyncSession, model: type[Row], **values: Any) -> Row:
    """Write one row now; returns it as written, with the id the database assigned."""
    inserts = _inserts(model)
    row = _complete(model, inserts, values)
    params = {name: getattr(row, name) for name in inserts.names}
    result = await (await session.connection()).execute(inserts.one, params)
    if inserts.generated_id:
        # Not `row.id = …`: without ORM state SQLModel's setattr raises. Pydantic keeps
        # field values in the instance's __dict__, where the attribute reads them.
        vars(row)["id"] = result.scalar_one()
    return row


async def insert_rows(
    session: AsyncSession, model: type[SQLModel], rows: Sequence[Mapping[str, Any]]
) -> None:
    """Write rows of one model in one statement; their ids are not read back."""
    if not rows:
        return
    inserts = _inserts(model)
    params = []
    for values in rows:
        row = _complete(model, inserts, values)
        params.append({name: getattr(row, name) for name in inserts.names})
    await (await session.connection()).execute(inserts.many, params)

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

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic.fields import FieldInfo
from sqlalchemy import Table, insert
from sqlalchemy.orm import configure_mappers
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.direct import Prepared

Row = TypeVar("Row", bound=SQLModel)


@dataclass(frozen=True)
class _Inserts:
    """A table's INSERT statements and what filling in a row needs, built once per model
    (the statement cache spares the compile, not the building)."""

    one: Prepared  # RETURNING the id when the database assigns it
    many: Prepared
    columns: frozenset[str]
    required: frozenset[str]
    # Fields that have a default, and how to make it: (name, a function returning it).
    defaults: tuple[tuple[str, Callable[[], Any]], ...]
    generated_id: bool


# Values that can be shared between rows; anything else (a tuple may hold a list) is copied.
_IMMUTABLE = (type(None), bool, int, float, str, bytes)


def _default_maker(field: FieldInfo) -> Callable[[], Any]:
    """What `field.get_default(call_default_factory=True)` returns, without its cost:
    pydantic inspects the factory's signature on every call (to see whether it takes the
    validated data), which with its deep copy of plain defaults was 6 % of a reply's CPU."""
    factory = field.default_factory
    if factory is not None:
        if field.default_factory_takes_validated_data:
            raise TypeError("a default factory taking validated data cannot fill a new row")
        return factory  # type: ignore[return-value]
    value = field.default
    if isinstance(value, _IMMUTABLE):
        return lambda: value
    return lambda: copy.deepcopy(value)


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
        fields = {n: f for n, f in model.model_fields.items() if n in table.c}
        many = insert(table)
        # The columns come from each row's names (every row has them all: _row_values).
        found = _Inserts(
            one=Prepared(many.returning(table.c.id) if generated else many, by_keys=True),
            many=Prepared(many, by_keys=True),
            columns=frozenset(table.c.keys()),
            required=frozenset(n for n, f in fields.items() if f.is_required()),
            defaults=tuple(
                (n, _default_maker(f))
                for n, f in fields.items()
                if not f.is_required() and not (generated and n == "id")
            ),
            generated_id=generated,
        )
        _INSERTS[model] = found
    return found


def _row_values(
    model: type[SQLModel], inserts: _Inserts, values: Mapping[str, Any]
) -> dict[str, Any]:
    """`values` with the model's defaults filled in (created_at, a UUID id, …); checked
    against the table, since nothing else here would notice a misspelt or missing field."""
    unknown = values.keys() - inserts.columns
    if unknown:
        raise TypeError(f"{model.__name__} has no column {', '.join(sorted(unknown))}")
    missing = inserts.required - values.keys()
    if missing:
        raise TypeError(f"{model.__name__} needs {', '.join(sorted(missing))}")
    row = dict(values)
    for name, make in inserts.defaults:
        if name not in row:
            row[name] = make()
    return row


async def insert_row(session: AsyncSession, model: type[Row], **values: Any) -> Row:
    """Write one row now; returns it as written, with the id the database assigned."""
    inserts = _inserts(model)
    row = _row_values(model, inserts, values)
    result = await inserts.one.rows(session, row)
    if inserts.generated_id:
        row["id"] = result.scalar_one()
    written = model.model_construct(**row)
    assert isinstance(written, model)  # SQLModel types model_construct as returning SQLModel
    return written


async def insert_rows(
    session: AsyncSession, model: type[SQLModel], rows: Sequence[Mapping[str, Any]]
) -> None:
    """Write rows of one model in one statement; their ids are not read back."""
    if not rows:
        return
    inserts = _inserts(model)
    params = [_row_values(model, inserts, values) for values in rows]
    await inserts.many.many(session, params)

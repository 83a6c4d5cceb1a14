"""storage.direct: statements compiled by SQLAlchemy, run on the driver's own connection,
must read and write exactly what SQLAlchemy's execution would, inside the session's
transaction, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    bindparam,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, MultipleResultsFound, NoResultFound
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.db import make_engine, make_read_sessions, make_sessions, transaction
from storage.direct import Prepared
from storage.sqlite_driver import INLINE_MAX_VALUE
from storage.types import UTCDateTime
from tests.conftest import Database, count_driver_trips, engine_with

_META = MetaData()
_NOTE = Table(
    "direct_note",
    _META,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime(), nullable=False),
    Column("detail", JSON, nullable=True),
    Column("flag", Boolean, nullable=False),
    Column("body", Text, nullable=True, unique=True),
)

_BLOB = Table("direct_blob", _META, Column("data", LargeBinary, nullable=False))
_ADD_BLOB = Prepared(insert(_BLOB).values(data=bindparam("data")))
_ADD = Prepared(insert(_NOTE).returning(_NOTE.c.id), by_keys=True)
_ADD_MANY = Prepared(insert(_NOTE), by_keys=True)
_BY_ID = Prepared(select(_NOTE).where(_NOTE.c.id == bindparam("id")))
_ALL_QUERY = select(_NOTE).order_by(_NOTE.c.id)
_ALL = Prepared(_ALL_QUERY)
_CHANGE = Prepared(update(_NOTE).where(_NOTE.c.id == bindparam("id_")), by_keys=True)
_AT = datetime(2026, 11, 22, 9, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture
async def engine(database: Database) -> AsyncIterator[AsyncEngine]:
    async with engine_with(database, _META) as engine:
        yield engine


async def test_prepared_statements_read_and_write_what_sqlalchemy_would(
    engine: AsyncEngine,
) -> None:
    sessions = make_sessions(engine)
    async with transaction(sessions) as session:
        detail = {"kind": "reply", "n": [1, 2], "ü": None}
        first = (
            await _ADD.rows(session, {"at": _AT, "detail": detail, "flag": True, "body": "a"})
        ).scalar_one()
        rows = [{"at": _AT, "detail": None, "flag": False, "body": f"m{i}"} for i in range(3)]
        await _ADD_MANY.many(session, rows)
        await _CHANGE.rows(session, {"body": "changed", "id_": first})
    async with transaction(sessions) as session:
        direct = (await _ALL.rows(session)).all()
        core = [tuple(r) for r in await (await session.connection()).execute(_ALL_QUERY)]
        found = (await _BY_ID.rows(session, {"id": first})).one()
        mapped = (await _BY_ID.rows(session, {"id": first})).mappings()
    assert direct == core  # the same values, through the dialect's own result processing
    assert len(direct) == 4
    assert found == (first, _AT, detail, True, "changed")
    assert found[1].tzinfo is not None  # UTCDateTime's processing, not a naive string
    assert mapped == [{"id": first, "at": _AT, "detail": detail, "flag": True, "body": "changed"}]
    assert [r[3] for r in direct] == [True, False, False, False]


async def test_a_prepared_statement_is_part_of_the_sessions_transaction(
    engine: AsyncEngine,
) -> None:
    """Also as the transaction's first statement: SQLAlchemy's asyncpg adapter begins its
    transaction lazily, at the first statement it runs itself."""
    sessions = make_sessions(engine)
    with pytest.raises(RuntimeError):
        async with transaction(sessions) as session:
            await _ADD.rows(session, {"at": _AT, "detail": None, "flag": True, "body": "gone"})
            raise RuntimeError("abandon")
    async with transaction(sessions) as session:
        assert (await _ALL.rows(session)).all() == []


async def test_a_driver_error_is_sqlalchemys_and_undoes_the_transaction(
    engine: AsyncEngine,
) -> None:
    sessions = make_sessions(engine)
    async with transaction(sessions) as session:
        await _ADD.rows(session, {"at": _AT, "detail": None, "flag": True, "body": "taken"})
    with pytest.raises(IntegrityError):
        async with transaction(sessions) as session:
            await _ADD.rows(session, {"at": _AT, "detail": None, "flag": True, "body": "new"})
            await _ADD.rows(session, {"at": _AT, "detail": None, "flag": True, "body": "taken"})
    async with transaction(sessions) as session:  # the connection serves the next one
        bodies = [r[4] for r in await _ALL.rows(session)]
    assert bodies == ["taken"]


async def test_result_helpers_refuse_the_wrong_number_of_rows(engine: AsyncEngine) -> None:
    async with transaction(make_sessions(engine)) as session:
        with pytest.raises(NoResultFound):
            (await _BY_ID.rows(session, {"id": 1})).one()
        assert (await _BY_ID.rows(session, {"id": 1})).first() is None
        rows = [{"at": _AT, "detail": None, "flag": True, "body": f"b{i}"} for i in range(2)]
        await _ADD_MANY.many(session, rows)
        with pytest.raises(MultipleResultsFound):
            (await _ALL.rows(session)).one()


async def test_statements_that_cannot_be_prepared_are_refused(engine: AsyncEngine) -> None:
    expanding = Prepared(select(_NOTE.c.id).where(_NOTE.c.id.in_(bindparam("ids", expanding=True))))
    async with transaction(make_sessions(engine)) as session:
        with pytest.raises(TypeError, match="expanding"):
            await expanding.rows(session, {"ids": [1, 2]})
        uneven = [{"at": _AT, "flag": True}, {"at": _AT, "flag": True, "body": "x"}]
        with pytest.raises(TypeError, match="same parameter names"):
            await _ADD_MANY.many(session, uneven)


async def test_engine_listeners_see_prepared_statements(engine: AsyncEngine) -> None:
    seen: list[tuple[str, bool]] = []

    def record(
        _conn: Any, _cursor: Any, statement: str, _params: Any, _ctx: Any, many: bool
    ) -> None:
        seen.append((statement.split()[0], many))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        async with transaction(make_sessions(engine)) as session:
            await _ADD_MANY.many(session, [{"at": _AT, "detail": None, "flag": True, "body": "l"}])
            await _BY_ID.rows(session, {"id": 1})
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    assert ("INSERT", True) in seen and ("SELECT", False) in seen


async def test_sqlite_prepared_statements_run_where_the_driver_would_put_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As storage.sqlite_driver places statements: in a write transaction on the loop's
    thread, unless large or off_loop; a reader's in the driver's thread."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'placed.db'}")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_META.create_all)
        trips = count_driver_trips(monkeypatch)
        async with transaction(make_sessions(engine)) as session:
            await _ADD.rows(session, {"at": _AT, "detail": None, "flag": True, "body": "s"})
            await _BY_ID.rows(session, {"id": 1})
        assert trips == ["commit"]
        trips.clear()
        off_loop = Prepared(select(_NOTE.c.id), off_loop=True)
        async with transaction(make_sessions(engine)) as session:
            large = "x" * (INLINE_MAX_VALUE + 1)
            await _ADD.rows(session, {"at": _AT, "detail": None, "flag": True, "body": large})
            # Bytes arrive wrapped (LargeBinary binds a memoryview): large all the same.
            await _ADD_BLOB.rows(session, {"data": b"\0" * (INLINE_MAX_VALUE + 1)})
            await _ADD_BLOB.rows(session, {"data": b"small"})
            assert len((await off_loop.rows(session)).all()) == 2
        assert trips == ["INSERT", "INSERT", "SELECT", "commit"]
        trips.clear()
        async with make_read_sessions(engine)() as session:
            assert (await _BY_ID.rows(session, {"id": 1})).one()[4] == "s"
        assert trips == ["SELECT"]  # and no rollback after it: nothing was begun
    finally:
        await engine.dispose()

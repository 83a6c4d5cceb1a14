"""storage.direct: statements compiled by SQLAlchemy, run on the driver's own connection,
must read and write exactly what SQLAlchemy's execution would, inside the session's
transaction, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
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
from sqlalchemy.exc import DBAPIError, IntegrityError, MultipleResultsFound, NoResultFound
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from storage.db import make_engine, make_read_sessions, make_sessions, transaction
from storage.direct import Prepared
from storage.sqlite_driver import INLINE_MAX_VALUE, OneTripDBAPI
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


async def test_a_read_outside_any_session_reads_the_last_commit(engine: AsyncEngine) -> None:
    """`Prepared.read`: the same row `.rows` reads in a transaction, what was committed and
    nothing a transaction still under way wrote; driver errors are SQLAlchemy's; engine
    listeners see it."""
    sessions = make_sessions(engine)
    async with transaction(sessions) as session:
        note = {"at": _AT, "detail": {"n": 1}, "flag": True, "body": "kept"}
        first = (await _ADD.rows(session, note)).scalar_one()
        in_session = (await _BY_ID.rows(session, {"id": first})).one()
    seen: list[str] = []
    event.listen(engine.sync_engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    assert (await _BY_ID.read(engine, {"id": first})).one() == in_session
    assert seen and seen[0].startswith("SELECT")
    async with transaction(sessions) as session:  # under way: its row is not read
        second = (await _ADD.rows(session, {**note, "body": "pending"})).scalar_one()
        assert (await _BY_ID.read(engine, {"id": second})).first() is None
        assert (await _BY_ID.read(engine, {"id": first})).one()[4] == "kept"
    assert (await _BY_ID.read(engine, {"id": second})).one()[4] == "pending"
    missing = Prepared(select(Table("direct_missing", MetaData(), Column("id", Integer)).c.id))
    with pytest.raises(DBAPIError):
        await missing.read(engine)
    # Every pooled connection came back clean: a write transaction still begins and commits.
    async with transaction(sessions) as session:
        await _CHANGE.rows(session, {"body": "after", "id_": first})
    assert (await _BY_ID.read(engine, {"id": first})).one()[4] == "after"


async def test_sqlite_reads_outside_a_session_wait_only_in_the_drivers_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the loop's thread when SQLite need not wait (no trip); when it would wait, in
    aiosqlite's thread, and the loop runs on meanwhile."""
    path = tmp_path / "reads.db"
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_META.create_all)
        async with transaction(make_sessions(engine)) as session:
            await _ADD.rows(session, {"at": _AT, "detail": None, "flag": True, "body": "r"})
        trips = count_driver_trips(monkeypatch)
        assert (await _BY_ID.read(engine, {"id": 1})).one()[4] == "r"
        assert trips == []
    finally:
        await engine.dispose()
    # A WAL reader waits only while another connection recovers the WAL, which a test
    # cannot hold open; in rollback-journal mode an exclusive lock keeps readers out.
    holder = sqlite3.connect(tmp_path / "journal.db", isolation_level=None)
    holder.execute("CREATE TABLE t (v TEXT)")
    holder.execute("INSERT INTO t VALUES ('before')")
    connect = OneTripDBAPI(aiosqlite, sqlite3).connect
    reader = await greenlet_spawn(connect, str(tmp_path / "journal.db"))
    try:
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("UPDATE t SET v = 'after'")
        trips.clear()  # the engine's connections closed in the thread
        reading = asyncio.create_task(reader.read_at_once("SELECT v FROM t", ()))
        ticks = 0
        while not trips and ticks < 1000:  # the loop runs while the read waits
            await asyncio.sleep(0.01)
            ticks += 1
        assert trips == ["SELECT"] and not reading.done()
        holder.execute("COMMIT")
        assert await asyncio.wait_for(reading, 10) == [("after",)]
    finally:
        holder.close()
        await greenlet_spawn(reader.close)

"""Engine and sessions: SQLite in WAL with synchronous=FULL, or PostgreSQL through asyncpg."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel.ext.asyncio.session import AsyncSession

from storage import sqlite_driver

SessionFactory = async_sessionmaker[AsyncSession]

# Execution option marking the engine behind `make_read_sessions`.
READ_ONLY = "relay_read_only"

# One queue per SQLite database (engine) for the write lock, in this process. Without it,
# writers waiting in BEGIN IMMEDIATE poll in SQLite's busy handler, which sleeps up to
# 100 ms between tries and serves no one in order: at 16 concurrent requests a few waited
# seconds while others overtook them. An asyncio.Lock hands the lock over first come,
# first served, with no sleeping. Other processes on the same file still meet the busy
# handler (busy_timeout), which stays as the fallback.
_WRITE_TURNS: WeakKeyDictionary[Any, asyncio.Lock] = WeakKeyDictionary()


# A pooled PostgreSQL connection idle at least this long is pinged before it is used.
PING_AFTER_IDLE_SECONDS = 10.0
# Where a pooled connection's record keeps when it was last returned (time.monotonic).
_IDLE_SINCE = "relay_idle_since"


@dataclass(frozen=True)
class PoolSize:
    """Connections kept open, and how many more may be opened under load (SQLAlchemy's
    pool_size and max_overflow)."""

    kept: int = 20
    overflow: int = 10


def make_engine(
    url: str,
    schema: str | None = None,
    *,
    pool: PoolSize = PoolSize(),
    ping_after_idle: float = PING_AFTER_IDLE_SECONDS,
) -> AsyncEngine:
    """Create the engine. SQLite gets the pragmas that make a commit survive a power cut."""
    sizes = {"pool_size": pool.kept, "max_overflow": pool.overflow}
    if url.startswith("sqlite"):
        return _sqlite_engine(url, sizes)
    connect_args: dict[str, Any] = {}
    if schema:
        connect_args["server_settings"] = {"search_path": schema}
    engine = create_async_engine(url, connect_args=connect_args, **sizes)
    _ping_when_idle(engine, ping_after_idle)
    return engine


def _ping_when_idle(engine: AsyncEngine, after: float) -> None:
    """Test a pooled connection before use only if it sat idle `after` seconds or more.

    SQLAlchemy's pool_pre_ping tests every checkout, and asyncpg's ping is three round
    trips (BEGIN, an empty query, ROLLBACK): at four checkouts per relayed reply that was
    twelve round trips each message waited for. A connection in steady use is known to be
    alive; one that sat idle may have been closed by a server restart or an idle timeout on
    the way. A connection the server closed (a restart) is known without a round trip:
    asyncpg saw its socket close. Either way the pool discards its connections and opens a
    new one (InvalidatePoolError), so the caller never sees it. A connection cut silently
    within `after` seconds of its last use (a network drop without a reset) fails its
    statement once; the pool then replaces every connection it holds."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(_dbapi_conn: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(_dbapi_conn: DBAPIConnection | None, record: ConnectionPoolEntry) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        # Every connection opened before a dead one is likely gone too (a restart): the
        # pool replaces them all, not only this one.
        if dbapi_conn.driver_connection.is_closed():
            # The server closed it (a restart, pg_terminate_backend): asyncpg saw the socket
            # close, so this costs no round trip.
            raise InvalidatePoolError("the server closed a pooled connection")
        if time.monotonic() - record.info.get(_IDLE_SINCE, 0.0) < after:
            return
        try:
            dbapi_conn.ping()
        except Exception as error:
            raise InvalidatePoolError("a pooled connection did not answer a ping") from error


def _sqlite_engine(url: str, sizes: dict[str, int]) -> AsyncEngine:
    _ensure_sqlite_dir(url)
    parsed = make_url(url)
    if parsed.database in (None, "", ":memory:"):
        sizes = {}  # one connection holds an in-memory database: SQLAlchemy's static pool
    if parsed.drivername == "sqlite+aiosqlite":
        # The same driver, one thread hand-off per statement instead of four.
        parsed = parsed.set(drivername=sqlite_driver.DRIVER_NAME)
    timeout = {"timeout": sqlite_driver.BUSY_TIMEOUT_MS / 1000}
    engine = create_async_engine(parsed, connect_args=timeout, **sizes)
    _WRITE_TURNS[engine.sync_engine] = asyncio.Lock()

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see _on_begin).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={sqlite_driver.BUSY_TIMEOUT_MS}")
        cursor.close()
        # SQLite's own lower() folds ASCII only, so "Ärger" would never match "ärger";
        # PostgreSQL folds Unicode. Python's str.lower makes the two databases agree.
        dbapi_conn.create_function("lower", 1, _unicode_lower, deterministic=True)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(READ_ONLY):
            # A reader needs no lock and no transaction: in WAL each statement sees the last
            # commit and never waits. Without BEGIN (and so without a ROLLBACK at the end) a
            # lookup is one trip to the driver thread instead of three. Statements of one
            # read session may see different commits, as PostgreSQL's READ COMMITTED does.
            return
        # IMMEDIATE takes the write lock up front: a deferred transaction that reads and
        # then writes can fail with SQLITE_BUSY when another writer committed in between.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _unicode_lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _ensure_sqlite_dir(url: str) -> None:
    from pathlib import Path

    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def asyncpg_dsn(database_url: str) -> str:
    """The DSN asyncpg itself takes for a `postgresql+asyncpg://` URL (LISTEN, admin SQL)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def make_sessions(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


def make_read_sessions(engine: AsyncEngine) -> SessionFactory:
    """Sessions for code that only reads. On SQLite they begin no transaction (each
    statement reads the last commit), so reads (a history page, a ticket) never queue
    behind writers for the write lock; writing through one is a bug. On PostgreSQL they are
    plain sessions. (The keyed lookups every message and request makes, an alias at RCPT
    and an API key, take no session at all: storage.direct's `Prepared.read`.)"""
    return async_sessionmaker(
        engine.execution_options(**{READ_ONLY: True}),
        class_=AsyncSession,
        expire_on_commit=False,
    )


def _write_turn(sessions: SessionFactory) -> AbstractAsyncContextManager[Any]:
    bind = sessions.kw.get("bind")
    if not isinstance(bind, AsyncEngine) or bind.get_execution_options().get(READ_ONLY):
        return nullcontext()
    return _WRITE_TURNS.get(bind.sync_engine) or nullcontext()


@asynccontextmanager
async def transaction(sessions: SessionFactory) -> AsyncIterator[AsyncSession]:
    """One unit of work: commits when the block ends cleanly, rolls back otherwise.

    On SQLite, writers of this process take turns in arrival order (see _WRITE_TURNS)."""
    async with _write_turn(sessions), sessions() as session, session.begin():
        yield session


_CONNECTION = "relay_connection"


async def connection_of(session: AsyncSession) -> AsyncConnection:
    """`session.connection()`, asked once per transaction of the session.

    Each call of the async session's method is a trip through a new greenlet (about 18 µs);
    an inbound message asked it eight times in one transaction for the same connection. The
    answer is kept with the transaction it belongs to: after a commit or a rollback the
    session has another transaction (or none), and the connection is asked for again."""
    current = session.sync_session.get_transaction()
    kept = session.info.get(_CONNECTION)
    # An inactive transaction (a failed flush) must reach session.connection(), which
    # raises as it should, not get the kept connection.
    if current is not None and current.is_active and kept is not None and kept[0] is current:
        connection: AsyncConnection = kept[1]
        return connection
    connection = await session.connection()
    session.info[_CONNECTION] = (session.sync_session.get_transaction(), connection)
    return connection

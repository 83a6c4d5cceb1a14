"""SQLAlchemy's aiosqlite dialect: a statement takes one trip to the driver's thread at most.

aiosqlite runs a SQLite connection in a thread of its own; every call the event loop makes
on it is a hand-off to that thread and a wake-up back. SQLAlchemy's adapter makes four per
statement (open a cursor, execute, fetch all rows, close the cursor). At a few dozen
microseconds of SQLite work per statement, the hand-offs were most of a statement's cost:
0.35 ms → 0.16 ms per ORM query with one trip (measured with uvloop, 2 000 queries).

The cursor here runs execute, fetch-all and close as one function and keeps what it returns
(description, rowcount, lastrowid, rows), and a rollback with no transaction open costs no
trip. Only what may wait or take long goes to the thread: COMMIT (fsync), a real rollback,
statements outside a write transaction (a reader's query may be long) but for the keyed
lookups of storage.direct's `Prepared.read`, BEGIN IMMEDIATE or such a lookup when SQLite
says it would wait, and, inside a write transaction, a statement binding a value over
INLINE_MAX_VALUE or marked OFF_LOOP (a delivery round's claim, a purge). BEGIN when the
lock is free, and the other statements between BEGIN and COMMIT, which cannot wait in WAL
mode, run in the event loop's thread: +22 % relayed messages per second (2 KB x 20,
108 → 133 msg/s, same run). Everything
else is SQLAlchemy's dialect unchanged. `storage.db.make_engine` selects it for
`sqlite+aiosqlite` URLs; users still write that URL.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_dbapi,
    SQLiteDialect_aiosqlite,
)
from sqlalchemy.util.concurrency import await_

DRIVER_NAME = "sqlite+relay_aiosqlite"

# How storage.db begins every write transaction, and how long a connection waits for
# another process's write lock (storage.db sets it on every connection).
_BEGIN_WRITE = "BEGIN IMMEDIATE"
BUSY_TIMEOUT_MS = 30_000
# Execution option for a statement of a write transaction that may take long (it returns
# or deletes many rows or large values): it runs in the driver's thread all the same.
OFF_LOOP = "relay_off_loop"
# A statement binding a value larger than this runs in the driver's thread too: copying
# megabytes into the WAL on the loop would stall every other connection.
INLINE_MAX_VALUE = 64 * 1024

# What one statement leaves behind: description, rowcount, lastrowid, rows, and whether a
# transaction is open after it (read in the driver's thread, where it cannot be mid-change).
_Outcome = tuple[Any, int, int | None, list[Any], bool]


def _execute(conn: sqlite3.Connection, operation: str, parameters: Any) -> _Outcome:
    """In the driver's thread: the whole statement, rows included."""
    cursor = conn.cursor()
    try:
        cursor.execute(operation, parameters if parameters is not None else ())
        rows = cursor.fetchall() if cursor.description else []
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows, conn.in_transaction
    finally:
        cursor.close()


def _execute_many(conn: sqlite3.Connection, operation: str, parameters: Any) -> _Outcome:
    cursor = conn.cursor()
    try:
        cursor.executemany(operation, parameters)
        return cursor.description, cursor.rowcount, cursor.lastrowid, [], conn.in_transaction
    finally:
        cursor.close()


def _unless_busy(conn: sqlite3.Connection, operation: str, parameters: Any) -> _Outcome | None:
    """The statement if it need not wait now; None, having waited for nothing, when SQLite
    says busy (the caller then waits in the driver's thread). BEGIN IMMEDIATE is busy while
    another connection holds the write lock; a read in WAL mode only in passing, while a
    connection recovers the WAL after a crash or the last one to close cleans it up."""
    conn.execute("PRAGMA busy_timeout=0")
    try:
        return _execute(conn, operation, parameters)
    except sqlite3.OperationalError as error:
        # The primary code: SQLITE_BUSY_RECOVERY and the other extended codes are BUSY too.
        if error.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:
            return None
        raise
    finally:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


def _large(parameters: Any) -> bool:
    """Whether a statement's parameters (one row's, or many rows') hold a large value."""
    if not parameters:
        return False
    rows = parameters if isinstance(parameters, list) else (parameters,)
    for row in rows:
        values = row.values() if isinstance(row, dict) else row
        for value in values:
            # Binary values come wrapped: SQLAlchemy's LargeBinary binds sqlite3.Binary,
            # a memoryview.
            if isinstance(value, memoryview):
                if value.nbytes > INLINE_MAX_VALUE:
                    return True
            elif isinstance(value, str | bytes | bytearray) and len(value) > INLINE_MAX_VALUE:
                return True
    return False


def _runs_on_loop(conn: sqlite3.Connection, off_loop: bool, parameters: Any) -> bool:
    """Whether a statement runs in the event loop's thread: inside a write transaction,
    unless marked to take long or binding a large value.

    In a transaction means in one of ours, begun IMMEDIATE and holding the write lock:
    storage.db begins no other kind (readers begin none, and the driver's own implicit
    BEGIN is off). Read with no statement of this connection in the driver's thread."""
    return conn.in_transaction and not off_loop and not _large(parameters)


async def _at_once(function: Any, conn: sqlite3.Connection, operation: str, parameters: Any) -> Any:
    return function(conn, operation, parameters)


class OneTripCursor:
    """A buffered DB-API cursor whose statements each cost one trip to the driver thread at
    most, and none inside a write transaction (`_run_here`)."""

    server_side = False

    def __init__(self, adapt_connection: OneTripConnection) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection  # the aiosqlite.Connection
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1
        self._rows: deque[Any] = deque()
        # Set by the dialect from the statement's OFF_LOOP execution option.
        self.off_loop = False

    def _run(self, function: Any, operation: str, parameters: Any) -> None:
        adapt = self._adapt_connection
        # Until the statement reports back (it may fail, or its caller be cancelled while it
        # runs), a transaction may be open: the next rollback must then really happen.
        adapt._may_be_open = True
        outcome: _Outcome | None = None
        if _runs_on_loop(self._connection._conn, self.off_loop, parameters):
            outcome = self._run_here(function, operation, parameters)
        elif operation.startswith(_BEGIN_WRITE):
            outcome = self._run_here(_unless_busy, operation, parameters)
        if outcome is None:
            try:
                # aiosqlite's own way of running a function in its thread (_execute).
                outcome = await_(
                    self._connection._execute(
                        function, self._connection._conn, operation, parameters
                    )
                )
            except Exception as error:
                adapt._handle_exception(error)
        self.description, self.rowcount, self.lastrowid, rows, is_open = outcome
        self._rows = deque(rows)
        adapt._may_be_open = is_open

    def _run_here(self, function: Any, operation: str, parameters: Any) -> Any:
        """Run a statement that cannot wait in the event loop's own thread.

        Once BEGIN IMMEDIATE has the write lock, nothing in a WAL database makes a
        statement wait: readers never block the writer, and the WAL is checkpointed at
        COMMIT, which still goes to the driver's thread (it waits for fsync). BEGIN itself
        is tried here without waiting (`_unless_busy`), and waits in the thread only when
        another process holds the lock. A keyed read or an INSERT takes a few dozen
        microseconds; the trip to the thread and back took more than that."""
        raw: sqlite3.Connection = self._connection._conn
        try:
            # Through await_ all the same, though the coroutine never suspends: SQLAlchemy's
            # AsyncConnection refuses a statement that made no await (AwaitRequired).
            return await_(_at_once(function, raw, operation, parameters))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def execute(self, operation: str, parameters: Any = None) -> None:
        self._run(_execute, operation, parameters)

    def executemany(self, operation: str, seq_of_parameters: Sequence[Any]) -> None:
        self._run(_execute_many, operation, seq_of_parameters)

    def fetchone(self) -> Any:
        return self._rows.popleft() if self._rows else None

    def fetchmany(self, size: int | None = None) -> list[Any]:
        count = min(size or self.arraysize, len(self._rows))
        return [self._rows.popleft() for _ in range(count)]

    def fetchall(self) -> list[Any]:
        rows = list(self._rows)
        self._rows.clear()
        return rows

    def __iter__(self) -> Iterator[Any]:
        while self._rows:
            yield self._rows.popleft()

    def close(self) -> None:
        self._rows.clear()

    async def _async_soft_close(self) -> None:
        """SQLAlchemy's asyncio results call this; the driver cursor is already closed."""

    def setinputsizes(self, *sizes: Any) -> None:
        pass

    def setoutputsize(self, size: Any, column: Any = None) -> None:
        pass


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ("_may_be_open",)
    _cursor_cls = OneTripCursor  # type: ignore[assignment]

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self._may_be_open = False

    def commit(self) -> None:
        super().commit()
        self._may_be_open = False

    async def run_prepared(
        self, operation: str, parameters: Any, many: bool, off_loop: bool
    ) -> list[Any]:
        """A statement from storage.direct, placed as OneTripCursor places one: on the event
        loop's thread inside a write transaction (unless it is large or `off_loop`),
        otherwise in the driver's thread. Awaited directly: no cursor, no greenlet."""
        function = _execute_many if many else _execute
        raw: sqlite3.Connection = self._connection._conn
        # As in OneTripCursor._run: until the statement reports back, a rollback must happen.
        self._may_be_open = True
        if _runs_on_loop(raw, off_loop, parameters):
            outcome = function(raw, operation, parameters)
        else:
            outcome = await self._connection._execute(function, raw, operation, parameters)
        self._may_be_open = outcome[4]
        return outcome[3]

    async def read_at_once(self, operation: str, parameters: Any) -> list[Any]:
        """A short read outside any transaction, from storage.direct's `Prepared.read` (a
        keyed lookup: an alias at RCPT, an API key): on the event loop's thread, as the
        statements of a write transaction run, unless SQLite would make it wait."""
        raw: sqlite3.Connection = self._connection._conn
        self._may_be_open = True  # as in run_prepared
        outcome = _unless_busy(raw, operation, parameters)
        if outcome is None:
            outcome = await self._connection._execute(_execute, raw, operation, parameters)
        self._may_be_open = outcome[4]
        return outcome[3]

    def rollback(self) -> None:
        # The pool rolls back every connection it takes back, and a session rolls back as
        # it closes: after a COMMIT, or after a reader's lone SELECT, neither has anything
        # to undo. Each statement reports whether it left a transaction open, so only a
        # real rollback costs a trip.
        if self._may_be_open:
            super().rollback()
            self._may_be_open = False


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        # The connection is also used from the event loop's thread (_run_here), one
        # statement at a time: sqlite3's same-thread check would refuse that.
        kw["check_same_thread"] = False
        adapted = super().connect(*arg, **kw)
        return OneTripConnection(self, adapted._connection)


class OneTripDialect(SQLiteDialect_aiosqlite):
    driver = "relay_aiosqlite"
    supports_statement_cache = True

    def do_execute(self, cursor: Any, statement: Any, parameters: Any, context: Any = None) -> None:
        _mark_off_loop(cursor, context)
        cursor.execute(statement, parameters)  # what DefaultDialect.do_execute does

    def do_executemany(
        self, cursor: Any, statement: Any, parameters: Any, context: Any = None
    ) -> None:
        _mark_off_loop(cursor, context)
        cursor.executemany(statement, parameters)

    @classmethod
    def import_dbapi(cls) -> OneTripDBAPI:
        return OneTripDBAPI(__import__("aiosqlite"), __import__("sqlite3"))


def _mark_off_loop(cursor: Any, context: Any) -> None:
    if context is not None and context.execution_options.get(OFF_LOOP):
        cursor.off_loop = True


registry.register("sqlite.relay_aiosqlite", __name__, "OneTripDialect")

"""The statements every message runs, executed on the driver's own connection.

SQLAlchemy's execution of a Core statement (the async bridge's greenlet, the statement
cache lookup, an execution context, a CursorResult and its row processing) cost about
95 µs of CPU per statement on this machine, where SQLite's own work for a keyed read or
an INSERT is about 11 µs (`AsyncConnection.execute` 104 µs, the same SQL on the sqlite3
connection 11 µs; 3 000 runs each, uvloop). A relayed reply ran fourteen such statements.

A `Prepared` statement is compiled by SQLAlchemy, once per dialect and parameter shape:
the same SQL, the same bind casts, the dialect's own bind and result processors for every
type. Only the execution is done here, on the DB-API connection the session's transaction
holds (storage.db.connection_of), so a statement is in that transaction as before; or, for a
keyed read outside any transaction (`Prepared.read`), on a pooled connection of its own.

Kept as with SQLAlchemy's execution: driver errors arrive as SQLAlchemy's exceptions (an
`IntegrityError` stays one), and the engine's `before_cursor_execute` listeners see each
statement (with None for the connection, for a `Prepared.read`). Not kept: `echo` logging,
and SQLAlchemy's disconnect handling on a failed statement (a PostgreSQL connection the
server closed is replaced at its next checkout, storage.db). Statements with expanding IN
lists, or with column defaults SQLAlchemy computes in Python, are refused when compiled:
they stay on `connection.execute`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exc
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ClauseElement, Select
from sqlalchemy.util import greenlet_spawn
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.db import connection_of

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Plan:
    """One statement compiled for one dialect and one set of parameter names."""

    sql: str
    compiled: Any  # SQLCompiler: construct_params gives SQLAlchemy's own parameter rules
    positions: tuple[str, ...]  # bind names in the order the driver takes them
    binds: tuple[Processor, ...]  # per position
    results: tuple[Processor, ...]  # per result column
    keys: tuple[str, ...]  # result column names

    def arguments(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        values = self.compiled.construct_params(params, escape_names=False)
        ordered = map(values.__getitem__, self.positions)
        return tuple(
            value if process is None else process(value)
            for process, value in zip(self.binds, ordered, strict=True)
        )

    def row(self, raw: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(v if p is None else p(v) for p, v in zip(self.results, raw, strict=True))


class Rows:
    """A statement's rows, already fetched, as tuples in the order of its columns."""

    __slots__ = ("keys", "_rows")

    def __init__(self, keys: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        self.keys = keys
        self._rows = rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self._rows)

    def all(self) -> list[tuple[Any, ...]]:
        return self._rows

    def first(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None

    def one(self) -> tuple[Any, ...]:
        if len(self._rows) != 1:
            if not self._rows:
                raise exc.NoResultFound("No row was found when one was required")
            raise exc.MultipleResultsFound("Multiple rows were found when one was required")
        return self._rows[0]

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalars(self) -> list[Any]:
        return [row[0] for row in self._rows]

    def mappings(self) -> list[dict[str, Any]]:
        return [dict(zip(self.keys, row, strict=True)) for row in self._rows]


class Prepared:
    """A Core statement built once, run on the driver's connection of a session's
    transaction (`rows`, `many`), or alone outside any (`read`, a SELECT only).

    `by_keys`: the statement's columns come from the parameters' names, as for
    `insert(table)` or `update(table).where(…)` without `.values()`; it is compiled once per
    set of names. `off_loop` (SQLite): the statement may take long (it returns or changes
    many rows), so it runs in the driver's thread even inside a write transaction."""

    def __init__(
        self, statement: ClauseElement, *, by_keys: bool = False, off_loop: bool = False
    ) -> None:
        self.statement = statement
        self.by_keys = by_keys
        self.off_loop = off_loop
        self._plans: dict[tuple[Any, ...], _Plan] = {}

    def _plan(self, dialect: Dialect, names: frozenset[str] | None, many: bool) -> _Plan:
        # By what shapes the SQL, not by the dialect object: each engine has its own, and
        # an engine made anew (tests make hundreds) would compile everything again.
        kind = (type(dialect), dialect.paramstyle, dialect.server_version_info)
        key = (kind, names, many)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._compile(dialect, names, many)
            self._plans[key] = plan
        return plan

    def _compile(self, dialect: Dialect, names: frozenset[str] | None, many: bool) -> _Plan:
        column_keys = sorted(names) if names is not None else None
        compiled: Any = self.statement.compile(
            dialect=dialect, column_keys=column_keys, for_executemany=many
        )
        if compiled.literal_execute_params or compiled.post_compile_params:
            raise TypeError("a statement with an expanding IN list cannot be prepared")
        if compiled.insert_prefetch or compiled.update_prefetch:
            raise TypeError("a statement with Python-side column defaults cannot be prepared")
        positions = tuple(compiled.positiontup or ())
        binds = tuple(
            compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            for name in positions
        )
        # What the rows hold: an INSERT's RETURNING may be implicit (PostgreSQL returns a
        # generated primary key unasked), so the compiler says, not the statement.
        returning = getattr(compiled, "effective_returning", None)
        exported = getattr(self.statement, "exported_columns", ())
        columns = list(returning if returning is not None else exported)
        results = tuple(
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns
        )
        keys = tuple(str(c.key) for c in columns)
        return _Plan(compiled.string, compiled, positions, binds, results, keys)

    async def rows(self, session: AsyncSession, params: Mapping[str, Any] | None = None) -> Rows:
        """Run the statement once; its rows, if it returns any."""
        params = params or {}
        connection = await _connection(session)
        names = frozenset(params) if self.by_keys else None
        plan = self._plan(connection.dialect, names, False)
        arguments = plan.arguments(params)
        _announce(connection, plan.sql, arguments, False)
        raw = await _run(connection, plan.sql, arguments, False, self.off_loop)
        return Rows(plan.keys, [plan.row(r) for r in raw])

    async def many(self, session: AsyncSession, params: Sequence[Mapping[str, Any]]) -> None:
        """Run the statement once per parameter set, in one driver call (executemany)."""
        if not params:
            return
        connection = await _connection(session)
        names = frozenset(params[0]) if self.by_keys else None
        if names is not None and any(frozenset(p) != names for p in params):
            raise TypeError("every row of one executemany needs the same parameter names")
        plan = self._plan(connection.dialect, names, True)
        arguments = [plan.arguments(p) for p in params]
        _announce(connection, plan.sql, arguments, True)
        await _run(connection, plan.sql, arguments, True, self.off_loop)

    async def read(self, engine: AsyncEngine, params: Mapping[str, Any] | None = None) -> Rows:
        """Run a short read (a keyed lookup of a row or two) outside any transaction, on a
        pooled connection of its own: no session, no SQLAlchemy connection, no BEGIN.

        Opening and closing a read session cost about 300 µs of CPU around a lookup of 30
        (pool checkout and return through the session's and the connection's machinery,
        three greenlet trips); each message asks one at RCPT, each API request one for its
        key. On SQLite the statement runs on the event loop's thread unless SQLite would
        make it wait (storage.sqlite_driver); on PostgreSQL it runs without BEGIN and
        ROLLBACK, one round trip instead of three. One statement reads one snapshot
        either way."""
        if not isinstance(self.statement, Select):
            # Outside a transaction a write would commit on its own, past SQLite's write turns.
            raise TypeError("only a SELECT can be read outside a transaction")
        params = params or {}
        pooled = await engine.raw_connection()
        try:
            dialect = engine.dialect
            names = frozenset(params) if self.by_keys else None
            plan = self._plan(dialect, names, False)
            arguments = plan.arguments(params)
            listeners = engine.sync_engine.dispatch.before_cursor_execute
            if listeners:  # no Connection here: listeners get None for it
                listeners(None, None, plan.sql, arguments, None, False)
            adapted: Any = pooled.dbapi_connection
            try:
                if dialect.name == "sqlite":
                    raw: list[Any] = await adapted.read_at_once(plan.sql, arguments)
                else:
                    raw = await _run_asyncpg(adapted, plan.sql, arguments, False, begin=False)
            except Exception as error:
                raise _translated(dialect, adapted, plan.sql, arguments, error) from error
            return Rows(plan.keys, [plan.row(r) for r in raw])
        finally:
            # In a greenlet: should a read have left something to roll back, the pool's
            # reset awaits the driver.
            await greenlet_spawn(pooled.close)


async def _connection(session: AsyncSession) -> Connection:
    """The session's connection, in its transaction (begun: on SQLite, BEGIN IMMEDIATE)."""
    connection = (await connection_of(session)).sync_connection
    assert connection is not None, "an AsyncConnection that was begun has one"
    return connection


def _announce(connection: Connection, sql: str, arguments: Any, many: bool) -> None:
    """What SQLAlchemy does before a statement, for the engine's listeners."""
    listeners = connection.dispatch.before_cursor_execute
    if listeners:
        listeners(connection, None, sql, arguments, None, many)


async def _run(
    connection: Connection, sql: str, arguments: Any, many: bool, off_loop: bool
) -> list[Any]:
    """The statement on the driver's connection; its raw rows."""
    adapted: Any = connection.connection.dbapi_connection
    try:
        if connection.dialect.name == "sqlite":
            rows: list[Any] = await adapted.run_prepared(sql, arguments, many, off_loop)
        else:
            rows = await _run_asyncpg(adapted, sql, arguments, many)
        return rows
    except Exception as error:
        raise _translated(connection.dialect, adapted, sql, arguments, error) from error


async def _run_asyncpg(
    adapted: Any, sql: str, arguments: Any, many: bool, *, begin: bool = True
) -> list[Any]:
    """What SQLAlchemy's asyncpg cursor does for a statement, minus the cursor: take the
    connection's turn, begin the transaction the adapter begins lazily (unless `begin` is
    false: a lone read), run. asyncpg prepares and caches the statement itself."""
    async with adapted._execute_mutex:
        if begin and adapted._transaction is None:
            await adapted._start_transaction()  # nothing, in autocommit
        driver = adapted._connection
        if many:
            await driver.executemany(sql, arguments)
            return []
        rows: list[Any] = await driver.fetch(sql, *arguments)
        return rows


def _translated(
    dialect: Dialect, adapted: Any, sql: str, arguments: Any, error: Exception
) -> BaseException:
    """The driver's exception as SQLAlchemy raises it (`exc.IntegrityError`, …)."""
    dbapi: Any = dialect.loaded_dbapi
    try:
        adapted._handle_exception(error)  # the adapter's own translation into DB-API errors
    except dbapi.Error as translated:
        wrapped: BaseException = exc.DBAPIError.instance(sql, arguments, translated, dbapi.Error)
        return wrapped
    except Exception as other:
        return other
    return error

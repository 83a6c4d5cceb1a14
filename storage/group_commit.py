"""Group commit: units of work from concurrent callers share one transaction and one commit.

Each inbound message was a transaction of its own, and a transaction costs more than the
statements of a reply together: a session, BEGIN (on SQLite taking the write lock), COMMIT
(a trip to the driver's thread and an fsync, or a round trip and PostgreSQL's WAL flush),
and the pool's checkout and return; about 700 µs of CPU here against 14 µs for a keyed
read in it. Under load the callers queue for the write lock anyway (SQLite writers of a
process take turns, storage.db). Here whoever is waiting when a transaction ends goes into
the next one together, up to `max_units`; alone, a unit runs as before.

Every caller gets its answer only after the transaction holding its work committed (no 250
or 201 before the commit), a failed unit's exception included: a caller that looks for what
a concurrent twin committed (an idempotency key's replay) finds it. Within a shared
transaction each unit runs in a savepoint: the session's own (`begin_nested`), or for a
unit declared to run SQL only (`run(…, orm=False)`: inbound mail) a plain SQL one, about
30 µs against 250. A unit that raises, in SQL or in an ORM flush, has its writes undone and
gets its exception; the others commit. If the transaction itself fails (BEGIN, COMMIT, a
lost connection), every unit in it gets that error and nothing of it is stored, as when
each had its own.

Units of one shared transaction hold each other's row locks until it commits, so on
PostgreSQL two such transactions can deadlock where single messages could not. A unit
PostgreSQL aborts for a deadlock or a serialization failure did nothing wrong: it is run
again in a later transaction (up to MAX_ATTEMPTS times), as is a whole transaction that
failed so. A unit must therefore not keep state from a run that failed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import event, text
from sqlalchemy.orm import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.db import SessionFactory, transaction
from storage.direct import Prepared

log = logging.getLogger(__name__)
T = TypeVar("T")
Work = Callable[[AsyncSession], Awaitable[T]]

# PostgreSQL's deadlock_detected and serialization_failure: run again, they succeed.
_RETRY_SQLSTATES = frozenset({"40P01", "40001"})
MAX_ATTEMPTS = 3


class GroupClosed(RuntimeError):
    """The relay is shutting down: no new work is taken (SMTP answers 451)."""


@dataclass(eq=False)  # each unit is itself: compared by identity
class _Unit(Generic[T]):
    work: Work[T]
    answer: asyncio.Future[T]
    orm: bool
    attempts: int = 0


@dataclass
class _Outcome:
    unit: _Unit[Any]
    result: Any = None
    error: BaseException | None = None


class GroupCommit:
    """Runs callers' units of work in shared transactions, in arrival order."""

    def __init__(self, sessions: SessionFactory, max_units: int, parallel: int = 1) -> None:
        if max_units < 1 or parallel < 1:
            raise ValueError("a transaction holds at least one unit, and one must run at a time")
        self.sessions = sessions
        self.max_units = max_units
        self.parallel = parallel
        self._waiting: deque[_Unit[Any]] = deque()
        self._leaders: set[asyncio.Task[None]] = set()
        self._closing = False
        # Sizes of the transactions committed, for tests and the curious.
        self.last_sizes: deque[int] = deque(maxlen=1000)

    @property
    def waiting(self) -> int:
        """Units handed in that no transaction has taken yet."""
        return len(self._waiting)

    @property
    def running(self) -> int:
        """Shared transactions under way."""
        return len(self._leaders)

    async def run(self, work: Work[T], *, orm: bool = True) -> T:
        """`work`'s result once the transaction it ran in has committed; its exception
        (its writes undone) if it raised.

        `orm=False` declares that `work` writes and reads through SQL only (storage.direct,
        Core), never through the session's unit of work: its savepoint is then plain SQL
        (about 30 µs where the session's costs about 250), of which the session knows
        nothing, so it could not forget entities a rollback to it undid. Should a unit so
        declared load, add or flush entities, its transaction is rolled back and the batch
        runs again, that unit with the session's savepoint, and a warning is logged."""
        if self._closing:
            raise GroupClosed("shutting down")
        if self.max_units == 1:
            async with transaction(self.sessions) as session:
                return await work(session)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        unit: _Unit[T] = _Unit(work, future, orm)
        self._waiting.append(unit)
        self._lead_if_free()
        # A caller cancelled while it waits leaves its unit behind: a unit not yet begun is
        # skipped; one already running commits or not with the others, unanswered, as a
        # transaction cancelled during its COMMIT may have committed.
        return await unit.answer

    async def close(self) -> None:
        """Take no more work; wait for the units already handed in."""
        self._closing = True
        while self._leaders:
            await asyncio.shield(asyncio.gather(*self._leaders, return_exceptions=True))

    def _lead_if_free(self) -> None:
        if self._waiting and len(self._leaders) < self.parallel:
            self._leaders.add(asyncio.create_task(self._lead(), name="group-commit"))

    async def _lead(self) -> None:
        current = asyncio.current_task()
        assert current is not None
        try:
            while self._waiting:
                batch: list[_Unit[Any]] = []
                while self._waiting and len(batch) < self.max_units:
                    unit = self._waiting.popleft()
                    if not unit.answer.done():  # its caller gave up before it began
                        batch.append(unit)
                if batch:
                    await self._transaction(batch)
        finally:
            # At once, not in a done-callback: a unit handed in between this leader's last
            # look at the queue and such a callback would find no leader free to take it.
            self._leaders.discard(current)
            if current.cancelling():  # shut down: whoever still waits is told
                if not self._leaders:
                    while self._waiting:
                        self._waiting.popleft().answer.cancel()
            else:
                self._lead_if_free()

    async def _transaction(self, batch: list[_Unit[Any]]) -> None:
        for unit in batch:
            unit.attempts += 1
        outcomes: list[_Outcome] = []
        try:
            async with transaction(self.sessions) as session:
                if len(batch) == 1:
                    outcomes.append(_Outcome(batch[0], await batch[0].work(session)))
                else:
                    for unit in batch:
                        run = _in_savepoint if unit.orm else _in_sql_savepoint
                        outcomes.append(await run(session, unit))
        except _OrmUsed as misdeclared:
            # Rolled back whole (the session may hold what the unit's savepoint undid): the
            # batch runs again, that unit as an ORM unit. Nobody's fault but the code's.
            log.warning("%s; it runs again with the session's own savepoint", misdeclared)
            misdeclared.unit.orm = True
            for unit in batch:
                unit.attempts -= 1
            self._waiting.extendleft(reversed(batch))
            return
        except BaseException as failure:
            # Nothing of the transaction is stored: every unit gets the error (a unit's own
            # exception when it was the one that raised alone), or runs again.
            self._answer([_Outcome(unit, error=failure) for unit in batch])
            if not isinstance(failure, Exception):
                raise  # cancelled (shutdown): the units were told; the task ends
            return
        self.last_sizes.append(len(batch))
        self._answer(outcomes)

    def _answer(self, outcomes: list[_Outcome]) -> None:
        """Tell each unit's caller, or put the unit back to run again: those go to the front
        of the queue, in their order, since they were handed in first."""
        again = [o.unit for o in outcomes if _worth_retrying(o.error, o.unit)]
        self._waiting.extendleft(reversed(again))
        for outcome in outcomes:
            if outcome.unit not in again:
                _settle(outcome)


async def _in_savepoint(session: AsyncSession, unit: _Unit[Any]) -> _Outcome:
    try:
        # The session's own savepoint: a failed ORM flush inside rolls back to it, not the
        # whole transaction, and the session forgets what it undid.
        async with session.begin_nested():
            # The session emits SAVEPOINT when the nested transaction first asks for its
            # connection; statements run through storage.direct never ask.
            await session.connection()
            return _Outcome(unit, await unit.work(session))
    except Exception as error:
        return _Outcome(unit, error=error)
    except asyncio.CancelledError as error:
        if _leader_cancelled():
            raise  # shutdown: the transaction rolls back
        return _Outcome(unit, error=error)  # something the unit awaited was cancelled


def _leader_cancelled() -> bool:
    """Whether the leader running the units is itself cancelled (shutdown), as opposed to
    something one unit awaited."""
    current = asyncio.current_task()
    return current is not None and current.cancelling() > 0


# One name serves every SQL-only unit: their savepoints follow each other, never nest.
_SAVEPOINT = Prepared(text("SAVEPOINT relay_unit"))
_RELEASE = Prepared(text("RELEASE SAVEPOINT relay_unit"))
_ROLLBACK_TO = Prepared(text("ROLLBACK TO SAVEPOINT relay_unit"))


# Entities loaded into, or flushed from, a session: counted in its `info` by listeners on
# every Session (one call per entity loaded and per flush), so that a unit declared to run
# SQL only can be checked to have done neither.
_ORM_WORK = "relay_orm_work"


def _count_orm_work(session: Session, *_: Any) -> None:
    session.info[_ORM_WORK] = session.info.get(_ORM_WORK, 0) + 1


event.listen(Session, "loaded_as_persistent", _count_orm_work)
event.listen(Session, "before_flush", _count_orm_work)


async def _in_sql_savepoint(session: AsyncSession, unit: _Unit[Any]) -> _Outcome:
    """As `_in_savepoint`, for a unit that runs SQL only: SAVEPOINT, RELEASE and ROLLBACK TO
    on the driver's connection, without the session's nested-transaction machinery."""
    orm_work = session.info.get(_ORM_WORK, 0)
    await _SAVEPOINT.rows(session)
    try:
        result = await unit.work(session)
    except (Exception, asyncio.CancelledError) as error:
        if isinstance(error, asyncio.CancelledError) and _leader_cancelled():
            raise  # shutdown: the transaction rolls back
        _require_sql_only(session, unit, orm_work)
        await _ROLLBACK_TO.rows(session)
        await _RELEASE.rows(session)
        return _Outcome(unit, error=error)
    _require_sql_only(session, unit, orm_work)
    await _RELEASE.rows(session)
    return _Outcome(unit, result)


class _OrmUsed(Exception):
    """A unit declared orm=False used the session's unit of work."""

    def __init__(self, unit: _Unit[Any], what: str) -> None:
        super().__init__(f"a unit declared orm=False {what} ({unit.work!r:.200})")
        self.unit = unit


def _require_sql_only(session: AsyncSession, unit: _Unit[Any], orm_work: int) -> None:
    """A unit declared orm=False that used the unit of work leaves the session holding
    what its savepoint may undo (or what a later flush would write for it): a bug. The
    transaction is not committed; the batch runs again (`GroupCommit._transaction`)."""
    if session.new or session.dirty or session.deleted:
        raise _OrmUsed(unit, "left changes in the session")
    if session.info.get(_ORM_WORK, 0) != orm_work:
        raise _OrmUsed(unit, "loaded or flushed entities")


def _worth_retrying(error: BaseException | None, unit: _Unit[Any]) -> bool:
    if error is None or unit.attempts >= MAX_ATTEMPTS or unit.answer.done():
        return False
    orig = getattr(error, "orig", None)
    return getattr(orig, "sqlstate", None) in _RETRY_SQLSTATES


def _settle(outcome: _Outcome) -> None:
    answer = outcome.unit.answer
    if answer.done():  # its caller was cancelled
        return
    if outcome.error is None:
        answer.set_result(outcome.result)
    elif isinstance(outcome.error, Exception):
        answer.set_exception(outcome.error)
    else:
        answer.cancel()  # cancelled, or the transaction was (shutdown)

"""storage.group_commit: units of work arriving together share a transaction, each in its
own savepoint, and every caller hears back only after the commit; on SQLite and
PostgreSQL, and end to end through the SMTP server."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib
import httpx
import pytest
from sqlalchemy import Column, ForeignKey, Integer, MetaData, Table, Text, bindparam, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import registry
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.db import make_read_sessions, make_sessions, transaction
from storage.direct import Prepared
from storage.group_commit import GroupClosed, GroupCommit
from tests.conftest import PG_URL, Database, engine_with
from tests.harness import FLEET_INBOX, PARTNER_INBOX, live_relay, reply_mail

_META = MetaData()
_PARENT = Table("gc_parent", _META, Column("id", Integer, primary_key=True))
_ENTRY = Table(
    "gc_entry",
    _META,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("body", Text, nullable=False, unique=True),
    # Checked at COMMIT, not at the INSERT: the way to make a whole transaction fail late.
    Column(
        "parent_id",
        Integer,
        ForeignKey("gc_parent.id", deferrable=True, initially="DEFERRED"),
        nullable=True,
    ),
)
_ADD = Prepared(insert(_ENTRY).values(body=bindparam("body"), parent_id=bindparam("parent")))
_BODIES = Prepared(select(_ENTRY.c.body).order_by(_ENTRY.c.body))
_PARENTS = Prepared(insert(_PARENT).values(id=bindparam("id")))
_LOCK_PARENT = Prepared(
    select(_PARENT.c.id).where(_PARENT.c.id == bindparam("id")).with_for_update()
)

Work = Callable[[AsyncSession], Awaitable[str]]


@pytest.fixture
async def engine(database: Database) -> AsyncIterator[AsyncEngine]:
    async with engine_with(database, _META) as engine:
        yield engine


async def queue_reaches(commits: GroupCommit, *, running: int, waiting: int) -> None:
    """Wait until the group commit holds this many open transactions and queued units: the
    requests travel through real sockets and servers, so no fixed pause is long enough on
    a loaded machine."""
    for _ in range(1000):
        if (commits.running, commits.waiting) == (running, waiting):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"queue at {commits.running} running, {commits.waiting} waiting")


def adding(body: str, parent: int | None = None, *, fail: bool = False) -> Work:
    async def work(session: AsyncSession) -> str:
        await _ADD.rows(session, {"body": body, "parent": parent})
        if fail:
            raise ValueError(f"{body} refused after writing")
        return body

    return work


async def stored(engine: AsyncEngine) -> list[str]:
    async with make_read_sessions(engine)() as session:
        return list((await _BODIES.rows(session)).scalars())


@dataclass
class Queued:
    """Units handed in while a first unit keeps its transaction open: they wait for the
    next transaction until `release`."""

    first: asyncio.Task[str]
    units: list[asyncio.Task[str]]
    open: asyncio.Event

    async def release(self) -> None:
        self.open.set()
        assert await self.first == "first"


async def queued(commits: GroupCommit, *works: Work, orm: bool = True) -> Queued:
    held = asyncio.Event()

    async def first(session: AsyncSession) -> str:
        await _ADD.rows(session, {"body": "first", "parent": None})
        await held.wait()
        return "first"

    first_task = asyncio.create_task(commits.run(first))
    await asyncio.sleep(0.05)
    units = [asyncio.create_task(commits.run(work, orm=orm)) for work in works]
    await asyncio.sleep(0.05)
    return Queued(first_task, units, held)


async def test_units_handed_in_together_share_one_commit(engine: AsyncEngine) -> None:
    commits = GroupCommit(make_sessions(engine), max_units=4)
    waiting = await queued(commits, *(adding(f"u{i}") for i in range(6)))
    assert not any(t.done() for t in waiting.units)  # nothing answered before its commit
    assert await stored(engine) == []  # and nothing visible yet
    await waiting.release()
    assert await asyncio.gather(*waiting.units) == [f"u{i}" for i in range(6)]
    # One alone, then at most four a transaction, in the order handed in.
    assert list(commits.last_sizes) == [1, 4, 2]
    assert await stored(engine) == ["first", *(f"u{i}" for i in range(6))]


@pytest.mark.parametrize("orm", [True, False], ids=["session-savepoints", "sql-savepoints"])
async def test_a_unit_that_raises_is_undone_alone(engine: AsyncEngine, orm: bool) -> None:
    """Also after a failed statement: on PostgreSQL the rollback to the unit's savepoint
    is what lets the others go on in the same transaction."""
    commits = GroupCommit(make_sessions(engine), max_units=8)
    waiting = await queued(
        commits,
        adding("good"),
        adding("bad", fail=True),
        adding("good"),  # the unique body again
        adding("also"),
        orm=orm,
    )
    await waiting.release()
    good, bad, duplicate, also = waiting.units
    assert await good == "good" and await also == "also"
    with pytest.raises(ValueError, match="bad refused"):
        await bad
    with pytest.raises(IntegrityError):
        await duplicate
    assert list(commits.last_sizes) == [1, 4]
    assert await stored(engine) == ["also", "first", "good"]


class _MappedEntry:
    """gc_entry as an ORM entity, for units that use the session's unit of work."""

    id: int | None
    body: str
    parent_id: int | None


registry().map_imperatively(_MappedEntry, _ENTRY)


def through_the_orm(body: str, *, load: bool = False) -> Work:
    async def work(session: AsyncSession) -> str:
        if load:
            await session.get(_MappedEntry, 1)
        else:
            entry = _MappedEntry()
            entry.body, entry.parent_id = body, None
            session.add(entry)
        return body

    return work


@pytest.mark.parametrize("load", [False, True], ids=["adds", "loads"])
async def test_a_unit_declared_sql_only_that_uses_the_orm_runs_again_as_an_orm_unit(
    engine: AsyncEngine, load: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A plain SQL savepoint cannot make the session forget entities a rollback to it
    undid (a later flush would write them): a unit declared orm=False that adds or loads
    entities is a bug. Its transaction is not committed; the whole batch runs again, that
    unit with the session's own savepoint, and a warning names it."""
    commits = GroupCommit(make_sessions(engine), max_units=8)
    waiting = await queued(
        commits, adding("sql"), through_the_orm("orm", load=load), adding("after"), orm=False
    )
    await waiting.release()
    assert await asyncio.gather(*waiting.units) == ["sql", "orm", "after"]
    assert list(commits.last_sizes) == [1, 3]  # the first unit's, then the batch's rerun
    expected = ["after", "first", "sql"] if load else ["after", "first", "orm", "sql"]
    assert await stored(engine) == expected
    warned = [r.getMessage() for r in caplog.records if r.name == "storage.group_commit"]
    assert len(warned) == 1 and "declared orm=False" in warned[0], warned


async def test_a_failed_commit_fails_every_unit_of_it_and_stores_none(
    engine: AsyncEngine,
) -> None:
    commits = GroupCommit(make_sessions(engine), max_units=8)
    # The orphan's missing parent fails the COMMIT, not its INSERT.
    waiting = await queued(commits, adding("fine"), adding("orphan", parent=404))
    await waiting.release()
    for task in waiting.units:
        with pytest.raises(IntegrityError):
            await task
    assert await stored(engine) == ["first"]
    # The next transaction is not affected.
    assert await commits.run(adding("after")) == "after"
    assert await stored(engine) == ["after", "first"]


async def test_a_caller_that_gave_up_before_its_unit_began_has_it_skipped(
    engine: AsyncEngine,
) -> None:
    commits = GroupCommit(make_sessions(engine), max_units=8)
    waiting = await queued(commits, adding("abandoned"), adding("kept"))
    abandoned, kept = waiting.units
    abandoned.cancel()
    await waiting.release()
    assert await kept == "kept"
    assert abandoned.cancelled()
    assert await stored(engine) == ["first", "kept"]


async def test_a_group_of_one_gives_every_unit_its_own_transaction(engine: AsyncEngine) -> None:
    commits = GroupCommit(make_sessions(engine), max_units=1)
    results = await asyncio.gather(*(commits.run(adding(f"own{i}")) for i in range(3)))
    assert results == ["own0", "own1", "own2"]
    with pytest.raises(ValueError):
        await commits.run(adding("undone", fail=True))
    assert await stored(engine) == ["own0", "own1", "own2"]
    assert list(commits.last_sizes) == []  # nothing went through the shared path
    with pytest.raises(ValueError):
        GroupCommit(make_sessions(engine), max_units=0)


async def test_smtp_replies_arriving_together_share_a_commit_and_a_refusal_stays_alone(
    tmp_path: Path,
) -> None:
    """While another process holds SQLite's write lock, replies queue in the relay; once it
    is free they go into one transaction. A reply from a stranger in the same group gets
    its 550; the others their 250 and their forward."""
    database = tmp_path / "relay.db"
    async with live_relay(f"sqlite+aiosqlite:///{database}", None) as live:
        _, _, alias = await live.fleet_ticket()
        blocker = sqlite3.connect(database, timeout=5)
        blocker.execute("BEGIN IMMEDIATE")  # the write lock, held by someone else

        async def send(sender: str, text: str) -> str:
            mail = reply_mail(sender, alias, text).as_bytes()
            try:
                async with aiosmtplib.SMTP(hostname="127.0.0.1", port=live.smtp_port) as smtp:
                    _, reply = await smtp.sendmail(sender, [alias], mail)
                    return reply
            except aiosmtplib.SMTPDataError as error:
                return f"{error.code} {error.message}"

        first = asyncio.create_task(send(FLEET_INBOX, "first, alone"))
        await queue_reaches(live.relay.commits, running=1, waiting=0)  # waits for the lock
        group = [
            asyncio.create_task(send(FLEET_INBOX, "second")),
            asyncio.create_task(send("stranger@elsewhere.example", "not allowed")),
            asyncio.create_task(send(FLEET_INBOX, "third")),
        ]
        await queue_reaches(live.relay.commits, running=1, waiting=3)
        assert not first.done() and not any(t.done() for t in group)
        blocker.rollback()
        blocker.close()
        replies = [await first, *(await asyncio.gather(*group))]
        assert [r.split()[0] for r in replies] == ["2.0.0", "2.0.0", "550", "2.0.0"], replies
        forwarded = await live.sink.handler.wait_for(PARTNER_INBOX, 3)
        bodies = [m.message.get_body(("plain",)) for m in forwarded]
        texts = [body.get_content() for body in bodies if body is not None]
        for sent in ("first, alone", "second", "third"):
            assert sum(sent in text for text in texts) == 1, texts
        assert 3 in live.relay.commits.last_sizes


async def test_units_handed_in_at_every_moment_are_all_answered(engine: AsyncEngine) -> None:
    """Leaders come and go as the queue empties and fills: no unit is ever left without one
    (one handed in just as the last leader finishes must start another)."""
    parallel = 1 if engine.dialect.name == "sqlite" else 3
    commits = GroupCommit(make_sessions(engine), max_units=4, parallel=parallel)

    async def hand_in(i: int) -> str:
        await asyncio.sleep((i % 7) * 0.002)
        return await commits.run(adding(f"n{i:03}"))

    results = await asyncio.wait_for(asyncio.gather(*(hand_in(i) for i in range(120))), 60)
    assert results == [f"n{i:03}" for i in range(120)]
    assert await stored(engine) == [f"n{i:03}" for i in range(120)]
    assert not commits._leaders  # every leader ended with the queue


if PG_URL:  # two transactions open at once: PostgreSQL only (SQLite has one writer)

    async def test_postgresql_runs_several_shared_transactions_at_once(
        engine: AsyncEngine,
    ) -> None:
        commits = GroupCommit(make_sessions(engine), max_units=8, parallel=2)
        both_open = asyncio.Barrier(2)

        async def meeting(body: str) -> Work:
            async def work(session: AsyncSession) -> str:
                await _ADD.rows(session, {"body": body, "parent": None})
                await asyncio.wait_for(both_open.wait(), 10)  # the other is open too
                return body

            return work

        one = asyncio.create_task(commits.run(await meeting("one")))
        await asyncio.sleep(0.05)  # the first transaction is open, waiting at the barrier
        two = asyncio.create_task(commits.run(await meeting("two")))
        assert [await one, await two] == ["one", "two"]
        assert await stored(engine) == ["one", "two"]


async def test_new_tickets_arriving_together_share_a_commit_and_the_limit_holds(
    tmp_path: Path,
) -> None:
    """Tickets opened through the API while the write lock is elsewhere go into one
    transaction; the open-ticket limit counts the ones opened before them in it, so the
    one over the limit gets its 409 and leaves nothing behind."""
    database = tmp_path / "relay.db"
    async with live_relay(
        f"sqlite+aiosqlite:///{database}", None, max_open_tickets_per_trip=3
    ) as live:
        acc = await live.accounts()
        await live.put_trip(acc, "BK-9")
        blocker = sqlite3.connect(database, timeout=5)
        blocker.execute("BEGIN IMMEDIATE")

        async def open_one(n: int) -> httpx.Response:
            return await live.http.post(
                "/v1/support/demand/trips/BK-9/tickets",
                headers=acc.auth,
                json={"subject": f"Item {n}", "comment": "Left in the car."},
            )

        first = asyncio.create_task(open_one(0))
        await queue_reaches(live.relay.commits, running=1, waiting=0)  # waits for the lock
        together = [asyncio.create_task(open_one(n)) for n in (1, 2, 3)]
        await queue_reaches(live.relay.commits, running=1, waiting=3)
        assert not first.done() and not any(t.done() for t in together)
        blocker.rollback()
        blocker.close()
        responses = [await first, *(await asyncio.gather(*together))]
        # The three together reach the relay in whatever order the HTTP server takes them.
        assert responses[0].status_code == 201
        assert sorted(r.status_code for r in responses) == [201, 201, 201, 409]
        [refused] = [r for r in responses if r.status_code == 409]
        assert refused.json()["limitScope"] == "trip"
        opened = sorted(r.json()["subject"] for r in responses if r.status_code == 201)
        assert 3 in live.relay.commits.last_sizes
        listed = await live.http.get("/v1/support/tickets", headers=acc.auth)
        assert sorted(t["subject"] for t in listed.json()["tickets"]) == opened
        mails = await live.sink.handler.wait_for(FLEET_INBOX, 3)
        assert len(mails) == 3


async def test_keyed_twins_in_one_group_create_once_and_all_get_the_same_201(
    tmp_path: Path,
) -> None:
    """Three requests with one Idempotency-Key in one shared transaction: the first creates,
    the others' ORM flush of the key fails in their own savepoint, and they hear so only
    after the commit, when their replay finds the first one's response."""
    database = tmp_path / "relay.db"
    async with live_relay(f"sqlite+aiosqlite:///{database}", None) as live:
        acc = await live.accounts()
        await live.put_trip(acc, "BK-7")
        path = "/v1/support/demand/trips/BK-7/tickets"
        blocker = sqlite3.connect(database, timeout=5)
        blocker.execute("BEGIN IMMEDIATE")

        async def post(key: str) -> httpx.Response:
            body = {"subject": "Umbrella", "comment": "Left in the car."}
            headers = {**acc.auth, "Idempotency-Key": key}
            return await live.http.post(path, headers=headers, json=body)

        first = asyncio.create_task(post("other"))
        await queue_reaches(live.relay.commits, running=1, waiting=0)  # waits for the lock
        twins = [asyncio.create_task(post("twin")) for _ in range(3)]
        await queue_reaches(live.relay.commits, running=1, waiting=3)
        blocker.rollback()
        blocker.close()
        assert (await first).status_code == 201
        responses = await asyncio.gather(*twins)
        assert [r.status_code for r in responses] == [201] * 3, [r.text for r in responses]
        assert len({r.content for r in responses}) == 1
        assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 2
        assert 3 in live.relay.commits.last_sizes
        listed = await live.http.get("/v1/support/tickets", headers=acc.auth)
        assert len(listed.json()["tickets"]) == 2


async def test_a_unit_whose_await_was_cancelled_fails_alone(engine: AsyncEngine) -> None:
    """A CancelledError from inside a unit (something it awaited was cancelled) is that
    unit's failure: the leader goes on with the others and with what is queued after."""
    commits = GroupCommit(make_sessions(engine), max_units=2)
    doomed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def awaits_doomed(session: AsyncSession) -> str:
        await _ADD.rows(session, {"body": "doomed", "parent": None})
        await doomed
        return "never"

    waiting = await queued(commits, awaits_doomed, adding("beside"), adding("next"))
    victim, beside, later = waiting.units
    await waiting.release()
    await asyncio.sleep(0.05)
    doomed.cancel()
    assert await beside == "beside" and await later == "next"
    with pytest.raises(asyncio.CancelledError):
        await victim
    assert await stored(engine) == ["beside", "first", "next"]


async def test_closing_waits_for_work_handed_in_and_refuses_more(engine: AsyncEngine) -> None:
    commits = GroupCommit(make_sessions(engine), max_units=4)
    waiting = await queued(commits, adding("queued"))
    closing = asyncio.create_task(commits.close())
    await asyncio.sleep(0.05)
    assert not closing.done()  # the held transaction and the queued unit are not done
    with pytest.raises(GroupClosed):
        await commits.run(adding("late"))
    await waiting.release()
    await closing
    assert await waiting.units[0] == "queued"
    assert await stored(engine) == ["first", "queued"]


if PG_URL:

    async def test_postgresql_deadlocked_units_run_again_and_both_commit(
        engine: AsyncEngine,
    ) -> None:
        """Two shared transactions lock two rows in opposite orders; PostgreSQL aborts one
        unit (deadlock_detected), which runs again in a later transaction."""
        async with transaction(make_sessions(engine)) as session:
            await _PARENTS.many(session, [{"id": 1}, {"id": 2}])
        commits = GroupCommit(make_sessions(engine), max_units=8, parallel=2)
        runs: Counter[str] = Counter()
        locked = {"a": asyncio.Event(), "b": asyncio.Event()}

        def crossing(name: str, mine: int, other: int, partner: str) -> Work:
            async def work(session: AsyncSession) -> str:
                runs[name] += 1
                await _LOCK_PARENT.rows(session, {"id": mine})
                if runs[name] == 1:  # the first time, meet the other holding its row
                    locked[name].set()
                    await asyncio.wait_for(locked[partner].wait(), 10)
                await _LOCK_PARENT.rows(session, {"id": other})
                await _ADD.rows(session, {"body": name, "parent": None})
                return name

            return work

        one = asyncio.create_task(commits.run(crossing("a", 1, 2, "b")))
        await asyncio.sleep(0.05)  # its transaction open: the second gets a leader of its own
        two = asyncio.create_task(commits.run(crossing("b", 2, 1, "a")))
        assert list(await asyncio.wait_for(asyncio.gather(one, two), 30)) == ["a", "b"]
        assert sorted(runs.values()) == [1, 2]  # the deadlock's victim ran twice
        assert await stored(engine) == ["a", "b"]


async def test_once_closing_the_relay_answers_new_work_with_retry_later(tmp_path: Path) -> None:
    """What arrives after the group commit closed (the relay is stopping) is refused in a way
    that asks for a retry, and changes nothing: SMTP 451, HTTP 503 with Retry-After."""
    async with live_relay(f"sqlite+aiosqlite:///{tmp_path / 'relay.db'}", None) as live:
        acc, ticket_id, alias = await live.fleet_ticket()
        await live.relay.commits.close()
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await live.send(reply_mail(FLEET_INBOX, alias, "too late"), alias)
        assert refused.value.code == 451
        response = await live.http.post(
            "/v1/support/demand/trips/BK-1/tickets",
            headers=acc.auth,
            json={"subject": "Late", "comment": "Arrives as the relay stops."},
        )
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["retry-after"] == "5"
        listed = await live.http.get("/v1/support/tickets", headers=acc.auth)
        assert [t["id"] for t in listed.json()["tickets"]] == [ticket_id]
        ticket = await live.ticket(acc, ticket_id)
        assert len(ticket["conversation"]) == 1  # the partner's first message only


async def test_order_sessions_opened_together_share_a_commit_and_open_one_ticket(
    tmp_path: Path,
) -> None:
    """Three opens of one order's session in one shared transaction: the first opens the
    ticket, the next two find it there (their savepoints see the earlier unit's rows) and
    answer 200 with the same session."""
    database = tmp_path / "relay.db"
    async with live_relay(f"sqlite+aiosqlite:///{database}", None) as live:
        acc = await live.accounts()
        await live.put_trip(acc, "BK-2")
        await live.put_trip(acc, "ORD-8")
        blocker = sqlite3.connect(database, timeout=5)
        blocker.execute("BEGIN IMMEDIATE")
        first = asyncio.create_task(live.open_ticket(acc, "BK-2"))
        await queue_reaches(live.relay.commits, running=1, waiting=0)  # waits for the lock
        opens = [
            asyncio.create_task(live.http.post("/v1/support/orders/ORD-8", headers=acc.auth))
            for _ in range(3)
        ]
        await queue_reaches(live.relay.commits, running=1, waiting=3)
        blocker.rollback()
        blocker.close()
        await first
        responses = await asyncio.gather(*opens)
        assert sorted(r.status_code for r in responses) == [200, 200, 201]
        assert len({r.json()["ticketId"] for r in responses}) == 1
        assert 3 in live.relay.commits.last_sizes


async def test_threaded_replies_arriving_together_share_a_commit_and_stay_threaded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Replies citing an earlier message (In-Reply-To) run SQL only too: grouped, each is
    answered 250 and forwarded answering the cited message by the ID the partner knows it
    by, and no unit had to run again."""
    database = tmp_path / "relay.db"
    async with live_relay(f"sqlite+aiosqlite:///{database}", None) as live:
        _, _, alias = await live.fleet_ticket()

        async def send(text: str, cites: str | None = None) -> tuple[str, str]:
            mail = reply_mail(FLEET_INBOX, alias, text, cites=cites)
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=live.smtp_port) as smtp:
                _, reply = await smtp.sendmail(FLEET_INBOX, [alias], mail.as_bytes())
                return reply, str(mail["Message-ID"])

        reply, cited = await send("the umbrella is at the depot")
        assert reply.startswith("2.0.0")
        [earlier] = await live.sink.handler.wait_for(PARTNER_INBOX)
        answered = str(earlier.message["Message-ID"])  # the partner's ID for that reply
        blocker = sqlite3.connect(database, timeout=5)
        blocker.execute("BEGIN IMMEDIATE")
        first = asyncio.create_task(send("first", cited))
        await queue_reaches(live.relay.commits, running=1, waiting=0)
        group = [asyncio.create_task(send(f"grouped {i}", cited)) for i in range(3)]
        await queue_reaches(live.relay.commits, running=1, waiting=3)
        blocker.rollback()
        blocker.close()
        replies = [await first, *(await asyncio.gather(*group))]
        assert all(r.startswith("2.0.0") for r, _ in replies), replies
        forwarded = (await live.sink.handler.wait_for(PARTNER_INBOX, 5))[1:]
        # Each answers the cited reply, not merely the latest message of the ticket.
        assert [str(m.message["In-Reply-To"]) for m in forwarded] == [answered] * 4
        assert 3 in live.relay.commits.last_sizes
    assert not [r for r in caplog.records if "declared orm=False" in r.getMessage()]

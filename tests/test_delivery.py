"""The outbox worker against a real smarthost that answers 4xx/5xx on demand."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import update
from sqlmodel import col, select

from bench.common import pg_execute
from relay.config import SMTPOutbound
from relay.delivery import DeliveryWorker, RetryPolicy
from relay.sink import MailSink, free_port
from relay.transport import SMTPTransport
from storage import outbox
from storage.db import make_engine, make_sessions, transaction
from storage.models import OutboxItem
from storage.types import utcnow
from tests.conftest import PG_URL, Database
from tests.harness import FLEET_INBOX, LiveRelay, live_relay


async def test_temporary_failure_is_retried_then_delivered(live: LiveRelay) -> None:
    live.sink.handler.fail_next("451 4.3.0 Try again later", times=2)
    acc = await live.accounts()
    await live.put_trip(acc)
    ticket = await live.open_ticket(acc)
    [mail] = await live.sink.handler.wait_for(FLEET_INBOX)
    assert b"Lost umbrella" in mail.raw
    deferred = await live.events(acc, ticket["id"], "delivery.deferred", 2)
    assert all("451" in e["detail"]["error"] for e in deferred)
    [sent] = await live.events(acc, ticket["id"], "delivery.sent")
    assert sent["detail"]["attempt"] == 3


async def test_permanent_failure_fails_at_once(live: LiveRelay) -> None:
    live.sink.handler.fail_next(f"550 5.1.1 <{FLEET_INBOX}>: mailbox unavailable")
    acc = await live.accounts()
    await live.put_trip(acc)
    ticket = await live.open_ticket(acc)
    [failed] = await live.events(acc, ticket["id"], "delivery.failed")
    assert failed["detail"]["attempt"] == 1 and "550" in failed["detail"]["error"]
    # The smarthost's text named the fleet's address; the partner must not see it.
    assert FLEET_INBOX not in failed["detail"]["error"]
    await asyncio.sleep(0.5)
    assert live.sink.handler.messages == []
    async with live.relay.sessions() as session:
        [item] = (await session.exec(select(OutboxItem))).all()
    assert item.status == outbox.FAILED and item.attempts == 1


async def test_unreachable_smarthost_is_retried_until_it_returns(database: Database) -> None:
    port = free_port()
    async with live_relay(
        database.url, database.schema, outbound=f"smtp://127.0.0.1:{port}"
    ) as live:
        acc = await live.accounts()
        await live.put_trip(acc)
        ticket = await live.open_ticket(acc)
        [deferred] = (await live.events(acc, ticket["id"], "delivery.deferred"))[:1]
        assert deferred["detail"]["error"].startswith("smarthost unreachable (")
        assert (
            "127.0.0.1" not in deferred["detail"]["error"]
            and str(port) not in deferred["detail"]["error"]
        )
        late = await MailSink(port=port).start()
        try:
            [mail] = await late.handler.wait_for(FLEET_INBOX, timeout=15)
            assert b"Lost umbrella" in mail.raw
        finally:
            await late.stop()


async def test_gives_up_after_the_lifetime(database: Database) -> None:
    port = free_port()
    async with live_relay(
        database.url, database.schema, outbound=f"smtp://127.0.0.1:{port}", delivery_lifetime=1
    ) as live:
        acc = await live.accounts()
        await live.put_trip(acc)
        ticket = await live.open_ticket(acc)
        [failed] = await live.events(acc, ticket["id"], "delivery.failed")
        assert failed["detail"]["error"].startswith("gave up")


async def test_connections_are_reused(database: Database) -> None:
    async with live_relay(database.url, database.schema, delivery_pool_size=1) as live:
        acc = await live.accounts()
        await live.put_trip(acc)
        for n in range(5):
            await live.open_ticket(acc, subject=f"ticket {n}")
        await live.sink.handler.wait_for(FLEET_INBOX, count=5)
        assert live.sink.connections == 1


async def test_new_row_wakes_the_worker_without_polling(database: Database) -> None:
    async with live_relay(database.url, database.schema, delivery_poll_interval=600) as live:
        acc = await live.accounts()
        await live.put_trip(acc)
        await live.open_ticket(acc)
        # With a ten-minute poll, only the wake-up can deliver this within the timeout.
        await live.sink.handler.wait_for(FLEET_INBOX, timeout=10)


async def test_two_workers_never_send_the_same_row(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    await live.open_ticket(acc)
    await live.sink.handler.wait_for(FLEET_INBOX)
    # Stop the relay's own worker, then fill the outbox with rows for two competing workers.
    live.relay.worker.stop()
    async with transaction(live.relay.sessions) as session:
        [template] = (await session.exec(select(OutboxItem))).all()
        for n in range(60):
            await outbox.enqueue(
                session,
                ticket_id=template.ticket_id,
                message_id=None,
                recipient_side="fleet",
                mail_from=template.mail_from,
                rcpt_to=f"copy{n}@fleet.example",
                raw=template.raw,
                lifetime=timedelta(hours=1),
            )
    target = SMTPOutbound(host="127.0.0.1", port=live.sink.port)
    workers = []
    for _ in range(2):
        # Separate engines: two processes sharing one database, as in a scaled-out deployment.
        engine = make_engine(live.settings.database_url, live.settings.database_schema)
        worker = DeliveryWorker(
            make_sessions(engine),
            SMTPTransport(target, pool_size=4, timeout=10),
            retry=RetryPolicy(0.2, 1),
            concurrency=5,
            lease=timedelta(minutes=5),
            poll_interval=0.1,
        )
        workers.append((engine, worker))

    async def drain(worker: DeliveryWorker) -> None:
        while await worker.run_once():
            pass

    await asyncio.gather(*(drain(w) for _, w in workers))
    for engine, worker in workers:
        await worker.transport.close()
        await engine.dispose()
    copies = [m.rcpt_to[0] for m in live.sink.handler.messages if m.rcpt_to[0].startswith("copy")]
    assert sorted(copies) == sorted(f"copy{n}@fleet.example" for n in range(60))
    async with live.relay.sessions() as session:
        statuses = (await session.exec(select(OutboxItem.status))).all()
    assert set(statuses) == {outbox.SENT}


async def test_a_dead_workers_lease_expires_and_the_row_is_sent(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    await live.open_ticket(acc)
    await live.sink.handler.wait_for(FLEET_INBOX)
    async with transaction(live.relay.sessions) as session:
        [item] = (await session.exec(select(OutboxItem))).all()
        # Pretend a worker claimed a copy and died mid-send a while ago.
        stuck = await outbox.enqueue(
            session,
            ticket_id=item.ticket_id,
            message_id=None,
            recipient_side="fleet",
            mail_from=item.mail_from,
            rcpt_to="stuck@fleet.example",
            raw=item.raw,
            lifetime=timedelta(hours=1),
        )
        # enqueue wrote the row at once (storage.rows): change it in the database, not on
        # the returned instance, which the session does not track.
        await session.exec(
            update(OutboxItem)
            .where(col(OutboxItem.id) == stuck.id)
            .values(status=outbox.SENDING, lease_until=utcnow() - timedelta(seconds=1))
        )
    live.relay.worker.notify()
    [mail] = await live.sink.handler.wait_for("stuck@fleet.example")
    assert mail.rcpt_to == ["stuck@fleet.example"]
    query = select(OutboxItem.status).where(col(OutboxItem.rcpt_to) == "stuck@fleet.example")
    for _ in range(100):  # the sink sees the mail a moment before the worker records it
        async with live.relay.sessions() as session:
            statuses = list((await session.exec(query)).all())
        if statuses == [outbox.SENT]:
            break
        await asyncio.sleep(0.05)
    assert statuses == [outbox.SENT]


async def test_separate_api_and_worker_roles_share_the_database(database: Database) -> None:
    """`--only api` and `--only worker` as two relays on one store; the worker still delivers.

    On PostgreSQL a NOTIFY wakes the other process at once; on SQLite the poll finds the row.
    With a ten-minute poll on PostgreSQL, only the NOTIFY can deliver within the timeout.
    """
    from api.server import running
    from relay.config import Settings

    poll = 600.0 if database.schema else 0.2
    async with live_relay(database.url, database.schema) as live:
        live.relay.worker.stop()  # this relay acts as the API-only process
        await asyncio.sleep(0.3)
        settings = Settings(
            database_url=database.url,
            database_schema=database.schema,
            outbound=live.sink.url,
            delivery_poll_interval=poll,
        )
        async with running(settings, ["worker"], migrate=False):
            await asyncio.sleep(0.3)  # let the listener subscribe
            acc = await live.accounts()
            await live.put_trip(acc)
            await live.open_ticket(acc)
            [mail] = await live.sink.handler.wait_for(FLEET_INBOX, timeout=10)
            assert b"Lost umbrella" in mail.raw


async def test_a_rounds_outcomes_are_recorded_after_one_read(live: LiveRelay) -> None:
    """One query loads the round's rows; marking them reads nothing more (was one
    SELECT per row on top of a load that kept nothing)."""
    from sqlalchemy import event

    from relay.delivery import Outcome

    acc = await live.accounts()
    await live.put_trip(acc)
    for _ in range(3):
        await live.open_ticket(acc)
    for _ in range(200):  # until the worker has recorded all three (it is still running)
        async with live.relay.sessions() as session:
            items = list((await session.exec(select(OutboxItem))).all())
        if [i.status for i in items] == [outbox.SENT] * 3:
            break
        await asyncio.sleep(0.05)
    assert [i.status for i in items] == [outbox.SENT] * 3
    selects: list[str] = []

    def count(_conn: object, _cur: object, statement: str, *_: object) -> None:
        # Reads of these rows by id; the running worker's own polling is not one of them.
        if statement.lstrip().startswith("SELECT") and "WHERE outbox.id" in statement:
            selects.append(statement)

    engine = live.relay.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        await live.relay.worker._record([Outcome(i, outbox.SENT, "delivery.sent") for i in items])
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(selects) == 1, "\n---\n".join(selects)


def test_delivery_settings_refuse_a_worker_that_could_never_claim() -> None:
    from pydantic import ValidationError

    from relay.config import Settings

    for name, value in [("delivery_concurrency", 0), ("delivery_pool_size", 0)]:
        try:
            Settings(**{name: value})
        except ValidationError as exc:
            assert name in str(exc)
        else:
            raise AssertionError(f"{name}={value} was accepted")


async def test_a_round_that_empties_the_queue_is_not_followed_by_an_empty_claim(
    database: Database,
) -> None:
    """After delivering what it claimed, a worker that took less than it may sleeps until the
    next wake-up: claiming again at once would take the write lock to find nothing."""
    from sqlalchemy import event

    async with live_relay(database.url, database.schema, delivery_poll_interval=600) as live:
        claims: list[str] = []

        def count(_conn: object, _cur: object, statement: str, *_: object) -> None:
            if "UPDATE outbox SET" in statement and "lease_owner" in statement:
                if "RETURNING" in statement:
                    claims.append(statement)

        acc = await live.accounts()
        await live.put_trip(acc)
        # Start-up wakes the worker too (its first round; on PostgreSQL, the listener's
        # subscription): let one ticket through before counting.
        first = await live.open_ticket(acc)
        await live.events(acc, first["id"], "delivery.sent")
        await asyncio.sleep(0.5)
        engine = live.relay.engine.sync_engine
        event.listen(engine, "before_cursor_execute", count)
        try:
            ticket = await live.open_ticket(acc)
            await live.events(acc, ticket["id"], "delivery.sent")
            await asyncio.sleep(0.5)  # time for a second claim, were one coming
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert len(claims) == 1


if PG_URL:  # a database restart: PostgreSQL only, collected in its run

    async def test_a_round_records_its_250s_after_the_database_dropped_its_connections(
        live: LiveRelay,
    ) -> None:
        """The pool pings only connections that sat idle (storage.db._ping_when_idle). When
        the database drops every connection while a round is sending, recording the round
        must not fail on a dead one: the rows would stay leased and be sent again."""
        from aiosmtpd.smtp import SMTP, Envelope, Session

        from relay.sink import SinkHandler

        class Gated(SinkHandler):
            """Holds every DATA until `gate` opens."""

            def __init__(self) -> None:
                super().__init__()
                self.gate = asyncio.Event()
                self.waiting = asyncio.Event()

            async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
                self.waiting.set()
                await self.gate.wait()
                return await super().handle_DATA(server, session, envelope)

        acc = await live.accounts()
        await live.put_trip(acc)
        gated = Gated()
        live.sink.handler = gated  # before the worker's first connection to the sink
        ticket = await live.open_ticket(acc)
        await asyncio.wait_for(gated.waiting.wait(), timeout=15)
        # What a restart does to the relay's connections, the sink still holding the 250.
        await pg_execute(
            PG_URL,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        await asyncio.sleep(0.5)  # the server processes exit and close their sockets
        gated.gate.set()
        [sent] = await live.events(acc, ticket["id"], "delivery.sent")
        assert sent["detail"]["to"] == "fleet"
        assert len(gated.for_rcpt(FLEET_INBOX)) == 1

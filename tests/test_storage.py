"""The database as configured: durable SQLite pragmas, Alembic migrations, PostgreSQL too."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError, OperationalError, PendingRollbackError
from sqlmodel import col, select

from bench.common import pg_execute
from storage.db import make_engine, make_read_sessions, make_sessions, transaction
from storage.migrate import upgrade
from storage.models import Fleet
from storage.sqlite_driver import BUSY_TIMEOUT_MS, INLINE_MAX_VALUE, OFF_LOOP
from tests.conftest import PG_URL, Database, count_driver_trips


async def test_sqlite_runs_in_wal_with_full_sync(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'sub' / 'relay.db'}")
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA synchronous"))).scalar() == 2  # FULL
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
    finally:
        await engine.dispose()
    assert (tmp_path / "sub" / "relay.db").exists()


async def test_migrations_create_every_table_and_are_idempotent(database: Database) -> None:
    engine = make_engine(database.url, database.schema)
    try:
        await upgrade(engine)
        await upgrade(engine)  # a second start must be a no-op
        async with engine.connect() as conn:
            tables = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    finally:
        await engine.dispose()
    expected = {"partner", "fleet", "api_key", "trip", "ticket", "alias", "message", "blob"}
    assert expected | {"attachment", "outbox", "ticket_event"} <= tables
    from alembic.script import ScriptDirectory

    from storage.migrate import alembic_config

    assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()


async def test_models_and_migrations_agree(database: Database) -> None:
    """A model change without a migration fails here, before it fails in production."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    import storage.models  # noqa: F401

    engine = make_engine(database.url, database.schema)
    try:
        await upgrade(engine)
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), SQLModel.metadata)
            )
    finally:
        await engine.dispose()
    assert diff == []


async def test_readers_never_wait_for_a_writer_and_see_only_commits(database: Database) -> None:
    """A read session answers while another session holds an open write transaction (on
    SQLite, where writers take the one write lock at BEGIN), and it sees the last commit,
    not the writer's uncommitted row."""
    engine = make_engine(database.url, database.schema)
    try:
        await upgrade(engine)
        writes, reads = make_sessions(engine), make_read_sessions(engine)
        async with transaction(writes) as session:
            session.add(Fleet(name="Committed", support_email="a@fleet.example"))
        async with transaction(writes) as writer:
            writer.add(Fleet(name="Pending", support_email="b@fleet.example"))
            await writer.flush()  # the write lock is held until this block ends

            async def read_names() -> list[str]:
                async with reads() as reader:
                    return list((await reader.exec(select(Fleet.name))).all())

            assert await asyncio.wait_for(read_names(), timeout=10) == ["Committed"]
    finally:
        await engine.dispose()


async def test_sqlite_writers_get_the_write_lock_in_the_order_they_asked(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'turns.db'}")
    sessions = make_sessions(engine)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE turn (writer INTEGER)"))
        holding, release = asyncio.Event(), asyncio.Event()

        async def write(writer: int) -> None:
            async with transaction(sessions) as session:
                await (await session.connection()).execute(
                    text("INSERT INTO turn VALUES (:writer)"), {"writer": writer}
                )
                if writer == 0:
                    holding.set()
                    await release.wait()

        first = asyncio.create_task(write(0))
        await holding.wait()
        waiting = []
        for writer in range(1, 9):  # each asks while writer 0 holds the lock, one after another
            waiting.append(asyncio.create_task(write(writer)))
            await asyncio.sleep(0.05)
        release.set()
        await asyncio.gather(first, *waiting)
        async with engine.connect() as conn:
            order = [
                row[0] for row in await conn.execute(text("SELECT writer FROM turn ORDER BY rowid"))
            ]
        assert order == list(range(9))
    finally:
        await engine.dispose()


async def test_sqlite_trips_to_the_driver_thread_are_only_what_may_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counted where aiosqlite hands work to its thread (storage.sqlite_driver): BEGIN
    (another process may hold the lock), COMMIT (fsync), a real rollback, and statements
    outside a write transaction; the statements of a write transaction run in the loop's
    thread, and a rollback with nothing to undo costs nothing."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'trips.db'}")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE note (body TEXT)"))
        trips = count_driver_trips(monkeypatch)
        async with transaction(make_sessions(engine)) as session:
            await (await session.connection()).execute(text("INSERT INTO note VALUES ('a'), ('b')"))
            rows = (
                await (await session.connection()).execute(
                    text("SELECT body FROM note ORDER BY body")
                )
            ).all()
        assert [r[0] for r in rows] == ["a", "b"]
        assert trips == ["commit"]
        trips.clear()
        # What may take long goes to the thread even inside a write transaction: a large
        # value, or a statement marked OFF_LOOP (a delivery round's claim).
        async with transaction(make_sessions(engine)) as session:
            connection = await session.connection()
            large = "x" * (INLINE_MAX_VALUE + 1)
            await connection.execute(text("INSERT INTO note VALUES (:body)"), {"body": large})
            await connection.execute(text("INSERT INTO note VALUES ('small')"))
            marked = text("DELETE FROM note WHERE length(body) > 10")
            await connection.execute(marked.execution_options(**{OFF_LOOP: True}))
        assert trips == ["INSERT", "DELETE", "commit"]
        trips.clear()
        async with make_read_sessions(engine)() as session:
            assert (
                await (await session.connection()).execute(text("SELECT count(*) FROM note"))
            ).scalar() == 3  # a, b and small
        assert trips == ["SELECT"]  # a reader begins no transaction: nothing to end
        trips.clear()
        with pytest.raises(RuntimeError):
            async with transaction(make_sessions(engine)) as session:
                await (await session.connection()).execute(text("INSERT INTO note VALUES ('c')"))
                raise RuntimeError("abandon")
        assert trips == ["rollback"]
        trips.clear()
        # A statement that did not report back may have left a transaction open: the
        # rollback then takes its trip, whatever the driver's flag said before.
        with pytest.raises(OperationalError):
            async with make_read_sessions(engine)() as session:
                await (await session.connection()).execute(text("SELECT nothing FROM nowhere"))
        assert trips == ["SELECT", "rollback"]
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM note"))).scalar() == 3
    finally:
        await engine.dispose()


async def test_an_in_memory_sqlite_database_needs_no_pool_sizes() -> None:
    engine = make_engine("sqlite+aiosqlite:///:memory:")
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()


async def test_sqlite_a_failed_statement_of_a_write_transaction_undoes_it_all(
    tmp_path: Path,
) -> None:
    """A statement run in the loop's thread fails as any other: SQLAlchemy's error, the
    transaction rolled back, the connection fit for the next one."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'fail.db'}")
    sessions = make_sessions(engine)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE note (body TEXT UNIQUE)"))
            await conn.execute(text("INSERT INTO note VALUES ('a')"))
        with pytest.raises(IntegrityError):
            async with transaction(sessions) as session:
                connection = await session.connection()
                await connection.execute(text("INSERT INTO note VALUES ('b')"))
                await connection.execute(text("INSERT INTO note VALUES ('a')"))
        async with transaction(sessions) as session:
            await (await session.connection()).execute(text("INSERT INTO note VALUES ('c')"))
        async with engine.connect() as conn:
            bodies = (await conn.execute(text("SELECT body FROM note ORDER BY body"))).all()
        assert [b[0] for b in bodies] == ["a", "c"]
    finally:
        await engine.dispose()


async def test_sqlite_the_loop_runs_on_while_another_process_holds_the_write_lock(
    tmp_path: Path,
) -> None:
    """BEGIN IMMEDIATE waits for the lock in the driver's thread, never in the loop's."""
    path = tmp_path / "locked.db"
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE note (body TEXT)"))
        other.execute("BEGIN IMMEDIATE")  # what another relay process or the CLI may hold

        async def write() -> None:
            async with transaction(make_sessions(engine)) as session:
                await (await session.connection()).execute(text("INSERT INTO note VALUES ('a')"))

        writer = asyncio.create_task(write())
        await asyncio.sleep(0.2)  # would not return until BEGIN gave up, were it in the loop
        assert not writer.done()
        other.execute("COMMIT")
        await asyncio.wait_for(writer, timeout=10)
        assert other.execute("SELECT count(*) FROM note").fetchone() == (1,)
        # BEGIN was first tried in the loop without waiting; the patience is as configured.
        async with engine.connect() as conn:
            patience = (await conn.execute(text("PRAGMA busy_timeout"))).scalar()
            assert patience == BUSY_TIMEOUT_MS == 30000
    finally:
        other.close()
        await engine.dispose()


async def test_rows_written_at_once_get_their_ids_and_read_back_as_written(
    database: Database,
) -> None:
    """storage.rows writes by Core INSERT, outside the unit of work: ids come back, defaults
    are filled in, JSON, times and bytes are stored as the ORM would have stored them."""
    from storage.models import Blob
    from storage.rows import insert_row, insert_rows

    engine = make_engine(database.url, database.schema)
    try:
        await upgrade(engine)
        sessions = make_sessions(engine)
        async with transaction(sessions) as session:
            first = await insert_row(
                session,
                Fleet,
                name="Cab Co",
                support_email="desk@cab.example",
                allowed_senders=["a@b.c"],
            )
            second = await insert_row(session, Fleet, name="Taxi", support_email="t@taxi.example")
            more = [{"name": f"Fleet {n}", "support_email": f"f{n}@f.example"} for n in (1, 2)]
            await insert_rows(session, Fleet, more)
            blob = await insert_row(session, Blob, data=b"\x00\xffbytes")
            with pytest.raises(TypeError, match="needs support_email"):
                await insert_row(session, Fleet, name="X")
            with pytest.raises(TypeError, match="no column colour"):
                await insert_row(session, Fleet, name="X", support_email="x@x.example", colour=1)
        assert first.id is not None and second.id == first.id + 1
        with pytest.raises(AttributeError):  # read-only: a change would be written nowhere
            first.name = "Renamed"
        async with make_read_sessions(engine)() as session:
            stored = await session.get(Fleet, first.id)
            fleets = (await session.exec(select(Fleet).order_by(col(Fleet.id)))).all()
            stored_blob = await session.get(Blob, blob.id)
    finally:
        await engine.dispose()
    assert stored is not None and stored.allowed_senders == ["a@b.c"]
    assert stored.created_at == first.created_at and stored.created_at.tzinfo is not None
    assert [f.name for f in fleets] == ["Cab Co", "Taxi", "Fleet 1", "Fleet 2"]
    assert all(f.allowed_senders == [] for f in fleets[1:])  # the model's default
    assert stored_blob is not None and stored_blob.data == b"\x00\xffbytes"


async def _ticket_with_parties(session: Any) -> tuple[Any, Any, Any, Any]:
    """A partner, a fleet with an allow-list, a trip and a ticket with both aliases:
    (ticket, trip, partner, fleet), as the ORM wrote them."""
    from datetime import UTC, datetime

    from storage.models import Partner, Ticket, Trip
    from storage.tickets import add_aliases

    partner = Partner(name="Acme", contact_email="desk@acme.example")
    fleet = Fleet(name="Cab Co", support_email="desk@cab.example", allowed_senders=["@cab.example"])
    session.add_all([partner, fleet])
    await session.flush()
    assert partner.id is not None and fleet.id is not None
    trip = Trip(
        partner_id=partner.id,
        partner_trip_id="T-1",
        fleet_id=fleet.id,
        pickup="Station",
        dropoff="Airport",
        scheduled_at=datetime(2026, 11, 20, 8, 30, tzinfo=UTC),
    )
    session.add(trip)
    await session.flush()
    ticket = Ticket(
        partner_id=partner.id,
        trip_id=trip.id,
        fleet_id=fleet.id,
        subject="Umbrella",
        contact_email="ops@acme.example",
    )
    session.add(ticket)
    await session.flush()
    assert ticket.id is not None
    await add_aliases(session, ticket.id)
    return ticket, trip, partner, fleet


async def _fleet_alias(session: Any) -> Any:
    from storage.models import Alias

    return (await session.exec(select(Alias).where(Alias.side == "fleet"))).one()


async def test_ticket_changes_are_written_by_one_update_and_seen_at_once(
    database: Database,
) -> None:
    """storage.tickets.PendingTicketUpdate: the read-only ticket shows each change as it is
    set, the session holds nothing to flush, and one UPDATE at the end writes them all; an
    ORM-loaded ticket is refused (it changes through its session)."""
    from sqlalchemy import event

    from storage.models import Ticket
    from storage.parties import addressed_ticket
    from storage.tickets import PendingTicketUpdate

    engine = make_engine(database.url, database.schema)
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        statements.append(statement.split()[0].upper())

    try:
        await upgrade(engine)
        sessions = make_sessions(engine)
        async with transaction(sessions) as session:
            ticket, *_ = await _ticket_with_parties(session)
            with pytest.raises(TypeError, match="ORM-loaded"):
                PendingTicketUpdate(ticket)
            local_part = (await _fleet_alias(session)).local_part
        ticket_id = ticket.id
        event.listen(engine.sync_engine, "before_cursor_execute", seen)
        async with transaction(sessions) as session:
            found = await addressed_ticket(session, local_part)
            assert found is not None
            loaded = found.ticket
            changes = PendingTicketUpdate(loaded)
            changes.set(status="closed", attention="held")
            changes.set(agent_name="Maria")
            assert (loaded.status, loaded.attention, loaded.agent_name) == (
                "closed",
                "held",
                "Maria",
            )
            with pytest.raises(TypeError, match="colour"):
                changes.set(colour="red")
            with pytest.raises(TypeError, match="id"):
                changes.set(id=99)
            assert not session.dirty  # nothing for the unit of work to flush
            await changes.write(session)
            await changes.write(session)  # nothing left: no second UPDATE
        event.remove(engine.sync_engine, "before_cursor_execute", seen)
        async with make_read_sessions(engine)() as session:
            stored = await session.get(Ticket, ticket_id)
    finally:
        await engine.dispose()
    assert statements.count("UPDATE") == 1
    assert stored is not None
    assert (stored.status, stored.attention, stored.agent_name) == ("closed", "held", "Maria")


async def test_ticket_and_parties_read_by_core_equal_the_orm_entities(database: Database) -> None:
    """storage.parties builds read-only instances from one Core query: every field equals
    what the ORM loads, types included (times, JSON lists); setting a field directly
    raises; and ticket_parties sees ORM changes the session has not flushed yet."""
    from storage.models import Alias, Partner, Ticket, Trip
    from storage.parties import addressed_ticket, ticket_parties

    engine = make_engine(database.url, database.schema)
    try:
        await upgrade(engine)
        sessions = make_sessions(engine)
        async with transaction(sessions) as session:
            ticket, trip, partner, fleet = await _ticket_with_parties(session)
        async with transaction(sessions) as session:
            aliases = (await session.exec(select(Alias).order_by(col(Alias.side)))).all()
            fleet_alias = next(a for a in aliases if a.side == "fleet")
            found = await addressed_ticket(session, fleet_alias.local_part.upper())
            assert await addressed_ticket(session, "ticket-0-nobody") is None
            orm = [
                await session.get(m, i)
                for m, i in [
                    (Ticket, ticket.id),
                    (Trip, trip.id),
                    (Partner, partner.id),
                    (Fleet, fleet.id),
                ]
            ]
            assert found is not None
            built = [found.ticket, found.parties.trip, found.parties.partner, found.parties.fleet]
            for mine, theirs in zip(built, orm, strict=True):
                assert theirs is not None and mine is not theirs
                assert mine.model_dump() == theirs.model_dump()
            assert found.parties.trip.scheduled_at.tzinfo is not None
            assert found.parties.fleet.allowed_senders == ["@cab.example"]
            assert found.alias.model_dump() == fleet_alias.model_dump()
            assert {s: a.model_dump() for s, a in found.parties.aliases.items()} == {
                a.side: a.model_dump() for a in aliases
            }
            with pytest.raises(AttributeError):
                found.ticket.status = "closed"
            trip_orm = orm[1]
            assert isinstance(trip_orm, Trip)
            trip_orm.pickup = "Harbour"  # pending in the unit of work, not flushed
            parties = await ticket_parties(session, found.ticket)
            assert parties.trip.pickup == "Harbour"
    finally:
        await engine.dispose()


async def test_connection_of_is_asked_once_per_transaction(database: Database) -> None:
    """storage.db.connection_of keeps a session's connection for its transaction only: the
    same one for every statement of a transaction, and the session's new one after a
    commit or a rollback (a kept connection would then run outside any transaction)."""
    from storage.db import connection_of

    engine = make_engine(database.url, database.schema)
    try:
        await upgrade(engine)
        async with make_sessions(engine)() as session:
            first = await connection_of(session)
            assert await connection_of(session) is first is await session.connection()
            await session.commit()
            second = await connection_of(session)
            assert second is await session.connection() and second.sync_connection is not None
            await second.execute(text("SELECT 1"))
            await session.rollback()
            third = await connection_of(session)
            assert third is await session.connection()
            assert third.in_transaction()
            session.add(Fleet(name="No address"))  # support_email is NOT NULL
            with pytest.raises(IntegrityError):
                await session.flush()
            # The failed flush ended the transaction: its kept connection is not handed out.
            with pytest.raises(PendingRollbackError):
                await connection_of(session)
    finally:
        await engine.dispose()


async def test_partner_for_key_gives_the_keys_partner_read_only(database: Database) -> None:
    """The API-key lookup builds the partner from one Core row: the same values as the ORM
    entity (JSON list and time included), read-only; a revoked or wrong key finds none."""
    from storage.accounts import create_partner, issue_key, partner_for_key, revoke_key
    from storage.models import Partner

    engine = make_engine(database.url, database.schema)
    try:
        await upgrade(engine)
        async with transaction(make_sessions(engine)) as session:
            partner = await create_partner(
                session, "Acme", "desk@acme.example", allowed_senders=["@acme.example"]
            )
            assert partner.id is not None
            key = await issue_key(session, partner.id)
        found = await partner_for_key(engine, key.secret)
        wrong = await partner_for_key(engine, key.secret[:-2] + "xx")
        async with make_read_sessions(engine)() as session:
            stored = await session.get(Partner, partner.id)
        assert found is not None and stored is not None and wrong is None
        assert found.model_dump() == stored.model_dump()
        assert found.allowed_senders == ["@acme.example"] and found.created_at.tzinfo
        with pytest.raises(AttributeError):
            found.name = "Renamed"
        async with transaction(make_sessions(engine)) as session:
            assert await revoke_key(session, key.id)
        assert await partner_for_key(engine, key.secret) is None
    finally:
        await engine.dispose()


async def test_trip_lookup_is_read_only_and_sees_the_transactions_own_change(
    database: Database,
) -> None:
    """trip_by_partner_id reads by Core into a read-only instance, after flushing what the
    session has pending (an ORM query would have); upsert_trip still changes the trip."""
    from datetime import UTC, datetime

    from storage.accounts import create_fleet, create_partner
    from storage.trips import trip_by_partner_id, upsert_trip

    engine = make_engine(database.url, database.schema)
    when = datetime(2026, 11, 20, 8, 30, tzinfo=UTC)
    trip_fields: dict[str, Any] = {
        "pickup": "Station",
        "dropoff": "Airport",
        "scheduled_at": when,
        "passenger_name": None,
        "vehicle": None,
        "driver_name": None,
    }
    try:
        await upgrade(engine)
        async with transaction(make_sessions(engine)) as session:
            partner = await create_partner(session, "Acme", "desk@acme.example", [])
            fleet = await create_fleet(session, "Cab Co", "desk@cab.example", [])
            assert partner.id is not None and fleet.id is not None
            await upsert_trip(session, partner.id, "BK-1", fleet_id=fleet.id, **trip_fields)
            trip_fields["pickup"] = "Harbour"
            changed, created = await upsert_trip(
                session, partner.id, "BK-1", fleet_id=fleet.id, **trip_fields
            )
            assert not created
            changed.vehicle = "Blue van"  # pending, not flushed
            found = await trip_by_partner_id(session, partner.id, "BK-1")
            assert await trip_by_partner_id(session, partner.id, "BK-2") is None
            assert found is not None and found is not changed
            assert (found.pickup, found.vehicle, found.scheduled_at) == (
                "Harbour",
                "Blue van",
                when,
            )
            with pytest.raises(AttributeError):
                found.pickup = "Elsewhere"
    finally:
        await engine.dispose()


if PG_URL:  # PostgreSQL's pool only: collected in the PostgreSQL run, absent otherwise

    async def test_postgresql_pings_only_connections_that_sat_idle(
        database: Database, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """storage.db._ping_when_idle: a connection in steady use is not pinged (asyncpg's
        ping is three round trips); one the server closed is replaced without a ping or an
        error; one idle past the threshold is pinged."""
        from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection

        pings: list[int] = []
        ping = AsyncAdapt_asyncpg_connection.ping

        def counted(self: AsyncAdapt_asyncpg_connection) -> None:
            pings.append(1)
            ping(self)

        monkeypatch.setattr(AsyncAdapt_asyncpg_connection, "ping", counted)
        engine = make_engine(database.url, database.schema, ping_after_idle=1.0)
        backend = text("SELECT pg_backend_pid()")
        try:
            for _ in range(5):
                async with engine.connect() as conn:
                    first = (await conn.execute(backend)).scalar()
            assert pings == []  # five checkouts in quick succession: no ping
            await pg_execute(PG_URL, f"SELECT pg_terminate_backend({first})")
            await asyncio.sleep(0.3)  # the server process exits and closes the socket
            async with engine.connect() as conn:
                second = (await conn.execute(backend)).scalar()
            assert second != first and pings == []  # known closed: replaced, no round trip
            await asyncio.sleep(1.1)
            async with engine.connect() as conn:
                third = (await conn.execute(backend)).scalar()
            assert third == second and len(pings) == 1  # idle past the threshold: pinged
        finally:
            await engine.dispose()


async def test_the_relay_keeps_as_many_connections_as_configured(database: Database) -> None:
    """RELAY_DATABASE_POOL_SIZE / _MAX_OVERFLOW reach the relay's engine; 0 kept is refused.
    Too few kept made PostgreSQL fork a server process for most SMTP transactions."""
    from pydantic import ValidationError

    from relay.config import Settings
    from tests.harness import live_relay

    async with live_relay(
        database.url, database.schema, database_pool_size=7, database_max_overflow=3
    ) as live:
        pool = live.relay.engine.sync_engine.pool
        assert (pool.size(), pool._max_overflow) == (7, 3)  # type: ignore[attr-defined]
    with pytest.raises(ValidationError, match="database_pool_size"):
        Settings(database_pool_size=0)
    with pytest.raises(ValidationError, match="database_max_overflow"):
        Settings(database_max_overflow=-1)
    with pytest.raises(ValidationError, match="database_ping_after_idle"):
        Settings(database_ping_after_idle=0)
    assert (Settings().database_pool_size, Settings().database_max_overflow) == (20, 10)


def test_new_rows_get_each_model_default_as_pydantic_would_give_it() -> None:
    """storage.rows fills defaults without pydantic's per-call signature inspection: plain
    defaults must equal the model's, and factories must make a fresh value for every row
    (two rows sharing one list would see each other's changes)."""
    from sqlmodel import SQLModel

    import storage.models as models
    from storage.rows import _inserts

    tables = [
        m
        for m in vars(models).values()
        if isinstance(m, type) and issubclass(m, SQLModel) and hasattr(m, "__table__")
    ]
    assert len(tables) >= 10
    for model in tables:
        for name, make in _inserts(model).defaults:
            field = model.model_fields[name]
            first, second = make(), make()
            if field.default_factory is None:
                assert first == field.get_default(call_default_factory=True), (model, name)
            else:
                assert type(first) is type(field.get_default(call_default_factory=True))
                if isinstance(first, list | dict):
                    assert first is not second, (model, name)

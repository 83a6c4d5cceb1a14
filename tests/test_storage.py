"""The database as configured: durable SQLite pragmas, Alembic migrations, PostgreSQL too."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text

from storage.db import make_engine
from storage.migrate import upgrade
from tests.conftest import Database


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

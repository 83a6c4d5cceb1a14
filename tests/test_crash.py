"""The crash test, reduced: SIGKILL the relay and the smarthost under load; nothing is lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.crash import CrashConfig, run_crash
from tests.conftest import Database

# Fixed, so a failure can be replayed with `bench/crash.py --seed 20260521 --messages 100 …`.
SEED = 20260521


@pytest.mark.slow
async def test_nothing_accepted_is_lost_when_relay_and_smarthost_are_killed(
    database: Database, tmp_path: Path
) -> None:
    lines: list[str] = []
    report = await run_crash(
        CrashConfig(
            seed=SEED,
            workdir=tmp_path / "crash",
            messages=100,
            connections=5,
            kills=3,
            smarthost_kills=1,
            tickets=5,
            database_url=database.url,
            database_schema=database.schema,
            drain_timeout=60.0,
        ),
        log=lines.append,
    )
    transcript = "\n".join([*lines, *report.summary()])
    relay_phase, smarthost_phase = report.phases

    assert (relay_phase.kills, smarthost_phase.kills) == (3, 1), transcript
    assert report.unexpected_exits == 0, transcript
    # Every reply was accepted in the end (the client resends until 250) and every
    # accepted reply reached the partner: stored once, forwarded under one Message-ID.
    assert report.refused == 0, transcript
    assert report.accepted == report.messages == 200, transcript
    assert report.lost == 0, transcript
    assert report.undrained == report.failed_rows == 0, transcript
    for phase in report.phases:
        assert phase.stored == phase.messages and phase.stored_twice == 0, transcript
        assert phase.forwarded_twice == 0 and phase.delivered_unaccepted == 0, transcript
        # Re-sending one forward is the documented at-least-once window: at most the rows
        # in flight when a process died (batch size per relay kill, pool size per smarthost kill).
        assert phase.redelivered <= phase.duplicate_bound, transcript

"""The supervisor of `serve --processes N`, without real relays: restarts and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from api import supervisor
from api.supervisor import Child, ChildFailed


def test_restart_delays_double_up_to_thirty_seconds() -> None:
    assert list(itertools.islice(supervisor.restart_delays(), 7)) == [1, 2, 4, 8, 16, 30, 30]


class _Proc:
    """Stands in for a child's process: `wait` returns its exit code once `exited` is set."""

    def __init__(self, code: int, *, exited: bool = True) -> None:
        self.pid = 4242
        self.code = code
        self.exited = asyncio.Event()
        if exited:
            self.exited.set()

    @property
    def returncode(self) -> int | None:
        return self.code if self.exited.is_set() else None

    async def wait(self) -> int:
        await self.exited.wait()
        return self.code


class _ScriptedChild(Child):
    """Each start() does the next scripted thing: raise it, or become that process."""

    def __init__(self, script: list[BaseException | _Proc]) -> None:
        super().__init__(1, ["unused"])
        self.script = script
        self.proc: Any = _Proc(1)  # ready once, now dead
        self.stops = 0
        self.done = asyncio.Event()

    async def start(self) -> None:
        step = self.script.pop(0)
        if not self.script:
            self.done.set()
        if isinstance(step, BaseException):
            raise step
        self.proc = step

    async def pass_output(self) -> None:
        return None

    async def stop(self) -> None:
        self.stops += 1


async def test_a_dead_child_is_retried_with_growing_delays_whatever_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    last = _Proc(0, exited=False)
    child = _ScriptedChild(
        [
            OSError(24, "Too many open files"),  # not a ChildFailed: the slot is retried anyway
            ChildFailed("relay process 1 exited with 1 before it was ready"),
            _Proc(1),  # ready, then dies again: the delays start over
            OSError(24, "Too many open files"),
            last,  # ready and serving
        ]
    )
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)
        await asyncio.sleep(0)

    stop = asyncio.Event()
    caplog.set_level(logging.ERROR, logger="api.supervisor")
    watcher = asyncio.create_task(supervisor._keep_running(child, stop, sleep))
    await asyncio.wait_for(child.done.wait(), 5)
    await asyncio.sleep(0)
    assert not watcher.done()
    stop.set()
    last.exited.set()
    await asyncio.wait_for(watcher, 5)

    assert slept == [1, 2, 4, 1, 2]
    assert child.stops == 3  # after each failed attempt, in case it failed half-way
    failures = [r.getMessage() for r in caplog.records if "did not start again" in r.getMessage()]
    assert failures == [
        "relay process 1 did not start again (OSError(24, 'Too many open files')); "
        "next attempt in 2 s",
        "relay process 1 did not start again (relay process 1 exited with 1 before it was "
        "ready); next attempt in 4 s",
        "relay process 1 did not start again (OSError(24, 'Too many open files')); "
        "next attempt in 2 s",
    ]


# A child that starts but never says it is ready: it notes its pid, then sleeps.
NEVER_READY = (
    "import os, sys, time; open(f'{sys.argv[1]}/{os.getpid()}', 'w').close(); time.sleep(60)"
)


async def test_a_stop_during_start_up_stops_the_children_at_once(tmp_path: Path) -> None:
    stop = asyncio.Event()
    ready: list[bool] = []
    argv = [sys.executable, "-c", NEVER_READY, str(tmp_path)]
    run = asyncio.create_task(supervisor.supervise(2, argv, stop, lambda: ready.append(True)))
    try:
        deadline = time.monotonic() + 10
        while len(list(tmp_path.iterdir())) < 2:
            assert time.monotonic() < deadline and not run.done()
            await asyncio.sleep(0.02)
        stop.set()  # as SIGTERM does
        assert await asyncio.wait_for(run, 10) == 0
        assert ready == []
        for pid in (int(p.name) for p in tmp_path.iterdir()):
            assert not Path(f"/proc/{pid}").exists(), f"relay process {pid} left running"
    except BaseException:
        for pid in (int(p.name) for p in tmp_path.iterdir()):  # leave no sleeper behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        raise

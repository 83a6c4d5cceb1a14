"""`serve` with RELAY_PROCESSES > 1: one relay process per core, sharing the ports.

One Python process runs one event loop on one core; the relay is CPU-bound, so a second
core sat idle. The supervisor (this parent) migrates and prepares the database once, then
starts N copies of `support-relay serve --child`. Each binds the HTTP and SMTP ports with
SO_REUSEPORT, so the kernel spreads connections across them, and runs every role it was
given: outbox claims already never hand one row to two workers, and the bounce secret is
read from the database by all of them.

At start-up, a child that dies before it is ready (a port taken, a bad setting) stops the
whole relay: starting it again would fail the same way. Later, a child that dies is
started again until it is ready, after 1 s, then 2, 4 … at most 30 s between attempts,
while the others keep serving; once it is ready the next death starts again at 1 s.
SIGTERM/SIGINT stop every child and then the parent, during start-up too. A child whose
parent disappears (its stdin closes) stops itself, so a killed supervisor leaves no relay
behind.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

log = logging.getLogger(__name__)

READY = "support-relay serving"
RESTART_DELAY = 1.0  # before the first attempt to start a dead child again
RESTART_DELAY_MAX = 30.0  # doubling after each failed attempt up to this


class ChildFailed(RuntimeError):
    """A child stopped before it was ready."""


class Child:
    """One relay process: started, watched for its banner, restarted when it dies."""

    def __init__(self, number: int, argv: Sequence[str]) -> None:
        self.number = number
        self.argv = list(argv)
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            if line.decode(errors="replace").startswith(READY):
                log.info("relay process %d (pid %d) ready", self.number, self.proc.pid)
                return
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
        code = await self.proc.wait()
        raise ChildFailed(f"relay process {self.number} exited with {code} before it was ready")

    async def pass_output(self) -> None:
        """Copy the child's later stdout to ours (it writes little: its logs go to stderr)."""
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            sys.stdout.buffer.write(line)
            sys.stdout.flush()

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout=30)
        except TimeoutError:
            log.warning("relay process %d did not stop in 30 s; killing it", self.number)
            self.proc.kill()
            await self.proc.wait()


def child_argv(roles: Sequence[str]) -> list[str]:
    argv = [sys.executable, "-m", "api.cli", "serve", "--child", "--no-migrate"]
    for role in roles:
        argv += ["--only", role]
    return argv


async def supervise(
    processes: int, argv: Sequence[str], stop: asyncio.Event, ready: Callable[[], None]
) -> int:
    """Run `processes` children until `stop` is set; `ready` is called once all serve."""
    children = [Child(n, argv) for n in range(1, processes + 1)]
    starting = asyncio.gather(*(child.start() for child in children))
    stopping = asyncio.ensure_future(stop.wait())
    racers: list[asyncio.Future[Any]] = [starting, stopping]
    await asyncio.wait(racers, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not starting.done():  # SIGTERM/SIGINT before every child was ready
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await asyncio.gather(*(child.stop() for child in children))
        return 0
    try:
        starting.result()
    except ChildFailed as exc:
        log.error("%s", exc)
        await asyncio.gather(*(child.stop() for child in children))
        return 1
    ready()
    watchers = [asyncio.create_task(_keep_running(child, stop)) for child in children]
    await stop.wait()
    for watcher in watchers:
        watcher.cancel()
    await asyncio.gather(*watchers, return_exceptions=True)
    await asyncio.gather(*(child.stop() for child in children))
    return 0


def restart_delays() -> Iterator[float]:
    """Seconds to wait before each attempt to start a dead child again: 1, 2, 4 … 30, 30."""
    delay = RESTART_DELAY
    while True:
        yield delay
        delay = min(delay * 2, RESTART_DELAY_MAX)


async def _keep_running(
    child: Child,
    stop: asyncio.Event,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> None:
    """Pass on the child's output; when it dies, start it again until it is ready."""
    while not stop.is_set():
        assert child.proc is not None
        await child.pass_output()
        code = await child.proc.wait()
        if stop.is_set():
            return
        log.error("relay process %d exited with %d; starting it again", child.number, code)
        delays = restart_delays()  # a new sequence for each death: being ready resets it
        delay = next(delays)
        while True:
            await sleep(delay)
            try:
                await child.start()
                break
            except Exception as exc:  # whatever it is, the slot must not stay empty
                delay = next(delays)
                problem = str(exc) if isinstance(exc, ChildFailed) else repr(exc)
                log.error(
                    "relay process %d did not start again (%s); next attempt in %g s",
                    child.number,
                    problem,
                    delay,
                )
                await child.stop()  # one that failed half-way must not keep running


async def exit_when_parent_goes(stop: asyncio.Event) -> None:
    """In a child: set `stop` when stdin (a pipe from the supervisor) reaches end of file."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.read()
    log.info("supervisor gone; stopping")
    stop.set()

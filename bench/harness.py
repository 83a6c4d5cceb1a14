"""Plumbing shared by the load benchmarks: processes, scratch databases, tickets, tables.

The relay under test, its smarthost and the ceilings all run as separate processes so that
each gets its own interpreter (and, on a two-core machine, a share of the second core);
bench/servers.py holds the child servers (the timestamping sink and the discard ceiling).
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx

from bench.common import created, pg_execute
from bench.crash import Child, relay_command
from bench.servers import SERVER_READY
from relay.sink import free_port
from storage.db import asyncpg_dsn

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SERVERS = Path(__file__).resolve().with_name("servers.py")
PARTNER_EMAIL = "helpdesk@partner.example"
FLEET_EMAIL = "dispatch@fleet.example"
RELAY_READY = "support-relay serving"
T = TypeVar("T")
DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


# --- numbers and tables ------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table whose columns line up in a terminal too."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"]
    lines.append("| " + " | ".join("-" * w for w in widths) + " |")
    lines += [
        "| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    return "\n".join(lines)


def ratio(mine: float, theirs: float) -> str:
    return f"{mine / theirs:.2f}x" if theirs > 0 and not math.isnan(mine) else "n/a"


def require_tool(name: str, install: str) -> str:
    """The tool's path, or exit with how to install it."""
    found = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )
    if found is None:
        sys.exit(f"{name} not found; install it with: {install}")
    return found


def vm_kib(pid: int, field: str) -> int:
    """A `/proc/<pid>/status` figure such as VmHWM or VmRSS, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def run_main(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, with SIGTERM (from `timeout`, say) cancelling `main` as Ctrl-C does, so
    the child processes, the Postfix instance and scratch databases are still cleaned up."""

    async def guarded() -> T:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await main

    return asyncio.run(guarded())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process, all its threads and its live children
    (a relay with RELAY_PROCESSES > 1 is a supervisor and its relay processes)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:  # it exited meanwhile
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(int(child)) for child in children)


def server_argv(kind: str, port: int, *extra: str) -> list[str]:
    return [sys.executable, str(SERVERS), kind, "--port", str(port), *extra]


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}


# --- reading the sink's log ----------------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    at_ns: int
    rcpt: str
    token: int | None
    alias: str | None


class ArrivalLog:
    """The sink's log, read incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.arrivals: list[Arrival] = []
        self._offset = 0
        self._partial = b""

    def poll(self) -> int:
        """Read what was appended since the last call; the number of arrivals so far."""
        if not self.path.exists():
            return 0
        with open(self.path, "rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            at, rcpt, token, alias = line.decode().split(" ")
            self.arrivals.append(
                Arrival(
                    int(at),
                    rcpt,
                    None if token == "-" else int(token),
                    None if alias == "-" else alias,
                )
            )
        return len(self.arrivals)

    async def wait_for(self, count: int, timeout: float) -> int:
        """Wait until `count` arrivals in all (or the timeout); how many there are."""
        deadline = time.monotonic() + timeout
        while self.poll() < count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return len(self.arrivals)

    async def settle(self, quiet: float = 1.0, timeout: float = 60.0) -> int:
        """Wait until nothing has arrived for `quiet` seconds: a target drained its queue."""
        deadline = time.monotonic() + timeout
        seen, since = self.poll(), time.monotonic()
        while time.monotonic() - since < quiet and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if self.poll() != seen:
                seen, since = len(self.arrivals), time.monotonic()
        return seen


class Sink:
    """A timestamping smarthost in its own process."""

    def __init__(self, name: str, workdir: Path, fleet: str | None = FLEET_EMAIL) -> None:
        self.port = free_port()
        self.log = ArrivalLog(workdir / f"{name}.arrivals")
        extra = ["--log", str(self.log.path), *(["--fleet", fleet] if fleet else [])]
        argv = server_argv("sink", self.port, *extra)
        self.child = Child(name, lambda _: argv, child_env(), workdir, SERVER_READY)

    async def start(self) -> Sink:
        await self.child.start()
        return self

    async def stop(self) -> None:
        await self.child.stop()


async def start_discard(workdir: Path, size_limit: int = 25 * 1024 * 1024) -> tuple[Child, int]:
    """The bare aiosmtpd ceiling, in its own process: (the child, its port)."""
    port = free_port()
    argv = server_argv("discard", port, "--size-limit", str(size_limit))
    child = Child("discard", lambda _: argv, child_env(), workdir, SERVER_READY)
    await child.start()
    return child, port


async def start_forward(
    workdir: Path, sink_port: int, size_limit: int = 25 * 1024 * 1024
) -> tuple[Child, int]:
    """The stack's floor (aiosmtpd in, aiosmtplib out, nothing else), in its own process,
    forwarding to the sink at `sink_port`: (the child, its port)."""
    port = free_port()
    extra = ["--size-limit", str(size_limit), "--to", str(sink_port)]
    argv = server_argv("forward", port, *extra)
    child = Child("forward", lambda _: argv, child_env(), workdir, SERVER_READY)
    await child.start()
    return child, port


# --- databases -----------------------------------------------------------------------------


@asynccontextmanager
async def scratch_database(kind: str, workdir: Path, pg_url: str) -> AsyncIterator[str]:
    """A fresh database for one run: a SQLite file, or a PostgreSQL database dropped after.

    `pg_url` names the server and a database to connect to for CREATE/DROP DATABASE; no
    table of that database is touched.
    """
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{workdir / f'bench-{secrets.token_hex(3)}.db'}"
        return
    name = f"relay_bench_{secrets.token_hex(4)}"
    await pg_execute(pg_url, f'CREATE DATABASE "{name}"')
    base, _, _ = pg_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        await pg_execute(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def server_version(kind: str, url: str) -> str:
    if kind == "sqlite":
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version}"
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    return f"PostgreSQL {str(version).split()[0]}"


# --- the relay -----------------------------------------------------------------------------


class RelayProcess:
    """`support-relay serve` on a database, sending through its own sink."""

    def __init__(
        self,
        name: str,
        database_url: str,
        workdir: Path,
        extra_env: dict[str, str] | None = None,
        *,
        migrate: bool = True,
    ) -> None:
        self.name = name
        self.http_port = free_port()
        self.smtp_port = free_port()
        self.admin_key = secrets.token_urlsafe(16)
        self.sink = Sink(f"{name}-sink", workdir)
        # Nothing from the caller's RELAY_* environment may change what is measured.
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
        env.update(
            RELAY_DATABASE_URL=database_url,
            RELAY_HTTP_PORT=str(self.http_port),
            RELAY_SMTP_PORT=str(self.smtp_port),
            RELAY_OUTBOUND=f"smtp://127.0.0.1:{self.sink.port}",
            RELAY_ADMIN_KEY=self.admin_key,
            **(extra_env or {}),
        )
        argv = [*relay_command(), "serve", *([] if migrate else ["--no-migrate"])]
        self.child = Child(name, lambda _: argv, env, workdir, RELAY_READY)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int:
        assert self.child.proc is not None
        return self.child.proc.pid

    async def start(self) -> RelayProcess:
        await self.sink.start()
        await self.child.start(timeout=120)
        return self

    async def stop(self) -> None:
        await self.child.stop()
        await self.sink.stop()

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"ApiKey {self.admin_key}"}


TRIP = {"pickup": "1 Main Street", "dropoff": "Airport T2", "scheduledAt": "2026-11-20T08:30:00Z"}


async def create_accounts(http: httpx.AsyncClient, relay: RelayProcess) -> tuple[int, str, int]:
    """A partner and a fleet: (partner id, its API key, fleet id)."""
    partner = created(
        await http.post(
            "/v1/admin/partners",
            headers=relay.admin(),
            json={"name": "Bench Travel", "contactEmail": PARTNER_EMAIL},
        )
    )
    fleet = created(
        await http.post(
            "/v1/admin/fleets",
            headers=relay.admin(),
            json={"name": "Bench Cabs", "supportEmail": FLEET_EMAIL},
        )
    )
    return int(partner["id"]), str(partner["apiKey"]), int(fleet["id"])


async def put_trips(
    http: httpx.AsyncClient, key: str, fleet_id: int, ids: Sequence[str], concurrency: int = 8
) -> None:
    auth = {"Authorization": f"ApiKey {key}"}
    pending = list(ids)

    async def worker() -> None:
        while pending:
            trip_id = pending.pop()
            created(
                await http.put(
                    f"/v1/trips/{trip_id}", headers=auth, json={**TRIP, "fleetId": fleet_id}
                )
            )

    await asyncio.gather(*(worker() for _ in range(concurrency)))


class TicketPool:
    """Fleet aliases of fresh tickets, opened through the API as a benchmark needs them.

    The relay holds, rather than forwards, more than RELAY_LOOP_MAX_MESSAGES (20) messages
    an hour to one alias (a mail-loop guard), so each phase of a benchmark writes to tickets
    of its own, at most `per_ticket` messages each, as real traffic spread over many
    tickets would. Aliases are learnt from the ticket-opened emails' Reply-To, as the fleet
    learns them.
    """

    def __init__(self, relay: RelayProcess, per_ticket: int = 15) -> None:
        self.relay = relay
        self.per_ticket = per_ticket
        self.opened = 0
        self.handed_out: set[str] = set()
        self.key = ""
        self.fleet_id = 0

    async def take(self, messages: int, at_least: int = 1) -> list[str]:
        """Aliases of tickets no message was sent to yet, enough for `messages`."""
        count = max(at_least, -(-messages // self.per_ticket))
        async with httpx.AsyncClient(base_url=self.relay.base_url, timeout=30) as http:
            if not self.key:
                _, self.key, self.fleet_id = await create_accounts(http, self.relay)
            await self._open(http, count)
        return await self._learn(count)

    async def _open(self, http: httpx.AsyncClient, count: int, concurrency: int = 8) -> None:
        auth = {"Authorization": f"ApiKey {self.key}"}
        numbers = list(range(self.opened, self.opened + count))
        self.opened += count

        async def worker() -> None:
            while numbers:
                trip = f"BENCH-{numbers.pop()}"
                body = {**TRIP, "fleetId": self.fleet_id}
                created(await http.put(f"/v1/trips/{trip}", headers=auth, json=body))
                body = {"subject": f"Bench ticket {trip}", "comment": "Opened by the benchmark."}
                url = f"/v1/support/demand/trips/{trip}/tickets"
                created(await http.post(url, headers=auth, json=body))

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    async def _learn(self, count: int, timeout: float = 120.0) -> list[str]:
        log = self.relay.sink.log
        deadline = time.monotonic() + timeout
        while True:
            log.poll()
            fresh = sorted({a.alias for a in log.arrivals if a.alias} - self.handed_out)
            if len(fresh) >= count:
                self.handed_out.update(fresh[:count])
                return fresh[:count]
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(fresh)} of {count} ticket emails reached the sink")
            await asyncio.sleep(0.05)

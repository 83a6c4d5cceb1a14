"""Crash test: SIGKILL the relay, then the smarthost, under load, and count what was lost."""

# Both run as real processes so the kills are real: `support-relay serve`, and this file
# again as a tiny aiosmtpd smarthost that fsyncs each message before answering 250. A
# fleet-side client sends replies carrying unique markers over concurrent SMTP connections
# and, like any MTA, resends (same Message-ID, same bytes) whatever was not answered 250.
# At the end every accepted marker must have reached the partner's inbox.
#
#   .venv/bin/python bench/crash.py [--messages 2000] [--connections 20] [--kills 10]
#       [--smarthost-kills 5] [--seed N] [--database-url postgresql+asyncpg://...]

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path

import aiosmtplib
import httpx
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import func, select
from sqlmodel import col

from bench.common import created, postgres_schema
from relay.replies import S250_DUPLICATE
from relay.sink import MailSink, Received, SinkHandler, free_port
from storage.db import make_engine
from storage.models import Message, OutboxItem
from storage.outbox import FAILED, PENDING, SENDING

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PARTNER_EMAIL = "helpdesk@partner.example"
FLEET_EMAIL = "dispatch@fleet.example"
MARKER = re.compile(r"crash-marker-(\d+)\b")
RELAY_READY = "support-relay serving"
SINK_READY = "crash sink ready"

# The worker's batch size and its smarthost connections bound how many forwards one kill
# can leave in the at-least-once window, so the duplicate bounds below are derived from them.
DELIVERY_CONCURRENCY = 8
DELIVERY_POOL_SIZE = 4
RELAY_TUNING = {
    # Retries compressed from minutes to fractions of a second, so a run takes seconds.
    "RELAY_DELIVERY_BACKOFF_BASE": "0.2",
    "RELAY_DELIVERY_BACKOFF_MAX": "1.0",
    "RELAY_DELIVERY_POLL_INTERVAL": "0.2",
    # The lease is how long rows claimed by a killed relay wait for its successor; the
    # default 300 s would only stretch the drain, not change what is delivered.
    "RELAY_DELIVERY_LEASE": "2",
    "RELAY_DELIVERY_TIMEOUT": "10",
    "RELAY_DELIVERY_CONCURRENCY": str(DELIVERY_CONCURRENCY),
    "RELAY_DELIVERY_POOL_SIZE": str(DELIVERY_POOL_SIZE),
    # Hundreds of replies to a handful of aliases within seconds look like a mail loop to
    # the relay's guard, which would hold them; and every client connects from 127.0.0.1.
    "RELAY_LOOP_MAX_MESSAGES": "1000000",
    "RELAY_MAX_CONNECTIONS_PER_CLIENT": "1000",
}


# --- the smarthost process ---------------------------------------------------------------


class SpoolHandler(SinkHandler):
    """Keeps each message in a maildir, fsynced, before answering 250, as a real MTA must."""

    def __init__(self, spool: Path) -> None:
        super().__init__()
        self.spool = spool
        self.seq = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.seq += 1
        name = f"{time.time_ns()}.{os.getpid()}.{self.seq}"
        head = f"{envelope.mail_from or ''}\n{' '.join(envelope.rcpt_tos)}\n".encode()
        data = head + (envelope.original_content or b"")
        await asyncio.to_thread(_write_durably, self.spool, name, data)
        return "250 2.0.0 OK"


def _write_durably(spool: Path, name: str, data: bytes) -> None:
    tmp = spool / "tmp" / name
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    # A kill before the rename leaves only tmp/, which is never counted: no 250 was sent.
    os.rename(tmp, spool / "new" / name)
    fd = os.open(spool / "new", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def serve_sink(port: int, spool: Path) -> None:
    """The smarthost process's whole life: listen until SIGKILLed."""
    for sub in ("tmp", "new"):
        (spool / sub).mkdir(parents=True, exist_ok=True)
    sink = MailSink(port)
    sink.handler = SpoolHandler(spool)
    await sink.start()
    print(SINK_READY, flush=True)
    await asyncio.Event().wait()


def read_spool(spool: Path) -> list[Received]:
    received = []
    for path in sorted((spool / "new").iterdir()):
        mail_from, rcpts, raw = path.read_bytes().split(b"\n", 2)
        received.append(Received(mail_from.decode(), rcpts.decode().split(), raw))
    return received


def spool_size(spool: Path) -> int:
    return len(os.listdir(spool / "new"))


# --- child processes -----------------------------------------------------------------------


class Child:
    """A subprocess that is SIGKILLed and restarted; each incarnation logs to its own file."""

    def __init__(
        self,
        name: str,
        argv: Callable[[int], list[str]],
        env: dict[str, str],
        logs: Path,
        ready: str,
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.logs = logs
        self.ready = ready
        self.incarnation = 0
        self.unexpected_exits = 0
        self.proc: asyncio.subprocess.Process | None = None
        self.log_path = logs / f"{name}-0.log"

    async def start(self, timeout: float = 60.0) -> None:
        self.incarnation += 1
        self.log_path = self.logs / f"{self.name}-{self.incarnation}.log"
        with open(self.log_path, "wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv(self.incarnation),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env=self.env,
                cwd=self.logs,
            )
        deadline = time.monotonic() + timeout
        while self.ready not in self.log_path.read_text(errors="replace"):
            if self.proc.returncode is not None or time.monotonic() > deadline:
                await self.kill()
                raise RuntimeError(f"{self.name} did not start:\n{self.tail()}")
            await asyncio.sleep(0.02)

    async def kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.proc.kill()
        else:
            # It died before we killed it: a crash of its own, which the report shows.
            self.unexpected_exits += 1
        await self.proc.wait()
        self.proc = None

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is not None:
            self.unexpected_exits += 1
        else:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
        await self.proc.wait()
        self.proc = None

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def relay_command() -> list[str]:
    script = Path(sys.executable).with_name("support-relay")
    return [str(script)] if script.exists() else [sys.executable, "-m", "api.cli"]


def relay_env(
    database_url: str, schema: str | None, *, http: int, smtp: int, sink: int, admin_key: str
) -> dict[str, str]:
    # Nothing from the caller's RELAY_* environment may change what is measured.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(RELAY_TUNING)
    env.update(
        RELAY_DATABASE_URL=database_url,
        RELAY_HTTP_PORT=str(http),
        RELAY_SMTP_PORT=str(smtp),
        RELAY_OUTBOUND=f"smtp://127.0.0.1:{sink}",
        RELAY_ADMIN_KEY=admin_key,
    )
    if schema:
        env["RELAY_DATABASE_SCHEMA"] = schema
    return env


# --- the fleet's MTA -----------------------------------------------------------------------


@dataclass(frozen=True)
class FleetReply:
    marker: int
    alias: str
    raw: bytes


def fleet_reply(marker: int, alias: str, seed: int) -> FleetReply:
    msg = EmailMessage()
    msg["From"] = FLEET_EMAIL
    msg["To"] = alias
    msg["Subject"] = f"Re: crash ticket (reply {marker})"
    msg["Message-ID"] = f"<crash-{seed}-{marker}@fleet.example>"
    msg.set_content(f"Reply {marker} from the fleet.\ncrash-marker-{marker}\n")
    return FleetReply(marker, alias, msg.as_bytes())


@dataclass
class ClientStats:
    accepted: set[int] = field(default_factory=set)
    refused: dict[int, str] = field(default_factory=dict)
    resends: int = 0
    # A 250 "already received": an earlier copy had committed but its 250 never arrived.
    already_received: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    done: bool = False


_DUPLICATE_TEXT = S250_DUPLICATE.removeprefix("250 ")


async def send_replies(
    port: int,
    replies: Sequence[FleetReply],
    connections: int,
    stats: ClientStats,
    *,
    retry_delay: float = 0.25,
    timeout: float = 30.0,
) -> None:
    """Deliver every reply like an MTA: keep it until a 250, resend the same bytes, bounce 5xx."""
    queue = deque(replies)

    async def connection() -> None:
        client: aiosmtplib.SMTP | None = None
        while queue:
            reply = queue.popleft()
            while True:
                try:
                    if client is None:
                        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=timeout)
                        await client.connect()
                    _, text = await client.sendmail(FLEET_EMAIL, [reply.alias], reply.raw)
                except aiosmtplib.SMTPRecipientsRefused as exc:
                    code = exc.recipients[0].code if exc.recipients else 450
                    reason = f"{code} {exc.recipients[0].message}" if exc.recipients else str(exc)
                    if code >= 500:
                        stats.refused[reply.marker] = reason
                        break
                    stats.failures[f"{code} at RCPT"] += 1
                except aiosmtplib.SMTPResponseException as exc:
                    if exc.code >= 500:
                        stats.refused[reply.marker] = f"{exc.code} {exc.message}"
                        break
                    stats.failures[f"{exc.code}"] += 1
                except (aiosmtplib.SMTPException, OSError) as exc:
                    stats.failures[type(exc).__name__] += 1
                else:
                    stats.accepted.add(reply.marker)
                    if text == _DUPLICATE_TEXT:
                        stats.already_received += 1
                    break
                # Whatever state the session is in, a fresh one is the MTA's safe choice.
                if client is not None:
                    client.close()
                    client = None
                stats.resends += 1
                await asyncio.sleep(retry_delay)
        if client is not None:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()

    try:
        await asyncio.gather(*(connection() for _ in range(connections)))
    finally:
        stats.done = True


# --- the run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CrashConfig:
    seed: int
    workdir: Path
    messages: int = 2000
    connections: int = 20
    kills: int = 10
    smarthost_kills: int = 5
    tickets: int = 20
    # None: a SQLite file in the work directory.
    database_url: str | None = None
    database_schema: str | None = None
    drain_timeout: float = 180.0


@dataclass
class PhaseResult:
    """One phase's figures. A marker is one fleet reply; copies are partner deliveries."""

    name: str
    victim: str
    messages: int
    kills: int
    # Extra copies the design allows per kill (see `explain`).
    duplicate_bound: int
    accepted: int = 0
    refused: int = 0
    resends: int = 0
    already_received: int = 0
    stored: int = 0
    stored_twice: int = 0
    delivered: int = 0
    lost: int = 0
    # The same forward (same Message-ID, same bytes) delivered again: at-least-once.
    redelivered: int = 0
    # One reply forwarded under distinct Message-IDs, i.e. stored and queued twice: a bug.
    forwarded_twice: int = 0
    delivered_unaccepted: int = 0
    failures: Counter[str] = field(default_factory=Counter)

    @property
    def duplicates(self) -> int:
        return self.redelivered + self.forwarded_twice

    def line(self) -> str:
        return (
            f"{self.name} ({self.victim} SIGKILLed x{self.kills}): messages={self.messages} "
            f"accepted={self.accepted} refused={self.refused} stored={self.stored} "
            f"delivered={self.delivered} lost={self.lost} duplicates={self.duplicates} "
            f"(redelivered={self.redelivered} forwarded-twice={self.forwarded_twice} "
            f"stored-twice={self.stored_twice}; allowed <= {self.duplicate_bound}) "
            f"client resends={self.resends} acknowledged-as-already-received="
            f"{self.already_received}"
        )


@dataclass
class CrashReport:
    seed: int
    database: str
    connections: int
    tickets: int
    phases: list[PhaseResult]
    elapsed: float
    failed_rows: int = 0
    undrained: int = 0
    unexpected_exits: int = 0

    @property
    def messages(self) -> int:
        return sum(p.messages for p in self.phases)

    @property
    def accepted(self) -> int:
        return sum(p.accepted for p in self.phases)

    @property
    def delivered(self) -> int:
        return sum(p.delivered for p in self.phases)

    @property
    def lost(self) -> int:
        return sum(p.lost for p in self.phases)

    @property
    def refused(self) -> int:
        return sum(p.refused for p in self.phases)

    @property
    def duplicates(self) -> int:
        return sum(p.duplicates for p in self.phases)

    def summary(self) -> list[str]:
        """The figures, last line `crash test: lost=<n> duplicates=<n>`."""
        lines = [p.line() for p in self.phases]
        lines += explain(self.phases)
        per_phase = ", ".join(f"{p.victim} phase {p.duplicates}" for p in self.phases)
        lines += [
            f"seed: {self.seed}",
            f"database: {self.database}",
            f"messages: {self.messages} ({len(self.phases)} phases, "
            f"{self.connections} connections, {self.tickets} tickets)",
            *(f"{p.victim} kills: {p.kills}" for p in self.phases),
            f"accepted: {self.accepted}",
            f"refused: {self.refused}",
            f"delivered: {self.delivered}",
            f"outbox rows failed: {self.failed_rows}, still queued at the end: {self.undrained}",
            f"processes that died without being killed: {self.unexpected_exits}",
            f"lost: {self.lost}",
            f"duplicates delivered: {self.duplicates} ({per_phase})",
            f"elapsed: {self.elapsed:.1f} s",
            f"crash test: lost={self.lost} duplicates={self.duplicates}",
        ]
        return lines


def explain(phases: Sequence[PhaseResult]) -> list[str]:
    """Why duplicates within the bound are the design, and which ones are not."""
    lines: list[str] = []
    for p in phases:
        if p.victim == "relay":
            lines.append(
                f"  {p.name}: a forward the smarthost answered 250 just before the relay died, "
                "whose 'sent' the relay had not committed yet, is sent again by the restarted "
                "relay once its lease runs out (at-least-once). At most the rows one worker "
                f"claims at once per kill: {p.kills} x {DELIVERY_CONCURRENCY} = "
                f"{p.duplicate_bound}."
            )
        else:
            lines.append(
                f"  {p.name}: a forward the smarthost fsynced but died before answering 250 is "
                "sent again by the relay (at-least-once, the smarthost's side of the window). "
                "At most the transactions in flight to it per kill: "
                f"{p.kills} x {DELIVERY_POOL_SIZE} = {p.duplicate_bound}."
            )
    lines.append(
        "  forwarded-twice / stored-twice count a reply stored twice (distinct forwards): "
        "never allowed; the relay dedups by Message-ID + body."
    )
    return lines


def thresholds(rng: random.Random, count: int, kills: int) -> list[int]:
    """Progress points (out of `count`) at which to kill: spread over the load, seeded."""
    low = max(1, count // 20)
    high = max(low + 1, count * 9 // 10)
    if kills <= high - low:
        return sorted(rng.sample(range(low, high), kills))
    return sorted(rng.choices(range(low, high), k=kills))


class CrashRun:
    """One crash test: the processes, the accounts and tickets, then the two phases."""

    def __init__(self, cfg: CrashConfig, log: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.started = time.monotonic()
        self._log = log
        cfg.workdir.mkdir(parents=True, exist_ok=True)
        self.database_url = cfg.database_url or f"sqlite+aiosqlite:///{cfg.workdir / 'relay.db'}"
        self.spool = cfg.workdir / "smarthost"
        self.sink_port = free_port()
        self.http_port = free_port()
        self.smtp_port = free_port()
        self.admin_key = secrets.token_urlsafe(16)
        env = relay_env(
            self.database_url,
            cfg.database_schema,
            http=self.http_port,
            smtp=self.smtp_port,
            sink=self.sink_port,
            admin_key=self.admin_key,
        )
        self.relay = Child(
            "relay",
            # Only the first start migrates, as in a deploy; a restart after a crash must
            # come up on the schema it left behind.
            lambda n: [*relay_command(), "serve", *(["--no-migrate"] if n > 1 else [])],
            env,
            cfg.workdir,
            RELAY_READY,
        )
        sink_env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
        sink_argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--sink-port",
            str(self.sink_port),
            "--sink-spool",
            str(self.spool),
        ]
        self.sink = Child("smarthost", lambda n: sink_argv, sink_env, cfg.workdir, SINK_READY)
        self.engine = make_engine(self.database_url, cfg.database_schema)
        self.aliases: list[str] = []

    def log(self, text: str) -> None:
        self._log(f"[{time.monotonic() - self.started:6.1f}s] {text}")

    async def run(self) -> CrashReport:
        self.log(f"crash test seed={self.cfg.seed}, work directory {self.cfg.workdir}")
        try:
            await self.sink.start()
            await self.relay.start()
            self.log(f"relay up (HTTP {self.http_port}, SMTP {self.smtp_port}), smarthost up")
            self.aliases = await self.open_tickets()
            self.log(f"{len(self.aliases)} tickets open; fleet aliases learnt from the smarthost")
            first = await self.phase("phase 1", "relay", 0, self.cfg.kills)
            second = await self.phase(
                "phase 2", "smarthost", self.cfg.messages, self.cfg.smarthost_kills
            )
            counts = await self.outbox_counts()
            return CrashReport(
                seed=self.cfg.seed,
                database="sqlite" if self.database_url.startswith("sqlite") else "postgresql",
                connections=self.cfg.connections,
                tickets=self.cfg.tickets,
                phases=[first, second],
                elapsed=time.monotonic() - self.started,
                failed_rows=counts[FAILED],
                undrained=counts[PENDING] + counts[SENDING],
                unexpected_exits=self.relay.unexpected_exits + self.sink.unexpected_exits,
            )
        finally:
            await self.relay.stop()
            await self.sink.stop()
            await self.engine.dispose()

    async def open_tickets(self) -> list[str]:
        admin = {"Authorization": f"ApiKey {self.admin_key}"}
        base = f"http://127.0.0.1:{self.http_port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            partner = created(
                await http.post(
                    "/v1/admin/partners",
                    headers=admin,
                    json={"name": "Crash Travel", "contactEmail": PARTNER_EMAIL},
                )
            )
            fleet = created(
                await http.post(
                    "/v1/admin/fleets",
                    headers=admin,
                    json={"name": "Crash Cabs", "supportEmail": FLEET_EMAIL},
                )
            )
            auth = {"Authorization": f"ApiKey {partner['apiKey']}"}
            trip = {
                "fleetId": fleet["id"],
                "pickup": "1 Main Street",
                "dropoff": "Airport T2",
                "scheduledAt": "2026-11-20T08:30:00Z",
            }
            # A trip per ticket: partners may keep only a few tickets open on one trip.
            for n in range(self.cfg.tickets):
                created(await http.put(f"/v1/trips/CRASH-{n}", headers=auth, json=trip))
                body = {"subject": f"Crash ticket {n}", "comment": f"Crash ticket {n}."}
                url = f"/v1/support/demand/trips/CRASH-{n}/tickets"
                created(await http.post(url, headers=auth, json=body))
        deadline = time.monotonic() + self.cfg.drain_timeout
        while True:
            opened = [r for r in read_spool(self.spool) if FLEET_EMAIL in r.rcpt_to]
            if len(opened) >= self.cfg.tickets:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(opened)} ticket emails reached the smarthost")
            await asyncio.sleep(0.1)
        # The fleet answers to the ticket-opened email's Reply-To: its masked alias.
        return sorted({getaddresses([str(r.message["Reply-To"])])[0][1] for r in opened})

    async def phase(self, name: str, victim: str, first: int, kills: int) -> PhaseResult:
        count = self.cfg.messages
        replies = [
            fleet_reply(n, self.aliases[n % len(self.aliases)], self.cfg.seed)
            for n in range(first, first + count)
        ]
        stats = ClientStats()
        delivered_before = spool_size(self.spool)
        points = thresholds(self.rng, count, kills)
        self.log(f"{name}: {count} replies over {self.cfg.connections} connections, {victim} dies")
        if victim == "relay":
            child, restart = self.relay, (0.1, 1.0)

            def progress() -> int:
                return len(stats.accepted)
        else:
            child, restart = self.sink, (0.2, 1.5)

            def progress() -> int:
                return spool_size(self.spool) - delivered_before

        sending = asyncio.create_task(
            send_replies(self.smtp_port, replies, self.cfg.connections, stats)
        )
        done_kills = await self.kill_at(child, points, progress, restart)
        await sending
        self.log(f"{name}: client done, {len(stats.accepted)} accepted; waiting for the outbox")
        waiting = await self.wait_for_drain()
        if waiting:
            self.log(f"{name}: outbox not drained, {waiting} rows still queued")
        return await self.count(name, victim, replies, stats, done_kills, len(points))

    async def kill_at(
        self,
        child: Child,
        points: list[int],
        progress: Callable[[], int],
        restart: tuple[float, float],
    ) -> int:
        kills = 0
        for point in points:
            # Bounded only so a stalled relay still gets its kills and a report.
            deadline = time.monotonic() + self.cfg.drain_timeout
            while progress() < point and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.sleep(self.rng.uniform(0.0, 0.2))
            await child.kill()
            kills += 1
            self.log(f"{child.name} SIGKILLed ({kills}/{len(points)}) at progress {progress()}")
            await asyncio.sleep(self.rng.uniform(*restart))
            await child.start()
        return kills

    async def wait_for_drain(self) -> int:
        """Rows still pending or sending when the outbox drained, or at the deadline."""
        deadline = time.monotonic() + self.cfg.drain_timeout
        while True:
            counts = await self.outbox_counts()
            waiting = counts[PENDING] + counts[SENDING]
            if not waiting or time.monotonic() > deadline:
                return waiting
            await asyncio.sleep(0.25)

    async def outbox_counts(self) -> Counter[str]:
        status = col(OutboxItem.status)
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(status, func.count()).group_by(status))
            return Counter({row[0]: row[1] for row in rows})

    async def stored_markers(self) -> Counter[int]:
        async with self.engine.connect() as conn:
            bodies = await conn.execute(select(col(Message.body)))
            return Counter(int(m[1]) for (body,) in bodies if (m := MARKER.search(body)))

    async def count(
        self,
        name: str,
        victim: str,
        replies: Sequence[FleetReply],
        stats: ClientStats,
        kills: int,
        planned: int,
    ) -> PhaseResult:
        markers = {r.marker for r in replies}
        forwards: defaultdict[int, list[str]] = defaultdict(list)
        for received in read_spool(self.spool):
            if PARTNER_EMAIL not in received.rcpt_to:
                continue
            found = MARKER.search(received.text())
            if found and int(found[1]) in markers:
                forwards[int(found[1])].append(str(received.message["Message-ID"]))
        stored = await self.stored_markers()
        per_kill = DELIVERY_CONCURRENCY if victim == "relay" else DELIVERY_POOL_SIZE
        return PhaseResult(
            name=name,
            victim=victim,
            messages=len(replies),
            kills=kills,
            duplicate_bound=planned * per_kill,
            accepted=len(stats.accepted),
            refused=len(stats.refused),
            resends=stats.resends,
            already_received=stats.already_received,
            stored=sum(1 for m in markers if stored[m]),
            stored_twice=sum(stored[m] - 1 for m in markers if stored[m] > 1),
            delivered=len(forwards),
            lost=len(stats.accepted - forwards.keys()),
            redelivered=sum(len(ids) - len(set(ids)) for ids in forwards.values()),
            forwarded_twice=sum(len(set(ids)) - 1 for ids in forwards.values()),
            delivered_unaccepted=len(forwards.keys() - stats.accepted),
            failures=stats.failures,
        )


async def run_crash(cfg: CrashConfig, log: Callable[[str], None] = print) -> CrashReport:
    """Run both phases against fresh processes and count, per marker, what was lost."""
    return await CrashRun(cfg, log).run()


# --- command line --------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog="Exits 1 when an accepted reply was lost or one was refused."
    )
    parser.add_argument("--messages", type=int, default=2000, help="fleet replies per phase")
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--kills", type=int, default=10, help="relay SIGKILLs in phase 1")
    parser.add_argument(
        "--smarthost-kills", type=int, default=5, help="smarthost SIGKILLs in phase 2"
    )
    parser.add_argument("--tickets", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    # The smarthost process is this file run again with these.
    parser.add_argument("--sink-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sink-spool", type=Path, help=argparse.SUPPRESS)
    return parser


async def _bench(args: argparse.Namespace, seed: int, workdir: Path) -> CrashReport:
    def config(url: str | None, schema: str | None) -> CrashConfig:
        return CrashConfig(
            seed=seed,
            workdir=workdir,
            messages=args.messages,
            connections=args.connections,
            kills=args.kills,
            smarthost_kills=args.smarthost_kills,
            tickets=args.tickets,
            database_url=url,
            database_schema=schema,
            drain_timeout=args.drain_timeout,
        )

    url: str | None = args.database_url
    if url and url.startswith("postgresql"):
        async with postgres_schema(url, "crash") as schema:
            return await run_crash(config(url, schema))
    return await run_crash(config(url, None))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.sink_spool is not None:
        asyncio.run(serve_sink(args.sink_port, args.sink_spool))
        return 0
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    workdir = Path(tempfile.mkdtemp(prefix="relay-crash-"))
    report = asyncio.run(_bench(args, seed, workdir))
    failed = report.lost > 0 or report.refused > 0
    if args.keep or failed:
        print(f"work directory (logs, smarthost spool): {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    for line in report.summary():
        print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

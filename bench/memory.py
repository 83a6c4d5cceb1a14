"""Peak memory of the relay while 50 fleet replies at the size limit arrive at once.

    .venv/bin/python bench/memory.py                 # 50 clients x 10 MiB, SQLite and PostgreSQL
    .venv/bin/python bench/memory.py --quick         # 5 clients x 1 MiB, for development
      [--clients 50] [--limit-mib 10] [--databases sqlite,postgresql]
      [--pg-url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres]

The relay runs with RELAY_MAX_MESSAGE_SIZE set to the limit (10 MiB by default: the shipped
default is 25 MiB) and RELAY_MAX_CONNECTIONS_PER_CLIENT above the client count (all clients
share 127.0.0.1). Each client connects first; then all send at once one reply from the
fleet's address to a ticket of its own, 4 KiB under the limit: a short text and a PDF
attachment (random bytes, base64), as a fleet's scanned receipt would come. The run ends
when every forward has reached the sink, so the delivery worker's share (composing and
sending 50 forwards with their attachments) is inside the window too.

Peak = VmHWM of the relay process (/proc/<pid>/status, the kernel's high-water mark of its
resident set), reset through /proc/<pid>/clear_refs just before the load, so start-up's
peak does not count; before = VmRSS at that moment. The same load against a bare aiosmtpd
server with the same size limit (it only receives and drops) shows what receiving alone
costs in this interpreter. PostgreSQL's own memory is outside the relay process and not
counted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

import aiosmtplib

from bench.harness import (
    DEFAULT_PG,
    FLEET_EMAIL,
    ArrivalLog,
    RelayProcess,
    TicketPool,
    run_main,
    scratch_database,
    server_version,
    start_discard,
    table,
    vm_kib,
)

MIB = 1024 * 1024
MARGIN = 4096
CEILING = "bare aiosmtpd"


# --- the messages ------------------------------------------------------------------------


def _head(token: int, alias: str) -> bytes:
    return (
        f"From: <{FLEET_EMAIL}>\r\nTo: <{alias}>\r\nSubject: Receipt scan {token}\r\n"
        f"Message-ID: <bench-mem-{token}@fleet.example>\r\nDate: {formatdate()}\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="bench-boundary"\r\n\r\n'
        "--bench-boundary\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"bench-token-{token}\r\nThe scanned receipt is attached.\r\n"
        "--bench-boundary\r\n"
        'Content-Type: application/pdf; name="receipt.pdf"\r\n'
        'Content-Disposition: attachment; filename="receipt.pdf"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode()


TAIL = b"\r\n--bench-boundary--\r\n"


def attachment_lines(total: int) -> bytes:
    """Base64 lines of a PDF-looking file sized so a whole message is `total` bytes."""
    room = total - len(_head(10**6, "ticket-1-xxxxxxxxxxxxxxxx@relay.localhost")) - len(TAIL)
    raw = b"%PDF-1.4\n" + os.urandom(max(0, room * 57 // 78 - 9))
    return base64.encodebytes(raw).replace(b"\n", b"\r\n").rstrip(b"\r\n")


def reply(token: int, alias: str, lines: bytes) -> bytes:
    return _head(token, alias) + lines + TAIL


# --- one measurement ---------------------------------------------------------------------------


def reset_peak(pid: int) -> None:
    """Reset VmHWM to the current RSS (Linux 4.0+, as root or the owner), so the peak read
    afterwards is the load's, not start-up's (migrations can peak higher than idle)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@dataclass(frozen=True)
class Sample:
    target: str
    clients: int
    message_bytes: int
    before_kib: int
    peak_kib: int
    accepted: int
    forwarded: int | None  # None: the ceiling forwards nothing
    seconds: float
    errors: list[str]

    @property
    def growth_mib(self) -> float:
        return (self.peak_kib - self.before_kib) / 1024


async def _send_all(port: int, aliases: list[str], lines: bytes) -> tuple[int, list[str]]:
    """Connect every client, then send all messages at once: (accepted, errors)."""
    clients = [aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=300) for _ in aliases]
    await asyncio.gather(*(c.connect() for c in clients))
    messages = [reply(n, alias, lines) for n, alias in enumerate(aliases, 1)]

    async def send(client: aiosmtplib.SMTP, alias: str, message: bytes) -> str | None:
        try:
            await client.sendmail(FLEET_EMAIL, [alias], message)
            return None
        except aiosmtplib.SMTPException as exc:
            return str(exc)[:200]
        finally:
            client.close()

    outcomes = await asyncio.gather(
        *(send(*job) for job in zip(clients, aliases, messages, strict=True))
    )
    errors = [e for e in outcomes if e is not None]
    return len(aliases) - len(errors), errors


async def measure(
    name: str,
    pid: int,
    port: int,
    aliases: list[str],
    lines: bytes,
    arrivals: ArrivalLog | None,
    timeout: float,
) -> Sample:
    await asyncio.sleep(1.0)  # let start-up garbage settle
    reset_peak(pid)
    before = vm_kib(pid, "VmRSS")
    seen = arrivals.poll() if arrivals else 0
    began = time.monotonic()
    accepted, errors = await _send_all(port, aliases, lines)
    forwarded = None
    if arrivals is not None:
        forwarded = await arrivals.wait_for(seen + accepted, timeout) - seen
    return Sample(
        target=name,
        clients=len(aliases),
        message_bytes=len(reply(1, aliases[0], lines)),
        before_kib=before,
        peak_kib=vm_kib(pid, "VmHWM"),
        accepted=accepted,
        forwarded=forwarded,
        seconds=time.monotonic() - began,
        errors=errors,
    )


# --- the run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    clients: int
    limit: int
    databases: list[str]
    pg_url: str
    timeout: float


def relay_env(cfg: Settings) -> dict[str, str]:
    return {
        "RELAY_MAX_MESSAGE_SIZE": str(cfg.limit),
        # The clients all come from 127.0.0.1: the per-client cap (default 20) would refuse
        # most of them, where in production they are 50 MTAs.
        "RELAY_MAX_CONNECTIONS_PER_CLIENT": str(cfg.clients + 10),
    }


async def run_relay(kind: str, cfg: Settings, lines: bytes, workdir: Path) -> Sample:
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(scratch_database(kind, workdir, cfg.pg_url))
        relay = await RelayProcess(f"relay-{kind}", url, workdir, relay_env(cfg)).start()
        stack.push_async_callback(relay.stop)
        aliases = await TicketPool(relay, per_ticket=1).take(cfg.clients)
        return await measure(
            f"relay/{kind}",
            relay.pid,
            relay.smtp_port,
            aliases,
            lines,
            relay.sink.log,
            cfg.timeout,
        )


async def run_ceiling(cfg: Settings, lines: bytes, workdir: Path) -> Sample:
    child, port = await start_discard(workdir, cfg.limit)
    try:
        assert child.proc is not None
        aliases = [f"ticket-{n}-bench@relay.localhost" for n in range(cfg.clients)]
        return await measure(CEILING, child.proc.pid, port, aliases, lines, None, cfg.timeout)
    finally:
        await child.stop()


def _mib(kib: float) -> str:
    return f"{kib / 1024:.0f}"


def rows(samples: list[Sample]) -> list[list[str]]:
    out = []
    for s in samples:
        in_flight = s.clients * s.message_bytes / MIB
        out.append(
            [
                s.target,
                f"{s.clients} x {s.message_bytes / MIB:.2f} MiB",
                _mib(s.before_kib),
                _mib(s.peak_kib),
                f"{s.growth_mib:.0f}",
                f"{s.growth_mib / in_flight:.1f}x",
                f"{s.accepted}/{s.clients}",
                "-" if s.forwarded is None else f"{s.forwarded}/{s.accepted}",
                f"{s.seconds:.1f}",
            ]
        )
    return out


HEADERS = [
    "target",
    "load",
    "RSS before MiB",
    "peak (VmHWM) MiB",
    "growth MiB",
    "growth / bytes in flight",
    "accepted",
    "forwarded",
    "seconds",
]


async def run(cfg: Settings, keep: bool) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="relay-memory-"))
    lines = attachment_lines(cfg.limit - MARGIN)
    samples: list[Sample] = []
    try:
        notes = [await server_version(kind, cfg.pg_url) for kind in cfg.databases]
        samples.append(await run_ceiling(cfg, lines, workdir))
        for kind in cfg.databases:
            samples.append(await run_relay(kind, cfg, lines, workdir))
            print(f"  {samples[-1].target}: peak {_mib(samples[-1].peak_kib)} MiB", flush=True)
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"memory: {', '.join(notes)}; {cfg.clients} clients sending at once; relay settings: "
        + ", ".join(f"{k}={v}" for k, v in relay_env(cfg).items())
    )
    print(table(HEADERS, rows(samples)))
    for s in samples:
        for error in dict.fromkeys(s.errors):
            print(f"  {s.target}: {error}")
    ceiling = samples[0]
    parts = [
        f"{s.target} {_mib(s.peak_kib)} MiB (+{s.growth_mib:.0f}, "
        f"{s.growth_mib / max(ceiling.growth_mib, 1):.1f}x the bare server's growth)"
        for s in samples[1:]
    ]
    print(
        f"memory: peak RSS with {cfg.clients} x {cfg.limit / MIB:g} MiB at once: "
        + "; ".join(parts)
    )
    return 0 if all(s.accepted == s.clients for s in samples) else 1


def parse(argv: list[str] | None) -> tuple[Settings, bool]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--limit-mib", type=float, default=10.0, help="RELAY_MAX_MESSAGE_SIZE")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--timeout", type=float, default=300.0, help="for the forwards to arrive")
    parser.add_argument("--quick", action="store_true", help="5 clients x 1 MiB")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.limit_mib = 5, 1.0
    settings = Settings(
        clients=args.clients,
        limit=int(args.limit_mib * MIB),
        databases=[d for d in args.databases.split(",") if d],
        pg_url=args.pg_url,
        timeout=args.timeout,
    )
    return settings, args.keep


def main(argv: list[str] | None = None) -> int:
    cfg, keep = parse(argv)
    return run_main(run(cfg, keep))


if __name__ == "__main__":
    sys.exit(main())

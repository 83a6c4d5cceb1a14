"""The SMTP load generators: `smtp-source` runs for throughput, a paced client for latency.

smtp-source (Postfix's, in C) costs next to nothing, so a target's rate is the target's;
but it reports no per-message times. The paced client (aiosmtplib) sends token-carrying
messages on a schedule and records when each 250 arrives, to match against the sink.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import formatdate

import aiosmtplib

from bench.harness import FLEET_EMAIL

# Unique across a run: paced messages' tokens and made-up addresses.
tokens = itertools.count(1)


def plan(aliases: Sequence[str], messages: int) -> list[tuple[str, int]]:
    """(alias, count) chunks: the messages spread evenly over the tickets."""
    share, extra = divmod(messages, len(aliases))
    return [
        (a, share + (1 if n < extra else 0)) for n, a in enumerate(aliases) if share or n < extra
    ]


@dataclass
class Load:
    started_ns: int
    finished_ns: int
    accepted: int
    errors: list[str]


async def smtp_source(
    smtp_source_bin: str, port: int, chunks: Sequence[tuple[str, int]], connections: int, size: int
) -> Load:
    """Run the chunks over `connections` concurrent smtp-source processes."""
    pending = deque(chunks)
    accepted = 0
    errors: list[str] = []

    async def connection() -> None:
        nonlocal accepted
        while pending:
            alias, count = pending.popleft()
            argv = [smtp_source_bin, "-d", "-s", "1", "-m", str(count), "-l", str(size)]
            argv += ["-M", "fleet.example", "-f", FLEET_EMAIL, "-t", alias, f"127.0.0.1:{port}"]
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
            out, _ = await proc.communicate()
            if proc.returncode == 0:
                accepted += count
            else:
                # smtp-source stops at the first reply that is not 2xx; count none of the chunk.
                errors.append(out.decode(errors="replace").strip()[-300:])

    started = time.monotonic_ns()
    await asyncio.gather(*(connection() for _ in range(connections)))
    return Load(started, time.monotonic_ns(), accepted, errors)


FILLER = b"X" * 76 + b"\r\n"


def fleet_reply(token: int, alias: str, size: int) -> bytes:
    head = (
        f"From: <{FLEET_EMAIL}>\r\nTo: <{alias}>\r\nSubject: bench reply {token}\r\n"
        f"Message-ID: <bench-{token}@fleet.example>\r\nDate: {formatdate()}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"bench-token-{token}\r\n"
    ).encode()
    lines = max(0, size - len(head)) // len(FILLER)
    return head + FILLER * lines


@dataclass
class Paced:
    acked: dict[int, int]
    late: int
    errors: list[str]


async def paced_client(
    port: int, aliases: Sequence[str], size: int, connections: int, rate: float, count: int
) -> Paced:
    """Message i leaves at start + i/rate on the first free connection (open loop, so a slow
    server makes messages late rather than the rate lower; late ones are counted)."""
    jobs = deque((next(tokens), aliases[n % len(aliases)], n) for n in range(count))
    acked: dict[int, int] = {}
    errors: list[str] = []
    late = 0
    start = time.monotonic() + 0.05

    async def connection() -> None:
        nonlocal late
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60)
        await client.connect()
        try:
            while jobs:
                token, alias, n = jobs.popleft()
                due = start + n / rate
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                elif wait < -0.01:
                    late += 1
                try:
                    await client.sendmail(FLEET_EMAIL, [alias], fleet_reply(token, alias, size))
                except aiosmtplib.SMTPException as exc:
                    errors.append(str(exc)[:200])
                    continue
                acked[token] = time.monotonic_ns()
        finally:
            await client.quit()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return Paced(acked, late, errors)

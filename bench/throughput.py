"""SMTP throughput and latency of fleet replies: the relay against a discard ceiling and Postfix.

    .venv/bin/python bench/throughput.py                       # full: 2000 messages a case
    .venv/bin/python bench/throughput.py --messages 500        # reduced
    .venv/bin/python bench/throughput.py --quick               # a minute, for development
      [--sizes 2048,102400] [--connections 1,20] [--databases sqlite,postgresql]
      [--pg-url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres] [--py-spy FILE]
      [--processes N]

Needs Postfix's tools (`smtp-source`, `postfix`):
`DEBIAN_FRONTEND=noninteractive apt-get install -y postfix`, then `postfix stop` if the
package started the system's own instance (this script never uses or starts that one).

Per case (message size x concurrent connections), in this order, in one run:

- ceiling: a bare aiosmtpd server (configured like the relay's listener) that discards
  every message. Its rate is what aiosmtpd on this interpreter and machine can accept.
- floor: the least any relay built on this stack does, in the same process layout: aiosmtpd
  receives each message (on uvloop, configured like the relay's listener), answers 250 at
  once and aiosmtplib forwards it over 8 kept-open connections to a timestamping sink;
  nothing parsed, checked, stored or fsynced. Its ratio to Postfix bounds what the relay
  can reach on this machine with aiosmtpd and aiosmtplib, however lean the rest.
- Postfix: a throwaway instance on loopback (queue on disk, as shipped) relaying to a
  timestamping sink (bench/harness.py's minimal SMTP receiver, faster than the ceiling,
  so it never sets anyone's pace), as the relay's smarthost.
- the relay, `support-relay serve` with its shipped settings, once per database (SQLite
  in a temp file; PostgreSQL in a database created for the run and dropped after), each
  delivering to its own timestamping sink. One setting is changed, and printed:
  RELAY_MAX_CONNECTIONS_PER_CLIENT, since all load comes from one loopback address that
  stands for many fleets' MTAs.

Load: Postfix's `smtp-source` (C, so the load generator costs next to nothing) sends fleet
replies, From the fleet's registered address To a live ticket's fleet alias. Each
connection is one `smtp-source -d -s 1` process (one connection, kept open for its
messages) working through tickets in turn, at most 15 messages a ticket: the relay holds
instead of forwarding more than 20 an hour to one alias (its mail-loop guard), so every
phase opens fresh tickets through the API first. Postfix and the ceiling get the same
plan to made-up addresses. End-to-end rate = messages accepted AND arrived at the sink,
divided by the time from the first connection to the last arrival.

Latency: our own aiosmtplib client (smtp-source reports no per-message times) sends paced
messages at half the target's end-to-end rate of that case, each carrying a token; latency
is from the client receiving 250 to the sink receiving the forward with that token.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import ints, pct
from bench.harness import (
    DEFAULT_PG,
    ArrivalLog,
    RelayProcess,
    Sink,
    TicketPool,
    cpu_seconds,
    ratio,
    require_tool,
    run_main,
    scratch_database,
    server_version,
    start_discard,
    start_forward,
    table,
)
from bench.postfix_peer import INSTALL, PostfixPeer
from bench.pyspy import Profile, summarise
from bench.smtp_load import paced_client, plan, smtp_source, tokens

PER_TICKET = 15  # messages to one ticket, under the relay's loop guard of 20 an hour
CEILING, FLOOR, POSTFIX = "ceiling", "floor", "postfix"
HEADLINE_CASE = (2048, 20)
SIZED = ("messages", "latency_messages", "latency_seconds")  # what --quick makes smaller
# The targets, checked at the end.
MIN_VS_POSTFIX_2K, MIN_VS_CEILING_2K, MAX_P99_MS, MIN_VS_POSTFIX_100K = 1.0, 0.5, 100.0, 0.5


@dataclass
class Target:
    """Something that accepts the fleet's mail: the ceiling, Postfix or a relay."""

    name: str
    port: int
    arrivals: ArrivalLog | None  # None: the ceiling, which forwards nothing
    pid: int | None = None  # whose CPU time is measured (Postfix: none, it is many processes)
    pool: TicketPool | None = None  # a relay's tickets, to address the fleet's replies to
    gc_log: Path | None = None  # a relay's full garbage collections (--gc-pauses)


@dataclass(frozen=True)
class Case:
    size: int
    connections: int

    @property
    def label(self) -> str:
        size = f"{self.size // 1024} KB" if self.size >= 1024 else f"{self.size} B"
        return f"{size} x {self.connections}"

    @property
    def key(self) -> tuple[int, int]:
        return (self.size, self.connections)


@dataclass
class Result:
    case: Case
    target: str
    messages: int
    accepted: int
    arrived: int
    accept_rate: float
    e2e_rate: float
    latencies: list[float] = field(default_factory=list)
    paced_at: float = math.nan
    late_sends: int = 0
    cpu_share: float = math.nan  # the target's CPU seconds per wall second, while measured
    errors: list[str] = field(default_factory=list)
    # The relay's full garbage collections while its case ran (--gc-pauses): pauses in ms.
    gc_pauses: list[float] | None = None


# --- measuring one target ---------------------------------------------------------------------


async def throughput(
    smtp_source_bin: str,
    target: Target,
    case: Case,
    aliases: Sequence[str],
    messages: int,
    drain_timeout: float,
) -> Result:
    """smtp-source at full speed, then wait for every accepted message at the sink."""
    log = target.arrivals
    before = log.poll() if log else 0
    cpu = cpu_seconds(target.pid) if target.pid else math.nan
    load = await smtp_source(
        smtp_source_bin, target.port, plan(aliases, messages), case.connections, case.size
    )
    accept_s = (load.finished_ns - load.started_ns) / 1e9
    if log is None:
        arrived, last = load.accepted, load.finished_ns
    else:
        arrived = await log.wait_for(before + load.accepted, drain_timeout) - before
        last = max((a.at_ns for a in log.arrivals[before:]), default=load.finished_ns)
    e2e_s = (last - load.started_ns) / 1e9
    # Until now, give or take one poll of the sink's log: the target's busy share of the window.
    wall = (time.monotonic_ns() - load.started_ns) / 1e9
    used = cpu_seconds(target.pid) - cpu if target.pid else math.nan
    return Result(
        case,
        target.name,
        messages,
        load.accepted,
        arrived,
        accept_rate=load.accepted / accept_s if accept_s > 0 else math.nan,
        e2e_rate=min(arrived, load.accepted) / e2e_s if e2e_s > 0 else math.nan,
        cpu_share=used / wall if wall > 0 else math.nan,
        errors=load.errors,
    )


async def measure_latency(
    target: Target, aliases: Sequence[str], result: Result, count: int, drain_timeout: float
) -> None:
    """Paced at half the measured end-to-end rate: 250 -> arrival at the sink, per message."""
    log = target.arrivals
    assert log is not None
    if not result.e2e_rate > 0:
        return
    before = log.poll()
    result.paced_at = result.e2e_rate / 2
    paced = await paced_client(
        target.port, aliases, result.case.size, result.case.connections, result.paced_at, count
    )
    await log.wait_for(before + len(paced.acked), drain_timeout)
    arrived = {a.token: a.at_ns for a in log.arrivals[before:] if a.token is not None}
    result.latencies = [(arrived[t] - ack) / 1e6 for t, ack in paced.acked.items() if t in arrived]
    result.late_sends = paced.late
    missing = len(paced.acked) - len(result.latencies)
    result.errors += paced.errors + ([f"{missing} paced messages never arrived"] if missing else [])


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Settings:
    messages: int
    latency_messages: int
    latency_seconds: float
    sizes: list[int]
    connections: list[int]
    databases: list[str]
    pg_url: str
    drain_timeout: float
    py_spy: Path | None
    processes: int = 1
    gc_pauses: bool = False  # log and report the relays' full garbage collections

    @property
    def cases(self) -> list[Case]:
        return [Case(s, c) for s in self.sizes for c in self.connections]


def relay_env(cfg: Settings) -> dict[str, str]:
    # All load comes from one loopback address, standing for many fleets' MTAs: the
    # per-client connection cap (default 20) must not count them as one client.
    return {
        "RELAY_MAX_CONNECTIONS_PER_CLIENT": str(2 * max(cfg.connections) + 10),
        "RELAY_PROCESSES": str(cfg.processes),
    }


GC_PROBE = Path(__file__).resolve().parent / "gc_probe"


def gc_probe_env(log: Path | None) -> dict[str, str]:
    """With a log (--gc-pauses): bench/gc_probe leads the relay's PYTHONPATH, and its
    sitecustomize logs each full garbage collection there."""
    if log is None:
        return {}
    path = [str(GC_PROBE), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(path), "BENCH_GC_LOG": str(log)}


def gc_pauses_between(log: Path, start: float, end: float) -> list[float]:
    """The pauses (ms) of the full collections a relay logged between two monotonic times."""
    if not log.exists():
        return []
    pauses = []
    for line in log.read_text().splitlines():
        at, pause = (float(field) for field in line.split())
        if start <= at <= end:
            pauses.append(pause)
    return pauses


async def start_targets(
    cfg: Settings, workdir: Path, stack: AsyncExitStack
) -> tuple[list[Target], list[str]]:
    """Every target up: (ceiling, Postfix, the relays), and the versions of what runs."""
    discard, discard_port = await start_discard(workdir)
    stack.push_async_callback(discard.stop)
    ceiling = Target(CEILING, discard_port, None, discard.proc.pid if discard.proc else None)
    floor_sink = await Sink("floor-sink", workdir, fleet=None).start()
    stack.push_async_callback(floor_sink.stop)
    forward, forward_port = await start_forward(workdir, floor_sink.port)
    stack.push_async_callback(forward.stop)
    pid = forward.proc.pid if forward.proc else None
    floor = Target(FLOOR, forward_port, floor_sink.log, pid)
    sink = await Sink("postfix-sink", workdir, fleet=None).start()
    stack.push_async_callback(sink.stop)
    peer = await PostfixPeer(sink.port).start()
    stack.push_async_callback(peer.stop)
    found, notes = [ceiling, floor, Target(POSTFIX, peer.port, sink.log)], [peer.version()]
    for kind in cfg.databases:
        url = await stack.enter_async_context(scratch_database(kind, workdir, cfg.pg_url))
        gc_log = workdir / f"relay-{kind}.gc" if cfg.gc_pauses else None
        env = relay_env(cfg) | gc_probe_env(gc_log)
        relay = await RelayProcess(f"relay-{kind}", url, workdir, env).start()
        stack.push_async_callback(relay.stop)
        pool = TicketPool(relay, PER_TICKET)
        name, log = f"relay/{kind}", relay.sink.log
        found.append(Target(name, relay.smtp_port, log, relay.pid, pool, gc_log))
        notes.append(await server_version(kind, url))
    return found, notes


async def aliases_for(target: Target, messages: int, connections: int) -> list[str]:
    """Tickets for one phase: a relay's fresh ones; made-up addresses for the others
    (Postfix relays any address from loopback, the ceiling takes anything)."""
    if target.pool is not None:
        return await target.pool.take(messages, at_least=connections)
    count = max(connections, -(-messages // PER_TICKET))
    return [f"ticket-{next(tokens)}-bench@relay.localhost" for _ in range(count)]


async def warm_up(smtp_source_bin: str, target: Target, case: Case, drain_timeout: float) -> None:
    """A few messages first: connection pools, caches and the database's pages get going."""
    count = min(100, 4 * case.connections)
    log = target.arrivals
    aliases = await aliases_for(target, count, case.connections)
    before = log.poll() if log else 0
    load = await smtp_source(
        smtp_source_bin, target.port, plan(aliases, count), case.connections, case.size
    )
    if log is not None:
        await log.wait_for(before + load.accepted, drain_timeout)
        await log.settle(quiet=0.3, timeout=drain_timeout)


async def measure_throughput(
    cfg: Settings, smtp_source_bin: str, case: Case, target: Target, profiled: bool
) -> Result:
    aliases = await aliases_for(target, cfg.messages, case.connections)
    measure = throughput(smtp_source_bin, target, case, aliases, cfg.messages, cfg.drain_timeout)
    if not profiled or cfg.py_spy is None:
        return await measure
    assert target.pid is not None
    async with Profile(target.pid, cfg.py_spy):
        return await measure


async def run_case(
    cfg: Settings, smtp_source_bin: str, case: Case, all_targets: list[Target]
) -> list[Result]:
    results: list[Result] = []
    started = case_began = time.monotonic()
    relays = [t for t in all_targets if t.pool is not None]
    for target in all_targets:
        await warm_up(smtp_source_bin, target, case, cfg.drain_timeout)
        # The headline case, or whatever single case the run was asked for.
        headline = case.key == HEADLINE_CASE or len(cfg.cases) == 1
        profiled = bool(relays) and target is relays[0] and headline
        results.append(await measure_throughput(cfg, smtp_source_bin, case, target, profiled))
        print(
            f"  {case.label:<11} {target.name:<17} {results[-1].e2e_rate:8.1f} msg/s "
            f"end-to-end ({time.monotonic() - started:.0f} s)",
            flush=True,
        )
    for target, result in zip(all_targets, results, strict=True):
        if target.arrivals is None:
            continue
        count = min(cfg.latency_messages, max(20, int(result.e2e_rate / 2 * cfg.latency_seconds)))
        aliases = await aliases_for(target, count, case.connections)
        await measure_latency(target, aliases, result, count, cfg.drain_timeout)
        print(
            f"  {case.label:<11} {target.name:<17} p99 {pct(result.latencies, 0.99):6.1f} ms "
            f"at {result.paced_at:.1f} msg/s ({time.monotonic() - started:.0f} s)",
            flush=True,
        )
    # Each relay's collections from this case's start: the other targets' phases leave it
    # idle, so what it collects then is this case's garbage too.
    ended = time.monotonic()
    for target, result in zip(all_targets, results, strict=True):
        if target.gc_log is not None:
            result.gc_pauses = gc_pauses_between(target.gc_log, case_began, ended)
            print(f"  {case.label:<11} {target.name:<17} {gc_line(result.gc_pauses)}")
    return results


def gc_line(pauses: list[float]) -> str:
    if not pauses:
        return "no full garbage collection"
    return (
        f"{len(pauses)} full garbage collections, longest {max(pauses):.1f} ms, "
        f"{sum(pauses):.1f} ms in all"
    )


# --- the report ------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def rows(results: Sequence[Result]) -> list[list[str]]:
    by_case: dict[Case, dict[str, Result]] = {}
    for r in results:
        by_case.setdefault(r.case, {})[r.target] = r
    out = []
    for r in results:
        peers = by_case[r.case]
        ceiling, postfix, floor = peers.get(CEILING), peers.get(POSTFIX), peers.get(FLOOR)
        relay = r.target.startswith("relay")
        notes = [f"{r.late_sends} late"] if r.late_sends else []
        notes += [f"{len(r.errors)} errors"] if r.errors else []
        if r.arrived < r.accepted:
            notes.append(f"{r.accepted - r.arrived} not arrived")
        out.append(
            [
                r.case.label,
                r.target,
                f"{r.accepted}/{r.messages}",
                f"{r.accept_rate:.0f}",
                f"{r.e2e_rate:.0f}",
                "-" if math.isnan(r.cpu_share) else f"{r.cpu_share:.0%}",
                ratio(r.e2e_rate, ceiling.e2e_rate) if ceiling and r is not ceiling else "",
                ratio(r.e2e_rate, postfix.e2e_rate) if postfix and (relay or r is floor) else "",
                ratio(r.e2e_rate, floor.e2e_rate) if floor and relay else "",
                _ms(r.paced_at) if r.latencies else "-",
                _ms(pct(r.latencies, 0.5)),
                _ms(pct(r.latencies, 0.99)),
                ", ".join(notes),
            ]
        )
    return out


HEADERS = [
    "case (size x conns)",
    "target",
    "accepted",
    "accept/s",
    "end-to-end/s",
    "CPU",
    "vs ceiling",
    "vs Postfix",
    "vs floor",
    "paced at/s",
    "p50 ms",
    "p99 ms",
    "notes",
]


def verdicts(results: Sequence[Result]) -> tuple[list[str], str]:
    """The issue's targets, PASS or MISS per relay; and the headline."""
    index = {(r.case.size, r.case.connections, r.target): r for r in results}
    lines: list[str] = []
    headline: list[str] = []
    relays = sorted({r.target for r in results if r.target.startswith("relay")})
    for relay in relays:
        key = (*HEADLINE_CASE, relay)
        if key in index:
            mine = index[key]
            pf = index[(*HEADLINE_CASE, POSTFIX)].e2e_rate
            cl = index[(*HEADLINE_CASE, CEILING)].e2e_rate
            p99 = pct(mine.latencies, 0.99)
            lines += [
                _check(
                    f"{relay} 2 KB x 20: vs Postfix >= {MIN_VS_POSTFIX_2K}x",
                    mine.e2e_rate / pf,
                    MIN_VS_POSTFIX_2K,
                ),
                _check(
                    f"{relay} 2 KB x 20: vs ceiling >= {MIN_VS_CEILING_2K}x",
                    mine.e2e_rate / cl,
                    MIN_VS_CEILING_2K,
                ),
                _check(
                    f"{relay} 2 KB x 20: p99 250->inbox < {MAX_P99_MS:.0f} ms",
                    -p99,
                    -MAX_P99_MS,
                    shown=f"{p99:.1f} ms",
                ),
            ]
            headline.append(
                f"{relay} {mine.e2e_rate:.0f} msg/s = {mine.e2e_rate / pf:.2f}x Postfix, "
                f"{mine.e2e_rate / cl:.2f}x ceiling, p99 {p99:.0f} ms"
            )
        for (size, conns, target), mine in index.items():
            if target == relay and size >= 100 * 1024:
                pf = index[(size, conns, POSTFIX)].e2e_rate
                lines.append(
                    _check(
                        f"{relay} {mine.case.label}: vs Postfix >= {MIN_VS_POSTFIX_100K}x",
                        mine.e2e_rate / pf,
                        MIN_VS_POSTFIX_100K,
                    )
                )
    floor = index.get((*HEADLINE_CASE, FLOOR))
    if floor is not None:
        pf = index[(*HEADLINE_CASE, POSTFIX)].e2e_rate
        cl = index[(*HEADLINE_CASE, CEILING)].e2e_rate
        lines.append(
            f"  [INFO] floor 2 KB x 20 (aiosmtpd in, aiosmtplib out, nothing stored): "
            f"{floor.e2e_rate / pf:.2f}x Postfix, {floor.e2e_rate / cl:.2f}x ceiling: "
            "no one-process relay on this stack can pass it here"
        )
        headline.append(f"floor {floor.e2e_rate:.0f} msg/s = {floor.e2e_rate / pf:.2f}x Postfix")
    summary = "; ".join(headline) if headline else "no 2 KB x 20 relay case was run"
    return lines, f"throughput 2 KB x 20 connections: {summary}"


def _check(name: str, value: float, bound: float, shown: str | None = None) -> str:
    ok = value >= bound if not math.isnan(value) else False
    return f"  [{'PASS' if ok else 'MISS'}] {name}: {shown or f'{value:.2f}x'}"


async def run(cfg: Settings, keep: bool) -> int:
    smtp_source_bin = require_tool("smtp-source", INSTALL)
    require_tool("postfix", INSTALL)
    workdir = Path(tempfile.mkdtemp(prefix="relay-throughput-"))
    results: list[Result] = []
    began = time.monotonic()
    try:
        async with AsyncExitStack() as stack:
            all_targets, notes = await start_targets(cfg, workdir, stack)
            print(
                f"throughput: {', '.join(notes)}; {cfg.messages} messages a case, "
                f"at most {PER_TICKET} to a ticket; relay settings changed: "
                + ", ".join(f"{k}={v}" for k, v in relay_env(cfg).items())
                + f"; work directory {workdir}",
                flush=True,
            )
            for case in cfg.cases:
                results += await run_case(cfg, smtp_source_bin, case, all_targets)
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(table(HEADERS, rows(results)))
    for r in results:
        for error in dict.fromkeys(r.errors):
            print(f"  {r.case.label} {r.target}: {error}")
    if cfg.py_spy and cfg.py_spy.exists():
        print("\n".join(summarise(cfg.py_spy)))
    for r in results:
        if r.gc_pauses is not None:
            print(f"  {r.case.label} {r.target} (--gc-pauses): {gc_line(r.gc_pauses)}")
    checks, headline = verdicts(results)
    print(f"targets (elapsed {time.monotonic() - began:.0f} s):")
    print("\n".join(checks))
    print(headline)
    return 0


def parse(argv: list[str] | None = None) -> tuple[Settings, bool]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, help="per case and target (2000)")
    parser.add_argument(
        "--latency-messages",
        type=int,
        help="paced messages per case and target, at most (1000)",
    )
    parser.add_argument(
        "--latency-seconds",
        type=float,
        help="seconds the paced phase may last, at most (20)",
    )
    parser.add_argument("--sizes", type=ints, default=[2048, 102400], help="bytes, comma-separated")
    parser.add_argument("--connections", type=ints, default=[1, 20])
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument(
        "--pg-url", default=DEFAULT_PG, help="a server to CREATE/DROP the run's own database on"
    )
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument(
        "--py-spy",
        type=Path,
        help="profile the first relay in 2 KB x 20 (or the run's only case) to FILE",
    )
    parser.add_argument(
        "--processes", type=int, default=1, help="relay processes (RELAY_PROCESSES), e.g. cores"
    )
    parser.add_argument(
        "--gc-pauses",
        action="store_true",
        help="log the relays' full garbage collections (bench/gc_probe) and report their pauses",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for development")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    full, quick = (2000, 1000, 20.0), (60, 30, 3.0)
    for name, value in zip(SIZED, quick if args.quick else full, strict=True):
        if getattr(args, name) is None:  # an explicit flag wins over --quick
            setattr(args, name, value)
    cfg = Settings(
        messages=args.messages,
        latency_messages=args.latency_messages,
        latency_seconds=args.latency_seconds,
        sizes=args.sizes,
        connections=args.connections,
        databases=[d for d in args.databases.split(",") if d],
        pg_url=args.pg_url,
        drain_timeout=args.drain_timeout,
        py_spy=args.py_spy.resolve() if args.py_spy else None,
        processes=args.processes,
    )
    cfg.gc_pauses = args.gc_pauses
    return cfg, args.keep


def main(argv: list[str] | None = None) -> int:
    cfg, keep = parse(argv)
    return run_main(run(cfg, keep))


if __name__ == "__main__":
    sys.exit(main())

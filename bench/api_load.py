"""HTTP API load: ticket creation against a bare insert ceiling, and history pages at scale.

    .venv/bin/python bench/api_load.py                    # full: 20 s a point, 1 000 000 tickets
    .venv/bin/python bench/api_load.py --tickets 200000   # a smaller history table
    .venv/bin/python bench/api_load.py --quick            # a minute, for development
      [--concurrency 16,64] [--duration 20] [--databases sqlite,postgresql]
      [--pg-url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres] [--skip-create]
      [--skip-history] [--py-spy FILE] [--processes N]

The load generator is `wrk` (`apt-get install -y wrk`): C, one thread, closed loop, each
connection sending its next request when the last one is answered; it reports p50/p99 of
those request times.

Creation: `POST /v1/support/demand/trips/{partnerTripId}/tickets` (the API has no POST
/v1/support/tickets; this is the creating route) with a 1 KB comment, rotating over 500
trips of one partner, against `support-relay serve` (all roles: the worker emails each
ticket to a sink in another process, as in production). So that a long run is not refused,
the open-ticket limits are raised for the run (RELAY_MAX_OPEN_TICKETS_PER_TRIP and
_PER_PARTNER = 1 000 000); every request still counts them. Ceiling, in the same run and
alternating with the relay: a bare Starlette app (in this file) whose one endpoint parses
the same JSON and inserts one row through SQLModel, on an engine from the relay's own
`storage.db.make_engine` (same SQLite pragmas), served by uvicorn as the relay serves it.
Each target has a fresh database of its own.

History: `bench/history_plan.py`'s loader fills a fresh database (the measured partner owns
60 % of the tickets), then `GET /v1/support/tickets` (default: 50 a page, newest first) is
timed through the relay at concurrency 1 (the page's own latency) and 16.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import uvicorn
from sqlmodel import Field, SQLModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench.common import created, ints
from bench.crash import Child
from bench.harness import (
    DEFAULT_PG,
    RelayProcess,
    child_env,
    create_accounts,
    put_trips,
    ratio,
    require_tool,
    run_main,
    scratch_database,
    server_version,
    table,
)
from bench.history_plan import analyze, load
from bench.pyspy import Profile, summarise
from bench.servers import SERVER_READY
from bench.wrk import WrkResult, create_script, get_script, wrk
from relay.sink import free_port
from storage.db import make_engine, make_sessions
from storage.migrate import upgrade

TRIPS = 500
COMMENT = ("The passenger left a blue umbrella in the back seat. " * 20)[:1024]
LIMITS = {
    "RELAY_MAX_OPEN_TICKETS_PER_TRIP": "1000000",
    "RELAY_MAX_OPEN_TICKETS_PER_PARTNER": "1000000",
}
HISTORY_PARTNER = 1  # history_plan's measured partner
MIN_VS_BARE, MAX_CREATE_P99_MS, MAX_HISTORY_P99_MS = 0.5, 25.0, 20.0


# --- the ceiling: a bare insert app, run as a child process --------------------------------


class BenchTicket(SQLModel, table=True):
    __tablename__ = "bench_ticket"

    id: int | None = Field(default=None, primary_key=True)
    subject: str
    comment: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


def bare_app(database_url: str) -> Starlette:
    engine = make_engine(database_url)
    sessions = make_sessions(engine)

    async def create(request: Request) -> Response:
        body = await request.json()
        row = BenchTicket(subject=str(body["subject"]), comment=str(body["comment"]))
        async with sessions() as session:
            session.add(row)
            await session.commit()
        return JSONResponse({"id": row.id, "subject": row.subject}, status_code=201)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with engine.begin() as conn:
            rows = SQLModel.metadata.tables["bench_ticket"]
            await conn.run_sync(lambda sync: rows.create(sync, checkfirst=True))
        yield
        await engine.dispose()

    return Starlette(routes=[Route("/tickets", create, methods=["POST"])], lifespan=lifespan)


async def serve_bare(port: int, database_url: str) -> None:
    # As api/server.py configures the relay's uvicorn.
    config = uvicorn.Config(
        bare_app(database_url),
        host="127.0.0.1",
        port=port,
        lifespan="on",
        log_level="warning",
        access_log=False,
        server_header=False,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    print(SERVER_READY, flush=True)
    await serving


async def start_bare(database_url: str, workdir: Path) -> tuple[Child, int]:
    port = free_port()
    argv = [sys.executable, str(Path(__file__).resolve()), "--bare-app", str(port), database_url]
    child = Child("bare", lambda _: argv, child_env(), workdir, SERVER_READY)
    await child.start()
    return child, port


# --- ticket creation --------------------------------------------------------------------------


@dataclass(frozen=True)
class CreatePoint:
    database: str
    concurrency: int
    relay: WrkResult
    bare: WrkResult


async def create_load(
    kind: str, cfg: Settings, workdir: Path, stack: AsyncExitStack
) -> list[CreatePoint]:
    relay_url = await stack.enter_async_context(scratch_database(kind, workdir, cfg.pg_url))
    bare_url = await stack.enter_async_context(scratch_database(kind, workdir, cfg.pg_url))
    env = {**LIMITS, "RELAY_PROCESSES": str(cfg.processes)}
    relay = await RelayProcess(f"relay-{kind}", relay_url, workdir, env).start()
    stack.push_async_callback(relay.stop)
    bare, bare_port = await start_bare(bare_url, workdir)
    stack.push_async_callback(bare.stop)
    assert bare.proc is not None
    bare_pid = bare.proc.pid
    async with httpx.AsyncClient(base_url=relay.base_url, timeout=30) as http:
        _, key, fleet_id = await create_accounts(http, relay)
        await put_trips(http, key, fleet_id, [f"LOAD-{n}" for n in range(TRIPS)])
    relay_script = create_script("/v1/support/demand/trips/LOAD-%d/tickets", TRIPS, key, COMMENT)
    bare_script = create_script("/tickets?%d", 1, None, COMMENT)
    points = []
    for conns in cfg.concurrency:
        # Warm both up, then measure them in turn: the machine's noise hits both alike.
        await wrk(f"http://127.0.0.1:{bare_port}", bare_script, conns, 2, workdir)
        await wrk(relay.base_url, relay_script, conns, 2, workdir)
        bare_url = f"http://127.0.0.1:{bare_port}"
        b = await wrk(bare_url, bare_script, conns, cfg.duration, workdir, bare_pid)
        measure = wrk(relay.base_url, relay_script, conns, cfg.duration, workdir, relay.pid)
        if cfg.py_spy is not None and not points:
            async with Profile(relay.pid, cfg.py_spy):
                r = await measure
        else:
            r = await measure
        points.append(CreatePoint(kind, conns, r, b))
        print(
            f"  create {kind:<10} c={conns:<3} relay {r.rate:7.1f}/s p99 {r.p99_ms:6.1f} ms   "
            f"bare {b.rate:7.1f}/s p99 {b.p99_ms:6.1f} ms",
            flush=True,
        )
    return points


# --- history ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryPoint:
    database: str
    tickets: int
    partner_tickets: int
    load_seconds: float
    concurrency: int
    result: WrkResult


async def fill(url: str, tickets: int, seed: int) -> tuple[int, float]:
    """Migrate and bulk-load: (the measured partner's tickets, seconds taken)."""
    engine = make_engine(url)
    try:
        began = time.perf_counter()
        await upgrade(engine)
        data = await load(engine, tickets, seed)
        await analyze(engine)
        return data.partner_tickets, time.perf_counter() - began
    finally:
        await engine.dispose()


async def history_load(
    kind: str, cfg: Settings, workdir: Path, stack: AsyncExitStack
) -> list[HistoryPoint]:
    url = await stack.enter_async_context(scratch_database(kind, workdir, cfg.pg_url))
    print(f"  history {kind}: loading {cfg.tickets:,} tickets", flush=True)
    partner_tickets, seconds = await fill(url, cfg.tickets, cfg.seed)
    print(f"  history {kind}: loaded in {seconds:.0f} s", flush=True)
    env = {"RELAY_PROCESSES": str(cfg.processes)}
    relay = await RelayProcess(f"history-{kind}", url, workdir, env, migrate=False).start()
    stack.push_async_callback(relay.stop)
    async with httpx.AsyncClient(base_url=relay.base_url, timeout=30) as http:
        url_keys = f"/v1/admin/partners/{HISTORY_PARTNER}/keys"
        key = str(created(await http.post(url_keys, headers=relay.admin()))["apiKey"])
    script = get_script("/v1/support/tickets", key)
    await wrk(relay.base_url, script, 1, 2, workdir)
    points = []
    for conns in (1, 16):
        result = await wrk(relay.base_url, script, conns, cfg.duration, workdir, relay.pid)
        points.append(HistoryPoint(kind, cfg.tickets, partner_tickets, seconds, conns, result))
        print(
            f"  history {kind:<10} c={conns:<3} {result.rate:7.1f} pages/s "
            f"p50 {result.p50_ms:6.1f} ms p99 {result.p99_ms:6.1f} ms",
            flush=True,
        )
    return points


# --- the run and its report -----------------------------------------------------------------


@dataclass
class Settings:
    concurrency: list[int]
    duration: float
    databases: list[str]
    pg_url: str
    tickets: int
    seed: int
    create: bool
    history: bool
    py_spy: Path | None = None
    processes: int = 1


def _share(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0%}"


def create_rows(points: Sequence[CreatePoint]) -> list[list[str]]:
    return [
        [
            p.database,
            str(p.concurrency),
            f"{p.relay.rate:.0f}",
            f"{p.relay.p50_ms:.1f}",
            f"{p.relay.p99_ms:.1f}",
            _share(p.relay.cpu_share),
            f"{p.bare.rate:.0f}",
            f"{p.bare.p50_ms:.1f}",
            f"{p.bare.p99_ms:.1f}",
            _share(p.bare.cpu_share),
            ratio(p.relay.rate, p.bare.rate),
            f"{p.relay.errors}/{p.bare.errors}",
        ]
        for p in points
    ]


CREATE_HEADERS = [
    "database",
    "conns",
    "relay req/s",
    "relay p50 ms",
    "relay p99 ms",
    "relay CPU",
    "bare req/s",
    "bare p50 ms",
    "bare p99 ms",
    "bare CPU",
    "relay/bare",
    "errors relay/bare",
]


def history_rows(points: Sequence[HistoryPoint]) -> list[list[str]]:
    return [
        [
            p.database,
            f"{p.tickets:,}",
            f"{p.partner_tickets:,}",
            f"{p.load_seconds:.0f}",
            str(p.concurrency),
            f"{p.result.rate:.0f}",
            f"{p.result.p50_ms:.1f}",
            f"{p.result.p99_ms:.1f}",
            _share(p.result.cpu_share),
            str(p.result.errors),
        ]
        for p in points
    ]


HISTORY_HEADERS = [
    "database",
    "tickets",
    "partner's",
    "load s",
    "conns",
    "pages/s",
    "p50 ms",
    "p99 ms",
    "relay CPU",
    "errors",
]


def verdicts(
    creates: Sequence[CreatePoint], pages: Sequence[HistoryPoint]
) -> tuple[list[str], str]:
    lines, headline = [], []
    for p in creates:
        if p.concurrency != 16:
            continue
        share = p.relay.rate / p.bare.rate if p.bare.rate else 0.0
        lines.append(
            _check(
                f"create {p.database} c=16: relay/bare >= {MIN_VS_BARE}",
                share >= MIN_VS_BARE,
                f"{share:.2f}x",
            )
        )
        lines.append(
            _check(
                f"create {p.database} c=16: p99 < {MAX_CREATE_P99_MS:.0f} ms",
                p.relay.p99_ms < MAX_CREATE_P99_MS,
                f"{p.relay.p99_ms:.1f} ms",
            )
        )
        headline.append(f"create c=16 {p.database} {share:.2f}x bare, p99 {p.relay.p99_ms:.0f} ms")
    for h in pages:
        if h.concurrency != 1:
            continue
        ok = h.result.p99_ms < MAX_HISTORY_P99_MS
        scale = "" if h.tickets >= 1_000_000 else f" (at {h.tickets:,}, the target is at 1,000,000)"
        lines.append(
            _check(
                f"history {h.database}: page p99 < {MAX_HISTORY_P99_MS:.0f} ms{scale}",
                ok,
                f"{h.result.p99_ms:.1f} ms",
            )
        )
        headline.append(
            f"history c=1 {h.database} p99 {h.result.p99_ms:.1f} ms at {h.tickets:,} tickets"
        )
    return lines, "api load: " + "; ".join(headline)


def _check(name: str, ok: bool, shown: str) -> str:
    return f"  [{'PASS' if ok else 'MISS'}] {name}: {shown}"


async def run(cfg: Settings, keep: bool) -> int:
    require_tool("wrk", "apt-get install -y wrk")
    workdir = Path(tempfile.mkdtemp(prefix="relay-api-load-"))
    creates: list[CreatePoint] = []
    pages: list[HistoryPoint] = []
    began = time.monotonic()
    try:
        notes = [await server_version(kind, cfg.pg_url) for kind in cfg.databases]
        for kind in cfg.databases:
            async with AsyncExitStack() as stack:
                if cfg.create:
                    creates += await create_load(kind, cfg, workdir, stack)
            async with AsyncExitStack() as stack:
                if cfg.history:
                    pages += await history_load(kind, cfg, workdir, stack)
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\napi load: {', '.join(notes)}; {cfg.duration:.0f} s a point, wrk -t1")
    if creates:
        print(f"ticket creation, 1 KB comment:\n{table(CREATE_HEADERS, create_rows(creates))}")
    if pages:
        print("history, GET /v1/support/tickets (50 a page):")
        print(table(HISTORY_HEADERS, history_rows(pages)))
    if cfg.py_spy and cfg.py_spy.exists():
        print("\n".join(summarise(cfg.py_spy)))
    checks, headline = verdicts(creates, pages)
    print(f"targets (elapsed {time.monotonic() - began:.0f} s):")
    print("\n".join(checks))
    print(headline)
    return 0


def parse(argv: list[str] | None) -> tuple[Settings, bool]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=ints, default=[16, 64])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds a point")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--tickets", type=int, default=1_000_000, help="history table size")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-create", action="store_true")
    parser.add_argument("--skip-history", action="store_true")
    parser.add_argument(
        "--py-spy", type=Path, help="profile the relay's first creation point to FILE"
    )
    parser.add_argument(
        "--processes", type=int, default=1, help="relay processes (RELAY_PROCESSES), e.g. cores"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for development")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--bare-app", nargs=2, metavar=("PORT", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare_app:
        run_main(serve_bare(int(args.bare_app[0]), args.bare_app[1]))
        sys.exit(0)
    if args.quick:
        args.duration, args.tickets = 3.0, 20_000
    return Settings(
        concurrency=args.concurrency,
        duration=args.duration,
        databases=[d for d in args.databases.split(",") if d],
        pg_url=args.pg_url,
        tickets=args.tickets,
        seed=args.seed,
        create=not args.skip_create,
        history=not args.skip_history,
        py_spy=args.py_spy.resolve() if args.py_spy else None,
        processes=args.processes,
    ), args.keep


def main(argv: list[str] | None = None) -> int:
    cfg, keep = parse(argv)
    return run_main(run(cfg, keep))


if __name__ == "__main__":
    sys.exit(main())

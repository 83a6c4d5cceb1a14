"""Ticket history at scale: bulk-load tickets, check each query shape uses indexes, time it."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import accumulate, islice
from typing import Any

from sqlalchemy import event, insert, literal
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.views import page_summaries
from bench.common import pct, postgres_schema
from storage.catalog import category_family
from storage.db import SessionFactory, make_engine, make_sessions
from storage.history import SortKey, TicketFilter, search_tickets
from storage.migrate import upgrade
from storage.models import Ticket
from storage.trips import trip_by_partner_id

PAGE = 50  # the API's default page size
BATCH = 10_000
MEASURED = 1  # the partner whose history is queried
# The measured partner is the biggest: its range is the longest to walk and its filter the
# least selective, which is when a planner is likeliest to give up the partner index.
PARTNER_SHARES = ((1, 60), (2, 25), (3, 15))
FLEETS = 12
DAYS = 730
WARMUP = 5
MIN_RUNS = 20
WORK = {"sqlite": "VM steps", "postgresql": "rows read"}
BIG_TABLES = ("ticket", "ticket_tag", "trip")  # a full scan of any of these is a failure
PARTNER_INDEXES = (
    "ix_ticket_partner_created",
    "ix_ticket_partner_updated",
    "ix_ticket_partner_status_created",
)
TRIP_INDEX = "ix_ticket_trip_id"
TICKET_INDEXES = (*PARTNER_INDEXES, TRIP_INDEX, "ix_ticket_category_id", "ticket_pkey")

CATEGORIES = {
    "Billing": ["Refund", "Double charge", "Invoice"],
    "Driver": ["Late arrival", "No-show", "Driver conduct"],
    "Vehicle": ["Cleanliness", "Wrong vehicle"],
    "Lost property": ["Item found", "Item missing"],
    "Booking": ["Booking change", "Cancellation"],
    "Safety": ["Accident", "Safety complaint"],
}
TAGS = (
    "vip airport corporate repeat escalated refund-requested night child-seat wheelchair "
    "long-distance rail hotel event weather traffic app-bug payment voucher group pet "
    "luggage language press legal insurance police lost-and-found sla-breach callback survey"
).split()
WORDS = (
    "driver late pickup airport refund charged twice lost phone vehicle dirty wrong address "
    "cancelled no-show waiting receipt invoice route detour luggage child seat booking change "
    "passenger complaint rude air conditioning flight delayed hotel station meeting point "
    "payment failed tip price quote extra stop toll parking fee rating feedback smell smoking "
    "accident damage umbrella wallet keys bag laptop message callback"
).split()
NEEDLE = "wallet"  # the subject-substring shape: a word from the rare end of the list
STATUSES = (("closed", 70), ("open", 20), ("processing", 10))
PRIORITIES = (("low", 25), ("medium", 50), ("high", 20), ("urgent", 5))
TAGS_PER_TICKET = ((0, 40), (1, 30), (2, 20), (3, 10))

Row = dict[str, Any]
Statement = tuple[str, tuple[Any, ...]]


@dataclass(frozen=True)
class Dataset:
    tickets: int
    partner_tickets: int
    trips: int
    trip_id: str  # the measured partner's newest ticket's trip
    partner_trip_id: str
    category_id: int  # a parent with subcategories: the filter takes the whole family
    category_name: str
    tag: tuple[int, str]
    tag_pair: tuple[tuple[int, str], tuple[int, str]]
    window: tuple[datetime, datetime]
    partner_ids: list[int]  # the measured partner's ticket ids, for the primary-key baseline


def _draw(rng: random.Random, pairs: Sequence[tuple[Any, float]], k: int) -> list[Any]:
    return rng.choices([v for v, _ in pairs], weights=[w for _, w in pairs], k=k)


def _uuid(rng: random.Random) -> str:
    # Seeded, unlike uuid4(), so a run with the same --seed loads the same data.
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


async def _insert(conn: AsyncConnection, table: str, rows: Sequence[Row]) -> None:
    """Core executemany in batches, a transaction each: no ORM objects, no per-row round trips.
    Every row must name the same columns: executemany takes them from the first."""
    target = SQLModel.metadata.tables[table]
    for at in range(0, len(rows), BATCH):
        await conn.execute(insert(target), list(rows[at : at + BATCH]))
        await conn.commit()


def _catalog_rows(start: datetime) -> tuple[list[Row], list[tuple[int | None, float]]]:
    """Categories (parents before children, for the foreign key) and how often each is used."""
    rows: list[Row] = []
    usage: list[tuple[int | None, float]] = []
    for parent, children in CATEGORIES.items():
        parent_id = len(rows) + 1
        rows.append({"id": parent_id, "name": parent, "parent_id": None, "created_at": start})
        usage.append((parent_id, 1))
        for child in children:
            rows.append(
                {"id": len(rows) + 1, "name": child, "parent_id": parent_id, "created_at": start}
            )
            usage.append((len(rows), 2))  # a subcategory is chosen more often than its parent
    usage.append((None, sum(w for _, w in usage) / 9))  # a tenth are never categorised
    return rows, usage


@dataclass
class TicketMaker:
    """Tickets oldest first, so ids grow with created_at as autoincrement makes them."""

    rng: random.Random
    n: int
    start: datetime
    now: datetime
    trips: dict[int, list[tuple[str, str, int]]]  # partner → (trip id, partner trip id, fleet)
    category_usage: list[tuple[int | None, float]]
    measured_ids: list[int] = field(default_factory=list)
    newest_trip: tuple[str, str, int] | None = None

    def rows(self) -> Iterator[tuple[Row, list[Row]]]:
        rng, n = self.rng, self.n
        span = (self.now - self.start).total_seconds()
        offsets = sorted(rng.uniform(0, span) for _ in range(n))
        owners = _draw(rng, PARTNER_SHARES, n)
        statuses = _draw(rng, STATUSES, n)
        priorities = _draw(rng, PRIORITIES, n)
        categories = _draw(rng, self.category_usage, n)
        tag_counts = _draw(rng, TAGS_PER_TICKET, n)
        tag_ids = range(1, len(TAGS) + 1)
        tag_weights = list(accumulate(1 / rank for rank in tag_ids))  # a few tags dominate
        word_weights = list(accumulate(1 / rank**0.7 for rank in range(1, len(WORDS) + 1)))
        for i in range(n):
            ticket_id, owner, status = i + 1, owners[i], statuses[i]
            trip = rng.choice(self.trips[owner])
            created = self.start + timedelta(seconds=offsets[i])
            updated = min(self.now, created + timedelta(hours=rng.expovariate(1 / 48)))
            words = rng.choices(WORDS, cum_weights=word_weights, k=rng.randint(3, 7))
            tags: set[int] = set()
            while len(tags) < tag_counts[i]:
                tags.update(rng.choices(tag_ids, cum_weights=tag_weights))
            if owner == MEASURED:
                self.measured_ids.append(ticket_id)
                self.newest_trip = trip
            ticket = {
                "id": ticket_id,
                "partner_id": owner,
                "trip_id": trip[0],
                "fleet_id": trip[2],
                "subject": " ".join(words).capitalize(),
                "contact_email": f"ops@partner{owner}.example",
                "status": status,
                "category_id": categories[i],
                "priority": priorities[i],
                "created_at": created,
                "updated_at": updated,
                "closed_at": updated if status == "closed" else None,
            }
            yield ticket, [{"ticket_id": ticket_id, "tag_id": t} for t in sorted(tags)]


async def load(engine: AsyncEngine, n: int, seed: int) -> Dataset:
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=DAYS)
    partners = [p for p, _ in PARTNER_SHARES]
    categories, category_usage = _catalog_rows(start)
    trips: dict[int, list[tuple[str, str, int]]] = {p: [] for p in partners}
    trip_rows: list[Row] = []
    for p, share in PARTNER_SHARES:
        for k in range(max(1, n * share // 500)):  # a fifth as many trips as tickets
            trip = (_uuid(rng), f"P{p}-{k:07d}", rng.randint(1, FLEETS))
            trips[p].append(trip)
            scheduled = start + timedelta(seconds=rng.uniform(0, DAYS * 86400))
            trip_rows.append(
                {
                    "id": trip[0],
                    "partner_id": p,
                    "partner_trip_id": trip[1],
                    "fleet_id": trip[2],
                    "pickup": f"{rng.randint(1, 200)} Harbour Road",
                    "dropoff": "Terminal 2",
                    "scheduled_at": scheduled,
                    "created_at": scheduled - timedelta(days=1),
                    "updated_at": scheduled,
                }
            )
    maker = TicketMaker(rng, n, start, now, trips, category_usage)
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            # This connection only (its engine is disposed after loading): a big page cache
            # keeps the random-keyed trip_id index off the disk. The timed engine is untouched.
            await conn.exec_driver_sql("PRAGMA cache_size=-262144")
            await conn.commit()
        await _insert(
            conn,
            "partner",
            [
                {
                    "id": p,
                    "name": f"Partner {p}",
                    "contact_email": f"ops@partner{p}.example",
                    "allowed_senders": [],
                    "created_at": start,
                }
                for p in partners
            ],
        )
        await _insert(
            conn,
            "fleet",
            [
                {
                    "id": f,
                    "name": f"Fleet {f}",
                    "support_email": f"dispatch@fleet{f}.example",
                    "allowed_senders": [],
                    "created_at": start,
                }
                for f in range(1, FLEETS + 1)
            ],
        )
        await _insert(conn, "category", categories)
        await _insert(
            conn,
            "tag",
            [
                {"id": i, "name": name.title(), "keyword": name, "created_at": start}
                for i, name in enumerate(TAGS, 1)
            ],
        )
        await _insert(conn, "trip", trip_rows)
        made = maker.rows()
        while chunk := list(islice(made, BATCH * 5)):
            # Tags right after their tickets (foreign keys); chunks bound the memory held.
            await _insert(conn, "ticket", [ticket for ticket, _ in chunk])
            await _insert(conn, "ticket_tag", [tag for _, tags in chunk for tag in tags])
            print(f"  loaded {chunk[-1][0]['id']:,} tickets", file=sys.stderr, flush=True)
    assert maker.newest_trip is not None
    return Dataset(
        tickets=n,
        partner_tickets=len(maker.measured_ids),
        trips=len(trip_rows),
        trip_id=maker.newest_trip[0],
        partner_trip_id=maker.newest_trip[1],
        category_id=1,
        category_name=next(iter(CATEGORIES)),
        tag=(4, TAGS[3]),
        tag_pair=((2, TAGS[1]), (6, TAGS[5])),
        window=(now - timedelta(days=230), now - timedelta(days=200)),
        partner_ids=maker.measured_ids,
    )


async def analyze(engine: AsyncEngine) -> None:
    """Planner statistics, as a production database has them after its first autovacuum."""
    if engine.dialect.name == "sqlite":
        async with engine.begin() as conn:
            await conn.exec_driver_sql("ANALYZE")
        return
    async with engine.connect() as conn:
        auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
        # VACUUM too: right after a bulk load the visibility map is empty, which makes index-only
        # scans look dear; a live table has been vacuumed. Only this schema's tables.
        await auto.exec_driver_sql(
            "VACUUM (ANALYZE) partner, fleet, trip, category, tag, ticket, ticket_tag"
        )


Resolver = Callable[[AsyncSession], Awaitable[TicketFilter]]


@dataclass(frozen=True)
class Shape:
    name: str
    resolve: Resolver  # the handler's filter step: query parameters → TicketFilter
    sort: SortKey = "-created"
    # The filter pins one trip: its few tickets may be sorted, but must be found by trip_id.
    trip: bool = False
    # A substring filter no index serves: walking the partner's range is expected.
    scans_range: bool = False
    after: tuple[datetime, int] | None = None
    page1_work: int | None = None  # on deep pages: what page 1 cost, to compare
    matches: str = ""


def fixed(filters: TicketFilter) -> Resolver:
    async def resolve(_session: AsyncSession) -> TicketFilter:
        return filters

    return resolve


def shapes(d: Dataset) -> list[Shape]:
    async def family(session: AsyncSession) -> TicketFilter:
        return TicketFilter(category_ids=await category_family(session, d.category_id))

    async def partner_trip(session: AsyncSession) -> TicketFilter:
        trip = await trip_by_partner_id(session, MEASURED, d.partner_trip_id)
        if trip is None:
            raise RuntimeError(f"trip {d.partner_trip_id} was not loaded")
        return TicketFilter(trip_id=trip.id)

    (tag_a, name_a), (tag_b, name_b) = d.tag_pair
    window = TicketFilter(created_after=d.window[0], created_before=d.window[1])
    return [
        Shape("no filter", fixed(TicketFilter())),
        Shape("status=open", fixed(TicketFilter(status="open"))),
        Shape(f"category={d.category_name} (+subcategories)", family),
        Shape("priority=urgent", fixed(TicketFilter(priority="urgent"))),
        Shape(f"tag={d.tag[1]}", fixed(TicketFilter(tag_ids=(d.tag[0],)))),
        Shape(f"tag={name_a}&tag={name_b}", fixed(TicketFilter(tag_ids=(tag_a, tag_b)))),
        Shape("tripId", fixed(TicketFilter(trip_id=d.trip_id)), trip=True),
        Shape("partnerTripId", partner_trip, trip=True),
        Shape("createdAfter+createdBefore (30 days)", fixed(window)),
        Shape("sort=-updated", fixed(TicketFilter()), sort="-updated"),
        Shape("sort=updated", fixed(TicketFilter()), sort="updated"),
        Shape("sort=created", fixed(TicketFilter()), sort="created"),
        Shape(f"subject~{NEEDLE}", fixed(TicketFilter(subject=NEEDLE)), scans_range=True),
    ]


class Capture:
    """Records the SELECTs the driver is handed, with their bound parameters."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.log: list[Statement] | None = None
        event.listen(engine.sync_engine, "before_cursor_execute", self._record)

    @contextmanager
    def recording(self) -> Iterator[list[Statement]]:
        log: list[Statement] = []
        self.log = log
        try:
            yield log
        finally:
            self.log = None

    def _record(
        self, _conn: Any, _cursor: Any, statement: str, params: Any, _ctx: Any, _many: bool
    ) -> None:
        if self.log is not None and statement.lstrip().upper().startswith("SELECT"):
            self.log.append((statement, tuple(params or ())))


async def page_statements(
    sessions: SessionFactory, capture: Capture, shape: Shape
) -> tuple[list[Statement], Statement, list[Statement]]:
    """What one page sends: (filter lookups, the history query, the page's rendering)."""
    async with sessions() as session:
        with capture.recording() as lookups:
            filters = await shape.resolve(session)
        with capture.recording() as history:
            page = await search_tickets(
                session, MEASURED, filters, sort=shape.sort, limit=PAGE, after=shape.after
            )
        with capture.recording() as rendering:
            await page_summaries(session, page)
    return lookups, history[-1], rendering


@dataclass(frozen=True)
class Verdict:
    problems: list[str]
    lines: list[str]


def _shape_problems(shape: Shape, *, via_partner: bool, via_trip: bool) -> list[str]:
    if shape.trip and not via_trip:
        return [f"one trip's tickets are not found through {TRIP_INDEX}"]
    if not shape.trip and not via_partner:
        return ["the partner filter is not an index condition"]
    return []


def judge_sqlite(rows: Sequence[Sequence[Any]], shape: Shape | None) -> Verdict:
    depth: dict[int, int] = {}
    lines: list[str] = []
    for node, parent, _, detail in rows:
        depth[node] = depth.get(parent, -1) + 1
        lines.append("  " * depth[node] + str(detail))
    details = [str(r[3]) for r in rows]
    problems = [
        f"full scan: {d}" for d in details if re.match(r"SCAN (ticket_tag|ticket|trip)\b", d)
    ]
    reach = [d for d in details if re.match(r"SEARCH ticket\b", d)]
    access = reach[0] if reach else ""
    if shape is None:
        return Verdict(problems, lines)
    via_trip = f"INDEX {TRIP_INDEX} " in access
    if "USE TEMP B-TREE FOR ORDER BY" in details and not (shape.trip and via_trip):
        problems.append("rows are sorted in a temp B-tree instead of read in index order")
    via_partner = "partner_id=" in access
    problems += _shape_problems(shape, via_partner=via_partner, via_trip=via_trip)
    return Verdict(problems, lines)


def _pg_nodes(plan: dict[str, Any], depth: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
    yield depth, plan
    for child in plan.get("Plans", []):
        yield from _pg_nodes(child, depth + 1)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _pg_line(depth: int, node: dict[str, Any]) -> str:
    text = node["Node Type"]
    if node.get("Scan Direction") == "Backward":
        text += " Backward"
    if "Index Name" in node:
        text += f" using {node['Index Name']}"
    if "Relation Name" in node:
        text += f" on {node['Relation Name']}"
    if "Index Cond" in node:
        text += f" cond {_short(node['Index Cond'], 90)}"
    if "Sort Key" in node:
        text += f" by {', '.join(node['Sort Key'])}"
    if "Filter" in node:
        text += f" filter {_short(node['Filter'], 60)}"
    return "  " * depth + f"{text} (rows≈{node['Plan Rows']:,})"


def _reads_tickets(node: dict[str, Any]) -> bool:
    return any(
        n.get("Relation Name") == "ticket" or n.get("Index Name") in TICKET_INDEXES
        for _, n in _pg_nodes(node)
    )


def judge_pg(plan: dict[str, Any], shape: Shape | None, sort_limit: int) -> Verdict:
    nodes = list(_pg_nodes(plan))
    lines = [_pg_line(depth, node) for depth, node in nodes]
    problems: list[str] = []
    reach: list[str] = []
    for _, node in nodes:
        kind, relation, index = node["Node Type"], node.get("Relation Name"), node.get("Index Name")
        if kind == "Seq Scan" and relation in BIG_TABLES:
            problems.append(f"full scan: Seq Scan on {relation}")
        if kind.startswith("Index") and relation in BIG_TABLES and "Index Cond" not in node:
            problems.append(f"full scan: all of {index} read")
        if index in TICKET_INDEXES and "Index Cond" in node:
            reach.append(f"{index} {node['Index Cond']}")
        if shape is not None and kind == "Sort" and _reads_tickets(node):
            rows = int(node["Plans"][0]["Plan Rows"])
            # A few hundred rows found through a selective index (a trip, two tags) are cheap
            # to sort; sorting a partner's whole range to return 50 of it is not.
            if rows > sort_limit and not shape.trip:
                problems.append(f"Sort node over ≈{rows:,} tickets (more than {sort_limit:,})")
    if shape is None:
        return Verdict(problems, lines)
    via_partner = any(r.split()[0] in PARTNER_INDEXES and "partner_id" in r for r in reach)
    # Reached through another selective index (the two-tag join) and sorted cheaply: fine too.
    narrowed = bool(reach) and not problems
    via_trip = any(r.startswith(TRIP_INDEX) for r in reach)
    problems += _shape_problems(shape, via_partner=via_partner or narrowed, via_trip=via_trip)
    return Verdict(problems, lines)


def _pg_literal(value: Any) -> str:
    # EXECUTE's arguments are SQL text; the statement's own casts give each literal its type.
    if isinstance(value, bool) or not isinstance(value, int | str | datetime):
        raise TypeError(f"no SQL literal for {value!r}")
    if isinstance(value, int):
        return str(value)
    text = value.isoformat() if isinstance(value, datetime) else value
    return "'" + text.replace("'", "''") + "'"


def _plan_json(raw: Any) -> dict[str, Any]:
    doc = json.loads(raw) if isinstance(raw, str) else raw
    plan: dict[str, Any] = doc[0]["Plan"]
    return plan


async def explain(
    engine: AsyncEngine, statement: Statement, shape: Shape | None, sort_limit: int
) -> list[Verdict]:
    """The plan for these parameter values and, on PostgreSQL, the generic plan too: asyncpg
    runs prepared statements, and after five runs the server may switch to the generic one."""
    sql, params = statement
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = (await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)).all()
            return [judge_sqlite(rows, shape)]
        raw = (await conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + sql, params)).scalar_one()
        custom = judge_pg(_plan_json(raw), shape, sort_limit)
        await conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        await conn.exec_driver_sql(f"PREPARE bench_history AS {sql}")
        try:
            args = ", ".join(_pg_literal(p) for p in params)
            explained = f"EXPLAIN (FORMAT JSON) EXECUTE bench_history({args})"
            raw = (await conn.exec_driver_sql(explained)).scalar_one()
        finally:
            await conn.exec_driver_sql("DEALLOCATE bench_history")
            await conn.exec_driver_sql("RESET plan_cache_mode")
        generic = judge_pg(_plan_json(raw), shape, sort_limit)
        return [custom] if generic.lines == custom.lines else [custom, generic]


def _sqlite_steps(path: str, statement: Statement) -> int:
    """Virtual-machine instructions one run of the statement takes, counted by the hundred:
    the work of a query, unlike its time, does not depend on what else the machine runs."""
    steps = 0

    def tick() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        conn.set_progress_handler(tick, 100)
        conn.execute(*statement).fetchall()
    finally:
        conn.close()
    return steps * 100


async def work(engine: AsyncEngine, statement: Statement) -> int:
    """What one run costs, machine-independently: SQLite VM steps; PostgreSQL rows read from
    tickets and their tags (returned, or read and dropped by a filter), from EXPLAIN ANALYZE."""
    if engine.dialect.name == "sqlite":
        path = engine.url.database
        assert path is not None
        return await asyncio.to_thread(_sqlite_steps, path, statement)
    sql, params = statement
    async with engine.connect() as conn:
        analyzed = f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}"
        plan = _plan_json((await conn.exec_driver_sql(analyzed, params)).scalar_one())
    return sum(
        (
            node.get("Actual Rows", 0)
            + node.get("Rows Removed by Filter", 0)
            + node.get("Rows Removed by Index Recheck", 0)
        )
        * node.get("Actual Loops", 1)
        for _, node in _pg_nodes(plan)
        if node.get("Relation Name") in BIG_TABLES
    )


def show(verdicts: Sequence[Verdict], heading: str = "") -> None:
    """One statement's plans (custom, then generic if it differs) and what is wrong with them."""
    if heading:
        print(f"  {heading}:")
    for n, verdict in enumerate(verdicts):
        if n == 1:
            print("  its generic plan (a prepared statement may switch to it after five runs):")
        for line in verdict.lines:
            print(f"    {line}")
    for problem in dict.fromkeys(p for v in verdicts for p in v.problems):
        print(f"  ! {problem}")


async def check_shape(
    engine: AsyncEngine, sessions: SessionFactory, capture: Capture, shape: Shape, sort_limit: int
) -> tuple[bool, int]:
    """Explain the shape's statements and print their plans: (passed, the history query's cost)."""
    lookups, history, _ = await page_statements(sessions, capture, shape)
    verdicts = await explain(engine, history, shape, sort_limit)
    found = [await explain(engine, statement, None, 0) for statement in lookups]
    cost = await work(engine, history)
    sqlite = engine.dialect.name == "sqlite"
    if shape.page1_work is not None and cost > 2 * shape.page1_work + (2000 if sqlite else 200):
        # A keyset page should cost what page 1 does. Much more means the cursor is only a
        # row filter, not an index bound: the page reads every row before it.
        walk = (
            f"the cursor is not an index bound: this page costs {cost:,} against page 1's "
            f"{shape.page1_work:,} ({WORK[engine.dialect.name]}), walking the rows before it"
        )
        verdicts[0] = replace(verdicts[0], problems=[*verdicts[0].problems, walk])
    ok = not any(v.problems for v in verdicts + [v for vs in found for v in vs])
    label = "PASS" if ok else "FAIL"
    if ok and shape.scans_range:
        label += ": walks the partner's range filtering the subject, as expected"
    print(f"\n[{label}] {shape.name}{shape.matches}")
    show(verdicts)
    for lookup in found:
        show(lookup, "its filter's lookup")
    return ok, cost


async def check_rendering(
    engine: AsyncEngine, sessions: SessionFactory, capture: Capture, shape: Shape
) -> bool:
    """The page's trips, categories and tags, each fetched by id for the whole page at once."""
    _, _, rendering = await page_statements(sessions, capture, shape)
    found = [await explain(engine, statement, None, 0) for statement in rendering]
    ok = not any(v.problems for vs in found for v in vs)
    print(f"\n[{'PASS' if ok else 'FAIL'}] rendering a page: trips, categories, tags by id")
    for query in found:
        show(query, "query")
    return ok


async def with_deep_page(sessions: SessionFactory, shape: Shape, depth: int) -> list[Shape]:
    """The shape, and again at a cursor `depth` rows in (halfway into a shorter result)."""
    async with sessions() as session:
        filters = await shape.resolve(session)
        page = await search_tickets(session, MEASURED, filters, sort=shape.sort, limit=depth)
    found = f"{len(page.tickets):,}{'+' if page.next_cursor else ''}"
    first = replace(shape, matches=f" ({found} match)")
    if page.next_cursor is None and len(page.tickets) <= 8 * PAGE:
        return [first]
    cursor, at = page.next_cursor, len(page.tickets)
    if cursor is None:
        at //= 2
        row = page.tickets[at - 1]
        assert row.id is not None
        cursor = (row.updated_at if shape.sort.endswith("updated") else row.created_at, row.id)
    return [first, replace(shape, name=f"{shape.name} · after row {at:,}", after=cursor)]


async def fetch_page(sessions: SessionFactory, shape: Shape) -> int:
    """What GET /v1/support/tickets does once the partner is known, minus HTTP and JSON."""
    async with sessions() as session:
        filters = await shape.resolve(session)
        page = await search_tickets(
            session, MEASURED, filters, sort=shape.sort, limit=PAGE, after=shape.after
        )
        return len(await page_summaries(session, page))


async def _clock(run: Callable[[], Awaitable[object]]) -> float:
    began = time.perf_counter()
    await run()
    return (time.perf_counter() - began) * 1000


async def timed(
    run: Callable[[], Awaitable[object]],
    baseline: Callable[[], Awaitable[object]],
    runs: int,
    budget: float,
) -> tuple[list[float], list[float]]:
    """Alternates `run` with `baseline`, so both see the same load on a shared machine."""
    for _ in range(WARMUP):
        await run()
        await baseline()
    mine: list[float] = []
    theirs: list[float] = []
    deadline = time.perf_counter() + budget
    while len(mine) < runs and (len(mine) < MIN_RUNS or time.perf_counter() < deadline):
        mine.append(await _clock(run))
        theirs.append(await _clock(baseline))
    return mine, theirs


@asynccontextmanager
async def scratch(url: str | None, tmp: str) -> AsyncIterator[tuple[str, str | None]]:
    """A fresh database: a SQLite file in `tmp`, or a PostgreSQL schema dropped at the end."""
    if url is None:
        yield f"sqlite+aiosqlite:///{tmp}/history.db", None
        return
    if url.startswith("sqlite"):
        yield url, None
        return
    async with postgres_schema(url, "bench_history") as schema:
        yield url, schema


async def server_version(engine: AsyncEngine) -> str:
    if engine.dialect.name == "sqlite":
        return f"SQLite {sqlite3.sqlite_version}"
    async with engine.connect() as conn:
        version = (await conn.exec_driver_sql("SHOW server_version")).scalar_one()
    return f"PostgreSQL {version}"


async def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="history-plan-") as tmp:
        async with scratch(args.database_url, tmp) as (url, schema):
            loader = make_engine(url, schema)
            try:
                await upgrade(loader)
                began = time.perf_counter()
                data = await load(loader, args.tickets, args.seed)
                loaded = time.perf_counter() - began
                began = time.perf_counter()
                await analyze(loader)
                analyzed = time.perf_counter() - began
            finally:
                await loader.dispose()
            # A fresh engine, configured exactly as the relay's, for everything measured.
            engine = make_engine(url, schema)
            try:
                print(f"history plan: {await server_version(engine)}")
                print(
                    f"loaded {data.tickets:,} tickets in {loaded:.0f} s (+ {analyzed:.0f} s "
                    f"ANALYZE): partners {'/'.join(f'{s}%' for _, s in PARTNER_SHARES)}, the "
                    f"measured partner {MEASURED} owns {data.partner_tickets:,}; "
                    f"{data.trips:,} trips, {len(TAGS)} tags, "
                    f"{sum(1 + len(c) for c in CATEGORIES.values())} categories"
                )
                return await report(args, engine, data)
            finally:
                await engine.dispose()


@dataclass(frozen=True)
class Checked:
    shape: Shape
    ok: bool
    work: int  # the history query's, in the dialect's WORK unit


async def report(args: argparse.Namespace, engine: AsyncEngine, data: Dataset) -> int:
    sessions = make_sessions(engine)
    capture = Capture(engine)
    sort_limit = max(1000, data.tickets // 100)
    depth = max(8 * PAGE, min(data.partner_tickets // 2, args.deep_rows))
    print(f"plans (a deep page starts {depth:,} rows in; a Sort may take ≤ {sort_limit:,} rows)")
    checked: list[Checked] = []
    for base in shapes(data):
        page1, *deep = await with_deep_page(sessions, base, depth)
        ok, cost = await check_shape(engine, sessions, capture, page1, sort_limit)
        checked.append(Checked(page1, ok, cost))
        for shape in deep:
            shape = replace(shape, page1_work=cost)
            checked.append(
                Checked(shape, *await check_shape(engine, sessions, capture, shape, sort_limit))
            )
    rendering_ok = await check_rendering(engine, sessions, capture, checked[0].shape)

    rng = random.Random(args.seed)

    async def select_one() -> None:
        async with sessions() as session:
            (await session.exec(select(literal(1)))).one()

    async def by_key() -> None:
        ids = rng.sample(data.partner_ids, PAGE)
        async with sessions() as session:
            list((await session.exec(select(Ticket).where(col(Ticket.id).in_(ids)))).all())

    one, pk = await timed(select_one, by_key, args.runs, args.budget)
    timings: list[tuple[Checked, list[float], list[float]]] = []
    for check in checked:

        async def page(shape: Shape = check.shape) -> None:
            await fetch_page(sessions, shape)

        timings.append((check, *await timed(page, by_key, args.runs, args.budget)))
    pk += [ms for *_, theirs in timings for ms in theirs]

    print(f"\ntimings per page of {PAGE}: search_tickets + page_summaries in one session")
    print(
        f"  SELECT 1 round trip:        p50 {pct(one, 0.5):6.2f} ms  p99 {pct(one, 0.99):6.2f} ms"
    )
    print(
        f"  {PAGE} tickets by primary key: p50 {pct(pk, 0.5):6.2f} ms  p99 {pct(pk, 0.99):6.2f} ms"
    )
    print("  the PK fetch alternates with each shape's pages; a shape's ratio is to its own")
    unit = WORK[engine.dialect.name]
    width = max(len(check.shape.name) for check, *_ in timings)
    print(f"  {'shape':<{width}}  plan  {'p50 ms':>7}  {'p99 ms':>7}  p50/PK  {unit:>10}  runs")
    for check, mine, theirs in timings:
        p50, p99 = pct(mine, 0.5), pct(mine, 0.99)
        ratio = p50 / pct(theirs, 0.5)
        figures = f"{p50:7.2f}  {p99:7.2f}  {ratio:5.1f}x  {check.work:>10,}  {len(mine):>4}"
        print(f"  {check.shape.name:<{width}}  {'PASS' if check.ok else 'FAIL'}  {figures}")
    passed = sum(check.ok for check, *_ in timings)
    _, mine, theirs = max(timings, key=lambda t: pct(t[1], 0.99))
    worst = pct(mine, 0.99)
    # p99 against p99: the worst page's tail against the tail of the PK fetches run beside it.
    print(
        f"history plan: {passed}/{len(timings)} shapes use indexes; worst p99 {worst:.1f} ms "
        f"({worst / pct(theirs, 0.99):.1f}x the {PAGE}-row PK fetch)"
    )
    return 0 if passed == len(timings) and rendering_ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument(
        "--database-url",
        help="default: a temporary SQLite file; postgresql+asyncpg://… runs in a scratch schema",
    )
    parser.add_argument("--runs", type=int, default=200, help="timed page fetches per shape")
    parser.add_argument("--budget", type=float, default=10.0, help="seconds per shape, at most")
    parser.add_argument("--deep-rows", type=int, default=20_000, help="where a deep page starts")
    parser.add_argument("--seed", type=int, default=1)
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()

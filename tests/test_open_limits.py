"""Open-ticket limits: per trip and per partner, enforced under concurrency too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.lifecycle import CLOSED, STATUSES
from storage.db import make_engine
from storage.history import _OPEN_COUNTS, OPEN_STATUSES
from storage.migrate import upgrade
from tests.conftest import Database
from tests.harness import FLEET_INBOX, Accounts, LiveRelay, live_relay
from tests.test_api import assert_problem, second_partner

TICKET = {"subject": "Lost umbrella", "comment": "A blue umbrella was left in the car."}


@pytest.fixture
async def limited(database: Database) -> AsyncIterator[LiveRelay]:
    async with live_relay(
        database.url,
        database.schema,
        max_open_tickets_per_trip=2,
        max_open_tickets_per_partner=3,
    ) as relay:
        yield relay


async def _open(live: LiveRelay, acc: Accounts, trip: str, **body: Any) -> httpx.Response:
    return await live.http.post(
        f"/v1/support/demand/trips/{trip}/tickets", headers=acc.auth, json={**TICKET, **body}
    )


async def _status(live: LiveRelay, acc: Accounts, ticket_id: int, status: str) -> httpx.Response:
    return await live.http.patch(
        f"/v1/support/tickets/{ticket_id}", headers=acc.auth, json={"status": status}
    )


def _assert_limit(response: httpx.Response, limit: int, scope: str) -> None:
    body = assert_problem(response, 409)
    assert body["limit"] == limit and body["limitScope"] == scope, body
    assert str(limit) in body["detail"] and "limit" in body["detail"].lower()


async def _count(live: LiveRelay, acc: Accounts, **params: str) -> int:
    response = await live.http.get(
        "/v1/support/tickets", headers=acc.auth, params={"limit": "200", **params}
    )
    assert response.status_code == 200, response.text
    return len(response.json()["tickets"])


async def test_per_trip_limit_and_closing_makes_room(limited: LiveRelay) -> None:
    live = limited
    acc = await live.accounts()
    await live.put_trip(acc, "BK-1")
    first = await live.open_ticket(acc, "BK-1")
    second = await live.open_ticket(acc, "BK-1")
    _assert_limit(await _open(live, acc, "BK-1"), 2, "trip")
    # "processing" is still open for the limit.
    assert (await _status(live, acc, first["id"], "processing")).status_code == 200
    _assert_limit(await _open(live, acc, "BK-1"), 2, "trip")
    # The other create path counts the same tickets.
    trip = (await live.http.get("/v1/trips/BK-1", headers=acc.auth)).json()
    by_uuid = await live.http.post(
        f"/v1/support/trips/{trip['id']}/tickets", headers=acc.auth, json=TICKET
    )
    _assert_limit(by_uuid, 2, "trip")
    assert await _count(live, acc) == 2
    await live.sink.handler.wait_for(FLEET_INBOX, count=2)

    closed = await _status(live, acc, second["id"], "closed")
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    third = await _open(live, acc, "BK-1")
    assert third.status_code == 201, third.text
    _assert_limit(await _open(live, acc, "BK-1"), 2, "trip")
    # Refused tickets were never mailed: two opened, one closed notice, one more opened.
    await live.sink.handler.wait_for(FLEET_INBOX, count=4)
    await asyncio.sleep(0.5)
    assert len(live.sink.handler.for_rcpt(FLEET_INBOX)) == 4
    assert await _count(live, acc) == 3


async def test_per_partner_limit_across_trips(limited: LiveRelay) -> None:
    live = limited
    acc = await live.accounts()
    other = await second_partner(live, acc, "desk@other.example")
    for trip in ("BK-1", "BK-2", "BK-3"):
        await live.put_trip(acc, trip)
    await live.put_trip(other, "OT-1")
    await live.open_ticket(acc, "BK-1")
    await live.open_ticket(acc, "BK-1")
    last = await live.open_ticket(acc, "BK-2")
    _assert_limit(await _open(live, acc, "BK-3"), 3, "partner")
    _assert_limit(await _open(live, acc, "BK-2"), 3, "partner")
    # On a trip that is itself full, the trip's limit is the one named.
    _assert_limit(await _open(live, acc, "BK-1"), 2, "trip")
    # Another partner's count is its own.
    assert (await _open(live, other, "OT-1")).status_code == 201
    assert (await _open(live, other, "OT-1")).status_code == 201

    assert (await _status(live, acc, last["id"], "closed")).status_code == 200
    assert (await _open(live, acc, "BK-3")).status_code == 201
    _assert_limit(await _open(live, acc, "BK-2"), 3, "partner")
    assert await _count(live, acc, status="open") == 3


async def test_reopening_counts_against_the_limit(limited: LiveRelay) -> None:
    live = limited
    acc = await live.accounts()
    await live.put_trip(acc, "BK-1")
    await live.put_trip(acc, "BK-2")
    first = await live.open_ticket(acc, "BK-1")
    assert (await _status(live, acc, first["id"], "closed")).status_code == 200
    await live.open_ticket(acc, "BK-1")
    await live.open_ticket(acc, "BK-1")

    # BK-1 is full: reopening the closed ticket would make three open on it.
    refused = await _status(live, acc, first["id"], "open")
    _assert_limit(refused, 2, "trip")
    detail = await live.ticket(acc, first["id"])
    assert detail["status"] == "closed"
    assert [
        e["detail"]["to"] for e in detail["events"] if e["kind"] == "ticket.status_changed"
    ] == ["closed"]

    # With room on the trip but the partner at its cap, the partner limit applies.
    third = await live.open_ticket(acc, "BK-2")
    assert (await _status(live, acc, third["id"], "closed")).status_code == 200
    await live.open_ticket(acc, "BK-2")  # 3 open now: BK-1 ×2, BK-2 ×1
    _assert_limit(await _status(live, acc, third["id"], "open"), 3, "partner")

    # Once there is room, the reopen goes through.
    listed = await live.http.get(
        "/v1/support/tickets", headers=acc.auth, params={"partnerTripId": "BK-1", "status": "open"}
    )
    victim = listed.json()["tickets"][0]["id"]
    assert (await _status(live, acc, victim, "closed")).status_code == 200
    reopened = await _status(live, acc, first["id"], "open")
    assert reopened.status_code == 200, reopened.text
    assert reopened.json()["status"] == "open"


async def test_concurrent_creates_on_one_trip_respect_the_limit(limited: LiveRelay) -> None:
    live = limited
    acc = await live.accounts()
    await live.put_trip(acc, "BK-1")
    responses = await asyncio.gather(*(_open(live, acc, "BK-1") for _ in range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 201, 409, 409, 409, 409], [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            _assert_limit(response, 2, "trip")
    assert await _count(live, acc) == 2
    await live.sink.handler.wait_for(FLEET_INBOX, count=2)
    await asyncio.sleep(0.5)
    assert len(live.sink.handler.for_rcpt(FLEET_INBOX)) == 2


async def test_concurrent_creates_across_trips_respect_the_partner_limit(
    limited: LiveRelay,
) -> None:
    live = limited
    acc = await live.accounts()
    trips = [f"BK-{i}" for i in range(6)]
    for trip in trips:
        await live.put_trip(acc, trip)
    responses = await asyncio.gather(*(_open(live, acc, trip) for trip in trips))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * 3 + [409] * 3, [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            _assert_limit(response, 3, "partner")
    assert await _count(live, acc) == 3


async def test_order_sessions_count_against_the_limit(limited: LiveRelay) -> None:
    live = limited
    acc = await live.accounts()
    await live.put_trip(acc, "BK-1")
    await live.open_ticket(acc, "BK-1")
    await live.open_ticket(acc, "BK-1")
    # An open session exists (the newest open ticket): POST returns it rather than a new one.
    existing = await live.http.post("/v1/support/orders/BK-1", headers=acc.auth)
    assert existing.status_code == 200
    closed_one = existing.json()["ticketId"]
    assert (await _status(live, acc, closed_one, "closed")).status_code == 200
    # The other ticket is still open, so the session is that one.
    current = await live.http.post("/v1/support/orders/BK-1", headers=acc.auth)
    assert current.status_code == 200 and current.json()["ticketId"] != closed_one
    await live.put_trip(acc, "BK-2")
    await live.open_ticket(acc, "BK-2")
    await live.open_ticket(acc, "BK-2")
    await live.put_trip(acc, "BK-3")
    _assert_limit(await live.http.post("/v1/support/orders/BK-3", headers=acc.auth), 3, "partner")
    assert_problem(await live.http.get("/v1/support/orders/BK-3", headers=acc.auth), 404)


def test_the_open_count_knows_every_status_but_closed() -> None:
    assert set(OPEN_STATUSES) == set(STATUSES) - {CLOSED}


async def test_the_open_count_reads_the_trips_tickets_and_the_partners_open_ones_only(
    tmp_path: Path,
) -> None:
    """Its cost follows the partner's open tickets, not its history: the trip's own index,
    and the partner's open statuses in the covering index (on SQLite, without statistics,
    the one-pass count walked every ticket of the partner and read each one's row)."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'plan.db'}")
    try:
        await upgrade(engine)
        plan = _OPEN_COUNTS._plan(engine.dialect, None, False)
        arguments = plan.arguments({"partner_id": 1, "trip_id": "t-1"})
        async with engine.connect() as conn:
            found = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + plan.sql, arguments)
            steps = [row[3] for row in found]
    finally:
        await engine.dispose()
    searches = [step for step in steps if "ticket" in step]
    assert searches == [
        "SEARCH ticket USING INDEX ix_ticket_trip_id (trip_id=?)",
        "SEARCH ticket USING COVERING INDEX ix_ticket_partner_status_created"
        " (partner_id=? AND status=?)",
    ], steps

"""The ticket history (`GET /v1/support/tickets`): filters, sorting, limits and cursors."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx

from tests.harness import Accounts, LiveRelay
from tests.test_api import invalid_names, second_partner

HISTORY = "/v1/support/tickets"
Params = Mapping[str, str] | Sequence[tuple[str, str]]


async def _get(live: LiveRelay, acc: Accounts, params: Params) -> httpx.Response:
    items = params.items() if isinstance(params, Mapping) else params
    pairs: list[tuple[str, str | int | float | bool | None]] = [(k, v) for k, v in items]
    return await live.http.get(HISTORY, headers=acc.auth, params=pairs)


async def _ids(live: LiveRelay, acc: Accounts, params: Params) -> list[int]:
    """The ids on the one and only page these parameters give."""
    response = await _get(live, acc, params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["nextCursor"] is None, params
    return [t["id"] for t in body["tickets"]]


def _when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


@dataclass
class World:
    acc: Accounts
    other: Accounts
    trips: dict[str, Any]
    cats: dict[str, int]
    tags: dict[str, int]
    t: dict[str, Any]  # the tickets by a short name
    theirs: Any


async def _world(live: LiveRelay) -> World:
    """Four tickets of one partner, one of another partner that matches every filter."""
    acc = await live.accounts()
    other = await second_partner(live, acc, "desk@other.example")
    trips = {p: await live.put_trip(acc, p) for p in ("BK-1", "BK-2")}
    await live.put_trip(other, "OT-1")
    lost = (await live.add_category("Lost item"))["id"]
    phone = (await live.add_category("Phone", parentId=lost))["id"]
    billing = (await live.add_category("Billing"))["id"]
    vip = (await live.add_tag("VIP", "vip"))["id"]
    airport = (await live.add_tag("Airport", "airport"))["id"]
    t: dict[str, Any] = {}
    t["umbrella"] = await live.open_ticket(
        acc, "BK-1", subject="Lost umbrella", category=lost, priority="high", tags=[vip]
    )
    t["phone"] = await live.open_ticket(
        acc,
        "BK-1",
        subject="Phone left 100% charged",
        category=phone,
        priority="low",
        tags=[vip, airport],
    )
    t["invoice"] = await live.open_ticket(
        acc, "BK-2", subject="Invoice_2026 missing", category=billing, tags=[airport]
    )
    t["wallet"] = await live.open_ticket(acc, "BK-2", subject="LOST wallet", priority="urgent")
    closed = await live.http.patch(
        f"{HISTORY}/{t['wallet']['id']}", headers=acc.auth, json={"status": "closed"}
    )
    assert closed.status_code == 200, closed.text
    t["wallet"] = closed.json()
    theirs = await live.open_ticket(
        other,
        "OT-1",
        subject="Lost umbrella 100% Invoice_2026",
        category=lost,
        priority="high",
        tags=[vip, airport],
    )
    return World(
        acc,
        other,
        trips,
        {"lost": lost, "phone": phone, "billing": billing},
        {"vip": vip, "airport": airport},
        t,
        theirs,
    )


async def test_filters_by_status_category_priority_and_tags(live: LiveRelay) -> None:
    w = await _world(live)
    acc, t = w.acc, w.t
    umbrella, phone, invoice, wallet = (
        t[k]["id"] for k in ("umbrella", "phone", "invoice", "wallet")
    )

    assert await _ids(live, acc, {}) == [wallet, invoice, phone, umbrella]
    assert await _ids(live, acc, {"status": "open"}) == [invoice, phone, umbrella]
    assert await _ids(live, acc, {"status": "closed"}) == [wallet]
    assert await _ids(live, acc, {"status": "processing"}) == []
    # A parent category also finds its subcategories' tickets; a child only its own.
    assert await _ids(live, acc, {"category": str(w.cats["lost"])}) == [phone, umbrella]
    assert await _ids(live, acc, {"category": str(w.cats["phone"])}) == [phone]
    assert await _ids(live, acc, {"category": str(w.cats["billing"])}) == [invoice]
    assert await _ids(live, acc, {"category": "987654"}) == []
    assert await _ids(live, acc, {"priority": "urgent"}) == [wallet]
    assert await _ids(live, acc, {"priority": "medium"}) == [invoice]
    # Several tag parameters: tickets with all of them.
    vip, airport = str(w.tags["vip"]), str(w.tags["airport"])
    assert await _ids(live, acc, [("tag", vip)]) == [phone, umbrella]
    assert await _ids(live, acc, [("tag", airport)]) == [invoice, phone]
    assert await _ids(live, acc, [("tag", vip), ("tag", airport)]) == [phone]
    assert await _ids(live, acc, [("tag", "987654")]) == []
    # Filters combine.
    combined = {"status": "open", "category": str(w.cats["lost"]), "priority": "high"}
    assert await _ids(live, acc, combined) == [umbrella]
    assert await _ids(live, acc, [("status", "open"), ("tag", airport), ("priority", "low")]) == [
        phone
    ]

    # The other partner matches every one of these filters, and sees only its own ticket.
    assert await _ids(live, w.other, {}) == [w.theirs["id"]]
    theirs_filtered = [("category", str(w.cats["phone"])), ("tag", vip)]
    assert await _ids(live, w.other, theirs_filtered) == []


async def test_subject_is_a_case_insensitive_literal_substring(live: LiveRelay) -> None:
    w = await _world(live)
    acc, t = w.acc, w.t
    umbrella, phone, invoice, wallet = (
        t[k]["id"] for k in ("umbrella", "phone", "invoice", "wallet")
    )
    assert await _ids(live, acc, {"subject": "lost"}) == [wallet, umbrella]
    assert await _ids(live, acc, {"subject": "LoSt UmBrElLa"}) == [umbrella]
    assert await _ids(live, acc, {"subject": "ALLET"}) == [wallet]
    # % and _ are the characters themselves, not LIKE wildcards.
    assert await _ids(live, acc, {"subject": "%"}) == [phone]
    assert await _ids(live, acc, {"subject": "100%"}) == [phone]
    assert await _ids(live, acc, {"subject": "_"}) == [invoice]
    assert await _ids(live, acc, {"subject": "e_2"}) == [invoice]
    assert await _ids(live, acc, {"subject": "L%t"}) == []
    assert await _ids(live, acc, {"subject": "l_st"}) == []
    assert await _ids(live, acc, {"subject": "\\"}) == []
    assert await _ids(live, acc, {"subject": "nothing like it"}) == []
    assert list(invalid_names(await _get(live, acc, {"subject": ""}))) == ["subject"]
    assert list(invalid_names(await _get(live, acc, {"subject": "x" * 501}))) == ["subject"]


async def test_subject_filter_folds_case_beyond_ascii(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    ticket = await live.open_ticket(acc, subject="Ärger mit dem Fahrer")
    for needle in ("Ärger", "ärger", "ÄRGER"):
        assert await _ids(live, acc, {"subject": needle}) == [ticket["id"]], needle


async def test_trip_filters(live: LiveRelay) -> None:
    w = await _world(live)
    acc, t = w.acc, w.t
    umbrella, phone, invoice, wallet = (
        t[k]["id"] for k in ("umbrella", "phone", "invoice", "wallet")
    )
    bk1, bk2 = w.trips["BK-1"]["id"], w.trips["BK-2"]["id"]
    assert await _ids(live, acc, {"tripId": bk1}) == [phone, umbrella]
    assert await _ids(live, acc, {"partnerTripId": "BK-2"}) == [wallet, invoice]
    assert await _ids(live, acc, {"partnerTripId": "BK-2", "tripId": bk2}) == [wallet, invoice]
    assert await _ids(live, acc, {"partnerTripId": "BK-2", "tripId": bk1}) == []
    assert await _ids(live, acc, {"partnerTripId": "BK-1", "status": "closed"}) == []
    # Unknown, or another partner's, trip: an empty list rather than an error.
    unknown = await _get(live, acc, {"partnerTripId": "BK-404"})
    assert unknown.status_code == 200 and unknown.json() == {"tickets": [], "nextCursor": None}
    assert await _ids(live, acc, {"partnerTripId": "OT-1"}) == []
    assert await _ids(live, acc, {"tripId": w.theirs["tripId"]}) == []
    assert await _ids(live, acc, {"tripId": "00000000-0000-0000-0000-000000000000"}) == []
    assert list(invalid_names(await _get(live, acc, {"tripId": "x" * 37}))) == ["tripId"]


async def test_time_window_filters(live: LiveRelay) -> None:
    w = await _world(live)
    acc, t = w.acc, w.t
    umbrella, phone, invoice, wallet = (
        t[k]["id"] for k in ("umbrella", "phone", "invoice", "wallet")
    )
    pivot = t["phone"]["createdAt"]
    # Strict bounds, given in UTC or in any other offset.
    assert await _ids(live, acc, {"createdAfter": pivot}) == [wallet, invoice]
    assert await _ids(live, acc, {"createdBefore": pivot}) == [umbrella]
    shifted = _when(pivot).astimezone(timezone(timedelta(hours=2))).isoformat()
    assert shifted.endswith("+02:00")
    assert await _ids(live, acc, {"createdAfter": shifted}) == [wallet, invoice]
    west = _when(pivot).astimezone(timezone(timedelta(hours=-5, minutes=-30))).isoformat()
    assert await _ids(live, acc, {"createdBefore": west}) == [umbrella]
    window = {"createdAfter": t["umbrella"]["createdAt"], "createdBefore": t["wallet"]["createdAt"]}
    assert await _ids(live, acc, window) == [invoice, phone]
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert await _ids(live, acc, {"createdAfter": future}) == []
    assert len(await _ids(live, acc, {"createdBefore": future})) == 4

    # Touch the oldest ticket: it alone is updated after the newest ticket's last update.
    mark = (await live.ticket(acc, wallet))["updatedAt"]
    await asyncio.sleep(0.01)
    patched = await live.http.patch(
        f"{HISTORY}/{umbrella}", headers=acc.auth, json={"priority": "low"}
    )
    assert patched.status_code == 200, patched.text
    assert await _ids(live, acc, {"updatedAfter": mark}) == [umbrella]
    assert await _ids(live, acc, {"updatedBefore": mark}) == [invoice, phone]
    assert await _ids(live, acc, {"updatedAfter": mark, "createdAfter": pivot}) == []

    for name in ("createdAfter", "createdBefore", "updatedAfter", "updatedBefore"):
        for bad in ("2026-01-01T00:00:00", "2026-01-01", "yesterday", "1700000000x"):
            assert list(invalid_names(await _get(live, acc, {name: bad}))) == [name], (name, bad)


async def test_sort_orders(live: LiveRelay) -> None:
    w = await _world(live)
    acc, t = w.acc, w.t
    umbrella, phone, invoice, wallet = (
        t[k]["id"] for k in ("umbrella", "phone", "invoice", "wallet")
    )
    newest_first = [wallet, invoice, phone, umbrella]
    assert await _ids(live, acc, {}) == newest_first
    assert await _ids(live, acc, {"sort": "-created"}) == newest_first
    assert await _ids(live, acc, {"sort": "created"}) == newest_first[::-1]

    # Updating the invoice ticket makes it the most recently updated one.
    await asyncio.sleep(0.01)
    patched = await live.http.patch(
        f"{HISTORY}/{invoice}", headers=acc.auth, json={"priority": "high"}
    )
    assert patched.status_code == 200, patched.text
    # The wallet ticket was updated when it was closed, after the invoice ticket was created.
    assert await _ids(live, acc, {"sort": "-updated"}) == [invoice, wallet, phone, umbrella]
    assert await _ids(live, acc, {"sort": "updated"}) == [umbrella, phone, wallet, invoice]
    assert await _ids(live, acc, {"sort": "-created"}) == newest_first
    listed = (await _get(live, acc, {"sort": "-updated"})).json()["tickets"]
    stamps = [_when(x["updatedAt"]) for x in listed]
    assert stamps == sorted(stamps, reverse=True)

    for bad in ("newest", "+created", "Created", "-id", ""):
        assert list(invalid_names(await _get(live, acc, {"sort": bad}))) == ["sort"], bad


async def test_limit_defaults_to_50_and_is_bounded(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    ids = [(await live.open_ticket(acc, subject=f"T{i}"))["id"] for i in range(52)]
    first = await _get(live, acc, {})
    assert first.status_code == 200
    body = first.json()
    assert [x["id"] for x in body["tickets"]] == ids[::-1][:50]
    assert isinstance(body["nextCursor"], str)
    rest = await _get(live, acc, {"cursor": body["nextCursor"]})
    assert [x["id"] for x in rest.json()["tickets"]] == ids[::-1][50:]
    assert rest.json()["nextCursor"] is None
    assert await _ids(live, acc, {"limit": "200"}) == ids[::-1]
    one = (await _get(live, acc, {"limit": "1"})).json()
    assert [x["id"] for x in one["tickets"]] == [ids[-1]] and one["nextCursor"]
    for bad in ("0", "201", "x", "-1", "1e2", ""):
        assert list(invalid_names(await _get(live, acc, {"limit": bad}))) == ["limit"], bad


async def _walk(
    live: LiveRelay, acc: Accounts, params: dict[str, str], between: Any = None
) -> tuple[list[int], int]:
    """Every page from the first to the last; `between` runs before each later page."""
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await _get(live, acc, query)
        assert response.status_code == 200, response.text
        body = response.json()
        seen += [x["id"] for x in body["tickets"]]
        pages += 1
        cursor = body["nextCursor"]
        assert pages < 50
        if cursor is None:
            return seen, pages
        assert isinstance(cursor, str) and cursor
        if between is not None:
            await between(pages)


async def test_cursor_walk_sees_every_ticket_once_while_tickets_arrive(live: LiveRelay) -> None:
    acc = await live.accounts()
    other = await second_partner(live, acc, "desk@other.example")
    await live.put_trip(acc)
    await live.put_trip(other, "OT-1")
    original = [(await live.open_ticket(acc, subject=f"T{i}"))["id"] for i in range(5)]
    late: list[int] = []

    async def arrive(page: int) -> None:
        late.append((await live.open_ticket(acc, subject=f"late {page}"))["id"])
        await live.open_ticket(other, "OT-1", subject=f"theirs {page}")

    # Newest first: tickets created meanwhile are newer than the cursor and never appear.
    seen, pages = await _walk(live, acc, {"limit": "2"}, arrive)
    assert seen == original[::-1] and pages == 3
    # Oldest first: the walk goes on into the tickets that arrived, each exactly once.
    late.clear()
    seen, pages = await _walk(live, acc, {"limit": "3", "sort": "created"}, arrive)
    everything = await _ids(live, acc, {"sort": "created", "limit": "200"})
    assert seen == everything and len(set(seen)) == len(seen)
    assert seen[:5] == original and set(late) <= set(seen) and late
    # Filters hold on every page; the page size may change between pages.
    filtered, _ = await _walk(live, acc, {"limit": "1", "subject": "late"})
    assert filtered == await _ids(live, acc, {"subject": "late", "limit": "200"})
    assert len(filtered) == 2 + len(late) and set(late) <= set(filtered)
    first = (await _get(live, acc, {"limit": "2"})).json()
    wider = await _get(live, acc, {"limit": "5", "cursor": first["nextCursor"]})
    assert wider.status_code == 200
    assert [x["id"] for x in wider.json()["tickets"]] == everything[::-1][2:7]
    assert len(everything) >= 7


async def test_cursor_belongs_to_its_filters_and_sort(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    for i in range(3):
        await live.open_ticket(acc, subject=f"T{i}")
    made = await _get(live, acc, {"limit": "1", "status": "open"})
    cursor = made.json()["nextCursor"]
    assert isinstance(cursor, str)
    assert (await _get(live, acc, {"limit": "1", "status": "open", "cursor": cursor})).is_success
    for changed in (
        {"status": "closed"},
        {},
        {"status": "open", "sort": "created"},
        {"status": "open", "sort": "-updated"},
        {"status": "open", "priority": "medium"},
        {"status": "open", "subject": "T"},
    ):
        reasons = invalid_names(await _get(live, acc, {**changed, "limit": "1", "cursor": cursor}))
        assert list(reasons) == ["cursor"], changed
    for garbage in ("garbage!", "AAAA", "x" * 501, "%%%"):
        assert list(invalid_names(await _get(live, acc, {"cursor": garbage}))) == ["cursor"]
    # A cursor of another partner's query is just as foreign.
    other = await second_partner(live, acc, "desk@other.example")
    await live.put_trip(other, "OT-1")
    theirs = await _get(live, other, {"limit": "1"})
    assert theirs.json()["nextCursor"] is None
    assert (await _get(live, other, {"limit": "1", "status": "open", "cursor": cursor})).json()[
        "tickets"
    ] == []


async def test_cursor_survives_reordered_tag_parameters(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    a = str((await live.add_tag("A", "a"))["id"])
    b = str((await live.add_tag("B", "b"))["id"])
    for _ in range(3):
        await live.open_ticket(acc, tags=[int(a), int(b)])
    first = await _get(live, acc, [("tag", a), ("tag", b), ("limit", "1")])
    cursor = first.json()["nextCursor"]
    assert isinstance(cursor, str)
    swapped = await _get(live, acc, [("tag", b), ("tag", a), ("limit", "1"), ("cursor", cursor)])
    assert swapped.status_code == 200, swapped.text


async def test_unknown_and_repeated_parameters_are_refused(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    await live.open_ticket(acc)
    assert invalid_names(await _get(live, acc, {"offset": "10"})) == {"offset": "Unknown field."}
    assert invalid_names(await _get(live, acc, {"page": "2", "status": "open"})) == {
        "page": "Unknown field."
    }
    for name, value in (("status", "open"), ("limit", "5"), ("sort", "created")):
        twice = invalid_names(await _get(live, acc, [(name, value), (name, value)]))
        assert list(twice) == [name], name
    both = invalid_names(
        await _get(live, acc, [("status", "open"), ("status", "x"), ("nope", "1")])
    )
    assert set(both) == {"status", "nope"}
    tags = invalid_names(await _get(live, acc, [("tag", "1"), ("tag", "x")]))
    assert list(tags) == ["tag[1]"]
    assert list(invalid_names(await _get(live, acc, [("tag", "1")] * 11))) == ["tag"]
    for name, bad in (("status", "pending"), ("priority", "asap"), ("category", "lost")):
        assert list(invalid_names(await _get(live, acc, {name: bad}))) == [name]
    assert list(invalid_names(await _get(live, acc, {"category": "0"}))) == ["category"]


async def test_cursor_walk_inside_a_time_window_in_every_sort(live: LiveRelay) -> None:
    # The cursor replaces the window's bound on the sort side; the other bound must hold.
    acc = await live.accounts()
    await live.put_trip(acc)
    made = [await live.open_ticket(acc, subject=f"W{i}") for i in range(7)]
    window = {
        "createdAfter": made[1]["createdAt"],
        "createdBefore": made[6]["createdAt"],
        "updatedAfter": made[1]["updatedAt"],
        "updatedBefore": made[6]["updatedAt"],
    }
    inside = [t["id"] for t in made[2:6]]
    for sort in ("-created", "created", "-updated", "updated"):
        seen, pages = await _walk(live, acc, {**window, "sort": sort, "limit": "1"})
        expected = inside[::-1] if sort.startswith("-") else inside
        assert seen == expected, sort
        assert pages == len(inside)

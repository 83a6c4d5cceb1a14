"""Categories and tags as the operator manages them and partners put them on tickets."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.conftest import Database
from tests.harness import Accounts, LiveRelay, live_relay
from tests.test_api import assert_problem, invalid_names

CATEGORIES = "/v1/admin/categories"
TAGS = "/v1/admin/tags"


async def _categories(live: LiveRelay, acc: Accounts) -> list[dict[str, Any]]:
    response = await live.http.get("/v1/support/categories", headers=acc.auth)
    assert response.status_code == 200, response.text
    categories = response.json()["categories"]
    assert isinstance(categories, list)
    return categories


async def _tags(live: LiveRelay, acc: Accounts) -> list[dict[str, Any]]:
    response = await live.http.get("/v1/support/tags", headers=acc.auth)
    assert response.status_code == 200, response.text
    tags = response.json()["tags"]
    assert isinstance(tags, list)
    return tags


async def _create_ticket(live: LiveRelay, acc: Accounts, **body: Any) -> httpx.Response:
    payload = {"subject": "Lost umbrella", "comment": "A blue umbrella.", **body}
    return await live.http.post(
        "/v1/support/demand/trips/BK-1/tickets", headers=acc.auth, json=payload
    )


async def _patch(live: LiveRelay, acc: Accounts, ticket_id: int, body: Any) -> httpx.Response:
    return await live.http.patch(f"/v1/support/tickets/{ticket_id}", headers=acc.auth, json=body)


def _kinds(detail: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in detail["events"] if e["kind"] == kind]


# ── Categories ────────────────────────────────────────────────────────────────────────────


async def test_categories_nest_one_level_and_partners_see_the_tree(live: LiveRelay) -> None:
    acc = await live.accounts()
    response = await live.http.post(
        CATEGORIES,
        headers=live.admin,
        json={"name": "  Lost item ", "description": "Things left in the car"},
    )
    assert response.status_code == 201, response.text
    lost = response.json()
    assert response.headers["location"] == f"/v1/admin/categories/{lost['id']}"
    assert lost["name"] == "Lost item" and lost["description"] == "Things left in the car"
    assert lost["parentId"] is None and lost["subcategories"] == []
    billing = await live.add_category("Billing")
    phone = await live.add_category("Phone", parentId=lost["id"])
    bag = await live.add_category("Bag", parentId=lost["id"], description="Luggage")
    assert phone["parentId"] == lost["id"] and bag["parentId"] == lost["id"]

    tree = await _categories(live, acc)
    # Top level sorted by name, children nested and sorted by name too.
    assert [c["name"] for c in tree] == ["Billing", "Lost item"]
    by_name = {c["name"]: c for c in tree}
    assert by_name["Billing"]["id"] == billing["id"] and by_name["Billing"]["subcategories"] == []
    subs = by_name["Lost item"]["subcategories"]
    assert [(s["id"], s["name"], s["parentId"]) for s in subs] == [
        (bag["id"], "Bag", lost["id"]),
        (phone["id"], "Phone", lost["id"]),
    ]
    assert subs[0]["description"] == "Luggage"
    admin_view = await live.http.get(CATEGORIES, headers=live.admin)
    assert admin_view.status_code == 200 and admin_view.json() == {"categories": tree}

    # No third level; an unknown parent is a field error too. Nothing is created.
    deeper = await live.http.post(
        CATEGORIES, headers=live.admin, json={"name": "Smartphone", "parentId": phone["id"]}
    )
    assert list(invalid_names(deeper)) == ["parentId"]
    nowhere = await live.http.post(
        CATEGORIES, headers=live.admin, json={"name": "Orphan", "parentId": 987654}
    )
    assert list(invalid_names(nowhere)) == ["parentId"]
    for bad_parent in ("1", 0, -3, 1.5, True):
        response = await live.http.post(
            CATEGORIES, headers=live.admin, json={"name": "Odd", "parentId": bad_parent}
        )
        assert list(invalid_names(response)) == ["parentId"], bad_parent
    assert await _categories(live, acc) == tree


async def test_category_validation_and_duplicates(live: LiveRelay) -> None:
    await live.add_category("Lost item")
    duplicate = await live.http.post(CATEGORIES, headers=live.admin, json={"name": "Lost item"})
    body = assert_problem(duplicate, 409)
    assert "Lost item" in body["detail"]
    padded = await live.http.post(CATEGORIES, headers=live.admin, json={"name": " Lost item  "})
    assert_problem(padded, 409)

    async def post(body: Any) -> dict[str, str]:
        return invalid_names(await live.http.post(CATEGORIES, headers=live.admin, json=body))

    assert await post({}) == {"name": "This field is required."}
    assert list(await post({"name": "   "})) == ["name"]
    assert list(await post({"name": "x" * 101})) == ["name"]
    assert await post({"name": "Ok", "colour": "red"}) == {"colour": "Unknown field."}
    assert list(await post({"name": "Ok", "description": "d" * 1001})) == ["description"]
    listed = await live.http.get(CATEGORIES, headers=live.admin)
    assert [c["name"] for c in listed.json()["categories"]] == ["Lost item"]


async def test_rename_category(live: LiveRelay) -> None:
    acc = await live.accounts()
    lost = await live.add_category("Lost item", description="Old text")
    await live.add_category("Billing")
    path = f"{CATEGORIES}/{lost['id']}"

    renamed = await live.http.patch(path, headers=live.admin, json={"name": "Lost property"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "Lost property"
    assert renamed.json()["description"] == "Old text"  # left out: unchanged
    assert "Lost property" in [c["name"] for c in await _categories(live, acc)]

    described = await live.http.patch(path, headers=live.admin, json={"description": "New"})
    assert described.json()["name"] == "Lost property"
    assert described.json()["description"] == "New"
    cleared = await live.http.patch(path, headers=live.admin, json={"description": None})
    assert cleared.status_code == 200 and cleared.json()["description"] is None
    same = await live.http.patch(path, headers=live.admin, json={"name": "Lost property"})
    assert same.status_code == 200

    assert_problem(await live.http.patch(path, headers=live.admin, json={"name": "Billing"}), 409)
    assert list(invalid_names(await live.http.patch(path, headers=live.admin, json={"x": 1}))) == [
        "x"
    ]
    missing = await live.http.patch(f"{CATEGORIES}/987654", headers=live.admin, json={"name": "A"})
    assert_problem(missing, 404)
    names = sorted(c["name"] for c in await _categories(live, acc))
    assert names == ["Billing", "Lost property"]


async def test_archived_category_leaves_lists_but_stays_on_tickets(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    lost = await live.add_category("Lost item")
    ticket = await live.open_ticket(acc, category=lost["id"])
    assert ticket["category"] == lost["id"] and ticket["categoryTitle"] == "Lost item"

    archived = await live.http.delete(f"{CATEGORIES}/{lost['id']}", headers=live.admin)
    assert archived.status_code == 204 and archived.content == b""
    assert await _categories(live, acc) == []
    assert (await live.http.get(CATEGORIES, headers=live.admin)).json() == {"categories": []}

    # The ticket keeps it, title and all, in its detail and in the history.
    detail = await live.ticket(acc, ticket["id"])
    assert detail["category"] == lost["id"] and detail["categoryTitle"] == "Lost item"
    listed = await live.http.get("/v1/support/tickets", headers=acc.auth)
    [summary] = listed.json()["tickets"]
    assert summary["category"] == lost["id"] and summary["categoryTitle"] == "Lost item"

    # It can no longer be chosen, renamed, re-archived or used as a parent.
    refused = await _create_ticket(live, acc, category=lost["id"])
    assert list(invalid_names(refused)) == ["category"]
    other = await live.open_ticket(acc)
    moved = await _patch(live, acc, other["id"], {"category": lost["id"]})
    assert list(invalid_names(moved)) == ["category"]
    # A client that sends back what the ticket already carries is not refused for it.
    kept = await _patch(live, acc, ticket["id"], {"category": lost["id"], "priority": "high"})
    assert kept.status_code == 200, kept.text
    assert kept.json()["category"] == lost["id"] and kept.json()["priority"] == "high"
    again = await live.http.delete(f"{CATEGORIES}/{lost['id']}", headers=live.admin)
    assert_problem(again, 404)
    rename = await live.http.patch(
        f"{CATEGORIES}/{lost['id']}", headers=live.admin, json={"name": "Back"}
    )
    assert_problem(rename, 404)
    child = await live.http.post(
        CATEGORIES, headers=live.admin, json={"name": "Phone", "parentId": lost["id"]}
    )
    assert list(invalid_names(child)) == ["parentId"]
    assert_problem(await live.http.delete(f"{CATEGORIES}/987654", headers=live.admin), 404)


async def test_parent_with_live_children_cannot_be_archived(live: LiveRelay) -> None:
    acc = await live.accounts()
    lost = await live.add_category("Lost item")
    phone = await live.add_category("Phone", parentId=lost["id"])
    refused = await live.http.delete(f"{CATEGORIES}/{lost['id']}", headers=live.admin)
    body = assert_problem(refused, 409)
    assert "subcategories" in body["detail"]
    [still] = await _categories(live, acc)
    assert still["id"] == lost["id"] and [s["id"] for s in still["subcategories"]] == [phone["id"]]
    # The child itself can be archived.
    child_gone = await live.http.delete(f"{CATEGORIES}/{phone['id']}", headers=live.admin)
    assert child_gone.status_code == 204
    [alone] = await _categories(live, acc)
    assert alone["id"] == lost["id"] and alone["subcategories"] == []


async def test_parent_can_be_archived_once_its_children_are(live: LiveRelay) -> None:
    acc = await live.accounts()
    lost = await live.add_category("Lost item")
    phone = await live.add_category("Phone", parentId=lost["id"])
    child_gone = await live.http.delete(f"{CATEGORIES}/{phone['id']}", headers=live.admin)
    assert child_gone.status_code == 204
    parent_gone = await live.http.delete(f"{CATEGORIES}/{lost['id']}", headers=live.admin)
    assert parent_gone.status_code == 204, parent_gone.text
    assert await _categories(live, acc) == []


async def test_admin_catalog_routes_refuse_a_partner_key(live: LiveRelay) -> None:
    acc = await live.accounts()
    lost = await live.add_category("Lost item")
    tag = await live.add_tag("VIP", "vip")
    calls: list[tuple[str, str, Any]] = [
        ("GET", CATEGORIES, None),
        ("POST", CATEGORIES, {"name": "Sneaky"}),
        ("PATCH", f"{CATEGORIES}/{lost['id']}", {"name": "Hijacked"}),
        ("DELETE", f"{CATEGORIES}/{lost['id']}", None),
        ("GET", TAGS, None),
        ("POST", TAGS, {"name": "Sneaky", "keyword": "sneaky"}),
        ("DELETE", f"{TAGS}/{tag['id']}", None),
    ]
    for headers in (acc.auth, {}):
        for method, path, body in calls:
            response = await live.http.request(method, path, headers=headers, json=body)
            assert_problem(response, 401)
            assert response.headers["www-authenticate"] == "ApiKey", (method, path)
    # Nothing changed.
    [category] = await _categories(live, acc)
    assert category["name"] == "Lost item"
    assert [t["keyword"] for t in await _tags(live, acc)] == ["vip"]


async def test_admin_catalog_routes_do_not_exist_without_an_admin_key(database: Database) -> None:
    async with live_relay(database.url, database.schema, admin_key=None) as live:
        missing = assert_problem(await live.http.get("/v1/admin/does-not-exist"), 404)
        calls: list[tuple[str, str, Any]] = [
            ("GET", CATEGORIES, None),
            ("POST", CATEGORIES, {"name": "X"}),
            ("PATCH", f"{CATEGORIES}/1", {"name": "Y"}),
            ("DELETE", f"{CATEGORIES}/1", None),
            ("GET", TAGS, None),
            ("POST", TAGS, {"name": "X", "keyword": "x"}),
            ("DELETE", f"{TAGS}/1", None),
        ]
        for headers in ({}, {"Authorization": "ApiKey anything"}):
            for method, path, body in calls:
                response = await live.http.request(method, path, headers=headers, json=body)
                assert assert_problem(response, 404) == missing, (method, path)
                assert "www-authenticate" not in response.headers


async def test_concurrent_duplicate_names_are_one_201_and_409s(live: LiveRelay) -> None:
    acc = await live.accounts()
    categories = await asyncio.gather(
        *(live.http.post(CATEGORIES, headers=live.admin, json={"name": "Race"}) for _ in range(8))
    )
    tags = await asyncio.gather(
        *(
            live.http.post(TAGS, headers=live.admin, json={"name": "Race", "keyword": "race"})
            for _ in range(8)
        )
    )
    for responses in (categories, tags):
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [201] + [409] * 7, [r.text for r in responses]
    assert [c["name"] for c in await _categories(live, acc)] == ["Race"]
    assert [t["keyword"] for t in await _tags(live, acc)] == ["race"]


# ── Tags ──────────────────────────────────────────────────────────────────────────────────


async def test_tags_create_list_archive(live: LiveRelay) -> None:
    acc = await live.accounts()
    response = await live.http.post(
        TAGS, headers=live.admin, json={"name": " VIP customer ", "keyword": "  vip-customer "}
    )
    assert response.status_code == 201, response.text
    vip = response.json()
    assert response.headers["location"] == f"/v1/admin/tags/{vip['id']}"
    assert vip["name"] == "VIP customer" and vip["keyword"] == "vip-customer"
    assert set(vip) == {"id", "name", "keyword"}
    airport = await live.add_tag("Airport", "airport.t2_pickup")
    assert airport["keyword"] == "airport.t2_pickup"

    listed = await _tags(live, acc)
    assert listed == [airport, vip]  # sorted by name
    assert (await live.http.get(TAGS, headers=live.admin)).json() == {"tags": listed}

    async def post(body: Any) -> httpx.Response:
        return await live.http.post(TAGS, headers=live.admin, json=body)

    # Same name or same keyword (after lower-casing) is a conflict.
    assert_problem(await post({"name": "VIP customer", "keyword": "other"}), 409)
    assert_problem(await post({"name": "Another", "keyword": "vip-customer"}), 409)
    for keyword in ("has space", "-leading-dash", "", "ümlaut", "x" * 101, "a/b", 5):
        assert list(invalid_names(await post({"name": "Bad", "keyword": keyword}))) == [
            "keyword"
        ], keyword
    assert invalid_names(await post({"name": "Bad"})) == {"keyword": "This field is required."}
    assert list(invalid_names(await post({"name": "", "keyword": "fine"}))) == ["name"]
    assert len(await _tags(live, acc)) == 2

    archived = await live.http.delete(f"{TAGS}/{vip['id']}", headers=live.admin)
    assert archived.status_code == 204 and archived.content == b""
    assert await _tags(live, acc) == [airport]
    assert_problem(await live.http.delete(f"{TAGS}/{vip['id']}", headers=live.admin), 404)
    assert_problem(await live.http.delete(f"{TAGS}/987654", headers=live.admin), 404)
    assert_problem(await live.http.delete(f"{TAGS}/abc", headers=live.admin), 404)


async def test_tag_keyword_is_lower_cased(live: LiveRelay) -> None:
    response = await live.http.post(
        TAGS, headers=live.admin, json={"name": "VIP", "keyword": "VIP-Customer"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["keyword"] == "vip-customer"
    clash = await live.http.post(
        TAGS, headers=live.admin, json={"name": "Other", "keyword": "VIP-CUSTOMER"}
    )
    assert_problem(clash, 409)


# ── Tickets ───────────────────────────────────────────────────────────────────────────────


async def test_ticket_created_with_category_and_tags(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    lost = await live.add_category("Lost item")
    vip = await live.add_tag("VIP", "vip")
    airport = await live.add_tag("Airport", "airport")
    response = await _create_ticket(
        live, acc, category=lost["id"], tags=[airport["id"], vip["id"], airport["id"]]
    )
    assert response.status_code == 201, response.text
    ticket = response.json()
    assert ticket["category"] == lost["id"] and ticket["categoryTitle"] == "Lost item"
    assert ticket["tags"] == sorted([vip["id"], airport["id"]])
    detail = await live.ticket(acc, ticket["id"])
    assert detail["tags"] == ticket["tags"] and detail["category"] == lost["id"]


async def test_ticket_with_unknown_or_archived_classification_is_refused(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    lost = await live.add_category("Lost item")
    old = await live.add_category("Old")
    vip = await live.add_tag("VIP", "vip")
    gone = await live.add_tag("Gone", "gone")
    archived = await live.http.delete(f"{CATEGORIES}/{old['id']}", headers=live.admin)
    assert archived.status_code == 204
    assert (await live.http.delete(f"{TAGS}/{gone['id']}", headers=live.admin)).status_code == 204

    unknown = invalid_names(await _create_ticket(live, acc, category=987654))
    assert list(unknown) == ["category"] and "987654" in unknown["category"]
    assert list(invalid_names(await _create_ticket(live, acc, category=old["id"]))) == ["category"]
    tags = invalid_names(await _create_ticket(live, acc, tags=[vip["id"], 987654, gone["id"]]))
    assert list(tags) == ["tags[1]", "tags[2]"] and "987654" in tags["tags[1]"]
    both = invalid_names(await _create_ticket(live, acc, category=987654, tags=[987654]))
    assert set(both) == {"category", "tags[0]"}
    for bad in ("1", 0, -1, 1.5, True, None):
        names = invalid_names(await _create_ticket(live, acc, tags=[bad]))
        assert list(names) == ["tags[0]"], bad
    assert list(invalid_names(await _create_ticket(live, acc, tags=vip["id"]))) == ["tags"]
    assert list(invalid_names(await _create_ticket(live, acc, category="1"))) == ["category"]

    # Nothing was stored or sent by the refused requests.
    listed = await live.http.get("/v1/support/tickets", headers=acc.auth)
    assert listed.json()["tickets"] == []
    ok = await _create_ticket(live, acc, category=lost["id"], tags=[vip["id"]])
    assert ok.status_code == 201, ok.text
    await live.sink.handler.wait_for("dispatch@fleet.example")
    assert len(live.sink.handler.messages) == 1


async def test_patch_replaces_tags_and_records_the_change(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    a, b, c = [await live.add_tag(n, n.lower()) for n in ("Alpha", "Beta", "Gamma")]
    ticket = await live.open_ticket(acc, tags=[a["id"], b["id"]])
    assert ticket["tags"] == [a["id"], b["id"]]

    response = await _patch(live, acc, ticket["id"], {"tags": [c["id"], b["id"]]})
    assert response.status_code == 200, response.text
    detail = response.json()
    assert detail["tags"] == [b["id"], c["id"]]
    assert detail["updatedAt"] > ticket["updatedAt"]
    [changed] = _kinds(detail, "ticket.tags_changed")
    assert changed["detail"] == {"added": [c["id"]], "removed": [a["id"]]}
    assert changed["actor"] == "partner"

    # The same set again changes nothing and records nothing.
    same = await _patch(live, acc, ticket["id"], {"tags": [b["id"], c["id"]]})
    assert same.json()["tags"] == [b["id"], c["id"]]
    assert len(_kinds(same.json(), "ticket.tags_changed")) == 1

    cleared = (await _patch(live, acc, ticket["id"], {"tags": []})).json()
    assert cleared["tags"] == []
    last = _kinds(cleared, "ticket.tags_changed")[-1]
    assert last["detail"] == {"added": [], "removed": [b["id"], c["id"]]}

    # An unknown tag refuses the whole PATCH: the priority sent with it does not change.
    refused = await _patch(live, acc, ticket["id"], {"priority": "urgent", "tags": [a["id"], 9876]})
    assert list(invalid_names(refused)) == ["tags[1]"]
    after = await live.ticket(acc, ticket["id"])
    assert after["priority"] == "medium" and after["tags"] == []
    assert not _kinds(after, "ticket.priority_changed")


async def test_patch_changes_and_clears_the_category(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    lost = await live.add_category("Lost item")
    billing = await live.add_category("Billing")
    ticket = await live.open_ticket(acc, category=lost["id"])

    moved = await _patch(live, acc, ticket["id"], {"category": billing["id"]})
    assert moved.status_code == 200, moved.text
    assert moved.json()["category"] == billing["id"]
    assert moved.json()["categoryTitle"] == "Billing"
    [change] = _kinds(moved.json(), "ticket.category_changed")
    assert change["detail"] == {"from": lost["id"], "to": billing["id"]}

    # Leaving `category` out keeps it; null removes it.
    kept = await _patch(live, acc, ticket["id"], {"priority": "high"})
    assert kept.json()["category"] == billing["id"] and kept.json()["priority"] == "high"
    [priority] = _kinds(kept.json(), "ticket.priority_changed")
    assert priority["detail"] == {"from": "medium", "to": "high"}
    cleared = await _patch(live, acc, ticket["id"], {"category": None})
    assert cleared.status_code == 200, cleared.text
    body = cleared.json()
    assert body["category"] is None and body["categoryTitle"] is None
    changes = _kinds(body, "ticket.category_changed")
    assert [c["detail"] for c in changes] == [
        {"from": lost["id"], "to": billing["id"]},
        {"from": billing["id"], "to": None},
    ]
    assert (await live.ticket(acc, ticket["id"]))["category"] is None
    # Clearing an absent category is no change.
    again = await _patch(live, acc, ticket["id"], {"category": None})
    assert len(_kinds(again.json(), "ticket.category_changed")) == 2


async def test_patch_validation(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    ticket = await live.open_ticket(acc)
    tid = ticket["id"]

    empty = invalid_names(await _patch(live, acc, tid, {}))
    assert list(empty) == ["body"]
    assert list(invalid_names(await _patch(live, acc, tid, {"priority": "asap"}))) == ["priority"]
    assert list(invalid_names(await _patch(live, acc, tid, {"priority": "HIGH"}))) == ["priority"]
    assert list(invalid_names(await _patch(live, acc, tid, {"status": "pending"}))) == ["status"]
    assert invalid_names(await _patch(live, acc, tid, {"subject": "New"})) == {
        "subject": "Unknown field."
    }
    assert list(invalid_names(await _patch(live, acc, tid, {"category": 987654}))) == ["category"]
    assert list(invalid_names(await _patch(live, acc, tid, {"tags": "x"}))) == ["tags"]
    assert_problem(await _patch(live, acc, tid, ["priority"]), 400)
    assert_problem(await _patch(live, acc, 987654, {"priority": "high"}), 404)
    as_form = await live.http.patch(
        f"/v1/support/tickets/{tid}", headers=acc.auth, data={"priority": "high"}
    )
    assert_problem(as_form, 415)

    after = await live.ticket(acc, tid)
    assert after["priority"] == "medium" and after["status"] == "open"
    assert after["updatedAt"] == ticket["updatedAt"]
    assert [e["kind"] for e in after["events"] if e["kind"].startswith("ticket.")] == [
        "ticket.created"
    ]

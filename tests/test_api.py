"""The HTTP API as a partner and an operator see it: status codes, problem bodies, mail sent."""

from __future__ import annotations

import base64
from typing import Any

import httpx

from tests.conftest import Database
from tests.harness import FLEET_INBOX, PARTNER_INBOX, Accounts, LiveRelay, live_relay, reply_mail

PROBLEM = "application/problem+json"
NO_AUTH: dict[str, str] = {}


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body = response.json()
    assert isinstance(body, dict)
    assert body["status"] == status and isinstance(body["title"], str) and body["title"]
    return body


def invalid_names(response: httpx.Response) -> dict[str, str]:
    """A 422 problem's invalidParams as {name: reason}."""
    body = assert_problem(response, 422)
    params = body["invalidParams"]
    assert isinstance(params, list) and params
    for param in params:
        assert set(param) == {"name", "reason"} and param["reason"], param
    return {p["name"]: p["reason"] for p in params}


async def second_partner(live: LiveRelay, acc: Accounts, email: str) -> Accounts:
    """Another partner, sharing `acc`'s fleet."""
    other = await live.add_partner(name="Other Travel", email=email)
    return Accounts(other["id"], other["apiKey"], acc.fleet_id)


async def list_all(live: LiveRelay, acc: Accounts) -> list[dict[str, Any]]:
    response = await live.http.get("/v1/support/tickets", headers=acc.auth)
    assert response.status_code == 200, response.text
    tickets = response.json()["tickets"]
    assert isinstance(tickets, list)
    return tickets


async def upload(
    live: LiveRelay, acc: Accounts, data: bytes = b"fare: 54.20 EUR\n", name: str = "r.txt"
) -> httpx.Response:
    return await live.http.post(
        "/v1/support/upload-attachment",
        headers=acc.auth,
        files={"file": (name, data, "text/plain")},
    )


# ── Admin API ─────────────────────────────────────────────────────────────────────────────


async def test_admin_api_is_off_without_an_admin_key(database: Database) -> None:
    async with live_relay(database.url, database.schema, admin_key=None) as live:
        missing = assert_problem(await live.http.get("/v1/admin/does-not-exist"), 404)
        calls = [
            ("POST", "/v1/admin/partners", {"name": "X", "contactEmail": "x@x.example"}),
            ("GET", "/v1/admin/partners", None),
            ("POST", "/v1/admin/fleets", {"name": "Y", "supportEmail": "y@y.example"}),
            ("GET", "/v1/admin/fleets", None),
            ("POST", "/v1/admin/partners/1/keys", None),
            ("DELETE", "/v1/admin/keys/1", None),
        ]
        for headers in (NO_AUTH, {"Authorization": "ApiKey anything"}):
            for method, path, body in calls:
                response = await live.http.request(method, path, headers=headers, json=body)
                assert assert_problem(response, 404) == missing, (method, path)
                assert "www-authenticate" not in response.headers


async def test_wrong_or_missing_admin_key_is_401_with_challenge(live: LiveRelay) -> None:
    for headers in (
        NO_AUTH,
        {"Authorization": "ApiKey not-the-admin-key"},
        {"Authorization": "Bearer " + live.admin["Authorization"].split()[1]},
    ):
        response = await live.http.get("/v1/admin/partners", headers=headers)
        assert_problem(response, 401)
        assert response.headers["www-authenticate"] == "ApiKey"
        response = await live.http.post(
            "/v1/admin/partners", headers=headers, json={"name": "X", "contactEmail": "x@x.example"}
        )
        assert_problem(response, 401)
    # Nothing was created by the refused calls.
    listed = await live.http.get("/v1/admin/partners", headers=live.admin)
    assert listed.json() == {"partners": []}


async def test_create_and_list_partners_without_key_material(live: LiveRelay) -> None:
    response = await live.http.post(
        "/v1/admin/partners",
        headers=live.admin,
        json={"name": "  Acme Travel ", "contactEmail": "HelpDesk@Partner.example"},
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert isinstance(created["id"], int) and isinstance(created["apiKeyId"], int)
    assert isinstance(created["apiKey"], str) and len(created["apiKey"]) >= 32
    assert created["name"] == "Acme Travel"
    assert created["contactEmail"] == "helpdesk@partner.example"
    assert created["allowedSenders"] == []
    second = await live.add_partner(name="Beta Tours", email="ops@beta.example")
    assert second["apiKey"] != created["apiKey"]

    listed = await live.http.get("/v1/admin/partners", headers=live.admin)
    assert listed.status_code == 200
    partners = listed.json()["partners"]
    assert [p["id"] for p in partners] == [created["id"], second["id"]]
    assert [p["name"] for p in partners] == ["Acme Travel", "Beta Tours"]
    for partner in partners:
        assert not {"apiKey", "apiKeyId", "secretHash", "prefix"} & set(partner)
    prefix = created["apiKey"].split("_")[1]
    for secret in (created["apiKey"], second["apiKey"], prefix):
        assert secret not in listed.text


async def test_create_and_list_fleets(live: LiveRelay) -> None:
    response = await live.http.post(
        "/v1/admin/fleets",
        headers=live.admin,
        json={"name": "City Cabs", "supportEmail": FLEET_INBOX},
    )
    assert response.status_code == 201, response.text
    fleet = response.json()
    assert isinstance(fleet["id"], int)
    assert fleet["supportEmail"] == FLEET_INBOX and fleet["name"] == "City Cabs"
    assert "apiKey" not in fleet
    listed = await live.http.get("/v1/admin/fleets", headers=live.admin)
    assert listed.status_code == 200
    assert [f["id"] for f in listed.json()["fleets"]] == [fleet["id"]]


async def test_allowed_senders_take_addresses_and_domains(live: LiveRelay) -> None:
    fleet = await live.add_fleet(
        allowedSenders=[
            "Night.Shift@Fleet.example",
            "@Dispatch.Fleet.example",
            "@dispatch.fleet.example",
        ]
    )
    assert fleet["allowedSenders"] == ["night.shift@fleet.example", "@dispatch.fleet.example"]
    partner = await live.add_partner(allowedSenders=["@partner.example"])
    assert partner["allowedSenders"] == ["@partner.example"]
    for bad in (["not an address"], ["@"], ["@no spaces.example"], "@partner.example"):
        response = await live.http.post(
            "/v1/admin/fleets",
            headers=live.admin,
            json={"name": "X", "supportEmail": "x@x.example", "allowedSenders": bad},
        )
        assert "allowedSenders" in invalid_names(response), bad


async def test_admin_validation_names_camel_case_fields(live: LiveRelay) -> None:
    async def post(path: str, body: dict[str, Any]) -> dict[str, str]:
        return invalid_names(await live.http.post(path, headers=live.admin, json=body))

    partners, fleets = "/v1/admin/partners", "/v1/admin/fleets"
    bad_email = await post(partners, {"name": "X", "contactEmail": "not-an-email"})
    assert list(bad_email) == ["contactEmail"]
    missing = await post(partners, {})
    assert missing == {"name": "This field is required.", "contactEmail": "This field is required."}
    unknown = await post(partners, {"name": "X", "contactEmail": "a@b.example", "colour": "red"})
    assert unknown == {"colour": "Unknown field."}
    blank = await post(partners, {"name": "   ", "contactEmail": "a@b.example"})
    assert list(blank) == ["name"]
    assert list(await post(fleets, {"name": "Y", "supportEmail": "x@"})) == ["supportEmail"]
    assert list(await post(fleets, {"name": "Y"})) == ["supportEmail"]
    # Nothing was stored by any refused request.
    assert (await live.http.get(partners, headers=live.admin)).json() == {"partners": []}
    assert (await live.http.get(fleets, headers=live.admin)).json() == {"fleets": []}


async def test_admin_bad_bodies_are_400_and_415(live: LiveRelay) -> None:
    response = await live.http.post(
        "/v1/admin/partners",
        headers={**live.admin, "Content-Type": "application/json"},
        content=b"{not json",
    )
    assert_problem(response, 400)
    response = await live.http.post("/v1/admin/partners", headers=live.admin, json=["a", "b"])
    assert_problem(response, 400)
    response = await live.http.post(
        "/v1/admin/partners", headers=live.admin, data={"name": "X", "contactEmail": "a@b.example"}
    )
    assert_problem(response, 415)


# ── Keys ──────────────────────────────────────────────────────────────────────────────────


async def test_issue_and_revoke_keys(live: LiveRelay) -> None:
    acc = await live.accounts()
    response = await live.http.post(f"/v1/admin/partners/{acc.partner_id}/keys", headers=live.admin)
    assert response.status_code == 201, response.text
    issued = response.json()
    assert issued["partnerId"] == acc.partner_id and issued["apiKey"] != acc.api_key
    second = Accounts(acc.partner_id, issued["apiKey"], acc.fleet_id)

    # Both keys act as the same partner.
    await live.put_trip(acc, "BK-1")
    ticket = await live.open_ticket(second, "BK-1")
    assert (await live.ticket(acc, ticket["id"]))["id"] == ticket["id"]

    revoked = await live.http.delete(f"/v1/admin/keys/{issued['id']}", headers=live.admin)
    assert revoked.status_code == 204 and revoked.content == b""
    response = await live.http.get(f"/v1/support/tickets/{ticket['id']}", headers=second.auth)
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == "ApiKey"
    # The first key still works; revoking twice is harmless.
    assert (await live.ticket(acc, ticket["id"]))["id"] == ticket["id"]
    again = await live.http.delete(f"/v1/admin/keys/{issued['id']}", headers=live.admin)
    assert again.status_code == 204

    assert_problem(await live.http.post("/v1/admin/partners/9999/keys", headers=live.admin), 404)
    assert_problem(await live.http.post("/v1/admin/partners/abc/keys", headers=live.admin), 404)
    assert_problem(await live.http.delete("/v1/admin/keys/9999", headers=live.admin), 404)
    assert_problem(await live.http.delete("/v1/admin/keys/x", headers=live.admin), 404)


async def test_missing_or_garbled_authorization_is_401(live: LiveRelay) -> None:
    acc = await live.accounts()
    for headers in (
        NO_AUTH,
        {"Authorization": ""},
        {"Authorization": "ApiKey"},
        {"Authorization": f"Bearer {acc.api_key}"},
        {"Authorization": "ApiKey sr_nothex_garbage"},
        {"Authorization": f"ApiKey {acc.api_key}x"},
        {"Authorization": f"ApiKey {acc.api_key[:-1]}"},
        {"Authorization": "ApiKey x_y_z_w"},
        live.admin,  # the admin key is not a partner key
    ):
        for method, path in (
            ("GET", "/v1/support/tickets"),
            ("GET", "/v1/support/tickets/1"),
            ("GET", "/v1/trips/BK-1"),
            ("POST", "/v1/support/demand/trips/BK-1/tickets"),
        ):
            response = await live.http.request(method, path, headers=headers)
            body = assert_problem(response, 401)
            assert response.headers["www-authenticate"] == "ApiKey", headers
            assert acc.api_key not in response.text and body["detail"]
    # A well-formed scheme name is matched case-insensitively.
    response = await live.http.get(
        "/v1/support/tickets", headers={"Authorization": f"apikey {acc.api_key}"}
    )
    assert response.status_code == 200


# ── Trips ─────────────────────────────────────────────────────────────────────────────────


async def test_put_trip_creates_then_updates(live: LiveRelay) -> None:
    acc = await live.accounts()
    body = {
        "fleetId": acc.fleet_id,
        "pickup": "1 Main Street",
        "dropoff": "Airport T2",
        "scheduledAt": "2026-11-20T09:30:00+01:00",
    }
    created = await live.http.put("/v1/trips/BK-9", headers=acc.auth, json=body)
    assert created.status_code == 201, created.text
    trip = created.json()
    assert trip["partnerTripId"] == "BK-9" and len(trip["id"]) == 36
    assert trip["scheduledAt"].startswith("2026-11-20T08:30:00")
    assert trip["passengerName"] is None

    updated = await live.http.put(
        "/v1/trips/BK-9", headers=acc.auth, json={**body, "dropoff": "Airport T1", "vehicle": "Van"}
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["id"] == trip["id"]
    fetched = await live.http.get("/v1/trips/BK-9", headers=acc.auth)
    assert fetched.status_code == 200
    assert fetched.json()["dropoff"] == "Airport T1" and fetched.json()["vehicle"] == "Van"
    assert fetched.json() == updated.json()  # PUT and GET show the trip the same way
    assert_problem(await live.http.get("/v1/trips/BK-404", headers=acc.auth), 404)


async def test_trips_are_private_to_their_partner(live: LiveRelay) -> None:
    acc = await live.accounts()
    trip = await live.put_trip(acc, "BK-1")
    other = await second_partner(live, acc, "desk@other.example")

    assert_problem(await live.http.get("/v1/trips/BK-1", headers=other.auth), 404)
    payload = {"subject": "Mine now", "comment": "Tell me about this trip."}
    by_partner_id = await live.http.post(
        "/v1/support/demand/trips/BK-1/tickets", headers=other.auth, json=payload
    )
    by_uuid = await live.http.post(
        f"/v1/support/trips/{trip['id']}/tickets", headers=other.auth, json=payload
    )
    nowhere = await live.http.post(
        "/v1/support/trips/00000000-0000-0000-0000-000000000000/tickets",
        headers=other.auth,
        json=payload,
    )
    assert assert_problem(by_partner_id, 404) == assert_problem(by_uuid, 404)
    assert assert_problem(nowhere, 404) == assert_problem(by_uuid, 404)
    assert await list_all(live, other) == [] and await list_all(live, acc) == []

    # The same partner trip id in another partner's namespace is a different trip.
    theirs = await live.put_trip(other, "BK-1", pickup="Elsewhere")
    assert theirs["id"] != trip["id"]
    mine = await live.http.get("/v1/trips/BK-1", headers=acc.auth)
    assert mine.json()["pickup"] == "1 Main Street"
    assert not live.sink.handler.messages


async def test_trip_validation(live: LiveRelay) -> None:
    acc = await live.accounts()
    body = {
        "fleetId": acc.fleet_id,
        "pickup": "1 Main Street",
        "dropoff": "Airport T2",
        "scheduledAt": "2026-11-20T08:30:00Z",
    }

    async def put(**changes: Any) -> httpx.Response:
        return await live.http.put("/v1/trips/BK-1", headers=acc.auth, json={**body, **changes})

    for fleet_id in (9999, 0, -1, 2**63, 2**70, "one", "1", 1.5, True, None):
        assert list(invalid_names(await put(fleetId=fleet_id))) == ["fleetId"], fleet_id
    assert list(invalid_names(await put(scheduledAt="2026-11-20T08:30:00"))) == ["scheduledAt"]
    assert list(invalid_names(await put(scheduledAt="tomorrow"))) == ["scheduledAt"]
    assert list(invalid_names(await put(pickup=""))) == ["pickup"]
    assert list(invalid_names(await put(seats=4))) == ["seats"]
    missing = await live.http.put("/v1/trips/BK-1", headers=acc.auth, json={"pickup": "x"})
    assert set(invalid_names(missing)) == {"fleetId", "dropoff", "scheduledAt"}
    assert_problem(await live.http.get("/v1/trips/BK-1", headers=acc.auth), 404)


# ── Tickets ───────────────────────────────────────────────────────────────────────────────


async def test_open_ticket_by_uuid_and_by_partner_trip_id(live: LiveRelay) -> None:
    acc = await live.accounts()
    trip = await live.put_trip(acc, "BK-5")
    lost = await live.add_category("Lost item")
    by_uuid = await live.http.post(
        f"/v1/support/trips/{trip['id']}/tickets",
        headers=acc.auth,
        json={
            "subject": "Lost umbrella",
            "comment": "Blue umbrella.",
            "category": lost["id"],
            "priority": "high",
        },
    )
    assert by_uuid.status_code == 201, by_uuid.text
    first = by_uuid.json()
    assert by_uuid.headers["location"] == f"/v1/support/tickets/{first['id']}"
    assert first["tripId"] == trip["id"] and first["partnerTripId"] == "BK-5"
    assert first["status"] == "open" and first["priority"] == "high"
    assert first["category"] == lost["id"] and first["categoryTitle"] == "Lost item"
    assert first["contactEmail"] == PARTNER_INBOX and first["tags"] == []

    by_partner_trip = await live.http.post(
        "/v1/support/demand/trips/BK-5/tickets",
        headers=acc.auth,
        json={"subject": "Invoice", "comment": "Please send the invoice."},
    )
    assert by_partner_trip.status_code == 201, by_partner_trip.text
    second = by_partner_trip.json()
    assert by_partner_trip.headers["location"] == f"/v1/support/tickets/{second['id']}"
    assert second["tripId"] == trip["id"] and second["id"] != first["id"]
    assert second["priority"] == "medium" and second["category"] is None

    to_fleet = await live.sink.handler.wait_for(FLEET_INBOX, count=2)
    subjects = sorted(m.message["Subject"] for m in to_fleet)
    assert any(f"[Ticket #{first['id']}]" in s for s in subjects)
    assert any(f"[Ticket #{second['id']}]" in s for s in subjects)


async def test_ticket_detail_has_conversation_attachments_and_events(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    token = (await upload(live, acc, b"PDF-ish bytes", "receipt.pdf")).json()["resourceToken"]
    created = await live.open_ticket(acc, comment="See the receipt.", attachments=[token])
    await live.sink.handler.wait_for(FLEET_INBOX)

    response = await live.http.get(f"/v1/support/tickets/{created['id']}", headers=acc.auth)
    assert response.status_code == 200
    detail = response.json()
    assert detail["id"] == created["id"] and detail["fleetName"] == "City Cabs"
    [message] = detail["conversation"]
    assert message["author"] == "partner" and message["via"] == "api"
    assert message["body"] == "See the receipt."
    [attachment] = detail["attachments"]
    assert attachment["filename"] == "receipt.pdf" and attachment["size"] == len(b"PDF-ish bytes")
    assert message["attachments"] == [attachment["id"]]
    assert "ticket.created" in [e["kind"] for e in detail["events"]]
    for hidden in (FLEET_INBOX, "fleet.example", "token", "alias"):
        assert hidden not in response.text.lower()


async def test_the_201_of_a_new_ticket_is_what_reading_it_back_shows(live: LiveRelay) -> None:
    """The POST builds its body from what it wrote (api.views.opened_detail), GET reads the
    database: category, tags, uploads, a suppressed contact and times must come out the
    same. Events recorded later (the delivery's) may follow those the POST showed."""
    from storage.bounces import suppress
    from storage.db import transaction

    acc = await live.accounts()
    await live.put_trip(acc)
    category = await live.add_category("Lost property")
    tags = [(await live.add_tag(n, n.lower()))["id"] for n in ("Urgent", "VIP")]
    tokens = [
        (await upload(live, acc, data, name)).json()["resourceToken"]
        for data, name in ((b"first", "a.txt"), (b"second file", "b.txt"))
    ]
    async with transaction(live.relay.sessions) as session:  # bounced before
        await suppress(session, "ops@acme.example", status="5.1.1", diagnostic=None, outbox_id=None)
    created = await live.open_ticket(
        acc,
        comment="Two files.",
        attachments=list(reversed(tokens)),
        category=category["id"],
        tags=list(reversed(tags)),
        contactEmail="ops@acme.example",
        callbackPhone="+44 20 7946 0000",
        priority="high",
    )
    detail = await live.ticket(acc, created["id"])
    assert created["reachability"]["partner"]["reachable"] is False
    assert created["categoryTitle"] == "Lost property" and created["tags"] == sorted(tags)
    assert [a["filename"] for a in created["attachments"]] == ["a.txt", "b.txt"]
    shown = len(created["events"])
    assert shown == 1 and detail["events"][:shown] == created["events"]
    assert {k: v for k, v in detail.items() if k != "events"} == {
        k: v for k, v in created.items() if k != "events"
    }


async def test_the_201_of_a_new_message_is_its_entry_in_the_ticket(live: LiveRelay) -> None:
    """api.views.message_of_ticket reads the message and its files only: the entry must be
    the one GET shows, files in the same order."""
    acc = await live.accounts()
    await live.put_trip(acc)
    ticket = await live.open_ticket(acc)
    tokens = [
        (await upload(live, acc, data, name)).json()["resourceToken"]
        for data, name in ((b"first", "a.txt"), (b"second file", "b.txt"))
    ]
    response = await live.http.post(
        f"/v1/support/tickets/{ticket['id']}/messages",
        headers=acc.auth,
        json={"comment": "Two more files.", "attachments": list(reversed(tokens))},
    )
    assert response.status_code == 201, response.text
    created = response.json()
    detail = await live.ticket(acc, ticket["id"])
    [entry] = [m for m in detail["conversation"] if m["id"] == created["id"]]
    assert created == entry and len(created["attachments"]) == 2


async def test_other_partners_ticket_is_indistinguishable_from_none(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    ticket = await live.open_ticket(acc)
    other = await second_partner(live, acc, "desk@other.example")

    theirs = await live.http.get(f"/v1/support/tickets/{ticket['id']}", headers=other.auth)
    absent = await live.http.get("/v1/support/tickets/987654", headers=other.auth)
    assert assert_problem(theirs, 404) == assert_problem(absent, 404)
    assert theirs.headers["content-type"] == absent.headers["content-type"]
    assert "Lost umbrella" not in theirs.text
    for odd in ("abc", "1.5", "-1", "0", "99999999999999999999999"):
        assert_problem(await live.http.get(f"/v1/support/tickets/{odd}", headers=acc.auth), 404)


async def test_ticket_body_validation(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    path = "/v1/support/demand/trips/BK-1/tickets"
    ok = {"subject": "Lost umbrella", "comment": "Blue umbrella."}

    async def post(body: Any) -> httpx.Response:
        return await live.http.post(path, headers=acc.auth, json=body)

    too_long = invalid_names(await post({**ok, "subject": "x" * 501}))
    assert list(too_long) == ["subject"] and "500" in too_long["subject"]
    assert list(invalid_names(await post({**ok, "priority": "asap"}))) == ["priority"]
    assert invalid_names(await post({"subject": "Hi"})) == {"comment": "This field is required."}
    assert list(invalid_names(await post({**ok, "comment": "  "}))) == ["comment"]
    assert list(invalid_names(await post({**ok, "contactEmail": "nope"}))) == ["contactEmail"]
    assert list(invalid_names(await post({**ok, "attachments": "tok"}))) == ["attachments"]
    assert list(invalid_names(await post({**ok, "ccEmail": "a@b.example"}))) == ["ccEmail"]
    assert_problem(await post(["subject"]), 400)

    bad_json = await live.http.post(
        path, headers={**acc.auth, "Content-Type": "application/json"}, content=b'{"subject": '
    )
    assert_problem(bad_json, 400)
    not_utf8 = await live.http.post(
        path, headers={**acc.auth, "Content-Type": "application/json"}, content=b"\xff\xfe{}"
    )
    assert_problem(not_utf8, 400)
    as_text = await live.http.post(
        path, headers={**acc.auth, "Content-Type": "text/plain"}, content=b"subject=hi"
    )
    assert_problem(as_text, 415)
    as_form = await live.http.post(path, headers=acc.auth, data=ok)
    assert_problem(as_form, 415)
    # A subject of exactly 500 characters is fine.
    assert (await post({**ok, "subject": "x" * 500})).status_code == 201


async def test_refused_ticket_sends_nothing_and_stores_nothing(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    path = "/v1/support/demand/trips/BK-1/tickets"
    refused = await live.http.post(
        path, headers=acc.auth, json={"subject": "x" * 501, "comment": "Should never arrive."}
    )
    assert list(invalid_names(refused)) == ["subject"]
    unknown_token = await live.http.post(
        path,
        headers=acc.auth,
        json={"subject": "Hi", "comment": "Should never arrive.", "attachments": ["nope"]},
    )
    assert_problem(unknown_token, 404)
    assert await list_all(live, acc) == []

    # A good ticket afterwards is the only mail the worker ever sends.
    good = await live.open_ticket(acc, comment="The one that counts.")
    [to_fleet] = await live.sink.handler.wait_for(FLEET_INBOX)
    assert b"Should never arrive" not in to_fleet.raw
    assert f"[Ticket #{good['id']}]" in to_fleet.message["Subject"]
    assert [t["id"] for t in await list_all(live, acc)] == [good["id"]]
    assert len(live.sink.handler.messages) == 1


async def test_contact_email_override_receives_the_fleets_reply(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    agent = "agent.smith@partner.example"
    ticket = await live.open_ticket(acc, contactEmail="Agent.Smith@Partner.example")
    assert ticket["contactEmail"] == agent

    [to_fleet] = await live.sink.handler.wait_for(FLEET_INBOX)
    assert agent.encode() not in to_fleet.raw.lower()
    alias = to_fleet.message["Reply-To"].addresses[0].addr_spec
    await live.send(reply_mail(FLEET_INBOX, alias, "We found it."), alias)

    [to_agent] = await live.sink.handler.wait_for(agent)
    assert to_agent.rcpt_to == [agent]
    assert to_agent.message["To"].addresses[0].addr_spec == agent
    assert "We found it." in to_agent.text()
    assert FLEET_INBOX.encode() not in to_agent.raw.lower()
    assert live.sink.handler.for_rcpt(PARTNER_INBOX) == []


# ── Uploads ───────────────────────────────────────────────────────────────────────────────


async def test_upload_token_is_single_use(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    response = await upload(live, acc)
    assert response.status_code == 201, response.text
    result = response.json()
    token = result["resourceToken"]
    assert isinstance(token, str) and len(token) >= 20
    assert result["filename"] == "r.txt" and result["size"] == len(b"fare: 54.20 EUR\n")

    await live.open_ticket(acc, attachments=[token])
    reuse = await live.http.post(
        "/v1/support/demand/trips/BK-1/tickets",
        headers=acc.auth,
        json={"subject": "Again", "comment": "Same file.", "attachments": [token]},
    )
    assert_problem(reuse, 404)
    assert len(await list_all(live, acc)) == 1


async def test_another_partners_upload_token_is_404(live: LiveRelay) -> None:
    acc = await live.accounts()
    other = await second_partner(live, acc, "desk@other.example")
    await live.put_trip(other, "OT-1")
    await live.put_trip(acc, "BK-1")
    token = (await upload(live, acc)).json()["resourceToken"]

    stolen = await live.http.post(
        "/v1/support/demand/trips/OT-1/tickets",
        headers=other.auth,
        json={"subject": "Hi", "comment": "Not my file.", "attachments": [token]},
    )
    assert_problem(stolen, 404)
    assert await list_all(live, other) == []
    # The owner can still use it: the failed attempt neither claimed nor burned it.
    ticket = await live.open_ticket(acc, attachments=[token])
    assert [t["id"] for t in await list_all(live, acc)] == [ticket["id"]]
    [to_fleet] = await live.sink.handler.wait_for(FLEET_INBOX)
    assert [p.get_filename() for p in to_fleet.message.iter_attachments()] == ["r.txt"]


async def test_upload_size_limit(database: Database) -> None:
    async with live_relay(database.url, database.schema, max_attachment_size=1024) as live:
        acc = await live.accounts()
        assert (await upload(live, acc, b"a" * 1024)).status_code == 201
        too_big = invalid_names(await upload(live, acc, b"a" * 1025))
        assert list(too_big) == ["file"]
        assert too_big["file"] == "File is too big. Max filesize: 1KiB."
        # Far over the limit: refused from the declared length, before the body is read.
        huge = invalid_names(await upload(live, acc, b"a" * 200_000))
        assert huge["file"].startswith("File is too big. Max filesize")


async def test_upload_needs_a_file_field_in_multipart(live: LiveRelay) -> None:
    acc = await live.accounts()
    path = "/v1/support/upload-attachment"
    wrong_field = await live.http.post(
        path, headers=acc.auth, files={"attachment": ("a.txt", b"abc", "text/plain")}
    )
    assert invalid_names(wrong_field) == {"file": "This field is required."}
    text_field = await live.http.post(
        path, headers=acc.auth, data={"file": "not a file"}, files={"x": ("a", b"b", "text/plain")}
    )
    assert list(invalid_names(text_field)) == ["file"]
    empty = await live.http.post(
        path, headers=acc.auth, files={"file": ("a.txt", b"", "text/plain")}
    )
    assert list(invalid_names(empty)) == ["file"]
    assert_problem(await live.http.post(path, headers=acc.auth, json={"file": "abc"}), 415)
    raw = await live.http.post(
        path, headers={**acc.auth, "Content-Type": "application/octet-stream"}, content=b"abc"
    )
    assert_problem(raw, 415)
    assert_problem(await live.http.post(path, files={"file": ("a", b"b", "text/plain")}), 401)


# ── Listing ───────────────────────────────────────────────────────────────────────────────


async def test_listing_paginates_newest_first_and_is_stable(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    original = [(await live.open_ticket(acc, subject=f"T{i}"))["id"] for i in range(5)]

    async def page(cursor: str | None) -> tuple[list[int], str | None]:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        response = await live.http.get("/v1/support/tickets", headers=acc.auth, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        return [t["id"] for t in body["tickets"]], body["nextCursor"]

    seen, cursor = await page(None)
    assert seen == original[::-1][:2] and isinstance(cursor, str)
    pages = 1
    while cursor is not None:
        # New tickets arrive between page fetches; they must not shift the pages.
        await live.open_ticket(acc, subject=f"late {pages}")
        ids, cursor = await page(cursor)
        seen += ids
        pages += 1
    assert seen == original[::-1] and pages == 3

    everything = await list_all(live, acc)
    assert [t["id"] for t in everything] == sorted((t["id"] for t in everything), reverse=True)
    assert len(everything) == 7 and everything[0]["subject"] == "late 2"
    assert {"partnerTripId", "status", "subject", "createdAt"} <= set(everything[0])
    assert "conversation" not in everything[0]


async def test_listing_filters_and_validation(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    ticket = await live.open_ticket(acc)

    async def get(**params: str) -> httpx.Response:
        return await live.http.get("/v1/support/tickets", headers=acc.auth, params=params)

    opened = (await get(status="open")).json()
    assert [t["id"] for t in opened["tickets"]] == [ticket["id"]] and opened["nextCursor"] is None
    assert (await get(status="closed")).json() == {"tickets": [], "nextCursor": None}
    for limit in ("0", "201", "-1", "ten", "1.5"):
        assert list(invalid_names(await get(limit=limit))) == ["limit"], limit
    assert (await get(limit="200")).status_code == 200
    forged = [
        "not-a-cursor!",
        base64.urlsafe_b64encode(b"2026-01-01T00:00:00|5").decode(),  # naive time
        base64.urlsafe_b64encode(b"2026-01-01T00:00:00+00:00|x").decode(),
        base64.urlsafe_b64encode(b"2026-01-01T00:00:00+00:00|99999999999999999999").decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        base64.urlsafe_b64encode(b"0001-01-01T00:00:00+14:00|5").decode(),
    ]
    for cursor in forged:
        assert list(invalid_names(await get(cursor=cursor))) == ["cursor"], cursor
    assert list(invalid_names(await get(status="pending"))) == ["status"]


async def test_listing_shows_only_own_tickets(live: LiveRelay) -> None:
    acc = await live.accounts()
    other = await second_partner(live, acc, "desk@other.example")
    await live.put_trip(acc, "BK-1")
    await live.put_trip(other, "OT-1")
    mine = [(await live.open_ticket(acc, "BK-1"))["id"] for _ in range(2)]
    theirs = (await live.open_ticket(other, "OT-1"))["id"]
    assert [t["id"] for t in await list_all(live, acc)] == mine[::-1]
    assert [t["id"] for t in await list_all(live, other)] == [theirs]


async def test_operator_can_tighten_the_subject_limit(database: Database) -> None:
    async with live_relay(database.url, database.schema, max_subject_length=20) as live:
        acc = await live.accounts()
        await live.put_trip(acc)
        response = await live.http.post(
            "/v1/support/demand/trips/BK-1/tickets",
            headers=acc.auth,
            json={"subject": "x" * 21, "comment": "too long a subject"},
        )
        assert response.status_code == 422
        [param] = response.json()["invalidParams"]
        assert param == {
            "name": "subject",
            "reason": "Ensure this field has no more than 20 characters.",
        }
        assert (await live.open_ticket(acc, subject="x" * 20))["subject"] == "x" * 20


async def test_line_breaks_in_api_fields_never_reach_an_email_header(live: LiveRelay) -> None:
    acc = await live.accounts()
    breaks = ["\r\n", "\n", "\r", "\u2028", "\u2029", "\x85", "\x0b", "\x0c"]
    for index, brk in enumerate(breaks):
        await live.put_trip(acc, f"T-{index}")
        await live.put_trip(acc, f"O-{index}")
        subject = f"Lost{brk}Bcc: victim@victim.example{brk}X-Injected: {index}"
        await live.open_ticket(acc, f"T-{index}", subject=subject)
        order = await live.http.post(
            f"/v1/support/orders/O-{index}",
            headers=acc.auth,
            json={"subject": f"Call me{brk}Cc: cc@victim.example"},
        )
        assert order.status_code == 201, order.text
    received = await live.sink.handler.wait_for(FLEET_INBOX, count=2 * len(breaks))
    assert len(received) == 2 * len(breaks)
    for mail in received:
        assert mail.rcpt_to == [FLEET_INBOX]
        head = mail.raw.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
        lines = head.split("\r\n")
        names = [line.split(":", 1)[0].lower() for line in lines if line[:1] not in (" ", "\t")]
        assert not {"bcc", "cc", "x-injected"} & set(names), head
        subject = str(mail.message["Subject"])
        assert "Bcc: victim" in subject or "Cc: cc@" in subject  # kept as text, on one line


async def test_a_patch_that_changes_nothing_leaves_the_ticket_alone(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    ticket = await live.open_ticket(acc, priority="medium")
    path = f"/v1/support/tickets/{ticket['id']}"
    for empty in ({}, {"priority": None}, {"status": None, "tags": None}):
        response = await live.http.patch(path, headers=acc.auth, json=empty)
        assert list(invalid_names(response)) == ["body"]
    same = await live.http.patch(path, headers=acc.auth, json={"priority": "medium", "tags": []})
    assert same.status_code == 200, same.text
    assert same.json()["updatedAt"] == ticket["updatedAt"]
    kinds = [e["kind"] for e in same.json()["events"]]
    assert not any(kind.endswith("_changed") for kind in kinds), kinds


async def test_only_wire_names_are_accepted(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    response = await live.http.post(
        "/v1/support/demand/trips/BK-1/tickets",
        headers=acc.auth,
        json={"subject": "S", "comment": "C", "contact_email": "x@partner.example"},
    )
    assert invalid_names(response) == {"contact_email": "Unknown field."}
    listed = await live.http.get(
        "/v1/support/tickets", headers=acc.auth, params={"created_after": "2026-01-01T00:00:00Z"}
    )
    assert invalid_names(listed) == {"created_after": "Unknown field."}


async def test_ids_beyond_the_integer_columns_are_not_found_not_a_fault(live: LiveRelay) -> None:
    # PostgreSQL's INTEGER is 32-bit: a bigger id names no row and must never reach the driver
    # (schemathesis found the 500 this used to be).
    acc = await live.accounts()
    await live.put_trip(acc)
    ticket = await live.open_ticket(acc)
    for huge in (2**31, 2**63 - 2):
        assert_problem(await live.http.get(f"/v1/support/tickets/{huge}", headers=acc.auth), 404)
        path = f"/v1/admin/categories/{huge}"
        assert_problem(await live.http.delete(path, headers=live.admin), 404)
        patched = await live.http.patch(
            f"/v1/support/tickets/{ticket['id']}", headers=acc.auth, json={"tags": [huge]}
        )
        assert list(invalid_names(patched)) == ["tags[0]"]
        listed = await live.http.get(
            "/v1/support/tickets", headers=acc.auth, params={"category": str(huge)}
        )
        assert list(invalid_names(listed)) == ["category"]

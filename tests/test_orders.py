"""Order-keyed support sessions (`/v1/support/orders/{orderId}`), as a partner sees them."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from relay.sink import Received
from tests.harness import FLEET_INBOX, Accounts, LiveRelay, reply_mail
from tests.test_api import assert_problem, invalid_names, second_partner

ORDER = "/v1/support/orders/ORD-7"


async def _setup(live: LiveRelay) -> Accounts:
    acc = await live.accounts()
    await live.put_trip(acc, "ORD-7")
    return acc


def _plain(mail: Received) -> str:
    return mail.text()


def _html(mail: Received) -> str:
    body = mail.message.get_body(preferencelist=("html",))
    return "" if body is None else str(body.get_content())


async def _fleet_mail(live: LiveRelay, count: int) -> list[Received]:
    return await live.sink.handler.wait_for(FLEET_INBOX, count=count)


async def _settled(live: LiveRelay, count: int) -> list[Received]:
    """Exactly `count` fleet emails, and no more a moment later."""
    mails = await _fleet_mail(live, count)
    await asyncio.sleep(0.6)
    assert len(live.sink.handler.for_rcpt(FLEET_INBOX)) == count
    return mails


async def _fleet_reply(live: LiveRelay, mail: Received, sender: str, text: str) -> None:
    """The fleet answers `mail` from its support inbox under the display name in `sender`."""
    alias = mail.message["Reply-To"].addresses[0].addr_spec
    answer = reply_mail(FLEET_INBOX, alias, text, cites=mail.message["Message-ID"])
    del answer["From"]
    answer["From"] = sender
    assert (await live.send(answer, alias)).startswith("2.0.0")


async def _agent(live: LiveRelay, acc: Accounts) -> httpx.Response:
    return await live.http.get(f"{ORDER}/agent", headers=acc.auth)


async def _wait_agent(live: LiveRelay, acc: Accounts, name: str) -> dict[str, Any]:
    for _ in range(100):
        response = await _agent(live, acc)
        if response.status_code == 200 and response.json()["name"] == name:
            agent = response.json()
            assert isinstance(agent, dict)
            return agent
        await asyncio.sleep(0.05)
    raise AssertionError(f"the agent never became {name!r}: {response.text}")


async def test_open_session_returns_it_and_mails_the_fleet_once(live: LiveRelay) -> None:
    acc = await _setup(live)
    assert_problem(await live.http.get(ORDER, headers=acc.auth), 404)

    created = await live.http.post(
        ORDER, headers=acc.auth, json={"callbackPhone": "+49 30 1234567"}
    )
    assert created.status_code == 201, created.text
    session = created.json()
    assert session == {
        "orderId": "ORD-7",
        "callbackPhone": "+49301234567",
        "status": "open",
        "ticketId": session["ticketId"],
        "agent": None,
    }
    assert isinstance(session["ticketId"], int)
    assert created.headers["location"] == ORDER
    fetched = await live.http.get(ORDER, headers=acc.auth)
    assert fetched.status_code == 200 and fetched.json() == session

    [mail] = await _fleet_mail(live, 1)
    assert f"[Ticket #{session['ticketId']}]" in mail.message["Subject"]
    assert "ORD-7" in mail.message["Subject"]
    assert "+49301234567" in _plain(mail) and "+49301234567" in _html(mail)

    # Asking again while it is open returns the same session; nothing new is mailed.
    again = await live.http.post(ORDER, headers=acc.auth, json={"callbackPhone": "+49301234567"})
    assert again.status_code == 200 and again.json() == session
    empty = await live.http.post(ORDER, headers=acc.auth)
    assert empty.status_code == 200 and empty.json()["ticketId"] == session["ticketId"]
    listed = await live.http.get("/v1/support/tickets", headers=acc.auth)
    assert [t["id"] for t in listed.json()["tickets"]] == [session["ticketId"]]
    ticket = await live.ticket(acc, session["ticketId"])
    assert ticket["callbackPhone"] == "+49301234567" and ticket["partnerTripId"] == "ORD-7"
    await _settled(live, 1)


async def test_open_session_without_body_or_with_subject_and_comment(live: LiveRelay) -> None:
    acc = await _setup(live)
    await live.put_trip(acc, "ORD-8")
    bare = await live.http.post(ORDER, headers=acc.auth)
    assert bare.status_code == 201, bare.text
    assert bare.json()["callbackPhone"] is None and bare.json()["agent"] is None
    detailed = await live.http.post(
        "/v1/support/orders/ORD-8",
        headers=acc.auth,
        json={"subject": "Driver did not show", "comment": "Passenger waited 20 minutes."},
    )
    assert detailed.status_code == 201, detailed.text
    mails = await _fleet_mail(live, 2)
    by_ticket = {
        tid: next(m for m in mails if f"[Ticket #{tid}]" in m.message["Subject"])
        for tid in (bare.json()["ticketId"], detailed.json()["ticketId"])
    }
    assert "ORD-7" in by_ticket[bare.json()["ticketId"]].message["Subject"]
    second = by_ticket[detailed.json()["ticketId"]]
    assert "Driver did not show" in second.message["Subject"]
    assert "Passenger waited 20 minutes." in _plain(second)


async def test_concurrent_opens_share_one_session(live: LiveRelay) -> None:
    acc = await _setup(live)
    responses = await asyncio.gather(*(live.http.post(ORDER, headers=acc.auth) for _ in range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 5 + [201], [r.text for r in responses]
    assert len({r.json()["ticketId"] for r in responses}) == 1
    listed = await live.http.get("/v1/support/tickets", headers=acc.auth)
    assert len(listed.json()["tickets"]) == 1
    await _settled(live, 1)


async def test_callback_phone_validation(live: LiveRelay) -> None:
    acc = await _setup(live)
    for bad in ("12345", "call me", "+49", "", "   ", "+1 555 0100 0100 0100 0100 0100", 4930123):
        response = await live.http.post(ORDER, headers=acc.auth, json={"callbackPhone": bad})
        assert list(invalid_names(response)) == ["callbackPhone"], bad
    unknown = await live.http.post(ORDER, headers=acc.auth, json={"phone": "+49301234567"})
    assert invalid_names(unknown) == {"phone": "Unknown field."}
    assert_problem(await live.http.post(ORDER, headers=acc.auth, json=["x"]), 400)
    assert_problem(await live.http.get(ORDER, headers=acc.auth), 404)  # nothing was opened
    ok = await live.http.post(ORDER, headers=acc.auth, json={"callbackPhone": "+44 20 7946 0958"})
    assert ok.status_code == 201 and ok.json()["callbackPhone"] == "+442079460958"


async def test_changing_the_callback_number_tells_the_fleet(live: LiveRelay) -> None:
    acc = await _setup(live)
    opened = await live.http.post(ORDER, headers=acc.auth, json={"callbackPhone": "+49301234567"})
    ticket_id = opened.json()["ticketId"]
    await _fleet_mail(live, 1)

    changed = await live.http.put(ORDER, headers=acc.auth, json={"callbackPhone": "+49 40 7654321"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["callbackPhone"] == "+49407654321"
    assert changed.json()["ticketId"] == ticket_id and changed.json()["status"] == "open"
    _, notice = await _fleet_mail(live, 2)
    assert notice.message["Subject"].startswith("Callback number changed")
    assert f"[Ticket #{ticket_id}]" in notice.message["Subject"]
    assert "+49407654321" in _plain(notice) and "+49407654321" in _html(notice)
    assert (await live.http.get(ORDER, headers=acc.auth)).json()["callbackPhone"] == "+49407654321"
    events = (await live.ticket(acc, ticket_id))["events"]
    [event] = [e for e in events if e["kind"] == "ticket.callback_phone_changed"]
    assert event["detail"] == {"from": "+49301234567", "to": "+49407654321"}

    # The same number again is no change and no email.
    same = await live.http.put(ORDER, headers=acc.auth, json={"callbackPhone": "+49407654321"})
    assert same.status_code == 200
    for bad in ({"callbackPhone": "call me"}, {}, {"callbackPhone": "12345"}):
        assert list(invalid_names(await live.http.put(ORDER, headers=acc.auth, json=bad))) == [
            "callbackPhone"
        ], bad
    removed = await live.http.put(ORDER, headers=acc.auth, json={"callbackPhone": None})
    assert removed.status_code == 200 and removed.json()["callbackPhone"] is None
    *_, gone = await _settled(live, 3)
    assert gone.message["Subject"].startswith("Callback number removed")
    assert "+49407654321" not in _plain(gone)


async def test_close_then_reopen_with_a_new_ticket(live: LiveRelay) -> None:
    acc = await _setup(live)
    first = (await live.http.post(ORDER, headers=acc.auth)).json()
    await _fleet_mail(live, 1)

    closed = await live.http.delete(ORDER, headers=acc.auth)
    assert closed.status_code == 200, closed.text
    assert closed.json() == {**first, "status": "closed"}
    _, notice = await _fleet_mail(live, 2)
    assert notice.message["Subject"].startswith("Closed:")
    assert f"[Ticket #{first['ticketId']}]" in notice.message["Subject"]
    assert "closed" in _plain(notice)
    assert (await live.http.get(ORDER, headers=acc.auth)).json()["status"] == "closed"

    again = await live.http.delete(ORDER, headers=acc.auth)
    assert "closed" in assert_problem(again, 409)["detail"]
    # A closed session takes no new callback number by email.
    quiet = await live.http.put(ORDER, headers=acc.auth, json={"callbackPhone": "+49301234567"})
    assert quiet.status_code == 200 and quiet.json()["status"] == "closed"

    reopened = await live.http.post(ORDER, headers=acc.auth, json={"callbackPhone": "+4930555666"})
    assert reopened.status_code == 201, reopened.text
    second = reopened.json()
    assert second["ticketId"] != first["ticketId"] and second["status"] == "open"
    assert second["callbackPhone"] == "+4930555666"
    assert (await live.http.get(ORDER, headers=acc.auth)).json() == second
    *_, opened = await _settled(live, 3)
    assert f"[Ticket #{second['ticketId']}]" in opened.message["Subject"]
    assert (await live.ticket(acc, first["ticketId"]))["status"] == "closed"


async def test_unknown_and_foreign_orders_are_404(live: LiveRelay) -> None:
    acc = await _setup(live)
    other = await second_partner(live, acc, "desk@other.example")
    opened = await live.http.post(ORDER, headers=acc.auth, json={"callbackPhone": "+49301234567"})
    assert opened.status_code == 201
    calls: list[tuple[str, str, Any]] = [
        ("GET", "", None),
        ("POST", "", None),
        ("PUT", "", {"callbackPhone": "+49301234567"}),
        ("DELETE", "", None),
        ("GET", "/agent", None),
        ("PUT", "/agent", {"name": "Eve"}),
        ("DELETE", "/agent", None),
    ]
    for who, order in ((acc, "ORD-404"), (other, "ORD-7")):
        for method, suffix, body in calls:
            response = await live.http.request(
                method, f"/v1/support/orders/{order}{suffix}", headers=who.auth, json=body
            )
            assert_problem(response, 404)
            assert "ORD-7" not in response.text and "+49" not in response.text
    for method, suffix, body in calls:
        response = await live.http.request(method, f"{ORDER}{suffix}", json=body)
        assert_problem(response, 401)
    # The owner's session is untouched.
    assert (await live.http.get(ORDER, headers=acc.auth)).json() == opened.json()
    await _settled(live, 1)


async def test_agent_follows_fleet_replies_until_the_partner_names_one(live: LiveRelay) -> None:
    acc = await _setup(live)
    assert_problem(await _agent(live, acc), 404)  # no session yet
    session = (await live.http.post(ORDER, headers=acc.auth)).json()
    assert_problem(await _agent(live, acc), 404)  # no one has answered yet
    assert_problem(await live.http.delete(f"{ORDER}/agent", headers=acc.auth), 404)
    [mail] = await _fleet_mail(live, 1)

    await _fleet_reply(live, mail, '"Marta Kowalska" <dispatch@fleet.example>', "On it.")
    agent = await _wait_agent(live, acc, "Marta Kowalska")
    assert agent["source"] == "fleet" and agent["phone"] is None
    assert (await live.http.get(ORDER, headers=acc.auth)).json()["agent"] == agent
    # A later reply under another name takes over while the fleet is the source.
    await _fleet_reply(live, mail, '"Jan Nowak" <dispatch@fleet.example>', "Found it.")
    assert (await _wait_agent(live, acc, "Jan Nowak"))["source"] == "fleet"

    named = await live.http.put(
        f"{ORDER}/agent", headers=acc.auth, json={"name": "  Ola Lis ", "phone": "+48 22 1234567"}
    )
    assert named.status_code == 200, named.text
    assert named.json()["name"] == "Ola Lis" and named.json()["source"] == "partner"
    assert named.json()["phone"] == "+48221234567"
    await _fleet_reply(live, mail, '"Piotr Zielinski" <dispatch@fleet.example>', "Driver says hi.")
    detail = None
    for _ in range(100):  # the reply is stored before the agent would be looked at again
        detail = await live.ticket(acc, session["ticketId"])
        if sum(m["author"] == "fleet" for m in detail["conversation"]) == 3:
            break
        await asyncio.sleep(0.05)
    assert detail is not None
    assert sum(m["author"] == "fleet" for m in detail["conversation"]) == 3
    kept = (await _agent(live, acc)).json()
    assert kept["name"] == "Ola Lis" and kept["source"] == "partner"
    assert kept["phone"] == "+48221234567"

    for bad in ({}, {"name": "  "}, {"name": "X", "phone": "call me"}, {"name": "X", "age": 3}):
        refused = await live.http.put(f"{ORDER}/agent", headers=acc.auth, json=bad)
        assert_problem(refused, 422)
    assert (await _agent(live, acc)).json()["name"] == "Ola Lis"

    deleted = await live.http.delete(f"{ORDER}/agent", headers=acc.auth)
    assert deleted.status_code == 204 and deleted.content == b""
    assert_problem(await _agent(live, acc), 404)
    assert (await live.http.get(ORDER, headers=acc.auth)).json()["agent"] is None
    assert_problem(await live.http.delete(f"{ORDER}/agent", headers=acc.auth), 404)
    # With the partner's agent gone, the fleet's next reply names one again.
    await _fleet_reply(live, mail, '"Marta Kowalska" <dispatch@fleet.example>', "Still here.")
    assert (await _wait_agent(live, acc, "Marta Kowalska"))["source"] == "fleet"

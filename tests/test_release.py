"""The partner releases held or quarantined mail: forwarded once, threaded, with its files."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import Database
from tests.harness import FLEET_INBOX, PARTNER_INBOX, Accounts, LiveRelay, live_relay, reply_mail


@pytest.fixture
async def strict(database: Database) -> AsyncIterator[LiveRelay]:
    """A relay that quarantines unauthenticated mail."""
    async with live_relay(database.url, database.schema, auth_policy="quarantine") as relay:
        yield relay


@pytest.fixture
async def loopy(database: Database) -> AsyncIterator[LiveRelay]:
    """A relay that holds every mail to an alias after the first within the hour."""
    async with live_relay(database.url, database.schema, loop_max_messages=1) as relay:
        yield relay


async def release(live: LiveRelay, acc: Accounts, ticket_id: int, message_id: int) -> Any:
    return await live.http.post(
        f"/v1/support/tickets/{ticket_id}/messages/{message_id}/release", headers=acc.auth
    )


async def test_quarantined_mail_is_forwarded_once_when_released(strict: LiveRelay) -> None:
    live = strict
    acc, ticket_id, alias = await live.fleet_ticket()
    reply = reply_mail(FLEET_INBOX, alias, "Found it under the seat.")
    reply.add_attachment(
        b"%PDF-1.4 receipt", maintype="application", subtype="pdf", filename="receipt.pdf"
    )
    await live.send(reply, alias)
    message = (await live.ticket(acc, ticket_id))["conversation"][-1]
    assert message["disposition"] == "quarantined"
    await asyncio.sleep(0.3)
    assert live.sink.handler.for_rcpt(PARTNER_INBOX) == []

    released = await release(live, acc, ticket_id, message["id"])

    assert released.status_code == 200, released.text
    assert released.json()["disposition"] == "forwarded"
    assert "released by the partner" in released.json()["dispositionReason"]
    [forward] = await live.sink.handler.wait_for(PARTNER_INBOX)
    assert "Found it under the seat." in forward.text()
    names = [part.get_filename() for part in forward.message.iter_attachments()]
    assert names == ["receipt.pdf"]
    assert FLEET_INBOX not in forward.raw.decode(errors="replace")
    events = [e["kind"] for e in (await live.ticket(acc, ticket_id))["events"]]
    assert events.count("message.released") == 1

    again = await release(live, acc, ticket_id, message["id"])
    assert again.status_code == 409
    assert again.headers["content-type"].startswith("application/problem+json")
    await asyncio.sleep(0.3)
    assert len(live.sink.handler.for_rcpt(PARTNER_INBOX)) == 1


async def test_held_mail_can_be_released(loopy: LiveRelay) -> None:
    live = loopy
    acc, ticket_id, alias = await live.fleet_ticket()
    await live.send(reply_mail(FLEET_INBOX, alias, "First."), alias)
    await live.send(reply_mail(FLEET_INBOX, alias, "Second."), alias)
    held = (await live.ticket(acc, ticket_id))["conversation"][-1]
    assert held["disposition"] == "held"

    assert (await release(live, acc, ticket_id, held["id"])).status_code == 200
    forwards = await live.sink.handler.wait_for(PARTNER_INBOX, count=2)
    assert "Second." in forwards[1].text()


async def test_only_the_owner_releases_and_only_kept_mail(strict: LiveRelay) -> None:
    live = strict
    acc, ticket_id, alias = await live.fleet_ticket()
    await live.send(reply_mail(FLEET_INBOX, alias, "Quarantined."), alias)
    detail = await live.ticket(acc, ticket_id)
    opening, kept = detail["conversation"][0], detail["conversation"][-1]

    other = await live.add_partner(name="Other", email="other@partner.example")
    stranger = Accounts(other["id"], other["apiKey"], acc.fleet_id)
    assert (await release(live, stranger, ticket_id, kept["id"])).status_code == 404
    assert (await release(live, acc, ticket_id, 99_999)).status_code == 404
    not_kept = await release(live, acc, ticket_id, opening["id"])
    assert not_kept.status_code == 409
    assert "forwarded" in not_kept.json()["detail"]
    after = await live.ticket(acc, ticket_id)
    assert after["conversation"][-1]["disposition"] == "quarantined"


async def test_two_releases_at_once_forward_once(strict: LiveRelay) -> None:
    live = strict
    acc, ticket_id, alias = await live.fleet_ticket()
    await live.send(reply_mail(FLEET_INBOX, alias, "Found it."), alias)
    message = (await live.ticket(acc, ticket_id))["conversation"][-1]
    assert message["disposition"] == "quarantined"

    answers = await asyncio.gather(
        *(release(live, acc, ticket_id, message["id"]) for _ in range(4))
    )

    assert sorted(a.status_code for a in answers) == [200, 409, 409, 409]
    await live.sink.handler.wait_for(PARTNER_INBOX)
    await asyncio.sleep(0.5)  # a second forward would have arrived by now
    assert len(live.sink.handler.for_rcpt(PARTNER_INBOX)) == 1
    events = [e["kind"] for e in (await live.ticket(acc, ticket_id))["events"]]
    assert events.count("message.released") == 1

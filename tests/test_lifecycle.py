"""Ticket lifecycle and partner messages: transitions, events, fleet notices, internal notes."""

from __future__ import annotations

from datetime import timedelta

import aiosmtplib
import pytest
from sqlmodel import select

from relay.errors import Conflict
from relay.lifecycle import check_transition
from storage.db import transaction
from storage.models import Ticket
from storage.types import utcnow
from tests.conftest import Database
from tests.harness import FLEET_INBOX, PARTNER_INBOX, Accounts, LiveRelay, live_relay, reply_mail


async def _patch(
    live: LiveRelay, acc: Accounts, ticket_id: int, **body: object
) -> tuple[int, dict]:
    response = await live.http.patch(
        f"/v1/support/tickets/{ticket_id}", headers=acc.auth, json=body
    )
    return response.status_code, response.json()


@pytest.mark.parametrize(
    ("current", "target", "allowed"),
    [
        ("open", "processing", True),
        ("open", "closed", True),
        ("processing", "open", True),
        ("processing", "closed", True),
        ("closed", "open", True),
        ("closed", "processing", False),
        ("open", "open", False),
        ("processing", "processing", False),
        ("closed", "closed", False),
    ],
)
def test_transition_rules(current: str, target: str, allowed: bool) -> None:
    if allowed:
        check_transition(current, target)
    else:
        with pytest.raises(Conflict):
            check_transition(current, target)


async def test_status_changes_are_events_and_the_fleet_hears_of_close_and_reopen(
    live: LiveRelay,
) -> None:
    acc, ticket_id, alias = await live.fleet_ticket()
    status, body = await _patch(live, acc, ticket_id, status="processing", priority="urgent")
    assert status == 200 and body["status"] == "processing" and body["priority"] == "urgent"
    status, body = await _patch(live, acc, ticket_id, status="closed")
    assert status == 200 and body["status"] == "closed"
    status, problem = await _patch(live, acc, ticket_id, status="closed")
    assert status == 409 and problem["detail"] == "Ticket is already closed."
    status, problem = await _patch(live, acc, ticket_id, status="processing")
    assert status == 409 and "reopen it first" in problem["detail"]
    status, body = await _patch(live, acc, ticket_id, status="open")
    assert status == 200 and body["status"] == "open"

    changes = [e for e in body["events"] if e["kind"] == "ticket.status_changed"]
    assert [(e["detail"]["from"], e["detail"]["to"]) for e in changes] == [
        ("open", "processing"),
        ("processing", "closed"),
        ("closed", "open"),
    ]
    assert all(e["actor"] == "partner" and e["createdAt"] for e in changes)
    assert [
        e["detail"]["to"] for e in body["events"] if e["kind"] == "ticket.priority_changed"
    ] == ["urgent"]
    # Processing is internal to the partner; closing and reopening are news for the fleet.
    _, closed, reopened = await live.sink.handler.wait_for(FLEET_INBOX, count=3)
    assert closed.message["Subject"].startswith("Closed: [Ticket #")
    assert reopened.message["Subject"].startswith("Reopened: [Ticket #")
    for notice in (closed, reopened):
        assert notice.message["Reply-To"].addresses[0].addr_spec == alias
        assert PARTNER_INBOX.encode() not in notice.raw


async def test_patch_validation_and_isolation(live: LiveRelay) -> None:
    acc, ticket_id, _ = await live.fleet_ticket()
    status, problem = await _patch(live, acc, ticket_id, status="done")
    assert status == 422 and problem["invalidParams"][0]["name"] == "status"
    status, problem = await _patch(live, acc, ticket_id)
    assert status == 422
    other = await live.add_partner(name="Other", email="other@partner2.example")
    response = await live.http.patch(
        f"/v1/support/tickets/{ticket_id}",
        headers={"Authorization": f"ApiKey {other['apiKey']}"},
        json={"status": "closed"},
    )
    assert response.status_code == 404
    assert (await live.ticket(acc, ticket_id))["status"] == "open"


async def test_partner_message_is_mailed_to_the_fleet_threaded_and_masked(live: LiveRelay) -> None:
    acc, ticket_id, alias = await live.fleet_ticket()
    upload = await live.http.post(
        "/v1/support/upload-attachment",
        headers=acc.auth,
        files={"file": ("map.txt", b"pickup at gate 4", "text/plain")},
    )
    token = upload.json()["resourceToken"]
    response = await live.http.post(
        f"/v1/support/tickets/{ticket_id}/messages",
        headers=acc.auth,
        json={"comment": f"Any news? Reach us at {PARTNER_INBOX}.", "attachments": [token]},
    )
    assert response.status_code == 201, response.text
    message = response.json()
    assert message["author"] == "partner" and not message["internal"]
    first, second = await live.sink.handler.wait_for(FLEET_INBOX, count=2)
    assert second.message["From"].addresses[0].addr_spec == alias
    assert second.message["In-Reply-To"] == first.message["Message-ID"]
    assert PARTNER_INBOX.encode() not in second.raw
    assert [p.get_filename() for p in second.message.iter_attachments()] == ["map.txt"]
    assert "Any news?" in second.text()
    # The token was used up by that message.
    again = await live.http.post(
        f"/v1/support/tickets/{ticket_id}/messages",
        headers=acc.auth,
        json={"comment": "again", "attachments": [token]},
    )
    assert again.status_code == 404


async def test_internal_note_is_kept_but_never_sent(live: LiveRelay) -> None:
    acc, ticket_id, _ = await live.fleet_ticket()
    response = await live.http.post(
        f"/v1/support/tickets/{ticket_id}/messages",
        headers=acc.auth,
        json={"comment": "Customer is a VIP, be gentle.", "internal": True},
    )
    assert response.status_code == 201 and response.json()["internal"] is True
    # A later normal message proves the worker ran after the note: still only two emails.
    await live.http.post(
        f"/v1/support/tickets/{ticket_id}/messages", headers=acc.auth, json={"comment": "Hello?"}
    )
    mails = await live.sink.handler.wait_for(FLEET_INBOX, count=2)
    assert len(live.sink.handler.messages) == 2
    assert all(b"VIP" not in m.raw for m in mails)
    detail = await live.ticket(acc, ticket_id)
    assert [m["internal"] for m in detail["conversation"]] == [False, True, False]


async def test_message_to_a_closed_ticket_needs_a_reopen(live: LiveRelay) -> None:
    acc, ticket_id, _ = await live.fleet_ticket()
    await _patch(live, acc, ticket_id, status="closed")
    response = await live.http.post(
        f"/v1/support/tickets/{ticket_id}/messages", headers=acc.auth, json={"comment": "hi"}
    )
    assert response.status_code == 409 and "reopen" in response.json()["detail"]


async def test_fleet_mail_reopens_a_recently_closed_ticket(live: LiveRelay) -> None:
    acc, ticket_id, alias = await live.fleet_ticket()
    await _patch(live, acc, ticket_id, status="closed")
    reply = await live.send(reply_mail(FLEET_INBOX, alias, "One more thing..."), alias)
    assert reply.startswith("2.0.0")
    detail = await live.ticket(acc, ticket_id)
    assert detail["status"] == "open"
    reopen = [e for e in detail["events"] if e["kind"] == "ticket.status_changed"][-1]
    assert reopen["actor"] == "fleet" and reopen["detail"]["to"] == "open"
    [forward] = await live.sink.handler.wait_for(PARTNER_INBOX)
    assert "One more thing" in forward.text()


async def test_fleet_mail_after_the_window_is_refused_with_a_clear_text(database: Database) -> None:
    async with live_relay(database.url, database.schema, reopen_window=3600) as live:
        acc, ticket_id, alias = await live.fleet_ticket()
        await _patch(live, acc, ticket_id, status="closed")
        async with transaction(live.relay.sessions) as session:
            ticket = (await session.exec(select(Ticket).where(Ticket.id == ticket_id))).one()
            ticket.closed_at = utcnow() - timedelta(hours=2)
            session.add(ticket)
        with pytest.raises(aiosmtplib.SMTPResponseException) as err:
            await live.send(reply_mail(FLEET_INBOX, alias, "too late"), alias)
        assert err.value.code == 550 and err.value.message.startswith("5.2.1")
        assert f"Ticket #{ticket_id} was closed on" in err.value.message
        detail = await live.ticket(acc, ticket_id)
        assert detail["status"] == "closed" and len(detail["conversation"]) == 2

"""Signed bounce addresses and delivery reports, end to end through SMTP and the API."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from relay.bounces import BounceAddresses
from relay.delivery_reports import read_report
from relay.sink import Received
from storage.types import utcnow
from tests.harness import FLEET_INBOX, PARTNER_INBOX, Accounts, LiveRelay, reply_mail


def dsn(
    bounce_address: str,
    recipient: str,
    *,
    action: str = "failed",
    status: str = "5.1.1",
    diagnostic: str = "smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown",
) -> bytes:
    """A delivery status notification as Postfix writes one (RFC 3464)."""
    diagnostic = diagnostic.format(rcpt=recipient)
    return (
        f"Return-Path: <>\r\n"
        f"From: MAILER-DAEMON@mx.fleet.example (Mail Delivery System)\r\n"
        f"To: {bounce_address}\r\n"
        f"Subject: Undelivered Mail Returned to Sender\r\n"
        f"Auto-Submitted: auto-replied\r\n"
        f"MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="B1"\r\n'
        f"\r\n"
        f"--B1\r\n"
        f"Content-Type: text/plain\r\n"
        f"\r\n"
        f"I'm sorry to have to inform you that your message could not\r\n"
        f"be delivered to one or more recipients.\r\n"
        f"\r\n"
        f"--B1\r\n"
        f"Content-Type: message/delivery-status\r\n"
        f"\r\n"
        f"Reporting-MTA: dns; mx.fleet.example\r\n"
        f"Arrival-Date: Sat, 21 Nov 2026 10:00:00 +0000\r\n"
        f"\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        f"Original-Recipient: rfc822;{recipient}\r\n"
        f"Action: {action}\r\n"
        f"Status: {status}\r\n"
        f"Diagnostic-Code: {diagnostic}\r\n"
        f"\r\n"
        f"--B1\r\n"
        f"Content-Type: text/rfc822-headers\r\n"
        f"\r\n"
        f"Subject: Lost umbrella\r\n"
        f"\r\n"
        f"--B1--\r\n"
    ).encode()


def qmail_bounce(bounce_address: str, recipient: str) -> bytes:
    """qmail's plain-text failure notice: no DSN part at all."""
    return (
        f"From: MAILER-DAEMON@mx.fleet.example\r\n"
        f"To: {bounce_address}\r\n"
        f"Subject: failure notice\r\n"
        f"\r\n"
        f"Hi. This is the qmail-send program at mx.fleet.example.\r\n"
        f"I'm afraid I wasn't able to deliver your message to the following addresses.\r\n"
        f"This is a permanent error; I've given up. Sorry it didn't work out.\r\n"
        f"\r\n"
        f"<{recipient}>:\r\n"
        f"Sorry, no mailbox here by that name. (#5.1.1)\r\n"
        f"\r\n"
        f"--- Below this line is a copy of the message.\r\n"
        f"\r\n"
        f"Subject: Lost umbrella\r\n"
    ).encode()


async def opened(live: LiveRelay) -> tuple[Accounts, Any, Received]:
    """A ticket whose first email has reached the fleet's inbox."""
    acc = await live.accounts()
    await live.put_trip(acc)
    ticket = await live.open_ticket(acc)
    [mail] = await live.sink.handler.wait_for(FLEET_INBOX)
    await live.events(acc, ticket["id"], "delivery.sent")
    return acc, ticket, mail


def addresses_of(live: LiveRelay) -> BounceAddresses:
    assert live.relay.bounce_addresses is not None
    return live.relay.bounce_addresses


async def comment(live: LiveRelay, acc: Accounts, ticket_id: int, text: str) -> None:
    response = await live.http.post(
        f"/v1/support/tickets/{ticket_id}/messages", headers=acc.auth, json={"comment": text}
    )
    assert response.status_code == 201, response.text


async def test_each_message_has_its_own_signed_bounce_address(live: LiveRelay) -> None:
    acc, ticket, first = await opened(live)
    await comment(live, acc, ticket["id"], "Any news?")
    second = (await live.sink.handler.wait_for(FLEET_INBOX, count=2))[1]
    for mail in (first, second):
        local, _, domain = mail.mail_from.partition("@")
        assert domain == live.settings.domain
        assert local.startswith("bounce-")
        assert addresses_of(live).verify(local, utcnow()) is not None
    assert first.mail_from != second.mail_from
    # Nothing in the envelope sender names the partner or the fleet.
    assert "partner" not in first.mail_from and "fleet" not in first.mail_from


async def test_a_dsn_marks_the_message_bounced_and_suppresses_the_address(
    live: LiveRelay,
) -> None:
    acc, ticket, mail = await opened(live)
    reply = await live.send(dsn(mail.mail_from, FLEET_INBOX), mail.mail_from, mail_from="")
    assert reply.startswith("2.0.0") or "OK" in reply

    [event] = await live.events(acc, ticket["id"], "delivery.bounced")
    assert event["detail"]["bounceType"] == "hard"
    assert event["detail"]["status"] == "5.1.1"
    assert event["detail"]["to"] == "fleet"
    assert event["detail"]["suppressed"] is True
    # The partner never learns the fleet's address, not even from the remote server's words.
    assert FLEET_INBOX not in str(await live.ticket(acc, ticket["id"]))

    detail = await live.ticket(acc, ticket["id"])
    assert detail["reachability"]["fleet"]["reachable"] is False
    assert detail["reachability"]["fleet"]["status"] == "5.1.1"
    assert detail["reachability"]["partner"] == {"reachable": True, "since": None, "status": None}

    # The next message to the fleet is not sent: it fails as suppressed.
    await comment(live, acc, ticket["id"], "Hello?")
    [suppressed] = await live.events(acc, ticket["id"], "delivery.suppressed")
    assert suppressed["detail"]["to"] == "fleet"
    assert len(live.sink.handler.for_rcpt(FLEET_INBOX)) == 1

    listed = await live.http.get("/v1/admin/suppressions", headers=live.admin)
    assert [s["address"] for s in listed.json()["suppressions"]] == [FLEET_INBOX]
    assert listed.json()["suppressions"][0]["status"] == "5.1.1"


async def test_an_operator_clears_a_suppression(live: LiveRelay) -> None:
    acc, ticket, mail = await opened(live)
    await live.send(dsn(mail.mail_from, FLEET_INBOX), mail.mail_from, mail_from="")
    await live.events(acc, ticket["id"], "delivery.bounced")

    cleared = await live.http.delete(f"/v1/admin/suppressions/{FLEET_INBOX}", headers=live.admin)
    assert cleared.status_code == 204
    again = await live.http.delete(f"/v1/admin/suppressions/{FLEET_INBOX}", headers=live.admin)
    assert again.status_code == 404
    assert again.headers["content-type"].startswith("application/problem+json")

    assert (await live.ticket(acc, ticket["id"]))["reachability"]["fleet"]["reachable"] is True
    await comment(live, acc, ticket["id"], "Back again")
    await live.sink.handler.wait_for(FLEET_INBOX, count=2)


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda a, good: good.replace(good.split("-")[-1][:4], "aaaa"), id="bad-mac"),
        pytest.param(
            # The right item and a fresh expiry, signed with a key that is not the relay's.
            lambda a, good: BounceAddresses(
                [b"not-the-relays-key" * 2], a.domain, a.ttl
            ).address_for(int(good.split("-")[1]), utcnow()),
            id="other-key",
        ),
        pytest.param(
            lambda a, good: a.address_for(
                int(good.split("-")[1]), utcnow() - a.ttl - timedelta(days=1)
            ),
            id="expired",
        ),
        pytest.param(lambda a, good: "bounce-1-2-3@x", id="malformed"),
        pytest.param(lambda a, good: "bounces@x", id="unsigned-legacy"),
    ],
)
async def test_a_forged_or_expired_bounce_changes_nothing(live: LiveRelay, forge: Any) -> None:
    acc, ticket, mail = await opened(live)
    good_local = mail.mail_from.partition("@")[0]
    forged_local = forge(addresses_of(live), good_local).partition("@")[0]
    forged = f"{forged_local}@{live.settings.domain}"
    before = await live.ticket(acc, ticket["id"])

    reply = await live.send(dsn(forged, FLEET_INBOX), forged, mail_from="")

    # Taken and dropped like a real report, so a forger learns nothing and nobody is answered.
    assert "delivery report received" in reply
    await asyncio.sleep(0.3)
    after = await live.ticket(acc, ticket["id"])
    assert after["events"] == before["events"]
    assert after["reachability"]["fleet"]["reachable"] is True
    listed = await live.http.get("/v1/admin/suppressions", headers=live.admin)
    assert listed.json()["suppressions"] == []
    assert live.sink.handler.for_rcpt(PARTNER_INBOX) == []


async def test_control_characters_in_a_report_are_not_stored(live: LiveRelay) -> None:
    acc, ticket, mail = await opened(live)
    hostile = dsn(mail.mail_from, FLEET_INBOX, diagnostic="smtp; 550 5.1.1 no\x00such\x1buser")
    await live.send(hostile, mail.mail_from, mail_from="")
    await live.events(acc, ticket["id"], "delivery.bounced")
    listed = await live.http.get("/v1/admin/suppressions", headers=live.admin)
    assert listed.json()["suppressions"][0]["diagnostic"] == "smtp; 550 5.1.1 no such user"


async def test_a_non_standard_bounce_is_understood(live: LiveRelay) -> None:
    acc, ticket, mail = await opened(live)
    await live.send(qmail_bounce(mail.mail_from, FLEET_INBOX), mail.mail_from, mail_from="")
    [event] = await live.events(acc, ticket["id"], "delivery.bounced")
    assert event["detail"]["bounceType"] == "hard"
    assert event["detail"]["status"] == "5.1.1"


def test_addresses_and_versions_in_a_report_are_not_status_codes() -> None:
    # Real reports carry Received lines with IP addresses and MTA versions; "10.4.0.12"
    # read as status 4.0.12 would turn this permanent failure into a soft one.
    raw = qmail_bounce("bounce-1@relay.localhost", FLEET_INBOX)
    raw = b"Received: from mx.fleet.example ([10.4.0.12]) by relay (Exim 4.94.2)\r\n" + raw.replace(
        b"(#5.1.1)", b"(Exim 4.94.2 says #5.1.1)"
    )
    report = read_report(raw)
    assert report is not None
    assert (report.kind, report.status) == ("hard", "5.1.1")
    assert read_report(raw.replace(b"#5.1.1", b"550 5.1.1")) == report
    assert read_report(raw.replace(b"#5.1.1", b"452-4.2.2")).kind == "soft"  # type: ignore[union-attr]


async def test_delay_then_soft_failure_never_suppresses(live: LiveRelay) -> None:
    acc, ticket, mail = await opened(live)
    delayed = dsn(
        mail.mail_from,
        FLEET_INBOX,
        action="delayed",
        status="4.2.2",
        diagnostic="smtp; 452 4.2.2 Mailbox full",
    )
    await live.send(delayed, mail.mail_from, mail_from="")
    [event] = await live.events(acc, ticket["id"], "delivery.delayed")
    assert event["detail"]["status"] == "4.2.2"

    # The same delay warning again adds nothing.
    await live.send(delayed, mail.mail_from, mail_from="")
    gave_up = dsn(
        mail.mail_from, FLEET_INBOX, status="4.4.7", diagnostic="smtp; 452 4.2.2 Mailbox full"
    )
    await live.send(gave_up, mail.mail_from, mail_from="")
    [bounced] = await live.events(acc, ticket["id"], "delivery.bounced")
    assert bounced["detail"]["bounceType"] == "soft"
    assert "suppressed" not in bounced["detail"]
    detail = await live.ticket(acc, ticket["id"])
    assert len([e for e in detail["events"] if e["kind"] == "delivery.delayed"]) == 1
    assert detail["reachability"]["fleet"]["reachable"] is True

    # A second copy of the final report is not a second bounce.
    await live.send(gave_up, mail.mail_from, mail_from="")
    await asyncio.sleep(0.2)
    detail = await live.ticket(acc, ticket["id"])
    assert len([e for e in detail["events"] if e["kind"] == "delivery.bounced"]) == 1


async def test_an_auto_reply_to_the_bounce_address_is_not_a_bounce(live: LiveRelay) -> None:
    acc, ticket, mail = await opened(live)
    vacation = reply_mail(
        FLEET_INBOX, mail.mail_from, "I am away until Monday.", subject="Out of office"
    )
    vacation["Auto-Submitted"] = "auto-replied"
    await live.send(vacation, mail.mail_from, mail_from="")
    await asyncio.sleep(0.3)
    detail = await live.ticket(acc, ticket["id"])
    assert not [e for e in detail["events"] if e["kind"].startswith("delivery.b")]
    assert detail["conversation"][-1]["body"] != "I am away until Monday."
    assert live.sink.handler.for_rcpt(PARTNER_INBOX) == []


async def test_a_bounce_from_the_partner_side_marks_the_partner_unreachable(
    live: LiveRelay,
) -> None:
    acc, ticket, mail = await opened(live)
    alias = mail.message["Reply-To"] or mail.message["From"]
    fleet_alias = alias.addresses[0].addr_spec
    await live.send(reply_mail(FLEET_INBOX, fleet_alias, "We found it."), fleet_alias)
    [forward] = await live.sink.handler.wait_for(PARTNER_INBOX)
    await live.send(dsn(forward.mail_from, PARTNER_INBOX), forward.mail_from, mail_from="")
    [event] = await live.events(acc, ticket["id"], "delivery.bounced")
    assert event["detail"]["to"] == "partner"
    detail = await live.ticket(acc, ticket["id"])
    assert detail["reachability"]["partner"]["reachable"] is False
    assert detail["reachability"]["fleet"]["reachable"] is True


async def test_a_report_that_outruns_the_send_stays_the_truth(live: LiveRelay) -> None:
    """The remote side bounces the message before our smarthost's 250 reaches the worker:
    the row stays bounced with the report's diagnostic, and no 'sent' follows 'bounced'."""
    from sqlmodel import col, select

    from relay.sink import SinkHandler
    from storage.models import OutboxItem

    handler = live.sink.handler
    answer = SinkHandler.handle_DATA.__get__(handler)

    async def report_first(server: Any, session: Any, envelope: Any) -> str:
        report = dsn(envelope.mail_from, FLEET_INBOX, diagnostic="smtp; 550 5.1.1 no such user")
        await live.send(report, envelope.mail_from, mail_from="")
        return await answer(server, session, envelope)

    # aiosmtpd binds its hooks per connection: set before the worker's first connection.
    handler.handle_DATA = report_first  # type: ignore[method-assign]
    acc = await live.accounts()
    await live.put_trip(acc)
    ticket = await live.open_ticket(acc)
    await live.events(acc, ticket["id"], "delivery.bounced")
    for _ in range(200):  # until the worker has recorded its round
        async with live.relay.sessions() as session:
            query = select(OutboxItem).where(col(OutboxItem.ticket_id) == ticket["id"])
            row = (await session.exec(query)).one()
        if row.lease_owner is None:
            break
        await asyncio.sleep(0.05)
    assert row.status == "bounced" and row.lease_owner is None
    assert row.last_error is not None and "no such user" in row.last_error
    kinds = [e["kind"] for e in (await live.ticket(acc, ticket["id"]))["events"]]
    assert "delivery.bounced" in kinds and "delivery.sent" not in kinds

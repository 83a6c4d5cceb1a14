"""The core loop over real sockets: API → fleet inbox → SMTP reply → partner inbox → and back."""

from __future__ import annotations

import base64

from tests.conftest import Database
from tests.harness import FLEET_INBOX, PARTNER_INBOX, LiveRelay, live_relay, reply_mail

FORBIDDEN_HEADERS = (
    "Received",
    "Return-Path",
    "Sender",
    "DKIM-Signature",
    "X-Originating-IP",
    "X-Mailer",
    "Authentication-Results",
)


async def _upload(live: LiveRelay, auth: dict[str, str], name: str, data: bytes, ctype: str) -> str:
    response = await live.http.post(
        "/v1/support/upload-attachment", headers=auth, files={"file": (name, data, ctype)}
    )
    assert response.status_code == 201, response.text
    token = response.json()["resourceToken"]
    assert isinstance(token, str)
    return token


async def test_full_round_trip_is_masked_both_ways(live: LiveRelay) -> None:
    acc = await live.accounts()
    trip = await live.put_trip(acc, "BK-77", vehicle="Grey Skoda Octavia", driverName="Marc")
    token = await _upload(
        live, acc.auth, "photo.png", b"\x89PNG\r\n\x1a\n fake image bytes", "image/png"
    )
    ticket = await live.open_ticket(
        acc,
        "BK-77",
        subject="Lost umbrella",
        comment=f"Jane left her umbrella. Write to {PARTNER_INBOX} if needed.",
        attachments=[token],
    )
    assert ticket["status"] == "open" and ticket["tripId"] == trip["id"]

    # The fleet's inbox: well-formed, from the fleet-facing alias, no partner address anywhere.
    [to_fleet] = await live.sink.handler.wait_for(FLEET_INBOX)
    msg = to_fleet.message
    fleet_alias = msg["Reply-To"].addresses[0].addr_spec
    assert msg["From"].addresses[0].addr_spec == fleet_alias
    assert msg["From"].addresses[0].display_name == "Acme Travel via support"
    assert fleet_alias.endswith("@relay.localhost")
    assert f"[Ticket #{ticket['id']}]" in msg["Subject"]
    assert PARTNER_INBOX.encode() not in to_fleet.raw.lower()
    assert msg.get_content_type() == "multipart/mixed"
    text = msg.get_body(preferencelist=("plain",)).get_content()
    html = msg.get_body(preferencelist=("html",)).get_content()
    for expected in (
        trip["id"],
        "BK-77",
        "1 Main Street",
        "Airport T2",
        "Jane Doe",
        "Grey Skoda",
        "Marc",
    ):
        assert expected in text and expected in html
    assert "Jane left her umbrella" in text and fleet_alias in text
    [attachment] = list(msg.iter_attachments())
    assert attachment.get_filename() == "photo.png"
    assert attachment.get_content() == b"\x89PNG\r\n\x1a\n fake image bytes"

    # The fleet answers with an ordinary mail client, quoting its own address.
    answer = reply_mail(
        FLEET_INBOX,
        fleet_alias,
        f"Found it. Call us via {FLEET_INBOX.upper()} any time.",
        cites=msg["Message-ID"],
        Received="from mx.fleet.example (10.1.2.3) by mail.fleet.example",
        X_Originating_IP="[10.1.2.3]",
        DKIM_Signature="v=1; d=fleet.example; s=sel; b=abc",
        Sender="dispatcher@fleet.example",
    )
    reply = await live.send(answer, fleet_alias)
    assert reply.startswith("2.0.0")

    [to_partner] = await live.sink.handler.wait_for(PARTNER_INBOX)
    pmsg = to_partner.message
    partner_alias = pmsg["Reply-To"].addresses[0].addr_spec
    assert partner_alias != fleet_alias and partner_alias.endswith("@relay.localhost")
    assert pmsg["From"].addresses[0].display_name == "City Cabs via support"
    assert pmsg["To"].addresses[0].addr_spec == PARTNER_INBOX
    assert pmsg["Message-ID"].endswith("@relay.localhost>")
    assert pmsg["Message-ID"] != answer["Message-ID"]
    for name in FORBIDDEN_HEADERS:
        assert pmsg[name] is None, name
    raw = to_partner.raw.lower()
    for leak in (b"fleet.example", b"10.1.2.3", answer["Message-ID"].lower().encode()):
        assert leak not in raw
    assert "Found it." in pmsg.get_body(preferencelist=("plain",)).get_content()
    assert partner_alias in pmsg.get_body(preferencelist=("plain",)).get_content()

    # The partner answers by email; the fleet gets it masked the same way, threaded.
    back = reply_mail(
        PARTNER_INBOX, partner_alias, "Thanks! Jane comes by at 9.", cites=pmsg["Message-ID"]
    )
    assert (await live.send(back, partner_alias, mail_from=PARTNER_INBOX)).startswith("2.0.0")
    first, second = await live.sink.handler.wait_for(FLEET_INBOX, count=2)
    fmsg = second.message
    assert (
        PARTNER_INBOX.encode() not in second.raw.lower()
        and b"partner.example" not in second.raw.lower()
    )
    assert fmsg["From"].addresses[0].addr_spec == fleet_alias
    assert fmsg["In-Reply-To"] == answer["Message-ID"]  # the fleet's own id: its client threads it
    assert msg["Message-ID"] in fmsg["References"]
    assert back["Message-ID"] not in second.raw.decode()

    assert len(await live.events(acc, ticket["id"], "delivery.sent", 3)) == 3
    detail = await live.ticket(acc, ticket["id"])
    authors = [(m["author"], m["via"]) for m in detail["conversation"]]
    assert authors == [("partner", "api"), ("fleet", "email"), ("partner", "email")]
    assert all(FLEET_INBOX not in m["body"].lower() for m in detail["conversation"])
    assert [a["filename"] for a in detail["attachments"]] == ["photo.png"]
    kinds = [e["kind"] for e in detail["events"]]
    assert kinds.count("message.received") == 2 and "ticket.created" in kinds


async def test_fleet_attachment_is_forwarded_and_stored(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    ticket = await live.open_ticket(acc)
    [to_fleet] = await live.sink.handler.wait_for(FLEET_INBOX)
    alias = to_fleet.message["Reply-To"].addresses[0].addr_spec
    answer = reply_mail(FLEET_INBOX, alias, "Receipt attached.")
    answer.add_attachment(
        b"%PDF-1.4 receipt", maintype="application", subtype="pdf", filename="receipt.pdf"
    )
    await live.send(answer, alias)
    [to_partner] = await live.sink.handler.wait_for(PARTNER_INBOX)
    [part] = list(to_partner.message.iter_attachments())
    assert part.get_filename() == "receipt.pdf" and part.get_content() == b"%PDF-1.4 receipt"
    detail = await live.ticket(acc, ticket["id"])
    assert [a["filename"] for a in detail["attachments"]] == ["receipt.pdf"]
    assert detail["conversation"][1]["attachments"] == [detail["attachments"][0]["id"]]


async def test_encoded_subject_with_line_break_cannot_inject_headers(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    evil = "Help\r\nBcc: victim@evil.example\r\nX-Injected: yes"
    await live.open_ticket(acc, subject=evil, comment="body")
    [to_fleet] = await live.sink.handler.wait_for(FLEET_INBOX)
    assert to_fleet.message["Bcc"] is None and to_fleet.message["X-Injected"] is None
    assert to_fleet.rcpt_to == [FLEET_INBOX]
    # An RFC 2047 word hiding a CRLF, sent as raw bytes the way an attacker would.
    alias = to_fleet.message["Reply-To"].addresses[0].addr_spec
    sneaky = "=?utf-8?b?" + base64.b64encode(b"Hi\r\nBcc: victim@evil.example").decode() + "?="
    raw = (
        f"From: {FLEET_INBOX}\r\nTo: {alias}\r\nSubject: {sneaky}\r\n"
        f"Message-ID: <sneaky-1@fleet.example>\r\nX-Note: {sneaky}\r\n\r\nok\r\n"
    ).encode()
    await live.send(raw, alias)
    [to_partner] = await live.sink.handler.wait_for(PARTNER_INBOX)
    head = to_partner.raw.split(b"\r\n\r\n", 1)[0]
    assert to_partner.message["Bcc"] is None and to_partner.message["X-Note"] is None
    assert b"\r\nBcc:" not in head and b"\r\nX-Injected:" not in head
    assert to_partner.rcpt_to == [PARTNER_INBOX]


async def test_message_ids_that_are_not_rfc_5322_never_reach_an_outgoing_header(
    live: LiveRelay,
) -> None:
    """A msg-id is printable ASCII. A partner client sending UTF-8 or control characters in
    one must not get that text copied into the headers of mail we send back to it (nor
    make composing those headers fail, which would refuse every later reply with 451)."""
    acc, ticket_id, fleet_alias = await live.fleet_ticket()
    assert await live.send(reply_mail(FLEET_INBOX, fleet_alias, "First."), fleet_alias)
    [first] = await live.sink.handler.wait_for(PARTNER_INBOX)
    partner_alias = first.message["Reply-To"].addresses[0].addr_spec

    odd = (
        f"From: {PARTNER_INBOX}\r\nTo: {partner_alias}\r\nSubject: Re: ticket\r\n"
        "Message-ID: <\u00fc-1@partner.example>\r\n"
        f"In-Reply-To: {first.message['Message-ID']}\r\n"
        "References: <ctl\x01id@partner.example>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nThanks, tomorrow is fine.\r\n"
    ).encode()
    assert (await live.send(odd, partner_alias, mail_from=PARTNER_INBOX)).startswith("2.0.0")
    await live.sink.handler.wait_for(FLEET_INBOX, count=2)

    second = reply_mail(FLEET_INBOX, fleet_alias, "We will bring it tomorrow.")
    assert (await live.send(second, fleet_alias)).startswith("2.0.0")
    [_, forwarded] = await live.sink.handler.wait_for(PARTNER_INBOX, count=2)
    head = forwarded.raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii() and b"\x01" not in head
    assert "We will bring it tomorrow." in forwarded.message.get_body(("plain",)).get_content()


async def test_a_long_conversation_threads_under_its_newest_messages(database: Database) -> None:
    # 23 fleet replies on one ticket; the mail-loop guard must not hold them for this test.
    async with live_relay(database.url, database.schema, loop_max_messages=100) as live:
        acc, _, fleet_alias = await live.fleet_ticket()
        for n in range(1, 24):
            reply = reply_mail(FLEET_INBOX, fleet_alias, f"Update number {n} from dispatch.")
            assert (await live.send(reply, fleet_alias)).startswith("2.0.0")
        forwards = await live.sink.handler.wait_for(PARTNER_INBOX, count=23)
        by_number = {}
        for mail in forwards:
            text = mail.message.get_body(preferencelist=("plain",)).get_content()
            by_number[int(text.split("Update number ")[1].split()[0])] = mail.message
        last = by_number[23]
        # The partner's ids of the 20 messages before the last, oldest first; the ticket's
        # opening message and replies 1 and 2 fall off the front.
        expected = [by_number[n]["Message-ID"] for n in range(3, 23)]
        assert last["References"].split() == expected
        assert last["In-Reply-To"] == by_number[22]["Message-ID"]

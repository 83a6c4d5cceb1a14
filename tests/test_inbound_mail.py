"""Inbound mail as it really arrives, end to end through the SMTP socket: reply text, HTML,
attachments, automatic mail, loops, third parties, other tickets cited, the raw download."""

from __future__ import annotations

import asyncio
import email
from email import policy
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any
from urllib.parse import quote

import aiosmtplib
import pytest

from tests.harness import FLEET_INBOX, PARTNER_INBOX, Accounts, LiveRelay, live_relay, reply_mail

COLLEAGUE = "night-shift@fleet.example"


async def _ticket(live: LiveRelay, acc: Accounts | None = None) -> tuple[Accounts, int, str, str]:
    """(accounts, ticket id, the fleet's alias, the Message-ID the fleet got)."""
    acc = acc or await live.accounts()
    await live.put_trip(acc)
    before = len(live.sink.handler.for_rcpt(FLEET_INBOX))
    ticket = await live.open_ticket(acc)
    mails = await live.sink.handler.wait_for(FLEET_INBOX, before + 1)
    msg = mails[-1].message
    return acc, ticket["id"], msg["Reply-To"].addresses[0].addr_spec, msg["Message-ID"]


async def _send_refused(live: LiveRelay, data: bytes, rcpt: str) -> tuple[int, str]:
    with pytest.raises(aiosmtplib.SMTPResponseException) as err:
        await live.send(data, rcpt)
    return err.value.code, err.value.message


def _conversation(detail: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in detail["conversation"] if m["via"] == "email"]


async def test_forward_shows_the_new_text_first_and_keeps_the_quote(live: LiveRelay) -> None:
    acc, ticket_id, alias, cited = await _ticket(live)
    body = (
        "Yes, the driver found it. He will bring it tomorrow.\n"
        "\n"
        "Sent from my iPhone\n"
        "\n"
        f"On Tue, 17 Nov 2026 at 09:12, Acme Travel via support <{alias}> wrote:\n"
        "> A blue umbrella was left in the car.\n"
        "> Please check.\n"
    )
    await live.send(reply_mail(FLEET_INBOX, alias, body, cites=cited), alias)
    [forward] = await live.sink.handler.wait_for(PARTNER_INBOX)
    [message] = _conversation(await live.ticket(acc, ticket_id))
    assert message["body"] == "Yes, the driver found it. He will bring it tomorrow."
    assert "> A blue umbrella was left in the car." in message["quoted"]
    assert "Sent from my iPhone" in message["quoted"]
    assert message["disposition"] == "forwarded" and message["hasRaw"] is True
    text = forward.message.get_body(preferencelist=("plain",)).get_content()
    new_at = text.index("Yes, the driver found it.")
    earlier_at = text.index("Earlier in the conversation")
    assert new_at < earlier_at < text.index("> Please check.")
    html = forward.message.get_body(preferencelist=("html",)).get_content()
    assert "Earlier in the conversation" in html and "Please check." in html


async def test_stripping_that_would_leave_nothing_keeps_everything(live: LiveRelay) -> None:
    acc, ticket_id, alias, _ = await _ticket(live)
    await live.send(reply_mail(FLEET_INBOX, alias, "> only a quote\n> nothing new"), alias)
    await live.sink.handler.wait_for(PARTNER_INBOX)
    [message] = _conversation(await live.ticket(acc, ticket_id))
    assert message["body"] == "> only a quote\n> nothing new" and message["quoted"] is None


def _html_reply(alias: str, html: str, *, image_cid: str | None = None) -> EmailMessage:
    msg = reply_mail(FLEET_INBOX, alias, "Plain version: see the photo.")
    msg.add_alternative(html, subtype="html")
    if image_cid:
        html_part = msg.get_payload(1)
        assert isinstance(html_part, EmailMessage)
        html_part.add_related(
            b"\x89PNG\r\n\x1a\nphoto", maintype="image", subtype="png", cid=f"<{image_cid}>",
            filename="photo.png",
        )  # fmt: skip
    return msg


async def test_html_is_sanitised_and_inline_images_survive(live: LiveRelay) -> None:
    acc, ticket_id, alias, _ = await _ticket(live)
    sender_cid = "image001.png@01DA1234.mail.fleet.example"
    html = (
        '<p onclick="steal()">We found <b>it</b>.</p><script>alert(1)</script>'
        '<a href="javascript:alert(2)">click</a><form action="https://evil.example">'
        '<input name=q></form><img src="https://tracker.example/pixel.gif" width=1>'
        f'<img src="cid:{sender_cid}" alt="photo">'
        f'<p>Write to <a href="mailto:{FLEET_INBOX}">{FLEET_INBOX}</a></p>'
    )
    await live.send(_html_reply(alias, html, image_cid=sender_cid), alias)
    [forward] = await live.sink.handler.wait_for(PARTNER_INBOX)
    raw = forward.raw.decode("utf-8", "replace")
    for banned in ("<script", "onclick", "javascript:", "<form", "tracker.example", sender_cid):
        assert banned not in raw, banned
    assert FLEET_INBOX not in raw.lower() and "01DA1234" not in raw
    shown = forward.message.get_body(preferencelist=("html",))
    markup = shown.get_content()
    assert "We found <b>it</b>." in markup
    # The image travels beside the HTML in multipart/related under the relay's Content-ID.
    related = [p for p in forward.message.walk() if p.get_content_type() == "multipart/related"]
    assert len(related) == 1
    [image] = [p for p in related[0].iter_parts() if p.get_content_type() == "image/png"]
    content_id = image["Content-ID"].strip("<>")
    assert content_id.endswith("@relay.localhost") and f'src="cid:{content_id}"' in markup
    assert image.get_content() == b"\x89PNG\r\n\x1a\nphoto"
    assert "Plain version: see the photo." in forward.message.get_body(("plain",)).get_content()
    # On the ticket: the text, the safe HTML is not exposed raw, the image is downloadable.
    detail = await live.ticket(acc, ticket_id)
    [message] = _conversation(detail)
    [file_id] = message["attachments"]
    download = await live.http.get(f"/v1/support/attachments/{file_id}", headers=acc.auth)
    assert download.status_code == 200 and download.content == b"\x89PNG\r\n\x1a\nphoto"


async def test_html_only_mail_gets_a_text_version(live: LiveRelay) -> None:
    acc, ticket_id, alias, _ = await _ticket(live)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = FLEET_INBOX, alias, "Re: ticket"
    msg["Message-ID"] = make_msgid(domain="fleet.example")
    msg.set_content(
        "<div>Driver says: <b>found</b></div><blockquote>old question</blockquote>",
        subtype="html",
    )
    await live.send(msg, alias)
    [forward] = await live.sink.handler.wait_for(PARTNER_INBOX)
    text = forward.message.get_body(preferencelist=("plain",)).get_content()
    assert "Driver says: found" in text
    [message] = _conversation(await live.ticket(acc, ticket_id))
    assert message["body"].startswith("Driver says: found")
    assert message["quoted"] == "> old question"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\invoice.pdf", "invoice.pdf"),
        # Python's parser stops the value at the decoded line break; nothing follows it.
        ("bad\x07name\r\nBcc: x@evil.example.txt", "bad name"),
        ("tab\tand\x00nul.txt", "tab and nul.txt"),
        ("invoice\u202efdp.exe", "invoice fdp.exe"),
        ("a" * 5000 + ".pdf", "a" * 196 + ".pdf"),  # 200 characters, the type kept
        ("...", "attachment"),
    ],
)
async def test_email_attachment_names_are_made_safe(
    live: LiveRelay, name: str, expected: str
) -> None:
    acc, ticket_id, alias, _ = await _ticket(live)
    msg = reply_mail(FLEET_INBOX, alias, "file attached")
    msg.add_attachment(b"%PDF-1.4 data", maintype="application", subtype="pdf")
    [part] = list(msg.iter_attachments())
    del part["Content-Disposition"]
    # RFC 2231 lets a sender put any byte in a name, line breaks included.
    part["Content-Disposition"] = f"attachment; filename*=utf-8''{quote(name, safe='')}"
    await live.send(msg.as_bytes(policy=policy.SMTP), alias)
    [forward] = await live.sink.handler.wait_for(PARTNER_INBOX)
    detail = await live.ticket(acc, ticket_id)
    [stored] = [a for a in detail["attachments"] if a["messageId"] is not None]
    assert stored["filename"] == expected
    [sent] = list(forward.message.iter_attachments())
    assert sent.get_filename() == expected
    assert "Bcc" not in forward.message


async def test_attachment_limits_are_refused_with_a_reason_and_change_nothing(
    database: Any,
) -> None:
    async with live_relay(
        database.url, database.schema, max_attachments=2, max_attachment_size=1000
    ) as live:
        acc, ticket_id, alias, _ = await _ticket(live)
        many = reply_mail(FLEET_INBOX, alias, "three files")
        for i in range(3):
            many.add_attachment(b"x", maintype="text", subtype="plain", filename=f"{i}.txt")
        code, text = await _send_refused(live, many.as_bytes(), alias)
        assert code == 552 and text.startswith("5.3.4") and "at most 2" in text
        big = reply_mail(FLEET_INBOX, alias, "one big file")
        big.add_attachment(b"x" * 1001, maintype="application", subtype="octet-stream")
        code, text = await _send_refused(live, big.as_bytes(), alias)
        assert code == 552 and text.startswith("5.3.4") and "1000 bytes" in text
        assert _conversation(await live.ticket(acc, ticket_id)) == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Auto-Submitted": "auto-replied"},
        {"X-Autoreply": "yes"},
        {"X-Autorespond": "Out of office"},
        {"Precedence": "bulk"},
        {"Precedence": "auto_reply"},
        {"X-Auto-Response-Suppress": "All"},
    ],
)
async def test_automatic_mail_is_filed_not_forwarded(
    live: LiveRelay, headers: dict[str, str]
) -> None:
    acc, ticket_id, alias, _ = await _ticket(live)
    auto = reply_mail(FLEET_INBOX, alias, "I am out of the office until Monday.")
    for name, value in headers.items():
        auto[name] = value
    assert (await live.send(auto, alias)).startswith("2.0.0")
    # A person's reply after it is forwarded; the automatic one never was.
    await live.send(reply_mail(FLEET_INBOX, alias, "Back now: found it."), alias)
    [forward] = await live.sink.handler.wait_for(PARTNER_INBOX)
    assert "Back now" in forward.text() and "out of the office" not in forward.text()
    await asyncio.sleep(0.3)
    assert len(live.sink.handler.for_rcpt(PARTNER_INBOX)) == 1
    automatic, human = _conversation(await live.ticket(acc, ticket_id))
    assert automatic["disposition"] == "automatic" and automatic["dispositionReason"]
    assert human["disposition"] == "forwarded"


async def test_automatic_mail_with_empty_return_path_changes_no_status(live: LiveRelay) -> None:
    acc, ticket_id, alias, _ = await _ticket(live)
    closed = await live.http.patch(
        f"/v1/support/tickets/{ticket_id}", headers=acc.auth, json={"status": "closed"}
    )
    assert closed.status_code == 200
    fleet_mails = len(await live.sink.handler.wait_for(FLEET_INBOX, 2))
    auto = reply_mail(FLEET_INBOX, alias, "Your message was received.")
    reply = await live.send(auto, alias, mail_from="")
    assert reply.startswith("2.0.0")
    detail = await live.ticket(acc, ticket_id)
    assert detail["status"] == "closed"
    [message] = _conversation(detail)
    assert message["disposition"] == "automatic"
    assert message["dispositionReason"] == "empty return path"
    await asyncio.sleep(0.3)
    # No forward to the partner, no notice back to the fleet.
    assert live.sink.handler.for_rcpt(PARTNER_INBOX) == []
    assert len(live.sink.handler.for_rcpt(FLEET_INBOX)) == fleet_mails


async def test_everything_the_relay_sends_is_marked_automatic(live: LiveRelay) -> None:
    _, _, alias, _ = await _ticket(live)
    await live.send(reply_mail(FLEET_INBOX, alias, "thanks"), alias)
    await live.sink.handler.wait_for(PARTNER_INBOX)
    for received in live.sink.handler.messages:
        assert received.message["Auto-Submitted"] == "auto-generated"
        assert received.message["X-Support-Relay-Loop"] == "relay.localhost"


async def test_our_own_mail_coming_back_is_discarded(live: LiveRelay) -> None:
    acc, ticket_id, alias, _ = await _ticket(live)
    [to_fleet] = live.sink.handler.for_rcpt(FLEET_INBOX)
    # The fleet's mailbox bounces our very message back to the alias, unchanged.
    bounced_back = to_fleet.raw.replace(b"From: ", b"X-Was-From: ", 1).replace(
        b"X-Was-From: ", f"From: {FLEET_INBOX}\r\nX-Was-From: ".encode(), 1
    )
    reply = await live.send(bounced_back, alias)
    assert reply.startswith("2.0.0") and "own mail" in reply
    # A responder that keeps our Message-ID but strips our marker is caught as well.
    echoed = reply_mail(FLEET_INBOX, alias, "echo")
    del echoed["Message-ID"]
    echoed["Message-ID"] = to_fleet.message["Message-ID"]
    assert "own mail" in await live.send(echoed, alias)
    assert _conversation(await live.ticket(acc, ticket_id)) == []


async def test_a_flood_on_one_alias_is_held_and_flags_the_ticket(database: Any) -> None:
    async with live_relay(database.url, database.schema, loop_max_messages=3) as live:
        acc, ticket_id, alias, _ = await _ticket(live)
        for i in range(5):
            await live.send(reply_mail(FLEET_INBOX, alias, f"ping {i}"), alias)
        await live.sink.handler.wait_for(PARTNER_INBOX, 3)
        await asyncio.sleep(0.3)
        assert len(live.sink.handler.for_rcpt(PARTNER_INBOX)) == 3
        detail = await live.ticket(acc, ticket_id)
        dispositions = [m["disposition"] for m in _conversation(detail)]
        assert dispositions == ["forwarded"] * 3 + ["held"] * 2
        assert detail["attention"] and "held" in detail["attention"]
        assert [e["kind"] for e in detail["events"]].count("mail.held") == 1
        cleared = await live.http.patch(
            f"/v1/support/tickets/{ticket_id}", headers=acc.auth, json={"attention": None}
        )
        assert cleared.status_code == 200 and cleared.json()["attention"] is None


async def test_third_parties_get_nothing_and_the_omission_is_recorded(live: LiveRelay) -> None:
    acc, ticket_id, alias, _ = await _ticket(live)
    # A reply-all that also copies the sender's own address: that one is no third party.
    mail = reply_mail(
        FLEET_INBOX,
        alias,
        f"Copying my colleague {COLLEAGUE} who drove.",
        Cc=f"{COLLEAGUE}, Dispatch <{FLEET_INBOX}>",
    )
    # The client also lists the colleague as an envelope recipient; we only take our alias.
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await live.send(mail, [COLLEAGUE])
    await live.send(mail, [alias])
    [forward] = await live.sink.handler.wait_for(PARTNER_INBOX)
    assert COLLEAGUE.encode() not in forward.raw.lower()
    assert forward.message["Cc"] is None
    await asyncio.sleep(0.2)
    assert {r for m in live.sink.handler.messages for r in m.rcpt_to} == {
        FLEET_INBOX,
        PARTNER_INBOX,
    }
    detail = await live.ticket(acc, ticket_id)
    [message] = _conversation(detail)
    assert message["flags"] == {"citesOtherTicket": False, "omittedRecipients": 1}
    [event] = [e for e in detail["events"] if e["kind"] == "message.recipients_omitted"]
    assert event["detail"] == {"messageId": message["id"], "count": 1}
    assert COLLEAGUE not in str(detail)


async def test_reply_citing_another_ticket_is_filed_where_it_was_sent(live: LiveRelay) -> None:
    acc, ticket_a, alias_a, cited_a = await _ticket(live)
    _, ticket_b, alias_b, cited_b = await _ticket(live, acc)
    assert alias_a != alias_b
    await live.send(reply_mail(FLEET_INBOX, alias_a, "answer meant for A", cites=cited_b), alias_a)
    [forward] = await live.sink.handler.wait_for(PARTNER_INBOX)
    [on_a] = _conversation(await live.ticket(acc, ticket_a))
    assert on_a["body"] == "answer meant for A" and on_a["flags"]["citesOtherTicket"] is True
    assert _conversation(await live.ticket(acc, ticket_b)) == []
    assert f"#{ticket_a}" in forward.message["Subject"]
    # The partner's copy threads on ticket A, never on B's message.
    assert cited_b not in forward.raw.decode()


async def test_message_ids_map_both_ways_and_never_leak(live: LiveRelay) -> None:
    acc, ticket_id, alias, cited = await _ticket(live)
    fleet_reply = reply_mail(FLEET_INBOX, alias, "found it", cites=cited)
    fleet_id = fleet_reply["Message-ID"]
    await live.send(fleet_reply, alias)
    [to_partner] = await live.sink.handler.wait_for(PARTNER_INBOX)
    assert fleet_id not in to_partner.raw.decode()
    partner_alias = to_partner.message["Reply-To"].addresses[0].addr_spec
    partner_reply = reply_mail(
        PARTNER_INBOX, partner_alias, "great, thanks", cites=to_partner.message["Message-ID"]
    )
    partner_id = partner_reply["Message-ID"]
    await live.send(partner_reply, partner_alias, mail_from=PARTNER_INBOX)
    mails = await live.sink.handler.wait_for(FLEET_INBOX, 2)
    to_fleet = mails[-1].message
    # The fleet's client threads it under the fleet's own message; the partner's ID stays out.
    assert to_fleet["In-Reply-To"] == fleet_id
    assert partner_id not in mails[-1].raw.decode()
    assert len(_conversation(await live.ticket(acc, ticket_id))) == 2


async def test_raw_download_is_the_mime_with_every_outside_address_redacted(
    live: LiveRelay,
) -> None:
    acc, ticket_id, alias, _ = await _ticket(live)
    mail = reply_mail(
        FLEET_INBOX,
        alias,
        f"Reach me at {FLEET_INBOX} or {COLLEAGUE}.",
        Cc=COLLEAGUE,
        Received=f"from mx.fleet.example by mail.fleet.example for <{FLEET_INBOX}>",
        Return_Path=f"<{FLEET_INBOX}>",
    )
    mail.add_attachment(b"%PDF-1.4 x", maintype="application", subtype="pdf", filename="a.pdf")
    # Base64 must not hide an address from the redaction.
    mail.get_payload(0).set_content(f"Reach me at {FLEET_INBOX} or {COLLEAGUE}.", cte="base64")
    await live.send(mail, alias)
    await live.sink.handler.wait_for(PARTNER_INBOX)
    [message] = _conversation(await live.ticket(acc, ticket_id))
    url = f"/v1/support/tickets/{ticket_id}/messages/{message['id']}/raw"
    response = await live.http.get(url, headers=acc.auth)
    assert response.status_code == 200
    assert response.headers["content-type"] == "message/rfc822"
    raw = response.content
    for hidden in (FLEET_INBOX, COLLEAGUE, "mx.fleet.example", "Received:", "Return-Path:"):
        assert hidden.encode() not in raw, hidden
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert parsed["From"].addresses[0].addr_spec == "redacted@redacted.invalid"
    assert parsed["To"].addresses[0].addr_spec == alias
    body = parsed.get_body(("plain",)).get_content()
    assert "Reach me at redacted@redacted.invalid or redacted@redacted.invalid." in body
    [pdf] = list(parsed.iter_attachments())
    assert pdf.get_content() == b"%PDF-1.4 x"
    # Another partner, or a message made through the API, has no raw form to read.
    other = await live.add_partner(name="Other", email="other@partner.example")
    denied = await live.http.get(url, headers={"Authorization": f"ApiKey {other['apiKey']}"})
    assert denied.status_code == 404
    first = (await live.ticket(acc, ticket_id))["conversation"][0]
    assert first["hasRaw"] is False
    api_url = f"/v1/support/tickets/{ticket_id}/messages/{first['id']}/raw"
    assert (await live.http.get(api_url, headers=acc.auth)).status_code == 404


async def test_connections_per_client_are_capped(database: Any) -> None:
    async with live_relay(database.url, database.schema, max_connections_per_client=2) as live:
        held = [
            aiosmtplib.SMTP(hostname="127.0.0.1", port=live.smtp_port, timeout=5) for _ in range(2)
        ]
        for client in held:
            await client.connect()
        reader, writer = await asyncio.open_connection("127.0.0.1", live.smtp_port)
        line = await asyncio.wait_for(reader.readline(), 5)
        assert line.startswith(b"421 4.7.0")
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, no greeting after it
        writer.close()
        await held[0].quit()
        # A freed slot is usable again.
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=live.smtp_port, timeout=5) as again:
            code, _ = await again.noop()
            assert code == 250
        await held[1].quit()


async def test_long_lines_are_taken_up_to_the_configured_limit(database: Any) -> None:
    async with live_relay(database.url, database.schema, max_line_bytes=2000) as live:
        acc, ticket_id, alias, _ = await _ticket(live)
        # Past RFC 5322's 998 but within the limit: real senders do this; it is accepted.
        head = f"From: {FLEET_INBOX}\r\nTo: {alias}\r\nSubject: long\r\n\r\n".encode()
        reply = await live.send(head + b"x" * 1900 + b"\r\n", alias)
        assert reply.startswith("2.0.0")
        code, text = await _send_refused(live, head + b"y" * 2100 + b"\r\n", alias)
        assert code == 500 and text.startswith("5.5.6")
        [message] = _conversation(await live.ticket(acc, ticket_id))
        assert message["body"] == "x" * 1900


async def test_an_attached_email_is_redacted_and_file_names_are_masked(live: LiveRelay) -> None:
    acc, ticket_id, alias, _ = await _ticket(live)
    original = reply_mail(COLLEAGUE, FLEET_INBOX, f"Booking noted. Ask {COLLEAGUE}.")
    mail = reply_mail(FLEET_INBOX, alias, "Forwarding the booking mail.")
    mail.add_attachment(original)
    mail.add_attachment(
        b"%PDF-1.4", maintype="application", subtype="pdf", filename=f"for {FLEET_INBOX}.pdf"
    )
    await live.send(mail, alias)
    [forward] = await live.sink.handler.wait_for(PARTNER_INBOX)
    assert FLEET_INBOX.encode() not in forward.raw and COLLEAGUE.encode() not in forward.raw
    attached = [p for p in forward.message.walk() if p.get_content_type() == "message/rfc822"]
    [inner] = attached[0].get_payload()
    assert inner["From"].addresses[0].addr_spec == "redacted@redacted.invalid"
    assert "Ask redacted@redacted.invalid." in inner.get_body(("plain",)).get_content()
    names = {p.get_filename() for p in forward.message.iter_attachments()}
    partner_alias = forward.message["Reply-To"].addresses[0].addr_spec
    assert f"for {partner_alias}.pdf" in names
    detail = await live.ticket(acc, ticket_id)
    assert FLEET_INBOX not in str(detail) and COLLEAGUE not in str(detail)

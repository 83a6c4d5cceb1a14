"""The relay's SMTP server as a client sees it: enhanced-code refusals, 250 only after commit."""

from __future__ import annotations

import aiosmtplib
import pytest
from sqlalchemy import text
from sqlmodel import func, select

from storage.models import Message, OutboxItem
from tests.harness import FLEET_INBOX, PARTNER_INBOX, Accounts, LiveRelay, reply_mail


async def _ticket_and_alias(live: LiveRelay, **partner: str) -> tuple[Accounts, int, str]:
    acc = await live.accounts()
    await live.put_trip(acc)
    ticket = await live.open_ticket(acc)
    [mail] = await live.sink.handler.wait_for(FLEET_INBOX)
    return acc, ticket["id"], mail.message["Reply-To"].addresses[0].addr_spec


async def _count(live: LiveRelay, model: type[Message] | type[OutboxItem]) -> int:
    async with live.relay.sessions() as session:
        return int((await session.exec(select(func.count()).select_from(model))).one())


async def _refusal(
    live: LiveRelay, mail_from: str, rcpt: str, data: bytes | None = None
) -> tuple[int, str]:
    """(code, text) of the first refusal in a MAIL/RCPT/DATA transaction."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=live.smtp_port, timeout=10) as client:
        await client.mail(mail_from)
        code, message = await client.rcpt(rcpt) if data is None else (0, "")
        if data is None:
            return code, message
        await client.rcpt(rcpt)
        try:
            response = await client.data(data)
        except aiosmtplib.SMTPResponseException as exc:
            return exc.code, exc.message
        return response.code, response.message


async def test_unknown_alias_is_refused_at_rcpt(live: LiveRelay) -> None:
    await _ticket_and_alias(live)
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as err:
        await _refusal(live, FLEET_INBOX, "ticket-1-doesnotexist@relay.localhost")
    assert err.value.code == 550 and err.value.message.startswith("5.1.1")


async def test_other_domains_are_never_relayed(live: LiveRelay) -> None:
    _, _, alias = await _ticket_and_alias(live)
    local = alias.split("@")[0]
    for rcpt in ("someone@gmail.example", f"{local}@other.example", f"{local}@sub.relay.localhost"):
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as err:
            await _refusal(live, FLEET_INBOX, rcpt)
        assert err.value.code == 550 and err.value.message.startswith("5.7.1"), rcpt


async def test_alias_lookup_is_case_insensitive(live: LiveRelay) -> None:
    _, _, alias = await _ticket_and_alias(live)
    reply = await live.send(reply_mail(FLEET_INBOX, alias, "hello"), alias.upper())
    assert reply.startswith("2.0.0")


async def test_unregistered_sender_is_refused_and_nothing_stored(live: LiveRelay) -> None:
    _, _, alias = await _ticket_and_alias(live)
    before = (await _count(live, Message), await _count(live, OutboxItem))
    for sender in ("intruder@elsewhere.example", PARTNER_INBOX, "dispatch@fleet.example.evil"):
        data = reply_mail(sender, alias, "let me in").as_bytes()
        code, message = await _refusal(live, sender, alias, data)
        assert code == 550 and message.startswith("5.7.1"), sender
    assert (await _count(live, Message), await _count(live, OutboxItem)) == before


async def test_ambiguous_from_is_refused(live: LiveRelay) -> None:
    _, _, alias = await _ticket_and_alias(live)
    for from_header in (
        f"{FLEET_INBOX}, attacker@evil.example",
        f'"{FLEET_INBOX}" <attacker@evil.example>',
        f"attacker@evil.example <{FLEET_INBOX}>",
        "",
    ):
        raw = f"From: {from_header}\r\nTo: {alias}\r\nSubject: x\r\n\r\nhi\r\n".encode()
        code, message = await _refusal(live, FLEET_INBOX, alias, raw)
        assert code == 550 and message.startswith("5.7.1"), from_header


async def test_allowed_senders_by_domain(live: LiveRelay) -> None:
    partner = await live.add_partner()
    fleet = await live.add_fleet(allowedSenders=["@ops.fleet.example", "boss@hq.example"])
    acc = Accounts(partner["id"], partner["apiKey"], fleet["id"])
    await live.put_trip(acc)
    await live.open_ticket(acc)
    [mail] = await live.sink.handler.wait_for(FLEET_INBOX)
    alias = mail.message["Reply-To"].addresses[0].addr_spec
    for sender in ("night-shift@ops.fleet.example", "Boss@HQ.example"):
        assert (await live.send(reply_mail(sender, alias, f"from {sender}"), alias)).startswith(
            "2.0.0"
        )
    code, _ = await _refusal(
        live,
        "x@evil.ops.fleet.example",
        alias,
        reply_mail("x@evil.ops.fleet.example", alias, "no").as_bytes(),
    )
    assert code == 550
    forwarded = await live.sink.handler.wait_for(PARTNER_INBOX, count=2)
    assert all(b"fleet.example" not in m.raw and b"hq.example" not in m.raw for m in forwarded)


async def test_size_is_advertised_and_enforced(database: object) -> None:
    from tests.conftest import Database
    from tests.harness import live_relay

    assert isinstance(database, Database)
    async with live_relay(database.url, database.schema, max_message_size=4096) as live:
        _, _, alias = await _ticket_and_alias(live)
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=live.smtp_port) as client:
            assert client.supports_extension("size")
            assert client.esmtp_extensions["size"] == "4096"
        big = reply_mail(FLEET_INBOX, alias, "x" * 10_000).as_bytes()
        code, message = await _refusal(live, FLEET_INBOX, alias, big)
        assert code == 552 and message.startswith("5.3.4")
        # Declared up front with SIZE=, the refusal comes at MAIL FROM.
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=live.smtp_port) as client:
            with pytest.raises(aiosmtplib.SMTPResponseException) as err:
                await client.mail(FLEET_INBOX, options=["SIZE=999999"])
            assert err.value.code == 552 and err.value.message.startswith("5.3.4")


async def test_duplicate_resend_is_acknowledged_once(live: LiveRelay) -> None:
    acc, ticket_id, alias = await _ticket_and_alias(live)
    mail = reply_mail(FLEET_INBOX, alias, "sent twice after a timeout")
    first = await live.send(mail, alias)
    second = await live.send(mail, alias)
    assert first.startswith("2.0.0") and second.startswith("2.0.0")
    assert "already" in second
    await live.sink.handler.wait_for(PARTNER_INBOX)
    detail = await live.ticket(acc, ticket_id)
    assert len(detail["conversation"]) == 2
    assert await _count(live, OutboxItem) == 2
    # A different message that copies the Message-ID is not swallowed as a duplicate.
    forged = reply_mail(FLEET_INBOX, alias, "different words")
    del forged["Message-ID"]
    forged["Message-ID"] = mail["Message-ID"]
    assert (await live.send(forged, alias)).startswith("2.0.0 OK")
    assert len((await live.ticket(acc, ticket_id))["conversation"]) == 3


async def test_our_own_fault_is_a_451_without_details(live: LiveRelay) -> None:
    _, _, alias = await _ticket_and_alias(live)
    before = await _count(live, Message)
    async with live.relay.engine.begin() as conn:
        await conn.execute(text("DROP TABLE ticket_event"))
    code, message = await _refusal(
        live, FLEET_INBOX, alias, reply_mail(FLEET_INBOX, alias, "boom").as_bytes()
    )
    assert code == 451 and message.startswith("4.3.0")
    assert "ticket_event" not in message and "Error" not in message
    assert await _count(live, Message) == before  # the transaction rolled back as a whole


async def test_too_many_recipients(database: object) -> None:
    from tests.conftest import Database
    from tests.harness import live_relay

    assert isinstance(database, Database)
    async with live_relay(database.url, database.schema, max_recipients=1) as live:
        _, _, alias = await _ticket_and_alias(live)
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=live.smtp_port) as client:
            await client.mail(FLEET_INBOX)
            await client.rcpt(alias)
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as err:
                await client.rcpt(alias)
            assert err.value.code == 452 and err.value.message.startswith("4.5.3")


async def test_one_transaction_to_two_tickets_files_on_each_and_stores_bytes_once(
    live: LiveRelay,
) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    first = await live.open_ticket(acc, subject="first")
    second = await live.open_ticket(acc, subject="second")
    mails = await live.sink.handler.wait_for(FLEET_INBOX, count=2)
    aliases = [m.message["Reply-To"].addresses[0].addr_spec for m in mails]
    answer = reply_mail(FLEET_INBOX, ", ".join(aliases), "Both handled.")
    answer.add_attachment(b"log", maintype="text", subtype="plain", filename="log.txt")
    assert (await live.send(answer, aliases)).startswith("2.0.0")
    await live.sink.handler.wait_for(PARTNER_INBOX, count=2)
    for ticket_id in (first["id"], second["id"]):
        detail = await live.ticket(acc, ticket_id)
        assert [m["body"] for m in detail["conversation"]][-1] == "Both handled."
        assert [a["filename"] for a in detail["attachments"]] == ["log.txt"]
    async with live.relay.sessions() as session:
        raw_blobs = set((await session.exec(select(Message.raw_blob_id))).all()) - {None}
    assert len(raw_blobs) == 1


@pytest.mark.parametrize(
    "arg",
    [
        "<a@b.example>",
        "a@b.example",
        "<a@b.example> SIZE=10 BODY=8BITMIME",
        "",
        "<>",
        "<bad",
        '<"x y"@b.example>',
        "<" + "a" * 70 + "@b.example>",
        "<a@[127.0.0.1]>",
        "<a(comment)@b.example>",
        "<@relay.example:a@b.example>",
        "<a@b.example>\x00",
        "<ä@b.example>",
        "a b@c.example",
    ],
)
async def test_the_relay_parses_mail_and_rcpt_arguments_exactly_as_aiosmtpd(arg: str) -> None:
    """RelaySMTP._getaddr re-implements aiosmtpd's private SMTP._getaddr without its
    per-call Protocol class: were aiosmtpd to change its parsing, this fails."""
    from aiosmtpd.smtp import SMTP

    from relay.inbound import ConnectionLimiter, RelaySMTP

    server = RelaySMTP(object(), limiter=ConnectionLimiter(1), max_line_bytes=998)
    for limit in (0, 64):
        server.local_part_limit = limit
        assert server._getaddr(arg) == SMTP._getaddr(server, arg)

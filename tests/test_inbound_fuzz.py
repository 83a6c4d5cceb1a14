"""Random mail from the fleet, byte for byte over a raw SMTP socket: refused with a 5xx, or
stored and forwarded with nothing of the fleet's (or anyone it copied) showing, and the
server always answers the next command.

Messages are random in every place a parser could trip: header sets, Content-Type with
random charsets and boundaries, encoded-words with random charsets and encodings, bodies of
random bytes with bare CR and LF, small random MIME trees (with missing, stray and repeated
delimiters). Bounded and reproducible: 60 derandomized examples, one relay, one ticket.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Database
from tests.forward_checks import assert_nothing_leaks, assert_only_our_headers
from tests.harness import FLEET_INBOX, PARTNER_INBOX, Accounts, LiveRelay, live_relay
from tests.smtp_wire import WireClient

ALIAS = b"<<alias>>"  # replaced by the live ticket's alias when sent
CHARSETS = [
    "utf-8",
    "us-ascii",
    "iso-8859-1",
    "windows-1252",
    "koi8-r",
    "utf-7",
    "utf-16",
    "x-unknown",
    "x-mac-nonsense",
    "",
    "utf-8*en",
    "../../etc",
]
COPIED = ["boss@fleet-hq.example", "night@depot.example", "Other Desk <desk@elsewhere.example>"]
SPECIAL = [
    b"\r",
    b"\n",
    b"\r\n",
    b"\x00",
    b"=",
    b"=\r\n",
    b"=?",
    b"?=",
    b"--",
    b"-- ",
    b".",
    b"\r\n.",
    b"\xff\xfe",
    b"\xc3\x28",
    b"\xe2\x82",
    # Addresses stand alone: glued to other text they would be another address.
    b" " + FLEET_INBOX.encode() + b" ",
    b" " + FLEET_INBOX.upper().encode() + b" ",
    b" " + PARTNER_INBOX.encode() + b" ",
    b"Bcc: victim@evil.example",
    b"<script>alert(1)</script>",
]


HOSTILE_SENDERS = ["attacker", "two", "shown-other"]


@dataclass(frozen=True)
class FuzzMail:
    raw: bytes
    fleet_sender: bool  # From names the registered fleet address alone
    copied: tuple[str, ...]


chunks = st.lists(
    st.one_of(
        st.binary(max_size=24), st.sampled_from(SPECIAL), st.text(max_size=16).map(str.encode)
    ),
    max_size=12,
).map(b"".join)
# Header values: anything but a CRLF, which would end the header (bare CR and LF stay in).
header_values = chunks.map(lambda v: v.replace(b"\r\n", b" "))


@st.composite
def encoded_words(draw: st.DrawFn) -> bytes:
    charset = draw(st.sampled_from(CHARSETS)).encode()
    encoding = draw(st.sampled_from([b"q", b"b", b"Q", b"B", b"x"]))
    payload = draw(chunks)
    if encoding in (b"b", b"B") and draw(st.booleans()):
        text = base64.b64encode(payload)
    else:
        text = binascii.b2a_qp(payload, header=True).replace(b"\n", b"")
        text = text.replace(b"?", b"=3F").replace(b"\r", b"")
    return b"=?" + charset + b"?" + encoding + b"?" + text[:150] + b"?="


def _header(name: bytes, value: bytes) -> bytes:
    return name + b": " + value


@st.composite
def leaf(draw: st.DrawFn) -> tuple[list[bytes], bytes]:
    maintype = draw(
        st.sampled_from(
            [b"text/plain", b"text/html", b"application/octet-stream", b"image/png", b"text"]
        )
    )
    params = b""
    if draw(st.booleans()):
        params += b"; charset=" + draw(st.sampled_from(CHARSETS)).encode()
    if draw(st.booleans()):
        params += b'; name="' + draw(header_values).replace(b'"', b"") + b'"'
    headers = [_header(b"Content-Type", maintype + params)]
    cte = draw(st.sampled_from([None, b"7bit", b"8bit", b"base64", b"quoted-printable", b"x-junk"]))
    if cte is not None:
        headers.append(_header(b"Content-Transfer-Encoding", cte))
    if draw(st.booleans()):
        filename = draw(st.one_of(header_values, encoded_words()))
        headers.append(_header(b"Content-Disposition", b'attachment; filename="' + filename + b'"'))
    body = draw(chunks)
    if cte == b"base64" and draw(st.booleans()):
        body = base64.encodebytes(body).replace(b"\n", b"\r\n")
    return headers, body


@st.composite
def entity(draw: st.DrawFn, depth: int = 0) -> tuple[list[bytes], bytes]:
    if depth >= 3 or draw(st.integers(0, 2)) > 0:
        return draw(leaf())
    boundary = draw(st.text(alphabet="abcXYZ0129'()+_,-./:=? ", min_size=1, max_size=20))
    delimiter = b"--" + boundary.encode()
    subtype = draw(st.sampled_from([b"mixed", b"alternative", b"related", b"digest", b"x-junk"]))
    headers = [b"Content-Type: multipart/" + subtype + b'; boundary="' + boundary.encode() + b'"']
    body = draw(chunks) + b"\r\n"  # preamble
    for _ in range(draw(st.integers(0, 3))):
        part_headers, part_body = draw(entity(depth + 1))
        body += delimiter + b"\r\n" + b"\r\n".join(part_headers) + b"\r\n\r\n" + part_body
        body += b"\r\n"
    if draw(st.booleans()):
        body += delimiter + b"--\r\n"
    return headers, body + draw(chunks)


@st.composite
def fuzz_mail(draw: st.DrawFn) -> FuzzMail:
    # Mostly the fleet (so most messages get as far as a forward), sometimes an impostor.
    senders = ["plain", "named", "encoded-name", "8bit-name", "unknown-charset-name"]
    sender = draw(st.sampled_from(senders * 2 + HOSTILE_SENDERS))
    fleet = FLEET_INBOX.encode()
    from_value = {
        "plain": fleet,
        "named": b"Night Desk <" + fleet + b">",
        "encoded-name": b"=?utf-8?q?Nacht=C3=A9_desk?= <" + fleet + b">",
        # Names that do not decode once gave a 451 forever; they must be taken.
        "8bit-name": b"Nacht\xe9 desk <" + fleet + b">",
        "unknown-charset-name": b"=?x-unknown?q?Nacht=E9?= <" + fleet + b">",
        "attacker": b"attacker@evil.example",
        "two": fleet + b", attacker@evil.example",
        "shown-other": b'"attacker@evil.example" <' + fleet + b">",
    }[sender]
    headers = [_header(b"From", from_value), _header(b"To", ALIAS)]
    copied = tuple(draw(st.lists(st.sampled_from(COPIED), max_size=2, unique=True)))
    if copied:
        headers.append(_header(b"Cc", ", ".join(copied).encode()))
    if draw(st.booleans()):
        subject = draw(st.one_of(header_values, encoded_words()))
        headers.append(_header(b"Subject", subject))
    if draw(st.booleans()):
        headers.append(_header(b"Message-ID", b"<" + draw(header_values) + b"@mua.example>"))
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from([b"X-Junk", b"Comments", b"Keywords", b"Date", b"References"]))
        headers.append(_header(name, draw(st.one_of(header_values, encoded_words()))))
    if draw(st.booleans()):
        headers.append(b"MIME-Version: 1.0")
    part_headers, body = draw(entity())
    eol = draw(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n"]))
    lines = [*headers, *part_headers]
    raw = eol.join(lines) + eol + eol + body
    return FuzzMail(raw, sender not in HOSTILE_SENDERS, copied)


@dataclass
class FuzzTicket:
    live: LiveRelay
    acc: Accounts
    ticket_id: int
    alias: str


@pytest.fixture
async def fuzz_ticket(database: Database) -> AsyncIterator[FuzzTicket]:
    # Sixty messages to one alias within a minute would otherwise be held as a mail loop.
    async with live_relay(database.url, database.schema, loop_max_messages=10_000) as live:
        acc = await live.accounts()
        await live.put_trip(acc)
        ticket = await live.open_ticket(acc)
        [mail] = await live.sink.handler.wait_for(FLEET_INBOX)
        yield FuzzTicket(live, acc, ticket["id"], mail.message["Reply-To"].addresses[0].addr_spec)


async def _fleet_messages(target: FuzzTicket) -> list[dict[str, object]]:
    detail = await target.live.ticket(target.acc, target.ticket_id)
    return [m for m in detail["conversation"] if m["author"] == "fleet"]


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mail=fuzz_mail())
async def test_random_fleet_mail_is_refused_or_relayed_cleanly(
    fuzz_ticket: FuzzTicket, mail: FuzzMail
) -> None:
    target = fuzz_ticket
    live = target.live
    # A line of its own at the end keeps examples apart: the relay rightly takes a second
    # message with the same Message-ID (or none) and the same body for a resend.
    raw = mail.raw.replace(ALIAS, target.alias.encode()) + b"\r\n" + uuid.uuid4().hex.encode()
    stored_before = len(await _fleet_messages(target))
    forwards_before = len(live.sink.handler.for_rcpt(PARTNER_INBOX))

    client = await WireClient.connect(live.smtp_port)
    try:
        await client.envelope(FLEET_INBOX, target.alias)
        reply = await client.data(raw)
        assert (await client.command("NOOP")).code == 250
    finally:
        await client.close()

    assert reply.code == 250 or (500 <= reply.code <= 599 and reply.text[:2] == "5."), reply
    if not mail.fleet_sender:
        assert reply.code >= 500, reply
    stored = await _fleet_messages(target)
    if reply.code != 250 or "already" in reply.text:
        assert len(stored) == stored_before
        return
    assert len(stored) == stored_before + 1
    if stored[-1].get("disposition", "forwarded") != "forwarded":
        return
    forwards = await live.sink.handler.wait_for(PARTNER_INBOX, count=forwards_before + 1)
    forward = forwards[forwards_before].raw
    tokens = {FLEET_INBOX.encode()}
    tokens |= {c.rsplit("<", 1)[-1].strip(">").encode() for c in mail.copied}
    assert_nothing_leaks(forward, tokens, attachments=False)
    assert_only_our_headers(forward)
    # Nothing of the partner's ever goes to the fleet because of the fleet's own mail.
    for sent in live.sink.handler.for_rcpt(FLEET_INBOX):
        assert PARTNER_INBOX.encode() not in sent.raw.lower()


# What this fuzz found in the inbound path, pinned as plain examples. Strict: a fix turns
# the test red until its marker goes.


async def _relay(live: LiveRelay, raw: bytes) -> tuple[FuzzTicket, int]:
    acc = await live.accounts()
    await live.put_trip(acc)
    ticket = await live.open_ticket(acc)
    [mail] = await live.sink.handler.wait_for(FLEET_INBOX)
    target = FuzzTicket(live, acc, ticket["id"], mail.message["Reply-To"].addresses[0].addr_spec)
    client = await WireClient.connect(live.smtp_port)
    try:
        await client.envelope(FLEET_INBOX, target.alias)
        reply = await client.data(raw.replace(ALIAS, target.alias.encode()))
    finally:
        await client.close()
    return target, reply.code


async def test_a_bare_cr_in_a_header_does_not_forward_the_headers_below_it(
    live: LiveRelay,
) -> None:
    raw = (
        b"From: dispatch@fleet.example\r\nTo: <<alias>>\r\nSubject: hello\rthere, Bob\r\n"
        b"X-Originating-IP: [203.0.113.7]\r\nReceived: from mail.fleet.example ([203.0.113.7])"
        b"\r\n\r\nThe reply.\r\n"
    )
    _, code = await _relay(live, raw)
    if code == 250:
        [forward] = await live.sink.handler.wait_for(PARTNER_INBOX)
        assert b"203.0.113.7" not in forward.raw and b"fleet.example" not in forward.raw


async def test_two_replies_without_message_id_and_with_the_same_body_are_both_kept(
    live: LiveRelay,
) -> None:
    first = b"From: dispatch@fleet.example\r\nTo: <<alias>>\r\nSubject: first\r\n\r\nYes.\r\n"
    target, code = await _relay(live, first)
    assert code == 250
    client = await WireClient.connect(live.smtp_port)
    try:
        await client.envelope(FLEET_INBOX, target.alias)
        second = first.replace(b"Subject: first", b"Subject: a day later, another question")
        reply = await client.data(second.replace(ALIAS, target.alias.encode()))
    finally:
        await client.close()
    assert reply.code == 250 and "already" not in reply.text
    assert len(await _fleet_messages(target)) == 2


async def test_an_address_in_an_attachment_name_is_masked(live: LiveRelay) -> None:
    raw = (
        b"From: dispatch@fleet.example\r\nTo: <<alias>>\r\nSubject: file\r\nMIME-Version: 1.0"
        b"\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain"
        b"\r\n\r\nSee the file.\r\n--x\r\nContent-Type: application/pdf\r\n"
        b'Content-Disposition: attachment; filename="report for dispatch@fleet.example.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--x--\r\n"
    )
    _, code = await _relay(live, raw)
    assert code == 250
    [forward] = await live.sink.handler.wait_for(PARTNER_INBOX)
    assert_nothing_leaks(forward.raw, {FLEET_INBOX.encode()}, attachments=False)
    names = [p.get_filename() or "" for p in forward.message.walk()]
    assert not any(FLEET_INBOX in name for name in names), names

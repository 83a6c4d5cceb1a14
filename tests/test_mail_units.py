"""Pure pieces of mail handling: masking, strict sender parsing, header hygiene."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.header import decode_header, make_header

import pytest

from relay.addresses import read_from_header, sender_allowed, split_rcpt
from relay.compose import Envelope, Threading, build_email
from relay.headers import header_text
from relay.masking import mask_addresses
from relay.rendering import RenderedEmail


def test_mask_replaces_whole_addresses_only() -> None:
    text = (
        "Mail BOB@fleet.example or bob@fleet.example.org or xbob@fleet.example, not b@fleet.exampl"
    )
    masked = mask_addresses(text, ["bob@fleet.example"], "alias@relay.test")
    assert masked == (
        "Mail alias@relay.test or bob@fleet.example.org or xbob@fleet.example, not b@fleet.exampl"
    )


def test_mask_handles_quoted_reply_headers() -> None:
    text = "On Mon, Dispatch <dispatch@fleet.example> wrote:\n> mailto:dispatch@fleet.example"
    masked = mask_addresses(text, ["dispatch@fleet.example"], "a@r.test")
    assert "fleet.example" not in masked and masked.count("a@r.test") == 2


def test_masker_finds_an_address_written_only_percent_encoded() -> None:
    """A mailto: link made from HTML may carry the address with no "@" in the text at all:
    the plain-address scan is skipped then, the percent-encoded one is not."""
    from relay.content import Masker

    masker = Masker(["Dispatch@Fleet.example"], "a@r.test")
    masked = masker("Write to <mailto:dispatch%40fleet.example> or DISPATCH%40FLEET.EXAMPLE")
    assert masked == "Write to <mailto:a%40r.test> or a%40r.test"
    assert masker("No address here.") == "No address here."


@pytest.mark.parametrize(
    "header",
    [
        "a@x.example, b@y.example",
        '"a@x.example" <b@y.example>',
        "b@y.example <a@x.example>",
        "undisclosed-recipients:;",
        "not an address",
        "",
        "a@x.example\r\nBcc: c@z.example",
    ],
)
def test_ambiguous_or_invalid_from_is_refused(header: str) -> None:
    assert read_from_header(header).sender is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Dispatch <Dispatch@Fleet.Example>", "dispatch@fleet.example"),
        ("dispatch@fleet.example", "dispatch@fleet.example"),
        ('"Night, Shift" <n@fleet.example>', "n@fleet.example"),
        ('"n@fleet.example" <n@fleet.example>', "n@fleet.example"),
    ],
)
def test_plain_from_is_parsed(header: str, expected: str) -> None:
    assert read_from_header(header).sender == expected


def test_sender_allow_list() -> None:
    allowed = ["@fleet.example", "boss@hq.example"]
    assert sender_allowed("any@fleet.example", allowed)
    assert sender_allowed("BOSS@hq.example", allowed)
    assert not sender_allowed("any@sub.fleet.example", allowed)
    assert not sender_allowed("other@hq.example", allowed)


def test_rcpt_split() -> None:
    assert split_rcpt("Ticket-1-ABC@Relay.Localhost") == ("ticket-1-abc", "relay.localhost")
    assert split_rcpt("no-at-sign") is None
    assert split_rcpt("a b@c") is None


@pytest.mark.parametrize(
    "brk", ["\r", "\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"]
)
def test_header_text_drops_every_line_break(brk: str) -> None:
    value = header_text(f"Subject{brk}Bcc: x@evil.example")
    assert value == "Subject Bcc: x@evil.example"
    assert not any(ch in value for ch in "\r\n\x0b\x0c\x1c\x85\u2028\u2029")


@pytest.mark.parametrize(
    ("from_name", "to_name", "subject"),
    [
        ("Acme Travel via support", "City Cabs", "Re: Lost umbrella"),
        ('O\'Brien "Cabs", Ltd. <x@evil.example> via support', "a\\b", "Re: [#12] a; b: c"),
        ("Taxi Müller & Söhne via Störungsdienst", "Ägäis Reisen", "Réclamation – " * 30),
        ("出租车公司 " * 30, "旅行社", "关于行程的投诉 " * 40),
        ("x" * 300, "y", "word " * 120 + "z" * 200),
        ("=?utf-8?q?forged?= via support", "", "=?utf-8?b?Zm9yZ2Vk?="),
    ],
)
def test_composed_headers_read_back_as_written(from_name: str, to_name: str, subject: str) -> None:
    """Our own header block: what a mail reader decodes is exactly the (cleaned) text we
    meant, every line stays within RFC 5322's 998 characters, and no value opens a header."""
    refs = tuple(f"<{i:032x}@relay.example>" for i in range(25))
    raw = build_email(
        Envelope(from_name, "t-0123456789ab@relay.example", "help@partner.example", to_name),
        RenderedEmail(subject=subject, text="Hello\n", html="<p>Hello</p>"),
        message_id="<m1@relay.example>",
        domain="relay.example",
        threading=Threading(refs[-1], refs),
    )
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert b"\n" not in raw.replace(b"\r\n", b"")  # no bare line feeds
    names = [line.split(b":", 1)[0] for line in head.split(b"\r\n") if line[:1] not in b" \t"]
    assert names == [
        b"From", b"Reply-To", b"To", b"Subject", b"Date", b"Message-ID", b"In-Reply-To",
        b"References", b"Auto-Submitted", b"X-Support-Relay-Loop", b"MIME-Version",
        b"Content-Type",
    ]  # fmt: skip
    msg = message_from_bytes(raw, policy=policy.default)
    [sender] = msg["From"].addresses
    assert _display_name(raw, "From") == header_text(from_name, 200)
    assert sender.addr_spec == "t-0123456789ab@relay.example"
    assert msg["Reply-To"].addresses[0].addr_spec == "t-0123456789ab@relay.example"
    [recipient] = msg["To"].addresses
    assert _display_name(raw, "To") == header_text(to_name, 200)
    assert recipient.addr_spec == "help@partner.example"
    assert str(msg["Subject"]) == header_text(subject, 500)
    assert msg["References"].split() == list(refs[-20:])
    assert msg.get_body(("plain",)).get_content().splitlines() == ["Hello"]


def _display_name(raw: bytes, header: str) -> str:
    """The display name as an RFC 2047 reader shows it. Python's address parser puts a
    space between adjacent encoded words, which RFC 2047 section 6.2 says to drop (and
    Python's own composer splits names the same way), so encoded names are decoded here."""
    value = str(message_from_bytes(raw, policy=policy.compat32)[header])
    if "=?" not in value:
        parsed = message_from_bytes(raw, policy=policy.default)[header]
        return str(parsed.addresses[0].display_name)
    return str(make_header(decode_header(value.rsplit(" <", 1)[0])))


@pytest.mark.parametrize(
    ("from_lines", "sender", "name"),
    [
        ("From: =?utf-8?q?J=C3=B6rg?= <Jorg@Fleet.Example>", "jorg@fleet.example", "Jörg"),
        ('From: "Night, Shift"\r\n <n@fleet.example>', "n@fleet.example", "Night, Shift"),
        ("From: a@b.example)<c@d.example>", None, ""),
        ("From: Desk <a@fleet.example>\r\nFrom: Other <b@fleet.example>", None, "Desk"),
        ("From: not an address", None, ""),
    ],
)
def test_parsed_message_reads_sender_and_name_from_one_parse(
    from_lines: str, sender: str | None, name: str
) -> None:
    """The From header is parsed once for both: the strict sender (None unless exactly one
    unambiguous address, across every From field) and the name shown to the other side."""
    from relay.parsing import parse_message

    raw = f"{from_lines}\r\nTo: t@relay.example\r\nSubject: x\r\n\r\nhi\r\n".encode()
    parsed = parse_message(raw)
    assert parsed.sender == sender
    assert parsed.from_name == name
    assert parsed.sender == read_from_header(parsed.from_header or "").sender

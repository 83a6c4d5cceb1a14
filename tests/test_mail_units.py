"""Pure pieces of mail handling: masking, strict sender parsing, header hygiene."""

from __future__ import annotations

import pytest

from relay.addresses import parse_single_sender, sender_allowed, split_rcpt
from relay.headers import header_text
from relay.masking import mask_addresses


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
    assert parse_single_sender(header) is None


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
    assert parse_single_sender(header) == expected


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

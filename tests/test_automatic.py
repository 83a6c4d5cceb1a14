"""RFC 3834 classification of automatic mail and recognition of our own mail coming back."""

from __future__ import annotations

import pytest

from relay.automatic import automatic_reason, is_our_loop


@pytest.mark.parametrize(
    ("headers", "mail_from", "expected"),
    [
        ({"auto-submitted": "auto-replied"}, "a@b.example", "Auto-Submitted: auto-replied"),
        (
            {"auto-submitted": "Auto-Generated; owner=x"},
            "a@b.example",
            "Auto-Submitted: auto-generated",
        ),
        ({"x-autoreply": "yes"}, "a@b.example", "x-autoreply"),
        ({"x-autorespond": "1"}, "a@b.example", "x-autorespond"),
        ({"precedence": "Bulk"}, "a@b.example", "Precedence: bulk"),
        ({"precedence": "auto_reply"}, "a@b.example", "Precedence: auto_reply"),
        ({"x-auto-response-suppress": "DR, OOF"}, "a@b.example", "X-Auto-Response-Suppress"),
        ({}, "", "empty return path"),
        ({}, "<>", "empty return path"),
    ],
)
def test_automatic_mail_is_named(headers: dict[str, str], mail_from: str, expected: str) -> None:
    assert automatic_reason(headers, mail_from) == expected


@pytest.mark.parametrize(
    "headers",
    [{}, {"auto-submitted": "no"}, {"precedence": "first-class"}, {"x-auto-response-suppress": ""}],
)
def test_mail_a_person_sent_is_not_automatic(headers: dict[str, str]) -> None:
    assert automatic_reason(headers, "dispatch@fleet.example") is None


def test_our_loop_marker_or_message_id_is_a_loop() -> None:
    domain = "relay.example"
    assert is_our_loop({"x-support-relay-loop": "Relay.Example"}, None, domain, domain)
    assert is_our_loop({}, "<abc@RELAY.example>", domain, domain)
    assert not is_our_loop({}, "<abc@fleet.example>", domain, domain)
    assert not is_our_loop({"x-support-relay-loop": "other.example"}, None, domain, domain)
    # A Message-ID that merely mentions our domain elsewhere is not ours.
    assert not is_our_loop({}, "<relay.example@fleet.example>", domain, domain)

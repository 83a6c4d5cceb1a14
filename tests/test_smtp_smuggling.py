"""SMTP smuggling: only CRLF.CRLF ends DATA, so a second message hidden behind a bare-LF or
bare-CR "end of data" is never taken as a message of its own.

The bytes go over a raw socket: an SMTP client library would normalise the line breaks
that are the point of the test.
"""

from __future__ import annotations

import pytest

from tests.harness import FLEET_INBOX, PARTNER_INBOX, LiveRelay
from tests.smtp_wire import WireClient

# Sequences some servers mistake for <CRLF>.<CRLF>.
FAKE_ENDS = {
    "lf-dot-lf": b"\n.\n",
    "cr-dot-cr": b"\r.\r",
    "lf-dot-crlf": b"\n.\r\n",
    "crlf-dot-lf": b"\r\n.\n",
    "cr-dot-crlf": b"\r.\r\n",
    "crlf-dot-cr": b"\r\n.\r",
    "lf-dot-cr": b"\n.\r",
}
MARKER = "SMUGGLED-7f3a"


def _payload(alias: str, fake_end: bytes) -> bytes:
    smuggled = (
        f"MAIL FROM:<{FLEET_INBOX}>\r\nRCPT TO:<{alias}>\r\nDATA\r\n"
        f"From: {FLEET_INBOX}\r\nTo: {alias}\r\nSubject: {MARKER}\r\n"
        f"Message-ID: <{MARKER}@fleet.example>\r\n\r\n{MARKER} body\r\n"
    ).encode()
    outer = (
        f"From: {FLEET_INBOX}\r\nTo: {alias}\r\nSubject: carrier\r\n"
        "Message-ID: <carrier-7f3a@fleet.example>\r\n\r\nThe carrier message."
    ).encode()
    return outer + fake_end + smuggled


@pytest.mark.parametrize("fake_end", FAKE_ENDS.values(), ids=FAKE_ENDS.keys())
async def test_a_fake_end_of_data_smuggles_nothing(live: LiveRelay, fake_end: bytes) -> None:
    acc, ticket_id, alias = await live.fleet_ticket()
    client = await WireClient.connect(live.smtp_port)
    try:
        await client.envelope(FLEET_INBOX, alias)
        final = await client.data(_payload(alias, fake_end))
        # NOOP then QUIT: if the server had read the smuggled commands as commands, their
        # replies would come before these.
        noop = await client.command("NOOP")
        quit_ = await client.command("QUIT")
    finally:
        await client.close()

    assert final.code == 250 or (final.code >= 500 and final.text[:2] == "5."), final
    assert (noop.code, quit_.code) == (250, 221), client.log
    # Greeting, EHLO, MAIL, RCPT, DATA 354, end of data, NOOP, QUIT: nothing else.
    assert [r.code for r in client.log] == [220, 250, 250, 250, 354, final.code, 250, 221]

    conversation = (await live.ticket(acc, ticket_id))["conversation"]
    from_fleet = [m for m in conversation if m["author"] == "fleet"]
    assert len(from_fleet) == (1 if final.code == 250 else 0)
    # Whatever the relay kept, the smuggled message never became a message of its own.
    assert not any(m["body"].lstrip().startswith(MARKER) for m in from_fleet)
    if final.code == 250 and from_fleet[0].get("disposition", "forwarded") == "forwarded":
        forwards = await live.sink.handler.wait_for(PARTNER_INBOX)
        assert len(forwards) == 1
        assert MARKER not in str(forwards[0].message["Subject"])


async def test_the_real_end_of_data_still_works_after_a_fake_one(live: LiveRelay) -> None:
    """Two genuine transactions on one connection, the first carrying every fake end: two
    messages, and the second one's body is its own."""
    acc, ticket_id, alias = await live.fleet_ticket()
    client = await WireClient.connect(live.smtp_port)
    try:
        await client.envelope(FLEET_INBOX, alias)
        first = b"".join(FAKE_ENDS.values())
        head = f"From: {FLEET_INBOX}\r\nTo: {alias}\r\nSubject: one\r\n\r\nfirst".encode()
        assert (await client.data(head + first)).code == 250
        reply = await client.command(f"MAIL FROM:<{FLEET_INBOX}>")
        assert reply.code == 250
        assert (await client.command(f"RCPT TO:<{alias}>")).code == 250
        head = f"From: {FLEET_INBOX}\r\nTo: {alias}\r\nSubject: two\r\n\r\nsecond".encode()
        assert (await client.data(head)).code == 250
    finally:
        await client.close()
    bodies = [
        m["body"]
        for m in (await live.ticket(acc, ticket_id))["conversation"]
        if m["author"] == "fleet"
    ]
    assert len(bodies) == 2 and bodies[1] == "second"

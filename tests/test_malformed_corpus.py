"""Every file of tests/corpus/malformed through the whole inbound path, over a real SMTP socket.

Each is addressed to a live ticket's alias (from the registered fleet address, unless the
From is what is hostile about it) and must get a 250 or a 5xx with an enhanced status code:
never a 4xx (the sender would retry a message that can never succeed), never a dropped
connection, and the session must still answer NOOP. A 250 must put exactly one message on the
ticket and, unless the relay filed it as automatic or held, forward it to the partner, with
no real address of the fleet or of anyone it copied, and nothing but the relay's own headers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from tests.forward_checks import assert_nothing_leaks, assert_only_our_headers, leak_tokens
from tests.harness import FLEET_INBOX, PARTNER_INBOX, LiveRelay

CORPUS = Path(__file__).parent / "corpus" / "malformed"
ENHANCED = re.compile(r"^5\.\d{1,3}\.\d{1,3} \S")

# How a corpus file is addressed before it is sent.
FLEET = "fleet"  # From and To replaced: the registered fleet writes to the ticket's alias
HOSTILE = "hostile"  # the file's own From kept (it is the point of the case), To replaced
AS_IS = "as-is"  # sent byte for byte: there is no header section to put anything in


@dataclass(frozen=True)
class Case:
    addressing: str
    # "250": a fleet reply the relay must take in spite of its flaws; "5xx": must refuse;
    # "either": both are defensible, the other assertions still apply.
    expected: str


MANIFEST: dict[str, Case] = {
    # CPython's own test_email data (see README.txt): real-world breakage.
    "cpython-msg_10.eml": Case(FLEET, "250"),  # mixed transfer encodings, odd capitalisation
    "cpython-msg_15.eml": Case(FLEET, "250"),  # inner multipart reuses the outer boundary
    "cpython-msg_17.eml": Case(FLEET, "250"),  # multipart whose boundary never appears
    "cpython-msg_19.eml": Case(FLEET, "250"),  # no header section at all (ours are added)
    "cpython-msg_25.eml": Case(FLEET, "either"),  # mbox "From " line, a bounce
    "cpython-msg_31.eml": Case(FLEET, "250"),  # declared boundary differs from the used one
    "cpython-msg_33.eml": Case(FLEET, "either"),  # RFC 2231 boundary; Precedence: bulk
    "cpython-msg_35.eml": Case(FLEET, "250"),  # no empty line between headers and body
    "cpython-msg_37.eml": Case(FLEET, "250"),  # runs of consecutive boundary lines
    "cpython-msg_41.eml": Case(FLEET, "250"),  # multipart/alternative without a boundary
    "cpython-msg_42.eml": Case(FLEET, "either"),  # bounce: message/rfc822 with a broken multipart
    "cpython-msg_43.eml": Case(FLEET, "either"),  # multipart/report delivery status
    "cpython-msg_46.eml": Case(FLEET, "250"),  # message/rfc822 forwarded by GroupWise
    "cpython-msg_47.eml": Case(FLEET, "250"),  # parts without the empty line after headers
    # Charsets and encodings.
    "charset-unknown-x-unknown.eml": Case(FLEET, "250"),
    "charset-unknown-x-mac-nonsense.eml": Case(FLEET, "250"),
    "utf8-invalid-in-body.eml": Case(FLEET, "250"),
    "utf8-invalid-in-headers.eml": Case(HOSTILE, "250"),  # From: fleet address, raw bad bytes
    "headers-8bit-raw-latin1.eml": Case(HOSTILE, "250"),  # From: fleet address, latin-1 name
    "base64-bad-padding.eml": Case(FLEET, "250"),
    "base64-illegal-characters.eml": Case(FLEET, "250"),
    "quoted-printable-broken.eml": Case(FLEET, "250"),
    "content-transfer-encoding-unknown.eml": Case(FLEET, "250"),
    "encoded-word-unknown-charset.eml": Case(HOSTILE, "250"),  # From: fleet address
    "encoded-word-malformed.eml": Case(FLEET, "250"),
    "subject-folded-encoded-words-very-long.eml": Case(FLEET, "250"),
    # Header injection through encoded-words, Message-ID and file names.
    "encoded-word-subject-crlf-bcc-injection.eml": Case(FLEET, "250"),
    # The fleet's address with a CR LF in the display name: taking it with the name cleaned
    # and refusing it are both safe (today: 550 5.7.1, "A From header with one address").
    "encoded-word-from-name-crlf-bcc-injection.eml": Case(HOSTILE, "either"),
    "message-id-and-references-hostile.eml": Case(FLEET, "250"),
    "attachment-filename-control-characters.eml": Case(FLEET, "250"),
    # Structure.
    "multipart-missing-closing-boundary.eml": Case(FLEET, "250"),
    "multipart-boundary-never-used.eml": Case(FLEET, "250"),
    "multipart-alternative-empty-parts.eml": Case(FLEET, "either"),
    "boundary-with-spaces-and-specials.eml": Case(FLEET, "250"),
    "content-type-garbage.eml": Case(FLEET, "250"),
    "header-first-line-is-continuation.eml": Case(FLEET, "250"),
    "headers-duplicated-and-conflicting.eml": Case(FLEET, "either"),
    "body-empty.eml": Case(FLEET, "either"),
    "headers-none-at-all.eml": Case(AS_IS, "5xx"),  # no From: nobody to authorize
    "nul-bytes-in-headers-and-body.eml": Case(FLEET, "either"),
    "message-rfc822-attachment-broken.eml": Case(FLEET, "250"),
    # Attachments.
    "attachment-filename-path-traversal.eml": Case(FLEET, "250"),
    "attachment-filename-10000-chars.eml": Case(FLEET, "250"),
    "attachment-filename-rfc2231-encoded.eml": Case(FLEET, "250"),
    "tnef-winmail-dat.eml": Case(FLEET, "250"),
    "html-only-with-script.eml": Case(FLEET, "250"),
    # Addresses.
    "recipients-cc-third-parties.eml": Case(HOSTILE, "250"),  # From: fleet address
    "body-quotes-real-addresses.eml": Case(FLEET, "250"),
    "autoreply-out-of-office.eml": Case(FLEET, "250"),
    "from-group-syntax.eml": Case(HOSTILE, "either"),
    "from-two-addresses.eml": Case(HOSTILE, "5xx"),
    "from-display-name-shows-other-address.eml": Case(HOSTILE, "5xx"),
    "from-encoded-word-name-shows-fleet-address.eml": Case(HOSTILE, "5xx"),
    "from-cve-2023-27043-paren-fleet-first.eml": Case(HOSTILE, "5xx"),
    "from-cve-2023-27043-paren-fleet-last.eml": Case(HOSTILE, "5xx"),
    "from-cve-2023-27043-quoted-address-as-name.eml": Case(HOSTILE, "5xx"),
    "from-cve-2023-27043-comma-in-quoted-name.eml": Case(HOSTILE, "5xx"),
    # Past the structure limits of relay.mime_limits (the SMTP listener itself refuses the
    # long line: aiosmtpd caps a CRLF line at 1001 bytes).
    "mime-nesting-past-limit.eml": Case(FLEET, "5xx"),
    "mime-message-rfc822-nesting-past-limit.eml": Case(FLEET, "5xx"),
    "mime-parts-past-limit.eml": Case(FLEET, "5xx"),
    "header-section-huge.eml": Case(FLEET, "5xx"),
    "part-header-section-huge.eml": Case(FLEET, "5xx"),
    "line-very-long.eml": Case(FLEET, "5xx"),
}

# email.feedparser's header line: a field name without controls, spaces or ':', then ':'.
_FIELD = re.compile(rb"[\x21-\x39\x3b-\x7e]*:")


def _params() -> list[Any]:
    return [pytest.param(name, id=name.removesuffix(".eml")) for name in sorted(MANIFEST)]


def test_the_manifest_names_every_corpus_file() -> None:
    assert sorted(p.name for p in CORPUS.glob("*.eml")) == sorted(MANIFEST)
    assert len(MANIFEST) >= 40


def addressed(raw: bytes, alias: str, addressing: str) -> bytes:
    """`raw` with To (and, for FLEET, From) replaced, the new lines written at the end of the
    top-level header section in the file's own line ending so the rest stays as found."""
    if addressing == AS_IS:
        return raw
    eol = next((e for e in (b"\r\n", b"\n", b"\r") if e in raw), b"\r\n")
    lines = raw.splitlines(keepends=True)  # bytes split on CR, LF and CRLF only
    drop = {b"to", b"from"} if addressing == FLEET else {b"to"}
    kept: list[bytes] = []
    dropping = False
    for end, line in enumerate(lines):  # noqa: B007 - read after the loop
        content = line.rstrip(b"\r\n")
        if not content:
            break
        if content[:1] in (b" ", b"\t"):  # a folded line belongs to the header above
            if not dropping:
                kept.append(line)
            continue
        field = None if content.startswith(b"From ") else _FIELD.match(content)
        if field is None and not content.startswith(b"From "):
            break  # the body starts here, without an empty line
        dropping = field is not None and content[: field.end() - 1].lower() in drop
        if not dropping:
            kept.append(line)
    else:
        end = len(lines)
    ours = b"To: " + alias.encode() + eol
    if addressing == FLEET:
        ours = b"From: City Cabs dispatch <" + FLEET_INBOX.encode() + b">" + eol + ours
    if kept and not kept[-1].endswith((b"\r", b"\n")):
        kept[-1] += eol
    return b"".join(kept) + ours + b"".join(lines[end:])


async def send_and_noop(live: LiveRelay, raw: bytes, alias: str) -> tuple[int, str]:
    """(code, text) of the final reply to DATA; the same session must then answer NOOP."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=live.smtp_port, timeout=20) as client:
        await client.mail(FLEET_INBOX)
        await client.rcpt(alias)
        try:
            response = await client.data(raw)
            code, text = response.code, response.message
        except aiosmtplib.SMTPResponseException as exc:
            code, text = exc.code, exc.message
        assert (await client.noop()).code == 250
    return code, text


@pytest.mark.parametrize("name", _params())
async def test_corpus_message(live: LiveRelay, name: str) -> None:
    case = MANIFEST[name]
    acc, ticket_id, alias = await live.fleet_ticket()
    sent = addressed((CORPUS / name).read_bytes(), alias, case.addressing)

    code, text = await send_and_noop(live, sent, alias)

    assert code == 250 or (500 <= code <= 599 and ENHANCED.match(text)), (code, text)
    if case.expected != "either":
        assert str(code)[0] == case.expected[0], (code, text)
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=live.smtp_port, timeout=10) as client:
        assert (await client.noop()).code == 250  # and the server takes new connections
    stored = [
        m for m in (await live.ticket(acc, ticket_id))["conversation"] if m["author"] == "fleet"
    ]
    if code != 250:
        assert stored == []
        assert live.sink.handler.for_rcpt(PARTNER_INBOX) == []
        return
    assert len(stored) == 1
    if stored[0].get("disposition", "forwarded") != "forwarded":
        return  # automatic or held: on the ticket only
    [forward] = await live.sink.handler.wait_for(PARTNER_INBOX)
    assert_nothing_leaks(forward.raw, leak_tokens(sent, alias))
    assert_only_our_headers(forward.raw)

"""What a forward to the partner may contain: checks shared by the inbound hostile-input tests."""

from __future__ import annotations

import re
import unicodedata
from email import message_from_bytes, policy
from email.message import EmailMessage

from tests.harness import FLEET_INBOX

# Headers the relay writes on a forward; anything else came from outside.
TOP_LEVEL_HEADERS = {
    "from",
    "to",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "auto-submitted",
    "x-support-relay-loop",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
}
PART_HEADERS = {
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
    "content-id",
    "mime-version",
}
_ADDRESS = re.compile(rb"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def leak_tokens(sent: bytes, alias: str) -> set[bytes]:
    """What must not reach the partner: the fleet's real address and domain, and everyone
    the message was addressed or copied to apart from the ticket's alias."""
    tokens = {FLEET_INBOX.encode(), FLEET_INBOX.split("@")[1].encode()}
    head = re.split(rb"\r?\n\r?\n|\r\r", sent, maxsplit=1)[0]
    for line in re.split(rb"\r?\n(?![ \t])|\r(?![\n \t])", head):
        name = line.split(b":", 1)[0].strip().lower()
        if name in (b"to", b"cc", b"bcc", b"reply-to", b"sender"):
            tokens |= {a.lower() for a in _ADDRESS.findall(line)}
    tokens.discard(alias.lower().encode())
    return tokens


def assert_nothing_leaks(forward: bytes, tokens: set[bytes], *, attachments: bool = True) -> None:
    """No token in the forward: raw, in every decoded part, in every decoded header.

    `attachments=False` leaves out the files the sender attached, which the relay forwards
    byte for byte by design (only the text it writes itself is masked)."""
    msg = message_from_bytes(forward, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    views = [forward] if attachments else []
    for part in msg.walk():
        if part.is_multipart() or (not attachments and _is_file(part)):
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            views.append(payload)
    for part in msg.walk():
        if not attachments and _is_file(part):
            continue  # its name is part of the file, as its bytes are
        for header, value in part.items():
            views.append(f"{header}: {value}".encode("utf-8", "surrogateescape"))
    for view in views:
        lowered = view.lower()
        for token in tokens:
            assert token not in lowered, (token, view[:300])
            # Quoted-printable or percent-encoded copies of an address are copies too.
            assert token.replace(b"@", b"%40") not in lowered, token
            assert token.replace(b"@", b"=40") not in lowered, token


def _is_file(part: EmailMessage) -> bool:
    return part.get_content_disposition() in ("attachment", "inline") and bool(
        part.get_filename() or part.get("Content-ID")
    )


def assert_only_our_headers(forward: bytes) -> None:
    msg = message_from_bytes(forward, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    assert not msg.defects, msg.defects
    assert set(k.lower() for k in msg.keys()) <= TOP_LEVEL_HEADERS, msg.keys()
    stack = [msg]
    while stack:
        part = stack.pop()
        for name, value in part.items():
            text = str(value)
            assert not any(c in text for c in "\r\n\x0b\x0c\x85\u2028\u2029"), (name, text)
            assert name.lower() != "bcc"
        if part is not msg:
            assert set(k.lower() for k in part.keys()) <= PART_HEADERS, part.keys()
        filename = part.get_filename()
        if filename is not None:
            assert "/" not in filename and "\\" not in filename and not filename.startswith(".")
            assert not any(
                unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") or c in _BIDI for c in filename
            ), filename
        if part.get_content_maintype() == "multipart":
            stack.extend(p for p in part.iter_parts() if isinstance(p, EmailMessage))
    # Raw view too: no header line anywhere that a lenient reader would take for a Bcc.
    assert not re.search(rb"(?im)^bcc[ \t]*:", forward)

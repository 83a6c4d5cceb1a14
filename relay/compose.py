"""Ticket events → complete outgoing emails, built fresh from templates and allowed headers.

Nothing of an inbound message's header block is ever copied: every header below is
written from our own data, passed through `header_text`, so no address, host or injected
line of the original can survive into a forward.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from relay.headers import header_text
from relay.rendering import RenderedEmail
from storage.types import utcnow

LOOP_HEADER = "X-Support-Relay-Loop"


@dataclass(frozen=True)
class FilePart:
    filename: str
    content_type: str
    data: bytes
    # Set for an image the HTML shows inline ("cid:<content_id>"): sent beside the HTML in
    # multipart/related instead of as an attachment.
    content_id: str | None = None


@dataclass(frozen=True)
class Envelope:
    """Who an email is from and to, as the recipient will see it."""

    from_name: str
    from_address: str
    to_address: str
    to_name: str = ""


@dataclass(frozen=True)
class Threading:
    in_reply_to: str | None = None
    references: Sequence[str] = field(default_factory=tuple)


def new_message_id(domain: str) -> str:
    return f"<{uuid.uuid4().hex}@{domain}>"


def _address(name: str, addr: str) -> Address:
    local, _, domain = addr.rpartition("@")
    return Address(display_name=header_text(name, 200), username=local, domain=domain)


def build_email(
    envelope: Envelope,
    rendered: RenderedEmail,
    *,
    message_id: str,
    domain: str,
    threading: Threading | None = None,
    files: Sequence[FilePart] = (),
) -> EmailMessage:
    """A multipart/alternative (text + HTML) email, wrapped in multipart/mixed with files."""
    msg = EmailMessage()
    msg["From"] = _address(envelope.from_name, envelope.from_address)
    msg["Reply-To"] = _address(envelope.from_name, envelope.from_address)
    msg["To"] = _address(envelope.to_name, envelope.to_address)
    msg["Subject"] = header_text(rendered.subject, 500)
    msg["Date"] = format_datetime(utcnow())
    msg["Message-ID"] = message_id
    threading = threading or Threading()
    if threading.in_reply_to:
        msg["In-Reply-To"] = threading.in_reply_to
    if threading.references:
        msg["References"] = " ".join(threading.references[-20:])
    # RFC 3834: everything the relay sends is machine-generated, so well-behaved responders
    # stay silent, and our loop marker lets us recognise our own mail if it comes back.
    msg["Auto-Submitted"] = "auto-generated"
    msg[LOOP_HEADER] = domain
    msg.set_content(rendered.text, subtype="plain", cte="quoted-printable")
    msg.add_alternative(rendered.html, subtype="html", cte="quoted-printable")
    html_part = msg.get_payload(1)
    assert isinstance(html_part, EmailMessage)
    # Inline images first: add_related must reach the HTML part before add_attachment
    # turns the message into multipart/mixed.
    for part in sorted(files, key=lambda f: f.content_id is None):
        maintype, _, subtype = part.content_type.partition("/")
        maintype, subtype = maintype or "application", subtype or "octet-stream"
        filename = header_text(part.filename, 200) or "attachment"
        if part.content_id:
            html_part.add_related(
                part.data,
                maintype=maintype,
                subtype=subtype,
                cid=f"<{part.content_id}>",
                filename=filename,
                disposition="inline",
            )
        elif part.content_type == "message/rfc822" and (inner := _as_message(part.data)):
            # RFC 2046 5.2.1: an attached email is never base64; it travels as a message.
            msg.add_attachment(inner, filename=filename)
        else:
            if maintype == "message":  # one too broken to carry as a message: plain bytes
                maintype, subtype = "application", "octet-stream"
            msg.add_attachment(part.data, maintype=maintype, subtype=subtype, filename=filename)
    return msg


def _as_message(data: bytes) -> EmailMessage | None:
    """`data` as an email that serialises cleanly, or None to send it as plain bytes."""
    try:
        inner = message_from_bytes(data, policy=policy.default)
        inner.as_bytes(policy=policy.SMTP)
    except Exception:
        return None
    return inner if isinstance(inner, EmailMessage) else None

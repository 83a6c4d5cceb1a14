"""Pure: a received email as its ticket's owner may download it — the MIME kept, addresses gone.

The owner may audit what arrived, but the other side's real addresses (and their colleagues',
and their mail servers') must not reach them this way either. So the download is the
received message re-serialised with:

- only the headers a reader needs (`_KEPT_HEADERS`); the trace headers (Received,
  Return-Path, DKIM-Signature, X-Originating-IP, …) that name hosts and addresses are dropped;
- every address outside the relay's own domain, in the kept headers and in every text part
  (decoded first, so quoted-printable or base64 cannot hide one), replaced by
  `redacted@redacted.invalid` (RFC 2606: can never be delivered);
- attachments and other non-text parts byte for byte; an attached email is treated the
  same way, recursively.
"""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from email.message import EmailMessage, Message

from relay.headers import header_text

REDACTED = "redacted@redacted.invalid"
_ADDRESS = re.compile(
    r"(?<![\w.!#$%&'*+/=?^`{|}~-])[\w.!#$%&'*+/=?^`{|}~-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,63}"
    r"(?![\w-])"
)
_KEPT_HEADERS = frozenset(
    {"from", "to", "cc", "reply-to", "sender", "subject", "date", "message-id", "in-reply-to"}
    | {"references", "mime-version", "content-type", "content-transfer-encoding"}
    | {"content-disposition", "content-id", "content-language", "content-description"}
    | {"auto-submitted", "precedence", "x-autoreply", "x-autorespond", "importance"}
    | {"x-priority", "x-mailer", "user-agent", "thread-topic", "thread-index"}
)
# Content headers that set_content writes itself.
_CONTENT_HEADERS = frozenset({"content-type", "content-transfer-encoding", "mime-version"})
# A part below the top carries only what describes its content.
_PART_HEADERS = _CONTENT_HEADERS | {
    "content-disposition", "content-id", "content-description", "content-language"
}  # fmt: skip


def redact(text: str, domain: str) -> str:
    """Every address not on `domain` (the relay's aliases) becomes REDACTED."""
    suffix = f"@{domain.lower()}"

    def replace(match: re.Match[str]) -> str:
        found = match.group(0)
        return found if found.lower().endswith(suffix) else REDACTED

    return _ADDRESS.sub(replace, text)


def masked_raw(raw: bytes, domain: str) -> bytes:
    """The downloadable form of a received message (see the module docstring)."""
    try:
        msg = message_from_bytes(raw, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        _mask_part(msg, domain, top=True)
        return msg.as_bytes(policy=policy.SMTP)
    except Exception:
        # Too broken to re-serialise: the bytes as text, addresses redacted wherever they
        # stand in clear. Encoded parts cannot be read here, so they are left out.
        text = raw.decode("latin-1")
        head, _, _ = text.partition("\r\n\r\n")
        note = "\r\n\r\n[The body could not be decoded and is not shown.]\r\n"
        return (redact(_kept_header_lines(head), domain) + note).encode("latin-1")


def _kept_header_lines(head: str) -> str:
    unfolded = re.sub(r"\r?\n[ \t]+", " ", head)
    lines = [line for line in unfolded.splitlines() if ":" in line]
    return "\r\n".join(
        line for line in lines if line.partition(":")[0].strip().lower() in _KEPT_HEADERS
    )


def _mask_headers(part: Message, domain: str, *, top: bool) -> None:
    kept: list[tuple[str, str]] = []
    for name, value in part.items():
        if name.lower() not in (_KEPT_HEADERS if top else _PART_HEADERS):
            continue
        kept.append((name, header_text(redact(str(value), domain), 10_000)))
    for name in set(part.keys()):
        del part[name]
    for name, value in kept:
        try:
            part[name] = value
        except Exception:  # a value the header registry cannot represent: leave it out
            continue


def _mask_part(part: Message, domain: str, *, top: bool = False) -> None:
    content_type = part.get_content_type()
    if content_type == "message/rfc822":
        _mask_headers(part, domain, top=top)
        inner = part.get_payload(0)
        if isinstance(inner, Message):
            _mask_part(inner, domain, top=True)
        return
    if part.is_multipart():
        _mask_headers(part, domain, top=top)
        for child in part.iter_parts() if isinstance(part, EmailMessage) else ():
            _mask_part(child, domain)
        return
    if part.get_content_maintype() == "text":
        _mask_text(part, domain, top=top)
        return
    _mask_headers(part, domain, top=top)


def _mask_text(part: Message, domain: str, *, top: bool) -> None:
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    try:
        text = data.decode(part.get_content_charset() or "utf-8", errors="replace")
    except LookupError:
        text = data.decode("utf-8", errors="replace")
    subtype = part.get_content_subtype()
    disposition = part.get_content_disposition()
    filename = part.get_filename()
    _mask_headers(part, domain, top=top)
    for name in _CONTENT_HEADERS | {"content-disposition"}:
        del part[name]
    assert isinstance(part, EmailMessage)
    part.set_content(
        redact(text, domain),
        subtype=subtype,
        cte="quoted-printable",
        disposition=disposition,
        filename=header_text(redact(filename, domain), 200) if filename else None,
    )

"""Inbound bytes → ParsedMessage: the few facts the pipeline needs, read once, defensively.

Nothing here raises on broken input: a header the parser cannot read counts as absent, an
unknown charset or invalid UTF-8 is decoded with replacement characters, a part whose
transfer encoding is broken yields what Python's decoder recovers. Structure limits are
enforced before this runs (`relay.mime_limits`), so the parse itself is bounded.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from email.policy import EmailPolicy
from typing import Any

from relay.addresses import FromHeader, plain_addresses, read_from_header
from relay.automatic import AUTOMATIC_HEADERS
from relay.compose import LOOP_HEADER, FilePart
from relay.filenames import safe_filename
from relay.headers import header_text
from relay.html import html_to_text

# A msg-id as RFC 5322 writes it: printable ASCII without spaces or angle brackets. These
# IDs are written back into the headers of mail we send (threading), so anything else (a
# client's UTF-8, a control character) is not an ID to us.
_MSGID = re.compile(r"<[!-;=?-~]{1,250}>")
# Headers read for classification: the RFC 3834 family and our own loop marker.
_CLASSIFY_HEADERS = (*AUTOMATIC_HEADERS, LOOP_HEADER.lower())
_FOLD = re.compile(r"\r?\n(?=[ \t])")
# Fields read as sent, not through policy.default's parse (see _raw_headers).
_READ_RAW = frozenset({"from", "message-id", "to", "cc"})


@dataclass(frozen=True)
class InlinePart:
    """An image the HTML body shows by `cid:` reference, with the sender's Content-ID."""

    content_id: str
    file: FilePart


@dataclass
class ParsedMessage:
    from_header: str | None
    from_name: str
    # The one address of the From header, read strictly; None when there is not exactly one.
    sender: str | None
    subject: str
    message_id: str | None
    references: list[str]
    text: str
    html: str | None = None
    attachments: list[FilePart] = field(default_factory=list)
    inline: list[InlinePart] = field(default_factory=list)
    # Lower-cased header name → value, for the automatic-mail and loop checks.
    headers: dict[str, str] = field(default_factory=dict)
    # Every address in To and Cc, as well as the lenient parser can read them.
    recipients: list[str] = field(default_factory=list)
    body_digest: str = ""


class _ParseOncePolicy(EmailPolicy):
    """policy.default, except that each header field of one message is parsed once.

    EmailMessage parses a field again on every access: reading one reply asked for its
    Content-Type six times (finding the bodies, walking the parts for files), and header
    parsing was most of the time the whole parse took. Parsed header objects are read-only
    (a str, with tuples and a read-only mapping for the parts), so handing out the same one
    again changes nothing. One instance per message: the cache ends with it.
    """

    _parsed: dict[tuple[str, str], Any]

    def header_fetch_parse(self, name: str, value: str) -> Any:
        key = (name, value)
        found = self._parsed.get(key)
        if found is None:
            found = self._parsed[key] = super().header_fetch_parse(name, value)
        return found


def _parse_once_policy() -> _ParseOncePolicy:
    reading = _ParseOncePolicy(header_factory=policy.default.header_factory)
    object.__setattr__(reading, "_parsed", {})  # policies refuse attribute assignment
    return reading


def _header(msg: Message, name: str) -> str | None:
    try:
        value = msg.get(name)
    except Exception:  # a header so broken the parser raises: treat as absent
        return None
    return None if value is None else str(value)


def _msgids(value: str | None) -> list[str]:
    return _MSGID.findall(value or "")


def _decode_part(part: Message) -> str:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        return ""
    if not isinstance(payload, bytes):
        return ""
    try:
        charset = part.get_content_charset() or "utf-8"
        text = payload.decode(charset, errors="replace")
    except (LookupError, ValueError):  # unknown charset: still readable as UTF-8
        text = payload.decode("utf-8", errors="replace")
    # PostgreSQL text cannot hold NUL, and no reader needs one.
    return text.replace("\x00", "\ufffd")


def _body_part(msg: EmailMessage, subtype: str) -> Message | None:
    try:
        return msg.get_body(preferencelist=(subtype,))
    except Exception:
        return None


def _file(part: Message) -> FilePart | None:
    try:
        content_type = part.get_content_type()
        if content_type == "message/rfc822":
            # An attached email is a file like any other; its own parts are not ours to read.
            inner = part.get_payload(0)
            data: object = (
                inner.as_bytes(policy=policy.SMTP) if isinstance(inner, Message) else None
            )
            name = part.get_filename() or "message.eml"
        else:
            data = part.get_payload(decode=True)
            name = part.get_filename() or ""
    except Exception:
        return None
    if not isinstance(data, bytes):
        return None
    return FilePart(
        filename=safe_filename(str(name)),
        content_type=content_type,
        data=data,
    )


def _leaves(part: Message) -> Iterator[Message]:
    """Every non-multipart part below `part`, depth first (depth is bounded by the pre-scan)."""
    if not part.is_multipart() or part.get_content_type() == "message/rfc822":
        yield part
        return
    payload = part.get_payload()
    for child in payload if isinstance(payload, list) else ():
        if isinstance(child, Message):
            yield from _leaves(child)


def _is_file(part: Message) -> bool:
    """A part the sender attached or embedded, as opposed to an unnamed piece of text."""
    maintype = part.get_content_maintype()
    if maintype not in ("text", "multipart"):
        return True
    return part.get_content_disposition() == "attachment" or bool(part.get_filename())


def _files(
    msg: EmailMessage, bodies: tuple[Message | None, ...]
) -> tuple[list[FilePart], list[InlinePart]]:
    """Attachments, and the images the HTML cites by Content-ID (kept apart so the forward
    can place them beside its HTML again)."""
    attachments: list[FilePart] = []
    inline: list[InlinePart] = []
    try:
        parts = [p for p in _leaves(msg) if all(p is not b for b in bodies) and _is_file(p)]
    except Exception:
        return attachments, inline
    for part in parts:
        file = _file(part)
        if file is None:
            continue
        content_id = _msgids(_header(part, "Content-ID"))
        if content_id and file.content_type.startswith("image/"):
            inline.append(InlinePart(content_id[0][1:-1], file))
        else:
            attachments.append(file)
    return attachments, inline


def _raw_headers(msg: Message, names: frozenset[str]) -> dict[str, list[str]]:
    """The values of the fields `names` (lower-cased) exactly as sent, unfolded.

    For From, Message-ID, To and Cc: policy.default would parse each into a structured
    header (the From header alone: about 0.2 ms) to render it back into a string that is
    then parsed again (From strictly, To and Cc leniently) or searched for an ID."""
    found: dict[str, list[str]] = {}
    for name, value in msg.raw_items():
        if (key := name.lower()) in names:
            found.setdefault(key, []).append(_FOLD.sub("", str(value)).strip())
    return found


def _raw_from(raw_headers: dict[str, list[str]]) -> str | None:
    """The From header exactly as sent, unfolded; several From headers are joined so the
    strict check sees several addresses and refuses them.

    Not `msg["From"]`: policy.default re-renders the value, and for inputs such as
    `a@b.example)<c@d.example>` the rendering hides the ambiguity the check looks for.
    """
    values = raw_headers.get("from")
    return ", ".join(values) if values else None


def _first(raw_headers: dict[str, list[str]], name: str) -> str | None:
    values = raw_headers.get(name)
    return values[0] if values else None


def _recipients(msg: Message, raw_headers: dict[str, list[str]]) -> list[str]:
    # Headers of plain mailboxes are read as sent: parsing them with policy.default only
    # to render them again for the lenient parser cost about 200 µs a header.
    raw = [v for name in ("to", "cc") if (v := _first(raw_headers, name))]
    plain = plain_addresses(raw)
    if plain is not None:
        return [address.lower() for address in plain]
    values = [v for name in ("To", "Cc") if (v := _header(msg, name))]
    try:
        pairs = email.utils.getaddresses(values)
    except Exception:
        return []
    return [address.lower() for _, address in pairs if "@" in address]


def parse_message(raw: bytes) -> ParsedMessage:
    msg = message_from_bytes(raw, policy=_parse_once_policy())
    assert isinstance(msg, EmailMessage)
    plain = _body_part(msg, "plain")
    html_part = _body_part(msg, "html")
    html = _decode_part(html_part) if html_part is not None else None
    if plain is not None:
        text = _decode_part(plain)
    else:
        text = html_to_text(html) if html else ""
    attachments, inline = _files(msg, (plain, html_part))
    raw_headers = _raw_headers(msg, _READ_RAW)
    from_header = _raw_from(raw_headers)
    author = read_from_header(from_header) if from_header else FromHeader(None, "")
    ids = _msgids(_first(raw_headers, "message-id"))
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = raw.partition(b"\n\n")
    headers = {
        name: header_text(value, 200)
        for name in _CLASSIFY_HEADERS
        if (value := _header(msg, name)) is not None
    }
    return ParsedMessage(
        from_header=from_header,
        from_name=header_text(author.display_name, 200),
        sender=author.sender,
        subject=header_text(_header(msg, "Subject") or "", 500),
        message_id=ids[0] if ids else None,
        # Parsed, not raw: an encoded word hiding a line break inside an ID must not pass.
        references=_msgids(_header(msg, "In-Reply-To")) + _msgids(_header(msg, "References")),
        text=text.replace("\r\n", "\n").strip(),
        html=html,
        attachments=attachments,
        inline=inline,
        headers=headers,
        recipients=_recipients(msg, raw_headers),
        body_digest=hashlib.sha256(body).hexdigest(),
    )

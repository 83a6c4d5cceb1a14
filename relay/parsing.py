"""Inbound bytes → ParsedMessage: the few facts the pipeline needs, read once, defensively."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage, Message

from relay.compose import FilePart
from relay.headers import header_text

_MSGID = re.compile(r"<[^<>\s]{1,250}>")


@dataclass
class ParsedMessage:
    from_header: str | None
    from_name: str
    subject: str
    message_id: str | None
    references: list[str]
    text: str
    attachments: list[FilePart] = field(default_factory=list)
    body_digest: str = ""


def _header(msg: Message, name: str) -> str | None:
    try:
        value = msg.get(name)
    except Exception:  # a header so broken the parser raises: treat as absent
        return None
    return None if value is None else str(value)


def _msgids(value: str | None) -> list[str]:
    return _MSGID.findall(value or "")


def _decode_part(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:  # unknown charset: still readable as UTF-8 with replacements
        return payload.decode("utf-8", errors="replace")


def _html_to_text(html: str) -> str:
    import html as html_lib

    text = re.sub(r"(?is)<(script|style|head)\b.*?</\1>", "", html)
    text = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</tr>|</li>|</h\d>", "\n", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = html_lib.unescape(text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _body_text(msg: EmailMessage) -> str:
    try:
        part = msg.get_body(preferencelist=("plain", "html"))
    except Exception:
        part = None
    if part is None:
        return ""
    text = _decode_part(part)
    if part.get_content_type() == "text/html":
        text = _html_to_text(text)
    return text.replace("\r\n", "\n").strip()


def _attachments(msg: EmailMessage) -> list[FilePart]:
    files: list[FilePart] = []
    try:
        parts = list(msg.iter_attachments())
    except Exception:
        return files
    for part in parts:
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            continue
        filename = header_text(part.get_filename() or "", 200)
        filename = filename.replace("/", "_").replace("\\", "_").lstrip(".") or "attachment"
        files.append(FilePart(filename=filename, content_type=part.get_content_type(), data=data))
    return files


def parse_message(raw: bytes) -> ParsedMessage:
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    from_header = _header(msg, "From")
    name = ""
    if from_header:
        try:
            addresses = msg["From"].addresses
            name = addresses[0].display_name if addresses else ""
        except Exception:
            name = ""
    ids = _msgids(_header(msg, "Message-ID"))
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = raw.partition(b"\n\n")
    return ParsedMessage(
        from_header=from_header,
        from_name=header_text(name, 200),
        subject=header_text(_header(msg, "Subject") or "", 500),
        message_id=ids[0] if ids else None,
        references=_msgids(_header(msg, "In-Reply-To")) + _msgids(_header(msg, "References")),
        text=_body_text(msg),
        attachments=_attachments(msg),
        body_digest=hashlib.sha256(body).hexdigest(),
    )

"""The MIME body of an outgoing email, written directly (RFC 2045, 2046, 2183, 2231).

The relay sends one shape of message: text and HTML as multipart/alternative; inline
images beside the HTML in multipart/related; files in multipart/mixed around it all. Built
with the `email` package, that body cost most of composing a reply (set_content parses
every header it sets back through its registry, and the generator walks the tree again);
written here it is a few string joins with the C codecs of `binascii`.

What goes into a part header is ours, or checked here: media types must be RFC 2045
tokens, Content-IDs printable ASCII, and file names arrive through `header_text` and are
quoted or RFC 2231-encoded, so nothing of the inbound message can add a header line.
"""

from __future__ import annotations

import binascii
import re
import secrets
from collections.abc import Sequence
from email import message_from_bytes, policy
from typing import TYPE_CHECKING
from urllib.parse import quote

from relay.headers import header_text

if TYPE_CHECKING:
    from relay.compose import FilePart

CRLF = b"\r\n"
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_CONTENT_ID = re.compile(r"[!-;=?-~]+\Z")  # printable ASCII without "<", ">"
_QUOTABLE = re.compile(r"[ !#-\[\]-~]*\Z")  # printable ASCII but '"' and "\\"
# RFC 2231 attribute-char: what may stand unescaped in an extended parameter value.
_ATTRIBUTE_SAFE = "!#$&+-.^_`|~"
_SEGMENT = 60  # characters of an encoded file name per line (continuations)


def mime_body(text: str, html: str, files: Sequence[FilePart] = ()) -> bytes:
    """MIME-Version, the top entity's headers, a blank line and its body, CRLF throughout."""
    inline = [f for f in files if f.content_id]
    attached = [f for f in files if not f.content_id]
    html_entity = _text("html", html)
    if inline:
        html_entity = _multipart("related", [html_entity, *map(_inline, inline)])
    entity = _multipart("alternative", [_text("plain", text), html_entity])
    if attached:
        entity = _multipart("mixed", [entity, *map(_attachment, attached)])
    return b"MIME-Version: 1.0\r\n" + entity


def _entity(headers: Sequence[str], body: bytes) -> bytes:
    return "".join(f"{line}\r\n" for line in headers).encode("ascii") + CRLF + body


def _text(subtype: str, content: str) -> bytes:
    lines = content.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    # Quoted-printable, lines of at most 76, trailing spaces encoded; then CRLF line ends.
    encoded = binascii.b2a_qp(lines, quotetabs=False, istext=True, header=False)
    if not encoded.endswith(b"\n"):
        encoded += b"\n"
    return _entity(
        [
            f'Content-Type: text/{subtype}; charset="utf-8"',
            "Content-Transfer-Encoding: quoted-printable",
        ],
        encoded.replace(b"\n", CRLF),
    )


def _multipart(subtype: str, parts: Sequence[bytes]) -> bytes:
    boundary = _boundary(parts)
    delimiter = b"--" + boundary.encode("ascii")
    body = b"".join(delimiter + CRLF + part + CRLF for part in parts) + delimiter + b"--" + CRLF
    return _entity([f'Content-Type: multipart/{subtype};\r\n boundary="{boundary}"'], body)


def _boundary(parts: Sequence[bytes]) -> str:
    # "=_" cannot occur in quoted-printable or base64 text; an attached email is checked.
    while True:
        boundary = f"=_{secrets.token_hex(16)}"
        if not any(boundary.encode("ascii") in part for part in parts):
            return boundary


def _base64(data: bytes) -> bytes:
    # 57 input bytes make one 76-character line.
    return b"".join(
        binascii.b2a_base64(data[i : i + 57], newline=False) + CRLF for i in range(0, len(data), 57)
    )


def _media_type(content_type: str) -> str:
    maintype, _, subtype = content_type.partition("/")
    if _TOKEN.match(maintype) and _TOKEN.match(subtype):
        return f"{maintype.lower()}/{subtype.lower()}"
    return "application/octet-stream"


def _filename(name: str) -> str:
    """The `filename` parameter: quoted when it is printable ASCII, else RFC 2231 UTF-8,
    split into numbered continuations so no line runs long."""
    name = header_text(name, 200) or "attachment"
    if _QUOTABLE.match(name) and len(name) <= _SEGMENT:
        return f'filename="{name}"'
    encoded = "utf-8''" + quote(name, safe=_ATTRIBUTE_SAFE)
    segments: list[str] = []
    while encoded:
        cut = _SEGMENT
        # Never split a %XX escape.
        while cut < len(encoded) and "%" in encoded[cut - 2 : cut]:
            cut -= 1
        segments.append(encoded[:cut])
        encoded = encoded[cut:]
    return ";\r\n ".join(f"filename*{i}*={segment}" for i, segment in enumerate(segments))


def _inline(part: FilePart) -> bytes:
    content_id = part.content_id or ""
    if not _CONTENT_ID.match(content_id):
        raise ValueError(f"not a Content-ID: {content_id!r}")
    return _entity(
        [
            f"Content-Type: {_media_type(part.content_type)}",
            "Content-Transfer-Encoding: base64",
            f"Content-Disposition: inline;\r\n {_filename(part.filename)}",
            f"Content-ID: <{content_id}>",
        ],
        _base64(part.data),
    )


def _attachment(part: FilePart) -> bytes:
    media_type = _media_type(part.content_type)
    disposition = f"Content-Disposition: attachment;\r\n {_filename(part.filename)}"
    if media_type == "message/rfc822":
        inner = _as_message(part.data)
        if inner is not None:
            # RFC 2046 5.2.1: an attached email is never base64; it travels as a message.
            cte = "7bit" if inner.isascii() else "8bit"
            if not inner.endswith(CRLF):
                inner += CRLF
            return _entity(
                ["Content-Type: message/rfc822", f"Content-Transfer-Encoding: {cte}", disposition],
                inner,
            )
    if media_type.startswith("message/") or media_type.startswith("multipart/"):
        # One too broken to carry as a message (or a bare multipart): plain bytes.
        media_type = "application/octet-stream"
    return _entity(
        [f"Content-Type: {media_type}", "Content-Transfer-Encoding: base64", disposition],
        _base64(part.data),
    )


def _as_message(data: bytes) -> bytes | None:
    """`data` as an email re-serialised cleanly (CRLF), or None to send it as plain bytes."""
    try:
        return message_from_bytes(data, policy=policy.default).as_bytes(policy=policy.SMTP)
    except Exception:
        return None

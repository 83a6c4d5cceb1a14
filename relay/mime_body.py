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

from relay.headers import header_text, whole_character_runs

if TYPE_CHECKING:
    from relay.compose import FilePart

CRLF = b"\r\n"
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_CONTENT_ID = re.compile(r"[!-;=?-~]+\Z")  # printable ASCII without "<", ">"
_QUOTABLE = re.compile(r"[ !#-\[\]-~]*\Z")  # printable ASCII but '"' and "\\"
# RFC 2231 attribute-char: what may stand unescaped in an extended parameter value.
_ATTRIBUTE_SAFE = "!#$&+-.^_`|~"
_SEGMENT = 60  # characters of an encoded file name per line (continuations)
_QP_LINE = 76
_MAX_7BIT_LINE = 78
_7BIT_BYTES = b"\t\n" + bytes(range(0x20, 0x7F))


def mime_body(text: str, html: str, files: Sequence[FilePart] = ()) -> bytes:
    """MIME-Version, the top entity's headers, a blank line and its body, CRLF throughout."""
    inline = [f for f in files if f.content_id]
    attached = [f for f in files if not f.content_id]
    html_entity = _text("html", html)
    if inline:
        related = [html_entity, *map(_inline, inline)]
        html_entity = _multipart("related", related, 'type="text/html"')
    entity = _multipart("alternative", [_text("plain", text), html_entity])
    if attached:
        entity = _multipart("mixed", [entity, *map(_attachment, attached)])
    return b"MIME-Version: 1.0\r\n" + entity


def _entity(headers: Sequence[str], body: bytes) -> bytes:
    return "".join(f"{line}\r\n" for line in headers).encode("ascii") + CRLF + body


def _text(subtype: str, content: str) -> bytes:
    data = content.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    if _is_7bit(data):
        # As Python's own contentmanager does: short printable ASCII travels as it is.
        cte, body = "7bit", data.replace(b"\n", CRLF)
    else:
        # Quoted-printable, trailing spaces encoded.
        cte, body = "quoted-printable", _quoted_printable(data)
    if body and not body.endswith(CRLF):
        body += CRLF
    return _entity(
        [f'Content-Type: text/{subtype}; charset="utf-8"', f"Content-Transfer-Encoding: {cte}"],
        body,
    )


def _is_7bit(data: bytes) -> bool:
    """Printable ASCII (and tabs), lines of at most 78 (RFC 5322 2.1.1's SHOULD), and no
    space or tab ending a line, which some transports strip and quoted-printable keeps."""
    # The line length before the trailing-blank searches: our HTML (long template lines)
    # fails there, after one cheap pass.
    return (
        not data.translate(None, _7BIT_BYTES)
        and max(map(len, data.split(b"\n"))) <= _MAX_7BIT_LINE
        and not data.endswith((b" ", b"\t"))
        and b" \n" not in data
        and b"\t\n" not in data
    )


def _quoted_printable(data: bytes) -> bytes:
    encoded = binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)
    lines = encoded.split(b"\n")
    if max(map(len, lines)) <= _QP_LINE:
        # Nearly always: b2a_qp kept every line short, so only the line ends change.
        return encoded.replace(b"\n", CRLF)
    return b"".join(line + CRLF for line in _qp_lines(lines))


def _qp_lines(lines: Sequence[bytes]) -> list[bytes]:
    """Lines of at most 76 characters (RFC 2045 6.7). b2a_qp keeps to that except where it
    encodes a trailing space or tab at the limit ("=20" after 75 characters): such a line
    gets one more soft break, never inside an "=XX" escape."""
    out: list[bytes] = []
    for line in lines[:-1] if lines and lines[-1] == b"" else lines:
        while len(line) > _QP_LINE:
            cut = _QP_LINE - 1  # room for the "=" of the soft break
            while b"=" in line[cut - 2 : cut]:
                cut -= 1
            out.append(line[:cut] + b"=")
            line = line[cut:]
        out.append(line)
    return out


def _multipart(subtype: str, parts: Sequence[bytes], parameter: str = "") -> bytes:
    boundary = _boundary(parts)
    delimiter = b"--" + boundary.encode("ascii")
    body = b"".join(delimiter + CRLF + part + CRLF for part in parts) + delimiter + b"--" + CRLF
    extra = f";\r\n {parameter}" if parameter else ""  # RFC 2387: related names its root's type
    return _entity([f'Content-Type: multipart/{subtype};\r\n boundary="{boundary}"{extra}'], body)


def _boundary(parts: Sequence[bytes]) -> str:
    # "=_" cannot occur in quoted-printable or base64 text, but can in 7bit text and an
    # attached email: every part is checked.
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
    """The `filename` parameter: quoted when it is short printable ASCII, else RFC 2231
    UTF-8, in numbered continuations when long, each holding whole characters (readers
    that decode section by section get no broken ones)."""
    name = header_text(name, 200) or "attachment"
    # "=?" would be decoded as an encoded word by many readers, though quoted.
    if _QUOTABLE.match(name) and "=?" not in name and len(name) <= _SEGMENT:
        return f'filename="{name}"'
    runs = whole_character_runs(name, lambda char: len(_encoded(char)), _SEGMENT)
    segments = [_encoded(run) for run in runs]
    if len(segments) == 1:
        return f"filename*=utf-8''{segments[0]}"
    segments[0] = f"utf-8''{segments[0]}"
    return ";\r\n ".join(f"filename*{i}*={segment}" for i, segment in enumerate(segments))


def _encoded(text: str) -> str:
    return quote(text, safe=_ATTRIBUTE_SAFE)


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
        if inner is not None and _fits_8bit(inner):
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


def _fits_8bit(data: bytes) -> bool:
    """Whether `data` may travel as 7bit/8bit (RFC 2045 2.7-2.8): no NUL, no line over 998
    octets. An attached email that does not is sent as base64 bytes instead."""
    return b"\0" not in data and all(len(line) <= 998 for line in data.split(CRLF))


def _as_message(data: bytes) -> bytes | None:
    """`data` as an email re-serialised cleanly (CRLF), or None to send it as plain bytes."""
    try:
        return message_from_bytes(data, policy=policy.default).as_bytes(policy=policy.SMTP)
    except Exception:
        return None

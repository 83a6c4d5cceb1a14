"""Byte-level header scanning: find fields in a raw message and read their values."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class HeaderField:
    name: bytes  # lower-cased; b"" for a line that is not a field
    start: int
    end: int


def header_fields(raw: bytes) -> tuple[list[HeaderField], int]:
    """The header section's fields as byte spans (with their folded lines), and where it ends."""
    fields: list[HeaderField] = []
    pos = 0
    while pos < len(raw):
        newline = raw.find(b"\n", pos)
        end = len(raw) if newline < 0 else newline + 1
        line = raw[pos:end]
        if line in (b"\n", b"\r\n"):
            break
        if line[:1] in (b" ", b"\t") and fields:
            last = fields[-1]
            fields[-1] = HeaderField(last.name, last.start, end)
        else:
            colon = line.find(b":")
            name = line[:colon].rstrip(b" \t").lower() if colon > 0 else b""
            fields.append(HeaderField(name, pos, end))
        pos = end
    return fields, pos


def field_value(raw: bytes, field: HeaderField) -> bytes:
    """The field's value, unfolded, without the name, colon or final line break."""
    text = raw[field.start : field.end]
    value = text[text.find(b":") + 1 :]
    return re.sub(rb"\r?\n(?=[ \t])", b"", value).strip(b"\r\n")

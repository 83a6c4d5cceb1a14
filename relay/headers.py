"""Header hygiene: nothing we put in a header may carry a line break or a control character."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

# Every character Python's str.splitlines() or a mail parser could treat as a line break,
# plus the rest of the C0/C1 controls: any of them in a header value could start a new header.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def readable(value: str) -> str:
    """`value` without lone surrogates: Python's mail parser keeps undecodable header bytes
    as surrogates, which no database or encoder will take. They become U+FFFD."""
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate that is not an escaped byte
        return value.encode("utf-8", "replace").decode("utf-8")


def header_text(value: str, max_length: int = 900) -> str:
    """A single-line, control-free version of `value`, safe to place in any header."""
    value = unicodedata.normalize("NFC", readable(value))
    value = _UNSAFE.sub(" ", value)
    value = re.sub(r"\s+", " ", value).strip()
    return value[:max_length]


def whole_character_runs(text: str, size: Callable[[str], int], limit: int) -> list[str]:
    """`text` cut into runs whose encoded `size` stays within `limit`, only between
    characters: each RFC 2047 word and each RFC 2231 section must decode on its own."""
    runs = [""]
    used = 0
    for char in text:
        cost = size(char)
        if used + cost > limit and runs[-1]:
            runs.append("")
            used = 0
        runs[-1] += char
        used += cost
    return runs

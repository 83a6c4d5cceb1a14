"""Header hygiene: nothing we put in a header may carry a line break or a control character."""

from __future__ import annotations

import re
import unicodedata

# Every character Python's str.splitlines() or a mail parser could treat as a line break,
# plus the rest of the C0/C1 controls: any of them in a header value could start a new header.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def header_text(value: str, max_length: int = 900) -> str:
    """A single-line, control-free version of `value`, safe to place in any header."""
    value = unicodedata.normalize("NFC", value)
    value = _UNSAFE.sub(" ", value)
    value = re.sub(r"\s+", " ", value).strip()
    return value[:max_length]

"""Pure: replace real addresses in text with the alias the reader writes to."""

from __future__ import annotations

import re
from collections.abc import Iterable


def mask_addresses(text: str, real_addresses: Iterable[str], alias: str) -> str:
    """Every case-insensitive occurrence of a real address becomes `alias`.

    Whole addresses only: `bob@fleet.example` must not rewrite `xbob@fleet.example.org`.
    """
    addresses = sorted({a.lower() for a in real_addresses if a and "@" in a}, key=len, reverse=True)
    if not addresses:
        return text
    pattern = re.compile(
        r"(?<![\w.+-])(?:" + "|".join(re.escape(a) for a in addresses) + r")(?![\w-]|\.\w)",
        re.IGNORECASE,
    )
    return pattern.sub(alias, text)

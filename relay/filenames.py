"""Pure: a file name from outside made safe to store, show and offer for download."""

from __future__ import annotations

import unicodedata

MAX_FILENAME = 200
# A longer "extension" is part of the name, not a type to keep when shortening.
_MAX_EXTENSION = 16
# Bidirectional overrides make "invoice\u202efdp.exe" display as "invoiceexe.pdf".
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
# Control characters, surrogates and Unicode line/paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def safe_filename(name: str, fallback: str = "attachment") -> str:
    """The last path part of `name` on one line, without control or direction characters,
    leading dots or absurd length (the extension survives shortening); `fallback` if empty."""
    name = unicodedata.normalize("NFC", name)
    name = "".join(
        " " if unicodedata.category(c) in _UNSAFE_CATEGORIES or c in _BIDI_CONTROLS else c
        for c in name
    )
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    # Leading dots would hide the file or walk up ("..") on a careless client; trailing dots
    # and spaces are dropped by Windows anyway.
    name = " ".join(name.split()).lstrip(". ").rstrip(". ")
    if len(name) > MAX_FILENAME:
        stem, dot, extension = name.rpartition(".")
        if dot and stem and len(extension) <= _MAX_EXTENSION:
            name = f"{stem[: MAX_FILENAME - len(extension) - 1].rstrip()}.{extension}"
        else:
            name = name[:MAX_FILENAME].rstrip(". ")
    return name or fallback

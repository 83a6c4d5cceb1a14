"""Domain names as they arrive in mail: host-name checks and the normal form we compare."""

from __future__ import annotations

import re

import idna

_HOSTNAME_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)", re.ASCII | re.IGNORECASE)


def is_hostname(value: str) -> bool:
    """An LDH host name (A-labels only), optionally with a final dot: safe inside a header."""
    name = value[:-1] if value.endswith(".") else value
    if not name or len(name) > 253 or not name.isascii():
        return False
    return all(_HOSTNAME_LABEL.fullmatch(label) for label in name.split("."))


def ascii_domain(value: str) -> str:
    """Lower case, no final dot, U-labels as A-labels when they convert (else unchanged).

    IDNA 2008 with UTS #46 mapping, as email_validator reads addresses: Python's "idna" codec
    is IDNA 2003, which turns "faß.de" into "fass.de", another domain than "xn--fa-hia.de".
    """
    name = value.strip().lower().rstrip(".")
    if name and not name.isascii():
        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except UnicodeError:  # idna.IDNAError is one
            pass
    return name


def domain_or_none(value: str | None) -> str | None:
    """Lower case, no final dot, when it is a host name; None otherwise."""
    if value is None:
        return None
    name = value.strip().lower().rstrip(".")
    return name if is_hostname(name) else None

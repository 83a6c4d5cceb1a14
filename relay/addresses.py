"""Pure address helpers: alias addresses, strict sender parsing, allow-list matching."""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass
from email import errors
from email.headerregistry import Address, HeaderRegistry
from typing import Any

from email_validator import EmailNotValidError, validate_email

from relay.headers import readable

_ADDRESS_IN_NAME = re.compile(r"[^\s<>\"',;:()]+@[^\s<>\"',;:()]+")
# The modern parser's header classes; a registry is only a name → class map, shared safely.
_HEADERS = HeaderRegistry()


def alias_address(local_part: str, domain: str) -> str:
    return f"{local_part}@{domain}"


def split_rcpt(address: str) -> tuple[str, str] | None:
    """(local part, domain) of an envelope recipient, lower-cased; None when it is not one."""
    local, sep, domain = address.strip().rpartition("@")
    if not sep or not local or not domain or any(c.isspace() or c in '<>"' for c in address):
        return None
    return local.lower(), domain.lower().rstrip(".")


def normalize_email(value: str) -> str:
    """A validated address in canonical form; raises ValueError with a readable reason."""
    try:
        result = validate_email(value, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    return result.normalized.lower()


@dataclass(frozen=True)
class FromHeader:
    """What a From header says, from one parse: the sender (strictly) and the name shown."""

    # The one address, or None if there is not exactly one unambiguous one.
    sender: str | None
    # The first mailbox's display name ("" when there is none or the header is unreadable).
    display_name: str


def read_from_header(header_value: str) -> FromHeader:
    """The From header read once, for both its strict sender and its display name.

    Python 3.11.7's address parsers can be led to read an address out of a display name
    (CVE-2023-27043). We ask both the modern and the legacy parser and refuse the header if
    they do not agree, then validate the result strictly.
    """
    header_value = readable(header_value)  # raw 8-bit bytes in a name are not an ambiguity
    try:
        header = _HEADERS("from", header_value)
        addresses: tuple[Address, ...] = header.addresses  # type: ignore[attr-defined]
        name = str(addresses[0].display_name) if addresses else ""
    except Exception:
        return FromHeader(None, "")
    return FromHeader(_single_sender(header, addresses, header_value), name)


def _single_sender(header: Any, addresses: tuple[Address, ...], header_value: str) -> str | None:
    # A display name in an unknown charset or with bytes that do not decode is unreadable,
    # not ambiguous (the address itself is checked strictly below); any other defect is.
    unreadable = (errors.CharsetError, errors.UndecodableBytesDefect)
    defects = [d for d in header.defects if not isinstance(d, unreadable)]
    if len(addresses) != 1 or defects:
        return None
    # A group ("Desk: a@b.example;") is not a mailbox: RFC 5322 allows none in From.
    if any(group.display_name is not None for group in header.groups):
        return None
    modern = addresses[0].addr_spec
    # A display name that shows a different address is a spoofing trick, not a name.
    shown = _ADDRESS_IN_NAME.findall(addresses[0].display_name)
    if any(found.lower() != modern.lower() for found in shown):
        return None
    legacy = email.utils.getaddresses([header_value])
    if len(legacy) != 1 or legacy[0][1].lower() != modern.lower():
        return None
    try:
        return normalize_email(modern)
    except ValueError:
        return None


def sender_allowed(sender: str, allowed: list[str]) -> bool:
    """Whether `sender` matches an allow-list entry: an exact address or `@domain`."""
    sender = sender.lower()
    domain = sender.rpartition("@")[2]
    for entry in allowed:
        entry = entry.strip().lower()
        if entry.startswith("@") and entry[1:] == domain:
            return True
        if entry == sender:
            return True
    return False


def validate_sender_entry(entry: str) -> str:
    """Canonical form of an allowedSenders entry; raises ValueError."""
    entry = entry.strip().lower()
    if entry.startswith("@"):
        normalize_email(f"postmaster{entry}")
        return entry
    return normalize_email(entry)

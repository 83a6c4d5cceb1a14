"""Pure address helpers: alias addresses, strict sender parsing, allow-list matching."""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass
from email import errors
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.headerregistry import Address, HeaderRegistry
from functools import lru_cache
from typing import Any

from email_validator import EmailNotValidError, validate_email

from relay.headers import readable

_ADDRESS_IN_NAME = re.compile(r"[^\s<>\"',;:()]+@[^\s<>\"',;:()]+")

# The plain forms nearly every From header takes, in a grammar too narrow to be ambiguous:
# ASCII dot-atoms for the address; a display name of plain words (no dots, no "=" or "?",
# so no obsolete phrase and no encoded word) or one quoted string without escapes or "="
# (the modern parser decodes an encoded word even inside quotes).
# For these the two parsers below always agree (tests/test_addresses_fast.py checks it
# against them); anything else takes the full path.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_WORD = r"[A-Za-z0-9!#$%&'*+/^_`{|}~-]+"
_MAILBOX = (
    rf"[ \t]*(?:"
    rf"(?:(?P<words>{_WORD}(?:[ \t]+{_WORD})*)|\"(?P<quoted>[ !#-<>-\[\]-~]*)\")?"
    rf"[ \t]*<(?P<angled>{_DOT_ATOM}@{_DOT_ATOM})>"
    rf"|(?P<bare>{_DOT_ATOM}@{_DOT_ATOM})"
    rf")[ \t]*"
)
_PLAIN_FROM = re.compile(_MAILBOX)
# To and Cc: such mailboxes separated by commas.
_PLAIN_LIST = re.compile(rf"{_MAILBOX}(?:,{_MAILBOX.replace('?P<', '?P<more_')})*")
_BLANKS = re.compile(r"[ \t]+")
# The email package decodes an RFC 2047 encoded word wherever an atom may stand, in an
# address's local part or domain too: text holding one takes the full path.
_ENCODED_WORD = "=?"
# MAIL FROM / RCPT TO's <address> in the same narrow grammar, then the parameters; a
# comment after the address (RFC 5322 CFWS, which the full parser skips), or whitespace
# other than spaces and tabs before the parameters, takes the full path.
_PLAIN_ENVELOPE = re.compile(rf"[ \t]*<({_DOT_ATOM}@{_DOT_ATOM})>[ \t]*(?![\s(])(.*)", re.DOTALL)
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


def plain_envelope_address(arg: str) -> tuple[str, str] | None:
    """(address, parameters) of a MAIL FROM / RCPT TO argument of the plain form
    `<local@domain> PARAMS`, exactly as email's get_angle_addr reads it; None for any
    other form, which the caller parses in full."""
    plain = None if _ENCODED_WORD in arg else _PLAIN_ENVELOPE.fullmatch(arg)
    return None if plain is None else (plain[1], plain[2])


def plain_addresses(values: list[str]) -> list[str] | None:
    """The addresses of address-list headers (To, Cc) that all take the plain form, as
    email.utils.getaddresses reads them; None if any does not, for the caller to parse."""
    found: list[str] = []
    for value in values:
        if _ENCODED_WORD in value or _PLAIN_LIST.fullmatch(value) is None:
            return None
        # Consecutive matches: the full match above leaves only commas between them.
        found += [m["angled"] or m["bare"] for m in _PLAIN_FROM.finditer(value)]
    return found


def full_envelope_address(arg: str) -> tuple[str, str]:
    """(address, parameters) of any MAIL FROM / RCPT TO argument, as aiosmtpd 1.4 reads
    it; raises email.errors.HeaderParseError."""
    if arg.lstrip().startswith("<"):
        angle, rest = get_angle_addr(arg)
        return str(angle.addr_spec), str(rest)
    spec, rest = get_addr_spec(arg)
    return str(spec.addr_spec), str(rest)


@lru_cache(maxsize=4096)
def normalize_email(value: str) -> str:
    """A validated address in canonical form; raises ValueError with a readable reason.

    Cached: a fleet's few senders write most of its mail, and validating one costs about
    100 µs. (A ValueError is not cached; it is raised again each time.)"""
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
    plain = None if _ENCODED_WORD in header_value else _PLAIN_FROM.fullmatch(header_value)
    if plain is not None:  # about 20 µs where the two parsers take about 250
        return _plain_from(plain)
    return parse_from_header(header_value)


def parse_from_header(header_value: str) -> FromHeader:
    """`read_from_header` through both parsers, whatever the header's form."""
    header_value = readable(header_value)  # raw 8-bit bytes in a name are not an ambiguity
    try:
        header = _HEADERS("from", header_value)
        addresses: tuple[Address, ...] = header.addresses  # type: ignore[attr-defined]
        name = str(addresses[0].display_name) if addresses else ""
    except Exception:
        return FromHeader(None, "")
    return FromHeader(_single_sender(header, addresses, header_value), name)


def _plain_from(plain: re.Match[str]) -> FromHeader:
    """What `read_from_header`'s full path finds in a header of the plain grammar: the
    modern parser joins a name's words with one space and keeps a quoted one as written."""
    words, quoted, address = plain["words"], plain["quoted"], plain["angled"] or plain["bare"]
    name = _BLANKS.sub(" ", words) if words else quoted or ""
    # A quoted name that shows another address is the spoofing trick the full path refuses.
    if any(found.lower() != address.lower() for found in _ADDRESS_IN_NAME.findall(name)):
        return FromHeader(None, name)
    try:
        return FromHeader(normalize_email(address), name)
    except ValueError:
        return FromHeader(None, name)


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

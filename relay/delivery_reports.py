"""Read a delivery report (bounce): RFC 3464 DSNs first, then flufl.bounce's detectors for
the non-standard formats MTAs still send (Exim, qmail, Exchange, Yahoo, …)."""

from __future__ import annotations

import email
import logging
import re
from dataclasses import dataclass
from email.message import Message

from flufl.bounce import all_failures

log = logging.getLogger(__name__)

HARD = "hard"
SOFT = "soft"
DELAYED = "delayed"

_STATUS = re.compile(rb"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
# In free text a status counts only where a server's reply puts it: after the reply code
# ("550 5.1.1", "550-5.1.1") or as qmail writes it ("#5.1.1"). Anything else that looks
# like one is an IP address ("[10.4.0.12]") or a version ("Exim 4.94.2").
_TEXT_STATUS = re.compile(rb"(?:\b[245]\d\d[ -]|#)([245]\.\d{1,3}\.\d{1,3})\b")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_SEVERITY = {DELAYED: 0, SOFT: 1, HARD: 2}


@dataclass(frozen=True)
class DeliveryReport:
    """What a report says about the one recipient our message had.

    `kind`: "hard" (the address does not take mail: suppress it), "soft" (the remote server
    gave up after temporary failures, e.g. a full mailbox), "delayed" (still trying).
    """

    kind: str
    status: str | None
    diagnostic: str | None


def read_report(raw: bytes) -> DeliveryReport | None:
    """The report in `raw`, or None when it is not one (e.g. an auto-reply sent to the
    return path, or a "delivered" notice)."""
    # flufl.bounce reads the compat32 object model, which is also the one that keeps
    # message/delivery-status blocks as header blocks.
    message = email.message_from_bytes(raw)
    kind, status, diagnostic = _from_dsn(message)
    if kind is None:
        kind = _from_detectors(message)
    if kind is None:
        return None
    status = status or _status_in_text(raw)
    if kind == HARD and status and status.startswith("4."):
        kind = SOFT  # "failed" after temporary failures: the address itself may be fine
    return DeliveryReport(kind, status, diagnostic)


def _from_dsn(message: Message) -> tuple[str | None, str | None, str | None]:
    """The worst recipient block of any message/delivery-status part."""
    best: tuple[str | None, str | None, str | None] = (None, None, None)
    for part in message.walk():
        if part.get_content_type() != "message/delivery-status" or not part.is_multipart():
            continue
        for block in part.get_payload():
            if not isinstance(block, Message):
                continue
            action = str(block.get("action", "")).strip().lower()
            status = _status_of(str(block.get("status", "")))
            if action.startswith(("fail", "error")):  # opensmtpd writes "error"
                kind = SOFT if status and status.startswith("4.") else HARD
            elif action.startswith("delayed"):
                kind = DELAYED
            else:
                continue  # delivered, relayed, expanded: not a failure
            if supersedes(kind, best[0]):
                diagnostic = _printable(str(block.get("diagnostic-code", ""))) or None
                best = (kind, status, diagnostic)
    return best


def supersedes(kind: str, earlier: str | None) -> bool:
    """Whether a report of `kind` says more than an `earlier` one about the same message:
    a hard bounce after a delay warning counts, the same report again or a milder one not."""
    return earlier is None or _SEVERITY[kind] > _SEVERITY[earlier]


def _from_detectors(message: Message) -> str | None:
    try:
        temporary, permanent = all_failures(message)
    except Exception:  # a detector tripping over a malformed message is not a report
        log.warning("bounce detectors failed on a delivery report", exc_info=True)
        return None
    if permanent:
        return HARD
    if temporary:
        return DELAYED
    return None


def _printable(value: str) -> str:
    """One line of printable text: the report is the sender's, and PostgreSQL refuses NUL."""
    return " ".join("".join(c if c.isprintable() else " " for c in value).split())[:1000]


def _status_of(value: str) -> str | None:
    match = _STATUS.search(value.encode("ascii", "replace"))
    return match[0].decode() if match else None


def _status_in_text(raw: bytes) -> str | None:
    # Non-standard reports quote the remote server's reply ("550 5.1.1 <x>: unknown user")
    # in their text; the report's own header block holds only Received lines and the like.
    parts = _HEADER_END.split(raw[:200_000], maxsplit=1)
    match = _TEXT_STATUS.search(parts[-1]) if len(parts) == 2 else None
    return match[1].decode() if match else None

"""Pure: is this message from a machine (RFC 3834 and the common vendor headers), or one of
our own come back (a loop)?"""

from __future__ import annotations

from collections.abc import Mapping

# Values of Precedence that mark mass or automatic mail (RFC 2076 usage, RFC 3834 §2).
_BULK_PRECEDENCE = {"bulk", "junk", "list", "auto_reply"}
# Exchange asks others not to auto-respond with this; it is only sent on automatic mail.
_SUPPRESS_VALUES = {"all", "oof", "autoreply", "dr", "rn", "nrn"}

# Headers the classification reads; parsing keeps exactly these (lower-cased names).
AUTOMATIC_HEADERS = (
    "auto-submitted",
    "x-autoreply",
    "x-autorespond",
    "x-autoresponder",
    "precedence",
    "x-auto-response-suppress",
    "x-loop",
)


def automatic_reason(headers: Mapping[str, str], mail_from: str) -> str | None:
    """Why this message counts as automatic, or None for mail a person sent."""
    auto = headers.get("auto-submitted", "").split(";", 1)[0].strip().lower()
    if auto and auto != "no":
        return f"Auto-Submitted: {auto[:40]}"
    for name in ("x-autoreply", "x-autorespond", "x-autoresponder"):
        if name in headers:
            return name
    precedence = headers.get("precedence", "").strip().lower()
    if precedence in _BULK_PRECEDENCE:
        return f"Precedence: {precedence}"
    suppress = {v.strip().lower() for v in headers.get("x-auto-response-suppress", "").split(",")}
    if suppress & _SUPPRESS_VALUES:
        return "X-Auto-Response-Suppress"
    if not mail_from or mail_from == "<>":
        return "empty return path"
    return None


def is_our_loop(
    headers: Mapping[str, str], message_id: str | None, loop_value: str, domain: str
) -> bool:
    """Mail that carries our loop marker, or one of our own Message-IDs, is our own mail
    coming back: taking it would let two auto-responders ping-pong through the relay."""
    if headers.get("x-support-relay-loop", "").strip().lower() == loop_value.lower():
        return True
    return message_id is not None and message_id.lower().endswith(f"@{domain.lower()}>")

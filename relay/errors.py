"""The domain's error tree. Edges map it to wire replies: `api.problems` and `relay.replies`.

    RelayError
    ├── NotFound                 → HTTP 404 (also: "not yours")
    ├── Conflict                 → HTTP 409
    │   └── OpenTicketLimit      → HTTP 409, names the limit
    ├── InvalidInput             → HTTP 422 with per-field messages
    ├── InboundRefused           → SMTP 5xx, carries its reply
    │   ├── UnknownAlias         → 550 5.1.1
    │   ├── RelayDenied          → 550 5.7.1
    │   ├── SenderNotAllowed     → 550 5.7.1
    │   ├── NotAuthenticated     → 550 5.7.1 (451 4.4.3 when DNS failed)
    │   └── MalformedMessage     → 550 5.6.0
    └── DeliveryError            raised by transports, handled by the worker
        ├── TemporaryDeliveryError   retried with backoff until the lifetime runs out
        └── PermanentDeliveryError   failed at once

Anything else that escapes is our fault: HTTP 500 / SMTP 451 4.3.0, the exception text
never reaches the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType


class RelayError(Exception):
    """Base of every error the relay raises on purpose."""


class NotFound(RelayError):
    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found")
        self.what = what


class Conflict(RelayError):
    """The request is valid but the resource's state forbids it; the text says why."""

    # Extra members for the problem body (RFC 9457 extensions), e.g. the limit that applied.
    extensions: Mapping[str, object] = MappingProxyType({})  # read-only: shared by default


class OpenTicketLimit(Conflict):
    def __init__(self, scope: str, limit: int) -> None:
        where = "on this trip" if scope == "trip" else "in total"
        super().__init__(
            f"Open ticket limit exceeded: you already have {limit} open tickets {where}."
            " Close one before opening another."
        )
        self.extensions = {"limit": limit, "limitScope": scope}


class InvalidInput(RelayError):
    """Input that parsed but makes no sense; `fields` maps a field name to its message."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


class InboundRefused(RelayError):
    """Mail we will not take; `reply` is the full SMTP reply line."""

    reply = "550 5.0.0 Message refused"

    def __init__(self, reply: str | None = None) -> None:
        if reply is not None:
            self.reply = reply
        super().__init__(self.reply)


class UnknownAlias(InboundRefused):
    reply = "550 5.1.1 No such mailbox here"


class RelayDenied(InboundRefused):
    reply = "550 5.7.1 Relaying denied: this server only accepts mail for its own domain"


class SenderNotAllowed(InboundRefused):
    reply = "550 5.7.1 Sender is not allowed to write to this ticket"


class NotAuthenticated(InboundRefused):
    """SPF/DKIM/DMARC did not vouch for the From domain and the policy says reject."""

    reply = "550 5.7.1 Message not authenticated"


class MalformedMessage(InboundRefused):
    reply = "550 5.6.0 Message could not be understood"


class DeliveryError(RelayError):
    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class TemporaryDeliveryError(DeliveryError):
    pass


class PermanentDeliveryError(DeliveryError):
    pass

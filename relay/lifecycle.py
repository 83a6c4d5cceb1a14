"""Pure: the ticket status machine and the rules for mail that reaches a closed ticket.

open ──▶ processing ──▶ closed
  ▲  ◀──────┘  │          │
  └────────────┴──────────┘  (reopen: a closed ticket only goes back to open)
"""

from __future__ import annotations

from datetime import datetime, timedelta

from relay.errors import Conflict, InboundRefused

OPEN = "open"
PROCESSING = "processing"
CLOSED = "closed"
STATUSES = (OPEN, PROCESSING, CLOSED)

_ALLOWED = {
    (OPEN, PROCESSING),
    (OPEN, CLOSED),
    (PROCESSING, OPEN),
    (PROCESSING, CLOSED),
    (CLOSED, OPEN),
}


def check_transition(current: str, target: str) -> None:
    """Raise Conflict with a sentence a partner can act on when `current → target` is impossible."""
    if current == target:
        raise Conflict(f"Ticket is already {target}.")
    if (current, target) not in _ALLOWED:
        raise Conflict(f"A {current} ticket cannot become {target}; reopen it first (status open).")


class TicketClosedForReplies(InboundRefused):
    """Mail for a ticket closed longer than the reopen window: refused loudly, never dropped."""

    def __init__(self, ticket_id: int, closed_at: datetime) -> None:
        day = closed_at.strftime("%Y-%m-%d")
        super().__init__(
            f"550 5.2.1 Ticket #{ticket_id} was closed on {day} and no longer accepts replies;"
            " please ask for a new ticket"
        )


def may_reopen_by_mail(closed_at: datetime | None, now: datetime, window: timedelta) -> bool:
    return closed_at is None or now - closed_at <= window

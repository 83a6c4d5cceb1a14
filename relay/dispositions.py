"""What became of an inbound email (`Message.disposition`)."""

from __future__ import annotations

# Sent on to the other side.
FORWARDED = "forwarded"
# Kept on the ticket only:
AUTOMATIC = "automatic"  # an auto-reply (RFC 3834): never forwarded, never acted on
HELD = "held"  # more mail on one alias than a person writes: a suspected loop
QUARANTINED = "quarantined"  # failed SPF/DKIM/DMARC under a quarantine policy

# What the ticket's owner may look at and decide to forward after all.
RELEASABLE = frozenset({HELD, QUARANTINED})

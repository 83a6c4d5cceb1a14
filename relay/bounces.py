"""Signed bounce addresses (VERP): each outbound message gets its own envelope sender.

`bounce-<outbox id>-<expiry>-<mac>@<relay domain>`: the id says which message a delivery
report is about, the expiry (Unix seconds, base 36) bounds how long the address is honoured,
and the MAC (HMAC-SHA256 over both, 80 bits, base 32) makes it impossible to forge or guess
one. Everything is lower case, so MTAs that fold local parts do not break it.

Several secrets may be configured for rotation: the first signs, every one verifies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence
from datetime import datetime, timedelta

PREFIX = "bounce-"
# The unsigned return path earlier versions used; reports to it cannot be attributed.
LEGACY_LOCAL_PART = "bounces"
_PATTERN = re.compile(r"bounce-([0-9]{1,18})-([0-9a-z]{1,13})-([a-z2-7]{16})")
_MAC_CHARS = 16


def is_bounce_local_part(local_part: str) -> bool:
    """Mail to this local part is a delivery report (valid, forged or expired)."""
    local_part = local_part.lower()
    return local_part.startswith(PREFIX) or local_part == LEGACY_LOCAL_PART


class BounceAddresses:
    """Signs and verifies the envelope senders of outbound mail."""

    def __init__(self, secrets: Sequence[bytes], domain: str, ttl: timedelta) -> None:
        if not secrets or any(len(s) < 16 for s in secrets):
            raise ValueError("bounce secrets must be at least 16 bytes")
        self.secrets = list(secrets)
        self.domain = domain
        self.ttl = ttl

    def address_for(self, outbox_id: int, now: datetime) -> str:
        expiry = _base36(int((now + self.ttl).timestamp()))
        mac = _mac(self.secrets[0], outbox_id, expiry)
        return f"{PREFIX}{outbox_id}-{expiry}-{mac}@{self.domain}"

    def verify(self, local_part: str, now: datetime) -> int | None:
        """The outbox id a bounce address names, or None when forged, malformed or expired."""
        match = _PATTERN.fullmatch(local_part.lower())
        if match is None:
            return None
        outbox_id, expiry, mac = int(match[1]), match[2], match[3]
        if not any(hmac.compare_digest(_mac(s, outbox_id, expiry), mac) for s in self.secrets):
            return None
        if int(expiry, 36) < now.timestamp():
            return None
        return outbox_id


def _mac(secret: bytes, outbox_id: int, expiry: str) -> str:
    digest = hmac.new(secret, f"{outbox_id}.{expiry}".encode(), hashlib.sha256).digest()
    return base64.b32encode(digest).decode().lower()[:_MAC_CHARS]


def _base36(value: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        value, rest = divmod(value, 36)
        out = digits[rest] + out
        if value == 0:
            return out

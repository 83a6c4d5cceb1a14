"""SMTP reply catalog with enhanced status codes (RFC 3463), and the map from errors to replies."""

from __future__ import annotations

from relay.errors import InboundRefused

S250_OK = "250 2.0.0 OK: queued"
S250_RCPT_OK = "250 2.1.5 Recipient OK"
S250_DUPLICATE = "250 2.0.0 OK: already received"
S250_REPORT = "250 2.0.0 OK: delivery report received"
S250_DISCARDED = "250 2.0.0 OK: discarded, this is the relay's own mail"
S421_TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections from your address, try again later"
S451_TRY_LATER = "451 4.3.0 Temporary failure, please try again later"
S452_TOO_MANY_RCPT = "452 4.5.3 Too many recipients"
S501_BAD_ADDRESS = "501 5.1.3 Bad recipient address syntax"
S552_TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"
S500_LINE_TOO_LONG = "500 5.5.6 Line too long (see RFC 5321 4.5.3.1.6)"


def reply_for(exc: BaseException) -> str:
    """The reply for any exception: refusals say why, everything else is our fault → 451."""
    if isinstance(exc, InboundRefused):
        return exc.reply
    return S451_TRY_LATER

"""The aiosmtpd side: a thin handler that checks recipients at RCPT and runs the pipeline."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from email.errors import HeaderParseError
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy.ext.asyncio import AsyncEngine

from relay.addresses import full_envelope_address, plain_envelope_address, split_rcpt
from relay.bounce_intake import BounceIntake
from relay.bounces import is_bounce_local_part
from relay.config import Settings
from relay.errors import InboundRefused, RelayDenied, UnknownAlias
from relay.pipeline import Arrival, InboundPipeline
from relay.replies import (
    S250_RCPT_OK,
    S250_REPORT,
    S421_TOO_MANY_CONNECTIONS,
    S451_TRY_LATER,
    S452_TOO_MANY_RCPT,
    S500_LINE_TOO_LONG,
    S501_BAD_ADDRESS,
    S552_TOO_BIG,
    reply_for,
)
from storage.group_commit import GroupClosed
from storage.tickets import alias_is_active

log = logging.getLogger(__name__)


class ConnectionLimiter:
    """Counts open SMTP connections per client IP, shared by every connection of a server."""

    def __init__(self, per_client: int) -> None:
        self.per_client = per_client
        self._open: Counter[str] = Counter()

    def acquire(self, client: str) -> bool:
        if self._open[client] >= self.per_client:
            return False
        self._open[client] += 1
        return True

    def release(self, client: str) -> None:
        self._open[client] -= 1
        if self._open[client] <= 0:
            del self._open[client]


class RelaySMTP(SMTP):
    """aiosmtpd's server with its few fixed replies given enhanced status codes, and a cap
    on connections per client IP."""

    _REWRITES = {
        "552 Error: Too much mail data": S552_TOO_BIG,
        "500 Line too long (see RFC5321 4.5.3.1.6)": S500_LINE_TOO_LONG,
    }

    def __init__(
        self, handler: Any, *, limiter: ConnectionLimiter, max_line_bytes: int, **kwargs: Any
    ) -> None:
        # aiosmtpd sizes its stream reader from this in __init__, so it is set first; its
        # default (1001) refuses real mail whose senders ignore RFC 5322's 998.
        self.line_length_limit = max_line_bytes + 3  # CRLF and a transparency dot
        super().__init__(handler, **kwargs)
        self.limiter = limiter
        self._counted_client: str | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._counted_client is not None:  # STARTTLS re-enters here on the same connection
            return
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if self.limiter.acquire(client):
            self._counted_client = client
            return
        log.info("refused connection from %s: too many open", client)
        self._refused = True
        # Written before the greeting (the client task has not run yet), then closed: the
        # client sees one 421 line, as RFC 5321 section 3.8 allows in place of the greeting.
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(f"{S421_TOO_MANY_CONNECTIONS}\r\n".encode())
        transport.close()

    def connection_lost(self, error: Exception | None) -> None:
        if self._counted_client is not None:
            self.limiter.release(self._counted_client)
            self._counted_client = None
        super().connection_lost(error)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """What aiosmtpd's own parse of a MAIL FROM / RCPT TO argument gives, without two of
        its costs: aiosmtpd 1.4 defines a typing.Protocol class inside it on every call
        (ABCMeta, inspect: 2-4 % of the relay's CPU per message in the profile), and the
        plain `<local@domain> PARAMS` needs no token tree (relay.addresses, whose tests
        compare both readings)."""
        if not arg:
            return "", ""
        # The plain `<local@domain> PARAMS` without building the parser's token tree
        # (about 40 µs, twice a message).
        plain = plain_envelope_address(arg)
        if plain is not None:
            addr, rest = plain
        else:
            try:
                addr, rest = full_envelope_address(arg)
            except HeaderParseError:
                return None, None
        localpart = addr.rpartition("@")[0]
        if self.local_part_limit and len(localpart) > self.local_part_limit:
            return None, None
        return addr, rest

    async def push(self, status: Any) -> None:
        if self._refused:  # the 421 was the last word; the client task must not greet
            return
        if isinstance(status, str):
            if status.startswith("552 Error: message size exceeds"):
                status = S552_TOO_BIG
            status = self._REWRITES.get(status, status)
        await super().push(status)


class InboundHandler:
    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        pipeline: InboundPipeline,
        bounces: BounceIntake,
    ) -> None:
        self.settings = settings
        self.engine = engine  # for the RCPT lookup, which needs no session
        self.pipeline = pipeline
        self.bounces = bounces

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        parsed = split_rcpt(address)
        if parsed is None:
            return S501_BAD_ADDRESS
        local_part, domain = parsed
        if domain != self.settings.domain:
            return RelayDenied().reply
        if len(envelope.rcpt_tos) >= self.settings.max_recipients:
            return S452_TOO_MANY_RCPT
        if is_bounce_local_part(local_part):
            # Verified after DATA; a forged one is taken and dropped, never refused, so no
            # one can make a server send its refusal to a victim through us.
            envelope.rcpt_tos.append(address)
            return S250_RCPT_OK
        known = await alias_is_active(self.engine, local_part)
        if not known:
            return UnknownAlias().reply
        envelope.rcpt_tos.append(address)
        return S250_RCPT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        local_parts = [p[0] for p in map(split_rcpt, envelope.rcpt_tos) if p is not None]
        reports = [lp for lp in local_parts if is_bounce_local_part(lp)]
        aliases = [lp for lp in local_parts if not is_bounce_local_part(lp)]
        peer = session.peer
        arrival = Arrival(
            raw=raw,
            mail_from=envelope.mail_from or "",
            local_parts=aliases,
            client_ip=str(peer[0]) if isinstance(peer, tuple) and peer else "",
            helo=session.host_name or "",
        )
        try:
            if reports:
                await self.bounces.process(raw, reports)
                if not aliases:
                    return S250_REPORT
            return await self.pipeline.process(arrival)
        except InboundRefused as exc:
            log.info("refused message from %s: %s", session.peer, exc.reply)
            return exc.reply
        except GroupClosed:
            log.info("shutting down: asked %s to retry its message later", session.peer)
            return S451_TRY_LATER
        except Exception:
            # Returning (not raising) lets aiosmtpd reset the transaction for the next MAIL.
            log.exception("inbound processing failed; asking the client to retry")
            return S451_TRY_LATER

    async def handle_exception(self, error: Exception) -> str:
        # Our own fault: the client keeps the message and retries; it never sees the error.
        log.error("SMTP session error", exc_info=error)
        return reply_for(error)

"""The aiosmtpd side: a thin handler that checks recipients at RCPT and runs the pipeline."""

from __future__ import annotations

import logging
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from relay.addresses import split_rcpt
from relay.config import Settings
from relay.errors import InboundRefused, RelayDenied, UnknownAlias
from relay.pipeline import InboundPipeline
from relay.replies import (
    S250_RCPT_OK,
    S451_TRY_LATER,
    S452_TOO_MANY_RCPT,
    S500_LINE_TOO_LONG,
    S501_BAD_ADDRESS,
    S552_TOO_BIG,
    reply_for,
)
from storage.db import SessionFactory
from storage.tickets import active_alias

log = logging.getLogger(__name__)


class RelaySMTP(SMTP):
    """aiosmtpd's server with its few fixed replies given enhanced status codes."""

    _REWRITES = {
        "552 Error: Too much mail data": S552_TOO_BIG,
        "500 Line too long (see RFC5321 4.5.3.1.6)": S500_LINE_TOO_LONG,
    }

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            if status.startswith("552 Error: message size exceeds"):
                status = S552_TOO_BIG
            status = self._REWRITES.get(status, status)
        await super().push(status)


class InboundHandler:
    def __init__(
        self, settings: Settings, sessions: SessionFactory, pipeline: InboundPipeline
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.pipeline = pipeline

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
        async with self.sessions() as db:
            alias = await active_alias(db, local_part)
        if alias is None:
            return UnknownAlias().reply
        envelope.rcpt_tos.append(address)
        return S250_RCPT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        local_parts = [p[0] for p in map(split_rcpt, envelope.rcpt_tos) if p is not None]
        try:
            return await self.pipeline.process(raw, envelope.mail_from or "", local_parts)
        except InboundRefused as exc:
            log.info("refused message from %s: %s", session.peer, exc.reply)
            return exc.reply
        except Exception:
            # Returning (not raising) lets aiosmtpd reset the transaction for the next MAIL.
            log.exception("inbound processing failed; asking the client to retry")
            return S451_TRY_LATER

    async def handle_exception(self, error: Exception) -> str:
        # Our own fault: the client keeps the message and retries; it never sees the error.
        log.error("SMTP session error", exc_info=error)
        return reply_for(error)

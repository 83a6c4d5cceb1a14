"""Mail to bounce addresses: delivery reports about what the relay sent.

A report to a valid signed address marks its outbox item bounced (or delayed), records an
event on the ticket and, after a hard bounce, suppresses the recipient. Reports to forged,
expired or malformed bounce addresses — and anything at a bounce address that is not a
report — are accepted and dropped: answering them (or refusing, which makes the sender
answer) would let anyone bounce mail off the relay. Nothing here is ever forwarded, and no
ticket is ever opened from it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlmodel.ext.asyncio.session import AsyncSession

from relay.bounces import BounceAddresses
from relay.delivery_reports import DELAYED, HARD, DeliveryReport, read_report, supersedes
from relay.mime_limits import MimeLimits, structure_refusal
from storage import outbox
from storage.bounces import suppress
from storage.db import SessionFactory, transaction
from storage.models import OutboxItem
from storage.tickets import record_event
from storage.types import utcnow

log = logging.getLogger(__name__)


class BounceIntake:
    def __init__(
        self, sessions: SessionFactory, addresses: BounceAddresses, limits: MimeLimits
    ) -> None:
        self.sessions = sessions
        self.addresses = addresses
        self.limits = limits

    async def process(self, raw: bytes, local_parts: Sequence[str]) -> None:
        """File the report in `raw` for every valid bounce address among `local_parts`."""
        now = utcnow()
        targets = {i for lp in local_parts if (i := self.addresses.verify(lp, now)) is not None}
        if not targets:
            log.info("dropped mail to %d forged or expired bounce address(es)", len(local_parts))
            return
        if structure_refusal(raw, self.limits) is not None:
            log.info("dropped a delivery report beyond the MIME structure limits")
            return
        report = read_report(raw)
        if report is None:
            log.info("dropped mail to a bounce address that is not a delivery report")
            return
        async with transaction(self.sessions) as session:
            for outbox_id in sorted(targets):
                await self._apply(session, outbox_id, report)

    async def _apply(self, session: AsyncSession, outbox_id: int, report: DeliveryReport) -> None:
        item = await session.get(OutboxItem, outbox_id)
        if item is None:
            return
        if not supersedes(report.kind, item.bounce_kind):
            return
        item.bounce_kind = report.kind
        item.bounce_status = report.status
        item.bounced_at = utcnow()
        detail: dict[str, object] = {"outboxId": item.id, "to": item.recipient_side}
        if report.status:
            detail["status"] = report.status
        if report.kind == DELAYED:
            session.add(item)
            await record_event(session, item.ticket_id, "delivery.delayed", "relay", **detail)
            return
        item.status = outbox.BOUNCED
        # The remote server's words stay with the operator: they often name the recipient's
        # host or address, which the ticket's other side must not learn.
        item.last_error = (report.diagnostic or report.status or "bounced")[:1000]
        session.add(item)
        detail["bounceType"] = report.kind
        if report.kind == HARD:
            await suppress(
                session,
                item.rcpt_to,
                status=report.status,
                diagnostic=report.diagnostic,
                outbox_id=item.id,
            )
            detail["suppressed"] = True
        await record_event(session, item.ticket_id, "delivery.bounced", "relay", **detail)
        log.info("outbox item %s bounced (%s, %s)", item.id, report.kind, report.status)

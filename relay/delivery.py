"""DeliveryWorker: claim due outbox rows → send → sent / retry later / failed, each an event."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.exc import DBAPIError

from relay.bounces import BounceAddresses
from relay.errors import PermanentDeliveryError, TemporaryDeliveryError
from relay.masking import mask_addresses
from relay.transport import Transport
from storage import outbox
from storage.bounces import suppressed_among
from storage.db import SessionFactory, transaction
from storage.models import OutboxItem
from storage.tickets import event_row, record_events
from storage.types import utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    base: float
    maximum: float

    def delay(self, attempts: int, rng: random.Random) -> timedelta:
        """Exponential backoff with full-range jitter (50–150 %), so retries do not stampede."""
        raw = min(self.base * (2 ** max(attempts - 1, 0)), self.maximum)
        return timedelta(seconds=raw * rng.uniform(0.5, 1.5))


class Signer(Protocol):
    def sign(self, raw: bytes) -> bytes: ...


class DeliveryWorker:
    """Sends due outbox rows. `signer` DKIM-signs each message as it leaves; once
    `bounce_addresses` is set (it needs the database's secret), each row leaves with its own
    signed return path (relay.bounces)."""

    bounce_addresses: BounceAddresses | None = None

    def __init__(
        self,
        sessions: SessionFactory,
        transport: Transport,
        *,
        retry: RetryPolicy,
        concurrency: int,
        lease: timedelta,
        poll_interval: float,
        wakeup: asyncio.Event | None = None,
        signer: Signer | None = None,
    ) -> None:
        self.sessions = sessions
        self.transport = transport
        self.retry = retry
        self.concurrency = concurrency
        self.lease = lease
        self.poll_interval = poll_interval
        self.wakeup = wakeup or asyncio.Event()
        self.signer = signer
        self._rng = random.Random()
        self._stopping = asyncio.Event()

    def notify(self) -> None:
        """Wake the worker: called after a commit that added outbox rows."""
        self.wakeup.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            # Cleared before the claim, not before the sleep: a row committed after the claim
            # sets it again, and the sleep below returns at once instead of missing it.
            self.wakeup.clear()
            try:
                claimed = await self.run_once()
            except Exception:
                log.exception("delivery round failed; retrying shortly")
                claimed = 0
            # A round that claimed less than it could emptied what was due: claiming again at
            # once would only take the write lock to find nothing (one transaction in four
            # of a reply's, before). A new row's wake-up, or the poll for retries, ends it.
            if claimed < self.concurrency:
                await self._sleep()

    async def _sleep(self) -> None:
        waiter = asyncio.ensure_future(self.wakeup.wait())
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait(
                {waiter, stopper}, timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
            stopper.cancel()

    def stop(self) -> None:
        self._stopping.set()

    async def run_once(self) -> int:
        """Deliver one batch; the number of rows it claimed (0: nothing was due)."""
        async with transaction(self.sessions) as session:
            items = await outbox.claim_due(session, self.concurrency, self.lease)
            suppressed = await suppressed_among(session, [i.rcpt_to for i in items])
        if not items:
            return 0
        outcomes = await asyncio.gather(
            *(
                self._refuse_suppressed(item)
                if item.rcpt_to.lower() in suppressed
                else self._deliver(item)
                for item in items
            )
        )
        await self._record(outcomes)
        return len(items)

    async def _refuse_suppressed(self, item: OutboxItem) -> Outcome:
        # The address hard-bounced before: sending again would only hurt the relay's
        # reputation. An operator lifts the suppression (`support-relay suppression clear`).
        reason = "recipient suppressed after a hard bounce"
        return Outcome(item, outbox.FAILED, "delivery.suppressed", reason)

    async def _deliver(self, item: OutboxItem) -> Outcome:
        assert item.id is not None
        bounces = self.bounce_addresses
        mail_from = bounces.address_for(item.id, utcnow()) if bounces else item.mail_from
        try:
            raw = self.signer.sign(item.raw) if self.signer else item.raw
        except ValueError as exc:  # the same bytes will never sign: retrying cannot help
            log.error("cannot DKIM-sign outbox item %s: %s", item.id, exc)
            return Outcome(item, outbox.FAILED, "delivery.failed", str(exc))
        try:
            await self.transport.send(mail_from, item.rcpt_to, raw)
        except PermanentDeliveryError as exc:
            return Outcome(item, outbox.FAILED, "delivery.failed", str(exc))
        except TemporaryDeliveryError as exc:
            return self._deferred(item, str(exc))
        except Exception as exc:  # a bug in a transport must not lose the row
            log.exception("transport crashed on outbox item %s", item.id)
            return self._deferred(item, f"internal error: {type(exc).__name__}")
        return Outcome(item, outbox.SENT, "delivery.sent")

    def _deferred(self, item: OutboxItem, error: str) -> Outcome:
        retry_at = utcnow() + self.retry.delay(item.attempts, self._rng)
        if retry_at >= item.expires_at:
            return Outcome(item, outbox.FAILED, "delivery.failed", f"gave up: {error}")
        return Outcome(item, outbox.PENDING, "delivery.deferred", error, retry_at)

    async def _record(self, outcomes: Sequence[Outcome]) -> None:
        """Every outcome of a batch in one transaction (one commit, one fsync, not one per
        message). Should the process die before it commits, the batch's rows stay leased
        and are sent again when the lease runs out: at least once, never lost.

        A connection the database dropped (a restart while the round was sending) is tried
        once more on a fresh one: the pool tests only connections that sat idle, and a
        round that cannot record its 250s would send them all again."""
        try:
            await self._record_once(outcomes)
        except DBAPIError as error:
            if not error.connection_invalidated:
                raise
            log.warning("recording a delivery round again: the database connection was lost")
            await self._record_once(outcomes)

    async def _record_once(self, outcomes: Sequence[Outcome]) -> None:
        settlements: list[outbox.Settlement] = []
        events: list[dict[str, Any]] = []
        async with transaction(self.sessions) as session:
            current = await outbox.states(session, [_id(o.item) for o in outcomes])
            for outcome in outcomes:
                item = outcome.item
                now = current[_id(item)]
                if now.status == outbox.BOUNCED and outcome.status == outbox.SENT:
                    # The report outran us: it came back, and was filed with its diagnostic
                    # and event, before this round recorded the smarthost's 250. The bounce
                    # is the later truth: it stays, and only the lease is let go.
                    settlements.append(outbox.Settlement(_id(item), outbox.BOUNCED, now.last_error))
                    continue
                error = _masked(item, outcome.error) if outcome.error else None
                settlements.append(
                    outbox.Settlement(_id(item), outcome.status, error, outcome.retry_at)
                )
                detail: dict[str, object] = {"outboxId": item.id, "to": item.recipient_side}
                detail["attempt"] = item.attempts
                if error:
                    detail["error"] = error
                if outcome.retry_at is not None:
                    detail["retryAt"] = _iso(outcome.retry_at)
                events.append(event_row(item.ticket_id, outcome.kind, "relay", **detail))
            await outbox.settle(session, settlements)
            await record_events(session, events)


@dataclass(frozen=True)
class Outcome:
    """What became of one outbox row in a delivery round, recorded with its batch."""

    item: OutboxItem
    status: str
    kind: str
    error: str | None = None
    retry_at: datetime | None = None


def _masked(item: OutboxItem, error: str) -> str:
    # A smarthost's reply often names the recipient; events are shown to the other side.
    return mask_addresses(error, [item.rcpt_to], "<recipient>")


def _id(item: OutboxItem) -> int:
    assert item.id is not None
    return item.id


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")

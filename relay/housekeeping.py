"""Periodic clean-up off the request path: expired Idempotency-Key records."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from storage.db import SessionFactory, transaction
from storage.idempotency import purge_expired
from storage.types import utcnow

log = logging.getLogger(__name__)


class Housekeeper:
    """Runs with the delivery worker, so API processes only ever touch the rows they use."""

    def __init__(self, sessions: SessionFactory, interval: float = 600.0) -> None:
        self.sessions = sessions
        self.interval = interval
        self._stopping = asyncio.Event()

    async def run_once(self) -> int:
        async with transaction(self.sessions) as session:
            return await purge_expired(session, utcnow())

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                purged = await self.run_once()
                if purged:
                    log.info("purged %d expired idempotency keys", purged)
            except Exception:
                log.exception("housekeeping round failed; trying again later")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.interval)

    def stop(self) -> None:
        self._stopping.set()

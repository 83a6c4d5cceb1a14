"""Cross-process wake-ups on PostgreSQL: LISTEN for the NOTIFY that every outbox insert sends.

In one process the worker is woken directly; this covers `--only api` and `--only worker`
running apart. If the listening connection is lost, the worker's poll interval still
guarantees progress, and the listener reconnects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from storage.db import asyncpg_dsn
from storage.outbox import CHANNEL

log = logging.getLogger(__name__)


class OutboxListener:
    def __init__(
        self,
        database_url: str,
        on_notify: Callable[[], None],
        retry_after: float = 5.0,
        own_origin: str = "",
    ):
        self.dsn = asyncpg_dsn(database_url)
        self.on_notify = on_notify
        # The relay instance's own rows woke its worker directly, before their NOTIFY
        # arrives; that NOTIFY could land after the worker's next claim began and wake it
        # once more, for a claim that finds nothing.
        self.own_origin = own_origin
        self.retry_after = retry_after
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-listener")

    async def _run(self) -> None:
        while True:
            try:
                await self._listen_once()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("outbox listener lost its connection (%s); polling meanwhile", exc)
            await asyncio.sleep(self.retry_after)

    async def _listen_once(self) -> None:
        lost = asyncio.Event()
        conn = await asyncpg.connect(self.dsn)
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(CHANNEL, self._notified)
            self.on_notify()  # rows may have arrived while we were not listening
            await lost.wait()
        finally:
            if not conn.is_closed():
                await conn.close()

    def _notified(self, _conn: Any, _pid: int, _channel: str, origin: str) -> None:
        if self.own_origin and origin == self.own_origin:
            return
        self.on_notify()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

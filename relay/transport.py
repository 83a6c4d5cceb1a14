"""Outbound transports: SMTP to a smarthost over pooled connections, or a local maildir.

Both raise only `TemporaryDeliveryError` or `PermanentDeliveryError`; aiosmtplib's and the
OS's exceptions are translated here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from pathlib import Path
from typing import Protocol

import aiosmtplib

from relay.config import MaildirOutbound, SMTPOutbound
from relay.errors import PermanentDeliveryError, TemporaryDeliveryError

log = logging.getLogger(__name__)


class Transport(Protocol):
    async def send(self, mail_from: str, rcpt_to: str, raw: bytes) -> None: ...

    async def close(self) -> None: ...


def _classify(exc: Exception) -> TemporaryDeliveryError | PermanentDeliveryError:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        exc = exc.recipients[0]
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        text = f"{exc.code} {exc.message}"
        if 500 <= exc.code < 600:
            return PermanentDeliveryError(text, exc.code)
        return TemporaryDeliveryError(text, exc.code)
    # Refused connections, timeouts, drops: the next attempt may well succeed. The text
    # reaches partners as a ticket event, so it names the kind of failure, not our hosts.
    log.warning("smarthost unreachable: %s", exc)
    return TemporaryDeliveryError(f"smarthost unreachable ({type(exc).__name__})")


class SMTPTransport:
    """Sends through one smarthost, reusing up to `pool_size` open connections."""

    def __init__(self, target: SMTPOutbound, *, pool_size: int, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(pool_size)
        self._closed = False

    async def _connect(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=self.target.host,
            port=self.target.port,
            timeout=self.timeout,
            start_tls=self.target.starttls,
            username=self.target.username,
            password=self.target.password,
            local_hostname=socket.getfqdn(),
        )
        await client.connect()
        return client

    async def _checkout(self) -> aiosmtplib.SMTP:
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client
        return await self._connect()

    async def send(self, mail_from: str, rcpt_to: str, raw: bytes) -> None:
        async with self._slots:
            client: aiosmtplib.SMTP | None = None
            try:
                client = await self._checkout()
                await client.sendmail(mail_from, [rcpt_to], raw)
            except aiosmtplib.SMTPServerDisconnected:
                # A pooled connection the server timed out: retry once on a fresh one.
                client = None
                try:
                    client = await self._connect()
                    await client.sendmail(mail_from, [rcpt_to], raw)
                except Exception as exc:
                    await self._discard(client)
                    raise _classify(exc) from exc
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                await self._reset_or_discard(client, exc)
                raise _classify(exc) from exc
            if client is not None and not self._closed:
                self._idle.append(client)

    async def _reset_or_discard(self, client: aiosmtplib.SMTP | None, exc: Exception) -> None:
        # A refused message leaves a healthy session behind; RSET makes it reusable.
        if client is not None and isinstance(exc, aiosmtplib.SMTPResponseException):
            try:
                await client.rset()
                self._idle.append(client)
                return
            except Exception:
                pass
        await self._discard(client)

    @staticmethod
    async def _discard(client: aiosmtplib.SMTP | None) -> None:
        if client is None:
            return
        try:
            client.close()
        except Exception:
            pass

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for client in idle:
            try:
                await client.quit()
            except Exception:
                client.close()


class MaildirTransport:
    """Writes each message into a maildir, fsynced, with `Delivered-To` like a local LDA."""

    def __init__(self, target: MaildirOutbound) -> None:
        self.root = target.path
        self._seq = 0

    async def send(self, mail_from: str, rcpt_to: str, raw: bytes) -> None:
        self._seq += 1
        name = f"{time.time_ns()}.P{os.getpid()}Q{self._seq}.{socket.gethostname()}"
        try:
            await asyncio.to_thread(self._write, name, mail_from, rcpt_to, raw)
        except OSError as exc:
            raise TemporaryDeliveryError(f"maildir write failed: {exc.strerror}") from exc

    def _write(self, name: str, mail_from: str, rcpt_to: str, raw: bytes) -> None:
        for sub in ("tmp", "new", "cur"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        tmp = self.root / "tmp" / name
        head = f"Return-Path: <{mail_from}>\r\nDelivered-To: {rcpt_to}\r\n".encode()
        with open(tmp, "wb") as fh:
            fh.write(head + raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, self.root / "new" / name)
        _fsync_dir(self.root / "new")

    async def close(self) -> None:
        return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_transport(
    target: SMTPOutbound | MaildirOutbound, *, pool_size: int, timeout: float
) -> Transport:
    if isinstance(target, MaildirOutbound):
        return MaildirTransport(target)
    return SMTPTransport(target, pool_size=pool_size, timeout=timeout)

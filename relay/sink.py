"""A recording SMTP server: the stand-in for the outside world in the demo, tests and benchmarks.

It accepts everything, keeps each message with its envelope, and can be told to answer
the next transactions with a 4xx or 5xx so retry and failure paths can be exercised.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage

from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Received:
    mail_from: str
    rcpt_to: list[str]
    raw: bytes
    arrived: float = field(default_factory=time.monotonic)

    @property
    def message(self) -> EmailMessage:
        msg = message_from_bytes(self.raw, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        return msg

    def text(self) -> str:
        body = self.message.get_body(preferencelist=("plain",))
        return "" if body is None else str(body.get_content())


class SinkHandler:
    def __init__(self) -> None:
        self.messages: list[Received] = []
        self.replies: deque[str] = deque()
        self.arrived = asyncio.Condition()

    def fail_next(self, reply: str, times: int = 1) -> None:
        """Answer the next `times` DATA commands with `reply` (e.g. '451 4.3.0 busy')."""
        self.replies.extend([reply] * times)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.replies:
            return self.replies.popleft()
        self.messages.append(
            Received(
                envelope.mail_from or "", list(envelope.rcpt_tos), envelope.original_content or b""
            )
        )
        async with self.arrived:
            self.arrived.notify_all()
        return "250 2.0.0 OK"

    def for_rcpt(self, address: str) -> list[Received]:
        return [m for m in self.messages if address.lower() in (r.lower() for r in m.rcpt_to)]

    async def wait_for(self, address: str, count: int = 1, timeout: float = 10.0) -> list[Received]:
        async def enough() -> list[Received]:
            async with self.arrived:
                await self.arrived.wait_for(lambda: len(self.for_rcpt(address)) >= count)
            return self.for_rcpt(address)

        return await asyncio.wait_for(enough(), timeout)


class MailSink:
    """An in-loop SMTP server on 127.0.0.1 wrapping a SinkHandler."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port()
        self.handler = SinkHandler()
        self.connections = 0
        self._server: asyncio.Server | None = None

    def _protocol(self) -> SMTP:
        self.connections += 1
        return SMTP(self.handler, hostname="sink.localhost", enable_SMTPUTF8=True)

    async def start(self) -> MailSink:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, host=self.host, port=self.port)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (aiosmtpd cannot bind port 0 and report it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])

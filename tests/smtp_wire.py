"""A raw SMTP client for tests that must control every byte (aiosmtplib rewrites line breaks)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Reply:
    code: int
    text: str  # the last line's text, e.g. "2.0.0 OK: queued"


@dataclass
class WireClient:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    timeout: float = 15.0
    log: list[Reply] = field(default_factory=list)

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> WireClient:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        client = cls(reader, writer, timeout)
        greeting = await client.reply()
        assert greeting.code == 220, greeting
        return client

    async def reply(self) -> Reply:
        """One reply, multi-line ones ("250-...") read to their last line."""
        while True:
            line = await asyncio.wait_for(self.reader.readline(), self.timeout)
            if not line:
                raise ConnectionError("the server closed the connection")
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if text[3:4] != "-":
                reply = Reply(int(text[:3]), text[4:])
                self.log.append(reply)
                return reply

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), self.timeout)

    async def command(self, line: str) -> Reply:
        await self.send(line.encode() + b"\r\n")
        return await self.reply()

    async def envelope(self, mail_from: str, rcpt: str) -> None:
        for line, code in (("EHLO wire.test", 250), (f"MAIL FROM:<{mail_from}>", 250)):
            reply = await self.command(line)
            assert reply.code == code, (line, reply)
        reply = await self.command(f"RCPT TO:<{rcpt}>")
        assert reply.code == 250, reply

    async def data(self, payload: bytes) -> Reply:
        """DATA with `payload` as the content: dot-stuffed at CRLF line starts (the only line
        starts SMTP knows), ended with CRLF if it is not, then the terminating dot."""
        reply = await self.command("DATA")
        assert reply.code == 354, reply
        stuffed = payload.replace(b"\r\n.", b"\r\n..")
        if stuffed.startswith(b"."):
            stuffed = b"." + stuffed
        if not stuffed.endswith(b"\r\n"):
            stuffed += b"\r\n"
        await self.send(stuffed + b".\r\n")
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass

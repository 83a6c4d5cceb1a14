"""The benchmarks' child SMTP servers: a timestamping sink, the bare aiosmtpd ceiling and
the stack's floor.

The sink stands in for the smarthost. It appends one line per message to a file:
`<CLOCK_MONOTONIC ns> <first recipient> <token or -> <Reply-To alias or ->`. The monotonic
clock is system-wide on Linux, so those times compare with a client's in another process.

The ceiling (discard) receives every message and throws it away. The floor (forward)
receives every message and forwards it to the sink over kept-open aiosmtplib connections,
with nothing parsed, checked, stored or fsynced: the least a relay built on aiosmtpd and
aiosmtplib does per message, whatever else it does. Both run on the relay's event loop
(uvloop where installed, as `support-relay serve`) with the relay's listener settings.

    .venv/bin/python bench/servers.py sink --port P --log FILE [--fleet EMAIL]
    .venv/bin/python bench/servers.py discard --port P [--size-limit BYTES]
    .venv/bin/python bench/servers.py forward --port P --to SINK_PORT [--senders N]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from email import policy
from email.parser import BytesHeaderParser, BytesParser
from email.utils import getaddresses
from pathlib import Path
from typing import IO

import aiosmtplib
from aiosmtpd.smtp import SMTP, Envelope, Session

from api.cli import run_loop

SERVER_READY = "bench server ready"
TOKEN = re.compile(rb"bench-token-(\d+)")


class Recorder:
    """Appends one line per message: when it arrived, to whom, its token, its Reply-To."""

    def __init__(self, out: IO[bytes], fleet: str | None) -> None:
        self.out = out
        self.fleet = fleet.lower() if fleet else None

    def record(self, rcpt: str, raw: bytes) -> None:
        now = time.monotonic_ns()
        alias = _reply_to(raw) if self.fleet is not None and rcpt == self.fleet else None
        token = _token(raw)
        self.out.write(
            f"{now} {rcpt} {token if token is not None else '-'} {alias or '-'}\n".encode()
        )
        self.out.flush()


class SinkProtocol(asyncio.Protocol):
    """A minimal SMTP receiver (no TLS, no AUTH): it finds the end of DATA with one buffer
    search instead of aiosmtpd's line-by-line reading, so at 100 KB it is several times
    faster than the ceiling and never what limits a target's measured rate."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.in_data = False
        self.scanned = 0
        self.rcpt = "-"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"220 sink.localhost ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None and self._step():
            pass

    def _step(self) -> bool:
        """Handle one command or one message from the buffer; False when it needs more."""
        if self.in_data:
            end = self.buffer.find(b"\r\n.\r\n", max(0, self.scanned - 4))
            if end < 0:
                self.scanned = len(self.buffer)
                return False
            self.recorder.record(self.rcpt, bytes(self.buffer[2:end]))
            del self.buffer[: end + 5]
            self.in_data, self.scanned = False, 0
            self._reply(b"250 2.0.0 OK")
            return True
        end = self.buffer.find(b"\r\n")
        if end < 0:
            return False
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        self._command(line)
        return True

    def _command(self, line: bytes) -> None:
        verb = line[:4].upper()
        if verb == b"EHLO":
            self._reply(b"250-sink.localhost\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8")
        elif verb == b"RCPT":
            if self.rcpt == "-":
                address = line.split(b":", 1)[1].split(b">")[0].strip(b" <")
                self.rcpt = address.decode(errors="replace").lower()
            self._reply(b"250 2.1.5 OK")
        elif verb == b"MAIL":
            self.rcpt = "-"
            self._reply(b"250 2.1.0 OK")
        elif verb == b"DATA":
            self.in_data, self.scanned = True, 0
            # An empty message ends at once: its terminator follows the command's CRLF.
            self.buffer[:0] = b"\r\n"
            self._reply(b"354 End data with <CR><LF>.<CR><LF>")
        elif verb == b"QUIT":
            self._reply(b"221 2.0.0 Bye")
            assert self.transport is not None
            self.transport.close()
            self.transport = None
        elif verb in (b"HELO", b"RSET", b"NOOP"):
            self._reply(b"250 2.0.0 OK")
        else:
            self._reply(b"502 5.5.2 Not implemented")

    def _reply(self, text: bytes) -> None:
        if self.transport is not None:
            self.transport.write(text + b"\r\n")


async def _serve_sink(recorder: Recorder, port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_server(
        lambda: SinkProtocol(recorder), host="127.0.0.1", port=port, reuse_address=True
    )
    print(SERVER_READY, flush=True)
    await asyncio.Event().wait()


def _token(raw: bytes) -> int | None:
    found = TOKEN.search(raw)
    if found:
        return int(found[1])
    if b"base64" not in raw:
        return None
    # The relay may have base64-encoded the body: look in the decoded text parts too.
    message = BytesParser(policy=policy.default).parsebytes(raw)
    for part in message.walk():
        if part.get_content_maintype() == "text":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes) and (found := TOKEN.search(payload)):
                return int(found[1])
    return None


def _reply_to(raw: bytes) -> str | None:
    headers = BytesHeaderParser(policy=policy.default).parsebytes(raw)
    found = getaddresses([str(headers.get("Reply-To", ""))])
    return found[0][1] if found and found[0][1] else None


class Discard:
    """The ceiling's handler: the message is received in full and thrown away."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "250 2.0.0 OK"


# A message as received: envelope sender, recipients, bytes.
Received = tuple[str, list[str], bytes]


class Forward:
    """The floor's handler: each message is queued as received and answered 250 at once;
    the senders forward it. A relay answers only after storing it durably, so the floor
    does strictly less per message than any relay on this stack."""

    def __init__(self, queue: asyncio.Queue[Received]) -> None:
        self.queue = queue

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        await self.queue.put((envelope.mail_from or "", list(envelope.rcpt_tos), content))
        return "250 2.0.0 OK"


async def _forward(queue: asyncio.Queue[Received], port: int) -> None:
    """One sender: forwards what is queued over one kept-open connection, opening a new one
    (and sending the message again) should the sink drop it, so none goes missing."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
    while True:
        mail_from, rcpt_tos, raw = await queue.get()
        while True:
            try:
                if not client.is_connected:
                    await client.connect()
                await client.sendmail(mail_from, rcpt_tos, raw)
                break
            except (aiosmtplib.SMTPException, OSError) as error:
                print(f"floor: forwarding again after {error!r}", file=sys.stderr, flush=True)
                client.close()
                await asyncio.sleep(0.1)


async def _serve(handler: object, port: int, size_limit: int) -> None:
    loop = asyncio.get_running_loop()
    # Configured as relay/runtime.py configures the relay's listener.
    await loop.create_server(
        lambda: SMTP(
            handler,
            data_size_limit=size_limit,
            hostname="bench.localhost",
            enable_SMTPUTF8=True,
        ),
        host="127.0.0.1",
        port=port,
        reuse_address=True,
    )
    print(SERVER_READY, flush=True)
    await asyncio.Event().wait()


async def _serve_forward(port: int, size_limit: int, to_port: int, senders: int) -> None:
    queue: asyncio.Queue[Received] = asyncio.Queue()
    # As the relay's delivery worker: up to `senders` forwards at once, connections kept.
    tasks = [asyncio.create_task(_forward(queue, to_port)) for _ in range(senders)]
    try:
        await _serve(Forward(queue), port, size_limit)
    finally:
        for task in tasks:
            task.cancel()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Child servers for the load benchmarks.")
    parser.add_argument("kind", choices=["sink", "discard", "forward"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path)
    parser.add_argument("--fleet", help="learn the Reply-To alias of mail to this address")
    parser.add_argument("--size-limit", type=int, default=25 * 1024 * 1024)
    parser.add_argument("--to", type=int, help="forward: the sink's port")
    parser.add_argument("--senders", type=int, default=8, help="forward: connections to it")
    args = parser.parse_args(argv)
    if args.kind == "sink":
        with open(args.log, "ab") as out:
            asyncio.run(_serve_sink(Recorder(out, args.fleet), args.port))
    elif args.kind == "discard":
        run_loop(_serve(Discard(), args.port, args.size_limit))
    else:
        run_loop(_serve_forward(args.port, args.size_limit, args.to, args.senders))


if __name__ == "__main__":
    main()

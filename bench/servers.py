"""The benchmarks' child SMTP servers: a timestamping sink and the bare aiosmtpd ceiling.

The sink stands in for the smarthost. It appends one line per message to a file:
`<CLOCK_MONOTONIC ns> <first recipient> <token or -> <Reply-To alias or ->`. The monotonic
clock is system-wide on Linux, so those times compare with a client's in another process.

    .venv/bin/python bench/servers.py sink --port P --log FILE [--fleet EMAIL]
    .venv/bin/python bench/servers.py discard --port P [--size-limit BYTES]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from email import policy
from email.parser import BytesHeaderParser, BytesParser
from email.utils import getaddresses
from pathlib import Path
from typing import IO

from aiosmtpd.smtp import SMTP, Envelope, Session

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


async def _serve_discard(port: int, size_limit: int) -> None:
    loop = asyncio.get_running_loop()
    # Configured as relay/runtime.py configures the relay's listener.
    await loop.create_server(
        lambda: SMTP(
            Discard(),
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Child servers for the load benchmarks.")
    parser.add_argument("kind", choices=["sink", "discard"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path)
    parser.add_argument("--fleet", help="learn the Reply-To alias of mail to this address")
    parser.add_argument("--size-limit", type=int, default=25 * 1024 * 1024)
    args = parser.parse_args(argv)
    if args.kind == "sink":
        with open(args.log, "ab") as out:
            asyncio.run(_serve_sink(Recorder(out, args.fleet), args.port))
    else:
        asyncio.run(_serve_discard(args.port, args.size_limit))


if __name__ == "__main__":
    main()

"""Run the relay's roles (HTTP API, SMTP server, delivery worker) in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from collections.abc import AsyncIterator, Generator, Iterable

import uvicorn

from api.app import create_app
from relay.config import Role, Settings
from relay.runtime import Relay
from relay.transport import Transport

log = logging.getLogger(__name__)

ALL_ROLES: tuple[Role, ...] = ("api", "smtp", "worker")


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the process owner decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class CannotListen(RuntimeError):
    """A port the relay was told to serve on could not be bound (taken, not permitted)."""

    def __init__(self, what: str, host: str, port: int, error: OSError) -> None:
        reason = error.strerror or str(error)
        super().__init__(f"cannot listen for {what} on {host}:{port}: {reason}")


@contextlib.asynccontextmanager
async def running(
    settings: Settings,
    roles: Iterable[Role] = ALL_ROLES,
    *,
    transport: Transport | None = None,
    migrate: bool = True,
    reuse_port: bool = False,
) -> AsyncIterator[Relay]:
    """Start the chosen roles, yield the live relay, and shut everything down in order.

    With `reuse_port`, the HTTP and SMTP sockets are bound with SO_REUSEPORT so that
    several relay processes can listen on the same ports (api.supervisor)."""
    roles = set(roles)
    relay = Relay(settings, transport=transport)
    http: _EmbeddedServer | None = None
    http_task: asyncio.Task[None] | None = None
    try:
        if migrate:
            await relay.migrate()
        await relay.prepare()
        if "smtp" in roles:
            try:
                await relay.start_smtp(reuse_port=reuse_port)
            except OSError as exc:
                raise CannotListen("SMTP", settings.smtp_host, settings.smtp_port, exc) from exc
        if "worker" in roles:
            relay.start_worker()
        if "api" in roles:
            config = uvicorn.Config(
                create_app(relay),
                host=settings.http_host,
                port=settings.http_port,
                lifespan="on",
                log_level="warning",
                access_log=False,
                server_header=False,
            )
            http = _EmbeddedServer(config)
            host, port = settings.http_host, settings.http_port
            try:
                # Bound here, not by uvicorn, whose bind failure is sys.exit() from inside
                # a task: that ends the process without shutting the other roles down.
                sock = listening_socket(host, port, reuse_port=reuse_port)
            except OSError as exc:
                raise CannotListen("HTTP", host, port, exc) from exc
            http_task = asyncio.create_task(http.serve(sockets=[sock]), name="http")
            while not http.started:
                if http_task.done():
                    http_task.result()  # re-raises what stopped it
                    raise RuntimeError("HTTP server stopped before it started")
                await asyncio.sleep(0.01)
        yield relay
    finally:
        if http is not None and http_task is not None:
            http.should_exit = True
            await http_task
        await relay.close()


def listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A bound TCP socket for uvicorn to listen on. With `reuse_port`, other processes may
    bind it too (SO_REUSEPORT): the kernel spreads incoming connections across them."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def stop_on_signal() -> asyncio.Event:
    """An event set by SIGINT/SIGTERM. Install it before announcing readiness, so a signal
    sent as soon as the banner appears stops the relay cleanly instead of killing it."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def freeze_startup_heap() -> None:
    """Move everything built at start (modules, tables, mappers, compiled statements) out of
    the collector's reach, once the relay is serving.

    A full (generation 2) collection walks every tracked object: at start that is some
    130 000, and each full collection under load paused the event loop for 33-61 ms
    (measured in the relay, 2 KB x 20), every SMTP connection with it: the p99 latency
    of that case. Frozen objects are never collected: garbage made at start is collected
    first."""
    gc.collect()
    gc.freeze()


async def wait_for_stop_signal(stop: asyncio.Event | None = None) -> None:
    await (stop or stop_on_signal()).wait()
    log.info("stopping")

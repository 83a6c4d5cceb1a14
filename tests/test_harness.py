"""The test harness itself: a port race must not fail an unrelated test."""

from __future__ import annotations

import socket

from tests.conftest import Database
from tests.harness import live_relay


async def test_a_taken_port_is_retried_on_fresh_ports(database: Database) -> None:
    # What happens when another process takes the port free_port() picked before the relay
    # binds it: the relay says CannotListen, and the harness starts on fresh ports.
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        async with live_relay(database.url, database.schema, http_port=port) as live:
            assert live.settings.http_port != port
            assert (await live.http.get("/healthz")).status_code == 200
    finally:
        taken.close()

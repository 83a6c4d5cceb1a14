"""The `dns_server` fixture: a fresh loopback DNS server per test (load with `pytest_plugins`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.dns_server import LocalDNS


@pytest.fixture
def dns_server() -> Iterator[LocalDNS]:
    server = LocalDNS()
    server.start()
    try:
        yield server
    finally:
        server.stop()

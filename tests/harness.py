"""A live relay on loopback for tests: real SMTP server, real HTTP server, real database."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import aiosmtplib
import httpx

from api.server import CannotListen, running
from relay.config import Settings
from relay.runtime import Relay
from relay.sink import MailSink, free_port
from tests.dns_server import LocalDNS

PARTNER_INBOX = "helpdesk@partner.example"
FLEET_INBOX = "dispatch@fleet.example"


@dataclass
class Accounts:
    partner_id: int
    api_key: str
    fleet_id: int

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"ApiKey {self.api_key}"}


@dataclass
class LiveRelay:
    settings: Settings
    relay: Relay
    sink: MailSink
    http: httpx.AsyncClient
    admin: dict[str, str] = field(default_factory=dict)
    # The relay's only DNS server: tests publish SPF, DKIM and DMARC records in it.
    dns: LocalDNS = field(default_factory=LocalDNS)

    @property
    def smtp_port(self) -> int:
        return self.settings.smtp_port

    async def add_partner(
        self, name: str = "Acme Travel", email: str = PARTNER_INBOX, **extra: Any
    ) -> Any:
        response = await self.http.post(
            "/v1/admin/partners",
            headers=self.admin,
            json={"name": name, "contactEmail": email, **extra},
        )
        assert response.status_code == 201, response.text
        return response.json()

    async def add_fleet(
        self, name: str = "City Cabs", email: str = FLEET_INBOX, **extra: Any
    ) -> Any:
        response = await self.http.post(
            "/v1/admin/fleets",
            headers=self.admin,
            json={"name": name, "supportEmail": email, **extra},
        )
        assert response.status_code == 201, response.text
        return response.json()

    async def add_category(self, name: str, **extra: Any) -> Any:
        response = await self.http.post(
            "/v1/admin/categories", headers=self.admin, json={"name": name, **extra}
        )
        assert response.status_code == 201, response.text
        return response.json()

    async def add_tag(self, name: str, keyword: str) -> Any:
        response = await self.http.post(
            "/v1/admin/tags", headers=self.admin, json={"name": name, "keyword": keyword}
        )
        assert response.status_code == 201, response.text
        return response.json()

    async def accounts(
        self, partner_email: str = PARTNER_INBOX, fleet_email: str = FLEET_INBOX
    ) -> Accounts:
        partner = await self.add_partner(email=partner_email)
        fleet = await self.add_fleet(email=fleet_email)
        return Accounts(partner["id"], partner["apiKey"], fleet["id"])

    async def put_trip(self, acc: Accounts, partner_trip_id: str = "BK-1", **extra: Any) -> Any:
        body = {
            "fleetId": acc.fleet_id,
            "pickup": "1 Main Street",
            "dropoff": "Airport T2",
            "scheduledAt": "2026-11-20T08:30:00Z",
            "passengerName": "Jane Doe",
            **extra,
        }
        response = await self.http.put(f"/v1/trips/{partner_trip_id}", headers=acc.auth, json=body)
        assert response.status_code in (200, 201), response.text
        return response.json()

    async def open_ticket(self, acc: Accounts, partner_trip_id: str = "BK-1", **body: Any) -> Any:
        payload = {
            "subject": "Lost umbrella",
            "comment": "A blue umbrella was left in the car.",
            **body,
        }
        response = await self.http.post(
            f"/v1/support/demand/trips/{partner_trip_id}/tickets", headers=acc.auth, json=payload
        )
        assert response.status_code == 201, response.text
        return response.json()

    async def fleet_ticket(self) -> tuple[Accounts, int, str]:
        """New accounts and a ticket whose first email reached the fleet: (accounts, ticket
        id, the alias the fleet answers to)."""
        acc = await self.accounts()
        await self.put_trip(acc)
        ticket = await self.open_ticket(acc)
        [mail] = await self.sink.handler.wait_for(FLEET_INBOX)
        return acc, ticket["id"], mail.message["Reply-To"].addresses[0].addr_spec

    async def ticket(self, acc: Accounts, ticket_id: int) -> Any:
        response = await self.http.get(f"/v1/support/tickets/{ticket_id}", headers=acc.auth)
        assert response.status_code == 200, response.text
        return response.json()

    async def events(self, acc: Accounts, ticket_id: int, kind: str, count: int = 1) -> list[Any]:
        """Wait until the ticket shows `count` events of `kind`: the sink sees a message a
        moment before the worker records that it was sent."""
        for _ in range(200):
            found = [e for e in (await self.ticket(acc, ticket_id))["events"] if e["kind"] == kind]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.05)
        raise AssertionError(f"ticket {ticket_id} never showed {count} {kind} event(s)")

    async def send(
        self, raw: bytes | EmailMessage, rcpt: list[str] | str, mail_from: str = FLEET_INBOX
    ) -> str:
        """Send over real SMTP; the final reply text, or SMTPResponseException on refusal."""
        data = raw.as_bytes() if isinstance(raw, EmailMessage) else raw
        rcpts = [rcpt] if isinstance(rcpt, str) else rcpt
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=self.smtp_port, timeout=15) as client:
            errors, reply = await client.sendmail(mail_from, rcpts, data)
        return reply


def reply_mail(
    sender: str,
    to: str,
    text: str,
    *,
    subject: str = "Re: ticket",
    cites: str | None = None,
    **headers: str,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "example.org")
    if cites:
        msg["In-Reply-To"] = cites
        msg["References"] = cites
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(text)
    return msg


@asynccontextmanager
async def live_relay(
    database_url: str, schema: str | None, **overrides: Any
) -> AsyncIterator[LiveRelay]:
    sink = await MailSink().start()
    dns = LocalDNS()
    dns.start()
    admin_key = secrets.token_urlsafe(16)
    values: dict[str, Any] = {
        "dns_servers": f"{dns.host}:{dns.port}",
        "database_url": database_url,
        "database_schema": schema,
        "http_port": free_port(),
        "smtp_port": free_port(),
        "outbound": sink.url,
        "admin_key": admin_key,
        "delivery_backoff_base": 0.2,
        "delivery_backoff_max": 1.0,
        "delivery_poll_interval": 0.2,
        # Tests open many tickets on one trip; the limit has its own tests.
        "max_open_tickets_per_trip": 1000,
        **overrides,
    }
    try:
        settings, started = await _start(values)
        try:
            base = f"http://{settings.http_host}:{settings.http_port}"
            async with httpx.AsyncClient(base_url=base, timeout=15) as http:
                yield LiveRelay(
                    settings,
                    started.relay,
                    sink,
                    http,
                    {"Authorization": f"ApiKey {admin_key}"},
                    dns,
                )
        finally:
            await started.stop()
    finally:
        await sink.stop()
        dns.stop()


@dataclass
class _Started:
    relay: Relay
    context: AbstractAsyncContextManager[Relay]

    async def stop(self) -> None:
        await self.context.__aexit__(None, None, None)


async def _start(values: dict[str, Any]) -> tuple[Settings, _Started]:
    """Start a relay; a port another process took between free_port() and the bind (the
    relay reports it as CannotListen) is retried on fresh ports instead of failing the test."""
    for attempt in range(3):
        settings = Settings(**values)
        context = running(settings)
        try:
            return settings, _Started(await context.__aenter__(), context)
        except CannotListen:
            if attempt == 2:
                raise
            values = {**values, "http_port": free_port(), "smtp_port": free_port()}
    raise AssertionError("unreachable")

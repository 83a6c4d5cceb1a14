"""`support-relay demo`: the whole round trip in a temporary directory, narrated."""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx

from api.server import running
from relay.config import Settings
from relay.sink import MailSink, Received, free_port

PARTNER_INBOX = "support@acme-travel.example"
FLEET_INBOX = "dispatch@citycabs.example"


def _show(title: str, mail: Received) -> str:
    msg = mail.message
    lines = [f"── {title} ──", f"  envelope: MAIL FROM:<{mail.mail_from}> RCPT TO:{mail.rcpt_to}"]
    for name in ("From", "Reply-To", "To", "Subject", "Message-ID", "In-Reply-To"):
        if msg[name]:
            lines.append(f"  {name}: {msg[name]}")
    files = [part.get_filename() for part in msg.iter_attachments()]
    if files:
        lines.append(f"  attachments: {files}")
    lines.append("")
    lines += ["  | " + line for line in mail.text().strip().splitlines()]
    return "\n".join(lines) + "\n"


async def _reply(
    port: int, sender: str, to: str, subject: str, text: str, cites: str | None
) -> str:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2])
    if cites:
        msg["In-Reply-To"] = cites
        msg["References"] = cites
    msg.set_content(text)
    _, reply = await aiosmtplib.send(msg, hostname="127.0.0.1", port=port)
    return reply


def _ok(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 300:
        raise SystemExit(
            f"demo failed: {response.request.method} {response.request.url.path} "
            f"→ {response.status_code} {response.text}"
        )
    data = response.json()
    assert isinstance(data, dict)
    return data


async def run_demo() -> int:
    with tempfile.TemporaryDirectory(prefix="support-relay-demo-") as tmp:
        sink = await MailSink().start()
        admin_key = secrets.token_urlsafe(16)
        settings = Settings(
            database_url=f"sqlite+aiosqlite:///{Path(tmp) / 'relay.db'}",
            http_port=free_port(),
            smtp_port=free_port(),
            outbound=sink.url,
            admin_key=admin_key,
            delivery_backoff_base=0.5,
        )
        print(f"Working in {tmp}; outside world = a recording SMTP server on {sink.url}\n")
        try:
            async with running(settings):
                return await _round_trip(settings, sink, admin_key)
        finally:
            await sink.stop()


async def _round_trip(settings: Settings, sink: MailSink, admin_key: str) -> int:
    base = f"http://{settings.http_host}:{settings.http_port}"
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        admin = {"Authorization": f"ApiKey {admin_key}"}
        partner = _ok(
            await http.post(
                "/v1/admin/partners",
                headers=admin,
                json={"name": "Acme Travel", "contactEmail": PARTNER_INBOX},
            )
        )
        fleet = _ok(
            await http.post(
                "/v1/admin/fleets",
                headers=admin,
                json={"name": "City Cabs", "supportEmail": FLEET_INBOX},
            )
        )
        auth = {"Authorization": f"ApiKey {partner['apiKey']}"}
        print(f"1. Operator created partner #{partner['id']} and fleet #{fleet['id']}.")
        trip = {
            "fleetId": fleet["id"],
            "pickup": "Gare du Nord, Paris",
            "dropoff": "CDG Terminal 2E",
            "scheduledAt": "2026-11-20T08:30:00Z",
            "passengerName": "Jane Doe",
            "vehicle": "Black Toyota Prius",
            "driverName": "Marc",
        }
        _ok(await http.put("/v1/trips/BK-778", headers=auth, json=trip))
        upload = _ok(
            await http.post(
                "/v1/support/upload-attachment",
                headers=auth,
                files={"file": ("receipt.txt", b"Fare: 54.20 EUR\n", "text/plain")},
            )
        )
        created = await http.post(
            "/v1/support/demand/trips/BK-778/tickets",
            headers=auth,
            json={
                "subject": "Lost umbrella",
                "attachments": [upload["resourceToken"]],
                "comment": "Jane left a blue umbrella in the car. "
                f"You can also reach us at {PARTNER_INBOX}.",
            },
        )
        ticket = _ok(created)
        print(f"2. Partner opened ticket #{ticket['id']} by API → HTTP {created.status_code}.\n")

        to_fleet = (await sink.handler.wait_for(FLEET_INBOX))[0]
        print(_show("3. The fleet's inbox", to_fleet))
        fleet_alias = str(to_fleet.message["Reply-To"].addresses[0].addr_spec)
        answer = await _reply(
            settings.smtp_port,
            FLEET_INBOX,
            fleet_alias,
            f"Re: {to_fleet.message['Subject']}",
            f"Found it! Marc will drop it at your office tomorrow.\nQuestions: {FLEET_INBOX}",
            str(to_fleet.message["Message-ID"]),
        )
        print(f"4. The fleet replied by email to {fleet_alias} → SMTP {answer}\n")

        to_partner = (await sink.handler.wait_for(PARTNER_INBOX))[0]
        print(_show("5. The partner's inbox", to_partner))
        partner_alias = str(to_partner.message["Reply-To"].addresses[0].addr_spec)
        answer = await _reply(
            settings.smtp_port,
            PARTNER_INBOX,
            partner_alias,
            f"Re: {to_partner.message['Subject']}",
            "Perfect, thank you. Jane will be there from 9am.",
            str(to_partner.message["Message-ID"]),
        )
        print(f"6. The partner replied by email to {partner_alias} → SMTP {answer}\n")
        second = (await sink.handler.wait_for(FLEET_INBOX, count=2))[1]
        print(_show("7. The fleet's inbox again", second))

        leaks = [
            m for m in sink.handler.for_rcpt(FLEET_INBOX) if PARTNER_INBOX.encode() in m.raw.lower()
        ]
        leaks += [
            m for m in sink.handler.for_rcpt(PARTNER_INBOX) if FLEET_INBOX.encode() in m.raw.lower()
        ]
        detail = _ok(await http.get(f"/v1/support/tickets/{ticket['id']}", headers=auth))
        print(
            f"8. The ticket now holds {len(detail['conversation'])} messages and "
            f"{len(detail['events'])} events."
        )
        print(
            "   Masking check: "
            + (
                "FAILED — an address leaked"
                if leaks
                else "no byte sent to one side contains the other side's address."
            )
        )
        return 1 if leaks else 0


def main() -> int:
    return asyncio.run(run_demo())

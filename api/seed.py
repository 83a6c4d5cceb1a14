"""`serve --demo`: a demo partner, fleet and trip, created only when asked."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlmodel import select

from relay.runtime import Relay
from storage import accounts
from storage.db import transaction
from storage.models import Fleet, Partner
from storage.trips import upsert_trip

DEMO_PARTNER = "Acme Travel (demo)"
DEMO_FLEET = "City Cabs (demo)"
DEMO_TRIP = "DEMO-1001"


@dataclass(frozen=True)
class DemoData:
    api_key: str
    partner_trip_id: str
    trip_id: str
    created: bool


async def seed_demo(relay: Relay) -> DemoData:
    """Create the demo records if absent; always issue a fresh key (keys are shown once)."""
    async with transaction(relay.sessions) as session:
        partner = (await session.exec(select(Partner).where(Partner.name == DEMO_PARTNER))).first()
        created = partner is None
        if partner is None:
            partner = await accounts.create_partner(
                session, DEMO_PARTNER, "partner@acme.example", []
            )
        fleet = (await session.exec(select(Fleet).where(Fleet.name == DEMO_FLEET))).first()
        if fleet is None:
            fleet = await accounts.create_fleet(
                session, DEMO_FLEET, "dispatch@citycabs.example", []
            )
        assert partner.id is not None and fleet.id is not None
        trip, _ = await upsert_trip(
            session,
            partner.id,
            DEMO_TRIP,
            fleet_id=fleet.id,
            pickup="Gare du Nord, Paris",
            dropoff="CDG Terminal 2E",
            scheduled_at=datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
            - timedelta(hours=3),
            passenger_name="Jane Doe",
            vehicle="Black Toyota Prius, AB-123-CD",
            driver_name="Marc",
        )
        key = await accounts.issue_key(session, partner.id)
    return DemoData(api_key=key.secret, partner_trip_id=DEMO_TRIP, trip_id=trip.id, created=created)


def demo_banner(relay: Relay, demo: DemoData) -> str:
    s = relay.settings
    base = f"http://{s.http_host}:{s.http_port}"
    return f"""
support-relay is running (demo data {"created" if demo.created else "already present"}).

  HTTP API   {base}
  SMTP       {s.smtp_host}:{s.smtp_port}  (domain {s.domain})
  Outbound   {s.outbound}
  Demo key   {demo.api_key}
  Demo trip  {demo.partner_trip_id}  (uuid {demo.trip_id})

Open a ticket:

  curl -sS -X POST {base}/v1/support/demand/trips/{demo.partner_trip_id}/tickets \\
    -H 'Authorization: ApiKey {demo.api_key}' -H 'Content-Type: application/json' \\
    -d '{{"subject": "Lost umbrella", "comment": "The passenger left a blue umbrella in the car."}}'
"""

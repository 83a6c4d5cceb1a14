"""Trips as partners register them: looked up only within the owning partner."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.direct import Prepared
from storage.models import Trip
from storage.read_only import flush_pending, select_models, table_of
from storage.types import utcnow

_TRIPS = table_of(Trip)
_trip_by_partner_id, (_TRIP_COLUMNS,) = select_models((Trip, _TRIPS))
_TRIP_BY_PARTNER_ID = Prepared(
    _trip_by_partner_id.where(
        _TRIPS.c.partner_id == bindparam("partner_id"),
        _TRIPS.c.partner_trip_id == bindparam("partner_trip_id"),
    )
)


async def trip_by_partner_id(
    session: AsyncSession, partner_id: int, partner_trip_id: str
) -> Trip | None:
    """The partner's trip, read-only (storage.read_only): every ticket creation and order
    request looks one up only to read it. `upsert_trip` loads its own to change it."""
    await flush_pending(session)
    params = {"partner_id": partner_id, "partner_trip_id": partner_trip_id}
    row = (await _TRIP_BY_PARTNER_ID.rows(session, params)).first()
    if row is None:
        return None
    trip: Trip = _TRIP_COLUMNS.build(row)
    return trip


async def _trip_to_change(
    session: AsyncSession, partner_id: int, partner_trip_id: str
) -> Trip | None:
    query = select(Trip).where(
        Trip.partner_id == partner_id, Trip.partner_trip_id == partner_trip_id
    )
    return (await session.exec(query)).first()


async def trip_by_uuid(session: AsyncSession, partner_id: int, trip_id: str) -> Trip | None:
    trip = await session.get(Trip, trip_id)
    # Another partner's trip is indistinguishable from a missing one.
    return trip if trip is not None and trip.partner_id == partner_id else None


async def upsert_trip(
    session: AsyncSession,
    partner_id: int,
    partner_trip_id: str,
    *,
    fleet_id: int,
    pickup: str,
    dropoff: str,
    scheduled_at: datetime,
    passenger_name: str | None,
    vehicle: str | None,
    driver_name: str | None,
) -> tuple[Trip, bool]:
    """Create or replace a trip; returns (trip, created)."""
    trip = await _trip_to_change(session, partner_id, partner_trip_id)
    created = trip is None
    if trip is None:
        trip = Trip(
            partner_id=partner_id,
            partner_trip_id=partner_trip_id,
            fleet_id=fleet_id,
            pickup=pickup,
            dropoff=dropoff,
            scheduled_at=scheduled_at,
        )
    trip.fleet_id = fleet_id
    trip.pickup = pickup
    trip.dropoff = dropoff
    trip.scheduled_at = scheduled_at
    trip.passenger_name = passenger_name
    trip.vehicle = vehicle
    trip.driver_name = driver_name
    trip.updated_at = utcnow()
    session.add(trip)
    await session.flush()
    return trip, created

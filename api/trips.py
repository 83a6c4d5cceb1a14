"""Trip routes: partners register the trips their tickets will be about."""

from __future__ import annotations

from datetime import UTC

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth import current_partner, relay_of
from api.bodies import read_json, str_param
from api.contract import ApiRoute, Contract
from api.schemas import TripPublic, TripUpsert
from relay.errors import InvalidInput, NotFound
from storage.db import transaction
from storage.models import Fleet
from storage.trips import trip_by_partner_id, upsert_trip


async def put_trip(request: Request) -> Response:
    partner = await current_partner(request)
    assert partner.id is not None
    partner_trip_id = str_param(request, "partnerTripId", "trip")
    body = await read_json(request, TripUpsert)
    if body.scheduled_at.tzinfo is None:
        raise InvalidInput({"scheduledAt": "Give a time zone, e.g. 2026-11-21T14:30:00Z."})
    async with transaction(relay_of(request).sessions) as session:
        if await session.get(Fleet, body.fleet_id) is None:
            raise InvalidInput({"fleetId": "No fleet with this id."})
        trip, created = await upsert_trip(
            session,
            partner.id,
            partner_trip_id,
            fleet_id=body.fleet_id,
            pickup=body.pickup,
            dropoff=body.dropoff,
            scheduled_at=body.scheduled_at.astimezone(UTC),
            passenger_name=body.passenger_name,
            vehicle=body.vehicle,
            driver_name=body.driver_name,
        )
    return JSONResponse(TripPublic.model_validate(trip).dump(), status_code=201 if created else 200)


async def get_trip(request: Request) -> Response:
    partner = await current_partner(request)
    assert partner.id is not None
    partner_trip_id = str_param(request, "partnerTripId", "trip")
    async with relay_of(request).reads() as session:
        trip = await trip_by_partner_id(session, partner.id, partner_trip_id)
    if trip is None:
        raise NotFound("trip")
    return JSONResponse(TripPublic.model_validate(trip).dump())


routes = [
    ApiRoute(
        "/v1/trips/{partnerTripId}",
        put_trip,
        "PUT",
        Contract(
            "Register or update a trip under your own trip id",
            tag="trips",
            body=TripUpsert,
            ok={200: TripPublic, 201: TripPublic},
            description="201 when the trip is new, 200 when it was updated.",
        ),
    ),
    ApiRoute(
        "/v1/trips/{partnerTripId}",
        get_trip,
        "GET",
        Contract("Read a trip", tag="trips", ok={200: TripPublic}),
    ),
]

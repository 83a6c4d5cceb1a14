"""Admin routes (`/v1/admin/…`): partners, fleets and API keys, for the operator."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.auth import relay_of, require_admin
from api.bodies import int_param, read_json
from api.schemas import (
    FleetCreate,
    FleetPublic,
    KeyIssued,
    PartnerCreate,
    PartnerCreated,
    PartnerPublic,
)
from relay.errors import NotFound
from storage import accounts
from storage.db import transaction
from storage.models import Partner


async def create_partner(request: Request) -> Response:
    require_admin(request)
    body = await read_json(request, PartnerCreate)
    async with transaction(relay_of(request).sessions) as session:
        partner = await accounts.create_partner(
            session, body.name, body.contact_email, body.allowed_senders
        )
        assert partner.id is not None
        key = await accounts.issue_key(session, partner.id)
    public = PartnerPublic.model_validate(partner)
    created = PartnerCreated(**public.model_dump(), api_key=key.secret, api_key_id=key.id)
    return JSONResponse(created.dump(), status_code=201)


async def list_partners(request: Request) -> Response:
    require_admin(request)
    async with relay_of(request).sessions() as session:
        partners = await accounts.list_partners(session)
    return JSONResponse({"partners": [PartnerPublic.model_validate(p).dump() for p in partners]})


async def create_fleet(request: Request) -> Response:
    require_admin(request)
    body = await read_json(request, FleetCreate)
    async with transaction(relay_of(request).sessions) as session:
        fleet = await accounts.create_fleet(
            session, body.name, body.support_email, body.allowed_senders
        )
    return JSONResponse(FleetPublic.model_validate(fleet).dump(), status_code=201)


async def list_fleets(request: Request) -> Response:
    require_admin(request)
    async with relay_of(request).sessions() as session:
        fleets = await accounts.list_fleets(session)
    return JSONResponse({"fleets": [FleetPublic.model_validate(f).dump() for f in fleets]})


async def issue_key(request: Request) -> Response:
    require_admin(request)
    partner_id = int_param(request, "partnerId", "partner")
    async with transaction(relay_of(request).sessions) as session:
        if await session.get(Partner, partner_id) is None:
            raise NotFound("partner")
        key = await accounts.issue_key(session, partner_id)
    return JSONResponse(KeyIssued(id=key.id, partner_id=partner_id, api_key=key.secret).dump(), 201)


async def revoke_key(request: Request) -> Response:
    require_admin(request)
    key_id = int_param(request, "keyId", "API key")
    async with transaction(relay_of(request).sessions) as session:
        if not await accounts.revoke_key(session, key_id):
            raise NotFound("API key")
    return Response(status_code=204)


routes = [
    Route("/v1/admin/partners", create_partner, methods=["POST"]),
    Route("/v1/admin/partners", list_partners, methods=["GET"]),
    Route("/v1/admin/partners/{partnerId}/keys", issue_key, methods=["POST"]),
    Route("/v1/admin/keys/{keyId}", revoke_key, methods=["DELETE"]),
    Route("/v1/admin/fleets", create_fleet, methods=["POST"]),
    Route("/v1/admin/fleets", list_fleets, methods=["GET"]),
]

"""Admin routes (`/v1/admin/…`): partners, fleets and API keys, for the operator."""

from __future__ import annotations

from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth import relay_of, require_admin
from api.bodies import int_param, read_json, str_param
from api.contract import ApiRoute, Contract
from api.idempotency import Idempotency, idempotency_of, once, respond
from api.schemas import (
    FleetCreate,
    FleetList,
    FleetPublic,
    FleetUpdate,
    KeyIssued,
    PartnerCreate,
    PartnerCreated,
    PartnerList,
    PartnerPublic,
    SuppressionList,
    SuppressionPublic,
)
from relay.errors import NotFound
from storage import accounts, bounces
from storage.db import transaction
from storage.models import Partner

ADMIN_SCOPE = "admin"
_SECRETS_ONCE = (
    "API keys are shown once and stored only as hashes, so a retry with the same"
    " Idempotency-Key does not show the key again: it answers 409 naming what was created."
)


async def _secret_shown_once(
    session: AsyncSession, idempotency: Idempotency | None, partner_id: int, what: str
) -> None:
    """Record, for a retry with this key, a 409 instead of the response: replaying it would
    mean storing the secret in clear."""
    if idempotency is None:
        return
    detail = (
        f"This Idempotency-Key already created {what} for partner {partner_id}; API keys are"
        f" shown only once. Issue a new one with POST /v1/admin/partners/{partner_id}/keys."
    )
    body = {"type": "about:blank", "status": 409, "title": "Conflict", "detail": detail}
    await idempotency.record(session, 409, body)


async def create_partner(request: Request) -> Response:
    require_admin(request)
    relay = relay_of(request)
    body = await read_json(request, PartnerCreate)
    idempotency = await idempotency_of(request, ADMIN_SCOPE, relay.settings.idempotency_ttl)

    async def create() -> Response:
        async with transaction(relay.sessions) as session:
            partner = await accounts.create_partner(
                session, body.name, body.contact_email, body.allowed_senders
            )
            assert partner.id is not None
            key = await accounts.issue_key(session, partner.id)
            await _secret_shown_once(session, idempotency, partner.id, "a partner")
        public = PartnerPublic.model_validate(partner)
        created = PartnerCreated(**public.model_dump(), api_key=key.secret, api_key_id=key.id)
        return JSONResponse(created.dump(), status_code=201)

    return await once(idempotency, relay.reads, create)


async def list_partners(request: Request) -> Response:
    require_admin(request)
    async with relay_of(request).reads() as session:
        partners = await accounts.list_partners(session)
    out = PartnerList(partners=[PartnerPublic.model_validate(p) for p in partners])
    return JSONResponse(out.dump())


async def create_fleet(request: Request) -> Response:
    require_admin(request)
    relay = relay_of(request)
    body = await read_json(request, FleetCreate)
    idempotency = await idempotency_of(request, ADMIN_SCOPE, relay.settings.idempotency_ttl)

    async def create() -> Response:
        async with transaction(relay.sessions) as session:
            fleet = await accounts.create_fleet(
                session, body.name, body.support_email, body.allowed_senders, body.auth_policy
            )
            return await respond(idempotency, session, FleetPublic.model_validate(fleet).dump())

    return await once(idempotency, relay.reads, create)


async def list_fleets(request: Request) -> Response:
    require_admin(request)
    async with relay_of(request).reads() as session:
        fleets = await accounts.list_fleets(session)
    return JSONResponse(FleetList(fleets=[FleetPublic.model_validate(f) for f in fleets]).dump())


async def issue_key(request: Request) -> Response:
    require_admin(request)
    relay = relay_of(request)
    partner_id = int_param(request, "partnerId", "partner")
    idempotency = await idempotency_of(request, ADMIN_SCOPE, relay.settings.idempotency_ttl)

    async def create() -> Response:
        async with transaction(relay.sessions) as session:
            if await session.get(Partner, partner_id) is None:
                raise NotFound("partner")
            key = await accounts.issue_key(session, partner_id)
            await _secret_shown_once(session, idempotency, partner_id, "an API key")
        issued = KeyIssued(id=key.id, partner_id=partner_id, api_key=key.secret)
        return JSONResponse(issued.dump(), 201)

    return await once(idempotency, relay.reads, create)


async def revoke_key(request: Request) -> Response:
    require_admin(request)
    key_id = int_param(request, "keyId", "API key")
    async with transaction(relay_of(request).sessions) as session:
        if not await accounts.revoke_key(session, key_id):
            raise NotFound("API key")
    return Response(status_code=204)


async def update_fleet(request: Request) -> Response:
    require_admin(request)
    fleet_id = int_param(request, "fleetId", "fleet")
    body = await read_json(request, FleetUpdate)
    async with transaction(relay_of(request).sessions) as session:
        fleet = await accounts.set_fleet_auth_policy(session, fleet_id, body.auth_policy)
        if fleet is None:
            raise NotFound("fleet")
        out = FleetPublic.model_validate(fleet)
    return JSONResponse(out.dump())


async def list_suppressions(request: Request) -> Response:
    require_admin(request)
    async with relay_of(request).reads() as session:
        rows = await bounces.list_suppressions(session)
    out = SuppressionList(suppressions=[SuppressionPublic.model_validate(r) for r in rows])
    return JSONResponse(out.dump())


async def clear_suppression(request: Request) -> Response:
    require_admin(request)
    address = str_param(request, "address", "suppression", max_length=320)
    async with transaction(relay_of(request).sessions) as session:
        if not await bounces.clear_suppression(session, address):
            raise NotFound("suppression")
    return Response(status_code=204)


def _admin(summary: str, **kw: Any) -> Contract:
    return Contract(summary=summary, tag="admin", auth="admin", **kw)


routes = [
    ApiRoute(
        "/v1/admin/partners",
        create_partner,
        "POST",
        _admin(
            "Create a partner and its first API key (shown once)",
            body=PartnerCreate,
            ok={201: PartnerCreated},
            errors=(409,),
            idempotent=True,
            description=_SECRETS_ONCE,
        ),
    ),
    ApiRoute(
        "/v1/admin/partners", list_partners, "GET", _admin("List partners", ok={200: PartnerList})
    ),
    ApiRoute(
        "/v1/admin/partners/{partnerId}/keys",
        issue_key,
        "POST",
        _admin(
            "Issue another API key for a partner (shown once)",
            ok={201: KeyIssued},
            errors=(409,),
            idempotent=True,
            description=_SECRETS_ONCE,
        ),
    ),
    ApiRoute(
        "/v1/admin/keys/{keyId}", revoke_key, "DELETE", _admin("Revoke an API key", ok={204: None})
    ),
    ApiRoute(
        "/v1/admin/fleets",
        create_fleet,
        "POST",
        _admin("Register a fleet", body=FleetCreate, ok={201: FleetPublic}, idempotent=True),
    ),
    ApiRoute("/v1/admin/fleets", list_fleets, "GET", _admin("List fleets", ok={200: FleetList})),
    ApiRoute(
        "/v1/admin/fleets/{fleetId}",
        update_fleet,
        "PATCH",
        _admin(
            "Set a fleet's authentication policy",
            body=FleetUpdate,
            ok={200: FleetPublic},
            description="`authPolicy`: record, quarantine, reject, or null for the default.",
        ),
    ),
    ApiRoute(
        "/v1/admin/suppressions",
        list_suppressions,
        "GET",
        _admin("List addresses suppressed after a hard bounce", ok={200: SuppressionList}),
    ),
    ApiRoute(
        "/v1/admin/suppressions/{address}",
        clear_suppression,
        "DELETE",
        _admin(
            "Lift a suppression: the relay sends to the address again",
            ok={204: None},
            description="Mail refused while it was suppressed stays failed; new mail is sent.",
        ),
    ),
]

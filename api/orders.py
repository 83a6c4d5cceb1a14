"""Order-keyed support sessions (`/v1/support/orders/{orderId}`), the reference's
`/support/{orderId}` API: the order id is the partner's own trip id, and the session is that
trip's current ticket."""

from __future__ import annotations

from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth import current_partner, relay_of
from api.bodies import read_json, read_optional_json, str_param
from api.contract import ApiRoute, Contract
from api.idempotency import idempotency_of, once, partner_scope, respond
from api.schemas import (
    AgentPublic,
    AgentUpdate,
    OrderSession,
    OrderSessionCreate,
    OrderSessionUpdate,
)
from api.views import agent_of, order_session
from relay.errors import Conflict, NotFound
from relay.lifecycle import CLOSED
from relay.tickets import NewTicket, TicketChanges
from storage.history import session_ticket
from storage.models import Partner, Ticket, Trip
from storage.trips import trip_by_partner_id


async def _order(request: Request) -> tuple[Partner, str, Trip]:
    partner = await current_partner(request)
    assert partner.id is not None
    order_id = str_param(request, "orderId", "order")
    async with relay_of(request).reads() as session:
        trip = await trip_by_partner_id(session, partner.id, order_id)
    if trip is None:
        raise NotFound("order")
    return partner, order_id, trip


async def _current(request: Request, partner: Partner, trip: Trip) -> Ticket:
    assert partner.id is not None
    async with relay_of(request).reads() as session:
        ticket = await session_ticket(session, partner.id, trip.id)
    if ticket is None:
        raise NotFound("support session")
    return ticket


async def _session_response(
    request: Request, partner: Partner, order_id: str, trip: Trip
) -> Response:
    ticket = await _current(request, partner, trip)
    return JSONResponse(order_session(order_id, ticket).dump())


async def get_session(request: Request) -> Response:
    partner, order_id, trip = await _order(request)
    return await _session_response(request, partner, order_id, trip)


async def open_session(request: Request) -> Response:
    """Open a session, or return the one already open (200) so a retry never opens two."""
    partner, order_id, trip = await _order(request)
    relay = relay_of(request)
    body = await read_optional_json(request, OrderSessionCreate)
    comment = body.comment or (
        f"{partner.name} opened a support session for order {order_id}."
        + (f" Please call back on {body.callback_phone}." if body.callback_phone else "")
    )
    new = NewTicket(
        subject=body.subject or f"Support request for order {order_id}",
        comment=comment,
        contact_email=None,
        attachment_tokens=(),
        callback_phone=body.callback_phone,
    )
    idempotency = await idempotency_of(
        request, partner_scope(partner.id), relay.settings.idempotency_ttl
    )
    built: list[Response] = []
    location = f"/v1/support/orders/{order_id}"

    async def answer(session: AsyncSession, ticket_id: int, created: bool) -> None:
        ticket = await session.get(Ticket, ticket_id)
        assert ticket is not None
        out = order_session(order_id, ticket).dump()
        status = 201 if created else 200
        # Replaced, not appended: a unit run again (storage.group_commit) answers anew.
        built[:] = [await respond(idempotency, session, out, status=status, location=location)]

    async def create() -> Response:
        await relay.tickets.open_session(partner, trip, new, within=answer)
        return built[0]

    return await once(idempotency, relay.reads, create)


async def update_session(request: Request) -> Response:
    partner, order_id, trip = await _order(request)
    body = await read_json(request, OrderSessionUpdate)
    ticket = await _current(request, partner, trip)
    assert ticket.id is not None
    await relay_of(request).tickets.set_callback_phone(partner, ticket.id, body.callback_phone)
    return await _session_response(request, partner, order_id, trip)


async def close_session(request: Request) -> Response:
    partner, order_id, trip = await _order(request)
    ticket = await _current(request, partner, trip)
    assert ticket.id is not None
    if ticket.status == CLOSED:
        raise Conflict("The support session for this order is already closed.")
    changes = TicketChanges(status=CLOSED)
    await relay_of(request).tickets.update_ticket(partner, ticket.id, changes)
    return await _session_response(request, partner, order_id, trip)


async def get_agent(request: Request) -> Response:
    partner, _, trip = await _order(request)
    agent = agent_of(await _current(request, partner, trip))
    if agent is None:
        raise NotFound("agent")
    return JSONResponse(agent.dump())


async def put_agent(request: Request) -> Response:
    partner, _, trip = await _order(request)
    body = await read_json(request, AgentUpdate)
    ticket = await _current(request, partner, trip)
    assert ticket.id is not None
    await relay_of(request).tickets.set_agent(partner, ticket.id, body.name, body.phone)
    agent = agent_of(await _current(request, partner, trip))
    assert agent is not None
    return JSONResponse(agent.dump())


async def delete_agent(request: Request) -> Response:
    partner, _, trip = await _order(request)
    ticket = await _current(request, partner, trip)
    assert ticket.id is not None
    if agent_of(ticket) is None:
        raise NotFound("agent")
    await relay_of(request).tickets.set_agent(partner, ticket.id, None, None)
    return Response(status_code=204)


def _orders(summary: str, **kw: Any) -> Contract:
    return Contract(summary=summary, tag="orders", **kw)


SESSION = "/v1/support/orders/{orderId}"
AGENT = "/v1/support/orders/{orderId}/agent"
routes = [
    ApiRoute(
        SESSION,
        get_session,
        "GET",
        _orders("Read the order's support session", ok={200: OrderSession}),
    ),
    ApiRoute(
        SESSION,
        open_session,
        "POST",
        _orders(
            "Open a support session for the order, or return the open one",
            body=OrderSessionCreate,
            body_optional=True,
            ok={200: OrderSession, 201: OrderSession},
            errors=(409,),
            idempotent=True,
            description="201 with a new session; 200 with the session already open.",
        ),
    ),
    ApiRoute(
        SESSION,
        update_session,
        "PUT",
        _orders("Change the callback phone", body=OrderSessionUpdate, ok={200: OrderSession}),
    ),
    ApiRoute(
        SESSION,
        close_session,
        "DELETE",
        _orders("Close the support session", ok={200: OrderSession}, errors=(409,)),
    ),
    ApiRoute(AGENT, get_agent, "GET", _orders("Read the fleet-side agent", ok={200: AgentPublic})),
    ApiRoute(
        AGENT,
        put_agent,
        "PUT",
        _orders("Name the fleet-side agent", body=AgentUpdate, ok={200: AgentPublic}),
    ),
    ApiRoute(AGENT, delete_agent, "DELETE", _orders("Remove the agent", ok={204: None})),
]

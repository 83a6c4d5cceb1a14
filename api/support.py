"""Support routes (`/v1/support/…`): uploads, opening tickets, listing and reading them."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from datetime import UTC, datetime

from pydantic import ValidationError
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth import current_partner, relay_of
from api.bodies import int_param, read_json, str_param
from api.contract import ApiRoute, Contract
from api.idempotency import Idempotency, idempotency_of, once, partner_scope, respond
from api.problems import field_errors
from api.schemas import (
    MAX_ID,
    MessageCreate,
    MessagePublic,
    TicketCreate,
    TicketDetail,
    TicketList,
    TicketQuery,
    TicketUpdate,
)
from api.views import message_of_ticket, opened_detail, page_summaries, ticket_detail
from relay.config import Settings
from relay.errors import InvalidInput, NotFound
from relay.tickets import NewMessage, NewTicket, OpenedTicket, TicketChanges
from storage.catalog import category_family
from storage.history import TicketFilter, search_tickets
from storage.models import Partner, Trip
from storage.trips import trip_by_partner_id, trip_by_uuid


def _check_text_limits(
    settings: Settings, comment: str, attachments: list[str], subject: str | None = None
) -> None:
    """The limits an operator configures (pydantic's are fixed at import time)."""
    if subject is not None and len(subject) > settings.max_subject_length:
        limit = settings.max_subject_length
        raise InvalidInput({"subject": f"Ensure this field has no more than {limit} characters."})
    if len(comment) > settings.max_comment_length:
        limit = settings.max_comment_length
        raise InvalidInput({"comment": f"Ensure this field has no more than {limit} characters."})
    if len(attachments) > settings.max_attachments:
        limit = settings.max_attachments
        raise InvalidInput({"attachments": f"No more than {limit} attachments per message."})


async def _open(request: Request, partner: Partner, trip: Trip | None) -> Response:
    if trip is None:
        raise NotFound("trip")
    relay = relay_of(request)
    body = await read_json(request, TicketCreate)
    _check_text_limits(relay.settings, body.comment, body.attachments, body.subject)
    new = NewTicket(
        subject=body.subject,
        comment=body.comment,
        contact_email=body.contact_email,
        attachment_tokens=body.attachments,
        category_id=body.category,
        priority=body.priority,
        tag_ids=body.tags,
        callback_phone=body.callback_phone,
    )
    idempotency = await idempotency_of(
        request, partner_scope(partner.id), relay.settings.idempotency_ttl
    )
    built: list[Response] = []

    async def answer(session: AsyncSession, opened: OpenedTicket) -> None:
        location = f"/v1/support/tickets/{opened.ticket.id}"
        body = (await opened_detail(session, opened)).dump()
        # Replaced, not appended: a unit run again (storage.group_commit) answers anew.
        built[:] = [await respond(idempotency, session, body, location=location)]

    async def create() -> Response:
        await relay.tickets.open_ticket(partner, trip, new, within=answer)
        return built[0]

    return await once(idempotency, relay.reads, create)


async def message_created(
    session: AsyncSession,
    partner: Partner,
    ticket_id: int,
    message_id: int,
    location: str,
    idempotency: Idempotency | None,
) -> Response:
    """The 201 for a new message of a ticket, built and recorded in the creating transaction:
    a replay returns these very bytes."""
    assert partner.id is not None
    body = (await message_of_ticket(session, partner.id, ticket_id, message_id)).dump()
    return await respond(idempotency, session, body, location=location)


async def create_by_trip_uuid(request: Request) -> Response:
    partner = await current_partner(request)
    assert partner.id is not None
    trip_id = str_param(request, "tripId", "trip", max_length=36)
    async with relay_of(request).reads() as session:
        trip = await trip_by_uuid(session, partner.id, trip_id)
    return await _open(request, partner, trip)


async def create_by_partner_trip(request: Request) -> Response:
    partner = await current_partner(request)
    assert partner.id is not None
    partner_trip_id = str_param(request, "partnerTripId", "trip")
    async with relay_of(request).reads() as session:
        trip = await trip_by_partner_id(session, partner.id, partner_trip_id)
    return await _open(request, partner, trip)


async def get_ticket(request: Request) -> Response:
    partner = await current_partner(request)
    assert partner.id is not None
    ticket_id = int_param(request, "ticketId", "ticket")
    async with relay_of(request).reads() as session:
        detail = await ticket_detail(session, partner.id, ticket_id)
    return JSONResponse(detail.dump())


async def update_ticket(request: Request) -> Response:
    partner = await current_partner(request)
    assert partner.id is not None
    ticket_id = int_param(request, "ticketId", "ticket")
    body = await read_json(request, TicketUpdate)
    clears_category = "category" in body.model_fields_set and body.category is None
    clears_attention = "attention" in body.model_fields_set
    asked = (body.status, body.priority, body.category, body.tags)
    if all(value is None for value in asked) and not (clears_category or clears_attention):
        raise InvalidInput(
            {"body": "Send at least one of status, priority, category, tags, attention."}
        )
    changes = TicketChanges(
        status=body.status,
        priority=body.priority,
        category_id=body.category,
        clear_category=clears_category,
        tag_ids=body.tags,
        clear_attention=clears_attention,
    )
    relay = relay_of(request)
    await relay.tickets.update_ticket(partner, ticket_id, changes)
    async with relay.reads() as session:
        detail = await ticket_detail(session, partner.id, ticket_id)
    return JSONResponse(detail.dump())


async def add_message(request: Request) -> Response:
    partner = await current_partner(request)
    ticket_id = int_param(request, "ticketId", "ticket")
    relay = relay_of(request)
    body = await read_json(request, MessageCreate)
    _check_text_limits(relay.settings, body.comment, body.attachments)
    new = NewMessage(
        comment=body.comment, attachment_tokens=body.attachments, internal=body.internal
    )
    idempotency = await idempotency_of(
        request, partner_scope(partner.id), relay.settings.idempotency_ttl
    )
    built: list[Response] = []
    location = f"/v1/support/tickets/{ticket_id}"

    async def answer(session: AsyncSession, message_id: int) -> None:
        response = await message_created(
            session, partner, ticket_id, message_id, location, idempotency
        )
        built.append(response)

    async def create() -> Response:
        await relay.tickets.add_message(partner, ticket_id, new, within=answer)
        return built[0]

    return await once(idempotency, relay.reads, create)


def _query(request: Request) -> TicketQuery:
    """Query parameters through the same validation as a body: unknown ones are an error."""
    params = request.query_params
    data: dict[str, object] = {}
    errors: dict[str, str] = {}
    for name in params:
        values = params.getlist(name)
        if name == "tag":
            data[name] = values
        elif len(values) > 1:
            errors[name] = "Give this parameter once."
        else:
            data[name] = values[0]
    try:
        query = TicketQuery.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as exc:
        errors.update(field_errors(exc))
        raise InvalidInput(errors) from None
    if errors:
        raise InvalidInput(errors)
    return query


def _filters_digest(query: TicketQuery) -> str:
    """Ties a cursor to the filters and sort it was made for."""
    fields = query.model_dump(mode="json", exclude={"cursor", "limit"})
    fields["tag"] = sorted(set(query.tag))  # tag=1&tag=2 and tag=2&tag=1 are one search
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _encode_cursor(cursor: tuple[datetime, int], digest: str) -> str:
    raw = f"{cursor[0].isoformat()}|{cursor[1]}|{digest}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(value: str, digest: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        stamp, ident, made_for = raw.split("|")
        when = datetime.fromisoformat(stamp)
        last_id = int(ident)
        if when.tzinfo is None or not 0 < last_id <= MAX_ID:
            raise ValueError
    except (binascii.Error, ValueError, OverflowError, UnicodeDecodeError):
        raise InvalidInput({"cursor": "Not a cursor this API returned."}) from None
    if made_for != digest:
        raise InvalidInput({"cursor": "This cursor belongs to other filters or another sort."})
    return when.astimezone(UTC), last_id


async def list_ticket_history(request: Request) -> Response:
    partner = await current_partner(request)
    assert partner.id is not None
    query = _query(request)
    digest = _filters_digest(query)
    after = _decode_cursor(query.cursor, digest) if query.cursor else None
    async with relay_of(request).reads() as session:
        filters = await _filters(session, partner.id, query)
        if filters is None:  # a partner trip id that names no trip: nothing can match
            return JSONResponse(TicketList(tickets=[], next_cursor=None).dump())
        page = await search_tickets(
            session, partner.id, filters, sort=query.sort, limit=query.limit, after=after
        )
        tickets = await page_summaries(session, page)
    cursor = _encode_cursor(page.next_cursor, digest) if page.next_cursor else None
    return JSONResponse(TicketList(tickets=tickets, next_cursor=cursor).dump())


async def _filters(
    session: AsyncSession, partner_id: int, query: TicketQuery
) -> TicketFilter | None:
    trip_id = query.trip_id
    if query.partner_trip_id is not None:
        trip = await trip_by_partner_id(session, partner_id, query.partner_trip_id)
        if trip is None or (trip_id is not None and trip.id != trip_id):
            return None
        trip_id = trip.id
    family = await category_family(session, query.category) if query.category else None
    return TicketFilter(
        status=query.status,
        category_ids=family,
        priority=query.priority,
        tag_ids=query.tag,
        subject=query.subject,
        trip_id=trip_id,
        created_after=query.created_after,
        created_before=query.created_before,
        updated_after=query.updated_after,
        updated_before=query.updated_before,
    )


_OPEN = Contract(
    "Open a ticket about a trip; the fleet is emailed from a masked alias",
    tag="tickets",
    body=TicketCreate,
    ok={201: TicketDetail},
    errors=(409,),
    idempotent=True,
    description="409 when an open-ticket limit (per trip, per partner) would be exceeded.",
)

routes = [
    ApiRoute("/v1/support/trips/{tripId}/tickets", create_by_trip_uuid, "POST", _OPEN),
    ApiRoute(
        "/v1/support/demand/trips/{partnerTripId}/tickets", create_by_partner_trip, "POST", _OPEN
    ),
    ApiRoute(
        "/v1/support/tickets",
        list_ticket_history,
        "GET",
        Contract(
            "Search your ticket history",
            tag="tickets",
            query=TicketQuery,
            ok={200: TicketList},
            description=(
                "Newest first by default. Pages are keyset-paginated: pass `nextCursor` back as"
                " `cursor` with the same filters; pages stay stable while tickets arrive."
            ),
        ),
    ),
    ApiRoute(
        "/v1/support/tickets/{ticketId}",
        get_ticket,
        "GET",
        Contract(
            "Read a ticket with its conversation, attachments and events",
            tag="tickets",
            ok={200: TicketDetail},
        ),
    ),
    ApiRoute(
        "/v1/support/tickets/{ticketId}",
        update_ticket,
        "PATCH",
        Contract(
            "Change status, priority, category or tags",
            tag="tickets",
            body=TicketUpdate,
            ok={200: TicketDetail},
            errors=(409,),
            description=(
                "Status moves open → processing → closed and back to open; impossible moves"
                " are a 409. Closing and reopening email the fleet."
            ),
        ),
    ),
    ApiRoute(
        "/v1/support/tickets/{ticketId}/messages",
        add_message,
        "POST",
        Contract(
            "Add a message (emailed to the fleet) or an internal note (never sent)",
            tag="tickets",
            body=MessageCreate,
            ok={201: MessagePublic},
            errors=(409,),
            idempotent=True,
        ),
    ),
]

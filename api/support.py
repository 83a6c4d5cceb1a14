"""Support routes (`/v1/support/…`): uploads, opening tickets, listing and reading them."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime, timedelta

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.auth import current_partner, relay_of
from api.bodies import int_param, read_json, str_param
from api.schemas import (
    AttachmentPublic,
    EventPublic,
    MessageCreate,
    MessagePublic,
    TicketCreate,
    TicketDetail,
    TicketList,
    TicketPublic,
    TicketUpdate,
    UploadResult,
)
from relay.config import Settings
from relay.errors import InvalidInput, NotFound
from relay.headers import header_text
from relay.lifecycle import STATUSES
from relay.tickets import NewMessage, NewTicket, TicketChanges
from storage.db import transaction
from storage.models import Fleet, Partner, Ticket, Trip
from storage.tickets import (
    add_upload,
    conversation,
    events_of,
    list_tickets,
    ticket_attachments,
    ticket_for_partner,
)
from storage.trips import trip_by_partner_id, trip_by_uuid, trips_by_id
from storage.types import utcnow


def _human_size(size: int) -> str:
    """2MiB, 512KiB, 100B: the unit in which the limit reads as a whole number if possible."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            value = size / factor
            return f"{value:.0f}{unit}" if value.is_integer() else f"{value:.1f}{unit}"
    return f"{size}B"


async def upload_attachment(request: Request) -> Response:
    partner = await current_partner(request)
    assert partner.id is not None
    settings = relay_of(request).settings
    limit = settings.max_attachment_size
    declared = int(request.headers.get("content-length") or 0)
    if declared > limit + 64 * 1024:  # refuse before reading: multipart adds a little framing
        raise InvalidInput({"file": f"File is too big. Max filesize: {_human_size(limit)}."})
    if "multipart/form-data" not in request.headers.get("content-type", ""):
        raise HTTPException(415, "Send the file as multipart/form-data in a field named 'file'.")
    async with request.form(max_files=1, max_fields=5) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInput({"file": "This field is required."})
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise InvalidInput({"file": f"File is too big. Max filesize: {_human_size(limit)}."})
        if not data:
            raise InvalidInput({"file": "The file is empty."})
        filename = _safe_filename(upload.filename or "attachment")
        content_type = upload.content_type or "application/octet-stream"
    expires = utcnow() + timedelta(seconds=settings.upload_token_ttl)
    async with transaction(relay_of(request).sessions) as session:
        attachment, token = await add_upload(
            session,
            partner.id,
            filename=filename,
            content_type=content_type,
            data=data,
            expires_at=expires,
        )
    result = UploadResult(
        resource_token=token,
        filename=attachment.filename,
        content_type=attachment.content_type,
        size=attachment.size,
        expires_at=expires,
    )
    return JSONResponse(result.dump(), status_code=201)


def _safe_filename(name: str) -> str:
    name = header_text(name, 200).replace("\\", "/").rsplit("/", 1)[-1].lstrip(".")
    return name or "attachment"


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
    ticket_id = await relay.tickets.open_ticket(
        partner,
        trip,
        NewTicket(
            subject=body.subject,
            comment=body.comment,
            contact_email=body.contact_email,
            attachment_tokens=body.attachments,
            category=body.category,
            priority=body.priority,
        ),
    )
    detail = await _detail(request, partner, ticket_id)
    return JSONResponse(
        detail.dump(), status_code=201, headers={"Location": f"/v1/support/tickets/{ticket_id}"}
    )


async def create_by_trip_uuid(request: Request) -> Response:
    partner = await current_partner(request)
    assert partner.id is not None
    trip_id = str_param(request, "tripId", "trip", max_length=36)
    async with relay_of(request).sessions() as session:
        trip = await trip_by_uuid(session, partner.id, trip_id)
    return await _open(request, partner, trip)


async def create_by_partner_trip(request: Request) -> Response:
    partner = await current_partner(request)
    assert partner.id is not None
    partner_trip_id = str_param(request, "partnerTripId", "trip")
    async with relay_of(request).sessions() as session:
        trip = await trip_by_partner_id(session, partner.id, partner_trip_id)
    return await _open(request, partner, trip)


def _public(ticket: Ticket, trip: Trip) -> TicketPublic:
    return TicketPublic(**ticket.model_dump(), partner_trip_id=trip.partner_trip_id)


async def _detail(request: Request, partner: Partner, ticket_id: int) -> TicketDetail:
    assert partner.id is not None
    async with relay_of(request).sessions() as session:
        ticket = await ticket_for_partner(session, partner.id, ticket_id)
        if ticket is None:
            raise NotFound("ticket")
        trip = await session.get(Trip, ticket.trip_id)
        fleet = await session.get(Fleet, ticket.fleet_id)
        assert trip is not None and fleet is not None
        messages = await conversation(session, ticket_id)
        files = await ticket_attachments(session, ticket_id)
        events = await events_of(session, ticket_id)
    files_by_message: dict[int, list[str]] = {}
    for file in files:
        if file.message_id is not None:
            files_by_message.setdefault(file.message_id, []).append(file.id)
    return TicketDetail(
        **_public(ticket, trip).model_dump(),
        fleet_name=fleet.name,
        conversation=[
            MessagePublic(
                id=m.id or 0,
                author="fleet" if m.author_side == "fleet" else "partner",
                author_name=m.author_name,
                via=m.via,
                body=m.body,
                internal=m.internal,
                created_at=m.created_at,
                attachments=files_by_message.get(m.id or 0, []),
            )
            for m in messages
        ],
        attachments=[AttachmentPublic.model_validate(f) for f in files],
        events=[EventPublic.model_validate(e) for e in events],
    )


async def get_ticket(request: Request) -> Response:
    partner = await current_partner(request)
    ticket_id = int_param(request, "ticketId", "ticket")
    return JSONResponse((await _detail(request, partner, ticket_id)).dump())


async def update_ticket(request: Request) -> Response:
    partner = await current_partner(request)
    ticket_id = int_param(request, "ticketId", "ticket")
    body = await read_json(request, TicketUpdate)
    if body.status is None and body.priority is None and body.category is None:
        raise InvalidInput({"body": "Send at least one of status, priority, category."})
    changes = TicketChanges(status=body.status, priority=body.priority, category=body.category)
    await relay_of(request).tickets.update_ticket(partner, ticket_id, changes)
    return JSONResponse((await _detail(request, partner, ticket_id)).dump())


async def add_message(request: Request) -> Response:
    partner = await current_partner(request)
    ticket_id = int_param(request, "ticketId", "ticket")
    relay = relay_of(request)
    body = await read_json(request, MessageCreate)
    _check_text_limits(relay.settings, body.comment, body.attachments)
    new = NewMessage(
        comment=body.comment, attachment_tokens=body.attachments, internal=body.internal
    )
    message_id = await relay.tickets.add_message(partner, ticket_id, new)
    detail = await _detail(request, partner, ticket_id)
    [message] = [m for m in detail.conversation if m.id == message_id]
    location = f"/v1/support/tickets/{ticket_id}"
    return JSONResponse(message.dump(), status_code=201, headers={"Location": location})


def _encode_cursor(cursor: tuple[datetime, int]) -> str:
    raw = f"{cursor[0].isoformat()}|{cursor[1]}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(value: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        stamp, _, ident = raw.partition("|")
        when = datetime.fromisoformat(stamp)
        last_id = int(ident)
        if when.tzinfo is None or not 0 < last_id < 2**63:
            raise ValueError
        return when.astimezone(UTC), last_id
    except (binascii.Error, ValueError, OverflowError, UnicodeDecodeError):
        raise InvalidInput({"cursor": "Not a cursor this API returned."}) from None


async def list_ticket_history(request: Request) -> Response:
    partner = await current_partner(request)
    assert partner.id is not None
    params = request.query_params
    try:
        limit = int(params.get("limit", "50"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 200:
        raise InvalidInput({"limit": "Must be a whole number from 1 to 200."})
    status = params.get("status")
    if status is not None and status not in STATUSES:
        raise InvalidInput({"status": "Must be one of: open, processing, closed."})
    after = _decode_cursor(params["cursor"]) if params.get("cursor") else None
    async with relay_of(request).sessions() as session:
        page = await list_tickets(session, partner.id, limit=limit, after=after, status=status)
        trips = await trips_by_id(session, {t.trip_id for t in page.tickets})
    tickets = [_public(ticket, trips[ticket.trip_id]) for ticket in page.tickets]
    cursor = _encode_cursor(page.next_cursor) if page.next_cursor else None
    return JSONResponse(TicketList(tickets=tickets, next_cursor=cursor).dump())


routes = [
    Route("/v1/support/upload-attachment", upload_attachment, methods=["POST"]),
    Route("/v1/support/trips/{tripId}/tickets", create_by_trip_uuid, methods=["POST"]),
    Route(
        "/v1/support/demand/trips/{partnerTripId}/tickets", create_by_partner_trip, methods=["POST"]
    ),
    Route("/v1/support/tickets", list_ticket_history, methods=["GET"]),
    Route("/v1/support/tickets/{ticketId}", get_ticket, methods=["GET"]),
    Route("/v1/support/tickets/{ticketId}", update_ticket, methods=["PATCH"]),
    Route("/v1/support/tickets/{ticketId}/messages", add_message, methods=["POST"]),
]

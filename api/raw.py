"""`GET /v1/support/tickets/{id}/messages/{id}/raw`: a received email, for its ticket's owner."""

from __future__ import annotations

import asyncio

from sqlmodel import select
from starlette.requests import Request
from starlette.responses import Response

from api.attachments import download
from api.auth import current_partner, relay_of
from api.bodies import int_param
from api.contract import ApiRoute, Contract
from relay.errors import NotFound
from relay.raw_view import masked_raw
from storage.models import Message, Ticket
from storage.tickets import blob_data


async def download_raw(request: Request) -> Response:
    partner = await current_partner(request)
    ticket_id = int_param(request, "ticketId", "ticket")
    message_id = int_param(request, "messageId", "message")
    relay = relay_of(request)
    # Owner in the WHERE clause: another partner's message and a missing one look the same.
    query = (
        select(Message.raw_blob_id)
        .join(Ticket, Ticket.id == Message.ticket_id)  # type: ignore[arg-type]
        .where(
            Message.id == message_id,
            Message.ticket_id == ticket_id,
            Ticket.partner_id == partner.id,
        )
    )
    async with relay.reads() as session:
        blob_id = (await session.exec(query)).first()
        if blob_id is None:  # no such message, not this partner's, or not an email
            raise NotFound("message")
        raw = await blob_data(session, blob_id)
    # Re-serialising a large message is CPU work: keep it off the event loop.
    data = await asyncio.to_thread(masked_raw, raw, relay.settings.domain)
    return download(data, "message/rfc822", f"message-{message_id}.eml")


routes = [
    ApiRoute(
        "/v1/support/tickets/{ticketId}/messages/{messageId}/raw",
        download_raw,
        "GET",
        Contract(
            "Download a received email as MIME, with every outside address redacted",
            tag="tickets",
            binary=True,
            description=(
                "For messages with `hasRaw`. The message as received, re-serialised: trace"
                " headers (Received, Return-Path, DKIM-Signature…) are dropped and every"
                " address outside the relay's domain, in headers and text parts, reads"
                " `redacted@redacted.invalid`. Attachments are byte for byte."
            ),
        ),
    ),
]

"""`POST /v1/support/tickets/{id}/messages/{id}/release`: forward held or quarantined mail."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth import current_partner, relay_of
from api.bodies import int_param
from api.contract import ApiRoute, Contract
from api.schemas import MessagePublic
from api.views import message_of_ticket
from relay.release import release_message


async def release(request: Request) -> Response:
    partner = await current_partner(request)
    assert partner.id is not None
    partner_id = partner.id
    ticket_id = int_param(request, "ticketId", "ticket")
    message_id = int_param(request, "messageId", "message")
    relay = relay_of(request)
    shown: list[MessagePublic] = []

    async def answer(session: AsyncSession) -> None:
        shown.append(await message_of_ticket(session, partner_id, ticket_id, message_id))

    await release_message(
        relay.sessions,
        relay.mailer,
        relay.worker.notify,
        partner_id=partner_id,
        ticket_id=ticket_id,
        message_id=message_id,
        within=answer,
    )
    return JSONResponse(shown[0].dump())


routes = [
    ApiRoute(
        "/v1/support/tickets/{ticketId}/messages/{messageId}/release",
        release,
        "POST",
        Contract(
            "Forward a held or quarantined email after all",
            tag="tickets",
            ok={200: MessagePublic},
            errors=(409,),
            description=(
                "For messages with `disposition` `held` (a suspected mail loop) or"
                " `quarantined` (failed SPF/DKIM/DMARC): the message is forwarded to the other"
                " side once, its disposition becomes `forwarded` and the ticket records"
                " `message.released`. Any other message, or a second release, is a 409."
            ),
        ),
    ),
]

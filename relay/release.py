"""The partner releases held or quarantined mail: it is forwarded after all, once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlmodel.ext.asyncio.session import AsyncSession

from relay.dispositions import FORWARDED, RELEASABLE
from relay.errors import Conflict, NotFound
from relay.forwarding import forward_email, stored_file
from relay.lifecycle import CLOSED
from relay.outgoing import Mailer, load_bundle
from storage.db import SessionFactory, transaction
from storage.models import Message
from storage.tickets import record_event, ticket_attachments, ticket_for_partner, touch

Within = Callable[[AsyncSession], Awaitable[None]]


async def release_message(
    sessions: SessionFactory,
    mailer: Mailer,
    notify: Callable[[], None],
    *,
    partner_id: int,
    ticket_id: int,
    message_id: int,
    within: Within | None = None,
) -> None:
    """Forward a held or quarantined email of the partner's ticket; 404 if it is not theirs,
    409 if it is not held or quarantined (a second release is a 409: nothing goes twice)."""
    async with transaction(sessions) as session:
        ticket = await ticket_for_partner(session, partner_id, ticket_id)
        # Locked (PostgreSQL): two releases at once must not both see it still held.
        message = await session.get(Message, message_id, with_for_update=True)
        if ticket is None or message is None or message.ticket_id != ticket_id:
            raise NotFound("message")
        if message.disposition not in RELEASABLE:
            raise Conflict(
                f"Only held or quarantined mail can be released; this message is"
                f" {message.disposition}."
            )
        if ticket.status == CLOSED:
            raise Conflict("Ticket is closed; reopen it first (status open).")
        bundle = await load_bundle(session, ticket)
        files = [
            await stored_file(session, a)
            for a in await ticket_attachments(session, ticket_id)
            if a.message_id == message_id
        ]
        was = message.disposition
        message.disposition = FORWARDED
        message.disposition_reason = f"released by the partner (was {was})"
        session.add(message)
        await record_event(
            session,
            ticket_id,
            "message.released",
            "partner",
            via="api",
            messageId=message_id,
            was=was,
        )
        touch(session, ticket)
        await forward_email(session, mailer, bundle, message, files)
        if within is not None:
            await within(session)
    notify()

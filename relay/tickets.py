"""Ticket services for the API side: open a ticket and mail the fleet, in one transaction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from relay.compose import FilePart
from relay.errors import InvalidInput, NotFound
from relay.masking import mask_addresses
from relay.outgoing import Mailer, load_bundle
from storage.db import SessionFactory, transaction
from storage.models import Message, Partner, Ticket, Trip
from storage.tickets import (
    FLEET,
    PARTNER,
    add_aliases,
    blob_data,
    claim_upload,
    claimable_uploads,
    record_event,
)


@dataclass(frozen=True)
class NewTicket:
    subject: str
    comment: str
    contact_email: str | None
    attachment_tokens: Sequence[str]
    category: str | None = None
    priority: str = "medium"


class TicketService:
    def __init__(
        self,
        sessions: SessionFactory,
        mailer: Mailer,
        *,
        default_contact_email: str | None,
        notify: Callable[[], None],
    ) -> None:
        self.sessions = sessions
        self.mailer = mailer
        self.default_contact_email = default_contact_email
        self.notify = notify

    async def open_ticket(self, partner: Partner, trip: Trip, new: NewTicket) -> int:
        """Create the ticket, its aliases, first message and the fleet's email; return its id."""
        assert partner.id is not None
        # The request's contact, else the partner's own; the relay-wide default is the last
        # resort. Never the other way round: a global address must not receive a partner's
        # mail when the partner has configured its own.
        contact = new.contact_email or partner.contact_email or self.default_contact_email
        if not contact:
            raise InvalidInput({"contactEmail": "No contact address is configured; send one."})
        async with transaction(self.sessions) as session:
            uploads = await claimable_uploads(session, partner.id, new.attachment_tokens)
            missing = [t for t in new.attachment_tokens if t not in uploads]
            if missing:
                raise NotFound("resource token")
            ticket = Ticket(
                partner_id=partner.id,
                trip_id=trip.id,
                fleet_id=trip.fleet_id,
                subject=new.subject,
                contact_email=contact,
                category=new.category,
                priority=new.priority,
            )
            session.add(ticket)
            await session.flush()
            assert ticket.id is not None
            await add_aliases(session, ticket.id)
            bundle = await load_bundle(session, ticket)
            fleet_msgid = self.mailer.new_message_id()
            comment = mask_addresses(
                new.comment, bundle.real_addresses(), self.mailer.address_of(bundle, FLEET)
            )
            message = Message(
                ticket_id=ticket.id,
                author_side=PARTNER,
                via="api",
                author_name=partner.name,
                body=comment,
                fleet_msgid=fleet_msgid,
            )
            session.add(message)
            await session.flush()
            assert message.id is not None
            files: list[FilePart] = []
            for token in new.attachment_tokens:
                upload = uploads[token]
                claim_upload(session, upload, ticket.id, message.id)
                files.append(
                    FilePart(
                        upload.filename,
                        upload.content_type,
                        await blob_data(session, upload.blob_id),
                    )
                )
            await self.mailer.queue(
                session,
                bundle,
                event="ticket_opened",
                to_side=FLEET,
                message=message,
                message_id=fleet_msgid,
                files=files,
                comment=comment,
                attachments=files,
            )
            record_event(session, ticket.id, "ticket.created", "partner", via="api")
        self.notify()
        return ticket.id

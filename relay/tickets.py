"""Ticket services for the API side: open a ticket and mail the fleet, in one transaction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlmodel.ext.asyncio.session import AsyncSession

from relay.compose import FilePart
from relay.errors import Conflict, InvalidInput, NotFound
from relay.lifecycle import CLOSED, check_transition
from relay.masking import mask_addresses
from relay.outgoing import Mailer, TicketBundle, load_bundle
from relay.threads import threading_for
from storage.db import SessionFactory, transaction
from storage.models import Attachment, Message, Partner, Ticket, Trip
from storage.tickets import (
    FLEET,
    PARTNER,
    add_aliases,
    blob_data,
    claim_upload,
    claimable_uploads,
    record_event,
    ticket_for_partner,
    touch,
)
from storage.types import utcnow


@dataclass(frozen=True)
class NewTicket:
    subject: str
    comment: str
    contact_email: str | None
    attachment_tokens: Sequence[str]
    category: str | None = None
    priority: str = "medium"


@dataclass(frozen=True)
class NewMessage:
    comment: str
    attachment_tokens: Sequence[str] = ()
    internal: bool = False


@dataclass(frozen=True)
class TicketChanges:
    status: str | None = None
    priority: str | None = None
    category: str | None = None


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
            uploads = await _uploads_or_404(session, partner.id, new.attachment_tokens)
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
            message, files = await self._partner_message(
                session, bundle, new.comment, uploads, new.attachment_tokens, internal=False
            )
            assert message.fleet_msgid is not None
            await self.mailer.queue(
                session,
                bundle,
                event="ticket_opened",
                to_side=FLEET,
                message=message,
                message_id=message.fleet_msgid,
                files=files,
                comment=message.body,
                attachments=files,
            )
            record_event(session, ticket.id, "ticket.created", "partner", via="api")
        self.notify()
        return ticket.id

    async def add_message(self, partner: Partner, ticket_id: int, new: NewMessage) -> int:
        """A partner message (emailed to the fleet) or internal note (kept, never sent)."""
        assert partner.id is not None
        async with transaction(self.sessions) as session:
            ticket = await ticket_for_partner(session, partner.id, ticket_id)
            if ticket is None:
                raise NotFound("ticket")
            if ticket.status == CLOSED and not new.internal:
                raise Conflict("Ticket is closed; reopen it first (status open).")
            uploads = await _uploads_or_404(session, partner.id, new.attachment_tokens)
            bundle = await load_bundle(session, ticket)
            message, files = await self._partner_message(
                session, bundle, new.comment, uploads, new.attachment_tokens, internal=new.internal
            )
            assert message.id is not None
            kind = "note.added" if new.internal else "message.added"
            record_event(session, ticket_id, kind, "partner", via="api", messageId=message.id)
            touch(session, ticket)
            if message.fleet_msgid is not None:
                threading = await threading_for(session, ticket_id, FLEET, exclude=message.id)
                await self.mailer.queue(
                    session,
                    bundle,
                    event="reply",
                    to_side=FLEET,
                    message=message,
                    message_id=message.fleet_msgid,
                    threading=threading,
                    files=files,
                    body=message.body,
                    author_name=partner.name,
                )
        if not new.internal:
            self.notify()
        return message.id

    async def _partner_message(
        self,
        session: AsyncSession,
        bundle: TicketBundle,
        comment: str,
        uploads: dict[str, Attachment],
        tokens: Sequence[str],
        *,
        internal: bool,
    ) -> tuple[Message, list[FilePart]]:
        """Store a partner's API message with its uploads; the body is masked for the fleet."""
        ticket_id = bundle.ticket.id
        assert ticket_id is not None
        message = Message(
            ticket_id=ticket_id,
            author_side=PARTNER,
            via="api",
            author_name=bundle.partner.name,
            body=mask_addresses(
                comment, bundle.real_addresses(), self.mailer.address_of(bundle, FLEET)
            ),
            internal=internal,
            # A note never leaves the relay, so the fleet never knows it by any ID.
            fleet_msgid=None if internal else self.mailer.new_message_id(),
        )
        session.add(message)
        await session.flush()
        assert message.id is not None
        files = await _claim_all(session, uploads, tokens, ticket_id, message.id)
        return message, files

    async def update_ticket(self, partner: Partner, ticket_id: int, changes: TicketChanges) -> None:
        """Apply status/priority/category changes, each recorded as an event with who and when."""
        assert partner.id is not None
        tell_fleet: str | None = None
        async with transaction(self.sessions) as session:
            ticket = await ticket_for_partner(session, partner.id, ticket_id)
            if ticket is None:
                raise NotFound("ticket")
            if changes.status is not None:
                check_transition(ticket.status, changes.status)
                record_event(
                    session,
                    ticket_id,
                    "ticket.status_changed",
                    "partner",
                    **{"from": ticket.status, "to": changes.status},
                )
                if changes.status == CLOSED:
                    tell_fleet = "closed"
                    ticket.closed_at = utcnow()
                elif ticket.status == CLOSED:
                    tell_fleet = "reopened"
                    ticket.closed_at = None
                ticket.status = changes.status
            for field in ("priority", "category"):
                value = getattr(changes, field)
                if value is not None and value != getattr(ticket, field):
                    record_event(
                        session,
                        ticket_id,
                        f"ticket.{field}_changed",
                        "partner",
                        **{"from": getattr(ticket, field), "to": value},
                    )
                    setattr(ticket, field, value)
            touch(session, ticket)
            if tell_fleet is not None:
                await self._tell_fleet(session, ticket, partner, tell_fleet)
        if tell_fleet is not None:
            self.notify()

    async def _tell_fleet(
        self, session: AsyncSession, ticket: Ticket, partner: Partner, change: str
    ) -> None:
        assert ticket.id is not None
        bundle = await load_bundle(session, ticket)
        # The notice is a conversation entry too, so the fleet's reply to it threads.
        notice = Message(
            ticket_id=ticket.id,
            author_side=PARTNER,
            via="api",
            author_name=partner.name,
            body=f"{partner.name} {change} this ticket.",
            fleet_msgid=self.mailer.new_message_id(),
        )
        session.add(notice)
        await session.flush()
        assert notice.fleet_msgid is not None
        threading = await threading_for(session, ticket.id, FLEET, exclude=notice.id)
        await self.mailer.queue(
            session,
            bundle,
            event="status_changed",
            to_side=FLEET,
            message=notice,
            message_id=notice.fleet_msgid,
            threading=threading,
            change=change,
        )


async def _uploads_or_404(
    session: AsyncSession, partner_id: int, tokens: Sequence[str]
) -> dict[str, Attachment]:
    """Every token must be this partner's, unused and unexpired; any other is a 404."""
    uploads = await claimable_uploads(session, partner_id, tokens)
    if any(token not in uploads for token in tokens):
        raise NotFound("resource token")
    return uploads


async def _claim_all(
    session: AsyncSession,
    uploads: dict[str, Attachment],
    tokens: Sequence[str],
    ticket_id: int,
    message_id: int,
) -> list[FilePart]:
    """Attach the uploads to the message (using up their tokens) and return them as parts."""
    files: list[FilePart] = []
    for token in tokens:
        upload = uploads[token]
        claim_upload(session, upload, ticket_id, message_id)
        data = await blob_data(session, upload.blob_id)
        files.append(FilePart(upload.filename, upload.content_type, data))
    return files

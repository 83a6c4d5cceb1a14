"""Ticket services for the API side: open a ticket and mail the fleet, in one transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from relay.compose import FilePart
from relay.errors import Conflict, InvalidInput, NotFound, OpenTicketLimit
from relay.forwarding import stored_file
from relay.lifecycle import CLOSED, check_transition
from relay.masking import mask_addresses
from relay.outgoing import Mailer, TicketBundle, load_bundle
from relay.threads import threading_for
from storage.catalog import set_ticket_tags, tags_of, usable_category, usable_tags
from storage.db import transaction
from storage.group_commit import GroupCommit
from storage.history import open_ticket_counts, session_ticket
from storage.models import Attachment, Message, Partner, Ticket, TicketEvent, Trip
from storage.rows import insert_row
from storage.tickets import (
    FLEET,
    PARTNER,
    add_aliases,
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
    category_id: int | None = None
    priority: str = "medium"
    tag_ids: Sequence[int] = ()
    callback_phone: str | None = None


@dataclass(frozen=True)
class NewMessage:
    comment: str
    attachment_tokens: Sequence[str] = ()
    internal: bool = False


@dataclass(frozen=True)
class TicketChanges:
    """What a PATCH asks for; a field left out is None, `clear_category` removes it."""

    status: str | None = None
    priority: str | None = None
    category_id: int | None = None
    clear_category: bool = False
    tag_ids: Sequence[int] | None = None
    clear_attention: bool = False


@dataclass(frozen=True)
class OpenLimits:
    """How many tickets a partner may have open (not closed) at once, per trip and overall."""

    per_trip: int = 5
    per_partner: int = 10_000


@dataclass(frozen=True)
class OpenedTicket:
    """Everything opening a ticket wrote, as written: the 201 is built from it instead of
    reading the ticket back (six queries, a third of a creation's CPU)."""

    bundle: TicketBundle
    message: Message
    # The uploads the first message claimed, as now stored.
    attachments: list[Attachment]
    events: list[TicketEvent]
    category_title: str | None
    tag_ids: list[int]

    @property
    def ticket(self) -> Ticket:
        return self.bundle.ticket


# Called inside the creating transaction with the new row's id, so the caller can write
# what must commit with it (the idempotency record and the exact response it replays).
Within = Callable[[AsyncSession, int], Awaitable[None]]
OpenedWithin = Callable[[AsyncSession, OpenedTicket], Awaitable[None]]
# The same for an order session, told whether the ticket was created or already open.
SessionWithin = Callable[[AsyncSession, int, bool], Awaitable[None]]


class TicketService:
    def __init__(
        self,
        commits: GroupCommit,
        mailer: Mailer,
        *,
        default_contact_email: str | None,
        notify: Callable[[], None],
        limits: OpenLimits | None = None,
    ) -> None:
        # New tickets (on a trip or an order) arriving together share a transaction
        # (storage.group_commit); the other changes, rarer, take one each.
        self.commits = commits
        self.sessions = commits.sessions
        self.mailer = mailer
        self.default_contact_email = default_contact_email
        self.notify = notify
        self.limits = limits or OpenLimits()

    async def open_ticket(
        self, partner: Partner, trip: Trip, new: NewTicket, within: OpenedWithin | None = None
    ) -> int:
        """Create the ticket, its aliases, first message and the fleet's email; return its id."""
        contact = self._contact(partner, new)

        async def work(session: AsyncSession) -> OpenedTicket:
            title = await _check_classification(session, new.category_id, new.tag_ids)
            await self._check_open_limits(session, partner, trip.id)
            opened = await self._create(session, partner, trip, new, contact, title)
            if within is not None:
                await within(session, opened)
            return opened

        opened = await self.commits.run(work)
        self.notify()
        assert opened.ticket.id is not None
        return opened.ticket.id

    async def open_session(
        self, partner: Partner, trip: Trip, new: NewTicket, within: SessionWithin
    ) -> tuple[int, bool]:
        """The trip's open ticket, or a new one: (ticket id, created). Decided under the
        partner's row lock, so concurrent requests for one order open one ticket."""
        contact = self._contact(partner, new)

        async def work(session: AsyncSession) -> tuple[int, bool]:
            assert partner.id is not None
            await _lock_partner(session, partner.id)
            current = await session_ticket(session, partner.id, trip.id)
            if current is not None and current.status != CLOSED:
                assert current.id is not None
                await within(session, current.id, False)
                return current.id, False
            await self._check_open_limits(session, partner, trip.id, locked=True)
            ticket_id = (await self._create(session, partner, trip, new, contact)).ticket.id
            assert ticket_id is not None
            await within(session, ticket_id, True)
            return ticket_id, True

        ticket_id, created = await self.commits.run(work)
        if created:
            self.notify()
        return ticket_id, created

    def _contact(self, partner: Partner, new: NewTicket) -> str:
        # The request's contact, else the partner's own; the relay-wide default is the last
        # resort. Never the other way round: a global address must not receive a partner's
        # mail when the partner has configured its own.
        contact = new.contact_email or partner.contact_email or self.default_contact_email
        if not contact:
            raise InvalidInput({"contactEmail": "No contact address is configured; send one."})
        return contact

    async def _create(
        self,
        session: AsyncSession,
        partner: Partner,
        trip: Trip,
        new: NewTicket,
        contact: str,
        category_title: str | None = None,
    ) -> OpenedTicket:
        assert partner.id is not None
        uploads = await _uploads_or_404(session, partner.id, new.attachment_tokens)
        # A Core INSERT (storage.rows): the ticket is not changed again in this transaction.
        ticket = await insert_row(
            session,
            Ticket,
            partner_id=partner.id,
            trip_id=trip.id,
            fleet_id=trip.fleet_id,
            subject=new.subject,
            contact_email=contact,
            category_id=new.category_id,
            priority=new.priority,
            callback_phone=new.callback_phone,
        )
        assert ticket.id is not None
        await add_aliases(session, ticket.id)
        await set_ticket_tags(session, ticket.id, [], new.tag_ids)
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
        created = await record_event(session, ticket.id, "ticket.created", "partner", via="api")
        claimed = [uploads[token] for token in dict.fromkeys(new.attachment_tokens)]
        return OpenedTicket(
            bundle, message, claimed, [created], category_title, sorted(set(new.tag_ids))
        )

    async def _check_open_limits(
        self, session: AsyncSession, partner: Partner, trip_id: str, *, locked: bool = False
    ) -> None:
        """Refuse a ticket that would exceed the open-ticket limits.

        The partner row is locked first (FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE
        already serialises writers), so two concurrent requests cannot both pass the count.
        """
        assert partner.id is not None
        if not locked:
            await _lock_partner(session, partner.id)
        on_trip, overall = await open_ticket_counts(session, partner.id, trip_id)
        if on_trip >= self.limits.per_trip:
            raise OpenTicketLimit("trip", self.limits.per_trip)
        if overall >= self.limits.per_partner:
            raise OpenTicketLimit("partner", self.limits.per_partner)

    async def add_message(
        self, partner: Partner, ticket_id: int, new: NewMessage, within: Within | None = None
    ) -> int:
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
            await record_event(session, ticket_id, kind, "partner", via="api", messageId=message.id)
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
                    quoted="",  # written through the API: nothing is quoted
                    html=None,
                    author_name=partner.name,
                )
            if within is not None:
                await within(session, message.id)
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
        message = await insert_row(
            session,
            Message,
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
        assert message.id is not None
        files = await _claim_all(session, uploads, tokens, ticket_id, message.id)
        return message, files

    async def update_ticket(self, partner: Partner, ticket_id: int, changes: TicketChanges) -> None:
        """Apply status/priority/category/tag changes, each recorded as an event with who and
        when; the fleet is emailed when the partner closes or reopens the ticket."""
        assert partner.id is not None
        tell_fleet: str | None = None
        async with transaction(self.sessions) as session:
            ticket = await ticket_for_partner(session, partner.id, ticket_id)
            if ticket is None:
                raise NotFound("ticket")
            current_tags: list[int] = []
            if changes.tag_ids is not None:  # the only change that needs the current tags
                current_tags = (await tags_of(session, [ticket_id]))[ticket_id]
            # What the ticket already carries may be sent back even if archived since.
            new_category = changes.category_id
            if new_category == ticket.category_id:
                new_category = None
            new_tags = [t for t in changes.tag_ids or () if t not in current_tags]
            await _check_classification(session, new_category, new_tags, changes.tag_ids or ())
            changed = False
            if changes.status is not None:
                check_transition(ticket.status, changes.status)
                if ticket.status == CLOSED:  # a reopened ticket counts against the limits again
                    await self._check_open_limits(session, partner, ticket.trip_id)
                tell_fleet = await self._change_status(session, ticket, changes.status, "partner")
                changed = True
            if changes.priority is not None:
                changed |= await self._change(
                    session, ticket, "priority", changes.priority, "priority"
                )
            if changes.clear_category or changes.category_id is not None:
                value = changes.category_id
                changed |= await self._change(session, ticket, "category_id", value, "category")
            if changes.tag_ids is not None:
                changed |= await _retag(session, ticket_id, current_tags, changes.tag_ids)
            if changes.clear_attention:
                changed |= await self._change(session, ticket, "attention", None, "attention")
            if changed:  # a PATCH that changes nothing must not reorder the history
                touch(session, ticket)
            if tell_fleet is not None:
                text = f"{partner.name} {tell_fleet} this ticket."
                await self._tell_fleet(
                    session, ticket, partner, "status_changed", text, change=tell_fleet
                )
        if tell_fleet is not None:
            self.notify()

    async def set_callback_phone(self, partner: Partner, ticket_id: int, phone: str | None) -> None:
        """Change who the fleet should call back; the fleet is emailed the new number."""
        assert partner.id is not None
        async with transaction(self.sessions) as session:
            ticket = await ticket_for_partner(session, partner.id, ticket_id)
            if ticket is None:
                raise NotFound("ticket")
            if ticket.callback_phone == phone:
                return
            await self._change(session, ticket, "callback_phone", phone, "callback_phone")
            touch(session, ticket)
            if ticket.status != CLOSED:
                text = (
                    f"Please call back on {phone}." if phone else "The callback number was removed."
                )
                await self._tell_fleet(session, ticket, partner, "callback_changed", text)
        self.notify()

    async def set_agent(
        self, partner: Partner, ticket_id: int, name: str | None, phone: str | None
    ) -> None:
        """Name the fleet-side agent (source "partner": fleet replies no longer overwrite it),
        or with name None remove it (the fleet's next reply names one again)."""
        assert partner.id is not None
        async with transaction(self.sessions) as session:
            ticket = await ticket_for_partner(session, partner.id, ticket_id)
            if ticket is None:
                raise NotFound("ticket")
            await record_event(
                session,
                ticket_id,
                "ticket.agent_changed",
                "partner",
                **{"from": ticket.agent_name, "to": name},
            )
            ticket.agent_name = name
            ticket.agent_phone = phone if name else None
            ticket.agent_source = PARTNER if name else None
            ticket.agent_updated_at = utcnow()
            touch(session, ticket)

    @staticmethod
    async def _change_status(
        session: AsyncSession, ticket: Ticket, status: str, actor: str
    ) -> str | None:
        """Set the status and record it; return "closed"/"reopened" when the fleet must hear."""
        assert ticket.id is not None
        await record_event(
            session,
            ticket.id,
            "ticket.status_changed",
            actor,
            **{"from": ticket.status, "to": status},
        )
        change = None
        if status == CLOSED:
            change = "closed"
            ticket.closed_at = utcnow()
        elif ticket.status == CLOSED:
            change = "reopened"
            ticket.closed_at = None
        ticket.status = status
        return change

    @staticmethod
    async def _change(
        session: AsyncSession, ticket: Ticket, attr: str, value: object, label: str
    ) -> bool:
        """Set one plain attribute; an event `ticket.<label>_changed` records a real change."""
        current = getattr(ticket, attr)
        if value == current:
            return False
        assert ticket.id is not None
        detail = {"from": current, "to": value}
        await record_event(session, ticket.id, f"ticket.{label}_changed", "partner", **detail)
        setattr(ticket, attr, value)
        return True

    async def _tell_fleet(
        self,
        session: AsyncSession,
        ticket: Ticket,
        partner: Partner,
        event: str,
        text: str,
        **context: Any,
    ) -> None:
        """Email the fleet a notice about a change the partner made."""
        assert ticket.id is not None
        bundle = await load_bundle(session, ticket)
        # The notice is a conversation entry too, so the fleet's reply to it threads.
        notice = Message(
            ticket_id=ticket.id,
            author_side=PARTNER,
            via="api",
            author_name=partner.name,
            body=text,
            fleet_msgid=self.mailer.new_message_id(),
        )
        session.add(notice)
        await session.flush()
        assert notice.fleet_msgid is not None
        threading = await threading_for(session, ticket.id, FLEET, exclude=notice.id)
        await self.mailer.queue(
            session,
            bundle,
            event=event,
            to_side=FLEET,
            message=notice,
            message_id=notice.fleet_msgid,
            threading=threading,
            **context,
        )


async def _lock_partner(session: AsyncSession, partner_id: int) -> None:
    bind = session.get_bind()
    if bind.dialect.name == "sqlite":  # BEGIN IMMEDIATE holds the only write lock already
        return
    await session.exec(select(Partner.id).where(Partner.id == partner_id).with_for_update())


async def _check_classification(
    session: AsyncSession,
    category_id: int | None,
    tag_ids: Sequence[int],
    sent_tags: Sequence[int] | None = None,
) -> str | None:
    """A category or tags being newly given must exist and not be archived; each miss is its
    own field error, named by its index in the tags the client sent (`sent_tags`). Returns
    the category's name."""
    errors: dict[str, str] = {}
    category = None if category_id is None else await usable_category(session, category_id)
    if category_id is not None and category is None:
        errors["category"] = f"No category with id {category_id}; see GET /v1/support/categories."
    known = await usable_tags(session, tag_ids)
    checked = set(tag_ids)
    for index, tag_id in enumerate(sent_tags if sent_tags is not None else tag_ids):
        if tag_id in checked and tag_id not in known:
            errors[f"tags[{index}]"] = f"No tag with id {tag_id}; see GET /v1/support/tags."
    if errors:
        raise InvalidInput(errors)
    return None if category is None else category.name


async def _retag(
    session: AsyncSession, ticket_id: int, current: Sequence[int], wanted: Sequence[int]
) -> bool:
    added = sorted(set(wanted) - set(current))
    removed = sorted(set(current) - set(wanted))
    if not (added or removed):
        return False
    await set_ticket_tags(session, ticket_id, current, wanted)
    await record_event(
        session, ticket_id, "ticket.tags_changed", "partner", added=added, removed=removed
    )
    return True


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
        files.append(await stored_file(session, upload))
    return files

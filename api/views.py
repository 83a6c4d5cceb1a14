"""Storage rows → wire shapes, reading through the caller's session (so a response can be
built inside the transaction that created what it shows)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel.ext.asyncio.session import AsyncSession

from api.schemas import (
    AgentPublic,
    AttachmentPublic,
    EventPublic,
    MessageAuthentication,
    MessageFlags,
    MessagePublic,
    OrderSession,
    SideReachability,
    TicketDetail,
    TicketPublic,
    TicketReachability,
)
from relay.errors import NotFound
from relay.tickets import OpenedTicket
from storage.bounces import suppressions_for
from storage.catalog import tags_of
from storage.history import TicketPage
from storage.models import Attachment, Message, Ticket, TicketEvent
from storage.tickets import (
    conversation,
    events_of,
    message_attachment_ids,
    message_of_partner,
    ticket_attachments,
    ticket_heading,
)


def _public(
    ticket: Ticket, partner_trip_id: str, category_title: str | None, tag_ids: list[int]
) -> TicketPublic:
    assert ticket.id is not None
    return TicketPublic(
        id=ticket.id,
        trip_id=ticket.trip_id,
        partner_trip_id=partner_trip_id,
        subject=ticket.subject,
        status=ticket.status,
        category=ticket.category_id,
        category_title=category_title,
        priority=ticket.priority,
        tags=tag_ids,
        contact_email=ticket.contact_email,
        callback_phone=ticket.callback_phone,
        attention=ticket.attention,
        created_at=ticket.created_at,
        updated_at=ticket.updated_at,
    )


async def page_summaries(session: AsyncSession, page: TicketPage) -> list[TicketPublic]:
    """A history page as it shows: the search already read trip ids and category names, so
    only the tags are fetched, for the whole page at once."""
    tags = await tags_of(session, [t.id for t in page.tickets if t.id is not None])
    return [
        _public(
            t,
            page.partner_trip_ids[t.trip_id],
            page.category_names.get(t.category_id) if t.category_id is not None else None,
            tags.get(t.id or 0, []),
        )
        for t in page.tickets
    ]


async def ticket_detail(session: AsyncSession, partner_id: int, ticket_id: int) -> TicketDetail:
    heading = await ticket_heading(session, partner_id, ticket_id)
    if heading is None:
        raise NotFound("ticket")
    ticket = heading.ticket
    tags = await tags_of(session, [ticket_id])
    summary = _public(ticket, heading.partner_trip_id, heading.category_title, tags[ticket_id])
    messages = await conversation(session, ticket_id)
    files = await ticket_attachments(session, ticket_id)
    events = await events_of(session, ticket_id)
    reachability = await _reachability(session, heading.fleet.support_email, ticket.contact_email)
    return _detail(summary, heading.fleet.name, reachability, messages, files, events)


async def opened_detail(session: AsyncSession, opened: OpenedTicket) -> TicketDetail:
    """A ticket just opened, as `ticket_detail` would read it back in the same transaction,
    from what opening it wrote: only reachability is read."""
    ticket, fleet = opened.ticket, opened.bundle.fleet
    summary = _public(
        ticket, opened.bundle.trip.partner_trip_id, opened.category_title, opened.tag_ids
    )
    reachability = await _reachability(session, fleet.support_email, ticket.contact_email)
    # ticket_attachments' order: oldest upload first.
    files = sorted(opened.attachments, key=lambda f: (f.created_at, f.id))
    return _detail(summary, fleet.name, reachability, [opened.message], files, opened.events)


def _detail(
    summary: TicketPublic,
    fleet_name: str,
    reachability: TicketReachability,
    messages: Sequence[Message],
    files: Sequence[Attachment],
    events: Sequence[TicketEvent],
) -> TicketDetail:
    files_by_message: dict[int, list[str]] = {}
    for file in files:
        if file.message_id is not None:
            files_by_message.setdefault(file.message_id, []).append(file.id)
    return TicketDetail(
        **summary.model_dump(),
        fleet_name=fleet_name,
        reachability=reachability,
        conversation=[message_public(m, files_by_message.get(m.id or 0, [])) for m in messages],
        attachments=[AttachmentPublic.model_validate(f) for f in files],
        events=[EventPublic.model_validate(e) for e in events],
    )


async def message_of_ticket(
    session: AsyncSession, partner_id: int, ticket_id: int, message_id: int
) -> MessagePublic:
    """One entry of a ticket's conversation, exactly as the ticket detail shows it: the
    message and its files' ids, not the whole detail read for one entry."""
    message = await message_of_partner(session, partner_id, ticket_id, message_id)
    if message is None:
        raise NotFound("message")
    return message_public(message, await message_attachment_ids(session, message_id))


async def _reachability(
    session: AsyncSession, fleet_address: str, partner_address: str
) -> TicketReachability:
    suppressed = await suppressions_for(session, [fleet_address, partner_address])

    def side(address: str) -> SideReachability:
        row = suppressed.get(address.lower())
        if row is None:
            return SideReachability(reachable=True)
        return SideReachability(reachable=False, since=row.created_at, status=row.status)

    return TicketReachability(fleet=side(fleet_address), partner=side(partner_address))


def message_public(message: Message, attachment_ids: list[str]) -> MessagePublic:
    return MessagePublic(
        id=message.id or 0,
        author="fleet" if message.author_side == "fleet" else "partner",
        author_name=message.author_name,
        via=message.via,
        body=message.body,
        quoted=message.quoted,
        internal=message.internal,
        disposition=message.disposition,
        disposition_reason=message.disposition_reason,
        flags=MessageFlags.model_validate(message.flags or {}),
        authentication=(
            MessageAuthentication.model_validate(message.authentication)
            if message.authentication
            else None
        ),
        has_raw=message.raw_blob_id is not None,
        created_at=message.created_at,
        attachments=attachment_ids,
    )


def agent_of(ticket: Ticket) -> AgentPublic | None:
    if not ticket.agent_name or ticket.agent_source not in ("fleet", "partner"):
        return None
    return AgentPublic(
        name=ticket.agent_name,
        phone=ticket.agent_phone,
        source="fleet" if ticket.agent_source == "fleet" else "partner",
        updated_at=ticket.agent_updated_at,
    )


def order_session(order_id: str, ticket: Ticket) -> OrderSession:
    assert ticket.id is not None
    return OrderSession(
        order_id=order_id,
        callback_phone=ticket.callback_phone,
        status=ticket.status,
        ticket_id=ticket.id,
        agent=agent_of(ticket),
    )

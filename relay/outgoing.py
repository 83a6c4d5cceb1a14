"""Queue an email to one side of a ticket: render, mask, address from the right alias, enqueue."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from relay.addresses import alias_address
from relay.bounces import LEGACY_LOCAL_PART
from relay.compose import Envelope, FilePart, Threading, build_email, new_message_id
from relay.config import Settings
from relay.rendering import Renderer
from storage import outbox
from storage.models import Alias, Fleet, Message, OutboxItem, Partner, Ticket, Trip
from storage.parties import Parties, ticket_parties
from storage.tickets import FLEET, other_side


@dataclass(frozen=True)
class TicketBundle:
    """A ticket with everything needed to write to either side of it."""

    ticket: Ticket
    trip: Trip
    partner: Partner
    fleet: Fleet
    aliases: dict[str, Alias]

    @classmethod
    def of(cls, ticket: Ticket, parties: Parties) -> TicketBundle:
        return cls(ticket, parties.trip, parties.partner, parties.fleet, parties.aliases)

    def alias_for(self, writer: str) -> str:
        """The masked address that `writer` (a side) sends to, and receives from."""
        return self.aliases[writer].local_part

    def real_addresses(self) -> list[str]:
        """Every real address either side is known by; none may reach the other side."""
        found = [self.ticket.contact_email, self.partner.contact_email, self.fleet.support_email]
        found += [a for a in self.partner.allowed_senders if not a.startswith("@")]
        found += [a for a in self.fleet.allowed_senders if not a.startswith("@")]
        return found

    def recipient_address(self, side: str) -> str:
        return self.fleet.support_email if side == FLEET else self.ticket.contact_email

    def name_of(self, side: str) -> str:
        return self.fleet.name if side == FLEET else self.partner.name


async def load_bundle(session: AsyncSession, ticket: Ticket) -> TicketBundle:
    assert ticket.id is not None
    return TicketBundle.of(ticket, await ticket_parties(session, ticket))


class Mailer:
    """Turns ticket events into outbox rows. Never sends anything itself."""

    def __init__(self, settings: Settings, renderer: Renderer) -> None:
        self.settings = settings
        self.renderer = renderer
        # Names this relay instance in the NOTIFY of each row it queues (storage.outbox).
        self.origin = secrets.token_hex(8)

    @property
    def domain(self) -> str:
        return self.settings.domain

    def address_of(self, bundle: TicketBundle, writer: str) -> str:
        """The full alias address `writer` sends to on this ticket."""
        return alias_address(bundle.alias_for(writer), self.domain)

    def new_message_id(self) -> str:
        return new_message_id(self.domain)

    async def queue(
        self,
        session: AsyncSession,
        bundle: TicketBundle,
        *,
        event: str,
        to_side: str,
        message: Message,
        message_id: str,
        threading: Threading | None = None,
        files: list[FilePart] | None = None,
        **context: Any,
    ) -> OutboxItem:
        """Render `event` for `to_side` and enqueue it, from the alias that side writes to."""
        from_side = other_side(to_side)
        rendered = self.renderer.render(
            event,
            to_side,
            ticket=bundle.ticket,
            trip=bundle.trip,
            partner=bundle.partner,
            fleet=bundle.fleet,
            brand=self.settings.brand,
            **context,
        )
        sender = self.address_of(bundle, to_side)
        envelope = Envelope(
            from_name=f"{bundle.name_of(from_side)} via {self.settings.brand}",
            from_address=sender,
            to_address=bundle.recipient_address(to_side),
            to_name=bundle.name_of(to_side),
        )
        raw = build_email(
            envelope,
            rendered,
            message_id=message_id,
            domain=self.domain,
            threading=threading,
            files=files or [],
        )
        assert bundle.ticket.id is not None
        return await outbox.enqueue(
            session,
            ticket_id=bundle.ticket.id,
            message_id=message.id,
            recipient_side=to_side,
            mail_from=f"{LEGACY_LOCAL_PART}@{self.domain}",
            rcpt_to=envelope.to_address,
            raw=raw,
            lifetime=timedelta(seconds=self.settings.delivery_lifetime),
            origin=self.origin,
        )

"""Inbound mail in ordered steps: parse, resolve, authorize, dedupe, reopen, store, name the
agent, forward.

A step stops the flow by raising an `InboundRefused` (the sender gets its 5xx) or by
marking the context done (a duplicate: acknowledged, nothing stored twice). Every alias
of one SMTP transaction is processed in ONE database transaction; the caller answers 250
only after it commits.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from relay.addresses import parse_single_sender, sender_allowed
from relay.compose import FilePart
from relay.errors import MalformedMessage, SenderNotAllowed, UnknownAlias
from relay.lifecycle import CLOSED, OPEN, TicketClosedForReplies, may_reopen_by_mail
from relay.masking import mask_addresses
from relay.outgoing import Mailer, TicketBundle, load_bundle
from relay.parsing import ParsedMessage, parse_message
from relay.replies import S250_DUPLICATE, S250_OK
from relay.threads import threading_for
from storage.db import SessionFactory, transaction
from storage.models import Alias, Attachment, Message, Ticket
from storage.tickets import (
    FLEET,
    PARTNER,
    active_alias,
    duplicate_exists,
    other_side,
    record_event,
    store_blob,
    touch,
)
from storage.types import utcnow

log = logging.getLogger(__name__)


@dataclass
class IncomingMail:
    """One SMTP transaction's message, shared by its aliases: parsed once, stored once."""

    raw: bytes
    mail_from: str
    parsed: ParsedMessage
    raw_blob_id: str | None = None
    part_blob_ids: list[str] = field(default_factory=list)


@dataclass
class InboundContext:
    """What one recipient alias of one inbound message has accumulated so far."""

    session: AsyncSession
    mail: IncomingMail
    local_part: str
    alias: Alias | None = None
    bundle: TicketBundle | None = None
    sender: str | None = None
    dedup_key: str = ""
    message: Message | None = None
    files: list[FilePart] = field(default_factory=list)
    done: bool = False
    duplicate: bool = False

    @property
    def side(self) -> str:
        assert self.alias is not None
        return self.alias.side

    @property
    def ticket(self) -> Ticket:
        assert self.bundle is not None
        return self.bundle.ticket


Step = Callable[[InboundContext], Awaitable[None]]


class InboundPipeline:
    def __init__(
        self,
        sessions: SessionFactory,
        mailer: Mailer,
        notify: Callable[[], None],
        reopen_window: timedelta = timedelta(days=7),
    ) -> None:
        self.sessions = sessions
        self.mailer = mailer
        self.notify = notify
        self.reopen_window = reopen_window
        self.steps: list[Step] = [
            self.resolve,
            self.authorize,
            self.deduplicate,
            self.reopen_if_closed,
            self.store,
            self.name_agent,
            self.forward,
        ]

    async def process(self, raw: bytes, mail_from: str, local_parts: Sequence[str]) -> str:
        """Run every step for every alias; return the SMTP reply after the commit."""
        try:
            parsed = parse_message(raw)
        except Exception:
            log.exception("unparseable message refused")
            raise MalformedMessage() from None
        for attempt in (1, 2):
            try:
                contexts = await self._run(raw, mail_from, local_parts, parsed)
                break
            except IntegrityError:
                # A concurrent copy of the same message committed first; rerun to see it.
                if attempt == 2:
                    raise
        if any(not c.duplicate for c in contexts):
            self.notify()
            return S250_OK
        return S250_DUPLICATE

    async def _run(
        self, raw: bytes, mail_from: str, local_parts: Sequence[str], parsed: ParsedMessage
    ) -> list[InboundContext]:
        contexts: list[InboundContext] = []
        mail = IncomingMail(raw, mail_from, parsed)
        async with transaction(self.sessions) as session:
            for local_part in dict.fromkeys(local_parts):
                ctx = InboundContext(session, mail, local_part)
                for step in self.steps:
                    await step(ctx)
                    if ctx.done:
                        break
                contexts.append(ctx)
        return contexts

    async def resolve(self, ctx: InboundContext) -> None:
        ctx.alias = await active_alias(ctx.session, ctx.local_part)
        if ctx.alias is None:  # deactivated between RCPT and DATA
            raise UnknownAlias()
        ticket = await ctx.session.get(Ticket, ctx.alias.ticket_id)
        assert ticket is not None
        ctx.bundle = await load_bundle(ctx.session, ticket)

    async def authorize(self, ctx: InboundContext) -> None:
        if not ctx.mail.parsed.from_header:
            raise SenderNotAllowed("550 5.7.1 A From header with one address is required")
        sender = parse_single_sender(ctx.mail.parsed.from_header)
        if sender is None:
            raise SenderNotAllowed("550 5.7.1 The From header must name exactly one valid address")
        assert ctx.bundle is not None
        if ctx.side == FLEET:
            allowed = [ctx.bundle.fleet.support_email, *ctx.bundle.fleet.allowed_senders]
        else:
            partner = ctx.bundle.partner
            allowed = [ctx.ticket.contact_email, partner.contact_email, *partner.allowed_senders]
        if not sender_allowed(sender, allowed):
            raise SenderNotAllowed()
        ctx.sender = sender

    async def deduplicate(self, ctx: InboundContext) -> None:
        # Message-ID alone is forgeable; with the body's digest a copied ID suppresses
        # nothing but a byte-identical resend of the same message.
        basis = f"{ctx.mail.parsed.message_id or ''}\0{ctx.mail.parsed.body_digest}"
        ctx.dedup_key = hashlib.sha256(basis.encode()).hexdigest()
        assert ctx.alias is not None and ctx.alias.id is not None
        if await duplicate_exists(ctx.session, ctx.alias.id, ctx.dedup_key):
            ctx.duplicate = ctx.done = True

    async def reopen_if_closed(self, ctx: InboundContext) -> None:
        """A reply to a recently closed ticket reopens it; after the window it is refused."""
        ticket = ctx.ticket
        if ticket.status != CLOSED:
            return
        assert ticket.id is not None
        if not may_reopen_by_mail(ticket.closed_at, utcnow(), self.reopen_window):
            assert ticket.closed_at is not None
            raise TicketClosedForReplies(ticket.id, ticket.closed_at)
        record_event(
            ctx.session,
            ticket.id,
            "ticket.status_changed",
            ctx.side,
            via="email",
            **{"from": CLOSED, "to": OPEN},
        )
        ticket.status = OPEN
        ticket.closed_at = None

    async def store(self, ctx: InboundContext) -> None:
        assert ctx.bundle is not None and ctx.alias is not None
        ticket = ctx.ticket
        assert ticket.id is not None
        reader = other_side(ctx.side)
        reader_alias = self.mailer.address_of(ctx.bundle, reader)
        addresses = [*ctx.bundle.real_addresses(), ctx.sender or "", ctx.mail.mail_from]
        body = mask_addresses(ctx.mail.parsed.text, addresses, reader_alias)
        mail = ctx.mail
        if mail.raw_blob_id is None:
            # Several aliases of one transaction share the bytes: store them once.
            mail.raw_blob_id = (await store_blob(ctx.session, mail.raw)).id
            for part in mail.parsed.attachments:
                mail.part_blob_ids.append((await store_blob(ctx.session, part.data)).id)
        author_id = ctx.mail.parsed.message_id or self.mailer.new_message_id()
        reader_id = self.mailer.new_message_id()
        message = Message(
            ticket_id=ticket.id,
            author_side=ctx.side,
            via="email",
            author_name=ctx.bundle.name_of(ctx.side),
            sender_address=ctx.sender,
            body=body,
            alias_id=ctx.alias.id,
            dedup_key=ctx.dedup_key,
            raw_blob_id=mail.raw_blob_id,
            fleet_msgid=author_id if ctx.side == FLEET else reader_id,
            partner_msgid=reader_id if ctx.side == FLEET else author_id,
        )
        ctx.session.add(message)
        await ctx.session.flush()
        assert message.id is not None
        for part, blob_id in zip(mail.parsed.attachments, mail.part_blob_ids, strict=True):
            ctx.session.add(
                Attachment(
                    partner_id=ticket.partner_id,
                    ticket_id=ticket.id,
                    message_id=message.id,
                    blob_id=blob_id,
                    filename=part.filename,
                    content_type=part.content_type,
                    size=len(part.data),
                    sha256=hashlib.sha256(part.data).hexdigest(),
                )
            )
        ctx.files = list(ctx.mail.parsed.attachments)
        ctx.message = message
        touch(ctx.session, ticket)
        record_event(
            ctx.session, ticket.id, "message.received", ctx.side, via="email", messageId=message.id
        )

    async def name_agent(self, ctx: InboundContext) -> None:
        """The person who last answered for the fleet is the session's agent, unless the
        partner named one through the API."""
        name = ctx.mail.parsed.from_name.strip()
        ticket = ctx.ticket
        if ctx.side != FLEET or not name or ticket.agent_source == PARTNER:
            return
        if ticket.agent_name != name:
            ticket.agent_name = name[:200]
            ticket.agent_phone = None
        ticket.agent_source = FLEET
        ticket.agent_updated_at = utcnow()
        ctx.session.add(ticket)

    async def forward(self, ctx: InboundContext) -> None:
        assert ctx.bundle is not None and ctx.message is not None
        reader = other_side(ctx.side)
        assert ctx.ticket.id is not None
        threading = await threading_for(
            ctx.session,
            ctx.ticket.id,
            reader,
            exclude=ctx.message.id,
            author=ctx.side,
            cited=ctx.mail.parsed.references,
        )
        reader_msgid = ctx.message.partner_msgid if reader != FLEET else ctx.message.fleet_msgid
        assert reader_msgid is not None
        await self.mailer.queue(
            ctx.session,
            ctx.bundle,
            event="reply",
            to_side=reader,
            message=ctx.message,
            message_id=reader_msgid,
            threading=threading,
            files=ctx.files,
            body=ctx.message.body,
            author_name=ctx.bundle.name_of(ctx.side),
        )

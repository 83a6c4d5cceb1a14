"""Inbound mail in ordered steps.

Once per SMTP transaction the message is screened (`relay.screening`: structure limits,
parse, file limits) and our own mail coming back is discarded. Then, for each recipient
alias: resolve → authorize → deduplicate → classify (automatic?) → hold if flooded →
reopen if closed → read (reply text, safe HTML) → flag (other ticket cited, third parties)
→ store → name the agent → forward.

A step stops the flow by raising an `InboundRefused` (the sender gets its 5xx) or by
marking the context done (a duplicate: acknowledged, nothing stored twice). Automatic and
held mail is stored but goes no further than `store`: no reopen, no agent, no forward, no
notice back. Every alias of one SMTP transaction is processed in ONE database transaction,
which messages arriving together may share (storage.group_commit: each in a savepoint of
its own); the caller answers 250 only after it commits.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial

from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from relay.addresses import sender_allowed
from relay.auth_policy import QUARANTINE, REJECT, TEMPFAIL, AuthDecision, decide
from relay.authentication import Authenticator, AuthVerdict
from relay.automatic import automatic_reason, is_our_loop
from relay.compose import FilePart
from relay.content import Masker, ReplyContent, read_content
from relay.dispositions import AUTOMATIC, FORWARDED, HELD, QUARANTINED
from relay.errors import NotAuthenticated, SenderNotAllowed, UnknownAlias
from relay.forwarding import forward_email
from relay.lifecycle import CLOSED, OPEN, TicketClosedForReplies, may_reopen_by_mail
from relay.outgoing import Mailer, TicketBundle
from relay.parsing import ParsedMessage
from relay.raw_view import masked_raw
from relay.replies import S250_DISCARDED, S250_DUPLICATE, S250_OK
from relay.screening import ScreeningLimits, screen
from storage.group_commit import GroupCommit
from storage.inbound import alias_traffic, cites_other_ticket
from storage.models import Alias, Attachment, Message, Ticket
from storage.parties import addressed_ticket
from storage.rows import insert_row, insert_rows
from storage.tickets import (
    FLEET,
    PARTNER,
    PendingTicketUpdate,
    event_row,
    other_side,
    record_event,
    record_events,
    store_blob,
)
from storage.types import utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InboundPolicy:
    """The limits and windows the steps apply, read from settings once."""

    screening: ScreeningLimits
    reopen_window: timedelta = timedelta(days=7)
    loop_max_messages: int = 20
    loop_window: timedelta = timedelta(hours=1)
    allow_remote_images: bool = False
    # What mail failing SPF/DKIM/DMARC does when its fleet sets nothing (relay.auth_policy).
    auth_policy: str = "record"
    honor_dmarc_policy: bool = True


@dataclass(frozen=True)
class Arrival:
    """One SMTP transaction as the server saw it."""

    raw: bytes
    mail_from: str
    local_parts: Sequence[str]
    client_ip: str = ""
    helo: str = ""


@dataclass
class IncomingMail:
    """One SMTP transaction's message, shared by its aliases: parsed once, stored once."""

    raw: bytes
    mail_from: str
    parsed: ParsedMessage
    # The one address of the From header, read strictly; None when there is not exactly one.
    sender: str | None = None
    # SPF/DKIM/DMARC, evaluated once before the transaction (DNS must not hold it open).
    verdict: AuthVerdict | None = None
    # What is read from it once, before masking for each alias's reader.
    content: ReplyContent | None = None
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
    # What the steps change on the ticket, written by one UPDATE once they are done.
    ticket_changes: PendingTicketUpdate | None = None
    sender: str | None = None
    dedup_key: str = ""
    disposition: str = FORWARDED
    disposition_reason: str | None = None
    auth: AuthDecision | None = None
    content: ReplyContent | None = None
    flags: dict[str, object] = field(default_factory=dict)
    message: Message | None = None
    files: list[FilePart] = field(default_factory=list)
    done: bool = False
    duplicate: bool = False
    # Messages this alias received within the loop window before this one.
    recent_messages: int = 0

    @property
    def forwarding(self) -> bool:
        return self.disposition == FORWARDED

    @property
    def side(self) -> str:
        assert self.alias is not None
        return self.alias.side

    @property
    def ticket(self) -> Ticket:
        assert self.bundle is not None
        return self.bundle.ticket

    @property
    def changes(self) -> PendingTicketUpdate:
        assert self.ticket_changes is not None
        return self.ticket_changes


Step = Callable[[InboundContext], Awaitable[None]]


class InboundPipeline:
    def __init__(
        self,
        commits: GroupCommit,
        mailer: Mailer,
        notify: Callable[[], None],
        policy: InboundPolicy,
        authenticator: Authenticator | None = None,
    ) -> None:
        self.commits = commits
        self.mailer = mailer
        self.notify = notify
        self.policy = policy
        self.authenticator = authenticator
        self.steps: list[Step] = [
            self.resolve,
            self.authorize,
            self.deduplicate,
            self.classify,
            self.enforce_authentication,
            self.hold_if_flooded,
            self.reopen_if_closed,
            self.read,
            self.flag,
            self.store,
            self.name_agent,
            self.forward,
        ]

    async def process(self, arrival: Arrival) -> str:
        """Run every step for every alias; return the SMTP reply after the commit."""
        raw, mail_from = arrival.raw, arrival.mail_from
        parsed = screen(raw, self.policy.screening)
        domain = self.mailer.domain
        if is_our_loop(parsed.headers, parsed.message_id, loop_value=domain, domain=domain):
            # Accepted and dropped: refusing would make the sender bounce it back to us.
            log.warning("discarded the relay's own mail coming back (loop) from %r", mail_from)
            return S250_DISCARDED
        sender = parsed.sender
        verdict = await self._authenticate(arrival, sender)
        for attempt in (1, 2):
            try:
                work = partial(self._run, arrival, parsed, sender, verdict)
                # SQL only (storage.direct and Core): a plain SQL savepoint will do.
                contexts = await self.commits.run(work, orm=False)
                break
            except IntegrityError:
                # A concurrent copy of the same message committed first; rerun to see it.
                if attempt == 2:
                    raise
        if any(c.forwarding and not c.duplicate for c in contexts):
            self.notify()
        if any(not c.duplicate for c in contexts):
            return S250_OK
        return S250_DUPLICATE

    async def _authenticate(self, arrival: Arrival, sender: str | None) -> AuthVerdict | None:
        if self.authenticator is None or sender is None:
            return None  # no checks configured, or `authorize` refuses the message anyway
        return await self.authenticator.evaluate(
            arrival.raw,
            client_ip=arrival.client_ip,
            helo=arrival.helo,
            mail_from=arrival.mail_from,
            from_domain=sender.rpartition("@")[2],
        )

    async def _run(
        self,
        arrival: Arrival,
        parsed: ParsedMessage,
        sender: str | None,
        verdict: AuthVerdict | None,
        session: AsyncSession,
    ) -> list[InboundContext]:
        """One message's steps for each alias, in `session`'s transaction. Everything it
        builds is new on each call: a rerun after a rollback starts clean."""
        contexts: list[InboundContext] = []
        mail = IncomingMail(arrival.raw, arrival.mail_from, parsed, sender, verdict)
        for local_part in dict.fromkeys(arrival.local_parts):
            ctx = InboundContext(session, mail, local_part)
            for step in self.steps:
                await step(ctx)
                if ctx.done:
                    break
            if ctx.ticket_changes is not None:
                await ctx.ticket_changes.write(session)
            contexts.append(ctx)
        return contexts

    async def resolve(self, ctx: InboundContext) -> None:
        found = await addressed_ticket(ctx.session, ctx.local_part)
        if found is None:  # deactivated between RCPT and DATA
            raise UnknownAlias()
        ctx.alias = found.alias
        ctx.bundle = TicketBundle.of(found.ticket, found.parties)
        ctx.ticket_changes = PendingTicketUpdate(found.ticket)

    async def authorize(self, ctx: InboundContext) -> None:
        if not ctx.mail.parsed.from_header:
            raise SenderNotAllowed("550 5.7.1 A From header with one address is required")
        sender = ctx.mail.sender
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
        # nothing but a byte-identical resend of the same message. Without a Message-ID
        # the whole message is the key: two different mails that both say "Yes." differ in
        # Date or elsewhere, while a client's resend after a timeout is the same bytes.
        parsed = ctx.mail.parsed
        if parsed.message_id:
            basis = f"{parsed.message_id}\0{parsed.body_digest}".encode()
        else:
            basis = b"\0" + ctx.mail.raw
        ctx.dedup_key = hashlib.sha256(basis).hexdigest()
        assert ctx.alias is not None and ctx.alias.id is not None
        # The flood check's count comes with it: one statement instead of two.
        since = utcnow() - self.policy.loop_window
        ctx.duplicate, ctx.recent_messages = await alias_traffic(
            ctx.session, ctx.alias.id, ctx.dedup_key, since
        )
        ctx.done = ctx.duplicate

    async def classify(self, ctx: InboundContext) -> None:
        """RFC 3834: an auto-reply is kept on the ticket, never forwarded or acted on."""
        reason = automatic_reason(ctx.mail.parsed.headers, ctx.mail.mail_from)
        if reason is not None:
            ctx.disposition, ctx.disposition_reason = AUTOMATIC, reason

    async def enforce_authentication(self, ctx: InboundContext) -> None:
        """Apply the fleet's (or the default) policy to the SPF/DKIM/DMARC verdict."""
        verdict = ctx.mail.verdict
        if verdict is None:
            return
        assert ctx.bundle is not None
        # The fleet's policy governs mail from the fleet; partner mail follows the default.
        own = ctx.bundle.fleet.auth_policy if ctx.side == FLEET else None
        policy = own or self.policy.auth_policy
        ctx.auth = decide(verdict, policy, honor_dmarc=self.policy.honor_dmarc_policy)
        if ctx.auth.action == REJECT:
            raise NotAuthenticated(
                f"550 5.7.1 Message refused: {ctx.auth.reason}. Send from a server your"
                " domain's SPF record lists, or sign with DKIM for your From domain"
            )
        if ctx.auth.action == TEMPFAIL:
            raise NotAuthenticated(
                f"451 4.4.3 Could not verify the sender: {ctx.auth.reason}; try again later"
            )
        if ctx.auth.action == QUARANTINE and ctx.disposition != AUTOMATIC:
            ctx.disposition, ctx.disposition_reason = QUARANTINED, ctx.auth.reason
            await self._flag_ticket(
                ctx,
                f"mail quarantined: {ctx.auth.reason}",
                "mail.quarantined",
                reason=ctx.auth.reason,
            )

    async def _flag_ticket(
        self, ctx: InboundContext, attention: str, event: str, **detail: object
    ) -> None:
        """Ask for a person's eye on the ticket: `attention` (kept until acknowledged) and one
        event per episode."""
        ticket = ctx.ticket
        if ticket.attention is None:
            assert ticket.id is not None
            ctx.changes.set(attention=attention[:200])
            await record_event(ctx.session, ticket.id, event, ctx.side, via="email", **detail)

    async def hold_if_flooded(self, ctx: InboundContext) -> None:
        """More mail on one alias than a person writes is held, and the ticket flagged: two
        responders that do not mark their mail automatic cannot ping-pong through us."""
        if not ctx.forwarding:
            return
        limit = self.policy.loop_max_messages
        if ctx.recent_messages < limit:  # counted by `deduplicate`
            return
        seconds = int(self.policy.loop_window.total_seconds())
        ctx.disposition = HELD
        ctx.disposition_reason = f"more than {limit} messages to this address within {seconds} s"
        await self._flag_ticket(
            ctx,
            f"mail held: {ctx.disposition_reason}",
            "mail.held",
            limit=limit,
            windowSeconds=seconds,
        )

    async def reopen_if_closed(self, ctx: InboundContext) -> None:
        """A reply to a recently closed ticket reopens it; after the window it is refused.
        Automatic and held mail is only filed: it changes no status."""
        ticket = ctx.ticket
        if ticket.status != CLOSED or not ctx.forwarding:
            return
        assert ticket.id is not None
        if not may_reopen_by_mail(ticket.closed_at, utcnow(), self.policy.reopen_window):
            assert ticket.closed_at is not None
            raise TicketClosedForReplies(ticket.id, ticket.closed_at)
        await record_event(
            ctx.session,
            ticket.id,
            "ticket.status_changed",
            ctx.side,
            via="email",
            **{"from": CLOSED, "to": OPEN},
        )
        ctx.changes.set(status=OPEN, closed_at=None)

    async def read(self, ctx: InboundContext) -> None:
        """The reply text apart from its quotes, the HTML made safe, all of it masked."""
        assert ctx.bundle is not None
        parsed = ctx.mail.parsed
        reader_alias = self.mailer.address_of(ctx.bundle, other_side(ctx.side))
        # Third parties the sender copied are hidden from the reader too.
        others = self._outside(parsed.recipients)
        addresses = [*ctx.bundle.real_addresses(), ctx.sender or "", ctx.mail.mail_from, *others]
        if ctx.mail.content is None:  # the same for every alias of the transaction
            ctx.mail.content = read_content(
                parsed,
                new_content_id=lambda: self.mailer.new_message_id()[1:-1],
                redact_email=partial(masked_raw, domain=self.mailer.domain),
                allow_remote_images=self.policy.allow_remote_images,
            )
        ctx.content = ctx.mail.content.masked(Masker(addresses, reader_alias))

    async def flag(self, ctx: InboundContext) -> None:
        """Note what the reader cannot see: a citation of another ticket's mail, and people
        the sender copied (they get nothing from us; the ticket records how many)."""
        parsed = ctx.mail.parsed
        assert ctx.ticket.id is not None
        if await cites_other_ticket(ctx.session, ctx.ticket.id, parsed.references):
            ctx.flags["citesOtherTicket"] = True
        assert ctx.bundle is not None
        # The sender and either side's own addresses (a reply-all) are not third parties.
        known = {a.lower() for a in (*ctx.bundle.real_addresses(), ctx.sender or "")}
        omitted = {r for r in self._outside(parsed.recipients) if r not in known}
        if omitted:
            ctx.flags["omittedRecipients"] = len(omitted)

    def _outside(self, addresses: Sequence[str]) -> list[str]:
        """The addresses that are not the relay's own aliases."""
        suffix = f"@{self.mailer.domain}"
        return [a for a in addresses if not a.lower().endswith(suffix)]

    async def store(self, ctx: InboundContext) -> None:
        assert ctx.bundle is not None and ctx.alias is not None and ctx.content is not None
        ticket = ctx.ticket
        assert ticket.id is not None
        mail, content = ctx.mail, ctx.content
        files = [*content.attachments, *content.inline]
        if mail.raw_blob_id is None:
            # Several aliases of one transaction share the bytes: store them once (masking
            # per reader changes only file names).
            mail.raw_blob_id = (await store_blob(ctx.session, mail.raw)).id
            for part in files:
                mail.part_blob_ids.append((await store_blob(ctx.session, part.data)).id)
        author_id = mail.parsed.message_id or self.mailer.new_message_id()
        reader_id = self.mailer.new_message_id()
        message = await insert_row(
            ctx.session,
            Message,
            ticket_id=ticket.id,
            author_side=ctx.side,
            via="email",
            author_name=ctx.bundle.name_of(ctx.side),
            sender_address=ctx.sender,
            body=content.new,
            quoted=content.quoted or None,
            html=content.html,
            disposition=ctx.disposition,
            disposition_reason=ctx.disposition_reason,
            flags=ctx.flags,
            authentication=_authentication_record(mail.verdict, ctx.auth),
            alias_id=ctx.alias.id,
            dedup_key=ctx.dedup_key,
            raw_blob_id=mail.raw_blob_id,
            fleet_msgid=author_id if ctx.side == FLEET else reader_id,
            partner_msgid=reader_id if ctx.side == FLEET else author_id,
        )
        assert message.id is not None
        attachments = [
            {
                "partner_id": ticket.partner_id,
                "ticket_id": ticket.id,
                "message_id": message.id,
                "blob_id": blob_id,
                "filename": part.filename,
                "content_type": part.content_type,
                "size": len(part.data),
                "sha256": hashlib.sha256(part.data).hexdigest(),
                "content_id": part.content_id,
            }
            for part, blob_id in zip(files, mail.part_blob_ids, strict=True)
        ]
        await insert_rows(ctx.session, Attachment, attachments)
        ctx.files = files
        ctx.message = message
        ctx.changes.touch()
        detail: dict[str, object] = {"messageId": message.id}
        if not ctx.forwarding:
            detail["disposition"] = ctx.disposition
        events = [event_row(ticket.id, "message.received", ctx.side, via="email", **detail)]
        if "omittedRecipients" in ctx.flags:
            count = ctx.flags["omittedRecipients"]
            kind = "message.recipients_omitted"
            events.append(event_row(ticket.id, kind, ctx.side, messageId=message.id, count=count))
        await record_events(ctx.session, events)

    async def name_agent(self, ctx: InboundContext) -> None:
        """The person who last answered for the fleet is the session's agent, unless the
        partner named one through the API."""
        name = ctx.mail.parsed.from_name.strip()
        ticket = ctx.ticket
        if not ctx.forwarding or ctx.side != FLEET or not name or ticket.agent_source == PARTNER:
            return
        if ticket.agent_name != name:
            ctx.changes.set(agent_name=name[:200], agent_phone=None)
        ctx.changes.set(agent_source=FLEET, agent_updated_at=utcnow())

    async def forward(self, ctx: InboundContext) -> None:
        if not ctx.forwarding:
            return
        assert ctx.bundle is not None and ctx.message is not None
        await forward_email(
            ctx.session,
            self.mailer,
            ctx.bundle,
            ctx.message,
            ctx.files,
            cited=ctx.mail.parsed.references,
        )


def _authentication_record(
    verdict: AuthVerdict | None, decision: AuthDecision | None
) -> dict[str, object] | None:
    if verdict is None:
        return None
    record = verdict.as_dict()
    if decision is not None:
        record["policy"] = decision.policy
        record["action"] = decision.action
    return record

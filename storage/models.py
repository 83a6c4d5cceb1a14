"""The relay's tables. Wire shapes live in `api.schemas`; these are storage only."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from storage.types import UTCDateTime, utcnow


def new_uuid() -> str:
    return str(uuid.uuid4())


def _ts(**kw: Any) -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, **kw)


class Partner(SQLModel, table=True):
    """A demand partner (booking app, agency, CRM) that opens tickets through the API."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    contact_email: str = Field(max_length=320)
    allowed_senders: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _ts()


class Fleet(SQLModel, table=True):
    """A supply partner that runs trips and answers tickets by email."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    support_email: str = Field(max_length=320)
    allowed_senders: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # What a reply failing SPF/DKIM/DMARC does: "record", "quarantine" or "reject";
    # None follows the relay's default (RELAY_AUTH_POLICY).
    auth_policy: str | None = Field(default=None, max_length=20)
    created_at: datetime = _ts()


class ApiKey(SQLModel, table=True):
    """A partner's API key: only a SHA-256 of the secret is kept; the prefix finds the row."""

    __tablename__ = "api_key"

    id: int | None = Field(default=None, primary_key=True)
    partner_id: int = Field(foreign_key="partner.id", index=True)
    prefix: str = Field(max_length=32, unique=True)
    secret_hash: str = Field(max_length=64)
    created_at: datetime = _ts()
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Trip(SQLModel, table=True):
    """A trip a partner registered, keyed by our UUID and by the partner's own id."""

    __table_args__ = (UniqueConstraint("partner_id", "partner_trip_id"),)

    id: str = Field(default_factory=new_uuid, primary_key=True, max_length=36)
    partner_id: int = Field(foreign_key="partner.id")
    partner_trip_id: str = Field(max_length=200)
    fleet_id: int = Field(foreign_key="fleet.id", index=True)
    pickup: str = Field(max_length=500)
    dropoff: str = Field(max_length=500)
    scheduled_at: datetime = Field(sa_type=UTCDateTime)
    passenger_name: str | None = Field(default=None, max_length=200)
    vehicle: str | None = Field(default=None, max_length=200)
    driver_name: str | None = Field(default=None, max_length=200)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class Category(SQLModel, table=True):
    """A ticket category the operator defines; one level of subcategories under a parent.

    Archived categories stay on the tickets that carry them but cannot be chosen any more.
    """

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True)
    description: str | None = Field(default=None, max_length=1000)
    parent_id: int | None = Field(default=None, foreign_key="category.id", index=True)
    archived_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = _ts()


class Tag(SQLModel, table=True):
    """A label the operator defines; partners put any number of them on their tickets."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True)
    keyword: str = Field(max_length=100, unique=True)
    archived_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = _ts()


class Ticket(SQLModel, table=True):
    """A support conversation about one trip between one partner and that trip's fleet."""

    # History queries always filter by partner and walk newest first by created or updated
    # time; the status variant serves the most common filter and the open-ticket count.
    __table_args__ = (
        Index("ix_ticket_partner_created", "partner_id", "created_at", "id"),
        Index("ix_ticket_partner_updated", "partner_id", "updated_at", "id"),
        Index("ix_ticket_partner_status_created", "partner_id", "status", "created_at", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    partner_id: int = Field(foreign_key="partner.id")
    trip_id: str = Field(foreign_key="trip.id", index=True)
    fleet_id: int = Field(foreign_key="fleet.id")
    subject: str = Field(max_length=500)
    contact_email: str = Field(max_length=320)
    status: str = Field(default="open", max_length=20)
    category_id: int | None = Field(default=None, foreign_key="category.id", index=True)
    priority: str = Field(default="medium", max_length=20)
    # The order-keyed session (reference 001): who to call back, and who handles it.
    callback_phone: str | None = Field(default=None, max_length=40)
    agent_name: str | None = Field(default=None, max_length=200)
    agent_phone: str | None = Field(default=None, max_length=40)
    # "partner" when set through the API (then fleet replies do not overwrite it), "fleet"
    # when taken from the display name of the fleet's latest reply.
    agent_source: str | None = Field(default=None, max_length=10)
    agent_updated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    # When the ticket was last closed: mail after the reopen window is refused, not lost.
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Why the ticket needs a person's eye (mail held as a suspected loop); None when it does not.
    attention: str | None = Field(default=None, max_length=200)


class TicketTag(SQLModel, table=True):
    """Which tags a ticket carries. The (tag, ticket) index serves the history tag filter."""

    __tablename__ = "ticket_tag"
    __table_args__ = (Index("ix_ticket_tag_tag", "tag_id", "ticket_id"),)

    ticket_id: int = Field(foreign_key="ticket.id", primary_key=True)
    tag_id: int = Field(foreign_key="tag.id", primary_key=True)


class Alias(SQLModel, table=True):
    """A masked address of one ticket. `side` is who writes TO it: the fleet or the partner."""

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    side: str = Field(max_length=10)
    local_part: str = Field(max_length=64, unique=True)
    active: bool = True
    created_at: datetime = _ts()


class Message(SQLModel, table=True):
    """One entry of a ticket's conversation, from the API or from email.

    `fleet_msgid` / `partner_msgid` are the Message-IDs each side knows this entry by: the
    author's own ID for mail they sent, the relay's ID for the copy the other side got.
    Replies cite them in In-Reply-To/References, which is how threads map across the relay.
    """

    __table_args__ = (
        UniqueConstraint("alias_id", "dedup_key"),
        Index("ix_message_ticket_created", "ticket_id", "created_at", "id"),
        Index("ix_message_alias_created", "alias_id", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id")
    author_side: str = Field(max_length=10)
    via: str = Field(max_length=10)
    author_name: str | None = Field(default=None, max_length=200)
    # The real sender, kept for audit; never shown to the other side.
    sender_address: str | None = Field(default=None, max_length=320)
    body: str = Field(sa_column=Column(Text, nullable=False))
    # An internal note: kept on the ticket for the partner, never emailed to the fleet.
    internal: bool = False
    alias_id: int | None = Field(default=None, foreign_key="alias.id")
    # The message exactly as received by SMTP, for the ticket's owner to audit.
    raw_blob_id: str | None = Field(default=None, foreign_key="blob.id")
    dedup_key: str | None = Field(default=None, max_length=64)
    fleet_msgid: str | None = Field(default=None, max_length=255, index=True)
    partner_msgid: str | None = Field(default=None, max_length=255, index=True)
    # What became of it: "forwarded" to the other side, or kept on the ticket only as
    # "automatic" (an auto-reply, RFC 3834) or "held" (more mail on the alias than a person
    # writes: a suspected loop). `disposition_reason` says why.
    disposition: str = Field(default="forwarded", max_length=20)
    disposition_reason: str | None = Field(default=None, max_length=200)
    # Of an email: the quoted history and signature cut from `body` (the text the person
    # wrote), and the sanitised HTML of the original. Both masked like `body`.
    quoted: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    html: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # Facts about an email worth a look: {"citesOtherTicket": true, "omittedRecipients": 2}.
    flags: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # Of an email: the SPF/DKIM/DMARC verdicts the relay reached (relay.authentication).
    authentication: dict[str, Any] | None = Field(
        default=None, sa_column=Column(JSON, nullable=True)
    )
    created_at: datetime = _ts()


class Blob(SQLModel, table=True):
    """Attachment bytes, in the database so they commit atomically with what refers to them."""

    id: str = Field(default_factory=new_uuid, primary_key=True, max_length=36)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class Attachment(SQLModel, table=True):
    """A file on a ticket. Before it is claimed it is an upload behind a single-use token."""

    id: str = Field(default_factory=new_uuid, primary_key=True, max_length=36)
    partner_id: int = Field(foreign_key="partner.id", index=True)
    ticket_id: int | None = Field(default=None, foreign_key="ticket.id", index=True)
    message_id: int | None = Field(default=None, foreign_key="message.id", index=True)
    blob_id: str = Field(foreign_key="blob.id")
    filename: str = Field(max_length=255)
    content_type: str = Field(max_length=255)
    size: int
    sha256: str = Field(max_length=64)
    # An inline image of an email's HTML: the Content-ID the relay gave it (never the
    # sender's, which can name their host); the stored HTML cites it as "cid:…".
    content_id: str | None = Field(default=None, max_length=255)
    token_hash: str | None = Field(default=None, max_length=64, unique=True)
    token_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = _ts()


class OutboxItem(SQLModel, table=True):
    """One rendered email waiting for, or done with, delivery by the worker."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    message_id: int | None = Field(default=None, foreign_key="message.id")
    recipient_side: str = Field(max_length=10)
    mail_from: str = Field(max_length=320)
    rcpt_to: str = Field(max_length=320)
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    status: str = Field(default="pending", max_length=10)
    attempts: int = 0
    next_attempt_at: datetime = _ts()
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    lease_owner: str | None = Field(default=None, max_length=32, index=True)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, max_length=1000)
    created_at: datetime = _ts()
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # A delivery report that came back to the item's signed bounce address (relay.bounces):
    # "hard" (permanent), "soft" (the remote server gave up after temporary failures).
    bounce_kind: str | None = Field(default=None, max_length=10)
    bounce_status: str | None = Field(default=None, max_length=20)
    bounced_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Suppression(SQLModel, table=True):
    """An address the relay no longer sends to: it hard-bounced. An operator clears it."""

    id: int | None = Field(default=None, primary_key=True)
    # Lower-cased.
    address: str = Field(max_length=320, unique=True)
    # The enhanced status code and the remote server's words, for the operator.
    status: str | None = Field(default=None, max_length=20)
    diagnostic: str | None = Field(default=None, max_length=1000)
    outbox_id: int | None = Field(default=None, foreign_key="outbox.id")
    created_at: datetime = _ts()


class RelaySecret(SQLModel, table=True):
    """Secrets the relay generates for itself when the operator configures none, shared by
    every instance on the same database (e.g. the key that signs bounce addresses)."""

    __tablename__ = "relay_secret"

    name: str = Field(primary_key=True, max_length=50)
    value: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = _ts()


class TicketEvent(SQLModel, table=True):
    """Something that happened to a ticket, shown in the API: creation, deliveries, replies."""

    __tablename__ = "ticket_event"
    __table_args__ = (Index("ix_event_ticket_created", "ticket_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id")
    kind: str = Field(max_length=50)
    actor: str = Field(max_length=50)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _ts()


class IdempotencyRecord(SQLModel, table=True):
    """The response a POST with an Idempotency-Key gave, written in the creating transaction.

    `owner` scopes keys ("partner:<id>" or "admin"); `fingerprint` is a SHA-256 of the
    method, path and body, so the same key with another request is told apart.
    """

    __tablename__ = "idempotency_key"
    __table_args__ = (UniqueConstraint("owner", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    owner: str = Field(max_length=40)
    key: str = Field(max_length=255)
    fingerprint: str = Field(max_length=64)
    status_code: int
    body: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    location: str | None = Field(default=None, max_length=500)
    created_at: datetime = _ts()
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)

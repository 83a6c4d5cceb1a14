"""Tickets, their aliases, conversation, attachments and events."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ScalarSelect, bindparam, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.db import connection_of
from storage.direct import Prepared
from storage.models import (
    Alias,
    Attachment,
    Blob,
    Category,
    Fleet,
    Message,
    Ticket,
    TicketEvent,
    Trip,
)
from storage.rows import insert_row, insert_rows
from storage.types import utcnow

FLEET = "fleet"
PARTNER = "partner"


def other_side(side: str) -> str:
    return PARTNER if side == FLEET else FLEET


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_alias_local_part(ticket_id: int) -> str:
    # 80 random bits: an alias cannot be guessed, and the ticket number helps a human reader.
    token = base64.b32encode(secrets.token_bytes(10)).decode().lower()
    return f"ticket-{ticket_id}-{token}"


async def add_aliases(session: AsyncSession, ticket_id: int) -> None:
    """Both sides' aliases of a new ticket, written in one statement (no ids are read back:
    mail finds an alias by its local part)."""
    rows = [
        {"ticket_id": ticket_id, "side": side, "local_part": new_alias_local_part(ticket_id)}
        for side in (FLEET, PARTNER)
    ]
    await insert_rows(session, Alias, rows)


# Statements run for every message are built once, with bound parameters: SQLAlchemy's
# cache spares their compile, not their building (measured with bench/instructions.py).
_ALIAS_TABLE = Alias.__table__  # type: ignore[attr-defined]
_ACTIVE_ALIAS = Prepared(
    select(_ALIAS_TABLE.c.id).where(
        _ALIAS_TABLE.c.local_part == bindparam("local_part"), _ALIAS_TABLE.c.active
    )
)


async def alias_is_active(engine: AsyncEngine, local_part: str) -> bool:
    """Whether mail to `local_part` has a ticket to go to: asked at every RCPT, so one
    keyed read outside any session (`Prepared.read`), not an ORM entity."""
    result = await _ACTIVE_ALIAS.read(engine, {"local_part": local_part.lower()})
    return result.first() is not None


def partner_trip_ref() -> ScalarSelect[str]:
    """The partner's own id for a ticket's trip, read beside the ticket by primary key."""
    return select(Trip.partner_trip_id).where(col(Trip.id) == col(Ticket.trip_id)).scalar_subquery()


def category_title() -> ScalarSelect[str]:
    """A ticket's category name (NULL without one), read beside the ticket by primary key."""
    query = select(Category.name).where(col(Category.id) == col(Ticket.category_id))
    return query.scalar_subquery()


@dataclass(frozen=True)
class TicketHeading:
    """A ticket with what its detail shows from other tables, in one query."""

    ticket: Ticket
    fleet: Fleet
    partner_trip_id: str
    category_title: str | None


async def ticket_heading(
    session: AsyncSession, partner_id: int, ticket_id: int
) -> TicketHeading | None:
    query = (
        select(Ticket, Fleet, partner_trip_ref(), category_title())
        .join(Fleet, col(Fleet.id) == col(Ticket.fleet_id))
        .where(col(Ticket.id) == ticket_id, col(Ticket.partner_id) == partner_id)
    )
    found = (await session.exec(query)).first()
    return None if found is None else TicketHeading(*found)


async def ticket_for_partner(
    session: AsyncSession, partner_id: int, ticket_id: int
) -> Ticket | None:
    ticket = await session.get(Ticket, ticket_id)
    return ticket if ticket is not None and ticket.partner_id == partner_id else None


async def conversation(session: AsyncSession, ticket_id: int) -> list[Message]:
    query = (
        select(Message)
        .where(Message.ticket_id == ticket_id)
        .order_by(col(Message.created_at), col(Message.id))
    )
    return list((await session.exec(query)).all())


def _recent_msgids_query(column: Any) -> Any:
    return (
        select(column)
        .where(
            col(Message.ticket_id) == bindparam("ticket_id"),
            column.is_not(None),
            col(Message.id) != bindparam("exclude"),
        )
        .order_by(col(Message.created_at).desc(), col(Message.id).desc())
        .limit(bindparam("limit"))
    )


_RECENT_MSGIDS = {
    FLEET: Prepared(_recent_msgids_query(col(Message.fleet_msgid))),
    PARTNER: Prepared(_recent_msgids_query(col(Message.partner_msgid))),
}


async def recent_msgids(
    session: AsyncSession, ticket_id: int, side: str, *, exclude: int | None, limit: int
) -> list[str]:
    """The Message-IDs `side` knows of the ticket's newest `limit` messages, oldest first:
    one index range (ix_message_ticket_created) however long the conversation grew."""
    # Ids start at 1: excluding 0 excludes nothing.
    params = {"ticket_id": ticket_id, "exclude": exclude or 0, "limit": limit}
    result = await _RECENT_MSGIDS[side].rows(session, params)
    return [msgid for msgid in reversed(result.scalars()) if msgid]


async def message_of_partner(
    session: AsyncSession, partner_id: int, ticket_id: int, message_id: int
) -> Message | None:
    """One message of one of the partner's tickets."""
    query = (
        select(Message)
        .join(Ticket, col(Ticket.id) == col(Message.ticket_id))
        .where(
            col(Message.id) == message_id,
            col(Message.ticket_id) == ticket_id,
            col(Ticket.partner_id) == partner_id,
        )
    )
    return (await session.exec(query)).first()


async def message_attachment_ids(session: AsyncSession, message_id: int) -> list[str]:
    """A message's files, in `ticket_attachments`' order."""
    query = (
        select(Attachment.id)
        .where(Attachment.message_id == message_id)
        .order_by(col(Attachment.created_at), col(Attachment.id))
    )
    return [str(i) for i in (await session.exec(query)).all()]


async def ticket_attachments(session: AsyncSession, ticket_id: int) -> list[Attachment]:
    query = (
        select(Attachment)
        .where(Attachment.ticket_id == ticket_id)
        .order_by(col(Attachment.created_at), col(Attachment.id))
    )
    return list((await session.exec(query)).all())


async def events_of(session: AsyncSession, ticket_id: int) -> list[TicketEvent]:
    query = (
        select(TicketEvent).where(TicketEvent.ticket_id == ticket_id).order_by(col(TicketEvent.id))
    )
    return list((await session.exec(query)).all())


def event_row(ticket_id: int, kind: str, actor: str, **detail: Any) -> dict[str, Any]:
    """One ticket event, for `record_events`."""
    return {"ticket_id": ticket_id, "kind": kind, "actor": actor, "detail": detail}


async def record_events(session: AsyncSession, events: Sequence[dict[str, Any]]) -> None:
    """Written at once, in one statement (storage.rows), so a ticket's events are numbered
    in the order they were recorded."""
    await insert_rows(session, TicketEvent, events)


async def record_event(
    session: AsyncSession, ticket_id: int, kind: str, actor: str, **detail: Any
) -> TicketEvent:
    """One event, written now; returned as written (with its id) for a response."""
    return await insert_row(session, TicketEvent, **event_row(ticket_id, kind, actor, **detail))


async def store_blob(session: AsyncSession, data: bytes) -> Blob:
    return await insert_row(session, Blob, data=data)


async def blob_data(session: AsyncSession, blob_id: str) -> bytes:
    blob = await session.get(Blob, blob_id)
    assert blob is not None, "attachment points at a missing blob"
    return blob.data


async def add_upload(
    session: AsyncSession,
    partner_id: int,
    *,
    filename: str,
    content_type: str,
    data: bytes,
    expires_at: datetime,
) -> tuple[Attachment, str]:
    """Store an upload and return it with its single-use resource token (shown once)."""
    blob = await store_blob(session, data)
    token = secrets.token_urlsafe(24)
    attachment = Attachment(
        partner_id=partner_id,
        blob_id=blob.id,
        filename=filename,
        content_type=content_type,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        token_hash=token_hash(token),
        token_expires_at=expires_at,
    )
    session.add(attachment)
    await session.flush()
    return attachment, token


async def claimable_uploads(
    session: AsyncSession, partner_id: int, tokens: Sequence[str]
) -> dict[str, Attachment]:
    """Uploads behind these tokens that this partner may still claim, keyed by token."""
    if not tokens:
        return {}
    by_hash = {token_hash(t): t for t in tokens}
    query = select(Attachment).where(
        col(Attachment.token_hash).in_(list(by_hash)),
        Attachment.partner_id == partner_id,
        col(Attachment.ticket_id).is_(None),
    )
    now = utcnow()
    found: dict[str, Attachment] = {}
    for attachment in (await session.exec(query)).all():
        assert attachment.token_hash is not None
        if attachment.token_expires_at is not None and attachment.token_expires_at <= now:
            continue
        found[by_hash[attachment.token_hash]] = attachment
    return found


def claim_upload(
    session: AsyncSession, attachment: Attachment, ticket_id: int, message_id: int
) -> None:
    # Dropping the token hash is what makes it single use.
    attachment.ticket_id = ticket_id
    attachment.message_id = message_id
    attachment.token_hash = None
    attachment.token_expires_at = None
    session.add(attachment)


def _msgid_column(side: str) -> Any:
    """The column of the Message-ID `side` knows a message by."""
    return col(Message.fleet_msgid) if side == FLEET else col(Message.partner_msgid)


async def answered_msgid(
    session: AsyncSession, ticket_id: int, author: str, reader: str, cited: Sequence[str]
) -> str | None:
    """The Message-ID `reader` knows the newest message of this ticket by, of those `author`
    knows by one of `cited`; None if there is none or `reader` never saw it. One column
    through Core, no entity: inbound mail runs SQL only (storage.group_commit)."""
    if not cited:
        return None
    query = (
        select(_msgid_column(reader))
        .where(col(Message.ticket_id) == ticket_id, _msgid_column(author).in_(list(cited)))
        .order_by(col(Message.id).desc())
        .limit(1)
    )
    found: str | None = (await (await connection_of(session)).execute(query)).scalar()
    return found


def touch(session: AsyncSession, ticket: Ticket) -> None:
    ticket.updated_at = utcnow()
    session.add(ticket)


_TICKET_TABLE = Ticket.__table__  # type: ignore[attr-defined]
# The SET clause comes from the parameters' names: compiled once per set of them.
_UPDATE_TICKET = Prepared(
    update(_TICKET_TABLE).where(_TICKET_TABLE.c.id == bindparam("ticket_id_")), by_keys=True
)


class PendingTicketUpdate:
    """Changes to the inbound pipeline's ticket, written by ONE Core UPDATE when its unit of
    work is done.

    The ticket is a read-only instance (storage.parties): each change goes straight into its
    fields, so code reading it afterwards sees it, and the session never holds it, so there
    is no flush of it (the unit of work's flush of one changed ticket took about 330 µs of
    CPU, the UPDATE about 47 µs: SQLite, the inbound path). Until `write`, SQL sees the
    ticket's row as it was."""

    def __init__(self, ticket: Ticket) -> None:
        if "_sa_instance_state" in vars(ticket):  # vars(): hasattr() goes through pydantic
            raise TypeError("an ORM-loaded ticket changes through its session")
        self.ticket = ticket
        self._values: dict[str, Any] = {}

    def set(self, **fields: Any) -> None:
        unknown = fields.keys() - _TICKET_TABLE.c.keys()
        if unknown or "id" in fields:
            raise TypeError(f"a ticket cannot change {', '.join(sorted(unknown or {'id'}))}")
        # A read-only instance keeps its values where reading them looks.
        self.ticket.__dict__.update(fields)
        self._values.update(fields)

    def touch(self) -> None:
        self.set(updated_at=utcnow())

    async def write(self, session: AsyncSession) -> None:
        if not self._values:
            return
        await _UPDATE_TICKET.rows(session, {**self._values, "ticket_id_": self.ticket.id})
        self._values.clear()

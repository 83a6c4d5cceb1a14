"""Questions the inbound pipeline asks of stored mail: how busy an alias is, whose IDs are cited."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.models import Message


async def messages_since(session: AsyncSession, alias_id: int, since: datetime) -> int:
    """How many messages arrived on this alias after `since` (ix_message_alias_created)."""
    query = select(func.count()).where(Message.alias_id == alias_id, Message.created_at > since)
    return int((await session.exec(query)).one())


async def cites_other_ticket(session: AsyncSession, ticket_id: int, msgids: Sequence[str]) -> bool:
    """Whether any of `msgids` is a message of another ticket, by either side's ID for it."""
    if not msgids:
        return False
    ids = list(dict.fromkeys(msgids))
    if len(ids) > 50:  # In-Reply-To comes first, References run oldest to newest
        ids = ids[:1] + ids[-49:]
    query = (
        select(Message.id)
        .where(
            Message.ticket_id != ticket_id,
            or_(col(Message.fleet_msgid).in_(ids), col(Message.partner_msgid).in_(ids)),
        )
        .limit(1)
    )
    return (await session.exec(query)).first() is not None

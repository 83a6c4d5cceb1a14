"""Questions the inbound pipeline asks of stored mail: seen before? how busy an alias is? whose
IDs are cited?"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, exists, func, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.db import connection_of
from storage.direct import Prepared
from storage.models import Message


def _alias_traffic_query() -> Any:
    on_alias = col(Message.alias_id) == bindparam("alias_id")
    duplicate = exists().where(on_alias, col(Message.dedup_key) == bindparam("dedup_key"))
    recent = select(func.count()).where(on_alias, col(Message.created_at) > bindparam("since"))
    return select(duplicate, recent.scalar_subquery())


# Built once (it runs for every message): the statement cache spares only the compile. It
# runs on the driver's connection (storage.direct).
_ALIAS_TRAFFIC = Prepared(_alias_traffic_query())


async def alias_traffic(
    session: AsyncSession, alias_id: int, dedup_key: str, since: datetime
) -> tuple[bool, int]:
    """Whether this alias already holds a message with `dedup_key`, and how many messages
    it received after `since`: one statement, two index lookups (the unique (alias_id,
    dedup_key) index and ix_message_alias_created)."""
    params = {"alias_id": alias_id, "dedup_key": dedup_key, "since": since}
    row = (await _ALIAS_TRAFFIC.rows(session, params)).one()
    return bool(row[0]), int(row[1])


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
    return (await (await connection_of(session)).execute(query)).first() is not None

"""Threading headers for one side: In-Reply-To/References in the Message-IDs that side knows."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel.ext.asyncio.session import AsyncSession

from relay.compose import MAX_REFERENCES, Threading
from storage.tickets import answered_msgid, recent_msgids


async def threading_for(
    session: AsyncSession,
    ticket_id: int,
    reader: str,
    *,
    exclude: int | None,
    author: str | None = None,
    cited: Sequence[str] = (),
) -> Threading:
    """Headers for a message to `reader` so its mail client threads the conversation.

    `cited` are the IDs the author's own mail referred to (in the author's namespace);
    the message they point at is answered, else the latest one the reader saw. The
    other side's IDs never appear: each entry is named by the ID the reader knows.
    """
    references = await recent_msgids(
        session, ticket_id, reader, exclude=exclude, limit=MAX_REFERENCES
    )
    in_reply_to = None
    if author and cited:
        in_reply_to = await answered_msgid(session, ticket_id, author, reader, cited)
    return Threading(
        in_reply_to=in_reply_to or (references[-1] if references else None),
        references=references,
    )

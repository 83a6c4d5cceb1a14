"""Attachment look-ups for downloads: a file's metadata, only within the owning partner."""

from __future__ import annotations

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.models import Attachment


async def attachment_for_partner(
    session: AsyncSession, partner_id: int, attachment_id: str
) -> Attachment | None:
    """The attachment if it is this partner's: claimed on a ticket, a fleet's email file, or
    an upload not yet claimed. The blob is not loaded, so a refusal costs one small query."""
    # Owner in the WHERE clause: another partner's file and a missing one take the same path.
    query = select(Attachment).where(
        Attachment.id == attachment_id, Attachment.partner_id == partner_id
    )
    return (await session.exec(query)).first()

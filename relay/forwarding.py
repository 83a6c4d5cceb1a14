"""Queue a stored inbound email for the other side of its ticket: as it arrives, or when the
partner releases held or quarantined mail."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup
from sqlmodel.ext.asyncio.session import AsyncSession

from relay.compose import FilePart
from relay.outgoing import Mailer, TicketBundle
from relay.threads import threading_for
from storage.models import Attachment, Message
from storage.tickets import FLEET, blob_data, other_side


async def stored_file(session: AsyncSession, attachment: Attachment) -> FilePart:
    """A stored attachment as a part of an email to send."""
    data = await blob_data(session, attachment.blob_id)
    return FilePart(attachment.filename, attachment.content_type, data, attachment.content_id)


async def forward_email(
    session: AsyncSession,
    mailer: Mailer,
    bundle: TicketBundle,
    message: Message,
    files: list[FilePart],
    cited: Sequence[str] = (),
) -> None:
    """`message` (already masked for its reader) to the side that did not write it, threaded
    under what it `cited` (IDs in the author's namespace) or the reader's latest mail."""
    assert bundle.ticket.id is not None and message.id is not None
    reader = other_side(message.author_side)
    threading = await threading_for(
        session,
        bundle.ticket.id,
        reader,
        exclude=message.id,
        author=message.author_side,
        cited=cited,
    )
    reader_msgid = message.fleet_msgid if reader == FLEET else message.partner_msgid
    assert reader_msgid is not None
    await mailer.queue(
        session,
        bundle,
        event="reply",
        to_side=reader,
        message=message,
        message_id=reader_msgid,
        threading=threading,
        files=files,
        body=message.body,
        quoted=message.quoted or "",
        # Sanitised by nh3 when it was read: the template may place it unescaped.
        html=Markup(message.html) if message.html else None,
        author_name=bundle.name_of(message.author_side),
    )

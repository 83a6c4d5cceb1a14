"""Categories and tags: the operator's classification that partners put on tickets."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.models import Category, Tag, TicketTag
from storage.types import utcnow


async def list_categories(session: AsyncSession, *, archived: bool = False) -> list[Category]:
    query = select(Category).order_by(col(Category.name))
    if not archived:
        query = query.where(col(Category.archived_at).is_(None))
    return list((await session.exec(query)).all())


async def category_by_name(session: AsyncSession, name: str) -> Category | None:
    return (await session.exec(select(Category).where(Category.name == name))).first()


async def usable_category(session: AsyncSession, category_id: int) -> Category | None:
    """A category a ticket may be given now: it exists and is not archived."""
    category = await session.get(Category, category_id)
    return category if category is not None and category.archived_at is None else None


async def category_family(session: AsyncSession, category_id: int) -> list[int]:
    """The category and its subcategories: filtering by a parent finds its children's tickets."""
    query = select(Category.id).where(col(Category.parent_id) == category_id)
    children = [int(i) for i in (await session.exec(query)).all() if i is not None]
    return [category_id, *children]


async def has_children(session: AsyncSession, category_id: int) -> bool:
    """Whether a category still has subcategories in use (archived ones do not count)."""
    query = select(Category.id).where(
        col(Category.parent_id) == category_id, col(Category.archived_at).is_(None)
    )
    return (await session.exec(query)).first() is not None


def archive(session: AsyncSession, row: Category | Tag) -> None:
    # Archived, not deleted: tickets that carry it keep their history readable.
    row.archived_at = utcnow()
    session.add(row)


async def list_tags(session: AsyncSession, *, archived: bool = False) -> list[Tag]:
    query = select(Tag).order_by(col(Tag.name))
    if not archived:
        query = query.where(col(Tag.archived_at).is_(None))
    return list((await session.exec(query)).all())


async def tag_clash(session: AsyncSession, name: str, keyword: str) -> Tag | None:
    query = select(Tag).where((col(Tag.name) == name) | (col(Tag.keyword) == keyword))
    return (await session.exec(query)).first()


async def usable_tags(session: AsyncSession, tag_ids: Collection[int]) -> dict[int, Tag]:
    if not tag_ids:
        return {}
    query = select(Tag).where(col(Tag.id).in_(list(tag_ids)), col(Tag.archived_at).is_(None))
    return {tag.id: tag for tag in (await session.exec(query)).all() if tag.id is not None}


async def tags_of(session: AsyncSession, ticket_ids: Collection[int]) -> dict[int, list[int]]:
    """Tag ids per ticket for a whole page of tickets in one query (no N+1)."""
    found: dict[int, list[int]] = {ticket_id: [] for ticket_id in ticket_ids}
    if not ticket_ids:
        return found
    query = (
        select(TicketTag.ticket_id, TicketTag.tag_id)
        .where(col(TicketTag.ticket_id).in_(list(ticket_ids)))
        .order_by(col(TicketTag.tag_id))
    )
    for ticket_id, tag_id in (await session.exec(query)).all():
        found[ticket_id].append(tag_id)
    return found


async def set_ticket_tags(
    session: AsyncSession, ticket_id: int, current: Sequence[int], wanted: Sequence[int]
) -> None:
    removed = set(current) - set(wanted)
    if removed:
        await session.exec(
            delete(TicketTag).where(
                col(TicketTag.ticket_id) == ticket_id, col(TicketTag.tag_id).in_(removed)
            )
        )
    session.add_all(TicketTag(ticket_id=ticket_id, tag_id=t) for t in set(wanted) - set(current))

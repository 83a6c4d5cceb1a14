"""Creating categories and tags, with the rules the admin API and the CLI share."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from relay.errors import Conflict, InvalidInput, NotFound
from storage import catalog
from storage.models import Category, Tag


async def create_category(
    session: AsyncSession, name: str, description: str | None, parent_id: int | None
) -> Category:
    """One level of nesting: a subcategory's parent must be a top-level category."""
    if parent_id is not None:
        parent = await catalog.usable_category(session, parent_id)
        if parent is None:
            raise InvalidInput({"parentId": f"No category with id {parent_id}."})
        if parent.parent_id is not None:
            raise InvalidInput({"parentId": "Subcategories cannot have subcategories."})
    if await catalog.category_by_name(session, name) is not None:
        raise Conflict(f"A category named {name!r} already exists.")
    category = Category(name=name, description=description, parent_id=parent_id)
    session.add(category)
    await session.flush()
    return category


async def create_tag(session: AsyncSession, name: str, keyword: str) -> Tag:
    if await catalog.tag_clash(session, name, keyword) is not None:
        raise Conflict("A tag with this name or keyword already exists.")
    tag = Tag(name=name, keyword=keyword)
    session.add(tag)
    await session.flush()
    return tag


async def archive_category(session: AsyncSession, category_id: int) -> None:
    category = await catalog.usable_category(session, category_id)
    if category is None:
        raise NotFound("category")
    if await catalog.has_children(session, category_id):
        raise Conflict("Archive this category's subcategories first.")
    catalog.archive(session, category)


async def archive_tag(session: AsyncSession, tag_id: int) -> None:
    tag = await session.get(Tag, tag_id)
    if tag is None or tag.archived_at is not None:
        raise NotFound("tag")
    catalog.archive(session, tag)

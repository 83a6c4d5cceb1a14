"""Creating categories and tags, with the rules the admin API and the CLI share."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
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
    existing = await catalog.category_by_name(session, name)
    if existing is not None:
        raise Conflict(_taken(f"A category named {name!r}", existing.archived_at is not None))
    category = Category(name=name, description=description, parent_id=parent_id)
    await _insert(session, category, f"A category named {name!r} already exists.")
    return category


async def create_tag(session: AsyncSession, name: str, keyword: str) -> Tag:
    clash = await catalog.tag_clash(session, name, keyword)
    if clash is not None:
        raise Conflict(_taken("A tag with this name or keyword", clash.archived_at is not None))
    tag = Tag(name=name, keyword=keyword)
    await _insert(session, tag, "A tag with this name or keyword already exists.")
    return tag


def _taken(what: str, archived: bool) -> str:
    # Archived rows keep their names so old tickets stay readable; say why a name is taken.
    return f"{what} already exists" + (" (archived)." if archived else ".")


async def _insert(session: AsyncSession, row: Category | Tag, clash: str) -> None:
    """Insert in a savepoint: a concurrent request that took the name first (PostgreSQL
    blocks on the unique index until it commits) becomes a 409, not a failed transaction."""
    try:
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError:
        raise Conflict(clash) from None


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

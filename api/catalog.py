"""Categories and tags: partners list them (`/v1/support/…`), the operator manages them
(`/v1/admin/…`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.auth import current_partner, relay_of, require_admin
from api.bodies import int_param, read_json
from api.idempotency import idempotency_of, once
from api.schemas import (
    CategoryCreate,
    CategoryList,
    CategoryPublic,
    CategoryUpdate,
    TagCreate,
    TagList,
    TagPublic,
)
from relay.errors import Conflict, InvalidInput, NotFound
from storage import catalog
from storage.db import transaction
from storage.models import Category, Tag

ADMIN_SCOPE = "admin"


def _tree(categories: list[Category]) -> CategoryList:
    """Top-level categories with their subcategories nested, each level sorted by name."""
    children: dict[int, list[CategoryPublic]] = {}
    for c in categories:
        if c.parent_id is not None:
            children.setdefault(c.parent_id, []).append(CategoryPublic.model_validate(c))
    top = [
        CategoryPublic.model_validate(c).model_copy(
            update={"subcategories": children.get(c.id or 0, [])}
        )
        for c in categories
        if c.parent_id is None
    ]
    return CategoryList(categories=top)


async def list_categories(request: Request) -> Response:
    await current_partner(request)
    async with relay_of(request).sessions() as session:
        categories = await catalog.list_categories(session)
    return JSONResponse(_tree(categories).dump())


async def list_tags(request: Request) -> Response:
    await current_partner(request)
    async with relay_of(request).sessions() as session:
        tags = await catalog.list_tags(session)
    return JSONResponse(TagList(tags=[TagPublic.model_validate(t) for t in tags]).dump())


async def admin_list_categories(request: Request) -> Response:
    require_admin(request)
    async with relay_of(request).sessions() as session:
        categories = await catalog.list_categories(session)
    return JSONResponse(_tree(categories).dump())


async def create_category(request: Request) -> Response:
    require_admin(request)
    relay = relay_of(request)
    body = await read_json(request, CategoryCreate)
    idempotency = await idempotency_of(request, ADMIN_SCOPE, relay.settings.idempotency_ttl)

    async def create() -> Response:
        async with transaction(relay.sessions) as session:
            if body.parent_id is not None:
                parent = await catalog.usable_category(session, body.parent_id)
                if parent is None:
                    raise InvalidInput({"parentId": f"No category with id {body.parent_id}."})
                if parent.parent_id is not None:
                    raise InvalidInput({"parentId": "Subcategories cannot have subcategories."})
            if await catalog.category_by_name(session, body.name) is not None:
                raise Conflict(f"A category named {body.name!r} already exists.")
            category = Category(
                name=body.name, description=body.description, parent_id=body.parent_id
            )
            session.add(category)
            await session.flush()
            out = CategoryPublic.model_validate(category).dump()
            location = f"/v1/admin/categories/{category.id}"
            if idempotency is not None:
                await idempotency.record(session, 201, out, location)
        return JSONResponse(out, status_code=201, headers={"Location": location})

    return await once(idempotency, relay.sessions, create)


async def update_category(request: Request) -> Response:
    require_admin(request)
    category_id = int_param(request, "categoryId", "category")
    body = await read_json(request, CategoryUpdate)
    async with transaction(relay_of(request).sessions) as session:
        category = await catalog.usable_category(session, category_id)
        if category is None:
            raise NotFound("category")
        if body.name is not None and body.name != category.name:
            if await catalog.category_by_name(session, body.name) is not None:
                raise Conflict(f"A category named {body.name!r} already exists.")
            category.name = body.name
        if "description" in body.model_fields_set:
            category.description = body.description
        session.add(category)
        await session.flush()
        out = CategoryPublic.model_validate(category).dump()
    return JSONResponse(out)


async def archive_category(request: Request) -> Response:
    require_admin(request)
    category_id = int_param(request, "categoryId", "category")
    async with transaction(relay_of(request).sessions) as session:
        category = await catalog.usable_category(session, category_id)
        if category is None:
            raise NotFound("category")
        if await catalog.has_children(session, category_id):
            raise Conflict("Archive this category's subcategories first.")
        catalog.archive(session, category)
    return Response(status_code=204)


async def admin_list_tags(request: Request) -> Response:
    require_admin(request)
    async with relay_of(request).sessions() as session:
        tags = await catalog.list_tags(session)
    return JSONResponse(TagList(tags=[TagPublic.model_validate(t) for t in tags]).dump())


async def create_tag(request: Request) -> Response:
    require_admin(request)
    relay = relay_of(request)
    body = await read_json(request, TagCreate)
    idempotency = await idempotency_of(request, ADMIN_SCOPE, relay.settings.idempotency_ttl)

    async def create() -> Response:
        async with transaction(relay.sessions) as session:
            if await catalog.tag_clash(session, body.name, body.keyword) is not None:
                raise Conflict("A tag with this name or keyword already exists.")
            tag = Tag(name=body.name, keyword=body.keyword)
            session.add(tag)
            await session.flush()
            out = TagPublic.model_validate(tag).dump()
            location = f"/v1/admin/tags/{tag.id}"
            if idempotency is not None:
                await idempotency.record(session, 201, out, location)
        return JSONResponse(out, status_code=201, headers={"Location": location})

    return await once(idempotency, relay.sessions, create)


async def archive_tag(request: Request) -> Response:
    require_admin(request)
    tag_id = int_param(request, "tagId", "tag")
    async with transaction(relay_of(request).sessions) as session:
        tag = await session.get(Tag, tag_id)
        if tag is None or tag.archived_at is not None:
            raise NotFound("tag")
        catalog.archive(session, tag)
    return Response(status_code=204)


routes = [
    Route("/v1/support/categories", list_categories, methods=["GET"]),
    Route("/v1/support/tags", list_tags, methods=["GET"]),
    Route("/v1/admin/categories", admin_list_categories, methods=["GET"]),
    Route("/v1/admin/categories", create_category, methods=["POST"]),
    Route("/v1/admin/categories/{categoryId}", update_category, methods=["PATCH"]),
    Route("/v1/admin/categories/{categoryId}", archive_category, methods=["DELETE"]),
    Route("/v1/admin/tags", admin_list_tags, methods=["GET"]),
    Route("/v1/admin/tags", create_tag, methods=["POST"]),
    Route("/v1/admin/tags/{tagId}", archive_tag, methods=["DELETE"]),
]

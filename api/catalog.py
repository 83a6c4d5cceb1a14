"""Categories and tags: partners list them (`/v1/support/…`), the operator manages them
(`/v1/admin/…`)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth import current_partner, relay_of, require_admin
from api.bodies import int_param, read_json
from api.contract import ApiRoute, Contract
from api.idempotency import idempotency_of, once, respond
from api.schemas import (
    CategoryCreate,
    CategoryList,
    CategoryPublic,
    CategoryUpdate,
    TagCreate,
    TagList,
    TagPublic,
)
from relay import catalog as rules
from relay.errors import Conflict, NotFound
from storage import catalog
from storage.db import transaction
from storage.models import Category

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
    async with relay_of(request).reads() as session:
        categories = await catalog.list_categories(session)
    return JSONResponse(_tree(categories).dump())


async def list_tags(request: Request) -> Response:
    await current_partner(request)
    async with relay_of(request).reads() as session:
        tags = await catalog.list_tags(session)
    return JSONResponse(TagList(tags=[TagPublic.model_validate(t) for t in tags]).dump())


async def admin_list_categories(request: Request) -> Response:
    require_admin(request)
    async with relay_of(request).reads() as session:
        categories = await catalog.list_categories(session)
    return JSONResponse(_tree(categories).dump())


async def create_category(request: Request) -> Response:
    require_admin(request)
    relay = relay_of(request)
    body = await read_json(request, CategoryCreate)
    idempotency = await idempotency_of(request, ADMIN_SCOPE, relay.settings.idempotency_ttl)

    async def create() -> Response:
        async with transaction(relay.sessions) as session:
            category = await rules.create_category(
                session, body.name, body.description, body.parent_id
            )
            out = CategoryPublic.model_validate(category).dump()
            location = f"/v1/admin/categories/{category.id}"
            return await respond(idempotency, session, out, location=location)

    return await once(idempotency, relay.reads, create)


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
        await rules.archive_category(session, category_id)
    return Response(status_code=204)


async def admin_list_tags(request: Request) -> Response:
    require_admin(request)
    async with relay_of(request).reads() as session:
        tags = await catalog.list_tags(session)
    return JSONResponse(TagList(tags=[TagPublic.model_validate(t) for t in tags]).dump())


async def create_tag(request: Request) -> Response:
    require_admin(request)
    relay = relay_of(request)
    body = await read_json(request, TagCreate)
    idempotency = await idempotency_of(request, ADMIN_SCOPE, relay.settings.idempotency_ttl)

    async def create() -> Response:
        async with transaction(relay.sessions) as session:
            tag = await rules.create_tag(session, body.name, body.keyword)
            out = TagPublic.model_validate(tag).dump()
            return await respond(idempotency, session, out, location=f"/v1/admin/tags/{tag.id}")

    return await once(idempotency, relay.reads, create)


async def archive_tag(request: Request) -> Response:
    require_admin(request)
    tag_id = int_param(request, "tagId", "tag")
    async with transaction(relay_of(request).sessions) as session:
        await rules.archive_tag(session, tag_id)
    return Response(status_code=204)


def _admin(summary: str, **kw: Any) -> Contract:
    return Contract(summary=summary, tag="admin", auth="admin", **kw)


routes = [
    ApiRoute(
        "/v1/support/categories",
        list_categories,
        "GET",
        Contract("List ticket categories", tag="classification", ok={200: CategoryList}),
    ),
    ApiRoute(
        "/v1/support/tags",
        list_tags,
        "GET",
        Contract("List ticket tags", tag="classification", ok={200: TagList}),
    ),
    ApiRoute(
        "/v1/admin/categories",
        admin_list_categories,
        "GET",
        _admin("List categories", ok={200: CategoryList}),
    ),
    ApiRoute(
        "/v1/admin/categories",
        create_category,
        "POST",
        _admin(
            "Create a category or subcategory",
            body=CategoryCreate,
            ok={201: CategoryPublic},
            errors=(409,),
            idempotent=True,
        ),
    ),
    ApiRoute(
        "/v1/admin/categories/{categoryId}",
        update_category,
        "PATCH",
        _admin(
            "Rename or describe a category",
            body=CategoryUpdate,
            ok={200: CategoryPublic},
            errors=(409,),
        ),
    ),
    ApiRoute(
        "/v1/admin/categories/{categoryId}",
        archive_category,
        "DELETE",
        _admin(
            "Archive a category (tickets keep it; it can no longer be chosen)",
            ok={204: None},
            errors=(409,),
        ),
    ),
    ApiRoute("/v1/admin/tags", admin_list_tags, "GET", _admin("List tags", ok={200: TagList})),
    ApiRoute(
        "/v1/admin/tags",
        create_tag,
        "POST",
        _admin("Create a tag", body=TagCreate, ok={201: TagPublic}, errors=(409,), idempotent=True),
    ),
    ApiRoute(
        "/v1/admin/tags/{tagId}",
        archive_tag,
        "DELETE",
        _admin("Archive a tag (tickets keep it)", ok={204: None}),
    ),
]

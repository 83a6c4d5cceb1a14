"""`support-relay category …` and `support-relay tag …`: the admin API's catalogue commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from api.schemas import CategoryCreate, CategoryPublic, TagCreate, TagPublic
from relay import catalog as rules
from relay.errors import RelayError
from relay.runtime import Relay
from storage import catalog
from storage.db import transaction


def add_parsers(sub: Any) -> None:
    category = sub.add_parser("category", help="manage ticket categories").add_subparsers(
        dest="action", required=True
    )
    add = category.add_parser("add", help="create a category (--parent makes a subcategory)")
    add.add_argument("--name", required=True)
    add.add_argument("--description")
    add.add_argument("--parent", type=int)
    category.add_parser("list", help="list categories")
    archive = category.add_parser("archive", help="archive a category by its id")
    archive.add_argument("category_id", type=int)

    tag = sub.add_parser("tag", help="manage ticket tags").add_subparsers(
        dest="action", required=True
    )
    add = tag.add_parser("add", help="create a tag")
    add.add_argument("--name", required=True)
    add.add_argument("--keyword", required=True)
    tag.add_parser("list", help="list tags")
    archive = tag.add_parser("archive", help="archive a tag by its id")
    archive.add_argument("tag_id", type=int)


async def run(relay: Relay, args: argparse.Namespace, emit: Callable[[Any], None]) -> int:
    """Validation goes through the same wire models and rules as the admin API."""
    try:
        async with transaction(relay.sessions) as session:
            if args.command == "category" and args.action == "add":
                body = CategoryCreate(
                    name=args.name, description=args.description, parent_id=args.parent
                )
                made = await rules.create_category(
                    session, body.name, body.description, body.parent_id
                )
                emit(CategoryPublic.model_validate(made).dump())
            elif args.command == "category" and args.action == "list":
                found = await catalog.list_categories(session)
                emit([CategoryPublic.model_validate(c).dump() for c in found])
            elif args.command == "category":
                await rules.archive_category(session, args.category_id)
                emit({"archived": args.category_id})
            elif args.action == "add":
                tag_body = TagCreate(name=args.name, keyword=args.keyword)
                tag = await rules.create_tag(session, tag_body.name, tag_body.keyword)
                emit(TagPublic.model_validate(tag).dump())
            elif args.action == "list":
                emit([TagPublic.model_validate(t).dump() for t in await catalog.list_tags(session)])
            else:
                await rules.archive_tag(session, args.tag_id)
                emit({"archived": args.tag_id})
    except RelayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0

"""`Idempotency-Key` on POSTs that create: the same key and request replay the first
response and create nothing; the same key with another request is a 422.

The record is written in the SAME transaction as what the request creates, together with
the exact response, so there is no window in which a ticket exists but its key does not
(a retry after a crash cannot create a second ticket or send a second email). Two
concurrent requests with one key race on the (owner, key) unique constraint: the loser's
transaction rolls back whole and it replays the winner's response.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from relay.errors import InvalidInput
from storage.db import SessionFactory
from storage.idempotency import forget_expired, live_record
from storage.models import IdempotencyRecord
from storage.types import utcnow

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, like a UUID or a request id


@dataclass(frozen=True)
class Idempotency:
    owner: str
    key: str
    fingerprint: str
    ttl: timedelta

    async def replay(self, reads: SessionFactory) -> Response | None:
        """The recorded response for this key, or None when the key is new (or expired)."""
        async with reads() as session:
            row = await live_record(session, self.owner, self.key)
        if row is None:
            return None
        if row.fingerprint != self.fingerprint:
            raise InvalidInput(
                {HEADER: "This key was already used for a different request; use a new key."}
            )
        headers = {REPLAYED: "true"}
        if row.location:
            headers["Location"] = row.location
        media = "application/problem+json" if row.status_code >= 400 else "application/json"
        return Response(row.body, row.status_code, headers=headers, media_type=media)

    async def record(
        self, session: AsyncSession, status: int, body: Any, location: str | None = None
    ) -> None:
        """Store the response in the creating transaction (flushed now, so a concurrent twin
        fails here, before anything commits)."""
        await forget_expired(session, self.owner, self.key)
        session.add(
            IdempotencyRecord(
                owner=self.owner,
                key=self.key,
                fingerprint=self.fingerprint,
                status_code=status,
                # Rendered exactly as the original response renders it: a replay is byte-equal.
                body=bytes(JSONResponse(body).body),
                location=location,
                expires_at=utcnow() + self.ttl,
            )
        )
        await session.flush()


def partner_scope(partner_id: int | None) -> str:
    """Whose keys these are: one partner's keys never meet another's (nor the operator's)."""
    return f"partner:{partner_id}"


async def respond(
    idempotency: Idempotency | None,
    session: AsyncSession,
    body: Any,
    *,
    status: int = 201,
    location: str | None = None,
) -> Response:
    """The response to a creating request, recorded for replays in the same transaction."""
    if idempotency is not None:
        await idempotency.record(session, status, body, location)
    headers = {"Location": location} if location else None
    return JSONResponse(body, status_code=status, headers=headers)


async def idempotency_of(
    request: Request, owner: str, ttl: int, content: bytes | None = None
) -> Idempotency | None:
    """The request's key, if it sent one. `content` is what identifies the request when the
    raw body does not (an upload's file rather than its multipart boundaries); by default
    the JSON body, canonicalised so whitespace and key order do not matter."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not _KEY.fullmatch(key):
        raise InvalidInput({HEADER: "Use 1 to 255 printable ASCII characters, e.g. a UUID."})
    if content is None:
        content = _canonical(await request.body())
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.url.path.encode(), content):
        digest.update(len(part).to_bytes(8, "big") + part)
    return Idempotency(owner, key, digest.hexdigest(), timedelta(seconds=ttl))


def _canonical(body: bytes) -> bytes:
    try:
        return json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, UnicodeDecodeError):
        return body


async def once(
    idempotency: Idempotency | None,
    reads: SessionFactory,
    create: Callable[[], Awaitable[Response]],
) -> Response:
    """Run `create` unless this key already has a response; replay it if a concurrent
    request with the same key committed first. `reads` only looks the key up: a read
    session, which on SQLite neither takes nor waits for the write lock."""
    if idempotency is not None:
        replayed = await idempotency.replay(reads)
        if replayed is not None:
            return replayed
    try:
        return await create()
    except IntegrityError:
        if idempotency is not None:
            replayed = await idempotency.replay(reads)
            if replayed is not None:
                return replayed
        raise

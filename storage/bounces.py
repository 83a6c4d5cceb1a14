"""Suppressed addresses and the relay's self-generated secrets."""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from sqlalchemy import bindparam, delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.db import connection_of
from storage.models import RelaySecret, Suppression
from storage.read_only import flush_pending, select_models

_SUPPRESSION = Suppression.__table__  # type: ignore[attr-defined]


_SUPPRESSIONS_OF, (_SUPPRESSION_COLUMNS,) = select_models((Suppression, _SUPPRESSION))
_SUPPRESSIONS_OF = _SUPPRESSIONS_OF.where(
    _SUPPRESSION.c.address.in_(bindparam("addresses", expanding=True))
)


async def suppressions_for(
    session: AsyncSession, addresses: Iterable[str]
) -> dict[str, Suppression]:
    """The suppressions of these addresses, keyed by lower-cased address; read-only
    instances (storage.read_only): every ticket detail shows them, nothing changes them."""
    wanted = {a.lower() for a in addresses if a}
    if not wanted:
        return {}
    await flush_pending(session)
    result = await (await connection_of(session)).execute(
        _SUPPRESSIONS_OF, {"addresses": list(wanted)}
    )
    found = (_SUPPRESSION_COLUMNS.build(row) for row in result)
    return {row.address: row for row in found}


async def suppressed_among(session: AsyncSession, addresses: Iterable[str]) -> set[str]:
    """Which of these addresses are suppressed, lower-cased: asked for every delivery
    round, so one Core query for the addresses, not ORM entities."""
    wanted = {a.lower() for a in addresses if a}
    if not wanted:
        return set()
    query = select(_SUPPRESSION.c.address).where(_SUPPRESSION.c.address.in_(wanted))
    result = await (await connection_of(session)).execute(query)
    return set(result.scalars().all())


async def suppress(
    session: AsyncSession,
    address: str,
    *,
    status: str | None,
    diagnostic: str | None,
    outbox_id: int | None,
) -> Suppression:
    """Suppress `address`, or return its existing suppression (the first bounce is kept)."""
    existing = await suppressions_for(session, [address])
    if existing:
        return next(iter(existing.values()))
    row = Suppression(
        address=address.lower(),
        status=status[:20] if status else None,
        diagnostic=diagnostic[:1000] if diagnostic else None,
        outbox_id=outbox_id,
    )
    session.add(row)
    return row


async def list_suppressions(session: AsyncSession) -> list[Suppression]:
    query = select(Suppression).order_by(col(Suppression.created_at), col(Suppression.id))
    return list((await session.exec(query)).all())


async def clear_suppression(session: AsyncSession, address: str) -> bool:
    """Lift a suppression; False when the address was not suppressed."""
    result = await session.exec(
        delete(Suppression).where(col(Suppression.address) == address.lower())
    )
    return bool(result.rowcount)


async def relay_secret(session: AsyncSession, name: str, size: int = 32) -> bytes:
    """The named secret, generated on first use. Instances racing to create it agree: the
    loser's insert fails and it reads the winner's value."""
    row = await session.get(RelaySecret, name)
    if row is not None:
        return row.value
    try:
        async with session.begin_nested():
            session.add(RelaySecret(name=name, value=secrets.token_bytes(size)))
    except IntegrityError:
        pass
    row = await session.get(RelaySecret, name, populate_existing=True)
    assert row is not None
    return row.value

"""Partners, fleets and API keys: random, shown once, stored hashed, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import bindparam
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.direct import Prepared
from storage.models import ApiKey, Fleet, Partner
from storage.read_only import select_models, table_of
from storage.types import utcnow

KEY_PREFIX = "sr"


@dataclass(frozen=True)
class IssuedKey:
    """A freshly issued key. `secret` is the only copy of the full key anywhere."""

    id: int
    partner_id: int
    secret: str


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def create_partner(
    session: AsyncSession, name: str, contact_email: str, allowed_senders: list[str]
) -> Partner:
    partner = Partner(name=name, contact_email=contact_email, allowed_senders=allowed_senders)
    session.add(partner)
    await session.flush()
    return partner


async def create_fleet(
    session: AsyncSession,
    name: str,
    support_email: str,
    allowed_senders: list[str],
    auth_policy: str | None = None,
) -> Fleet:
    fleet = Fleet(
        name=name,
        support_email=support_email,
        allowed_senders=allowed_senders,
        auth_policy=auth_policy,
    )
    session.add(fleet)
    await session.flush()
    return fleet


async def set_fleet_auth_policy(
    session: AsyncSession, fleet_id: int, auth_policy: str | None
) -> Fleet | None:
    fleet = await session.get(Fleet, fleet_id)
    if fleet is None:
        return None
    fleet.auth_policy = auth_policy
    session.add(fleet)
    await session.flush()
    return fleet


async def issue_key(session: AsyncSession, partner_id: int) -> IssuedKey:
    # The prefix finds the row by index; the secret half never leaves this function unhashed.
    prefix = secrets.token_hex(6)
    secret = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey(partner_id=partner_id, prefix=prefix, secret_hash=_hash(secret))
    session.add(key)
    await session.flush()
    assert key.id is not None
    return IssuedKey(id=key.id, partner_id=partner_id, secret=secret)


async def revoke_key(session: AsyncSession, key_id: int) -> bool:
    key = await session.get(ApiKey, key_id)
    if key is None:
        return False
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.add(key)
    return True


_KEYS, _PARTNERS = table_of(ApiKey), table_of(Partner)
# Every API request runs this: built once; the partner comes back as a read-only instance
# (storage.read_only), since nothing changes the caller's partner through the session.
_key_and_partner, (_PARTNER_COLUMNS,) = select_models(
    (Partner, _PARTNERS), leading=(_KEYS.c.secret_hash,)
)
_KEY_AND_PARTNER = Prepared(
    _key_and_partner.join_from(_KEYS, _PARTNERS, _PARTNERS.c.id == _KEYS.c.partner_id).where(
        _KEYS.c.prefix == bindparam("prefix"), _KEYS.c.revoked_at.is_(None)
    )
)


async def partner_for_key(engine: AsyncEngine, presented: str) -> Partner | None:
    """The partner owning a live key, or None. Unknown prefixes cost the same hash compare."""
    parts = presented.split("_", 2)
    prefix = parts[1] if len(parts) == 3 and parts[0] == KEY_PREFIX else ""
    # One keyed read for key and partner, outside any session: every API request pays it.
    found = (await _KEY_AND_PARTNER.read(engine, {"prefix": prefix})).first()
    expected = found[0] if found else _hash(secrets.token_hex(16))
    if not hmac.compare_digest(expected, _hash(presented)) or found is None:
        return None
    partner: Partner = _PARTNER_COLUMNS.build(found)
    return partner


async def list_partners(session: AsyncSession) -> list[Partner]:
    return list((await session.exec(select(Partner).order_by(col(Partner.id)))).all())


async def list_fleets(session: AsyncSession) -> list[Fleet]:
    return list((await session.exec(select(Fleet).order_by(col(Fleet.id)))).all())

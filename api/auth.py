"""`Authorization: ApiKey <key>` for partners and for the operator's admin key."""

from __future__ import annotations

import hmac

from starlette.exceptions import HTTPException
from starlette.requests import Request

from relay.runtime import Relay
from storage.accounts import partner_for_key
from storage.models import Partner

_CHALLENGE = {"WWW-Authenticate": "ApiKey"}


def relay_of(request: Request) -> Relay:
    relay = request.state.relay
    assert isinstance(relay, Relay)
    return relay


def _presented_key(request: Request) -> str:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "apikey" or not key.strip():
        raise HTTPException(401, "Send 'Authorization: ApiKey <key>'.", headers=_CHALLENGE)
    return key.strip()


async def current_partner(request: Request) -> Partner:
    key = _presented_key(request)
    partner = await partner_for_key(relay_of(request).engine, key)
    if partner is None:
        raise HTTPException(401, "The API key is unknown or revoked.", headers=_CHALLENGE)
    return partner


def require_admin(request: Request) -> None:
    expected = relay_of(request).settings.admin_key
    if not expected:
        # Admin API off: indistinguishable from a route that does not exist.
        raise HTTPException(404)
    key = _presented_key(request)
    if not hmac.compare_digest(key.encode(), expected.encode()):
        raise HTTPException(401, "The admin key is wrong.", headers=_CHALLENGE)

"""A trusted front MTA's Authentication-Results, read with authres and turned into a verdict."""

from __future__ import annotations

from collections.abc import Mapping

import authres
import authres.dmarc

from relay.auth_headers import field_value, header_fields
from relay.auth_verdict import (
    DKIM_RESULTS,
    DMARC_POLICIES,
    DMARC_RESULTS,
    SPF_RESULTS,
    AuthVerdict,
)
from relay.dmarc_check import identifiers_aligned
from relay.domain_names import domain_or_none

_AUTHRES = authres.FeatureContext(authres.dmarc)
_SPF_SYNONYMS = {"hardfail": "fail", "error": "temperror"}
_DKIM_SYNONYMS = {"neutral": "fail", "policy": "fail"}


def _property(result: object, ptype: str, name: str) -> str | None:
    for prop in getattr(result, "properties", ()):
        if str(prop.type).lower() == ptype and str(prop.name).lower() == name:
            return str(prop.value)
    return None


def trusted_results(raw: bytes, trusted_ids: frozenset[str]) -> tuple[str, list[object]] | None:
    """The topmost Authentication-Results field by a trusted authserv-id, parsed.

    None when there is none, or when a field above it cannot be parsed: the message is then
    evaluated here instead.
    """
    fields, _ = header_fields(raw)
    for field in fields:
        if field.name != b"authentication-results":
            continue
        try:
            header = _AUTHRES.parse_value(field_value(raw, field).decode("utf-8"))
        except Exception:
            return None
        authserv_id = str(header.authserv_id).lower()
        if authserv_id in trusted_ids:
            return authserv_id, list(header.results)
    return None


def verdict_from_results(authserv_id: str, results: list[object], from_domain: str) -> AuthVerdict:
    """The verdict the front MTA's results state; values outside RFC 8601's are permerror."""

    def results_for(method: str) -> list[object]:
        return [r for r in results if str(getattr(r, "method", "")).lower() == method]

    def outcome(result: object, allowed: frozenset[str], synonyms: Mapping[str, str]) -> str:
        value = str(getattr(result, "result", "")).lower()
        value = synonyms.get(value, value)
        return value if value in allowed else "permerror"

    spf_result, spf_domain = "none", None
    spf_results = results_for("spf")
    if spf_results:
        spf_result = outcome(spf_results[0], SPF_RESULTS, _SPF_SYNONYMS)
        identity = _property(spf_results[0], "smtp", "mailfrom") or _property(
            spf_results[0], "smtp", "helo"
        )
        spf_domain = domain_or_none(identity.rpartition("@")[2] if identity else None)

    dkim_outcomes: list[str] = []
    dkim_domains: list[str] = []
    for result in results_for("dkim"):
        verdict = outcome(result, DKIM_RESULTS, _DKIM_SYNONYMS)
        dkim_outcomes.append(verdict)
        identity = _property(result, "header", "d") or _property(result, "header", "i")
        domain = domain_or_none(identity.rpartition("@")[2] if identity else None)
        if verdict == "pass" and domain and domain not in dkim_domains:
            dkim_domains.append(domain)
    dkim_result = "none"
    for candidate in ("pass", "temperror", "fail", "permerror", "none"):
        if candidate in dkim_outcomes:
            dkim_result = candidate
            break

    dmarc_result, dmarc_policy = "none", None
    dmarc_results = results_for("dmarc")
    if dmarc_results:
        dmarc_result = outcome(dmarc_results[0], DMARC_RESULTS, {})
        policy = (_property(dmarc_results[0], "policy", "dmarc") or "").lower()
        dmarc_policy = policy if policy in DMARC_POLICIES else None

    aligned = dmarc_result == "pass" or identifiers_aligned(
        from_domain, spf_result, spf_domain, dkim_domains if dkim_result == "pass" else ()
    )
    return AuthVerdict(
        spf=spf_result,
        spf_domain=spf_domain,
        dkim=dkim_result,
        dkim_domains=tuple(dkim_domains),
        dmarc=dmarc_result,
        dmarc_policy=dmarc_policy,
        from_domain=from_domain,
        aligned=aligned,
        source=f"trusted:{authserv_id}",
    )

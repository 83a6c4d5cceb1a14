"""DMARC for one message: organizational domains, identifier alignment, the published policy."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

import dmarc
from publicsuffix2 import PublicSuffixList

from relay.auth_verdict import DMARC_POLICIES
from relay.dns import DnsTemporaryError
from relay.lookup_scope import LookupScope

_DMARC_VERSION = re.compile(r"\s*[vV]\s*=\s*DMARC1\s*(;|\Z)")
# RFC 7489 §6.6.4: mail not selected by pct= gets the next less strict policy.
_MILDER = {"reject": "quarantine", "quarantine": "none", "none": "none"}


@functools.cache
def public_suffixes() -> PublicSuffixList:
    """The Public Suffix List, parsed once per process."""
    # The list bundled with publicsuffix2: read from the package, never fetched.
    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """RFC 7489 §3.2: the public suffix plus one label (the domain itself if it is a suffix)."""
    name = domain.lower().rstrip(".")
    labels = name.split(".")
    # get_tld applies the PSL's default "*" rule to unknown TLDs (so x.a.example → a.example);
    # get_sld does not, and would call "example" the organizational domain.
    suffix = public_suffixes().get_tld(name, wildcard=True, strict=False)
    suffix_labels = str(suffix).count(".") + 1 if suffix else 1
    if len(labels) <= suffix_labels:
        return name
    return ".".join(labels[-(suffix_labels + 1) :])


def is_aligned(identifier: str, from_domain: str, *, strict: bool) -> bool:
    """DMARC identifier alignment: equal domains (strict), or equal organizational domains."""
    a = identifier.lower().rstrip(".")
    b = from_domain.lower().rstrip(".")
    if not a or not b:
        return False
    if strict:
        return a == b
    return organizational_domain(a) == organizational_domain(b)


def identifiers_aligned(
    from_domain: str,
    spf_result: str,
    spf_domain: str | None,
    dkim_domains: Iterable[str],
    *,
    strict_spf: bool = False,
    strict_dkim: bool = False,
) -> bool:
    """True when a passing SPF domain or any DKIM signing domain is aligned with From."""
    if (
        spf_result == "pass"
        and spf_domain
        and is_aligned(spf_domain, from_domain, strict=strict_spf)
    ):
        return True
    return any(is_aligned(d, from_domain, strict=strict_dkim) for d in dkim_domains)


@dataclass(frozen=True)
class DmarcOutcome:
    result: str
    policy: str | None  # the policy that applies: p= (or sp=), one step milder when pct<100
    aligned: bool


def _dmarc_records(scope: LookupScope, domain: str) -> list[str]:
    texts = scope.resolver.txt(f"_dmarc.{domain}", lifetime=scope.remaining())
    # RFC 7489 §6.6.3: records not starting with v=DMARC1 are discarded.
    return [text for text in texts if _DMARC_VERSION.match(text)]


def check_dmarc(
    scope: LookupScope,
    from_domain: str,
    spf_result: str,
    spf_domain: str | None,
    dkim_result: str,
    dkim_domains: tuple[str, ...],
) -> DmarcOutcome:
    """The DMARC result; not aligned with a check that could not finish is temperror, not fail."""
    relaxed = identifiers_aligned(from_domain, spf_result, spf_domain, dkim_domains)
    org_domain = organizational_domain(from_domain)
    try:
        found_at = from_domain
        records = _dmarc_records(scope, from_domain)
        if not records and org_domain != from_domain:
            found_at = org_domain
            records = _dmarc_records(scope, org_domain)
    except DnsTemporaryError:
        return DmarcOutcome("temperror", None, relaxed)
    if not records:
        return DmarcOutcome("none", None, relaxed)
    if len(records) > 1:
        return DmarcOutcome("permerror", None, relaxed)
    policy = dmarc.Policy(
        "DMARC1", from_domain, org_domain=None if found_at == from_domain else found_at
    )
    try:
        # Lenient: an invalid optional tag falls back to its default, a bad p= still fails.
        policy.parse_record(records[0], strict=False)
    except dmarc.Error:
        return DmarcOutcome("permerror", None, relaxed)
    disposition = policy.p
    if found_at != from_domain and policy.sp is not dmarc.DMARCDisposition.UNSPECIFIED:
        disposition = policy.sp
    published = disposition.value if disposition.value in DMARC_POLICIES else None
    if published is not None and policy.pct < 100:
        # RFC 7489 samples pct% of failing mail for the policy and gives the rest the next
        # milder one. We give every message the milder one, without random sampling: a
        # sender's retry (after a 451, or a resend) must get the same answer as the first
        # attempt, and a domain still rolling its policy out never has mail refused on a draw.
        published = _MILDER[published]
    aligned = identifiers_aligned(
        from_domain,
        spf_result,
        spf_domain,
        dkim_domains,
        strict_spf=policy.aspf is dmarc.DMARCAlignment.STRICT,
        strict_dkim=policy.adkim is dmarc.DMARCAlignment.STRICT,
    )
    if aligned:
        return DmarcOutcome("pass", published, True)
    if "temperror" in (spf_result, dkim_result):
        return DmarcOutcome("temperror", published, False)
    return DmarcOutcome("fail", published, False)

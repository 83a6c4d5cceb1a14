"""SPF, DKIM and DMARC verdicts for one inbound message; every lookup goes through relay.dns.

`Authenticator.evaluate` never raises: bad input maps to permerror, DNS trouble and running
out of time map to temperror. It ignores every Authentication-Results, ARC-Authentication-
Results and Received-SPF field a message arrives with, except the one an operator-configured
front MTA (a trusted IP and a trusted authserv-id) put on top.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import ipaddress
import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import authres
import authres.dmarc
import dkim
import dmarc
import spf
from publicsuffix2 import PublicSuffixList

from relay.dns import DnsTemporaryError, Resolver

log = logging.getLogger(__name__)
# dkimpy logs every unusable key of every sender at ERROR; give it a name operators can quiet.
_dkimpy_log = logging.getLogger(f"{__name__}.dkimpy")

SPF_RESULTS = frozenset({"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"})
DKIM_RESULTS = frozenset({"pass", "fail", "none", "temperror", "permerror"})
DMARC_RESULTS = DKIM_RESULTS
DMARC_POLICIES = frozenset({"none", "quarantine", "reject"})

# Each signature may cost a key lookup; a message with hundreds of them gets no more work.
MAX_DKIM_SIGNATURES = 8
MIN_DKIM_KEY_BITS = 1024

_HOSTNAME_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)", re.ASCII | re.IGNORECASE)
_DMARC_VERSION = re.compile(r"\s*[vV]\s*=\s*DMARC1\s*(;|\Z)")
_STRIPPED_FIELDS = frozenset(
    {b"authentication-results", b"arc-authentication-results", b"received-spf"}
)


def is_hostname(value: str) -> bool:
    """An LDH host name (A-labels only), optionally with a final dot: safe inside a header."""
    name = value[:-1] if value.endswith(".") else value
    if not name or len(name) > 253 or not name.isascii():
        return False
    return all(_HOSTNAME_LABEL.fullmatch(label) for label in name.split("."))


def _ascii_domain(value: str) -> str:
    """Lower case, no final dot, U-labels as A-labels when they convert (else unchanged)."""
    name = value.strip().lower().rstrip(".")
    if name and not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            pass
    return name


def _domain_or_none(value: str | None) -> str | None:
    if value is None:
        return None
    name = value.strip().lower().rstrip(".")
    return name if is_hostname(name) else None


# -- the verdict ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthVerdict:
    spf: str
    spf_domain: str | None
    dkim: str
    dkim_domains: tuple[str, ...]
    dmarc: str
    dmarc_policy: str | None
    from_domain: str
    aligned: bool
    source: str

    def __post_init__(self) -> None:
        if self.spf not in SPF_RESULTS:
            raise ValueError(f"unknown SPF result {self.spf!r}")
        if self.dkim not in DKIM_RESULTS:
            raise ValueError(f"unknown DKIM result {self.dkim!r}")
        if self.dmarc not in DMARC_RESULTS:
            raise ValueError(f"unknown DMARC result {self.dmarc!r}")
        if self.dmarc_policy is not None and self.dmarc_policy not in DMARC_POLICIES:
            raise ValueError(f"unknown DMARC policy {self.dmarc_policy!r}")

    def as_dict(self) -> dict[str, object]:
        return {
            "spf": self.spf,
            "spfDomain": self.spf_domain,
            "dkim": self.dkim,
            "dkimDomains": list(self.dkim_domains),
            "dmarc": self.dmarc,
            "dmarcPolicy": self.dmarc_policy,
            "fromDomain": self.from_domain,
            "aligned": self.aligned,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> AuthVerdict:
        """The inverse of `as_dict`; ValueError when a member is missing or of the wrong type."""

        def text(key: str) -> str:
            value = data.get(key)
            if not isinstance(value, str):
                raise ValueError(f"{key} must be a string")
            return value

        def optional_text(key: str) -> str | None:
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{key} must be a string or null")
            return value

        domains = data.get("dkimDomains")
        if not isinstance(domains, list | tuple) or not all(isinstance(d, str) for d in domains):
            raise ValueError("dkimDomains must be a list of strings")
        aligned = data.get("aligned")
        if not isinstance(aligned, bool):
            raise ValueError("aligned must be a boolean")
        return cls(
            spf=text("spf"),
            spf_domain=optional_text("spfDomain"),
            dkim=text("dkim"),
            dkim_domains=tuple(str(d) for d in domains),
            dmarc=text("dmarc"),
            dmarc_policy=optional_text("dmarcPolicy"),
            from_domain=text("fromDomain"),
            aligned=aligned,
            source=text("source"),
        )

    def header_value(self, authserv_id: str) -> str:
        """An RFC 8601 Authentication-Results value; only valid host names are carried over."""
        if not is_hostname(authserv_id):
            raise ValueError(f"authserv-id must be a host name, got {authserv_id!r}")
        parts = [authserv_id.lower()]
        spf_domain = _domain_or_none(self.spf_domain)
        parts.append(f"spf={self.spf}" + (f" smtp.mailfrom={spf_domain}" if spf_domain else ""))
        dkim_domains = [d for d in map(_domain_or_none, self.dkim_domains) if d]
        if self.dkim == "pass" and dkim_domains:
            parts.extend(f"dkim=pass header.d={domain}" for domain in dkim_domains)
        else:
            parts.append(f"dkim={self.dkim}")
        dmarc_part = f"dmarc={self.dmarc}"
        if self.dmarc_policy is not None:
            dmarc_part += f" (p={self.dmarc_policy})"
        from_domain = _domain_or_none(self.from_domain)
        if from_domain:
            dmarc_part += f" header.from={from_domain}"
        parts.append(dmarc_part)
        return "; ".join(parts)


def _unavailable(from_domain: str, spf_domain: str | None, source: str = "relay") -> AuthVerdict:
    return AuthVerdict(
        spf="temperror",
        spf_domain=spf_domain,
        dkim="temperror",
        dkim_domains=(),
        dmarc="temperror",
        dmarc_policy=None,
        from_domain=from_domain,
        aligned=False,
        source=source,
    )


# -- header section scanning ---------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    name: bytes  # lower-cased; b"" for a line that is not a field
    start: int
    end: int


def _header_fields(raw: bytes) -> tuple[list[_Field], int]:
    """The header section's fields as byte spans (with their folded lines), and where it ends."""
    fields: list[_Field] = []
    pos = 0
    while pos < len(raw):
        newline = raw.find(b"\n", pos)
        end = len(raw) if newline < 0 else newline + 1
        line = raw[pos:end]
        if line in (b"\n", b"\r\n"):
            break
        if line[:1] in (b" ", b"\t") and fields:
            last = fields[-1]
            fields[-1] = _Field(last.name, last.start, end)
        else:
            colon = line.find(b":")
            name = line[:colon].rstrip(b" \t").lower() if colon > 0 else b""
            fields.append(_Field(name, pos, end))
        pos = end
    return fields, pos


def strip_authentication_results(raw: bytes) -> bytes:
    """The message without any Authentication-Results, ARC-Authentication-Results or
    Received-SPF field (folded lines included); all other bytes, the body above all, unchanged.
    """
    fields, body_start = _header_fields(raw)
    kept = [raw[f.start : f.end] for f in fields if f.name not in _STRIPPED_FIELDS]
    return b"".join(kept) + raw[body_start:]


def _field_value(raw: bytes, field: _Field) -> bytes:
    text = raw[field.start : field.end]
    value = text[text.find(b":") + 1 :]
    return re.sub(rb"\r?\n(?=[ \t])", b"", value).strip(b"\r\n")


# -- organizational domains and alignment ---------------------------------------------------


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    # The list bundled with publicsuffix2: read from the package, never fetched.
    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """RFC 7489 §3.2: the public suffix plus one label (the domain itself if it is a suffix)."""
    name = domain.lower().rstrip(".")
    labels = name.split(".")
    # get_tld applies the PSL's default "*" rule to unknown TLDs (so x.a.example → a.example);
    # get_sld does not, and would call "example" the organizational domain.
    suffix = _public_suffixes().get_tld(name, wildcard=True, strict=False)
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


def _alignment(
    from_domain: str,
    spf_result: str,
    spf_domain: str | None,
    dkim_domains: Iterable[str],
    *,
    strict_spf: bool = False,
    strict_dkim: bool = False,
) -> bool:
    if (
        spf_result == "pass"
        and spf_domain
        and is_aligned(spf_domain, from_domain, strict=strict_spf)
    ):
        return True
    return any(is_aligned(d, from_domain, strict=strict_dkim) for d in dkim_domains)


# -- the lookups' time budget and the pyspf hook -------------------------------------------


@dataclass(frozen=True)
class _Scope:
    """One evaluation's resolver and deadline, handed to the worker threads."""

    resolver: Resolver
    deadline: float

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


# pyspf resolves through its module-level function `spf.DNSLookup` and has no parameter for
# a resolver. We replace that global once, with a dispatcher that finds the current
# evaluation's resolver in a ContextVar set inside the worker thread (asyncio.to_thread runs
# it in a copy of the caller's context, so concurrent evaluations never see each other's).
# Outside an evaluation the dispatcher defers to pyspf's own lookup.
_SPF_SCOPE: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar(
    "relay_spf_scope", default=None
)
_SPF_HOOK_LOCK = threading.Lock()
_spf_original_lookup: object = None


def _spf_dns_lookup(
    name: str, qtype: str, strict: object = True, timeout: float = 20.0
) -> list[tuple[tuple[str, str], object]]:
    scope = _SPF_SCOPE.get()
    if scope is None:
        if callable(_spf_original_lookup):
            result: list[tuple[tuple[str, str], object]] = _spf_original_lookup(
                name, qtype, strict, timeout
            )
            return result
        raise spf.TempError("DNS: no resolver for this SPF check")
    lifetime = min(float(timeout), scope.remaining())
    resolver = scope.resolver
    values: Sequence[object]
    try:
        if qtype == "A":
            values = resolver.a(name, lifetime=lifetime)
        elif qtype == "AAAA":
            values = resolver.aaaa(name, lifetime=lifetime)
        elif qtype == "MX":
            values = resolver.mx(name, lifetime=lifetime)
        elif qtype == "PTR":
            values = resolver.ptr(name, lifetime=lifetime)
        elif qtype == "TXT":
            # pyspf joins each record's character-strings itself; ours are joined already.
            values = [[value] for value in resolver.txt_bytes(name, lifetime=lifetime)]
        else:
            values = []  # type SPF (99) is obsolete, RFC 7208 §3.1
    except DnsTemporaryError as exc:
        raise spf.TempError(f"DNS {exc}") from exc
    return [((name, qtype), value) for value in values]


def _install_spf_hook() -> None:
    global _spf_original_lookup
    with _SPF_HOOK_LOCK:
        if spf.DNSLookup is not _spf_dns_lookup:
            _spf_original_lookup = spf.DNSLookup
            spf.DNSLookup = _spf_dns_lookup


# -- the three checks, each run in a worker thread -----------------------------------------


def _normal_ip(client_ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(client_ip.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _spf_identity(mail_from: str, helo: str) -> tuple[str, str | None]:
    """The sender pyspf should check and the domain it checks (RFC 7208 §2.4)."""
    sender = mail_from.strip().strip("<>").strip()
    if not sender:
        domain = helo.strip().lower().rstrip(".")
        return "", domain or None
    local, at, domain = sender.rpartition("@")
    domain = domain.lower().rstrip(".")
    if not at:
        return f"postmaster@{domain}", domain or None
    # pyspf splits at the first "@": a quoted local part holding one would mislead it.
    if not local or "@" in local:
        local = "postmaster"
    return f"{local}@{domain}", domain or None


def _check_spf(scope: _Scope, client_ip: str, sender: str, helo: str) -> str:
    token = _SPF_SCOPE.set(scope)
    try:
        budget = max(scope.remaining(), 0.001)
        result, _explanation = spf.check2(
            i=client_ip, s=sender, h=helo.strip(), timeout=budget, querytime=budget
        )
    except spf.TempError:
        return "temperror"
    except spf.PermError:
        return "permerror"
    except Exception:
        # pyspf failing on some input is deterministic: asking again would not help.
        log.warning("SPF check failed for sender %r", sender, exc_info=True)
        return "permerror"
    finally:
        _SPF_SCOPE.reset(token)
    verdict = str(result)
    return verdict if verdict in SPF_RESULTS else "permerror"


def _check_dkim(scope: _Scope, message: bytes) -> tuple[str, tuple[str, ...]]:
    """("pass", domains) when any signature verifies; else the most telling failure."""
    fields, _ = _header_fields(message)
    if not any(f.name == b"dkim-signature" for f in fields):
        return "none", ()
    key_trouble: set[bytes] = set()

    def lookup_key(name: bytes, timeout: float = 5.0) -> bytes | None:
        try:
            text = name.decode("ascii")
        except UnicodeDecodeError:
            key_trouble.add(name)
            return None
        records = scope.resolver.txt_bytes(text, lifetime=min(timeout, scope.remaining()))
        if not records:
            key_trouble.add(name)
            return None
        try:
            dkim.evaluate_pk(name, records[0])
        except Exception:
            key_trouble.add(name)
        return records[0]

    try:
        verifier = dkim.DKIM(
            message,
            logger=_dkimpy_log,
            minkey=MIN_DKIM_KEY_BITS,
            timeout=max(scope.remaining(), 0.001),
        )
        count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    except Exception:
        return "permerror", ()
    outcomes: list[str] = []
    domains: list[str] = []
    for index in range(min(count, MAX_DKIM_SIGNATURES)):
        key_trouble.clear()
        try:
            good = verifier.verify(idx=index, dnsfunc=lookup_key)
        except DnsTemporaryError:
            outcomes.append("temperror")
            continue
        except dkim.ValidationError as exc:
            # dkimpy reports an altered body as a ValidationError like malformed tags;
            # only the former is a signature that failed rather than one that was unusable.
            outcomes.append("fail" if "body hash mismatch" in str(exc) else "permerror")
            continue
        except Exception:
            outcomes.append("permerror")
            continue
        if good:
            outcomes.append("pass")
            domain = bytes(verifier.domain).decode("ascii", "replace").lower()
            if domain not in domains:
                domains.append(domain)
        else:
            outcomes.append("permerror" if key_trouble else "fail")
    if "pass" in outcomes:
        return "pass", tuple(domains)
    for outcome in ("temperror", "fail"):
        if outcome in outcomes:
            return outcome, ()
    return "permerror", ()


@dataclass(frozen=True)
class _DmarcOutcome:
    result: str
    policy: str | None
    aligned: bool


def _dmarc_records(scope: _Scope, domain: str) -> list[str]:
    texts = scope.resolver.txt(f"_dmarc.{domain}", lifetime=scope.remaining())
    # RFC 7489 §6.6.3: records not starting with v=DMARC1 are discarded.
    return [text for text in texts if _DMARC_VERSION.match(text)]


def _check_dmarc(
    scope: _Scope,
    from_domain: str,
    spf_result: str,
    spf_domain: str | None,
    dkim_result: str,
    dkim_domains: tuple[str, ...],
) -> _DmarcOutcome:
    """The DMARC result; not aligned with a check that could not finish is temperror, not fail."""
    relaxed = _alignment(from_domain, spf_result, spf_domain, dkim_domains)
    org_domain = organizational_domain(from_domain)
    try:
        found_at = from_domain
        records = _dmarc_records(scope, from_domain)
        if not records and org_domain != from_domain:
            found_at = org_domain
            records = _dmarc_records(scope, org_domain)
    except DnsTemporaryError:
        return _DmarcOutcome("temperror", None, relaxed)
    if not records:
        return _DmarcOutcome("none", None, relaxed)
    if len(records) > 1:
        return _DmarcOutcome("permerror", None, relaxed)
    policy = dmarc.Policy(
        "DMARC1", from_domain, org_domain=None if found_at == from_domain else found_at
    )
    try:
        # Lenient: an invalid optional tag falls back to its default, a bad p= still fails.
        policy.parse_record(records[0], strict=False)
    except dmarc.Error:
        return _DmarcOutcome("permerror", None, relaxed)
    disposition = policy.p
    if found_at != from_domain and policy.sp is not dmarc.DMARCDisposition.UNSPECIFIED:
        disposition = policy.sp
    published = disposition.value if disposition.value in DMARC_POLICIES else None
    aligned = _alignment(
        from_domain,
        spf_result,
        spf_domain,
        dkim_domains,
        strict_spf=policy.aspf is dmarc.DMARCAlignment.STRICT,
        strict_dkim=policy.adkim is dmarc.DMARCAlignment.STRICT,
    )
    if aligned:
        return _DmarcOutcome("pass", published, True)
    if "temperror" in (spf_result, dkim_result):
        return _DmarcOutcome("temperror", published, False)
    return _DmarcOutcome("fail", published, False)


# -- results from a trusted front MTA ------------------------------------------------------

_AUTHRES = authres.FeatureContext(authres.dmarc)
_SPF_SYNONYMS = {"hardfail": "fail", "error": "temperror"}
_DKIM_SYNONYMS = {"neutral": "fail", "policy": "fail"}


def _property(result: object, ptype: str, name: str) -> str | None:
    for prop in getattr(result, "properties", ()):
        if str(prop.type).lower() == ptype and str(prop.name).lower() == name:
            return str(prop.value)
    return None


def _trusted_results(raw: bytes, trusted_ids: frozenset[str]) -> tuple[str, list[object]] | None:
    """The topmost Authentication-Results field by a trusted authserv-id, parsed.

    None when there is none, or when a field above it cannot be parsed: the message is then
    evaluated here instead.
    """
    fields, _ = _header_fields(raw)
    for field in fields:
        if field.name != b"authentication-results":
            continue
        try:
            header = _AUTHRES.parse_value(_field_value(raw, field).decode("utf-8"))
        except Exception:
            return None
        authserv_id = str(header.authserv_id).lower()
        if authserv_id in trusted_ids:
            return authserv_id, list(header.results)
    return None


def _verdict_from_results(authserv_id: str, results: list[object], from_domain: str) -> AuthVerdict:
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
        spf_domain = _domain_or_none(identity.rpartition("@")[2] if identity else None)

    dkim_outcomes: list[str] = []
    dkim_domains: list[str] = []
    for result in results_for("dkim"):
        verdict = outcome(result, DKIM_RESULTS, _DKIM_SYNONYMS)
        dkim_outcomes.append(verdict)
        identity = _property(result, "header", "d") or _property(result, "header", "i")
        domain = _domain_or_none(identity.rpartition("@")[2] if identity else None)
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

    aligned = dmarc_result == "pass" or _alignment(
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


# -- the service ---------------------------------------------------------------------------


class Authenticator:
    """Evaluates SPF, DKIM and DMARC for inbound messages within a time budget."""

    def __init__(
        self,
        resolver: Resolver,
        *,
        authserv_id: str,
        trusted_front: Sequence[str] = (),
        trusted_authserv_ids: Sequence[str] = (),
        timeout: float = 10.0,
    ) -> None:
        if not is_hostname(authserv_id):
            raise ValueError(f"authserv-id must be a host name, got {authserv_id!r}")
        if timeout <= 0:
            raise ValueError("authentication timeout must be positive")
        self.resolver = resolver
        self.authserv_id = authserv_id.lower()
        self.timeout = timeout
        self.trusted_front = tuple(
            ipaddress.ip_network(entry.strip(), strict=False) for entry in trusted_front
        )
        self.trusted_authserv_ids = frozenset(i.strip().lower() for i in trusted_authserv_ids)
        _install_spf_hook()
        _public_suffixes()  # parse the list now, not on the event loop during a message

    def is_trusted_front(self, client_ip: str) -> bool:
        address = _normal_ip(client_ip)
        if address is None:
            return False
        return any(address in network for network in self.trusted_front)

    async def evaluate(
        self, raw: bytes, *, client_ip: str, helo: str, mail_from: str, from_domain: str
    ) -> AuthVerdict:
        deadline = time.monotonic() + self.timeout
        from_name = _ascii_domain(from_domain)
        sender, spf_domain = _spf_identity(mail_from, helo)
        try:
            if self.trusted_authserv_ids and self.is_trusted_front(client_ip):
                found = await asyncio.wait_for(
                    asyncio.to_thread(_trusted_results, raw, self.trusted_authserv_ids),
                    timeout=self.timeout,
                )
                if found is not None:
                    return _verdict_from_results(found[0], found[1], from_name)
            return await self._evaluate_here(
                raw, _Scope(self.resolver, deadline), client_ip, helo, sender, spf_domain, from_name
            )
        except Exception:
            log.exception("authentication checks failed unexpectedly")
            return _unavailable(from_name, spf_domain)

    async def _evaluate_here(
        self,
        raw: bytes,
        scope: _Scope,
        client_ip: str,
        helo: str,
        sender: str,
        spf_domain: str | None,
        from_domain: str,
    ) -> AuthVerdict:
        address = _normal_ip(client_ip)
        spf_task: asyncio.Future[str] | None = None
        if address is not None and (sender or spf_domain):
            spf_task = asyncio.ensure_future(
                asyncio.to_thread(_check_spf, scope, str(address), sender, helo)
            )
        dkim_task = asyncio.ensure_future(asyncio.to_thread(self._stripped_dkim, scope, raw))
        pending_tasks: set[asyncio.Future[Any]] = {dkim_task}
        if spf_task is not None:
            pending_tasks.add(spf_task)
        _, pending = await asyncio.wait(pending_tasks, timeout=max(scope.remaining(), 0))
        for task in pending:
            # The worker thread runs on until its DNS lifetime (bounded by the deadline) ends.
            task.cancel()

        if address is None:
            spf_result = "permerror"
        elif spf_task is None:
            spf_result = "none"
        else:
            spf_result = "temperror" if spf_task in pending else spf_task.result()
        dkim_result, dkim_domains = (
            ("temperror", ()) if dkim_task in pending else dkim_task.result()
        )

        if not is_hostname(from_domain):
            dmarc_outcome = _DmarcOutcome("permerror", None, False)
        else:
            try:
                dmarc_outcome = await asyncio.wait_for(
                    asyncio.to_thread(
                        _check_dmarc,
                        scope,
                        from_domain,
                        spf_result,
                        spf_domain,
                        dkim_result,
                        dkim_domains,
                    ),
                    timeout=max(scope.remaining(), 0),
                )
            except TimeoutError:
                dmarc_outcome = _DmarcOutcome(
                    "temperror",
                    None,
                    _alignment(from_domain, spf_result, spf_domain, dkim_domains),
                )
        return AuthVerdict(
            spf=spf_result,
            spf_domain=spf_domain,
            dkim=dkim_result,
            dkim_domains=dkim_domains,
            dmarc=dmarc_outcome.result,
            dmarc_policy=dmarc_outcome.policy,
            from_domain=from_domain,
            aligned=dmarc_outcome.aligned,
            source="relay",
        )

    @staticmethod
    def _stripped_dkim(scope: _Scope, raw: bytes) -> tuple[str, tuple[str, ...]]:
        return _check_dkim(scope, strip_authentication_results(raw))

"""SPF for one message: pyspf, made to resolve through the evaluation's own resolver."""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Sequence

import spf

from relay.auth_verdict import SPF_RESULTS
from relay.dns import DnsTemporaryError
from relay.lookup_scope import LookupScope

log = logging.getLogger(__name__)

# pyspf resolves through its module-level function `spf.DNSLookup` and has no parameter for
# a resolver. We replace that global once, with a dispatcher that finds the current
# evaluation's resolver in a ContextVar set inside the worker thread (asyncio.to_thread runs
# it in a copy of the caller's context, so concurrent evaluations never see each other's).
# Outside an evaluation the dispatcher defers to pyspf's own lookup.
_SPF_SCOPE: contextvars.ContextVar[LookupScope | None] = contextvars.ContextVar(
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


def install_spf_hook() -> None:
    """Route pyspf's lookups through `_spf_dns_lookup`; idempotent and thread-safe."""
    global _spf_original_lookup
    with _SPF_HOOK_LOCK:
        if spf.DNSLookup is not _spf_dns_lookup:
            _spf_original_lookup = spf.DNSLookup
            spf.DNSLookup = _spf_dns_lookup


def spf_identity(mail_from: str, helo: str) -> tuple[str, str | None]:
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


def check_spf(scope: LookupScope, client_ip: str, sender: str, helo: str) -> str:
    """The SPF result for the client and sender; blocking, run it in a worker thread."""
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

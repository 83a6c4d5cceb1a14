"""DKIM for one message: verify its first few signatures with dkimpy, keys from our resolver."""

from __future__ import annotations

import logging

import dkim

from relay.auth_headers import header_fields
from relay.dns import DnsTemporaryError
from relay.lookup_scope import LookupScope

# dkimpy logs every unusable key of every sender at ERROR; give it a name operators can quiet.
_dkimpy_log = logging.getLogger(__name__)

# Each signature may cost a key lookup; a message with hundreds of them gets no more work.
MAX_DKIM_SIGNATURES = 8  # the default of RELAY_DKIM_MAX_SIGNATURES
MIN_DKIM_KEY_BITS = 1024


def is_signed(message: bytes) -> bool:
    """Whether the header section has a DKIM-Signature field (a scan, no DNS, no crypto).
    Only the header section is walked, found first by a byte search: a message without a
    blank line is not walked line by line to its end."""
    ends = [i for i in (message.find(b"\n\n"), message.find(b"\n\r\n")) if i >= 0]
    head = message[: min(ends) + 1] if ends else message
    if b"dkim-signature" not in head.lower():
        return False
    fields, _ = header_fields(head)
    return any(f.name == b"dkim-signature" for f in fields)


def check_dkim(
    scope: LookupScope, message: bytes, max_signatures: int = MAX_DKIM_SIGNATURES
) -> tuple[str, tuple[str, ...]]:
    """("pass", domains) when any of the first `max_signatures` signatures verifies (each
    costs a key lookup and an RSA operation); else the most telling failure."""
    if not is_signed(message):
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
    for index in range(min(count, max_signatures)):
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

"""SPF, DKIM and DMARC verdicts for one inbound message; every lookup goes through relay.dns.

`Authenticator.evaluate` never raises: bad input maps to permerror, DNS trouble and running
out of time map to temperror. It ignores every Authentication-Results, ARC-Authentication-
Results and Received-SPF field a message arrives with, except the one an operator-configured
front MTA (a trusted IP and a trusted authserv-id) put on top.

The checks themselves live in relay.spf_check, relay.dkim_check and relay.dmarc_check; a
trusted front MTA's results are read by relay.trusted_front_results.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Sequence
from typing import Any

from relay.auth_verdict import AuthVerdict, unavailable_verdict
from relay.dkim_check import MAX_DKIM_SIGNATURES, check_dkim, is_signed
from relay.dmarc_check import DmarcOutcome, check_dmarc, identifiers_aligned, public_suffixes
from relay.dns import Resolver
from relay.domain_names import ascii_domain, is_hostname
from relay.lookup_scope import LookupScope
from relay.spf_check import check_spf, install_spf_hook, spf_identity
from relay.trusted_front_results import trusted_results, verdict_from_results

__all__ = ["AuthVerdict", "Authenticator"]

log = logging.getLogger(__name__)


def _normal_ip(client_ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(client_ip.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class Authenticator:
    """Evaluates SPF, DKIM and DMARC for inbound messages within a time budget."""

    def __init__(
        self,
        resolver: Resolver,
        *,
        trusted_front: Sequence[str] = (),
        trusted_authserv_ids: Sequence[str] = (),
        timeout: float = 10.0,
        max_dkim_signatures: int = MAX_DKIM_SIGNATURES,
    ) -> None:
        if timeout <= 0:
            raise ValueError("authentication timeout must be positive")
        self.resolver = resolver
        self.timeout = timeout
        self.max_dkim_signatures = max_dkim_signatures
        self.trusted_front = tuple(
            ipaddress.ip_network(entry.strip(), strict=False) for entry in trusted_front
        )
        self.trusted_authserv_ids = frozenset(i.strip().lower() for i in trusted_authserv_ids)
        install_spf_hook()
        public_suffixes()  # parse the list now, not on the event loop during a message

    def is_trusted_front(self, client_ip: str) -> bool:
        address = _normal_ip(client_ip)
        if address is None:
            return False
        return any(address in network for network in self.trusted_front)

    async def evaluate(
        self, raw: bytes, *, client_ip: str, helo: str, mail_from: str, from_domain: str
    ) -> AuthVerdict:
        deadline = time.monotonic() + self.timeout
        from_name = ascii_domain(from_domain)
        sender, spf_domain = spf_identity(mail_from, helo)
        try:
            if self.trusted_authserv_ids and self.is_trusted_front(client_ip):
                found = await asyncio.wait_for(
                    asyncio.to_thread(trusted_results, raw, self.trusted_authserv_ids),
                    timeout=self.timeout,
                )
                if found is not None:
                    return verdict_from_results(found[0], found[1], from_name)
            return await self._evaluate_here(
                raw,
                LookupScope(self.resolver, deadline),
                client_ip,
                helo,
                sender,
                spf_domain,
                from_name,
            )
        except Exception:
            log.exception("authentication checks failed unexpectedly")
            return unavailable_verdict(from_name, spf_domain)

    async def _evaluate_here(
        self,
        raw: bytes,
        scope: LookupScope,
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
                asyncio.to_thread(check_spf, scope, str(address), sender, helo)
            )
        # The message exactly as received: a signature's h= may cover Authentication-Results
        # or Received-SPF fields, and DKIM verification never reads their contents. An
        # unsigned message has nothing to verify: it needs no trip to a thread.
        dkim_task: asyncio.Future[tuple[str, tuple[str, ...]]] | None = None
        if is_signed(raw):
            dkim_task = asyncio.ensure_future(
                asyncio.to_thread(check_dkim, scope, raw, self.max_dkim_signatures)
            )
        running: set[asyncio.Future[Any]] = {t for t in (spf_task, dkim_task) if t is not None}
        pending: set[asyncio.Future[Any]] = set()
        if running:
            _, pending = await asyncio.wait(running, timeout=max(scope.remaining(), 0))
        for task in pending:
            # The worker thread runs on until its DNS lifetime (bounded by the deadline) ends.
            task.cancel()

        if address is None:
            spf_result = "permerror"
        elif spf_task is None:
            spf_result = "none"
        else:
            spf_result = "temperror" if spf_task in pending else spf_task.result()
        dkim_result: str
        dkim_domains: tuple[str, ...]
        if dkim_task is None:
            dkim_result, dkim_domains = "none", ()
        else:
            dkim_result, dkim_domains = (
                ("temperror", ()) if dkim_task in pending else dkim_task.result()
            )

        if not is_hostname(from_domain):
            dmarc_outcome = DmarcOutcome("permerror", None, False)
        else:
            try:
                dmarc_outcome = await asyncio.wait_for(
                    asyncio.to_thread(
                        check_dmarc,
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
                dmarc_outcome = DmarcOutcome(
                    "temperror",
                    None,
                    identifiers_aligned(from_domain, spf_result, spf_domain, dkim_domains),
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

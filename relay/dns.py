"""The one DNS resolver: dnspython queries, a bounded TTL cache, temporary failures as one type.

Every SPF, DKIM and DMARC lookup goes through a `Resolver`, so tests can point it at a
loopback server and the relay never consults dnspython's process-wide default resolver.

    empty list           NXDOMAIN, NODATA, or a name that cannot be a DNS name
    DnsTemporaryError    timeout, SERVFAIL/REFUSED, no server answering, no server configured

Callers map `DnsTemporaryError` to `temperror`.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.MX
import dns.rdtypes.ANY.PTR
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.resolver
import dns.reversename

log = logging.getLogger(__name__)

# EDNS0 payload recommended since DNS Flag Day 2020; larger answers come back truncated and
# are retried over TCP.
EDNS_PAYLOAD = 1232
# One UDP attempt never waits longer than this, so a lost datagram costs a retry, not the
# whole lifetime of the lookup.
UDP_ATTEMPT_TIMEOUT = 2.0
MAX_ROUNDS = 3
MAX_CNAME_HOPS = 8


class DnsTemporaryError(Exception):
    """The answer could not be had now (timeout, SERVFAIL, no server); asking later may work."""


@dataclass(frozen=True)
class _CacheEntry:
    records: tuple[dns.rdata.Rdata, ...]
    expires: float


class Resolver:
    """A thread-safe stub resolver with a small LRU cache of positive and negative answers.

    `servers` are (address, port) pairs; None reads /etc/resolv.conf once, here.
    `timeout` bounds one lookup (all servers and retries together), in seconds.
    """

    def __init__(
        self,
        servers: Sequence[tuple[str, int]] | None = None,
        *,
        timeout: float = 5.0,
        cache_size: int = 1024,
        max_ttl: float = 3600.0,
        negative_ttl: float = 60.0,
        max_negative_ttl: float = 900.0,
    ) -> None:
        if timeout <= 0:
            raise ValueError("DNS timeout must be positive")
        if cache_size < 0:
            raise ValueError("DNS cache size must not be negative")
        self.servers: tuple[tuple[str, int], ...] = (
            _system_servers() if servers is None else _checked_servers(servers)
        )
        self.timeout = timeout
        self.cache_size = cache_size
        self.max_ttl = max_ttl
        self.negative_ttl = negative_ttl
        self.max_negative_ttl = max_negative_ttl
        self._cache: OrderedDict[tuple[dns.name.Name, int], _CacheEntry] = OrderedDict()
        self._lock = threading.Lock()
        self._network_queries = 0
        self._next_server = 0

    @property
    def network_queries(self) -> int:
        """Queries actually sent (UDP and TCP retries each count), not cache hits."""
        with self._lock:
            return self._network_queries

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    # -- typed lookups -------------------------------------------------------------------

    def txt(self, name: str, *, lifetime: float | None = None) -> list[str]:
        """TXT records, each with its character-strings joined without separator.

        RFC 7208 §3.3 and RFC 6376 §3.6.2.2 both concatenate the strings of one record.
        Bytes that are not UTF-8 are replaced; use `txt_bytes` where that matters.
        """
        return [
            value.decode("utf-8", "replace") for value in self.txt_bytes(name, lifetime=lifetime)
        ]

    def txt_bytes(self, name: str, *, lifetime: float | None = None) -> list[bytes]:
        records = self._lookup(name, dns.rdatatype.TXT, lifetime)
        return [
            b"".join(record.strings)
            for record in records
            if isinstance(record, dns.rdtypes.ANY.TXT.TXT)
        ]

    def a(self, name: str, *, lifetime: float | None = None) -> list[str]:
        records = self._lookup(name, dns.rdatatype.A, lifetime)
        return [record.address for record in records if isinstance(record, dns.rdtypes.IN.A.A)]

    def aaaa(self, name: str, *, lifetime: float | None = None) -> list[str]:
        records = self._lookup(name, dns.rdatatype.AAAA, lifetime)
        return [
            record.address for record in records if isinstance(record, dns.rdtypes.IN.AAAA.AAAA)
        ]

    def mx(self, name: str, *, lifetime: float | None = None) -> list[tuple[int, str]]:
        """(preference, exchange) pairs, exchange without the trailing dot."""
        records = self._lookup(name, dns.rdatatype.MX, lifetime)
        return [
            (int(record.preference), record.exchange.to_text(omit_final_dot=True))
            for record in records
            if isinstance(record, dns.rdtypes.ANY.MX.MX)
        ]

    def ptr(self, name: str, *, lifetime: float | None = None) -> list[str]:
        """Names for an IP address, or for a ready-made `*.in-addr.arpa`/`*.ip6.arpa` name."""
        try:
            name = dns.reversename.from_address(name).to_text()
        except (ValueError, dns.exception.SyntaxError):
            pass
        records = self._lookup(name, dns.rdatatype.PTR, lifetime)
        return [
            record.target.to_text(omit_final_dot=True)
            for record in records
            if isinstance(record, dns.rdtypes.ANY.PTR.PTR)
        ]

    # -- cache and network ---------------------------------------------------------------

    def _lookup(
        self, name: str, rdtype: dns.rdatatype.RdataType, lifetime: float | None
    ) -> tuple[dns.rdata.Rdata, ...]:
        qname = _to_name(name)
        if qname is None:
            return ()
        # A spent budget still allows cache hits; _query refuses to go to the network.
        budget = self.timeout if lifetime is None else min(lifetime, self.timeout)
        deadline = time.monotonic() + budget
        return self._resolve(qname, rdtype, deadline, MAX_CNAME_HOPS)

    def _resolve(
        self,
        qname: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        deadline: float,
        hops_left: int,
    ) -> tuple[dns.rdata.Rdata, ...]:
        cached = self._cache_get((qname, rdtype))
        if cached is not None:
            return cached
        response = self._query(qname, rdtype, deadline)
        rcode = response.rcode()
        if rcode == dns.rcode.NXDOMAIN:
            self._cache_put((qname, rdtype), (), self._negative_ttl(response))
            return ()
        records, ttl, dangling = _follow_answer(response, qname, rdtype)
        if records:
            self._cache_put((qname, rdtype), records, min(ttl, self.max_ttl))
            return records
        if dangling is not None and hops_left > 0:
            # The server gave a CNAME but not its target (an authoritative server for another
            # zone does that): ask for the target ourselves, within the same deadline.
            records = self._resolve(dangling, rdtype, deadline, hops_left - 1)
            self._cache_put((qname, rdtype), records, min(ttl, self.max_ttl))
            return records
        self._cache_put((qname, rdtype), (), self._negative_ttl(response))
        return ()

    def _query(
        self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType, deadline: float
    ) -> dns.message.Message:
        """Ask the servers in turn until one answers NOERROR/NXDOMAIN or the deadline passes.

        A server that refuses (SERVFAIL, REFUSED, closed port) is not asked again within this
        lookup; one that is silent gets further rounds while time remains.
        """
        if not self.servers:
            raise DnsTemporaryError("no DNS server configured")
        edns_query = dns.message.make_query(qname, rdtype, use_edns=0, payload=EDNS_PAYLOAD)
        plain_query = dns.message.make_query(qname, rdtype)
        given_up: set[tuple[str, int]] = set()
        problem = "out of time"
        order = self._server_order()
        for _ in range(MAX_ROUNDS):
            for server in order:
                if server in given_up:
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DnsTemporaryError(f"{qname} {rdtype.name}: {problem}")
                host, port = server
                timeout = min(remaining, UDP_ATTEMPT_TIMEOUT)
                try:
                    response = self._exchange(edns_query, host, port, timeout)
                    if response.rcode() == dns.rcode.FORMERR:
                        # Some old servers reject EDNS0 outright: ask once more without it.
                        response = self._exchange(plain_query, host, port, timeout)
                except dns.exception.Timeout:
                    problem = f"timeout from {host}:{port}"
                    continue
                except (dns.exception.DNSException, OSError) as exc:
                    problem = f"{type(exc).__name__} from {host}:{port}"
                    given_up.add(server)
                    continue
                rcode = response.rcode()
                if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                    return response
                problem = f"{dns.rcode.to_text(rcode)} from {host}:{port}"
                given_up.add(server)
            if given_up.issuperset(order):
                break
        raise DnsTemporaryError(f"{qname} {rdtype.name}: {problem}")

    def _exchange(
        self, query: dns.message.Message, host: str, port: int, timeout: float
    ) -> dns.message.Message:
        """One UDP query, and the same over TCP when the answer came back truncated."""
        with self._lock:
            self._network_queries += 1
        try:
            return dns.query.udp(
                query,
                host,
                timeout=timeout,
                port=port,
                ignore_unexpected=True,
                raise_on_truncation=True,
            )
        except dns.message.Truncated:
            pass
        with self._lock:
            self._network_queries += 1
        return dns.query.tcp(query, host, timeout=timeout, port=port)

    def _server_order(self) -> tuple[tuple[str, int], ...]:
        """All servers, each lookup starting at the next one so the load is shared."""
        with self._lock:
            first = self._next_server % len(self.servers)
            self._next_server += 1
        return self.servers[first:] + self.servers[:first]

    def _negative_ttl(self, response: dns.message.Message) -> float:
        """RFC 2308 §5: the SOA's minimum, bounded by the SOA record's own TTL."""
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.SOA and len(rrset) > 0:
                soa = rrset[0]
                if isinstance(soa, dns.rdtypes.ANY.SOA.SOA):
                    return float(min(soa.minimum, rrset.ttl, self.max_negative_ttl))
        return self.negative_ttl

    def _cache_get(self, key: tuple[dns.name.Name, int]) -> tuple[dns.rdata.Rdata, ...] | None:
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                return None
            if entry.expires <= time.monotonic():
                del self._cache[key]
                return None
            self._cache.move_to_end(key)
            return entry.records

    def _cache_put(
        self, key: tuple[dns.name.Name, int], records: tuple[dns.rdata.Rdata, ...], ttl: float
    ) -> None:
        if self.cache_size == 0 or ttl <= 0:
            return
        with self._lock:
            self._cache[key] = _CacheEntry(records, time.monotonic() + ttl)
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)


def _follow_answer(
    response: dns.message.Message, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> tuple[tuple[dns.rdata.Rdata, ...], float, dns.name.Name | None]:
    """Records for qname (through CNAMEs in the answer), their smallest TTL, a dangling target."""
    name = qname
    ttl = float("inf")
    seen: set[dns.name.Name] = set()
    for _ in range(MAX_CNAME_HOPS + 1):
        rrset = response.get_rrset(response.answer, name, dns.rdataclass.IN, rdtype)
        if rrset is not None and len(rrset) > 0:
            return tuple(rrset), min(ttl, rrset.ttl), None
        cname = response.get_rrset(response.answer, name, dns.rdataclass.IN, dns.rdatatype.CNAME)
        if cname is None or len(cname) == 0:
            break
        seen.add(name)
        ttl = min(ttl, cname.ttl)
        target = cname[0]
        if not isinstance(target, dns.rdtypes.ANY.CNAME.CNAME):
            break
        name = target.target
        if name in seen:
            return (), 0.0, None
    if name != qname:
        return (), ttl, name
    return (), 0.0, None


def _to_name(text: str) -> dns.name.Name | None:
    """An absolute DNS name, or None when the text cannot be one (callers treat it as absent)."""
    text = text.strip()
    if not text or text == ".":
        return None
    try:
        name = dns.name.from_text(text)
    except (dns.exception.DNSException, UnicodeError, ValueError):
        return None
    return name


def _checked_servers(servers: Sequence[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    checked: list[tuple[str, int]] = []
    for host, port in servers:
        try:
            ipaddress.ip_address(host)
        except ValueError as exc:
            raise ValueError(f"DNS server must be an IP address, got {host!r}") from exc
        if not 0 < port < 65536:
            raise ValueError(f"DNS server port out of range: {port}")
        checked.append((host, port))
    return tuple(checked)


def _system_servers() -> tuple[tuple[str, int], ...]:
    """The nameservers of /etc/resolv.conf; none found means every lookup is a temperror."""
    try:
        system = dns.resolver.Resolver(configure=True)
    except dns.exception.DNSException as exc:
        log.warning("no usable DNS configuration (%s): authentication checks will temperror", exc)
        return ()
    servers: list[tuple[str, int]] = []
    for server in system.nameservers:
        address = str(server)
        try:
            ipaddress.ip_address(address)
        except ValueError:
            continue  # DNS-over-HTTPS URLs and the like: not what this resolver speaks
        servers.append((address, system.port))
    return tuple(servers)

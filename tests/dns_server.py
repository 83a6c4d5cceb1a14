"""A small authoritative DNS server on loopback (UDP and TCP, one port) for the auth tests.

It answers from an in-memory zone the test edits, NXDOMAIN for unknown names, truncates UDP
answers that do not fit (so clients must retry over TCP), and can be told to stay silent or
to answer SERVFAIL.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from collections import Counter

from dnslib import AAAA, CNAME, MX, PTR, QTYPE, RCODE, RR, SOA, TXT, A, DNSRecord

HOST = "127.0.0.1"


def _key(name: str) -> str:
    return name.lower().rstrip(".")


class LocalDNS:
    """Authoritative answers for whatever names the test adds; start() binds a free port."""

    def __init__(self, *, negative_ttl: int = 60) -> None:
        self.host = HOST
        self.port = 0
        self.negative_ttl = negative_ttl
        # silent: drop every query; servfail: answer SERVFAIL to every query.
        self.silent = False
        self.servfail = False
        # Largest UDP answer sent before truncating; None = the client's EDNS size or 512.
        self.max_udp_size: int | None = None
        self.queries: list[tuple[str, str, str]] = []  # (name, type, "udp"|"tcp")
        self._zone: dict[str, list[RR]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None

    # -- zone editing ---------------------------------------------------------------------

    def add_txt(self, name: str, value: str | bytes, ttl: int = 300) -> None:
        """One TXT record; values over 255 bytes go out as several character-strings."""
        data = value.encode() if isinstance(value, str) else value
        chunks = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
        self._add(name, QTYPE.TXT, TXT(chunks), ttl)

    def add_a(self, name: str, address: str, ttl: int = 300) -> None:
        self._add(name, QTYPE.A, A(address), ttl)

    def add_aaaa(self, name: str, address: str, ttl: int = 300) -> None:
        self._add(name, QTYPE.AAAA, AAAA(address), ttl)

    def add_mx(self, name: str, exchange: str, preference: int = 10, ttl: int = 300) -> None:
        self._add(name, QTYPE.MX, MX(exchange, preference), ttl)

    def add_ptr(self, name: str, target: str, ttl: int = 300) -> None:
        self._add(name, QTYPE.PTR, PTR(target), ttl)

    def add_cname(self, name: str, target: str, ttl: int = 300) -> None:
        self._add(name, QTYPE.CNAME, CNAME(target), ttl)

    def remove(self, name: str) -> None:
        with self._lock:
            self._zone.pop(_key(name), None)

    def clear(self) -> None:
        with self._lock:
            self._zone.clear()
            self.queries.clear()

    def _add(self, name: str, rtype: int, rdata: object, ttl: int) -> None:
        record = RR(_key(name) + ".", rtype, rdata=rdata, ttl=ttl)
        with self._lock:
            self._zone.setdefault(_key(name), []).append(record)

    # -- counters -----------------------------------------------------------------------

    @property
    def query_count(self) -> int:
        with self._lock:
            return len(self.queries)

    def count(self, name: str, qtype: str | None = None) -> int:
        """Queries received for one name (optionally one type), over UDP and TCP."""
        with self._lock:
            return sum(
                1
                for qname, qt, _ in self.queries
                if qname == _key(name) and (qtype is None or qt == qtype)
            )

    def protocols(self) -> Counter[str]:
        with self._lock:
            return Counter(proto for _, _, proto in self.queries)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        for _ in range(20):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((HOST, 0))
            port = udp.getsockname()[1]
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((HOST, port))
            except OSError:
                udp.close()
                tcp.close()
                continue
            tcp.listen(16)
            self._udp, self._tcp, self.port = udp, tcp, port
            break
        else:
            raise RuntimeError("no free port with both UDP and TCP available")
        for target in (self._serve_udp, self._serve_tcp):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)
        for sock in (self._udp, self._tcp):
            if sock is not None:
                sock.close()

    @property
    def servers(self) -> list[tuple[str, int]]:
        return [(self.host, self.port)]

    # -- serving ------------------------------------------------------------------------

    def _serve_udp(self) -> None:
        assert self._udp is not None
        while not self._stop.is_set():
            ready, _, _ = select.select([self._udp], [], [], 0.05)
            if not ready:
                continue
            try:
                data, peer = self._udp.recvfrom(65535)
            except OSError:
                return
            answer = self._answer(data, "udp")
            if answer is not None:
                with contextlib.suppress(OSError):
                    self._udp.sendto(answer, peer)

    def _serve_tcp(self) -> None:
        assert self._tcp is not None
        while not self._stop.is_set():
            ready, _, _ = select.select([self._tcp], [], [], 0.05)
            if not ready:
                continue
            try:
                conn, _ = self._tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._serve_connection, args=(conn,), daemon=True).start()

    def _serve_connection(self, conn: socket.socket) -> None:
        conn.settimeout(2.0)
        with conn:
            try:
                while not self._stop.is_set():
                    header = _recv_exact(conn, 2)
                    if header is None:
                        return
                    (length,) = struct.unpack("!H", header)
                    data = _recv_exact(conn, length)
                    if data is None:
                        return
                    answer = self._answer(data, "tcp")
                    if answer is None:
                        return
                    conn.sendall(struct.pack("!H", len(answer)) + answer)
            except OSError:
                return

    def _answer(self, data: bytes, proto: str) -> bytes | None:
        try:
            request = DNSRecord.parse(data)
        except Exception:
            return None
        question = request.q
        qname = _key(str(question.qname))
        qtype = QTYPE.get(question.qtype)
        with self._lock:
            self.queries.append((qname, str(qtype), proto))
            silent, servfail = self.silent, self.servfail
            zone = {name: list(rrs) for name, rrs in self._zone.items()}
        if silent:
            return None
        reply = request.reply()
        if servfail:
            reply.header.rcode = RCODE.SERVFAIL
            return bytes(reply.pack())
        self._resolve(reply, zone, qname, question.qtype)
        packed = bytes(reply.pack())
        if proto == "udp" and len(packed) > self._udp_limit(request):
            # Keep the question: clients match responses to queries by it.
            reply.rr, reply.auth, reply.ar = [], [], []
            reply.header.tc = 1
            packed = bytes(reply.pack())
        return packed

    def _resolve(self, reply: DNSRecord, zone: dict[str, list[RR]], qname: str, qtype: int) -> None:
        name = qname
        for _ in range(8):
            records = zone.get(name)
            if records is None:
                if name == qname:
                    reply.header.rcode = RCODE.NXDOMAIN
                reply.add_auth(self._soa(name))
                return
            matching = [rr for rr in records if rr.rtype == qtype]
            if matching:
                for rr in matching:
                    reply.add_answer(rr)
                return
            cnames = [rr for rr in records if rr.rtype == QTYPE.CNAME]
            if not cnames:
                reply.add_auth(self._soa(name))
                return
            reply.add_answer(cnames[0])
            name = _key(str(cnames[0].rdata.label))

    def _soa(self, name: str) -> RR:
        apex = ".".join(name.split(".")[-2:]) + "."
        times = (1, 3600, 600, 86400, self.negative_ttl)
        return RR(apex, QTYPE.SOA, rdata=SOA("ns." + apex, "hostmaster." + apex, times), ttl=3600)

    def _udp_limit(self, request: DNSRecord) -> int:
        if self.max_udp_size is not None:
            return self.max_udp_size
        for rr in request.ar:
            if rr.rtype == QTYPE.OPT:
                return max(512, int(rr.rclass))
        return 512


def _recv_exact(conn: socket.socket, size: int) -> bytes | None:
    chunks = b""
    while len(chunks) < size:
        chunk = conn.recv(size - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return chunks

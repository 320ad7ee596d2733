"""A DNS server (dnslib) on 127.0.0.1 serving test zones over UDP, with names that never
answer (to test timeouts)."""

from __future__ import annotations

import socket
import threading
from collections import Counter
from dataclasses import dataclass, field

from dnslib import MX, QTYPE, RCODE, RR, A, DNSRecord


@dataclass
class Zones:
    """``mx``: domain → [(preference, exchange)]; ``a``: name → address; ``silent``: names
    whose queries get no answer at all."""

    mx: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    a: dict[str, str] = field(default_factory=dict)
    silent: set[str] = field(default_factory=set)


class DnsServer:
    def __init__(self, zones: Zones) -> None:
        self.zones = zones
        self.queries: Counter[str] = Counter()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._running = False
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def answer(self, query: DNSRecord) -> DNSRecord | None:
        name = str(query.q.qname).rstrip(".").lower()
        qtype = QTYPE[query.q.qtype]
        self.queries[f"{name}/{qtype}"] += 1
        if name in self.zones.silent:
            return None
        reply = query.reply()
        if qtype == "MX" and name in self.zones.mx:
            for preference, exchange in self.zones.mx[name]:
                reply.add_answer(RR(name, QTYPE.MX, rdata=MX(exchange, preference), ttl=300))
        elif qtype == "A" and name in self.zones.a:
            reply.add_answer(RR(name, QTYPE.A, rdata=A(self.zones.a[name]), ttl=300))
        elif name not in self.zones.mx and name not in self.zones.a:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply

    def _serve(self) -> None:
        while self._running:
            try:
                data, peer = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = self.answer(DNSRecord.parse(data))
            if reply is not None:
                self._sock.sendto(reply.pack(), peer)

    def start(self) -> DnsServer:
        self._running = True
        self._thread = threading.Thread(target=self._serve, name="dns-test-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join(2)
        self._sock.close()

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

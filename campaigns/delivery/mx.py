"""The MX :class:`~campaigns.delivery.protocols.Resolver` on dnspython's async resolver: given
name servers (HOST or HOST:PORT) or the system's, a timeout, and dnspython's own cache."""

from __future__ import annotations

from collections.abc import Sequence

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver


def parse_nameserver(entry: str) -> tuple[str, int]:
    """``"127.0.0.1:5353"`` → (``"127.0.0.1"``, 5353); ``"[::1]:53"`` and bare hosts too."""
    entry = entry.strip()
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest.lstrip(":") or 53)
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, int(port)
    return entry, 53


class DnsResolver:
    """MX lookups with a timeout and caching."""

    def __init__(self, nameservers: Sequence[str] = (), timeout: float = 5.0) -> None:
        if nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(host, port)
                for host, port in map(parse_nameserver, nameservers)
            ]
        else:
            resolver = dns.asyncresolver.Resolver()
        resolver.timeout = timeout
        resolver.lifetime = timeout
        resolver.cache = dns.resolver.LRUCache(50_000)
        self._resolver = resolver

    async def mx_hosts(self, domain: str) -> list[str]:
        try:
            answer = await self._resolver.resolve(domain, "MX")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
            return []
        except dns.exception.Timeout as exc:
            raise TimeoutError(f"MX lookup of {domain} timed out") from exc
        records = sorted(answer, key=lambda r: r.preference)
        return [r.exchange.to_text(omit_final_dot=True).lower() for r in records]

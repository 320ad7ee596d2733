"""Recipient domains grouped by mailbox provider (D4): the throttle key of a domain is the
organizational domain of its preferred MX host, so gmail.com and googlemail.com (both served by
google.com exchanges) share one bucket. Lookups are cached and shared between concurrent
callers; a DNS failure or timeout never holds sending up: the domain becomes its own group."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from campaigns.delivery.protocols import Resolver

# Second-level labels under which registrations happen one level deeper (co.uk, com.au, …);
# enough for MX host names, which is all this is used for.
_SECOND_LEVEL = frozenset({"co", "com", "net", "org", "gov", "edu", "ac", "or", "ne", "go"})


def organizational_domain(host: str) -> str:
    """``gmail-smtp-in.l.google.com`` → ``google.com``; ``mx.shop.co.uk`` → ``shop.co.uk``."""
    labels = host.rstrip(".").lower().split(".")
    if len(labels) <= 2:
        return ".".join(labels)
    if len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def recipient_domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


class ProviderDirectory:
    """Maps recipient domains to provider groups through a :class:`Resolver`."""

    def __init__(
        self,
        resolver: Resolver | None,
        *,
        timeout: float = 5.0,
        ttl: float = 3600.0,
        failure_ttl: float = 300.0,
        max_entries: int = 100_000,
    ) -> None:
        self._resolver = resolver
        self._timeout = timeout
        self._ttl = ttl
        self._failure_ttl = failure_ttl
        self._max = max_entries
        self._cache: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._pending: dict[str, asyncio.Future[str]] = {}
        self.lookups = 0
        self.failures = 0

    def cached(self, domain: str) -> str | None:
        hit = self._cache.get(domain)
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    async def provider_of(self, domain: str) -> str:
        """The provider group of ``domain`` (the domain itself when DNS does not tell)."""
        domain = domain.lower().rstrip(".")
        hit = self.cached(domain)
        if hit is not None:
            return hit
        if self._resolver is None:
            return domain
        pending = self._pending.get(domain)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[domain] = future
        try:
            group, ttl = await self._lookup(domain)
            self._remember(domain, group, ttl)
            future.set_result(group)
            return group
        finally:
            del self._pending[domain]
            if not future.done():
                future.set_result(domain)

    async def _lookup(self, domain: str) -> tuple[str, float]:
        assert self._resolver is not None
        self.lookups += 1
        try:
            hosts = await asyncio.wait_for(self._resolver.mx_hosts(domain), self._timeout)
        except (TimeoutError, OSError, ValueError, LookupError):
            # DNS trouble must not stop sending: the domain is its own group for a while.
            self.failures += 1
            return domain, self._failure_ttl
        hosts = [h for h in hosts if h and h != "."]
        if not hosts:
            return domain, self._ttl
        return organizational_domain(hosts[0]), self._ttl

    def _remember(self, domain: str, group: str, ttl: float) -> None:
        self._cache[domain] = (group, time.monotonic() + ttl)
        self._cache.move_to_end(domain)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)

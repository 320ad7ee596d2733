"""Pace of sending (D4): a global rate per second (shared by the live workers), per-provider
concurrency and rate slowed by deferrals and recovering gradually (AIMD), and the daily cap of
a warming sending domain."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime

Monotonic = Callable[[], float]


class RateLimiter:
    """A generic cell rate limiter (token bucket): ``rate`` per second on average, bursts of
    ``burst``. ``reserve`` books the next slot and says how long to wait for it, so concurrent
    callers queue in order without polling."""

    def __init__(self, rate: float, burst: float = 1.0, clock: Monotonic = time.monotonic) -> None:
        self._clock = clock
        self._tat = clock()  # theoretical arrival time of the next message
        self.rate = rate
        self.burst = burst

    @property
    def rate(self) -> float:
        return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        if value <= 0:
            raise ValueError("a rate must be positive")
        self._rate = value
        self._interval = 1.0 / value

    def reserve(self) -> float:
        """Book one message; seconds to wait before sending it."""
        now = self._clock()
        tolerance = max(0.0, self.burst - 1.0) * self._interval
        tat = max(self._tat, now)
        wait = max(0.0, tat - tolerance - now)
        self._tat = tat + self._interval
        return wait

    async def acquire(self) -> None:
        wait = self.reserve()
        if wait > 0:
            await asyncio.sleep(wait)


@dataclass(frozen=True, slots=True)
class Pace:
    """A provider's shared slowdown: full pace is factor 1; each deferral window halves it; it
    regains ``step`` every ``recovery_seconds`` after the last deferral."""

    factor: float = 1.0
    last_deferral: datetime | None = None

    def effective(self, now: datetime, step: float, recovery_seconds: float) -> float:
        if self.last_deferral is None or self.factor >= 1.0:
            return min(1.0, self.factor)
        periods = max(0.0, (now - self.last_deferral).total_seconds()) // recovery_seconds
        return min(1.0, self.factor + step * periods)

    def halved(self, now: datetime, step: float, recovery: float, floor: float) -> Pace:
        return Pace(max(floor, self.effective(now, step, recovery) / 2.0), now)


@dataclass(frozen=True, slots=True)
class ProviderLimits:
    """Full-pace limits of one provider for this worker (already divided among workers)."""

    concurrency: int
    rate: float


class ProviderLane:
    """One provider's gate in this worker: at most ``concurrency × factor`` transactions at
    once (at least one) and ``rate × factor`` messages per second."""

    def __init__(self, name: str, limits: ProviderLimits, clock: Monotonic = time.monotonic):
        self.name = name
        self.limits = limits
        self.factor = 1.0
        self.paused_until: datetime | None = None
        self.in_flight = 0
        self.waiting = 0
        self._limiter = RateLimiter(limits.rate, burst=max(1.0, limits.rate / 10), clock=clock)
        self._changed = asyncio.Condition()

    @property
    def concurrency(self) -> int:
        return max(1, math.floor(self.limits.concurrency * self.factor))

    @property
    def rate(self) -> float:
        return self.limits.rate * self.factor

    def set_pace(self, limits: ProviderLimits, factor: float) -> None:
        grew = factor > self.factor or limits.concurrency > self.limits.concurrency
        self.limits = limits
        self.factor = factor
        self._limiter.rate = max(1e-6, self.rate)
        self._limiter.burst = max(1.0, self.rate / 10)
        if grew:
            self._notify()

    def is_paused(self, now: datetime) -> bool:
        return self.paused_until is not None and now < self.paused_until

    def _notify(self) -> None:
        async def wake() -> None:
            async with self._changed:
                self._changed.notify_all()

        asyncio.get_running_loop().create_task(wake())

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the provider's transactions, paced by its rate."""
        self.waiting += 1
        try:
            async with self._changed:
                await self._changed.wait_for(lambda: self.in_flight < self.concurrency)
                self.in_flight += 1
        finally:
            self.waiting -= 1
        try:
            await self._limiter.acquire()
            yield
        finally:
            self.in_flight -= 1
            async with self._changed:
                self._changed.notify(1)

    def backlog_seconds(self) -> float:
        """Roughly how long the messages waiting here will take at the current pace."""
        return self.waiting / max(self.rate, 1e-6)


def warmup_cap(ramp: Sequence[int], start: date, today: date) -> int | None:
    """Daily cap of a domain warming up since ``start``: ``ramp[day]``; None (no cap) once the
    ramp is over. Before the start date the first day's cap applies."""
    day = max(0, (today - start).days)
    if day >= len(ramp):
        return None
    return ramp[day]

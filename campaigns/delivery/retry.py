"""When to try a deferred message again (D5): exponential backoff with jitter, and when to give
up. Defaults follow RFC 5321 §4.5.4.1 in spirit (first retry after minutes, give up after days);
tests shorten them through settings."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial_seconds: float = 600.0
    multiplier: float = 2.0
    max_interval_seconds: float = 14400.0
    jitter: float = 0.2
    lifetime_seconds: float = 4 * 86400.0

    def interval(self, attempts: int) -> float:
        """Nominal wait after the ``attempts``-th failed attempt (1 = the first), no jitter."""
        exponent = max(0, attempts - 1)
        # Capped before the power overflows for absurd attempt counts.
        growth: float = self.multiplier ** min(exponent, 64)
        return min(self.max_interval_seconds, self.initial_seconds * growth)

    def next_attempt(
        self,
        attempts: int,
        first_attempt_at: datetime,
        now: datetime,
        rng: random.Random | None = None,
    ) -> datetime | None:
        """When to try again after ``attempts`` failed attempts, or None to give up because the
        message has been retried for its whole lifetime."""
        wait = self.interval(attempts)
        if self.jitter:
            wait *= 1.0 + (rng or random).uniform(-self.jitter, self.jitter)
        at = now + timedelta(seconds=wait)
        if at - first_attempt_at > timedelta(seconds=self.lifetime_seconds):
            return None
        return at

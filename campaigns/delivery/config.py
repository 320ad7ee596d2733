"""The knobs of the delivery engine as plain values; the shell fills them from settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Literal

from campaigns.delivery.retry import RetryPolicy

DEFAULT_RAMP = (
    50, 100, 200, 400, 700, 1000, 1500, 2000, 3000, 4000, 5000, 7000, 9000, 12000, 15000,
    20000, 25000, 32000, 40000, 50000,
)


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """Everything the engine needs to know besides its collaborators."""

    rate: float = 100.0
    rate_per_hour: int | None = None
    per_domain_concurrency: int = 5
    per_domain_rate: float | None = None
    frequency_cap_hours: float = 16.0
    discount_cap_days: float = 14.0
    default_timezone: str = "UTC"
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    unknown_outcome: Literal["hold", "resend"] = "hold"
    slowdown_min_factor: float = 0.05
    slowdown_recovery_step: float = 0.1
    slowdown_recovery_seconds: float = 30.0
    provider_pause_minutes: float = 30.0
    sending_domain: str | None = None
    warmup_domains: dict[str, date] = field(default_factory=dict)
    warmup_ramp: tuple[int, ...] = DEFAULT_RAMP
    complaint_warn_rate: float = 0.001
    complaint_pause_rate: float = 0.003
    hard_bounce_pause_rate: float = 0.05
    rate_check_min_messages: int = 100
    rate_check_interval: float = 5.0
    worker_timeout_seconds: float = 30.0
    claim_batch: int = 500
    poll_seconds: float = 1.0
    max_in_flight: int = 4
    # Threads building messages; 0 builds inline on the event loop. A factory that reads the
    # database or signs (the real pipeline) must not hold the loop: it runs in these threads.
    build_threads: int = 0
    # Seconds between two reads of campaign states, worker liveness and provider pace: pause,
    # resume and cancel take effect within this (D8).
    control_interval: float = 0.5

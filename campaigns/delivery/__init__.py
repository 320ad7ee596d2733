"""Delivery: exactly-once async sending of the send log with throttling, retries, scheduling,
controls and scale-out workers."""

from campaigns.delivery.config import DeliveryConfig
from campaigns.delivery.engine import DeliveryEngine, RunReport, WorkerIdentity
from campaigns.delivery.outcomes import (
    Accepted,
    ConnectionLost,
    NotStarted,
    OutcomeUnknown,
    Rejected,
    SmtpOutcome,
    Stage,
    classify,
)
from campaigns.delivery.protocols import (
    AudienceFreezer,
    CommitPoint,
    MessageFactory,
    OutgoingMessage,
    PreparingFactory,
    Resolver,
    Transport,
)
from campaigns.delivery.providers import ProviderDirectory
from campaigns.delivery.retry import RetryPolicy
from campaigns.delivery.stats import DeliveryStats, delivery_stats

__all__ = [
    "Accepted",
    "AudienceFreezer",
    "CommitPoint",
    "ConnectionLost",
    "DeliveryConfig",
    "DeliveryEngine",
    "DeliveryStats",
    "MessageFactory",
    "NotStarted",
    "OutcomeUnknown",
    "OutgoingMessage",
    "PreparingFactory",
    "ProviderDirectory",
    "Rejected",
    "Resolver",
    "RetryPolicy",
    "RunReport",
    "SmtpOutcome",
    "Stage",
    "Transport",
    "WorkerIdentity",
    "classify",
    "delivery_stats",
]

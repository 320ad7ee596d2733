"""Delivery counts of a campaign (M1) from its send log, plus the states still in progress.

``delivered`` is ``sent`` minus the messages later reported failed by a DSN (a `bounce` event
of a contact whose message was accepted). Until DSN ingestion (`patron bounces ingest`) writes
such events, delivered equals sent."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Select, and_, func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from campaigns.models import DeliveryFailure, Message, MessageState
from lists.models import Event, EventKind


@dataclass(frozen=True, slots=True)
class DeliveryStats:
    campaign_id: int
    status: str
    recipients: int
    skipped: dict[str, int]
    sent: int
    delivered: int
    dsn_failures: int
    bounced_hard: int
    bounced_soft: int
    failed: int
    queued: int
    sending: int
    deferred: int
    unknown: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def delivery_stats(session: Session, campaign_id: int, status: str) -> DeliveryStats:
    counts: dict[tuple[str, str | None, str | None], int] = {}
    for state, reason, failure, n in session.execute(
        select(col(Message.state), col(Message.skip_reason), col(Message.failure), func.count())
        .where(col(Message.campaign_id) == campaign_id)
        .group_by(col(Message.state), col(Message.skip_reason), col(Message.failure))
    ):
        counts[(state, reason, failure)] = int(n)

    def total(state: MessageState, failure: DeliveryFailure | None = None) -> int:
        return sum(
            n for (s, _, f), n in counts.items()
            if s == state.value and (failure is None or f == failure.value)
        )

    skipped: dict[str, int] = {}
    for (state, reason, _), n in counts.items():
        if state == MessageState.SKIPPED.value:
            skipped[reason or "unknown"] = skipped.get(reason or "unknown", 0) + n
    dsn_failures = int(
        session.execute(
            message_events(
                campaign_id, EventKind.BOUNCE, func.count(func.distinct(col(Event.contact_id)))
            ).where(col(Message.state) == MessageState.SENT.value)
        ).scalar_one()
    )
    sent = total(MessageState.SENT)
    return DeliveryStats(
        campaign_id=campaign_id,
        status=status,
        # M1 `recipients` = messages created to be sent; skipped rows are counted apart.
        recipients=sum(counts.values()) - sum(skipped.values()),
        skipped=dict(sorted(skipped.items())),
        sent=sent,
        delivered=sent - dsn_failures,
        dsn_failures=dsn_failures,
        bounced_hard=total(MessageState.BOUNCED, DeliveryFailure.HARD_BOUNCE),
        bounced_soft=total(MessageState.BOUNCED, DeliveryFailure.SOFT_BOUNCE),
        failed=total(MessageState.FAILED),
        queued=total(MessageState.QUEUED),
        sending=total(MessageState.SENDING),
        deferred=total(MessageState.DEFERRED),
        unknown=total(MessageState.UNKNOWN),
    )


def message_events(campaign_id: int, kind: EventKind, *columns: Any) -> Select[Any]:
    """``SELECT columns`` over the campaign's events of ``kind`` joined to their send-log rows."""
    return (
        select(*columns)
        .select_from(Event)
        .join(
            Message,
            and_(
                col(Message.campaign_id) == col(Event.campaign_id),
                col(Message.contact_id) == col(Event.contact_id),
            ),
        )
        .where(col(Event.campaign_id) == campaign_id, col(Event.kind) == kind.value)
    )

"""The durable writes of delivery, applied as one transaction per group commit (D2).

A batch holds the commit points of messages about to be sent (each re-checked for eligibility
and marked ``sending`` only while its lease is still ours and its campaign still sending), the
outcomes of finished attempts (state, reply, retry time; the `sent` event and last_emailed_at;
the suppression of a hard-bounced address; a provider's slowdown or pause and its alert) and
claims given back. Nothing here talks to the network."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from sqlalchemy.orm import Session

from campaigns.delivery.alerts import AlertKind, AlertLevel, raise_alert
from campaigns.delivery.eligibility import Candidate, Caps, send_time_skips
from campaigns.delivery.pacing import pause_provider, record_slowdown
from campaigns.delivery.queue import release
from campaigns.delivery.statements import Finished, SendPath, send_path
from campaigns.delivery.throttle import Pace
from campaigns.models import MessageState, SkipReason
from lists.models import SuppressionReason
from lists.suppressions import suppress


class StartDecision(StrEnum):
    STARTED = "started"  # durable: the message may go out
    SKIPPED = "skipped"  # no longer eligible (the reason is in the send log)
    REFUSED = "refused"  # lease lost or campaign not sending: given back untouched


@dataclass(frozen=True, slots=True)
class StartMark:
    candidate: Candidate
    message_id: str
    provider: str


@dataclass(frozen=True, slots=True)
class Finish:
    """The outcome of one attempt. ``started`` says whether its commit point was passed (the
    row is `sending`); otherwise it failed before DATA and is still a claimed pending row."""

    row_id: int
    attempt: int  # the row's attempts value once this attempt is counted
    started: bool
    state: MessageState
    reply: str
    campaign_id: int
    contact_id: int | None
    email: str | None
    marketing: bool
    provider: str | None
    failure: str | None = None
    next_attempt_at: datetime | None = None
    suppress: bool = False
    slowdown: Pace | None = None
    pause_until: datetime | None = None


@dataclass(slots=True)
class Batch:
    starts: list[StartMark] = field(default_factory=list)
    finishes: list[Finish] = field(default_factory=list)
    releases: list[tuple[int, datetime | None, str | None]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.starts) + len(self.finishes) + len(self.releases)


@dataclass(frozen=True, slots=True)
class BatchResult:
    decisions: dict[int, StartDecision]
    skipped: dict[int, SkipReason]


def apply_batch(
    session: Session, worker_id: str, key: bytes, now: datetime, batch: Batch, caps: Caps
) -> BatchResult:
    """Write one batch; the caller commits."""
    sql = send_path(session.get_bind().dialect.name)
    decisions, skipped = _start(session, sql, worker_id, key, now, batch.starts, caps)
    _finish(session, sql, worker_id, key, now, batch.finishes)
    release(session, worker_id, batch.releases)
    return BatchResult(decisions, skipped)


def _start(
    session: Session,
    sql: SendPath,
    worker_id: str,
    key: bytes,
    now: datetime,
    marks: Sequence[StartMark],
    caps: Caps,
) -> tuple[dict[int, StartDecision], dict[int, SkipReason]]:
    if not marks:
        return {}, {}
    skips = send_time_skips(session, key, now, [s.candidate for s in marks], caps)
    sql.skip_rows(session, worker_id, now, [(i, r.value) for i, r in skips.items()])
    wanted = [
        (s.candidate.row_id, s.message_id, s.provider)
        for s in marks
        if s.candidate.row_id not in skips
    ]
    started = sql.mark_started(session, worker_id, now, wanted)
    # Not marked: the campaign was paused or cancelled (give the claim back) or the lease was
    # lost (then this matches nothing).
    sql.give_back_rows(session, worker_id, [i for i, _, _ in wanted if i not in started])
    decisions = {
        s.candidate.row_id: (
            StartDecision.SKIPPED
            if s.candidate.row_id in skips
            else StartDecision.STARTED
            if s.candidate.row_id in started
            else StartDecision.REFUSED
        )
        for s in marks
    }
    return decisions, skips


def _finish(
    session: Session,
    sql: SendPath,
    worker_id: str,
    key: bytes,
    now: datetime,
    finishes: Sequence[Finish],
) -> None:
    if not finishes:
        return

    def values(f: Finish) -> Finished:
        return Finished(
            row_id=f.row_id,
            attempt=f.attempt,
            state=f.state.value,
            reply=f.reply[:2000],
            failure=f.failure,
            sent_at=now if f.state is MessageState.SENT else None,
            next_attempt_at=f.next_attempt_at,
            provider=f.provider,
            contact_id=f.contact_id,
            campaign_id=f.campaign_id,
            marketing=f.marketing,
        )

    sql.finish_started(session, now, [values(f) for f in finishes if f.started])
    sql.finish_unstarted_rows(
        session, worker_id, now, [values(f) for f in finishes if not f.started]
    )
    for f in finishes:
        if f.suppress and f.email:
            suppress(session, key, f.email, SuppressionReason.HARD_BOUNCE, now)
        if f.provider and f.slowdown is not None:
            record_slowdown(session, f.provider, f.slowdown, now)
        if f.provider and f.pause_until is not None and pause_provider(
            session, f.provider, f.pause_until, f.reply[:500], now
        ):
            raise_alert(
                session,
                now,
                AlertLevel.CRITICAL,
                AlertKind.POLICY_BLOCK,
                f"sending to {f.provider} paused until {f.pause_until:%Y-%m-%d %H:%M} UTC: "
                f"policy rejection {f.reply[:300]}",
                campaign_id=f.campaign_id,
                provider=f.provider,
            )

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

from sqlalchemy import and_, bindparam, case, func, insert, select, update
from sqlalchemy.orm import Session

from campaigns.delivery.alerts import AlertKind, AlertLevel, raise_alert
from campaigns.delivery.eligibility import Candidate, Caps, send_time_skips
from campaigns.delivery.pacing import pause_provider, record_slowdown
from campaigns.delivery.queue import PENDING_STATES, _table, messages, release, state_in
from campaigns.delivery.throttle import Pace
from campaigns.models import CampaignStatus, MessageState, SkipReason
from lists.models import EventClass, EventKind, SuppressionReason
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
    decisions, skipped = _start(session, worker_id, key, now, batch.starts, caps)
    _finish(session, worker_id, key, now, batch.finishes)
    release(session, worker_id, batch.releases)
    return BatchResult(decisions, skipped)


def _start(
    session: Session,
    worker_id: str,
    key: bytes,
    now: datetime,
    marks: Sequence[StartMark],
    caps: Caps,
) -> tuple[dict[int, StartDecision], dict[int, SkipReason]]:
    if not marks:
        return {}, {}
    m = messages()
    campaigns = _table("campaigns")
    skips = send_time_skips(session, key, now, [s.candidate for s in marks], caps)
    mine = and_(m.c.lease_owner == worker_id, state_in(m.c.state, PENDING_STATES))
    if skips:
        session.execute(
            update(m)
            .where(m.c.id == bindparam("b_id"), mine)
            .values(
                state=MessageState.SKIPPED.value,
                skip_reason=bindparam("b_reason"),
                lease_owner=None,
                updated_at=now,
            ),
            [{"b_id": i, "b_reason": r.value} for i, r in skips.items()],
        )
    wanted = [s.candidate.row_id for s in marks if s.candidate.row_id not in skips]
    started: set[int] = set()
    if wanted:
        sending = select(campaigns.c.id).where(
            campaigns.c.status == CampaignStatus.SENDING.value
        )
        ids = {s.candidate.row_id: s for s in marks if s.candidate.row_id not in skips}
        # One statement: the mark, and the Message-ID and provider of each row by CASE.
        started = set(
            session.execute(
                update(m)
                .where(m.c.id.in_(wanted), mine, m.c.campaign_id.in_(sending))
                .values(
                    state=MessageState.SENDING.value,
                    attempts=m.c.attempts + 1,
                    first_attempt_at=func.coalesce(m.c.first_attempt_at, now),
                    last_attempt_at=now,
                    updated_at=now,
                    message_id=case({i: s.message_id for i, s in ids.items()}, value=m.c.id),
                    provider=case({i: s.provider for i, s in ids.items()}, value=m.c.id),
                )
                .returning(m.c.id)
            ).scalars()
        )
    refused = [i for i in wanted if i not in started]
    if refused:
        # Campaign paused or cancelled: give the claims back (a lost lease matches nothing).
        session.execute(update(m).where(m.c.id.in_(refused), mine).values(lease_owner=None))
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
    session: Session, worker_id: str, key: bytes, now: datetime, finishes: Sequence[Finish]
) -> None:
    if not finishes:
        return
    m = messages()
    values = {
        "state": bindparam("b_state"),
        "last_reply": bindparam("b_reply"),
        "failure": bindparam("b_failure"),
        "sent_at": bindparam("b_sent_at", type_=m.c.sent_at.type),
        "next_attempt_at": bindparam("b_next", type_=m.c.next_attempt_at.type),
        "provider": func.coalesce(bindparam("b_provider", type_=m.c.provider.type), m.c.provider),
        "lease_owner": None,
        "updated_at": now,
    }

    def params(f: Finish) -> dict[str, object]:
        return {
            "b_id": f.row_id,
            "b_attempt": f.attempt,
            "b_state": f.state.value,
            "b_reply": f.reply[:2000],
            "b_failure": f.failure,
            "b_sent_at": now if f.state is MessageState.SENT else None,
            "b_next": f.next_attempt_at,
            "b_provider": f.provider,
        }

    started = [params(f) for f in finishes if f.started]
    if started:
        # The attempt number pins the row: a late outcome of a reaped worker still replaces
        # `unknown` with what really happened, never a later attempt's state.
        session.execute(
            update(m)
            .where(
                m.c.id == bindparam("b_id"),
                m.c.attempts == bindparam("b_attempt"),
                state_in(m.c.state, (MessageState.SENDING.value, MessageState.UNKNOWN.value)),
            )
            .values(**values),
            started,
        )
    unstarted = [params(f) for f in finishes if not f.started]
    if unstarted:
        session.execute(
            update(m)
            .where(
                m.c.id == bindparam("b_id"),
                m.c.lease_owner == worker_id,
                state_in(m.c.state, PENDING_STATES),
                (m.c.attempts + 1) == bindparam("b_attempt"),
            )
            .values(
                **values,
                attempts=m.c.attempts + 1,
                first_attempt_at=func.coalesce(m.c.first_attempt_at, now),
                last_attempt_at=now,
            ),
            unstarted,
        )
    delivered = [f for f in finishes if f.state is MessageState.SENT and f.contact_id is not None]
    if delivered:
        session.execute(
            insert(_table("events")),
            [
                {
                    "contact_id": f.contact_id,
                    "campaign_id": f.campaign_id,
                    "kind": EventKind.SENT.value,
                    "classification": EventClass.HUMAN.value,
                    "occurred_at": now,
                }
                for f in delivered
            ],
        )
        marketing = sorted({f.contact_id for f in delivered if f.marketing and f.contact_id})
        if marketing:
            contacts = _table("contacts")
            session.execute(
                update(contacts).where(contacts.c.id.in_(marketing)).values(last_emailed_at=now)
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

"""Sending controls (C2, D8, D9): start now, pause, resume, cancel, start what is due and
finish what is done, and the automatic pause of a campaign whose complaint or hard-bounce rate
is too high. Every change is a status in the database, so it survives restarts; workers re-read
statuses every control tick and the commit point refuses a message whose campaign is no longer
sending, so a pause takes effect within a second."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session
from sqlmodel import col

from campaigns.delivery.alerts import AlertKind, AlertLevel, has_alert, raise_alert
from campaigns.delivery.pacing import pause_provider
from campaigns.delivery.protocols import AudienceFreezer
from campaigns.delivery.scheduling import start_campaign
from campaigns.delivery.statements import TRANSACTIONAL_KINDS
from campaigns.delivery.stats import message_events
from campaigns.lifecycle import transition
from campaigns.models import (
    Campaign,
    CampaignStatus,
    DeliveryFailure,
    Message,
    MessageState,
    SkipReason,
)
from lists.errors import ConflictError, NotFoundError
from lists.models import Event, EventKind

C = CampaignStatus

PENDING_STATES = (MessageState.QUEUED.value, MessageState.DEFERRED.value)
OPEN_STATES = (*PENDING_STATES, MessageState.SENDING.value)


def get_campaign(session: Session, campaign_id: int, *, lock: bool = False) -> Campaign:
    campaign = session.get(Campaign, campaign_id, with_for_update=lock or None)
    if campaign is None:
        raise NotFoundError(f"no campaign with id {campaign_id}")
    return campaign


def send_now(
    session: Session,
    campaign_id: int,
    now: datetime,
    freezer: AudienceFreezer,
    default_timezone: str = "UTC",
) -> Campaign:
    """Start a draft or scheduled campaign at once (a local-time schedule is kept)."""
    campaign = get_campaign(session, campaign_id, lock=True)
    status = C(campaign.status)
    if status is C.PAUSED:
        raise ConflictError(f"campaign {campaign_id} is paused: resume it instead")
    if status is C.SENDING:
        raise ConflictError(f"campaign {campaign_id} is already sending")
    if campaign.local_send_time is None:
        campaign.scheduled_at = now
    start_campaign(session, campaign, now, freezer, default_timezone)
    return campaign


def pause(session: Session, campaign_id: int, now: datetime) -> Campaign:
    campaign = get_campaign(session, campaign_id, lock=True)
    transition(campaign, C.PAUSED, now)
    return campaign


def resume(session: Session, campaign_id: int, now: datetime) -> Campaign:
    campaign = get_campaign(session, campaign_id, lock=True)
    if C(campaign.status) is not C.PAUSED:
        raise ConflictError(f"campaign {campaign_id} is {campaign.status}, not paused")
    transition(campaign, C.SENDING, now)
    return campaign


def cancel(session: Session, campaign_id: int, now: datetime) -> Campaign:
    """Cancel for good: nothing more is sent; messages already sent stay in the log. A
    double opt-in confirmation campaign cannot be cancelled (its list's pending sign-ups would
    never be asked again); pause it instead."""
    campaign = get_campaign(session, campaign_id, lock=True)
    if campaign.kind in TRANSACTIONAL_KINDS:
        raise ConflictError(
            f"campaign {campaign_id} sends the {campaign.kind} mail of its list: it cannot be "
            "cancelled; pause it instead"
        )
    transition(campaign, C.CANCELLED, now)
    session.flush()
    settle_cancelled(session, now)
    return campaign


def settle_cancelled(session: Session, now: datetime) -> int:
    """Mark the unsent messages of cancelled campaigns skipped (`cancelled`), so the send log
    says why they were never sent. Rows a worker holds (claimed, or in an SMTP transaction)
    are left to it: it gives claims back when it sees the cancel, and a later call (each
    control tick) settles them. Returns how many rows it marked."""
    cancelled = select(col(Campaign.id)).where(col(Campaign.status) == C.CANCELLED.value)
    result = session.execute(
        update(Message)
        .where(
            col(Message.campaign_id).in_(cancelled),
            col(Message.state).in_(PENDING_STATES),
            col(Message.lease_owner).is_(None),
        )
        .values(
            state=MessageState.SKIPPED.value,
            skip_reason=SkipReason.CANCELLED.value,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def start_due(
    session: Session, now: datetime, freezer: AudienceFreezer, default_timezone: str = "UTC"
) -> list[int]:
    """Start every scheduled campaign whose time has come; returns their ids. Several workers
    may call this at once: the row lock lets one of them do each campaign."""
    started = []
    due = session.execute(
        select(Campaign)
        .where(col(Campaign.status) == C.SCHEDULED.value, col(Campaign.scheduled_at) <= now)
        .with_for_update(skip_locked=True)
    ).scalars()
    for campaign in list(due):
        assert campaign.id is not None
        start_campaign(session, campaign, now, freezer, default_timezone)
        started.append(campaign.id)
    return started


def finish_done(session: Session, now: datetime) -> list[int]:
    """Mark `sent` every sending campaign with nothing left to send."""
    open_rows = exists().where(
        col(Message.campaign_id) == col(Campaign.id), col(Message.state).in_(OPEN_STATES)
    )
    done = session.execute(
        select(Campaign)
        .where(
            col(Campaign.status) == C.SENDING.value,
            col(Campaign.kind).not_in(TRANSACTIONAL_KINDS),
            ~open_rows,
        )
        .with_for_update(skip_locked=True)
    ).scalars()
    finished = []
    for campaign in list(done):
        assert campaign.id is not None
        transition(campaign, C.SENT, now)
        finished.append(campaign.id)
    return finished


@dataclass(frozen=True, slots=True)
class RateLimits:
    complaint_warn: float = 0.001
    complaint_pause: float = 0.003
    hard_bounce_pause: float = 0.05
    min_messages: int = 100
    provider_pause: timedelta = timedelta(minutes=30)


def check_rates(
    session: Session, campaign_id: int, now: datetime, limits: RateLimits
) -> list[str]:
    """D9: warn at the complaint warning rate; pause the campaign at the complaint pause rate or
    above the hard-bounce rate; pause a provider's stream whose own complaint or hard-bounce
    rate is too high. Returns what was done, one line each."""
    done: list[str] = []
    rows = session.execute(
        select(col(Message.provider), col(Message.state), col(Message.failure), func.count())
        .where(
            col(Message.campaign_id) == campaign_id,
            col(Message.state).in_((MessageState.SENT.value, MessageState.BOUNCED.value)),
        )
        .group_by(col(Message.provider), col(Message.state), col(Message.failure))
    ).all()
    sent = sum(n for _, state, _, n in rows if state == MessageState.SENT.value)
    hard_by: dict[str, int] = {}
    total_by: dict[str, int] = {}
    for provider, state, failure, n in rows:
        key = provider or "?"
        total_by[key] = total_by.get(key, 0) + n
        if state == MessageState.BOUNCED.value and failure == DeliveryFailure.HARD_BOUNCE.value:
            hard_by[key] = hard_by.get(key, 0) + n
    hard = sum(hard_by.values())
    complaints_by: dict[str, int] = {
        provider or "?": int(n)
        for provider, n in session.execute(
            message_events(
                campaign_id,
                EventKind.COMPLAINT,
                col(Message.provider),
                func.count(func.distinct(col(Event.contact_id))),
            ).group_by(col(Message.provider))
        )
    }
    complaints = sum(complaints_by.values())
    campaign = get_campaign(session, campaign_id, lock=True)
    if C(campaign.status) is not C.SENDING:
        return done

    if sent >= limits.min_messages:
        rate = complaints / sent
        if rate >= limits.complaint_pause:
            message = (
                f"campaign {campaign_id} paused: complaint rate {rate:.2%} "
                f"≥ {limits.complaint_pause:.2%}"
            )
            transition(campaign, C.PAUSED, now)
            raise_alert(session, now, AlertLevel.CRITICAL, AlertKind.COMPLAINT_RATE, message,
                        campaign_id=campaign_id)
            return [message]
        if rate >= limits.complaint_warn and not has_alert(
            session, AlertKind.COMPLAINT_WARNING, campaign_id=campaign_id
        ):
            message = (
                f"campaign {campaign_id}: complaint rate {rate:.2%} ≥ {limits.complaint_warn:.2%}"
            )
            raise_alert(session, now, AlertLevel.WARNING, AlertKind.COMPLAINT_WARNING, message,
                        campaign_id=campaign_id)
            done.append(message)
    attempted = sent + hard
    if attempted >= limits.min_messages and hard / attempted > limits.hard_bounce_pause:
        message = (
            f"campaign {campaign_id} paused: hard-bounce rate {hard / attempted:.2%} "
            f"> {limits.hard_bounce_pause:.2%}"
        )
        transition(campaign, C.PAUSED, now)
        raise_alert(session, now, AlertLevel.CRITICAL, AlertKind.BOUNCE_RATE, message,
                    campaign_id=campaign_id)
        return [*done, message]
    for provider, total in total_by.items():
        if provider == "?" or total < limits.min_messages:
            continue
        bad = hard_by.get(provider, 0)
        complained = complaints_by.get(provider, 0)
        if bad / total > limits.hard_bounce_pause:
            reason = f"hard-bounce rate {bad / total:.2%} in campaign {campaign_id}"
        elif complained / total >= limits.complaint_pause:
            reason = f"complaint rate {complained / total:.2%} in campaign {campaign_id}"
        else:
            continue
        if pause_provider(session, provider, now + limits.provider_pause, reason, now):
            message = f"sending to {provider} paused: {reason}"
            raise_alert(session, now, AlertLevel.CRITICAL, AlertKind.PROVIDER_PAUSED, message,
                        campaign_id=campaign_id, provider=provider)
            done.append(message)
    return done

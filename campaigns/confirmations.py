"""Double opt-in confirmation mail (A2, A5): each double opt-in list has one confirmation
campaign, made by Patron the first time the list has a pending subscriber, and a sweep queues one
send-log row in it for each pending subscription that has none yet. The delivery engine sends
those rows like any other (throttled, exactly once, consent re-checked at the commit point,
where a confirmation to someone who confirmed, unsubscribed or was suppressed meanwhile is
skipped with the reason).

The sweep is set-based: per list one anti-join (pending subscriptions along their (list, status)
index WHERE NOT EXISTS a row under the send log's unique (campaign, contact) key) and one
INSERT of what it found. It is idempotent: run twice, or by two workers at once, it queues each
confirmation once (PostgreSQL workers take turns through an advisory lock; the unique key and
ON CONFLICT DO NOTHING back it up).

Only subscriptions that became pending within ``CONFIRMATION_WINDOW`` are mailed: an old
pending sign-up (kept from before an upgrade, or from an import of someone else's history) does
not get a confirmation out of the blue years later."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Table, exists, select, text, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session
from sqlmodel import SQLModel, col

from campaigns.lifecycle import transition
from campaigns.models import Campaign, CampaignKind, CampaignList, CampaignStatus, MessageState
from campaigns.rendering import load_shipped_template
from campaigns.service import slugify, unique_slug
from lists.models import MailingList, Subscription, SubscriptionStatus

CONFIRMATION_TEMPLATE = "confirmation"
CONFIRMATION_WINDOW = timedelta(days=7)
# The pg_try_advisory_xact_lock key of the sweep ("patron" and 1): one PostgreSQL worker at a time.
SWEEP_LOCK = 0x7061_7472_6F6E_0001

# Rows queued by one sweep from which the send log is analyzed (PostgreSQL).
ANALYZE_AFTER = 10_000
# Rows one sweep queues at most (~0.7 s on PostgreSQL): the sweep runs in a worker's control
# tick, whose heartbeat must not wait long. A million pending sign-ups take ~50 sweeps.
MAX_PER_SWEEP = 20_000

_PENDING = SubscriptionStatus.PENDING.value
_KIND = CampaignKind.CONFIRMATION.value
# Paused confirmation campaigns still collect rows (sent on resume); cancelled ones none.
_OPEN_STATUSES = (CampaignStatus.SENDING.value, CampaignStatus.PAUSED.value)


@dataclass(frozen=True, slots=True)
class SweepResult:
    """What one sweep did: confirmation campaigns made, rows queued, skipped rows queued again
    (their contact subscribed anew since), and whether another worker held the sweep."""

    created: tuple[int, ...] = ()
    queued: int = 0
    requeued: int = 0
    busy: bool = False


def confirmation_campaign_of(session: Session, list_id: int) -> Campaign | None:
    """The confirmation campaign of list ``list_id``, if it was made."""
    return session.execute(
        select(Campaign)
        .join(CampaignList, col(CampaignList.campaign_id) == col(Campaign.id))
        .where(col(CampaignList.list_id) == list_id, col(Campaign.kind) == _KIND)
        .order_by(col(Campaign.id))
        .limit(1)
    ).scalar_one_or_none()


def ensure_confirmation_campaign(
    session: Session, mailing_list: MailingList, now: datetime
) -> Campaign:
    """The list's confirmation campaign, made (already sending: it never finishes) the first
    time: the shipped confirmation template with its default subject and content."""
    assert mailing_list.id is not None
    existing = confirmation_campaign_of(session, mailing_list.id)
    if existing is not None:
        return existing
    source = load_shipped_template(CONFIRMATION_TEMPLATE)
    assert source.info is not None
    name = f"Confirm subscription: {mailing_list.name}"[:200]
    campaign = Campaign(
        name=name,
        slug=unique_slug(session, slugify(name)),
        kind=_KIND,
        template=CONFIRMATION_TEMPLATE,
        template_source=source.text,
        subject=source.info.default_subject,
        created_at=now,
        updated_at=now,
    )
    session.add(campaign)
    session.flush()
    assert campaign.id is not None
    session.add(CampaignList(campaign_id=campaign.id, list_id=mailing_list.id))
    transition(campaign, CampaignStatus.SENDING, now)
    session.flush()
    return campaign


def sweep_confirmations(
    session: Session,
    now: datetime,
    *,
    window: timedelta = CONFIRMATION_WINDOW,
    limit: int = MAX_PER_SWEEP,
) -> SweepResult:
    """Make missing confirmation campaigns and queue up to ``limit`` confirmations not queued
    yet (due now; a bigger backlog is queued by the next sweeps). The caller commits."""
    if session.get_bind().dialect.name == "postgresql" and not session.execute(
        text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": SWEEP_LOCK}
    ).scalar_one():
        return SweepResult(busy=True)
    created = tuple(
        c.id for c in _make_missing_campaigns(session, now) if c.id is not None
    )
    targets = session.execute(
        select(col(Campaign.id), col(CampaignList.list_id))
        .join(CampaignList, col(CampaignList.campaign_id) == col(Campaign.id))
        .join(MailingList, col(MailingList.id) == col(CampaignList.list_id))
        .where(
            col(Campaign.kind) == _KIND,
            col(Campaign.status).in_(_OPEN_STATUSES),
            col(MailingList.double_opt_in).is_(True),
        )
    ).all()
    since = now - window
    queued = requeued = 0
    for campaign_id, list_id in targets:
        assert campaign_id is not None
        # Requeue first: planned on statistics from before this sweep's own inserts, the
        # requeue could otherwise take the just-queued rows for a handful and nest-loop them.
        requeued += _requeue(session, campaign_id, list_id, now, since)
        if queued < limit:
            queued += _queue(session, campaign_id, list_id, now, since, limit - queued)
    if queued >= ANALYZE_AFTER and session.get_bind().dialect.name == "postgresql":
        # As when a campaign starts: plans of the send path must see the grown send log.
        session.execute(text("ANALYZE messages"))
    return SweepResult(created=created, queued=queued, requeued=requeued)


class ConfirmationSweeper:
    """:func:`sweep_confirmations` at most every ``interval`` seconds, and spaced to at least
    20 times its own duration, so that a big list never takes more than ~5 % of the database
    thread of the worker that calls it on each control tick."""

    def __init__(
        self, interval: float = 5.0, *, window: timedelta = CONFIRMATION_WINDOW
    ) -> None:
        self.interval = interval
        self.window = window
        self.last: SweepResult | None = None
        self._next = 0.0

    def __call__(self, session: Session, now: datetime) -> SweepResult | None:
        began = time.monotonic()
        if began < self._next:
            return None
        self.last = sweep_confirmations(session, now, window=self.window)
        self._next = began + max(self.interval, 20 * (time.monotonic() - began))
        return self.last


def _t(name: str) -> Table:
    return SQLModel.metadata.tables[name]


def _make_missing_campaigns(session: Session, now: datetime) -> list[Campaign]:
    has_pending = exists().where(
        col(Subscription.list_id) == col(MailingList.id), col(Subscription.status) == _PENDING
    )
    has_campaign = (
        exists()
        .where(
            col(CampaignList.list_id) == col(MailingList.id),
            col(Campaign.id) == col(CampaignList.campaign_id),
            col(Campaign.kind) == _KIND,
        )
    )
    lists = session.execute(
        select(MailingList)
        .where(col(MailingList.double_opt_in).is_(True), has_pending, ~has_campaign)
        .order_by(col(MailingList.id))
    ).scalars()
    return [ensure_confirmation_campaign(session, lst, now) for lst in list(lists)]


def _queue(session: Session, campaign_id: int, list_id: int, now: datetime,
           since: datetime, limit: int) -> int:
    """One queued row per recent pending subscription of the list without one (the same
    columns a frozen audience writes, due now).

    Two statements, not one INSERT … SELECT … WHERE NOT EXISTS: PostgreSQL plans the anti-join
    on statistics that may call the send log empty (a new installation, a freshly analyzed
    empty table) and then nest-loops a sequential scan of it, which inside an INSERT also
    reads every row the statement itself has written so far: quadratic (100k rows: 84 s)."""
    m, s = _t("messages"), _t("subscriptions")
    queued = exists().where(m.c.campaign_id == campaign_id, m.c.contact_id == s.c.contact_id)
    missing = list(
        session.execute(
            select(s.c.contact_id)
            .where(s.c.list_id == list_id, s.c.status == _PENDING, s.c.updated_at >= since,
                   ~queued)
            .order_by(s.c.contact_id)
            .limit(limit)
        ).scalars()
    )
    pg = session.get_bind().dialect.name == "postgresql"
    done = 0
    for start in range(0, len(missing), _CHUNK):
        chunk = missing[start : start + _CHUNK]
        if pg:
            result = session.execute(
                _INSERT_PG, {"campaign": campaign_id, "ids": chunk, "now": now}
            )
        else:
            rows = [
                {"campaign_id": campaign_id, "contact_id": contact_id,
                 "state": MessageState.QUEUED.value, "variant": 0, "attempts": 0,
                 "due_at": now, "next_attempt_at": now, "created_at": now, "updated_at": now}
                for contact_id in chunk
            ]
            statement = sqlite.insert(m).on_conflict_do_nothing()
            result = session.execute(statement.execution_options(preserve_rowcount=True), rows)
        done += int(getattr(result, "rowcount", 0) or 0)
    return done


_CHUNK = 10_000
_INSERT_PG = text(
    "INSERT INTO messages (campaign_id, contact_id, state, variant, attempts, due_at, "
    "next_attempt_at, created_at, updated_at) "
    "SELECT :campaign, u.id, 'queued', 0, 0, :now, :now, :now, :now "
    "FROM unnest(CAST(:ids AS integer[])) AS u(id) "
    "ON CONFLICT DO NOTHING"
)


def _requeue(session: Session, campaign_id: int, list_id: int, now: datetime,
             since: datetime) -> int:
    """Confirmations again for contacts whose subscription became pending again after their
    last one was settled (a new sign-up after an unsubscription): the row (skipped, sent,
    failed or bounced) is queued again as new, with a new ``created_at`` that gives the new
    mail a Message-ID of its own (receivers drop a message whose Message-ID they have seen).
    A row whose outcome is unknown stays: it may have been delivered."""
    m, s = _t("messages"), _t("subscriptions")
    pending_again = exists().where(
        s.c.contact_id == m.c.contact_id,
        s.c.list_id == list_id,
        s.c.status == _PENDING,
        s.c.updated_at > m.c.updated_at,
        s.c.updated_at >= since,
    )
    settled = (
        MessageState.SKIPPED.value, MessageState.SENT.value, MessageState.FAILED.value,
        MessageState.BOUNCED.value,
    )
    done = session.execute(
        update(m)
        .where(m.c.campaign_id == campaign_id, m.c.state.in_(settled), pending_again)
        .values(state=MessageState.QUEUED.value, skip_reason=None, due_at=now,
                next_attempt_at=now, lease_owner=None, created_at=now, updated_at=now,
                message_id=None, sent_at=None, last_reply=None, failure=None,
                first_attempt_at=None)
    )
    return int(getattr(done, "rowcount", 0) or 0)

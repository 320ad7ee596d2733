"""Freezing a campaign's audience (C1, C5, C6, D1): who is targeted, who is skipped and why,
who is in the holdout, which A/B variant each recipient gets, and each one's discount code.

The audience is the contacts subscribed to any of the campaign's lists, narrowed by its segment
and minus its exclusion segment. Each of them gets one row in the send log: `queued`, or
`skipped` with the reason. Draws are seeded hashes of (campaign seed, contact id), so they are
reproducible and independent of the order rows come back in."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, case, func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from campaigns.discounts import assign_codes
from campaigns.lifecycle import require_editable
from campaigns.models import Campaign, CampaignKind, CampaignList, Message, MessageState, SkipReason
from lists.errors import NotFoundError
from lists.hygiene import HygienePolicy, sunset_contact_ids
from lists.imports.bulk import Bulk
from lists.models import Contact, Segment, Subscription, SubscriptionStatus, Suppression
from lists.segments import segment_contact_ids_query
from lists.suppressions import address_hmac

# Variant given to A/B recipients outside the test share: they wait for the winner.
AWAITING_WINNER = -1


@dataclass(frozen=True, slots=True)
class AudienceSummary:
    targeted: int
    queued: int
    skipped: dict[str, int]
    holdout: int
    variants: dict[int, int]


def draw(seed: int, salt: str, contact_id: int) -> float:
    """A uniform number in [0, 1) fixed by (seed, salt, contact id)."""
    digest = hashlib.blake2b(f"{seed}:{salt}:{contact_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def assign_variant(campaign: Campaign, contact_id: int) -> int:
    """0 without an A/B test; else a variant index for the test share, AWAITING_WINNER for the
    rest."""
    variants = len(campaign.ab_subjects)
    if variants < 2:
        return 0
    if draw(campaign.seed, "ab-share", contact_id) * 100 >= campaign.ab_test_percent:
        return AWAITING_WINNER
    return int(draw(campaign.seed, "ab-variant", contact_id) * variants)


def in_holdout(campaign: Campaign, contact_id: int) -> bool:
    return draw(campaign.seed, "holdout", contact_id) * 100 < campaign.holdout_percent


def freeze_audience(
    session: Session,
    campaign: Campaign,
    key: bytes,
    now: datetime,
    policy: HygienePolicy = HygienePolicy(),
) -> AudienceSummary:
    """Write the send log rows of ``campaign`` (once; a second call returns the frozen summary).
    Raises ConflictError, writing nothing, when the discount pool cannot cover the recipients."""
    assert campaign.id is not None
    if campaign.audience_frozen_at is not None:
        return summarize(session, campaign)
    require_editable(campaign)
    list_ids = list(
        session.execute(
            select(col(CampaignList.list_id)).where(col(CampaignList.campaign_id) == campaign.id)
        ).scalars()
    )
    # One row per contact with its best status over the campaign's lists:
    # 3 confirmed somewhere, 2 pending somewhere, 1 unsubscribed everywhere.
    status_rank = func.max(
        case(
            (col(Subscription.status) == SubscriptionStatus.CONFIRMED.value, 3),
            (col(Subscription.status) == SubscriptionStatus.PENDING.value, 2),
            else_=1,
        )
    )
    query = (
        select(
            col(Contact.id),
            col(Contact.email),
            col(Contact.is_role),
            col(Contact.is_disposable),
            status_rank.label("rank"),
        )
        .join(Subscription, col(Subscription.contact_id) == col(Contact.id))
        .where(col(Subscription.list_id).in_(list_ids))
        .group_by(
            col(Contact.id), col(Contact.email), col(Contact.is_role), col(Contact.is_disposable)
        )
        .order_by(col(Contact.id))
    )
    if campaign.segment_id is not None:
        query = query.where(col(Contact.id).in_(_segment_ids(session, campaign.segment_id, now)))
    rules = _Exclusions(
        key=key,
        policy=policy,
        suppressed=set(session.execute(select(col(Suppression.address_hmac))).scalars()),
        sunset=set(
            session.execute(
                sunset_contact_ids(now, campaigns=policy.sunset_campaigns, days=policy.sunset_days)
            ).scalars()
        ),
        excluded=(
            set(session.execute(_segment_ids(session, campaign.exclude_segment_id, now)).scalars())
            if campaign.exclude_segment_id is not None
            else set()
        ),
    )

    decided: list[tuple[int, SkipReason | None, int]] = []  # contact, skip reason, variant
    queued_ids: list[int] = []
    for contact_id, email, is_role, is_disposable, rank in session.execute(query):
        reason = rules.reason(contact_id, email, rank, is_role, is_disposable)
        variant = 0
        if reason is None and in_holdout(campaign, contact_id):
            reason = SkipReason.HOLDOUT
        if reason is None:
            variant = assign_variant(campaign, contact_id)
            queued_ids.append(contact_id)
        decided.append((contact_id, reason, variant))
    codes: dict[int, str] = {}
    if campaign.kind == CampaignKind.DISCOUNT.value and queued_ids:
        codes = assign_codes(session, campaign, queued_ids, now)
    _write_send_log(session, campaign.id, decided, codes, now, due=first_due_time(campaign, now))
    campaign.audience_frozen_at = now
    campaign.updated_at = now
    session.flush()
    return summarize(session, campaign)


def first_due_time(campaign: Campaign, now: datetime) -> datetime | None:
    """When a starting campaign's queued recipients are due, if it is the same for all: its
    scheduled time (or now); None when a local send time or a sending window makes it depend on
    each recipient's time zone (campaigns.delivery.scheduling works those out)."""
    if campaign.local_send_time is not None or (campaign.window_start and campaign.window_end):
        return None
    return max(campaign.scheduled_at or now, now)


# The send log's columns as the audience freeze writes them, with their PostgreSQL types.
_LOG_COLUMNS = (
    ("campaign_id", "int8"), ("contact_id", "int8"), ("state", "text"), ("skip_reason", "text"),
    ("variant", "int4"), ("discount_code", "text"), ("attempts", "int4"),
    ("due_at", "timestamptz"), ("next_attempt_at", "timestamptz"),
    ("created_at", "timestamptz"), ("updated_at", "timestamptz"),
)
_LOG_BATCH = 50_000


def _write_send_log(
    session: Session,
    campaign_id: int,
    decided: Sequence[tuple[int, SkipReason | None, int]],
    codes: dict[int, str],
    now: datetime,
    *,
    due: datetime | None,
) -> None:
    """One row per decided contact, through the bulk writer of imports (one ``unnest`` insert
    per batch on PostgreSQL, executemany of plain tuples on SQLite): the ORM's per-row insert
    took ~80 µs a row on PostgreSQL, a minute and more for a million recipients. Queued rows
    get their due time here when it is ``due`` for all, rather than by rewriting every row."""
    session.flush()
    bulk = Bulk(session.connection())
    stamp, due_at = bulk.ts(now), bulk.ts(due)
    queued, skipped = MessageState.QUEUED.value, MessageState.SKIPPED.value
    names = [name for name, _ in _LOG_COLUMNS]
    types = [pg_type for _, pg_type in _LOG_COLUMNS]
    for start in range(0, len(decided), _LOG_BATCH):
        rows = [
            (
                campaign_id, contact_id, skipped if reason else queued,
                reason.value if reason else None, variant, codes.get(contact_id), 0,
                None if reason else due_at, None if reason else due_at, stamp, stamp,
            )
            for contact_id, reason, variant in decided[start : start + _LOG_BATCH]
        ]
        bulk.insert(Message.__tablename__, names, types, rows)
    bulk.cur.close()


def _segment_ids(session: Session, segment_id: int, now: datetime) -> Select[int]:
    segment = session.get(Segment, segment_id)
    if segment is None:
        raise NotFoundError(f"segment {segment_id} no longer exists")
    return segment_contact_ids_query(segment.rule, now)


@dataclass(frozen=True, slots=True)
class _Exclusions:
    """Why a targeted contact gets nothing, checked in order of precedence: consent first (law),
    then suppression, the campaign's exclusions, hygiene, sunset."""

    key: bytes
    policy: HygienePolicy
    suppressed: set[str]
    sunset: set[int]
    excluded: set[int]

    def reason(
        self, contact_id: int, email: str, rank: int, is_role: bool, is_disposable: bool
    ) -> SkipReason | None:
        if rank == 1:
            return SkipReason.UNSUBSCRIBED
        if rank == 2:
            return SkipReason.NOT_CONFIRMED
        if address_hmac(self.key, email) in self.suppressed:
            return SkipReason.SUPPRESSED
        if contact_id in self.excluded:
            return SkipReason.EXCLUDED
        if is_role and self.policy.exclude_role_addresses:
            return SkipReason.ROLE_ADDRESS
        if is_disposable and self.policy.exclude_disposable_domains:
            return SkipReason.DISPOSABLE_DOMAIN
        if contact_id in self.sunset:
            return SkipReason.SUNSET
        return None


def summarize(session: Session, campaign: Campaign) -> AudienceSummary:
    """Counts of the frozen send log of ``campaign``."""
    skipped: Counter[str] = Counter()
    variants: Counter[int] = Counter()
    queued = 0
    for state, reason, variant, n in session.execute(
        select(
            col(Message.state), col(Message.skip_reason), col(Message.variant), func.count()
        )
        .where(col(Message.campaign_id) == campaign.id)
        .group_by(col(Message.state), col(Message.skip_reason), col(Message.variant))
    ):
        if state == MessageState.SKIPPED.value:
            skipped[str(reason)] += n
        else:
            queued += n
            variants[int(variant)] += n
    return AudienceSummary(
        targeted=queued + sum(skipped.values()),
        queued=queued,
        skipped=dict(skipped),
        holdout=skipped.get(SkipReason.HOLDOUT.value, 0),
        variants=dict(variants),
    )

"""Who may still receive a message at the moment it is sent (consent is sacred): checked at the
commit point, in the same transaction that marks the attempt started.

A recipient is skipped when the address is suppressed or the contact was erased, when the
subscription to the campaign's lists is no longer confirmed (pending is enough for a
transactional message such as the opt-in confirmation), when a marketing campaign emailed them
in the last H hours (C4, including another campaign's attempt in flight), or when a discount
campaign finds another discount sent to them in the last D days."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, select
from sqlalchemy.orm import Session
from sqlmodel import col

from campaigns.models import Campaign, CampaignKind, CampaignList, Message, MessageState, SkipReason
from lists.models import Contact, Subscription, SubscriptionStatus, Suppression
from lists.suppressions import address_hmac

S = SubscriptionStatus

# Kinds that are not marketing: no frequency cap, pending contacts may receive them, and their
# stream stays open (new rows keep arriving) instead of finishing.
TRANSACTIONAL_KINDS = frozenset({"confirmation"})


@dataclass(frozen=True, slots=True)
class Candidate:
    """One row about to be sent."""

    row_id: int
    campaign_id: int
    contact_id: int | None
    email: str | None
    kind: str
    marketing: bool


@dataclass(frozen=True, slots=True)
class Caps:
    frequency_hours: float = 16.0
    discount_days: float = 14.0
    # Whether other campaigns may have attempts in flight to the same people right now; when
    # only one campaign is sending, the in-flight check (one query per batch) is skipped.
    concurrent_campaigns: bool = True


def send_time_skips(
    session: Session, key: bytes, now: datetime, candidates: Sequence[Candidate], caps: Caps
) -> dict[int, SkipReason]:
    """The candidates that must not be sent, with the reason; a handful of queries per batch."""
    skips: dict[int, SkipReason] = {}
    live = [c for c in candidates if c.contact_id is not None and c.email]
    for c in candidates:
        if c.contact_id is None or not c.email:
            skips[c.row_id] = SkipReason.SUPPRESSED  # erased: the address is suppressed
    if not live:
        return skips
    contact_ids = sorted({c.contact_id for c in live if c.contact_id is not None})
    campaign_ids = sorted({c.campaign_id for c in live})

    digests = {c.row_id: address_hmac(key, c.email or "") for c in live}
    suppressed = set(
        session.execute(
            select(col(Suppression.address_hmac)).where(
                col(Suppression.address_hmac).in_(sorted(set(digests.values())))
            )
        ).scalars()
    )
    # One query for the contacts (missing: erased) and their subscriptions to the lists of
    # the campaigns at hand: 3 confirmed, 2 pending, 1 unsubscribed, 0 none.
    existing: dict[int, datetime | None] = {}
    status: dict[tuple[int, int], int] = {}
    rank = {S.CONFIRMED.value: 3, S.PENDING.value: 2}
    lists_of_campaigns = and_(
        col(CampaignList.list_id) == col(Subscription.list_id),
        col(CampaignList.campaign_id).in_(campaign_ids),
    )
    for contact_id, last_emailed, campaign_id, sub_status in session.execute(
        select(
            col(Contact.id), col(Contact.last_emailed_at), col(CampaignList.campaign_id),
            col(Subscription.status),
        )
        .select_from(Contact)
        .outerjoin(Subscription, col(Subscription.contact_id) == col(Contact.id))
        .outerjoin(CampaignList, lists_of_campaigns)
        .where(col(Contact.id).in_(contact_ids))
    ):
        assert contact_id is not None
        existing[contact_id] = last_emailed
        if campaign_id is not None:
            pair = (contact_id, campaign_id)
            status[pair] = max(status.get(pair, 1), rank.get(sub_status, 1))

    busy_elsewhere: dict[int, set[int]] = {}
    recent_discounts: dict[int, set[int]] = {}
    if caps.frequency_hours > 0 and caps.concurrent_campaigns and any(c.marketing for c in live):
        for busy_contact, busy_campaign in session.execute(
            select(col(Message.contact_id), col(Message.campaign_id))
            .join(Campaign, col(Campaign.id) == col(Message.campaign_id))
            .where(
                col(Message.contact_id).in_(contact_ids),
                col(Message.state) == MessageState.SENDING.value,
                col(Campaign.kind).not_in(TRANSACTIONAL_KINDS),
            )
        ):
            busy_elsewhere.setdefault(int(busy_contact or 0), set()).add(busy_campaign)
    if caps.discount_days > 0 and any(c.kind == CampaignKind.DISCOUNT.value for c in live):
        since = now - timedelta(days=caps.discount_days)
        for offer_contact, offer_campaign in session.execute(
            select(col(Message.contact_id), col(Message.campaign_id))
            .join(Campaign, col(Campaign.id) == col(Message.campaign_id))
            .where(
                col(Message.contact_id).in_(contact_ids),
                col(Campaign.kind) == CampaignKind.DISCOUNT.value,
                col(Message.state).in_(
                    (MessageState.SENT.value, MessageState.UNKNOWN.value,
                     MessageState.SENDING.value)
                ),
                col(Message.last_attempt_at) >= since,
            )
        ):
            recent_discounts.setdefault(int(offer_contact or 0), set()).add(offer_campaign)

    frequency_since = now - timedelta(hours=caps.frequency_hours)
    in_this_batch: set[int] = set()
    for c in live:
        assert c.contact_id is not None
        reason: SkipReason | None = None
        best = status.get((c.contact_id, c.campaign_id), 0)
        if c.contact_id not in existing or digests[c.row_id] in suppressed:
            reason = SkipReason.SUPPRESSED
        elif best < 2 or (c.marketing and best < 3):
            # No subscription left (erased lists) or unsubscribed; pending for marketing.
            reason = SkipReason.UNSUBSCRIBED if best < 2 else SkipReason.NOT_CONFIRMED
        elif c.marketing and caps.frequency_hours > 0 and (
            _after(existing[c.contact_id], frequency_since)
            or busy_elsewhere.get(c.contact_id, set()) - {c.campaign_id}
            or c.contact_id in in_this_batch
        ):
            reason = SkipReason.FREQUENCY_CAP
        elif c.kind == CampaignKind.DISCOUNT.value and (
            recent_discounts.get(c.contact_id, set()) - {c.campaign_id}
        ):
            reason = SkipReason.DISCOUNT_CAP
        if reason is not None:
            skips[c.row_id] = reason
        elif c.marketing:
            in_this_batch.add(c.contact_id)
    return skips


def _after(moment: datetime | None, since: datetime) -> bool:
    return moment is not None and moment > since

"""Who may still receive a message at the moment it is sent (consent is sacred): checked at the
commit point, in the same transaction that marks the attempt started.

A recipient is skipped when the address is suppressed or the contact was erased, when the
subscription to the campaign's lists is no longer confirmed (pending is enough for a
transactional message such as the opt-in confirmation, which in turn is skipped once the
subscription is confirmed: it has nothing left to ask), when a marketing campaign emailed them
in the last H hours (C4, including another campaign's attempt in flight), or when a discount
campaign finds another discount sent to them in the last D days."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from campaigns.delivery.statements import SUBSCRIBED_RANK, send_path
from campaigns.models import CampaignKind, SkipReason
from lists.suppressions import address_hmac


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
    sql = send_path(session.get_bind().dialect.name)
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
    suppressed = sql.suppressed_among(session, sorted(set(digests.values())))
    # The contacts (missing: erased) and their subscriptions to the lists of the campaigns at
    # hand: 3 confirmed, 2 pending, 1 unsubscribed, 0 none.
    existing: dict[int, datetime | None] = {}
    status: dict[tuple[int, int], int] = {}
    for contact_id, last_emailed, campaign_id, sub_status in sql.contacts_and_subscriptions(
        session, contact_ids, campaign_ids
    ):
        existing[contact_id] = last_emailed
        if campaign_id is not None:
            pair = (contact_id, campaign_id)
            status[pair] = max(status.get(pair, 1), SUBSCRIBED_RANK.get(sub_status or "", 1))

    busy_elsewhere: dict[int, set[int]] = {}
    recent_discounts: dict[int, set[int]] = {}
    if caps.frequency_hours > 0 and caps.concurrent_campaigns and any(c.marketing for c in live):
        for busy_contact, busy_campaign in sql.in_flight_elsewhere(session, contact_ids):
            busy_elsewhere.setdefault(busy_contact, set()).add(busy_campaign)
    if caps.discount_days > 0 and any(c.kind == CampaignKind.DISCOUNT.value for c in live):
        since = now - timedelta(days=caps.discount_days)
        for offer_contact, offer_campaign in sql.recent_discounts(session, contact_ids, since):
            recent_discounts.setdefault(offer_contact, set()).add(offer_campaign)

    frequency_since = now - timedelta(hours=caps.frequency_hours)
    in_this_batch: set[int] = set()
    for c in live:
        assert c.contact_id is not None
        reason: SkipReason | None = None
        best = status.get((c.contact_id, c.campaign_id), 0)
        if c.contact_id not in existing or digests[c.row_id] in suppressed:
            reason = SkipReason.SUPPRESSED
        elif best < 2 or (c.marketing and best < 3):
            # No subscription left or unsubscribed; pending is not enough for marketing.
            reason = SkipReason.UNSUBSCRIBED if best < 2 else SkipReason.NOT_CONFIRMED
        elif c.kind == CampaignKind.CONFIRMATION.value and best >= 3:
            reason = SkipReason.ALREADY_CONFIRMED
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

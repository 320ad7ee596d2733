"""List hygiene (A10, H2–H4): who marketing leaves out by default — role addresses, disposable
domains, and contacts who stopped engaging (the sunset policy). Each rule is a SQL expression
for the audience query of a send, never a Python loop over contacts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Select, exists, false, func, not_, or_, select
from sqlmodel import col

from lists.models import Contact, Event, EventClass, EventKind, Order

# The defaults of settings.hygiene, repeated here because the domain does not read settings.
DEFAULT_SUNSET_CAMPAIGNS = 10
DEFAULT_SUNSET_DAYS = 180


@dataclass(frozen=True, slots=True)
class HygienePolicy:
    """Which contacts marketing sends exclude; the shell builds it from settings.hygiene."""

    exclude_role_addresses: bool = True
    exclude_disposable_domains: bool = True
    sunset_campaigns: int = DEFAULT_SUNSET_CAMPAIGNS
    sunset_days: int = DEFAULT_SUNSET_DAYS


def sunset_contact_ids(
    now: datetime,
    *,
    campaigns: int = DEFAULT_SUNSET_CAMPAIGNS,
    days: int = DEFAULT_SUNSET_DAYS,
) -> Select[int]:
    """Ids of contacts to sunset: at least ``campaigns`` ``sent`` events in the ``days`` before
    ``now`` and, in that window, no human open, no human click and no order.

    Machine opens (Apple MPP, proxies, bots) are not engagement: they happen whether or not a
    person read the mail. Events before the window do not count either way, so a contact who
    engaged long ago and has ignored the last ``campaigns`` mails is sunset."""
    if campaigns < 1 or days < 1:
        raise ValueError("the sunset policy needs at least one campaign and one day")
    since = now - timedelta(days=days)
    received = (
        select(col(Event.contact_id).label("contact_id"))
        .where(
            col(Event.kind) == EventKind.SENT.value,
            col(Event.occurred_at) >= since,
            col(Event.occurred_at) <= now,
            col(Event.contact_id).is_not(None),
        )
        .group_by(col(Event.contact_id))
        .having(func.count() >= campaigns)
        .subquery("received")
    )
    engaged = exists().where(
        col(Event.contact_id) == received.c.contact_id,
        col(Event.kind).in_((EventKind.OPEN.value, EventKind.CLICK.value)),
        col(Event.classification) == EventClass.HUMAN.value,
        col(Event.occurred_at) >= since,
        col(Event.occurred_at) <= now,
    )
    ordered = exists().where(
        col(Order.contact_id) == received.c.contact_id,
        col(Order.ordered_at) >= since,
        col(Order.ordered_at) <= now,
    )
    return select(received.c.contact_id).where(~engaged, ~ordered)


def address_excluded(policy: HygienePolicy = HygienePolicy()) -> ColumnElement[bool]:
    """True for contacts whose address marketing skips: role addresses and disposable domains,
    as the policy says."""
    rules: list[ColumnElement[bool]] = []
    if policy.exclude_role_addresses:
        rules.append(col(Contact.is_role).is_(True))
    if policy.exclude_disposable_domains:
        rules.append(col(Contact.is_disposable).is_(True))
    return or_(*rules) if rules else false()


def excluded_from_marketing(
    now: datetime, policy: HygienePolicy = HygienePolicy()
) -> ColumnElement[bool]:
    """True for contacts a marketing send leaves out by hygiene: address rules or sunset.
    (Consent and suppression are checked separately: they are not hygiene but law.)"""
    sunset = sunset_contact_ids(now, campaigns=policy.sunset_campaigns, days=policy.sunset_days)
    return or_(address_excluded(policy), col(Contact.id).in_(sunset))


def marketable(now: datetime, policy: HygienePolicy = HygienePolicy()) -> ColumnElement[bool]:
    """The negation of :func:`excluded_from_marketing`, for a WHERE clause."""
    return not_(excluded_from_marketing(now, policy))

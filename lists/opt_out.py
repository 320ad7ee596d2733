"""Opting an address out (L2): from one list, or from everything, which also suppresses the
address. Works from the address alone, so an address Patron has no contact for can still be
suppressed ahead of a later import."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from lists.addresses import normalize_email
from lists.consent import Provenance, unsubscribe
from lists.contacts import find_contact, find_contact_or_none
from lists.mailing_lists import get_list
from lists.models import MailingList, Subscription, SubscriptionStatus, SuppressionReason
from lists.suppressions import is_suppressed, suppress


@dataclass(frozen=True, slots=True)
class OptOutResult:
    """The outcome of an opt-out; calling it again changes nothing."""

    email: str
    list_name: str | None
    contact_found: bool
    unsubscribed_from: tuple[str, ...]
    was_subscribed: bool
    suppression_reason: SuppressionReason | None
    newly_suppressed: bool


def opt_out(
    session: Session,
    key: bytes,
    raw_email: str,
    provenance: Provenance,
    now: datetime,
    *,
    list_name: str | None = None,
) -> OptOutResult:
    """Unsubscribe ``raw_email`` from the list ``list_name``, or from every list and suppress it
    (``unsubscribed_all``) when no list is named. Unknown list, or unknown contact with a list
    named: NotFoundError. With no list named and no contact, the address is only suppressed."""
    email = normalize_email(raw_email)
    mailing_list = get_list(session, list_name) if list_name is not None else None
    contact = (
        find_contact(session, email) if mailing_list is not None
        else find_contact_or_none(session, email)
    )

    if contact is None:
        newly = suppress(session, key, email, SuppressionReason.UNSUBSCRIBED_ALL, now)
        return OptOutResult(
            email=email, list_name=None, contact_found=False, unsubscribed_from=(),
            was_subscribed=False, suppression_reason=is_suppressed(session, key, email),
            newly_suppressed=newly,
        )

    assert contact.id is not None
    subs = select(col(MailingList.name), col(Subscription.status)).join(
        MailingList, col(MailingList.id) == col(Subscription.list_id)
    ).where(col(Subscription.contact_id) == contact.id)
    if mailing_list is not None:
        subs = subs.where(col(Subscription.list_id) == mailing_list.id)
    before = session.execute(subs.order_by(col(MailingList.name))).all()
    active = tuple(name for name, status in before if status != SubscriptionStatus.UNSUBSCRIBED)
    was_suppressed = is_suppressed(session, key, contact.email) is not None

    unsubscribe(session, key, contact, provenance, now, mailing_list=mailing_list)

    reason = is_suppressed(session, key, contact.email)
    return OptOutResult(
        email=contact.email,
        list_name=mailing_list.name if mailing_list is not None else None,
        contact_found=True,
        unsubscribed_from=active,
        was_subscribed=bool(before),
        suppression_reason=reason,
        newly_suppressed=reason is not None and not was_suppressed,
    )

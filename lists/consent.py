"""Subscriptions and the consent ledger (A2, A3): every status change goes through
:func:`transition`, and every change appends its proof to the ledger."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from lists.errors import ConflictError, InvalidInputError, NotFoundError
from lists.models import (
    ConsentAction,
    ConsentEvent,
    Contact,
    MailingList,
    Subscription,
    SubscriptionStatus,
    SuppressionReason,
)
from lists.suppressions import suppress

S = SubscriptionStatus

# Allowed status changes. Re-subscribing an unsubscribed contact needs fresh consent from the
# person (a form or the preference centre), never an import: withdrawal is absolute (GDPR 21(3)).
_ALLOWED: dict[S | None, set[S]] = {
    None: {S.PENDING, S.CONFIRMED},
    S.PENDING: {S.CONFIRMED, S.UNSUBSCRIBED},
    S.CONFIRMED: {S.UNSUBSCRIBED},
    S.UNSUBSCRIBED: {S.PENDING, S.CONFIRMED},
}


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where a consent action came from, as the ledger records it."""

    source: str
    ip: str | None = None
    user_agent: str | None = None
    consent_text_version: str | None = None


def check_transition(current: S | None, new: S) -> None:
    """Raise ConflictError unless ``current → new`` is an allowed subscription change."""
    if new not in _ALLOWED[current]:
        raise ConflictError(f"a subscription cannot go from {current or 'none'} to {new}")


def append_ledger(
    session: Session,
    contact_id: int,
    list_id: int | None,
    action: ConsentAction,
    provenance: Provenance,
    now: datetime,
) -> None:
    """Append one consent record (the ledger is never rewritten)."""
    if not provenance.source.strip():
        raise InvalidInputError("a consent record needs a source")
    session.add(
        ConsentEvent(
            contact_id=contact_id,
            list_id=list_id,
            action=action.value,
            source=provenance.source,
            ip=provenance.ip,
            user_agent=provenance.user_agent,
            consent_text_version=provenance.consent_text_version,
            occurred_at=now,
        )
    )


def transition(
    session: Session,
    contact_id: int,
    mailing_list: MailingList,
    new: S,
    provenance: Provenance,
    now: datetime,
) -> bool:
    """Move a contact's subscription to ``new`` and record why; False when nothing changed."""
    assert mailing_list.id is not None
    sub = session.get(Subscription, (contact_id, mailing_list.id))
    current = S(sub.status) if sub is not None else None
    if current == new:
        return False
    check_transition(current, new)

    def _ledger(action: ConsentAction) -> None:
        append_ledger(session, contact_id, mailing_list.id, action, provenance, now)

    if sub is None:
        sub = Subscription(
            contact_id=contact_id, list_id=mailing_list.id, status=new.value,
            created_at=now, updated_at=now,
        )
        session.add(sub)
    sub.status = new.value
    sub.updated_at = now
    if new is S.CONFIRMED:
        sub.confirmed_at = now
        sub.unsubscribed_at = None
    elif new is S.UNSUBSCRIBED:
        sub.unsubscribed_at = now
    if current in (None, S.UNSUBSCRIBED):
        _ledger(ConsentAction.GRANTED)
    if new is S.CONFIRMED:
        _ledger(ConsentAction.CONFIRMED)
    elif new is S.UNSUBSCRIBED:
        _ledger(ConsentAction.WITHDRAWN)
    session.flush()
    return True


def subscribe(
    session: Session,
    contact_id: int,
    mailing_list: MailingList,
    provenance: Provenance,
    now: datetime,
    *,
    confirmed: bool = False,
) -> S:
    """Subscribe a contact by fresh consent: confirmed on a single opt-in list or when
    ``confirmed`` attests it, else pending until the confirmation link is followed."""
    target = S.CONFIRMED if (confirmed or not mailing_list.double_opt_in) else S.PENDING
    assert mailing_list.id is not None
    sub = session.get(Subscription, (contact_id, mailing_list.id))
    if sub is not None and sub.status == S.CONFIRMED:
        return S.CONFIRMED
    transition(session, contact_id, mailing_list, target, provenance, now)
    return target


def unsubscribe(
    session: Session,
    key: bytes,
    contact: Contact,
    provenance: Provenance,
    now: datetime,
    *,
    mailing_list: MailingList | None = None,
) -> int:
    """Unsubscribe from one list, or from everything (which also suppresses the address).
    Returns how many subscriptions changed; idempotent."""
    assert contact.id is not None
    changed = 0
    query = (
        select(Subscription, MailingList)
        .join(MailingList, col(MailingList.id) == col(Subscription.list_id))
        .where(col(Subscription.contact_id) == contact.id)
    )
    if mailing_list is not None:
        query = query.where(col(Subscription.list_id) == mailing_list.id)
    for sub, lst in session.execute(query).all():
        if sub.status != S.UNSUBSCRIBED:
            transition(session, contact.id, lst, S.UNSUBSCRIBED, provenance, now)
            changed += 1
    if mailing_list is None:
        if suppress(session, key, contact.email, SuppressionReason.UNSUBSCRIBED_ALL, now):
            append_ledger(session, contact.id, None, ConsentAction.WITHDRAWN, provenance, now)
        session.flush()
    return changed


def confirm_token(key: bytes, contact_id: int, list_id: int) -> str:
    """The token of a double opt-in confirmation link: ids plus their HMAC."""
    body = f"{contact_id}.{list_id}"
    return f"{body}.{_sign(key, 'confirm:' + body)}"


def confirm(
    session: Session, key: bytes, token: str, provenance: Provenance, now: datetime
) -> bool:
    """Follow a confirmation link: pending → confirmed (idempotent; False if already confirmed).
    A forged token or an unsubscribed contact confirms nothing."""
    try:
        contact_s, list_s, sig = token.split(".")
        contact_id, list_id = int(contact_s), int(list_s)
    except ValueError as exc:
        raise InvalidInputError("malformed confirmation token") from exc
    if not hmac.compare_digest(sig, _sign(key, f"confirm:{contact_id}.{list_id}")):
        raise InvalidInputError("invalid confirmation token")
    sub = session.get(Subscription, (contact_id, list_id))
    if sub is None:
        raise NotFoundError("this subscription no longer exists")
    if sub.status == S.CONFIRMED:
        return False
    if sub.status == S.UNSUBSCRIBED:
        raise ConflictError("this address has unsubscribed; subscribe again to confirm")
    mailing_list = session.get(MailingList, list_id)
    assert mailing_list is not None
    return transition(session, contact_id, mailing_list, S.CONFIRMED, provenance, now)


def _sign(key: bytes, message: str) -> str:
    mac = hmac.new(key, message.encode(), hashlib.sha256).digest()[:18]
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


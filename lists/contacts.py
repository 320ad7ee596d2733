"""Finding a contact by address and gathering what is known about them (profile, subscriptions,
consent ledger, orders, events) as plain, JSON-ready documents for the CLI, the TUI and exports."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from lists.addresses import normalize_email
from lists.errors import NotFoundError
from lists.models import ConsentEvent, Contact, Event, MailingList, Order, Subscription
from lists.suppressions import is_suppressed

Document = dict[str, Any]


def iso(value: datetime | None) -> str | None:
    """ISO 8601 text of a UTC datetime (``None`` stays ``None``)."""
    return value.isoformat() if value is not None else None


def find_contact(session: Session, raw_email: str) -> Contact:
    """The contact with this address, or a NotFoundError naming it.

    The address is normalized first. The local part is case-sensitive in principle, so an exact
    match wins; a single case-insensitive match is accepted too, because people type addresses
    in whatever case they remember."""
    email = normalize_email(raw_email)
    found = find_contact_or_none(session, email)
    if found is None:
        raise NotFoundError(f"no contact with address {email!r}")
    return found


def find_contact_or_none(session: Session, email: str) -> Contact | None:
    """The contact with the normalized address ``email``, or None (see :func:`find_contact`)."""
    exact = session.execute(
        select(Contact).where(col(Contact.email) == email)
    ).scalar_one_or_none()
    if exact is not None:
        return exact
    folded = session.execute(
        select(Contact).where(func.lower(col(Contact.email)) == email.lower()).limit(2)
    ).scalars().all()
    return folded[0] if len(folded) == 1 else None


def profile_document(contact: Contact) -> Document:
    """Who the contact is: identity, locale, attributes, and when the record was made."""
    return {
        "id": contact.id,
        "email": contact.email,
        "customer_id": contact.customer_id,
        "first_name": contact.first_name,
        "last_name": contact.last_name,
        "locale": contact.locale,
        "timezone": contact.timezone,
        "attributes": dict(contact.attributes or {}),
        "created_at": iso(contact.created_at),
        "updated_at": iso(contact.updated_at),
    }


def aggregates_document(contact: Contact) -> Document:
    """The purchase and engagement aggregates kept on the contact (what segments read)."""
    return {
        "orders_count": contact.orders_count,
        "total_spent_cents": contact.total_spent_cents,
        "first_order_at": iso(contact.first_order_at),
        "last_order_at": iso(contact.last_order_at),
        "last_emailed_at": iso(contact.last_emailed_at),
        "last_opened_at": iso(contact.last_opened_at),
        "last_clicked_at": iso(contact.last_clicked_at),
    }


def subscription_documents(session: Session, contact_id: int) -> list[Document]:
    """Every subscription of the contact with its list's name, by list name."""
    rows = session.execute(
        select(Subscription, col(MailingList.name))
        .join(MailingList, col(MailingList.id) == col(Subscription.list_id))
        .where(col(Subscription.contact_id) == contact_id)
        .order_by(col(MailingList.name))
    ).all()
    return [
        {
            "list": name,
            "status": sub.status,
            "created_at": iso(sub.created_at),
            "updated_at": iso(sub.updated_at),
            "confirmed_at": iso(sub.confirmed_at),
            "unsubscribed_at": iso(sub.unsubscribed_at),
        }
        for sub, name in rows
    ]


def ledger_documents(session: Session, contact_id: int) -> list[Document]:
    """The contact's consent ledger, oldest first; ``list`` is None for "all lists"."""
    rows = session.execute(
        select(ConsentEvent, col(MailingList.name))
        .outerjoin(MailingList, col(MailingList.id) == col(ConsentEvent.list_id))
        .where(col(ConsentEvent.contact_id) == contact_id)
        .order_by(col(ConsentEvent.occurred_at), col(ConsentEvent.id))
    ).all()
    return [
        {
            "list": name,
            "action": row.action,
            "source": row.source,
            "ip": row.ip,
            "user_agent": row.user_agent,
            "consent_text_version": row.consent_text_version,
            "occurred_at": iso(row.occurred_at),
        }
        for row, name in rows
    ]


def order_documents(
    session: Session, contact_id: int, *, limit: int | None = None
) -> list[Document]:
    """The contact's orders, newest first (all of them unless ``limit``)."""
    query = (
        select(Order)
        .where(col(Order.contact_id) == contact_id)
        .order_by(col(Order.ordered_at).desc(), col(Order.id).desc())
    )
    if limit is not None:
        query = query.limit(limit)
    return [
        {
            "order_id": o.order_id,
            "source": o.source,
            "total_cents": o.total_cents,
            "currency": o.currency,
            "ordered_at": iso(o.ordered_at),
            "discount_code": o.discount_code,
            "line_items": o.line_items,
        }
        for o in session.execute(query).scalars()
    ]


def event_documents(
    session: Session, contact_id: int, *, limit: int | None = None
) -> list[Document]:
    """The contact's engagement events (sent, open, click, …), newest first."""
    query = (
        select(Event)
        .where(col(Event.contact_id) == contact_id)
        .order_by(col(Event.occurred_at).desc(), col(Event.id).desc())
    )
    if limit is not None:
        query = query.limit(limit)
    return [
        {
            "kind": e.kind,
            "classification": e.classification,
            "campaign_id": e.campaign_id,
            "url": e.url,
            "ip": e.ip,
            "user_agent": e.user_agent,
            "occurred_at": iso(e.occurred_at),
        }
        for e in session.execute(query).scalars()
    ]


@dataclass(frozen=True, slots=True)
class ContactDetail:
    """Everything the detail view of one contact shows."""

    profile: Document
    flags: Document
    aggregates: Document
    subscriptions: list[Document]
    consent_ledger: list[Document]
    orders: list[Document]
    events: list[Document]

    def to_document(self) -> Document:
        return {
            "profile": self.profile,
            "flags": self.flags,
            "aggregates": self.aggregates,
            "subscriptions": self.subscriptions,
            "consent_ledger": self.consent_ledger,
            "orders": self.orders,
            "events": self.events,
        }


def contact_detail(
    session: Session,
    key: bytes,
    contact: Contact,
    *,
    orders_limit: int = 10,
    events_limit: int = 20,
) -> ContactDetail:
    """The detail of ``contact``: the full ledger, the last orders and the recent events."""
    assert contact.id is not None
    reason = is_suppressed(session, key, contact.email)
    return ContactDetail(
        profile=profile_document(contact),
        flags={
            "is_role": contact.is_role,
            "is_disposable": contact.is_disposable,
            "suppressed": reason.value if reason is not None else None,
        },
        aggregates=aggregates_document(contact),
        subscriptions=subscription_documents(session, contact.id),
        consent_ledger=ledger_documents(session, contact.id),
        orders=order_documents(session, contact.id, limit=orders_limit),
        events=event_documents(session, contact.id, limit=events_limit),
    )

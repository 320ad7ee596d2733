"""GDPR rights of a contact (A9, L6, L7): export everything held about them as one JSON
document (Art. 15/20), and erase their personal data (Art. 17) while keeping the suppression
HMAC and the anonymous counts the shop's reports are built on.

Other domains that store per-contact data (campaign messages, for instance) take part through
``sections`` (export) and ``steps`` (erasure), which the shell wires in; ``lists`` stays unaware
of them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, cast
from urllib.parse import quote, quote_plus

from sqlalchemy import CursorResult, Result, delete, select, update
from sqlalchemy.orm import Session
from sqlmodel import col

from lists.contacts import (
    Document,
    aggregates_document,
    event_documents,
    iso,
    ledger_documents,
    order_documents,
    profile_document,
    subscription_documents,
)
from lists.models import ConsentEvent, Contact, Event, Order, Subscription, SuppressionReason
from lists.suppressions import is_suppressed, suppress

EXPORT_FORMAT = "patron.contact-export"
EXPORT_VERSION = 1
ERASED_MARK = "[erased]"


class ExportSection(Protocol):
    """Adds one named part to a contact's export (called before the document is returned)."""

    def __call__(self, session: Session, contact: Contact) -> Any: ...


class ErasureStep(Protocol):
    """Removes one domain's personal data of a contact; called before the contact row goes."""

    def __call__(self, session: Session, contact: Contact) -> None: ...


def export_contact(
    session: Session,
    key: bytes,
    contact: Contact,
    now: datetime,
    *,
    sections: Mapping[str, ExportSection] | None = None,
) -> Document:
    """Everything held about ``contact`` as one JSON-ready document: profile, flags, aggregates,
    subscriptions, the full consent ledger, every order and every event (datetimes ISO 8601 UTC)."""
    assert contact.id is not None
    reason = is_suppressed(session, key, contact.email)
    doc: Document = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exported_at": iso(now),
        "profile": profile_document(contact),
        "flags": {
            "is_role": contact.is_role,
            "is_disposable": contact.is_disposable,
            "suppressed": reason.value if reason is not None else None,
        },
        "aggregates": aggregates_document(contact),
        "subscriptions": subscription_documents(session, contact.id),
        "consent_ledger": ledger_documents(session, contact.id),
        "orders": order_documents(session, contact.id),
        "events": event_documents(session, contact.id),
    }
    for name, section in (sections or {}).items():
        doc[name] = section(session, contact)
    return doc


@dataclass(frozen=True, slots=True)
class ErasureResult:
    """What an erasure did, in counts (nothing personal)."""

    subscriptions_deleted: int
    ledger_rows_anonymized: int
    orders_detached: int
    events_detached: int
    newly_suppressed: bool
    suppression_reason: SuppressionReason


def erase_contact(
    session: Session,
    key: bytes,
    contact: Contact,
    now: datetime,
    *,
    steps: Sequence[ErasureStep] = (),
) -> ErasureResult:
    """Erase ``contact``'s personal data.

    The contact row and its subscriptions are deleted. Consent ledger rows stay, detached and
    without IP and user agent, as anonymous proof counts; orders and events stay detached (no
    contact, no IP, no user agent) so store-level figures do not change. The address is
    suppressed with reason ``erased`` unless it already was (the first reason is kept), so a
    later import or send still skips it."""
    assert contact.id is not None
    contact_id, email = contact.id, contact.email
    session.flush()
    for step in steps:
        step(session, contact)

    _scrub_text_column(session, ConsentEvent, "source", contact_id, email)
    _scrub_text_column(session, Event, "url", contact_id, email)
    ledger = _rowcount(session.execute(
        update(ConsentEvent)
        .where(col(ConsentEvent.contact_id) == contact_id)
        .values(contact_id=None, ip=None, user_agent=None)
    ))
    orders = _rowcount(session.execute(
        update(Order).where(col(Order.contact_id) == contact_id).values(contact_id=None)
    ))
    events = _rowcount(session.execute(
        update(Event)
        .where(col(Event.contact_id) == contact_id)
        .values(contact_id=None, ip=None, user_agent=None)
    ))
    subscriptions = _rowcount(session.execute(
        delete(Subscription).where(col(Subscription.contact_id) == contact_id)
    ))
    session.delete(contact)
    session.flush()

    newly = suppress(session, key, email, SuppressionReason.ERASED, now)
    reason = is_suppressed(session, key, email)
    assert reason is not None
    return ErasureResult(
        subscriptions_deleted=subscriptions,
        ledger_rows_anonymized=ledger,
        orders_detached=orders,
        events_detached=events,
        newly_suppressed=newly,
        suppression_reason=reason,
    )


def _rowcount(result: Result[Any]) -> int:
    # DML through a Session returns a CursorResult; its static type is the generic Result.
    return cast(CursorResult[Any], result).rowcount


def _scrub_text_column(
    session: Session, model: type[ConsentEvent] | type[Event], column: str, contact_id: int,
    email: str,
) -> None:
    # A consent source (a form URL) or a clicked URL may carry the address itself, for
    # instance in a query string; replace it, keep the rest (which form, which link).
    table_col = getattr(model, column)
    rows = session.execute(
        select(col(model.id), table_col).where(
            col(model.contact_id) == contact_id, table_col.is_not(None)
        )
    ).all()
    for row_id, text in rows:
        cleaned = scrub_address(text, email)
        if cleaned != text:
            session.execute(
                update(model).where(col(model.id) == row_id).values({column: cleaned})
            )


def scrub_address(text: str, email: str) -> str:
    """``text`` with every spelling of ``email`` (any case, URL-encoded) replaced."""
    out = text
    for form in {email, quote(email, safe=""), quote_plus(email), quote(email, safe="@")}:
        out = _replace_folded(out, form, ERASED_MARK)
    return out


def _replace_folded(text: str, needle: str, replacement: str) -> str:
    lowered, target = text.lower(), needle.lower()
    if len(lowered) != len(text):  # rare letters whose lower case is longer: exact match only
        return text.replace(needle, replacement)
    if target not in lowered:
        return text
    parts: list[str] = []
    start = 0
    while (hit := lowered.find(target, start)) >= 0:
        parts.append(text[start:hit])
        parts.append(replacement)
        start = hit + len(target)
    parts.append(text[start:])
    return "".join(parts)

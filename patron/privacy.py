"""Wires each domain's per-contact data into the GDPR export and erasure of `lists.gdpr`: the
audience is the contact's own; the send log (messages, discount codes) belongs to campaigns.
The CLI and the TUI both take their sections and steps from here."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from sqlmodel import col

from campaigns.models import DiscountCode, Message
from lists.contacts import iso
from lists.gdpr import ErasureStep, ExportSection, scrub_address
from lists.models import Contact


def export_sections() -> dict[str, ExportSection]:
    """The parts of a contact's export that other domains hold."""
    return {"messages": _messages, "discount_codes": _discount_codes}


def erasure_steps() -> list[ErasureStep]:
    """What other domains must do before a contact is erased. (Their rows' contact_id is set
    to NULL by the database when the contact row goes.)"""
    return [_scrub_message_replies]


def _messages(session: Session, contact: Contact) -> list[dict[str, Any]]:
    rows = session.execute(
        select(Message).where(col(Message.contact_id) == contact.id).order_by(col(Message.id))
    ).scalars()
    return [
        {
            "campaign_id": m.campaign_id,
            "state": m.state,
            "skip_reason": m.skip_reason,
            "variant": m.variant,
            "discount_code": m.discount_code,
            "sent_at": iso(m.sent_at),
            "failure": m.failure,
            "last_reply": m.last_reply,
            "message_id": m.message_id,
        }
        for m in rows
    ]


def _discount_codes(session: Session, contact: Contact) -> list[dict[str, Any]]:
    rows = session.execute(
        select(DiscountCode)
        .where(col(DiscountCode.contact_id) == contact.id)
        .order_by(col(DiscountCode.id))
    ).scalars()
    return [
        {"code": d.code, "campaign_id": d.campaign_id, "assigned_at": iso(d.assigned_at),
         "expires_at": iso(d.expires_at)}
        for d in rows
    ]


def _scrub_message_replies(session: Session, contact: Contact) -> None:
    # Receiving servers often quote the recipient in their reply ("550 5.1.1 <ana@…>: no such
    # user"); the reply stays for the bounce statistics, the address does not.
    rows = session.execute(
        select(col(Message.id), col(Message.last_reply)).where(
            col(Message.contact_id) == contact.id, col(Message.last_reply).is_not(None)
        )
    ).all()
    for message_id, reply in rows:
        cleaned = scrub_address(str(reply), contact.email)
        if cleaned != reply:
            session.execute(
                update(Message).where(col(Message.id) == message_id).values(last_reply=cleaned)
            )

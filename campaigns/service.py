"""Creating, finding and listing campaigns (C1)."""

from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from campaigns.discounts import validate_prefix
from campaigns.models import Campaign, CampaignKind, CampaignList, Message, MessageState
from lists.errors import InvalidInputError, NotFoundError
from lists.mailing_lists import get_list
from lists.models import MailingList, Segment


@dataclass(frozen=True, slots=True)
class CampaignSpec:
    """What a marketer gives to make a campaign."""

    name: str
    kind: CampaignKind
    template: str
    template_source: str
    subject: str
    lists: list[str]
    segment: str | None = None
    exclude_segment: str | None = None
    preheader: str = ""
    content: dict[str, Any] = field(default_factory=dict)
    holdout_percent: float = 0.0
    ab_subjects: list[str] = field(default_factory=list)
    ab_test_percent: float = 0.0
    discount_prefix: str | None = None
    discount_expiry_days: int | None = None
    seed: int | None = None


def slugify(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:80] or "campaign"


def create_campaign(session: Session, spec: CampaignSpec, now: datetime) -> Campaign:
    """Validate ``spec`` and store a draft campaign."""
    if spec.kind is CampaignKind.CONFIRMATION:
        # Pending contacts may receive a confirmation campaign: only Patron makes one (one per
        # double opt-in list, from the confirmation template), so it can carry nothing else.
        raise InvalidInputError(
            "confirmation campaigns are made by Patron for each double opt-in list"
        )
    name = spec.name.strip()
    if not name:
        raise InvalidInputError("a campaign needs a name")
    if not spec.subject.strip():
        raise InvalidInputError("a campaign needs a subject")
    if any(ch in spec.subject for ch in "\r\n\0"):
        raise InvalidInputError("the subject must be one line")
    if not spec.lists:
        raise InvalidInputError("a campaign needs at least one list (--list)")
    if not 0 <= spec.holdout_percent <= 50:
        raise InvalidInputError("the holdout is a percentage from 0 to 50")
    if spec.ab_subjects and len(spec.ab_subjects) < 2:
        raise InvalidInputError("an A/B test needs at least two subjects")
    if not 0 <= spec.ab_test_percent <= 100:
        raise InvalidInputError("the A/B test share is a percentage from 0 to 100")
    prefix = validate_prefix(spec.discount_prefix) if spec.discount_prefix else None
    if spec.discount_expiry_days is not None and spec.discount_expiry_days < 1:
        raise InvalidInputError("discount codes must be valid for at least one day")
    lists = [get_list(session, name) for name in dict.fromkeys(spec.lists)]
    segment_id = _segment_id(session, spec.segment)
    exclude_id = _segment_id(session, spec.exclude_segment)
    campaign = Campaign(
        name=name,
        slug=unique_slug(session, slugify(name)),
        kind=spec.kind.value,
        template=spec.template,
        template_source=spec.template_source,
        subject=spec.subject.strip(),
        preheader=spec.preheader,
        content=spec.content,
        segment_id=segment_id,
        exclude_segment_id=exclude_id,
        holdout_percent=spec.holdout_percent,
        ab_subjects=list(spec.ab_subjects),
        ab_test_percent=spec.ab_test_percent if spec.ab_subjects else 0.0,
        seed=spec.seed if spec.seed is not None else secrets.randbits(31),
        discount_prefix=prefix,
        discount_expiry_days=spec.discount_expiry_days,
        created_at=now,
        updated_at=now,
    )
    session.add(campaign)
    session.flush()
    assert campaign.id is not None
    for lst in lists:
        assert lst.id is not None
        session.add(CampaignList(campaign_id=campaign.id, list_id=lst.id))
    session.flush()
    return campaign


def _segment_id(session: Session, name: str | None) -> int | None:
    if name is None:
        return None
    row = session.execute(
        select(Segment).where(col(Segment.name) == name)
    ).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"no segment named {name!r} (see `patron segments ls`)")
    return row.id


def unique_slug(session: Session, base: str) -> str:
    """``base``, or ``base-2``, ``base-3`` … whichever no campaign has yet."""
    taken = set(
        session.execute(
            select(col(Campaign.slug)).where(col(Campaign.slug).like(f"{base}%"))
        ).scalars()
    )
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def get_campaign(session: Session, campaign_id: int) -> Campaign:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise NotFoundError(f"no campaign {campaign_id} (see `patron campaigns ls`)")
    return campaign


def campaign_list_names(session: Session, campaign_id: int) -> list[str]:
    return list(
        session.execute(
            select(col(MailingList.name))
            .join(CampaignList, col(CampaignList.list_id) == col(MailingList.id))
            .where(col(CampaignList.campaign_id) == campaign_id)
            .order_by(col(MailingList.name))
        ).scalars()
    )


@dataclass(frozen=True, slots=True)
class CampaignRow:
    id: int
    name: str
    kind: str
    status: str
    subject: str
    scheduled_at: datetime | None
    created_at: datetime
    recipients: int
    sent: int


def list_campaigns(session: Session) -> list[CampaignRow]:
    """Every campaign, newest first, with its send-log counts (recipients: rows not skipped)."""
    counts = {
        cid: (total, sent)
        for cid, total, sent in session.execute(
            select(
                col(Message.campaign_id),
                func.count().filter(col(Message.state) != MessageState.SKIPPED.value),
                func.count().filter(col(Message.state) == MessageState.SENT.value),
            ).group_by(col(Message.campaign_id))
        )
    }
    rows = []
    for c in session.execute(select(Campaign).order_by(col(Campaign.id).desc())).scalars():
        assert c.id is not None
        total, sent = counts.get(c.id, (0, 0))
        rows.append(
            CampaignRow(
                id=c.id, name=c.name, kind=c.kind, status=c.status, subject=c.subject,
                scheduled_at=c.scheduled_at, created_at=c.created_at, recipients=total, sent=sent,
            )
        )
    return rows

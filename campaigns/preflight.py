"""Checks a campaign must pass before it may be scheduled or started (C3): its template renders
for a sample of the real recipients it would go to."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from campaigns.models import Campaign, CampaignList
from campaigns.pipeline import CampaignPipeline, check_campaign_renders
from lists.models import Contact, Segment, Subscription, SubscriptionStatus
from lists.segments import segment_contact_ids_query

SAMPLE_SIZE = 20


def sample_recipients(
    session: Session, campaign: Campaign, now: datetime, size: int = SAMPLE_SIZE
) -> list[Contact]:
    """Up to ``size`` confirmed subscribers of the campaign's lists (within its segment),
    the first ones by id and a random draw of the rest, so odd data anywhere can show up."""
    assert campaign.id is not None
    subscribed = (
        select(col(Subscription.contact_id))
        .join(CampaignList, col(CampaignList.list_id) == col(Subscription.list_id))
        .where(
            col(CampaignList.campaign_id) == campaign.id,
            col(Subscription.status) == SubscriptionStatus.CONFIRMED.value,
        )
    )
    query = select(Contact).where(col(Contact.id).in_(subscribed))
    if campaign.segment_id is not None:
        segment = session.get(Segment, campaign.segment_id)
        if segment is not None:
            query = query.where(col(Contact.id).in_(segment_contact_ids_query(segment.rule, now)))
    first = list(session.execute(query.order_by(col(Contact.id)).limit(size // 2)).scalars())
    seen = {c.id for c in first}
    drawn = session.execute(query.order_by(func.random()).limit(size)).scalars()
    rest = [c for c in drawn if c.id not in seen][: size - len(first)]
    return first + rest


def check_campaign(pipeline: CampaignPipeline, session: Session, now: datetime) -> int:
    """Render the campaign for a sample of its real recipients; raises TemplateError naming the
    recipient, the template line and the variable. Returns how many were checked."""
    sample = sample_recipients(session, pipeline.campaign, now)
    check_campaign_renders(pipeline, sample, now)
    return len(sample)

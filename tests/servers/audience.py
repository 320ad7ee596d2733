"""Test audiences: contacts with given consent states on a list, a campaign to that list, and
the audience freezer the shell wires."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from campaigns.audience import freeze_audience
from campaigns.models import Campaign, CampaignList
from campaigns.rendering import load_shipped_template
from lists.models import Contact, MailingList, Subscription, SubscriptionStatus


@dataclass
class Audience:
    campaign_id: int
    list_id: int
    emails: dict[int, str] = field(default_factory=dict)  # contact id → email

    @property
    def ids(self) -> dict[str, int]:
        return {e: i for i, e in self.emails.items()}


def add_contacts(
    session: Session,
    list_id: int,
    emails: Iterable[str],
    now: datetime,
    status: SubscriptionStatus = SubscriptionStatus.CONFIRMED,
    timezone: str | None = None,
) -> dict[int, str]:
    made: dict[int, str] = {}
    for email in emails:
        contact = Contact(email=email, timezone=timezone, created_at=now, updated_at=now)
        session.add(contact)
        session.flush()
        assert contact.id is not None
        session.add(
            Subscription(
                contact_id=contact.id, list_id=list_id, status=status.value,
                created_at=now, updated_at=now,
                confirmed_at=now if status is SubscriptionStatus.CONFIRMED else None,
            )
        )
        made[contact.id] = email
    session.flush()
    return made


def make_campaign(
    session: Session,
    now: datetime,
    *,
    name: str = "spring",
    kind: str = "newsletter",
    list_name: str | None = None,
) -> Audience:
    lst = MailingList(name=list_name or f"list-{name}", double_opt_in=False, created_at=now)
    session.add(lst)
    session.flush()
    # A real shipped template, so the preflight render check of `campaigns send` passes.
    template = "discount" if kind == "discount" else "welcome"
    campaign = Campaign(
        name=name, slug=name, kind=kind, template=template,
        template_source=load_shipped_template(template).text, subject="Hi",
        content={"offer": "10 % off"} if kind == "discount" else {},
        discount_prefix="TEST-" if kind == "discount" else None, created_at=now, updated_at=now,
    )
    session.add(campaign)
    session.flush()
    assert campaign.id is not None and lst.id is not None
    session.add(CampaignList(campaign_id=campaign.id, list_id=lst.id))
    session.flush()
    return Audience(campaign.id, lst.id)


def freeze(key: bytes) -> Callable[[Session, Campaign, datetime], object]:
    """campaigns.audience.freeze_audience with the key bound, as the shell wires it."""

    def run(session: Session, campaign: Campaign, now: datetime) -> object:
        return freeze_audience(session, campaign, key, now)

    return run

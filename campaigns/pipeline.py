"""The per-recipient message pipeline of one campaign: compile once (template, link table, MIME
skeleton, DKIM key), then for each recipient render → assemble → sign.

This is what preview, test sends and the delivery engine call; it needs only plain values
(:class:`SenderIdentity`) and stored rows, never settings or the network."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session
from sqlmodel import col

from campaigns.audience import AWAITING_WINNER
from campaigns.message.assembly import AssembledMessage, MessageSkeleton, RecipientParts
from campaigns.message.dkim import DkimSigner
from campaigns.message.headers import Mailbox, parse_mailbox
from campaigns.models import Campaign, CampaignKind, CampaignLink, CampaignList, DiscountCode
from campaigns.rendering import (
    CampaignInfo,
    CompiledCampaign,
    Discount,
    MessageKind,
    Recipient,
    Shop,
    TemplateError,
    TemplateSource,
    check_renders,
    compile_campaign,
    load_shipped_template,
    render_message,
)
from campaigns.rendering.templates import SHIPPED
from campaigns.service import campaign_list_names, slugify
from lists.consent import confirm_token
from lists.errors import InvalidInputError
from lists.models import Contact


@dataclass(frozen=True, slots=True)
class SenderIdentity:
    """Who sends, as the shell reads it from settings."""

    from_address: str  # "Shop <news@shop.example>"
    postal_address: str
    tracking_base_url: str
    return_path_domain: str | None = None
    shop_url: str = ""
    dkim: DkimSigner | None = None

    @property
    def mailbox(self) -> Mailbox:
        return parse_mailbox(self.from_address)

    @property
    def bounce_domain(self) -> str:
        return self.return_path_domain or self.mailbox.email.rpartition("@")[2]


def template_source(campaign: Campaign) -> TemplateSource:
    """The campaign's template as stored with it: a shipped one keeps its content fields."""
    if campaign.template in SHIPPED:
        shipped = load_shipped_template(campaign.template)
        return TemplateSource(
            shipped.name, campaign.template_source, shipped.directory, shipped.info
        )
    path = Path(campaign.template)
    return TemplateSource(path.stem, campaign.template_source, path.parent)


class CampaignPipeline:
    """Compiled once per campaign (and per process: the DKIM key cannot be pickled)."""

    def __init__(
        self, session: Session, campaign: Campaign, sender: SenderIdentity, key: bytes
    ) -> None:
        assert campaign.id is not None
        self.campaign = campaign
        self.key = key
        mailbox = sender.mailbox
        self._shop = Shop(
            name=mailbox.name or mailbox.email.rpartition("@")[2],
            postal_address=sender.postal_address,
            url=sender.shop_url,
        )
        self._tracking_base_url = sender.tracking_base_url
        # One compiled template per subject: the campaign's, and each A/B variant's.
        self._compiled: dict[str, CompiledCampaign] = {}
        self.compiled = self.compiled_for(campaign.subject)
        # A double opt-in confirmation links to /confirm/{token} of its one list; it is
        # transactional: no tracking, no unsubscribe header, nothing else to say.
        self._confirm_list_id: int | None = None
        if campaign.kind == CampaignKind.CONFIRMATION.value:
            list_ids = list(
                session.execute(
                    select(col(CampaignList.list_id))
                    .where(col(CampaignList.campaign_id) == campaign.id)
                ).scalars()
            )
            if len(list_ids) != 1:
                raise InvalidInputError(
                    f"confirmation campaign {campaign.id} must go to exactly one list"
                )
            if self.compiled.kind is not MessageKind.TRANSACTIONAL:
                raise TemplateError(
                    self.compiled.template_name,
                    "a confirmation campaign needs a transactional template (confirmation)",
                )
            self._confirm_list_id = list_ids[0]
        lists = campaign_list_names(session, campaign.id) or ["patron"]
        domain = mailbox.email.rpartition("@")[2]
        list_slug = slugify(lists[0])
        self.skeleton = MessageSkeleton(
            sender=mailbox,
            campaign_id=campaign.id,
            list_name=lists[0],
            list_id=f"{list_slug}.{domain}",
            feedback_id=f"{campaign.id}:{campaign.kind}:{list_slug}:patron",
            return_path_domain=sender.bounce_domain,
            verp_key=key,
            signer=sender.dkim,
            transactional=self._confirm_list_id is not None,
        )
        self._subjects = list(campaign.ab_subjects)
        self._mailto_domain = sender.bounce_domain

    def store_links(self, session: Session) -> None:
        """Record the campaign's link table, which the click endpoint redirects by."""
        campaign_id = self.campaign.id
        session.execute(delete(CampaignLink).where(col(CampaignLink.campaign_id) == campaign_id))
        rows = [
            {"campaign_id": campaign_id, "idx": i, "name": link.name, "url": link.url}
            for i, link in enumerate(self.compiled.links)
        ]
        if rows:
            session.execute(insert(CampaignLink), rows)

    def subject_for(self, variant: int) -> str:
        if self._subjects and variant != AWAITING_WINNER and 0 <= variant < len(self._subjects):
            return self._subjects[variant]
        return self.campaign.subject

    def build(
        self,
        contact: Contact,
        *,
        now: datetime,
        variant: int = 0,
        discount: Discount | None = None,
        message_id: str | None = None,
        to_address: str | None = None,
    ) -> AssembledMessage:
        """The signed bytes of ``contact``'s message (to ``to_address`` for a test send)."""
        confirm_url = None
        if self._confirm_list_id is not None:
            assert contact.id is not None
            confirm_url, discount = self.confirm_url(contact.id), None
        recipient = Recipient.from_contact(contact, discount=discount, confirm_url=confirm_url)
        rendered = render_message(self.compiled_for(self.subject_for(variant)), recipient, self.key)
        name = " ".join(p for p in (contact.first_name, contact.last_name) if p)
        return self.skeleton.assemble(
            RecipientParts(
                contact_id=recipient.contact_id,
                to=Mailbox(email=to_address or contact.email, name=name),
                subject=rendered.subject,
                html=rendered.html,
                html_pieces=rendered.html_pieces,
                text=rendered.text,
                unsubscribe_url=rendered.unsubscribe_url,
                unsubscribe_mailto=self._mailto(rendered.unsubscribe_url),
                date=now,
                message_id=message_id,
            )
        )

    def confirm_url(self, contact_id: int) -> str | None:
        """The double opt-in link of ``contact_id`` (confirmation campaigns only)."""
        if self._confirm_list_id is None:
            return None
        token = confirm_token(self.key, contact_id, self._confirm_list_id)
        return f"{self._tracking_base_url.rstrip('/')}/confirm/{token}"

    def _mailto(self, unsubscribe_url: str | None) -> str | None:
        if unsubscribe_url is None:
            return None
        token = unsubscribe_url.rstrip("/").rpartition("/")[2]
        return f"mailto:unsubscribe@{self._mailto_domain}?subject=unsubscribe%20{token}"

    def compiled_for(self, subject: str) -> CompiledCampaign:
        """The template compiled with ``subject`` (the campaign's or an A/B variant's)."""
        if subject not in self._compiled:
            campaign = self.campaign
            assert campaign.id is not None
            self._compiled[subject] = compile_campaign(
                template_source(campaign),
                campaign=CampaignInfo(
                    id=campaign.id, name=campaign.name, subject=subject, slug=campaign.slug
                ),
                shop=self._shop,
                tracking_base_url=self._tracking_base_url,
                content={k: str(v) for k, v in campaign.content.items()},
            )
        return self._compiled[subject]


def discount_for(session: Session, campaign: Campaign, code: str | None) -> Discount | None:
    if code is None:
        return None
    row = session.execute(select(DiscountCode).where(col(DiscountCode.code) == code)).scalar_one()
    return Discount(code=row.code, expires_at=row.expires_at)


def sample_discount(campaign: Campaign, now: datetime) -> Discount | None:
    """A stand-in code for previews and checks of a discount campaign before codes exist."""
    if campaign.kind != CampaignKind.DISCOUNT.value:
        return None
    days = campaign.discount_expiry_days or 14
    return Discount(
        code=f"{campaign.discount_prefix or 'CODE-'}PREVIEW", expires_at=now + timedelta(days=days)
    )


def check_campaign_renders(
    pipeline: CampaignPipeline, contacts: Sequence[Contact], now: datetime
) -> None:
    """Render for each sample contact; raises TemplateError naming the recipient, the template
    line and the variable. A campaign cannot be scheduled until this passes."""
    discount = sample_discount(pipeline.campaign, now)
    recipients = [
        Recipient.from_contact(
            c, discount=discount, confirm_url=pipeline.confirm_url(c.id or 0)
        )
        for c in contacts
    ]
    for subject in [pipeline.campaign.subject, *pipeline.campaign.ab_subjects]:
        check_renders(pipeline.compiled_for(subject), recipients, key=pipeline.key)


__all__ = [
    "CampaignPipeline",
    "SenderIdentity",
    "TemplateError",
    "check_campaign_renders",
    "discount_for",
    "sample_discount",
    "template_source",
]

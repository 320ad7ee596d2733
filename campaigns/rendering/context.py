"""What a template is rendered with: the typed inputs (shop, campaign, recipient, discount) and
the read-only views of them that templates see."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from markupsafe import Markup

from campaigns.rendering.links import slugify
from lists.models import Contact

# Names a template may use that are the same for every recipient of a campaign: expressions
# built only from them are evaluated once, when the campaign is compiled.
CAMPAIGN_NAMES = frozenset({"shop", "campaign", "content"})
# Per-recipient URLs that are never click-tracked.
SYSTEM_URL_NAMES = frozenset({"unsubscribe_url", "preferences_url", "confirm_url"})


class MessageKind(StrEnum):
    """Marketing mail is tracked and must carry an unsubscribe link; transactional mail (the
    opt-in confirmation) carries no tracking and no advertising."""

    MARKETING = "marketing"
    TRANSACTIONAL = "transactional"


@dataclass(frozen=True)
class Shop:
    """The sender as recipients see it."""

    name: str
    postal_address: str
    url: str
    logo_url: str = ""


@dataclass(frozen=True)
class CampaignInfo:
    """The campaign being rendered; ``subject`` is a Jinja template."""

    id: int
    name: str
    subject: str
    slug: str = ""

    @property
    def utm_campaign(self) -> str:
        """The ``utm_campaign`` value: the given slug, else a slug of the name."""
        return slugify(self.slug or self.name) or f"campaign-{self.id}"


@dataclass(frozen=True)
class Discount:
    """A recipient's unique discount code."""

    code: str
    expires_at: datetime | None = None


@dataclass(frozen=True)
class Recipient:
    """One recipient: the contact's data a template may use."""

    contact_id: int
    email: str
    first_name: str | None = None
    last_name: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    discount: Discount | None = None
    confirm_url: str | None = None

    @classmethod
    def from_contact(
        cls, contact: Contact, *, discount: Discount | None = None, confirm_url: str | None = None
    ) -> Recipient:
        """The recipient view of a stored contact."""
        if contact.id is None:
            raise ValueError("contact has no id yet (flush it first)")
        return cls(
            contact_id=contact.id,
            email=contact.email,
            first_name=contact.first_name,
            last_name=contact.last_name,
            attributes=contact.attributes or {},
            discount=discount,
            confirm_url=confirm_url,
        )

    def describe(self) -> str:
        """How error messages name this recipient."""
        return f"recipient #{self.contact_id} <{self.email}>"


class Namespace:
    """A read-only mapping whose keys templates read as attributes (``attr.city``), labelled so
    that a missing key reads ``'attr' has no attribute 'city'``. It has no public methods, so no
    key is hidden behind one (``attr.items`` is the attribute named items)."""

    __slots__ = ("_data", "_template_label")

    def __init__(self, label: str, data: Mapping[str, Any]) -> None:
        self._template_label = label
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __bool__(self) -> bool:
        return bool(self._data)

    def __repr__(self) -> str:
        return f"<{self._template_label}>"


class ContactView:
    """``contact`` in templates."""

    __slots__ = ("attributes", "email", "first_name", "last_name")
    _template_label = "contact"

    def __init__(self, recipient: Recipient) -> None:
        self.first_name = recipient.first_name or ""
        self.last_name = recipient.last_name or ""
        self.email = recipient.email
        self.attributes = Namespace("attr", recipient.attributes)

    @property
    def full_name(self) -> str:
        """First and last name, whichever are known."""
        return " ".join(part for part in (self.first_name.strip(), self.last_name.strip()) if part)

    def first_name_or(self, fallback: str) -> str:
        """The first name, or ``fallback`` when it is empty (``Hi {{ ... }}``)."""
        return self.first_name.strip() or fallback

    def __repr__(self) -> str:
        return "<contact>"


class DiscountView:
    """``discount`` in templates (present only for recipients who have a code)."""

    __slots__ = ("code", "expires_at")
    _template_label = "discount"

    def __init__(self, discount: Discount) -> None:
        self.code = discount.code
        self.expires_at = discount.expires_at


def content_namespace(content: Mapping[str, str]) -> Namespace:
    """``content`` in templates; values of keys ending in ``_html`` are trusted HTML."""
    return Namespace(
        "content",
        # The marketer's own HTML for their own campaign: trusted by design, documented.
        {k: Markup(v) if k.endswith("_html") else v for k, v in content.items()},  # noqa: S704
    )


def shop_namespace(shop: Shop) -> Namespace:
    """``shop`` in templates."""
    return Namespace(
        "shop",
        {
            "name": shop.name,
            "postal_address": shop.postal_address,
            "url": shop.url,
            "logo_url": shop.logo_url,
        },
    )


def campaign_namespace(campaign: CampaignInfo, subject: str | None) -> Namespace:
    """``campaign`` in templates; ``subject`` is the rendered subject (absent while the subject
    itself is rendered, and at compile time)."""
    data: dict[str, Any] = {
        "id": campaign.id,
        "name": campaign.name,
        "slug": campaign.utm_campaign,
    }
    if subject is not None:
        data["subject"] = subject
    return Namespace("campaign", data)

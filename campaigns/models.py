"""Tables of campaigns: the campaign itself, its lists, its tracked links, its discount-code pool
and the send log (one row per campaign and contact)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Index, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

JSONType = JSON().with_variant(JSONB(), "postgresql")


class CampaignKind(StrEnum):
    NEWSLETTER = "newsletter"
    DISCOUNT = "discount"
    WELCOME = "welcome"
    WINBACK = "winback"
    NPS = "nps"
    # The double opt-in confirmation of one list: made by Patron, transactional, never finishes.
    CONFIRMATION = "confirmation"


class CampaignStatus(StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    PAUSED = "paused"
    SENT = "sent"
    CANCELLED = "cancelled"


class MessageState(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    FAILED = "failed"
    UNKNOWN = "unknown"
    SKIPPED = "skipped"


class SkipReason(StrEnum):
    NOT_CONFIRMED = "not_confirmed"
    UNSUBSCRIBED = "unsubscribed"
    SUPPRESSED = "suppressed"
    ROLE_ADDRESS = "role_address"
    DISPOSABLE_DOMAIN = "disposable_domain"
    SUNSET = "sunset"
    FREQUENCY_CAP = "frequency_cap"
    DISCOUNT_CAP = "discount_cap"
    HOLDOUT = "holdout"
    EXCLUDED = "excluded"
    ALREADY_CONFIRMED = "already_confirmed"  # a confirmation mail to a confirmed subscriber
    CANCELLED = "cancelled"  # the campaign was cancelled before this message was sent


class Campaign(SQLModel, table=True):
    """A campaign (C1, C2) with everything needed to render it reproducibly."""

    __tablename__ = "campaigns"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    slug: str = Field(max_length=200, unique=True)
    kind: str = Field(max_length=16)
    status: str = Field(default=CampaignStatus.DRAFT.value, max_length=16, index=True)
    template: str = Field(max_length=500, description="shipped template name or file path")
    template_source: str = Field(description="the MJML text, copied when the campaign is made")
    subject: str = Field(max_length=998)
    preheader: str = Field(default="", max_length=500)
    content: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSONType, nullable=False)
    )
    segment_id: int | None = Field(default=None, foreign_key="segments.id", ondelete="SET NULL")
    exclude_segment_id: int | None = Field(
        default=None, foreign_key="segments.id", ondelete="SET NULL"
    )
    holdout_percent: float = Field(default=0.0)
    ab_subjects: list[str] = Field(default_factory=list, sa_column=Column(JSONType, nullable=False))
    ab_test_percent: float = Field(default=0.0)
    seed: int = Field(default=0)
    discount_prefix: str | None = Field(default=None, max_length=32)
    discount_expiry_days: int | None = Field(default=None)
    scheduled_at: datetime | None = Field(default=None, nullable=True)
    local_send_time: str | None = Field(default=None, max_length=5)
    window_start: str | None = Field(default=None, max_length=5)
    window_end: str | None = Field(default=None, max_length=5)
    audience_frozen_at: datetime | None = Field(default=None, nullable=True)
    started_at: datetime | None = Field(default=None, nullable=True)
    finished_at: datetime | None = Field(default=None, nullable=True)
    created_at: datetime = Field(nullable=False)
    updated_at: datetime = Field(nullable=False)


class CampaignList(SQLModel, table=True):
    """The lists a campaign goes to."""

    __tablename__ = "campaign_lists"

    campaign_id: int = Field(foreign_key="campaigns.id", primary_key=True, ondelete="CASCADE")
    list_id: int = Field(foreign_key="lists.id", primary_key=True, ondelete="CASCADE")


class CampaignLink(SQLModel, table=True):
    """A tracked link of a campaign: the click token carries the index, never the URL, so the
    redirect can only go where the campaign pointed (no open redirect)."""

    __tablename__ = "campaign_links"

    campaign_id: int = Field(foreign_key="campaigns.id", primary_key=True, ondelete="CASCADE")
    idx: int = Field(primary_key=True)
    name: str = Field(max_length=200)
    url: str


class DiscountCode(SQLModel, table=True):
    """One code of a campaign's pool; each is assigned to at most one recipient, ever."""

    __tablename__ = "discount_codes"
    __table_args__ = (
        UniqueConstraint("campaign_id", "contact_id", name="uq_discount_codes_campaign_contact"),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaigns.id", index=True, ondelete="CASCADE")
    code: str = Field(max_length=128, unique=True)
    expires_at: datetime | None = Field(default=None, nullable=True)
    contact_id: int | None = Field(default=None, foreign_key="contacts.id", ondelete="SET NULL")
    assigned_at: datetime | None = Field(default=None, nullable=True)


class DeliveryFailure(StrEnum):
    """Why a message ended `bounced` or `failed` (M1 splits bounces into hard and soft)."""

    HARD_BOUNCE = "hard_bounce"  # 5xx about the recipient: the address is suppressed on 5.1.x
    SOFT_BOUNCE = "soft_bounce"  # 4xx until the retry lifetime ran out
    POLICY = "policy"  # 5.7.x / 554 blocks: the recipient is not at fault, the stream pauses
    ERROR = "error"  # any other permanent failure (message refused, cannot be built)


class Message(SQLModel, table=True):
    """The send log (D1): one row per (campaign, contact), with the recipient's frozen audience
    decisions (variant, holdout, skip reason) and the delivery outcome.

    Delivery bookkeeping (campaigns/delivery): ``lease_owner`` is the worker holding the row;
    ``state = sending`` is the durable "attempt started" mark written before the DATA payload
    can reach the server; ``next_attempt_at`` is when the row may be claimed (first attempt or
    retry); ``provider`` is the recipient's MX group once known."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("campaign_id", "contact_id", name="uq_messages_campaign_contact"),
        Index("ix_messages_due", "state", "due_at"),
        Index("ix_messages_claim", "campaign_id", "state", "next_attempt_at"),
        Index("ix_messages_lease_owner", "lease_owner"),
        Index("ix_messages_last_attempt_at", "last_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaigns.id", ondelete="CASCADE")
    contact_id: int | None = Field(default=None, foreign_key="contacts.id", ondelete="SET NULL")
    state: str = Field(max_length=16)
    skip_reason: str | None = Field(default=None, max_length=32)
    variant: int = Field(default=0)
    discount_code: str | None = Field(default=None, max_length=128)
    due_at: datetime | None = Field(default=None, nullable=True)
    attempts: int = Field(default=0)
    last_reply: str | None = Field(default=None)
    message_id: str | None = Field(default=None, max_length=300)
    sent_at: datetime | None = Field(default=None, nullable=True)
    created_at: datetime = Field(nullable=False)
    updated_at: datetime = Field(nullable=False)
    failure: str | None = Field(default=None, max_length=16)
    provider: str | None = Field(default=None, max_length=255)
    lease_owner: str | None = Field(default=None, max_length=64)
    next_attempt_at: datetime | None = Field(default=None, nullable=True)
    first_attempt_at: datetime | None = Field(default=None, nullable=True)
    last_attempt_at: datetime | None = Field(default=None, nullable=True)


class Worker(SQLModel, table=True):
    """A running `patron worker` process. Its message leases are valid while its heartbeat is
    fresh; a worker found dead is reaped: its unstarted claims return to the queue and its
    started attempts become `unknown`."""

    __tablename__ = "workers"

    id: str = Field(primary_key=True, max_length=64)
    host: str = Field(max_length=255)
    pid: int
    started_at: datetime = Field(nullable=False)
    heartbeat_at: datetime = Field(nullable=False)


class WorkerLease(SQLModel, table=True):
    """An exclusive, expiring right held by one worker (on SQLite: the right to send at all)."""

    __tablename__ = "worker_leases"

    name: str = Field(primary_key=True, max_length=64)
    owner: str | None = Field(default=None, max_length=64)
    expires_at: datetime | None = Field(default=None, nullable=True)


class ProviderState(SQLModel, table=True):
    """Shared pace of one recipient provider (MX group): the AIMD factor applied to its rate and
    concurrency, and a pause after a policy block."""

    __tablename__ = "provider_state"

    provider: str = Field(primary_key=True, max_length=255)
    factor: float = Field(default=1.0)
    paused_until: datetime | None = Field(default=None, nullable=True)
    pause_reason: str | None = Field(default=None)
    last_deferral_at: datetime | None = Field(default=None, nullable=True)
    updated_at: datetime = Field(nullable=False)


class Alert(SQLModel, table=True):
    """Something an operator must look at: a provider blocking us, a campaign paused by its
    complaint or bounce rate."""

    __tablename__ = "alerts"

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(nullable=False, index=True)
    level: str = Field(max_length=16)
    kind: str = Field(max_length=32)
    campaign_id: int | None = Field(
        default=None, foreign_key="campaigns.id", ondelete="SET NULL"
    )
    provider: str | None = Field(default=None, max_length=255)
    message: str

"""Tables of the audience: contacts, lists, subscriptions, consent ledger, suppressions, orders,
segments, engagement events. Every change to them is an Alembic migration."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

# JSONB on PostgreSQL (indexable, compact), JSON text elsewhere.
JSONType = JSON().with_variant(JSONB(), "postgresql")


def _ts(*, nullable: bool = True, index: bool = False) -> Any:
    # SQLModel maps datetime to its UTCDateTime: aware values in, aware UTC values out.
    return Field(default=None, nullable=nullable, index=index)


class SubscriptionStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    UNSUBSCRIBED = "unsubscribed"


class ConsentAction(StrEnum):
    GRANTED = "granted"
    CONFIRMED = "confirmed"
    WITHDRAWN = "withdrawn"


class SuppressionReason(StrEnum):
    UNSUBSCRIBED_ALL = "unsubscribed_all"
    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    MANUAL = "manual"
    ERASED = "erased"


class EventKind(StrEnum):
    SENT = "sent"
    OPEN = "open"
    CLICK = "click"
    UNSUBSCRIBE = "unsubscribe"
    BOUNCE = "bounce"
    COMPLAINT = "complaint"


class EventClass(StrEnum):
    HUMAN = "human"
    APPLE_MPP = "apple_mpp"
    PROXY = "proxy"
    BOT = "bot"


class Meta(SQLModel, table=True):
    """Installation-wide values (generated secret key, key fingerprints)."""

    __tablename__ = "meta"

    key: str = Field(primary_key=True, max_length=64)
    value: str


class Contact(SQLModel, table=True):
    """One person, one normalized address (A1), with purchase and engagement aggregates kept up
    to date by the writers of orders and events so that segments never scan those tables."""

    __tablename__ = "contacts"
    __table_args__ = (
        Index("ix_contacts_orders_last", "orders_count", "last_order_at"),
        Index("ix_contacts_last_order_at", "last_order_at"),
        Index("ix_contacts_first_order_at", "first_order_at"),
        Index("ix_contacts_created_at", "created_at"),
        Index("ix_contacts_total_spent", "total_spent_cents", "orders_count", "last_order_at"),
        # Serves every attribute equality and `in` of a segment (compiled to JSONB `@>`) on
        # PostgreSQL; SQLite has per-attribute indexes instead (`patron segments index`).
        Index("ix_contacts_attributes", "attributes", postgresql_using="gin",
              postgresql_ops={"attributes": "jsonb_path_ops"}).ddl_if(dialect="postgresql"),
    )

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320, unique=True)
    customer_id: str | None = Field(default=None, max_length=128, index=True)
    first_name: str | None = Field(default=None, max_length=200)
    last_name: str | None = Field(default=None, max_length=200)
    locale: str | None = Field(default=None, max_length=35)
    timezone: str | None = Field(default=None, max_length=64)
    attributes: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSONType, nullable=False)
    )
    is_role: bool = Field(default=False)
    is_disposable: bool = Field(default=False)
    orders_count: int = Field(default=0)
    total_spent_cents: int = Field(default=0, sa_type=BigInteger)
    first_order_at: datetime | None = _ts()
    last_order_at: datetime | None = _ts()
    last_emailed_at: datetime | None = _ts()
    last_opened_at: datetime | None = _ts()
    last_clicked_at: datetime | None = _ts()
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)


class MailingList(SQLModel, table=True):
    """A list contacts subscribe to (A2); double opt-in unless said otherwise."""

    __tablename__ = "lists"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, unique=True)
    description: str = Field(default="")
    double_opt_in: bool = Field(default=True)
    created_at: datetime = _ts(nullable=False)


class Subscription(SQLModel, table=True):
    """A contact's membership of a list and its status (A2)."""

    __tablename__ = "subscriptions"
    __table_args__ = (Index("ix_subscriptions_list_status", "list_id", "status", "contact_id"),)

    contact_id: int = Field(foreign_key="contacts.id", primary_key=True, ondelete="CASCADE")
    list_id: int = Field(foreign_key="lists.id", primary_key=True, ondelete="CASCADE")
    status: str = Field(max_length=16)
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)
    confirmed_at: datetime | None = _ts()
    unsubscribed_at: datetime | None = _ts()


class ConsentEvent(SQLModel, table=True):
    """The append-only consent ledger (A3). Rows are never updated, except that erasure (A9)
    clears the personal fields and detaches them from the contact."""

    __tablename__ = "consent_ledger"

    id: int | None = Field(default=None, primary_key=True)
    contact_id: int | None = Field(
        default=None, foreign_key="contacts.id", index=True, ondelete="SET NULL"
    )
    list_id: int | None = Field(default=None, foreign_key="lists.id", ondelete="SET NULL")
    action: str = Field(max_length=16)
    source: str = Field(max_length=500)
    ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=500)
    consent_text_version: str | None = Field(default=None, max_length=64)
    occurred_at: datetime = _ts(nullable=False)


class Suppression(SQLModel, table=True):
    """A suppressed address, kept only as an HMAC of its normalized form (A4)."""

    __tablename__ = "suppressions"

    address_hmac: str = Field(primary_key=True, max_length=64)
    reason: str = Field(max_length=32)
    created_at: datetime = _ts(nullable=False)


class Order(SQLModel, table=True):
    """A shop order (A6), idempotent by (source, order id). Amounts are in hundredths."""

    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("source", "order_id", name="uq_orders_source_order_id"),
        # Covers the order aggregates' recomputation (count, sum, min and max per contact).
        Index("ix_orders_contact_totals", "contact_id", "ordered_at", "total_cents"),
    )

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(max_length=32)
    order_id: str = Field(max_length=128)
    contact_id: int | None = Field(default=None, foreign_key="contacts.id", ondelete="SET NULL")
    total_cents: int = Field(sa_type=BigInteger)
    currency: str = Field(max_length=3)
    ordered_at: datetime = _ts(nullable=False, index=True)
    discount_code: str | None = Field(default=None, max_length=128, index=True)
    line_items: list[dict[str, Any]] | None = Field(
        default=None, sa_column=Column(JSONType, nullable=True)
    )
    created_at: datetime = _ts(nullable=False)


class Segment(SQLModel, table=True):
    """A saved, dynamic segment: its rule is evaluated whenever it is used (A7)."""

    __tablename__ = "segments"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, unique=True)
    rule: str
    created_at: datetime = _ts(nullable=False)


class Event(SQLModel, table=True):
    """An engagement event of a contact with a campaign (sent, open, click, …), with its class
    (human or machine). Written by delivery and tracking; read by segments, exports, metrics."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_contact_kind_time", "contact_id", "kind", "occurred_at"),
                      Index("ix_events_campaign_kind", "campaign_id", "kind"))

    id: int | None = Field(default=None, primary_key=True)
    contact_id: int | None = Field(default=None, foreign_key="contacts.id", ondelete="SET NULL")
    campaign_id: int | None = Field(default=None)
    kind: str = Field(max_length=16)
    classification: str = Field(default=EventClass.HUMAN.value, max_length=16)
    url: str | None = Field(default=None)
    ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=500)
    occurred_at: datetime = _ts(nullable=False)


class ImportRun(SQLModel, table=True):
    """A record of each import: file, counts, rejects file, when (shown in the TUI's imports)."""

    __tablename__ = "import_runs"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)
    file_name: str
    file_sha256: str = Field(max_length=64)
    list_id: int | None = Field(default=None, foreign_key="lists.id", ondelete="SET NULL")
    consent_source: str | None = None
    rows: int = 0
    imported: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    rejects_file: str | None = None
    started_at: datetime = _ts(nullable=False)
    finished_at: datetime | None = _ts()

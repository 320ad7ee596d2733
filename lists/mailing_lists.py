"""Mailing lists (A2): create, find, list with subscriber counts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from lists.errors import ConflictError, InvalidInputError, NotFoundError
from lists.models import MailingList, Subscription, SubscriptionStatus


@dataclass(frozen=True, slots=True)
class ListSummary:
    id: int
    name: str
    double_opt_in: bool
    confirmed: int
    pending: int
    unsubscribed: int


def create_list(
    session: Session,
    name: str,
    now: datetime,
    *,
    double_opt_in: bool = True,
    description: str = "",
) -> MailingList:
    """Create a list; double opt-in unless said otherwise (A2)."""
    name = name.strip()
    if not name:
        raise InvalidInputError("a list needs a name")
    if len(name) > 200:
        raise InvalidInputError("a list name is at most 200 characters")
    existing = session.execute(select(MailingList).where(col(MailingList.name) == name)).first()
    if existing is not None:
        raise ConflictError(f"list {name!r} already exists")
    row = MailingList(
        name=name, double_opt_in=double_opt_in, description=description, created_at=now
    )
    session.add(row)
    session.flush()
    return row


def get_list(session: Session, name: str) -> MailingList:
    """The list called ``name`` or a NotFoundError naming it."""
    row = session.execute(
        select(MailingList).where(col(MailingList.name) == name)
    ).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"no list named {name!r} (see `patron lists ls`)")
    return row


def list_summaries(session: Session) -> list[ListSummary]:
    """Every list with its subscriber counts per status."""
    counts: dict[tuple[int, str], int] = {
        (lid, status): n
        for lid, status, n in session.execute(
            select(col(Subscription.list_id), col(Subscription.status), func.count()).group_by(
                col(Subscription.list_id), col(Subscription.status)
            )
        )
    }
    out = []
    for row in session.execute(select(MailingList).order_by(MailingList.name)).scalars():
        assert row.id is not None
        out.append(
            ListSummary(
                id=row.id,
                name=row.name,
                double_opt_in=row.double_opt_in,
                confirmed=counts.get((row.id, SubscriptionStatus.CONFIRMED), 0),
                pending=counts.get((row.id, SubscriptionStatus.PENDING), 0),
                unsubscribed=counts.get((row.id, SubscriptionStatus.UNSUBSCRIBED), 0),
            )
        )
    return out

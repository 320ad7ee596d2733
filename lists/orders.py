"""Order aggregates kept on contacts (orders count, total spent, first and last order time) so
that segments never scan the orders table. Every writer of orders (imports, webhooks) calls
:func:`recompute_order_aggregates` for the contacts it touched, in the same transaction."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, and_, exists, func, select, update
from sqlalchemy.orm import Session
from sqlmodel import col

from lists.models import Contact, Order

# Bound variables per statement stay far below SQLite's limit (32766).
_CHUNK = 5000


def recompute_order_aggregates(
    conn_or_session: Connection | Session, contact_ids: Iterable[int]
) -> None:
    """Set the order aggregates of ``contact_ids`` exactly from their orders (idempotent: the
    result depends only on the orders table, not on what the aggregates were before)."""
    ids = sorted({i for i in contact_ids if i is not None})
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        totals = (
            select(
                col(Order.contact_id).label("contact_id"),
                func.count().label("n"),
                func.sum(Order.total_cents).label("spent"),
                func.min(Order.ordered_at).label("first"),
                func.max(Order.ordered_at).label("last"),
            )
            .where(col(Order.contact_id).in_(chunk))
            .group_by(col(Order.contact_id))
            .subquery()
        )
        conn_or_session.execute(
            update(Contact)
            .where(col(Contact.id) == totals.c.contact_id)
            .values(
                orders_count=totals.c.n,
                total_spent_cents=totals.c.spent,
                first_order_at=totals.c.first,
                last_order_at=totals.c.last,
            )
            .execution_options(synchronize_session=False)
        )
        # Contacts whose last order moved to someone else (or went away) have none left.
        conn_or_session.execute(
            update(Contact)
            .where(
                and_(
                    col(Contact.id).in_(chunk),
                    ~exists().where(col(Order.contact_id) == col(Contact.id)),
                )
            )
            .values(orders_count=0, total_spent_cents=0, first_order_at=None, last_order_at=None)
            .execution_options(synchronize_session=False)
        )

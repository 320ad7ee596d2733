"""Order aggregates kept on contacts (orders count, total spent, first and last order time) so
that segments never scan the orders table.

A writer of single orders (a webhook) calls :func:`recompute_order_aggregates` for the contacts
it touched, in the same transaction. A bulk writer (the CSV import) recomputes once at its end,
by ranges of contact ids (:func:`recompute_order_aggregates_between`) or over the whole table
(:func:`recompute_all_order_aggregates`), which read the orders in contact order from the
covering index ``ix_orders_contact_totals``. Every recomputation is exact (its result depends
only on the orders table, not on what the aggregates were) and writes only the contacts whose
aggregates differ, so running it again, or over contacts that were already right, costs reads
and no writes.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import ColumnElement, Connection, and_, exists, func, or_, select, true, update
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
        _recompute(conn_or_session, col(Order.contact_id).in_(chunk), col(Contact.id).in_(chunk))


def recompute_order_aggregates_between(
    conn_or_session: Connection | Session, low: int, high: int
) -> None:
    """Set the order aggregates of every contact whose id is in ``low..high`` (inclusive)
    exactly: one pass over that range of the orders' contact index."""
    _recompute(
        conn_or_session,
        col(Order.contact_id).between(low, high),
        col(Contact.id).between(low, high),
    )


def recompute_all_order_aggregates(conn: Connection, *, rebuild_indexes: bool = False) -> None:
    """Set the order aggregates of every contact exactly, in two set-based statements. With
    ``rebuild_indexes`` on SQLite, the contacts' indexes on aggregate columns (the schema's and
    users' attribute indexes that include them) are dropped first and made again after, in the
    same transaction: when most contacts change, building an index by sorting costs a fraction
    of updating its entries one by one at random places. Readers keep their snapshot meanwhile
    (WAL); on PostgreSQL, where dropping an index would lock readers out, they are kept."""
    rebuild = _aggregate_indexes(conn) if rebuild_indexes and conn.dialect.name == "sqlite" else []
    for name, _ in rebuild:
        conn.exec_driver_sql(f'DROP INDEX "{name}"')
    _recompute(conn, col(Order.contact_id).is_not(None), true())
    for _, ddl in rebuild:
        conn.exec_driver_sql(ddl)


_AGGREGATE_COLUMNS = ("orders_count", "total_spent_cents", "first_order_at", "last_order_at")


def _aggregate_indexes(conn: Connection) -> list[tuple[str, str]]:
    """Name and CREATE statement of each SQLite index of contacts that involves an aggregate."""
    rows = conn.exec_driver_sql(
        "SELECT name, sql FROM sqlite_master "
        "WHERE type = 'index' AND tbl_name = 'contacts' AND sql IS NOT NULL"
    ).all()
    return [(name, sql) for name, sql in rows if any(c in sql for c in _AGGREGATE_COLUMNS)]


def _recompute(
    conn_or_session: Connection | Session,
    orders_of: ColumnElement[bool],
    contacts_in: ColumnElement[bool],
) -> None:
    totals = (
        select(
            col(Order.contact_id).label("contact_id"),
            func.count().label("n"),
            func.sum(Order.total_cents).label("spent"),
            func.min(Order.ordered_at).label("first"),
            func.max(Order.ordered_at).label("last"),
        )
        .where(orders_of)
        .group_by(col(Order.contact_id))
        .subquery()
    )
    conn_or_session.execute(
        update(Contact)
        .where(
            col(Contact.id) == totals.c.contact_id,
            # Unchanged contacts are not rewritten: no page, index entry or row version to write.
            or_(
                col(Contact.orders_count) != totals.c.n,
                col(Contact.total_spent_cents) != totals.c.spent,
                col(Contact.first_order_at).is_distinct_from(totals.c.first),
                col(Contact.last_order_at).is_distinct_from(totals.c.last),
            ),
        )
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
                contacts_in,
                or_(
                    col(Contact.orders_count) != 0,
                    col(Contact.total_spent_cents) != 0,
                    col(Contact.first_order_at).is_not(None),
                    col(Contact.last_order_at).is_not(None),
                ),
                ~exists().where(col(Order.contact_id) == col(Contact.id)),
            )
        )
        .values(orders_count=0, total_spent_cents=0, first_order_at=None, last_order_at=None)
        .execution_options(synchronize_session=False)
    )

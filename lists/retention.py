"""The shop's own retention KPIs over a period (M7), beside the preceding period of equal length
and the same period a year earlier. Definitions: docs/metrics.md.

Everything comes from the orders table (M8: derivable from stored rows, not counters), for all
three periods at once: one grouped pass per contact that reads only the (contact_id,
ordered_at) index, one sequential pass for the money, one count of contacts, and — only when
customers pay in several currencies — one more grouped pass."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, false, func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from lists.errors import InvalidInputError
from lists.models import Contact, Order

DEFAULT_ACTIVE_WINDOW_DAYS = 365

KPI_NAMES = (
    "customer_retention_rate",
    "churn_rate",
    "repeat_purchase_rate",
    "activation_rate",
    "loyal_customer_rate",
    "average_order_value",
    "purchase_frequency",
    "customer_lifetime_value",
)

PERIOD_NAMES = ("current", "previous", "year_ago")


@dataclass(frozen=True, slots=True)
class Period:
    """A half-open interval of time [start, end)."""

    start: datetime
    end: datetime

    @property
    def length(self) -> timedelta:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """The M7 KPIs of a period and of its two comparison periods. Each of ``current``,
    ``previous`` and ``year_ago`` maps the M7 names (and the counts behind them) to values;
    a ratio whose denominator is zero is None."""

    start: datetime
    end: datetime
    active_window_days: int
    currency: str | None
    current: dict[str, Any]
    previous: dict[str, Any]
    year_ago: dict[str, Any]

    def to_document(self) -> dict[str, Any]:
        """The requested period's figures at the top level, the comparisons nested."""
        return {
            **self.current,
            "active_window_days": self.active_window_days,
            "currency": self.currency,
            "previous": self.previous,
            "year_ago": self.year_ago,
        }


def comparison_periods(start: datetime, end: datetime) -> dict[str, Period]:
    """The period, the one of equal length just before it, and the same dates a year earlier."""
    current = Period(start, end)
    return {
        "current": current,
        "previous": Period(start - current.length, start),
        "year_ago": Period(_year_earlier(start), _year_earlier(end)),
    }


def _year_earlier(moment: datetime) -> datetime:
    try:
        return moment.replace(year=moment.year - 1)
    except ValueError:  # 29 February
        return moment.replace(year=moment.year - 1, day=28)


def retention_report(
    session: Session,
    start: datetime,
    end: datetime,
    *,
    active_window_days: int = DEFAULT_ACTIVE_WINDOW_DAYS,
    currency: str | None = None,
) -> RetentionReport:
    """The M7 KPIs of [start, end) with the preceding period and the same period a year ago.

    Money figures (average order value, lifetime value, revenue) count only orders in
    ``currency``; by default the currency most of the shop's latest orders are in."""
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidInputError("report bounds must be timezone-aware (UTC)")
    if end <= start:
        raise InvalidInputError("the end of the period must be after its start")
    if active_window_days < 1:
        raise InvalidInputError("the active window must be at least one day")
    periods = comparison_periods(start, end)
    window = timedelta(days=active_window_days)
    report_currency = currency.upper() if currency else _main_currency(session, end)

    customers = _customer_figures(session, periods, window)
    stores, mixed = _store_figures(session, periods, report_currency)
    if mixed:
        paying = _currency_customers(session, periods, report_currency)
    else:  # one currency: every customer paid in it
        paying = {name: figures["customers"] for name, figures in customers.items()}
    contacts = _contact_counts(session, periods)

    figures = {
        name: _kpis(
            period,
            customers[name],
            stores[name],
            paying[name],
            contacts[name] + customers[name]["customers_created_later"],
        )
        for name, period in periods.items()
    }
    return RetentionReport(
        start=start,
        end=end,
        active_window_days=active_window_days,
        currency=report_currency,
        current=figures["current"],
        previous=figures["previous"],
        year_ago=figures["year_ago"],
    )


# The currency of the shop is what its latest orders are paid in; looking at the latest
# thousand keeps this a short walk down the ordered_at index instead of a full scan.
_CURRENCY_SAMPLE = 1000


def _main_currency(session: Session, before: datetime) -> str | None:
    latest = (
        select(col(Order.currency).label("currency"))
        .where(col(Order.ordered_at) < before)
        .order_by(col(Order.ordered_at).desc())
        .limit(_CURRENCY_SAMPLE)
        .subquery()
    )
    row = session.execute(
        select(latest.c.currency)
        .group_by(latest.c.currency)
        .order_by(func.count().desc(), latest.c.currency)
        .limit(1)
    ).first()
    if row is None:  # nothing before the end: any order at all decides
        row = session.execute(select(col(Order.currency)).limit(1)).first()
    return str(row[0]) if row is not None else None


def _flag(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return case((condition, 1), else_=0)


def _customer_figures(
    session: Session, periods: dict[str, Period], window: timedelta
) -> dict[str, dict[str, int]]:
    # Pass 1, per contact, over attributed orders before the latest end: what each period needs
    # to know about that contact (orders before its end, activity at its start and its end,
    # orders inside it). Only contact_id and ordered_at are read, so the (contact_id,
    # ordered_at) index covers the pass and the table itself is never touched.
    latest_end = max(p.end for p in periods.values())
    at = col(Order.ordered_at)
    columns: list[Any] = [col(Order.contact_id).label("contact_id"), func.min(at).label("first_at")]
    for name, p in periods.items():
        columns += [
            func.sum(_flag(at < p.end)).label(f"{name}_n"),
            func.max(_flag(and_(at >= p.start - window, at < p.start))).label(f"{name}_active_s"),
            func.max(_flag(and_(at >= p.end - window, at < p.end))).label(f"{name}_active_e"),
            func.sum(_flag(and_(at >= p.start, at < p.end))).label(f"{name}_n_period"),
        ]
    per_contact = (
        select(*columns)
        .where(col(Order.contact_id).is_not(None), at < latest_end)
        .group_by(col(Order.contact_id))
        .subquery("per_contact")
    )
    c = per_contact.c

    # Then sum those per-contact facts into the counts each period's KPIs are made of.
    totals: list[Any] = []
    for name, p in periods.items():
        n = c[f"{name}_n"]
        totals += [
            func.sum(_flag(n >= 1)),
            func.sum(_flag(n >= 2)),
            func.sum(_flag(n >= 3)),
            func.sum(c[f"{name}_active_s"]),
            func.sum(c[f"{name}_active_e"]),
            func.sum(_flag(and_(c.first_at >= p.start, c.first_at < p.end))),
            func.sum(_flag(c[f"{name}_n_period"] >= 1)),
            func.sum(c[f"{name}_n_period"]),
            func.sum(_flag(and_(n >= 1, col(Contact.created_at) >= p.end))),
        ]
    row = session.execute(
        select(*totals).select_from(per_contact).join(Contact, col(Contact.id) == c.contact_id)
    ).one()
    keys = (
        "customers", "repeat_customers", "loyal_customers", "active_at_start", "active_at_end",
        "new_customers", "buying_customers", "customer_orders", "customers_created_later",
    )
    values = [int(v or 0) for v in row]
    return {
        name: dict(zip(keys, values[i * len(keys) : (i + 1) * len(keys)], strict=True))
        for i, name in enumerate(periods)
    }


def _store_figures(
    session: Session, periods: dict[str, Period], currency: str | None
) -> tuple[dict[str, dict[str, int]], bool]:
    # Pass 2, one sequential read of the orders (no WHERE, so no index detour for a range that
    # is most of the table): per period, every order inside it, attributed to a contact or not
    # (erased contacts' orders still happened), and the customers' revenue before its end.
    # Also whether customers paid in another currency, which makes pass 3 necessary.
    at = col(Order.ordered_at)
    attributed = col(Order.contact_id).is_not(None)
    in_currency: ColumnElement[bool] = (
        col(Order.currency) == currency if currency is not None else false()
    )
    cents = col(Order.total_cents)
    columns: list[Any] = []
    for p in periods.values():
        inside = and_(at >= p.start, at < p.end)
        columns += [
            func.sum(_flag(inside)),
            func.sum(_flag(and_(inside, in_currency))),
            func.sum(case((and_(inside, in_currency), cents), else_=0)),
            func.sum(case((and_(at < p.end, attributed, in_currency), cents), else_=0)),
        ]
    latest_end = max(p.end for p in periods.values())
    columns.append(func.sum(_flag(and_(at < latest_end, attributed, ~in_currency))))
    values = [int(v or 0) for v in session.execute(select(*columns)).one()]
    stores = {
        name: {
            "orders": values[4 * i],
            "currency_orders": values[4 * i + 1],
            "revenue_cents": values[4 * i + 2],
            "customer_revenue_cents": values[4 * i + 3],
        }
        for i, name in enumerate(periods)
    }
    return stores, values[-1] > 0


def _currency_customers(
    session: Session, periods: dict[str, Period], currency: str | None
) -> dict[str, int]:
    # Pass 3, only for shops whose customers pay in several currencies: the customers who
    # paid in the report currency before each end (the lifetime value's denominator).
    at = col(Order.ordered_at)
    in_currency: ColumnElement[bool] = (
        col(Order.currency) == currency if currency is not None else false()
    )
    per_contact = (
        select(*(func.max(_flag(and_(at < p.end, in_currency))).label(name)
                 for name, p in periods.items()))
        .where(col(Order.contact_id).is_not(None))
        .group_by(col(Order.contact_id))
        .subquery("paying")
    )
    row = session.execute(select(*(func.sum(per_contact.c[name]) for name in periods))).one()
    return {name: int(v or 0) for name, v in zip(periods, row, strict=True)}


def _contact_counts(session: Session, periods: dict[str, Period]) -> dict[str, int]:
    row = session.execute(
        select(*(func.sum(_flag(col(Contact.created_at) < p.end)) for p in periods.values()))
    ).one()
    return {name: int(v or 0) for name, v in zip(periods, row, strict=True)}


def _ratio(numerator: float, denominator: float, scale: float = 1.0) -> float | None:
    return numerator / denominator * scale if denominator else None


def _kpis(
    period: Period, cust: dict[str, int], store: dict[str, int], paying: int, contacts: int
) -> dict[str, Any]:
    retention = _ratio(
        cust["active_at_end"] - cust["new_customers"], cust["active_at_start"], 100.0
    )
    return {
        "start": period.start,
        "end": period.end,
        "customer_retention_rate": retention,
        "churn_rate": 100.0 - retention if retention is not None else None,
        "repeat_purchase_rate": _ratio(cust["repeat_customers"], cust["customers"], 100.0),
        "activation_rate": _ratio(cust["customers"], contacts, 100.0),
        "loyal_customer_rate": _ratio(cust["loyal_customers"], cust["repeat_customers"], 100.0),
        "average_order_value": _ratio(store["revenue_cents"], store["currency_orders"], 0.01),
        "purchase_frequency": _ratio(cust["customer_orders"], cust["buying_customers"]),
        "customer_lifetime_value": _ratio(store["customer_revenue_cents"], paying, 0.01),
        "customers": cust["customers"],
        "contacts": contacts,
        "active_at_start": cust["active_at_start"],
        "active_at_end": cust["active_at_end"],
        "new_customers": cust["new_customers"],
        "repeat_customers": cust["repeat_customers"],
        "loyal_customers": cust["loyal_customers"],
        "buying_customers": cust["buying_customers"],
        "orders": store["orders"],
        "revenue": store["revenue_cents"] / 100,
    }

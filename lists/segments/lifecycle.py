"""Built-in lifecycle stages and RFM scoring (A8), usable in rules as ``lifecycle = "at_risk"``,
``rfm = "champions"`` and ``recency >= 2`` (docs/segments.md has the same tables).

Lifecycle stages, each defined in the segment language itself (a contact can be in several):

================  ===============================================  ===========================
stage             definition                                       meaning
================  ===============================================  ===========================
new               ``first_order within 30d``                       first order < 30 days ago
active            ``last_order within 90d``                        ordered in the last 90 days
repeat            ``orders >= 2``                                  2 or more orders
loyal             ``orders >= 3``                                  3 or more orders
at_risk           ``last_order before 90d and last_order within    last order 90–180 days ago
                  180d``
lapsed            ``last_order before 180d``                       last order > 180 days ago
never_purchased   ``orders = 0``                                   no order
================  ===============================================  ===========================

RFM scores, each 1–3, exist only for customers (at least one order):

- recency R: days since the last order ≤ 90 → 3, ≤ 180 → 2, else 1 (the same boundaries as
  ``last_order within 90d`` and ``within 180d``);
- frequency F: 1 order → 1, 2 orders → 2, 3 or more → 3;
- monetary M: terciles of total spent among customers, computed when the rule is evaluated.
  With the n customers sorted by total spent, the cut points are the totals at (0-based) ranks
  ⌊n/3⌋ and ⌊2n/3⌋; M is 1 below the first cut point, 2 below the second, else 3 (ties share
  the higher score). Relative cut points fit any shop's prices and currency without settings.

RFM groups partition customers (every customer is in exactly one; contacts without orders in
none):

===============  ==============================================  ===========================
group            definition                                      meaning
===============  ==============================================  ===========================
champions        R = 3, F = 3, M = 3                             recent, frequent, big spenders
loyal            F = 3, R ≥ 2, not a champion                    regulars still buying
potential        R = 3, F = 2                                    recent second-time buyers
new_customers    R = 3, F = 1                                    recent first-time buyers
at_risk          R = 2, F ≤ 2                                    few orders, 3–6 months ago
cant_lose        R = 1 and (F = 3 or M = 3)                      best customers, gone > 180 d
hibernating      R = 1, F = 2, M ≤ 2                             two orders, long ago
lost             R = 1, F = 1, M ≤ 2                             one small order, long ago
===============  ==============================================  ===========================
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, Table, and_, false, func, or_, select

ScoreField = Literal["recency", "frequency", "monetary"]
SCORES = (1, 2, 3)
RECENCY_DAYS = (90, 180)  # at most this many days since the last order: score 3, then 2


@dataclass(frozen=True, slots=True)
class Definition:
    """A built-in segment: its rule in the segment language and what it means."""

    rule: str
    description: str


LIFECYCLE_STAGES: dict[str, Definition] = {
    "new": Definition("first_order within 30d", "first order less than 30 days ago"),
    "active": Definition("last_order within 90d", "ordered in the last 90 days"),
    "repeat": Definition("orders >= 2", "2 or more orders"),
    "loyal": Definition("orders >= 3", "3 or more orders"),
    "at_risk": Definition("last_order before 90d and last_order within 180d",
                          "last order 90 to 180 days ago"),
    "lapsed": Definition("last_order before 180d", "last order more than 180 days ago"),
    "never_purchased": Definition("orders = 0", "no order yet"),
}

RFM_GROUPS: dict[str, Definition] = {
    "champions": Definition("recency = 3 and frequency = 3 and monetary = 3",
                            "recent, frequent, big spenders"),
    "loyal": Definition(
        "frequency = 3 and recency >= 2 and not (recency = 3 and monetary = 3)",
        "3+ orders, the last within 180 days (champions excepted)"),
    "potential": Definition("recency = 3 and frequency = 2", "recent second-time buyers"),
    "new_customers": Definition("recency = 3 and frequency = 1", "recent first-time buyers"),
    "at_risk": Definition("recency = 2 and frequency <= 2",
                          "1 or 2 orders, the last 90 to 180 days ago"),
    "cant_lose": Definition("recency = 1 and (frequency = 3 or monetary = 3)",
                            "frequent or big spenders who have not bought for 180+ days"),
    "hibernating": Definition("recency = 1 and frequency = 2 and monetary <= 2",
                              "two orders, the last more than 180 days ago"),
    "lost": Definition("recency = 1 and frequency = 1 and monetary <= 2",
                       "one small order more than 180 days ago"),
}


def monetary_cut_points(contacts: Table) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    """Scalar subqueries giving the total spent (cents) at ranks ⌊n/3⌋ and ⌊2n/3⌋ among the n
    customers; evaluated once per query by both SQLite and PostgreSQL."""
    counted = contacts.alias("rfm_customers")
    n = (select(func.count()).select_from(counted).where(counted.c.orders_count > 0)
         .scalar_subquery())
    cuts = []
    for third in (1, 2):
        ranked = contacts.alias(f"rfm_m{third}")
        cuts.append(
            select(ranked.c.total_spent_cents)
            .where(ranked.c.orders_count > 0)
            .order_by(ranked.c.total_spent_cents)
            .limit(1)
            .offset(n * third // 3)
            .scalar_subquery()
        )
    return cuts[0], cuts[1]


def score_condition(
    field: ScoreField, scores: frozenset[int], now: datetime, contacts: Table
) -> ColumnElement[bool]:
    """Customers whose ``field`` score is one of ``scores``.

    Each score is a range of one column (score s for s ≥ 2 starts at a cut point), so a set of
    scores becomes one range per run of consecutive scores: index-friendly comparisons, never a
    computed score per row."""
    customer = contacts.c.orders_count > 0
    column: ColumnElement[Any]
    cuts: tuple[Any, Any]
    if field == "recency":
        column = contacts.c.last_order_at
        cuts = (now - timedelta(days=RECENCY_DAYS[1]), now - timedelta(days=RECENCY_DAYS[0]))
    elif field == "frequency":
        column, cuts = contacts.c.orders_count, (2, 3)
    else:
        column, cuts = contacts.c.total_spent_cents, monetary_cut_points(contacts)
    starts = {2: cuts[0], 3: cuts[1]}  # the value at which score s begins
    ranges = []
    for low, high in _runs(sorted(scores)):
        bounds = []
        if low > 1:
            bounds.append(column >= starts[low])
        if high < 3:
            bounds.append(column < starts[high + 1])
        ranges.append(and_(*bounds) if bounds else customer)
    if not ranges:
        return false()
    return and_(customer, or_(*ranges))


def _runs(scores: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs of sorted scores: [1, 2, 3] → [(1, 3)], [1, 3] → [(1, 1), (3, 3)]."""
    runs: list[tuple[int, int]] = []
    for score in scores:
        if runs and runs[-1][1] == score - 1:
            runs[-1] = (runs[-1][0], score)
        else:
            runs.append((score, score))
    return runs

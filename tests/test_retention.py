"""Store retention KPIs (M7) against hand-computed values of a small shop, edge cases, a
property test against a direct reading of the definitions, and `patron report retention`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lists.errors import InvalidInputError
from lists.models import Contact, Order
from lists.retention import KPI_NAMES, comparison_periods, retention_report
from patron.context import AppContext


def d(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


CREATED = d("2024-01-01")

# name -> [(ordered_at, euros)]: the shop the hand computations in docs/metrics.md use too.
SHOP = {
    "a": [("2025-03-01", 30), ("2025-10-01", 40), ("2026-02-10", 60)],
    "b": [("2025-05-01", 25)],
    "c": [("2024-11-01", 80)],
    "d": [("2026-01-15", 20), ("2026-03-20", 40)],
    "e": [("2026-05-01", 100)],
    "f": [],
    "g": [("2025-02-01", 10), ("2025-12-15", 50)],
    "h": [("2025-01-10", 45)],
}
DETACHED = [("2026-02-20", 50)]  # the order of an erased customer


def build(session, shop, detached=(), created=CREATED, currency="EUR"):
    n = 0
    for name, orders in shop.items():
        c = Contact(email=f"{name}@shop.example", created_at=created, updated_at=created)
        session.add(c)
        session.flush()
        for when, euros in orders:
            n += 1
            session.add(Order(source="test", order_id=f"{name}-{n}", contact_id=c.id,
                              total_cents=euros * 100, currency=currency, ordered_at=d(when),
                              created_at=created))
    for when, euros in detached:
        n += 1
        session.add(Order(source="test", order_id=f"x-{n}", contact_id=None, total_cents=euros * 100,
                          currency=currency, ordered_at=d(when), created_at=created))
    session.flush()


def test_small_shop_against_hand_computed_values(ctx):
    with ctx.session() as s:
        build(s, SHOP, DETACHED)
        report = retention_report(s, d("2026-01-01"), d("2026-04-01"))
    cur, prev, ago = report.current, report.previous, report.year_ago
    assert report.currency == "EUR"

    # S = a, b, g, h active on 2026-01-01; E = a, b, d, g active on 2026-04-01; N = d.
    assert (cur["active_at_start"], cur["active_at_end"], cur["new_customers"]) == (4, 4, 1)
    assert cur["customer_retention_rate"] == pytest.approx(75.0)
    assert cur["churn_rate"] == pytest.approx(25.0)
    assert cur["customers"] == 6 and cur["contacts"] == 8
    assert cur["repeat_purchase_rate"] == pytest.approx(50.0)        # a, d, g of 6
    assert cur["loyal_customer_rate"] == pytest.approx(100 / 3)      # a of a, d, g
    assert cur["activation_rate"] == pytest.approx(75.0)             # 6 of 8 contacts
    assert cur["average_order_value"] == pytest.approx(42.5)         # (60+20+40+50) / 4
    assert cur["purchase_frequency"] == pytest.approx(1.5)           # 3 orders by a, d
    assert cur["customer_lifetime_value"] == pytest.approx(400 / 6)  # 130+25+80+60+60+45
    assert (cur["orders"], cur["revenue"]) == (4, 170.0)

    assert (prev["start"], prev["end"]) == (d("2025-10-03"), d("2026-01-01"))
    assert (prev["active_at_start"], prev["active_at_end"], prev["new_customers"]) == (5, 4, 0)
    assert prev["customer_retention_rate"] == pytest.approx(80.0)
    assert prev["repeat_purchase_rate"] == pytest.approx(40.0)
    assert prev["loyal_customer_rate"] == 0.0
    assert prev["activation_rate"] == pytest.approx(62.5)
    assert prev["average_order_value"] == pytest.approx(50.0)
    assert prev["purchase_frequency"] == pytest.approx(1.0)
    assert prev["customer_lifetime_value"] == pytest.approx(56.0)

    assert (ago["start"], ago["end"]) == (d("2025-01-01"), d("2025-04-01"))
    assert (ago["active_at_start"], ago["active_at_end"], ago["new_customers"]) == (1, 4, 3)
    assert ago["customer_retention_rate"] == pytest.approx(100.0)
    assert ago["repeat_purchase_rate"] == 0.0
    assert ago["loyal_customer_rate"] is None  # nobody with two orders yet
    assert ago["average_order_value"] == pytest.approx(85 / 3)
    assert ago["customer_lifetime_value"] == pytest.approx(41.25)


def test_no_customers_at_start_gives_null_retention(ctx):
    with ctx.session() as s:
        build(s, {"x": [("2026-02-01", 10)], "y": []})
        cur = retention_report(s, d("2026-01-01"), d("2026-04-01")).current
    assert cur["active_at_start"] == 0
    assert cur["customer_retention_rate"] is None and cur["churn_rate"] is None
    assert cur["activation_rate"] == pytest.approx(50.0)


def test_period_with_only_new_customers(ctx):
    with ctx.session() as s:
        build(s, {"x": [("2026-01-05", 10), ("2026-02-05", 30)], "y": [("2026-03-01", 20)]})
        report = retention_report(s, d("2026-01-01"), d("2026-04-01"))
    cur = report.current
    assert (cur["new_customers"], cur["active_at_end"], cur["customers"]) == (2, 2, 2)
    assert cur["customer_retention_rate"] is None
    assert cur["repeat_purchase_rate"] == pytest.approx(50.0)
    assert cur["purchase_frequency"] == pytest.approx(1.5)
    assert cur["average_order_value"] == pytest.approx(20.0)
    assert cur["customer_lifetime_value"] == pytest.approx(30.0)
    assert report.previous["customers"] == 0
    assert all(report.previous[k] is None for k in KPI_NAMES if k != "activation_rate")
    assert report.previous["activation_rate"] == 0.0  # two contacts, no customer yet: a real 0


def test_empty_shop_has_only_nulls(ctx):
    with ctx.session() as s:
        report = retention_report(s, d("2026-01-01"), d("2026-04-01"))
    assert report.currency is None
    for figures in (report.current, report.previous, report.year_ago):
        assert all(figures[k] is None for k in KPI_NAMES)
        assert (figures["orders"], figures["revenue"], figures["contacts"]) == (0, 0.0, 0)


def test_customer_imported_after_ordering_counts_as_a_contact(ctx):
    # Orders imported with their contacts long after they were placed: the contact exists
    # "before the end" for activation, else activation could exceed 100 %.
    with ctx.session() as s:
        build(s, {"late": [("2025-06-01", 10)]}, created=d("2026-06-01"))
        cur = retention_report(s, d("2026-01-01"), d("2026-04-01")).current
    assert (cur["customers"], cur["contacts"], cur["activation_rate"]) == (1, 1, 100.0)


def test_money_uses_one_currency_counts_use_all(ctx):
    with ctx.session() as s:
        build(s, {"a": [("2026-01-10", 10), ("2026-01-20", 30)]})
        build(s, {"b": [("2026-02-01", 500)]}, currency="USD")
        eur = retention_report(s, d("2026-01-01"), d("2026-04-01"))
        usd = retention_report(s, d("2026-01-01"), d("2026-04-01"), currency="usd")
    assert eur.currency == "EUR"
    assert eur.current["average_order_value"] == pytest.approx(20.0)
    assert eur.current["customer_lifetime_value"] == pytest.approx(40.0)
    assert eur.current["purchase_frequency"] == pytest.approx(1.5)  # 3 orders, 2 customers
    assert usd.current["average_order_value"] == pytest.approx(500.0)
    assert usd.current["customer_lifetime_value"] == pytest.approx(500.0)


def test_active_window_is_configurable(ctx):
    with ctx.session() as s:
        build(s, {"a": [("2025-11-01", 10), ("2026-03-01", 10)], "b": [("2025-08-01", 10)]})
        wide = retention_report(s, d("2026-01-01"), d("2026-04-01")).current
        narrow = retention_report(s, d("2026-01-01"), d("2026-04-01"), active_window_days=90).current
    assert (wide["active_at_start"], wide["active_at_end"]) == (2, 2)
    assert (narrow["active_at_start"], narrow["active_at_end"]) == (1, 1)  # b lapsed after 90 d
    assert narrow["customer_retention_rate"] == pytest.approx(100.0)


def test_bad_bounds_are_refused(ctx):
    with ctx.session() as s, pytest.raises(InvalidInputError, match="after its start"):
        retention_report(s, d("2026-04-01"), d("2026-01-01"))


def test_year_ago_of_a_leap_day():
    periods = comparison_periods(d("2028-02-29"), d("2028-03-31"))
    assert periods["year_ago"].start == d("2027-02-28")
    assert periods["previous"].end == d("2028-02-29")


# -- property: the SQL agrees with a direct reading of the definitions -------------------------

def reference(shop, start, end, window, created):
    """The M7 definitions read literally, in Python, over {contact: [(when, cents)]}, every
    contact created at ``created``."""
    before_end = {c: [o for o in orders if o[0] < end] for c, orders in shop.items()}
    customers = [c for c, orders in before_end.items() if orders]
    active = lambda c, t: any(t - window <= w < t for w, _ in shop[c])  # noqa: E731
    s_ = sum(1 for c in customers if active(c, start))
    e_ = sum(1 for c in customers if active(c, end))
    n_ = sum(1 for c in customers if start <= min(w for w, _ in shop[c]) < end)
    repeat = sum(1 for c in customers if len(before_end[c]) >= 2)
    loyal = sum(1 for c in customers if len(before_end[c]) >= 3)
    inside = [o for orders in shop.values() for o in orders if start <= o[0] < end]
    buyers = sum(1 for orders in shop.values() if any(start <= w < end for w, _ in orders))
    revenue = sum(cents for orders in before_end.values() for _, cents in orders)

    def ratio(a, b, k=1.0):
        return a / b * k if b else None

    retention = ratio(e_ - n_, s_, 100)
    return {
        "customer_retention_rate": retention,
        "churn_rate": None if retention is None else 100 - retention,
        "repeat_purchase_rate": ratio(repeat, len(customers), 100),
        "activation_rate": ratio(len(customers), len(customers) if created >= end else len(shop),
                                 100),
        "loyal_customer_rate": ratio(loyal, repeat, 100),
        "average_order_value": ratio(sum(c for _, c in inside), len(inside), 0.01),
        "purchase_frequency": ratio(len(inside), buyers),
        "customer_lifetime_value": ratio(revenue, len(customers), 0.01),
    }


BASE = d("2025-01-01")
order_st = st.tuples(st.integers(0, 730), st.integers(1, 20_000))
shop_st = st.lists(st.lists(order_st, max_size=5), min_size=0, max_size=8)


@pytest.mark.slow
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shop=shop_st, start_day=st.integers(100, 600), length=st.integers(1, 200),
       window=st.integers(1, 400))
def test_sql_matches_the_definitions(db_factory, shop, start_day, length, window):
    url = db_factory()
    start = BASE + timedelta(days=start_day)
    end = start + timedelta(days=length)
    data = {
        f"c{i}": sorted((BASE + timedelta(days=day, hours=7), cents) for day, cents in orders)
        for i, orders in enumerate(shop)
    }
    context = AppContext(cli_overrides={"database_url": url})
    try:
        with context.session() as s:
            n = 0
            for name, orders in data.items():
                c = Contact(email=f"{name}@shop.example", created_at=BASE, updated_at=BASE)
                s.add(c)
                s.flush()
                for when, cents in orders:
                    n += 1
                    s.add(Order(source="p", order_id=str(n), contact_id=c.id, total_cents=cents,
                                currency="EUR", ordered_at=when, created_at=BASE))
            s.flush()
            got = retention_report(s, start, end, active_window_days=window)
    finally:
        context.dispose()
    for name, period in comparison_periods(start, end).items():
        expected = reference(data, period.start, period.end, timedelta(days=window), BASE)
        actual = getattr(got, name)
        for key in KPI_NAMES:
            assert actual[key] == pytest.approx(expected[key]), (name, key)


# -- CLI ----------------------------------------------------------------------------------------

def test_cli_json_has_m7_names_and_comparisons(cli, ctx):
    with ctx.session() as s:
        build(s, SHOP, DETACHED)
    r = cli("report", "retention", "--start", "2026-01-01", "--end", "2026-04-01", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    for key in KPI_NAMES:
        assert key in doc and key in doc["previous"] and key in doc["year_ago"]
    assert doc["customer_retention_rate"] == pytest.approx(75.0)
    assert doc["previous"]["customer_retention_rate"] == pytest.approx(80.0)
    assert doc["year_ago"]["loyal_customer_rate"] is None
    assert doc["start"] == "2026-01-01T00:00:00+00:00"
    assert doc["currency"] == "EUR"


def test_cli_reads_iso_datetimes_with_offsets_as_utc(cli):
    r = cli("report", "retention", "--start", "2026-01-01T00:30:00+01:00", "--end",
            "2026-04-01T12:00:00", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert (doc["start"], doc["end"]) == ("2025-12-31T23:30:00+00:00", "2026-04-01T12:00:00+00:00")


def test_cli_human_table_shows_three_periods(cli, ctx):
    with ctx.session() as s:
        build(s, SHOP, DETACHED)
    r = cli("report", "retention", "--start", "2026-01-01", "--end", "2026-04-01")
    assert r.code == 0, r.err
    lines = {line.split("  ")[0].strip(): line for line in r.out.splitlines()}
    assert "previous" in r.out and "year ago" in r.out
    assert "2025-10-03" in r.out and "2025-04-01" in r.out
    assert "80.00 %" in lines["customer retention"] and "100.00 %" in lines["customer retention"]
    assert lines["loyal customer rate"].rstrip().endswith("–")
    assert "42.50 EUR" in lines["average order value"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--start", "2026-04-01", "--end", "2026-01-01"), "--end must be after --start"),
        (("--start", "2026-13-01", "--end", "2026-04-01"), "invalid --start"),
        (("--start", "2026-01-01", "--end", "2026-04-01", "--active-window-days", "0"),
         "active window"),
    ],
)
def test_cli_bad_input_is_one_line(cli, args, message):
    r = cli("report", "retention", *args)
    assert r.code != 0
    assert r.err.startswith("patron: error: ") and message in r.err
    assert len(r.err.splitlines()) == 1

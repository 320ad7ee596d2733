"""`patron demo`: builds the demo shop through the real imports, on either backend, prints
what it made and the retention report; deterministic for a seed; never overwrites data."""

from __future__ import annotations

import json
import re

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lists.models import ConsentEvent, Contact, Order, Subscription
from patron.db import make_engine
from patron.demo import DEFAULT_CONTACTS, default_demo_path, generate, run_demo

from .conftest import NOW, TEST_SECRET


def counts(url):
    engine = make_engine(url)
    try:
        with Session(engine) as s:
            def n(model, *where):
                return s.execute(select(func.count()).select_from(model).where(*where)).scalar_one()

            return {
                "contacts": n(Contact),
                "orders": n(Order),
                "detached_orders": n(Order, Order.contact_id.is_(None)),
                "pending": n(Subscription, Subscription.status == "pending"),
                "confirmed": n(Subscription, Subscription.status == "confirmed"),
                "unsubscribed": n(Subscription, Subscription.status == "unsubscribed"),
                "ledger": n(ConsentEvent),
                "non_ascii_names": n(Contact, Contact.first_name.in_(["Zoé", "Jürgen", "Léa",
                                                                      "João", "Fränk", "Élodie",
                                                                      "Sören", "Björn", "Inês"])),
            }
    finally:
        engine.dispose()


def test_demo_on_the_test_database_prints_what_it_made(cli, db_url):
    r = cli("demo", "--db", db_url, "--contacts", "300", "--seed", "3")
    assert r.code == 0, r.err
    assert "Demo shop ready" in r.out
    assert f"export PATRON_DATABASE_URL={db_url}" in r.out.replace("'", "")
    assert re.search(r"orders: [\d,]+ since \d{4}-\d{2}-\d{2}, revenue [\d,.]+ EUR", r.out)
    assert "newsletter" in r.out and "vip" in r.out
    assert "Retention over the last 90 days" in r.out and "customer retention" in r.out
    got = counts(db_url)
    assert 250 <= got["contacts"] <= 300
    assert got["orders"] > 150
    assert got["pending"] > 0 and got["confirmed"] > got["pending"] and got["unsubscribed"] > 0
    assert got["non_ascii_names"] > 0
    # the other commands read it as it is
    ls = json.loads(cli("lists", "ls", "--json").out)
    assert [(x["name"], x["double_opt_in"]) for x in ls] == [("newsletter", True), ("vip", False)]


def test_demo_json_agrees_with_the_retention_command(cli, db_url):
    r = cli("demo", "--db", db_url, "--contacts", "200", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["database"] == db_url and doc["currency"] == "EUR"
    assert {x["name"] for x in doc["lists"]} == {"newsletter", "vip"}
    retention = doc["retention"]
    again = cli("report", "retention", "--start", retention["start"], "--end", retention["end"],
                "--json")
    assert again.code == 0, again.err
    assert json.loads(again.out) == retention
    assert retention["previous"]["orders"] > 0 and retention["year_ago"]["orders"] > 0


def test_demo_refuses_a_database_with_data(cli, db_url):
    assert cli("demo", "--db", db_url, "--contacts", "50").code == 0
    r = cli("demo", "--db", db_url, "--contacts", "50")
    assert r.code == 1 and r.out == ""
    assert r.err.startswith("patron: error: the database given with --db already holds data")
    assert len(r.err.splitlines()) == 1


def test_default_database_is_recreated_each_run(isolated_env, capsys):
    from patron.cli.app import main

    path = default_demo_path()
    assert str(path).startswith(str(isolated_env))  # the test's own data directory
    assert main(["demo", "--contacts", "120", "--seed", "9"]) == 0
    assert path.exists() and str(path) in capsys.readouterr().out
    before = counts(f"sqlite:///{path}")
    assert main(["demo", "--contacts", "120", "--seed", "9"]) == 0
    assert counts(f"sqlite:///{path}") == before  # replaced, not added to


def test_default_size_builds(tmp_path):
    url = f"sqlite:///{tmp_path / 'demo.sqlite3'}"
    result = run_demo(url, contacts=DEFAULT_CONTACTS, seed=1, now=NOW, key=TEST_SECRET.encode())
    assert 1900 <= result.contacts <= DEFAULT_CONTACTS
    assert result.orders > 1500
    assert set(result.refused_by_reason) >= {"role address", "disposable domain",
                                             "invalid address", "duplicate in file"}
    assert {"unsubscribed_all", "hard_bounce"} <= set(result.suppressions)
    got = counts(url)
    assert got["detached_orders"] > 0  # an erased customer's orders stay, anonymous
    cur = result.report.current
    assert cur["customer_retention_rate"] is not None and 0 < cur["customer_retention_rate"] < 100
    # the long tail: fewer repeat than one-time buyers, fewer loyal than repeat
    assert 10 < cur["repeat_purchase_rate"] < 50
    assert cur["loyal_customer_rate"] < 100
    assert result.report.year_ago["customer_retention_rate"] is not None


def test_same_seed_same_shop():
    a, b, c = generate(300, 5, NOW), generate(300, 5, NOW), generate(300, 6, NOW)

    def fingerprint(shop):
        return [(p.email, p.first_name, p.signed_up, p.pending, p.fate,
                 [(o.order_id, o.at, o.cents, o.discount_code) for o in p.orders])
                for p in shop.people]

    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(c)
    assert all(o.at < NOW for p in a.people for o in p.orders)
    assert all(p.signed_up < NOW for p in a.people)
    assert len({p.email for p in a.people}) == 300


def test_same_seed_same_database(tmp_path):
    def content(url):
        engine = make_engine(url)
        try:
            with Session(engine) as s:
                return (
                    s.execute(select(Contact.email, Contact.first_name, Contact.created_at,
                                     Contact.orders_count).order_by(Contact.email)).all(),
                    s.execute(select(Order.order_id, Order.total_cents, Order.ordered_at)
                              .order_by(Order.order_id)).all(),
                )
        finally:
            engine.dispose()

    urls = [f"sqlite:///{tmp_path / f'{i}.sqlite3'}" for i in range(2)]
    for url in urls:
        run_demo(url, contacts=150, seed=11, now=NOW, key=TEST_SECRET.encode())
    assert content(urls[0]) == content(urls[1])


def test_bad_size_is_a_usage_error(cli, db_url):
    r = cli("demo", "--db", db_url, "--contacts", "0")
    assert r.code == 2 and len(r.err.splitlines()) == 1 and "--contacts" in r.err

"""`patron segments create|count|ls|show|delete` (SPEC §10): JSON documents, one-line errors
and exit codes, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from lists.models import Contact


@pytest.fixture
def shop(ctx):
    """Five contacts; the CLI reads the real clock, so order dates are relative to it."""
    now = datetime.now(UTC)
    with ctx.session() as session:
        for i, (orders, country) in enumerate([(0, "LU"), (1, "LU"), (2, "LU"), (3, "DE"),
                                               (2, None)]):
            last = now - timedelta(days=10 * (i + 1)) if orders else None
            session.add(Contact(
                email=f"c{i}@example.com", first_name=f"C{i}",
                attributes={"country": country} if country else {}, orders_count=orders,
                total_spent_cents=2500 * orders, first_order_at=last, last_order_at=last,
                created_at=now, updated_at=now))
    return ctx


def test_create_count_show_ls_delete(cli, shop):
    r = cli("segments", "create", "lu-repeat", "--rule",
            'orders >= 2 and last_order within 90d and attr.country = "LU"', "--json")
    assert r.code == 0, r.err
    created = json.loads(r.out)
    assert created["name"] == "lu-repeat"
    assert created["count"] == 1
    assert created["rule"] == 'orders >= 2 and last_order within 90d and attr.country = "LU"'

    r = cli("segments", "count", "lu-repeat", "--json")
    assert (r.code, json.loads(r.out)) == (0, {"count": 1})
    r = cli("segments", "count", "--rule", "orders >= 1", "--json")
    assert (r.code, json.loads(r.out)) == (0, {"count": 4})
    r = cli("segments", "count", "--rule", 'LIFECYCLE = "never purchased"')
    assert (r.code, r.out) == (0, "1\n")

    r = cli("segments", "show", "lu-repeat", "--json")
    assert r.code == 0, r.err
    shown = json.loads(r.out)
    assert shown["count"] == 1
    assert [(m["email"], m["orders"], m["total_spent_cents"]) for m in shown["sample"]] == [
        ("c2@example.com", 2, 5000)]
    r = cli("segments", "show", "lu-repeat")
    assert r.code == 0
    assert "1 contacts match now" in r.out
    assert "c2@example.com" in r.out
    assert "50.00" in r.out

    r = cli("segments", "ls", "--json")
    assert r.code == 0
    docs = json.loads(r.out)
    saved = [d for d in docs if d["kind"] == "saved"]
    assert [(d["name"], d["rule"]) for d in saved] == [("lu-repeat", created["rule"])]
    builtin = {(d["kind"], d["name"]): d for d in docs if d["kind"] != "saved"}
    assert builtin[("lifecycle", "at_risk")]["rule"] == 'lifecycle = "at_risk"'
    assert builtin[("rfm", "champions")]["definition"] == (
        "recency = 3 and frequency = 3 and monetary = 3")
    assert {name for kind, name in builtin if kind == "lifecycle"} == {
        "new", "active", "repeat", "loyal", "at_risk", "lapsed", "never_purchased"}
    # Every built-in's rule can be counted as shown.
    for doc in builtin.values():
        assert cli("segments", "count", "--rule", doc["rule"]).code == 0

    r = cli("segments", "delete", "lu-repeat", "--json")
    assert (r.code, json.loads(r.out)) == (0, {"deleted": "lu-repeat"})
    assert [d for d in json.loads(cli("segments", "ls", "--json").out)
            if d["kind"] == "saved"] == []


def test_show_limits_the_sample(cli, shop):
    assert cli("segments", "create", "buyers", "--rule", "orders > 0").code == 0
    r = cli("segments", "show", "buyers", "--limit", "2", "--json")
    doc = json.loads(r.out)
    assert doc["count"] == 4
    assert [m["email"] for m in doc["sample"]] == ["c1@example.com", "c2@example.com"]


@pytest.mark.parametrize(("args", "code", "message"), [
    (("segments", "count", "--rule", "last_order within abc"), 1,
     'patron: error: at column 19: expected a duration such as 90d (a whole number and h, d or '
     'w) after "within", found "abc"\n'),
    (("segments", "count", "nope"), 1,
     "patron: error: no segment named 'nope' (see `patron segments ls`)\n"),
    (("segments", "show", "nope"), 1,
     "patron: error: no segment named 'nope' (see `patron segments ls`)\n"),
    (("segments", "delete", "nope"), 1,
     "patron: error: no segment named 'nope' (see `patron segments ls`)\n"),
    (("segments", "count", "--rule", 'list = "news"'), 1,
     "patron: error: the rule names list 'news', which does not exist (see `patron lists ls`)\n"),
    (("segments", "create", "x", "--rule", "orders >="), 1,
     'patron: error: at column 10: expected a number after ">=", found end of rule\n'),
    (("segments", "count"), 2, None),
    (("segments", "count", "a", "--rule", "orders > 1"), 2, None),
    (("segments", "create", "x"), 2, None),
])
def test_errors_are_one_line_with_non_zero_exit(cli, args, code, message):
    r = cli(*args)
    assert r.code == code
    assert r.out == ""
    assert len(r.err.splitlines()) == 1
    assert r.err.startswith("patron: error: ")
    if message is not None:
        assert r.err == message
    if args[:2] == ("segments", "count") and code == 2:
        assert "NAME" in r.err and "--rule" in r.err


def test_duplicate_segment_name(cli):
    assert cli("segments", "create", "a", "--rule", "orders >= 1").code == 0
    r = cli("segments", "create", "a", "--rule", "orders >= 2")
    assert (r.code, r.err) == (1, "patron: error: segment 'a' already exists\n")

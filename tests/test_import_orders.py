"""Order import (A6): exact amounts and times, rejects, idempotence by (source, order id),
contacts created for customers, order aggregates exact; and `patron orders import`."""

from __future__ import annotations

import csv
import json
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy import inspect as sa_inspect

import lists.imports.orders as orders_import
from lists.errors import InvalidInputError, NotFoundError
from lists.imports.orders import import_orders, parse_ordered_at, parse_total, recompute_steps
from lists.models import Contact, ImportRun, Order, Subscription, SuppressionReason
from lists.orders import recompute_order_aggregates
from lists.suppressions import suppress

from .conftest import NOW

HEADER = "order_id,email,total,currency,ordered_at,discount_code\n"


def _csv(tmp_path, text, name="orders.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _import(ctx, path, **kw):
    kw.setdefault("key", ctx.key)
    return import_orders(ctx.engine(), path, now=ctx.now(), **kw)


def _orders(ctx):
    with ctx.session() as s:
        rows = s.execute(select(Order, Contact.email).outerjoin(Contact, Contact.id == Order.contact_id))
        return {(o.source, o.order_id): (email, o.total_cents, o.currency, o.ordered_at, o.discount_code)
                for o, email in rows}


def _contacts(ctx):
    with ctx.session() as s:
        return {c.email: c for c in s.execute(select(Contact)).scalars()}


def _rejects(path):
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_amounts_currencies_and_times_are_stored_exactly(ctx, tmp_path):
    path = _csv(
        tmp_path,
        HEADER
        + "A1,ana@shop.example,19.99,eur,2026-05-01T14:30:00+02:00,SPRING10\n"
        + "A2,ana@shop.example,0.1,EUR,2026-05-02 08:00:00,\n"
        + "A3,ben@shop.example,1200,usd,2026-05-03,\n"
        + "A4,ben@shop.example,.5,EUR,2026-05-04T10:00:00Z,\n",
    )
    summary = _import(ctx, path)
    assert (summary.rows, summary.imported, summary.rejected, summary.contacts_created) == (4, 4, 0, 2)
    assert summary.rejects_file is None
    assert _orders(ctx) == {
        ("csv", "A1"): ("ana@shop.example", 1999, "EUR", datetime(2026, 5, 1, 12, 30, tzinfo=UTC), "SPRING10"),
        ("csv", "A2"): ("ana@shop.example", 10, "EUR", datetime(2026, 5, 2, 8, 0, tzinfo=UTC), None),
        ("csv", "A3"): ("ben@shop.example", 120000, "USD", datetime(2026, 5, 3, tzinfo=UTC), None),
        ("csv", "A4"): ("ben@shop.example", 50, "EUR", datetime(2026, 5, 4, 10, 0, tzinfo=UTC), None),
    }


def test_a_customer_becomes_a_contact_without_any_subscription(ctx, tmp_path):
    summary = _import(ctx, _csv(tmp_path, HEADER + "A1,New.Buyer@Shop.Example,10,EUR,2026-05-01,\n"))
    assert summary.contacts_created == 1
    buyer = _contacts(ctx)["New.Buyer@shop.example"]
    assert (buyer.orders_count, buyer.total_spent_cents) == (1, 1000)
    with ctx.session() as s:
        assert s.execute(select(Subscription)).first() is None


def test_rejects_with_reasons_and_line_numbers(ctx, tmp_path):
    path = _csv(
        tmp_path,
        HEADER
        + "A1,ana@shop.example,-1,EUR,2026-05-01,\n"          # 2
        + "A2,ana@shop.example,abc,EUR,2026-05-01,\n"         # 3
        + "A3,ana@shop.example,1.234,EUR,2026-05-01,\n"       # 4
        + "A4,ana@shop.example,\"1,50\",EUR,2026-05-01,\n"    # 5
        + "A5,ana@shop.example,1,EURO,2026-05-01,\n"          # 6
        + "A6,ana@shop.example,1,€,2026-05-01,\n"             # 7
        + "A7,ana@shop.example,1,EUR,yesterday,\n"            # 8
        + ",ana@shop.example,1,EUR,2026-05-01,\n"             # 9
        + "A9,not-an-address,1,EUR,2026-05-01,\n"             # 10
        + "A10,ana@shop.example,1,EUR,2026-05-01,\n"          # 11
        + "A10,ana@shop.example,2,EUR,2026-05-02,\n"          # 12
        + "A12,ana@shop.example,1,EUR,2026-13-01,\n",         # 13
    )
    summary = _import(ctx, path)
    assert (summary.imported, summary.rejected) == (1, 11)
    rows = _rejects(summary.rejects_file)
    assert [(r["reject_line"], r["reject_reason"].split(":")[0]) for r in rows] == [
        ("2", "invalid total"), ("3", "invalid total"), ("4", "invalid total"),
        ("5", "invalid total"), ("6", "invalid currency"), ("7", "invalid currency"),
        ("8", "invalid ordered_at"), ("9", "missing order_id"), ("10", "invalid email"),
        ("12", "duplicate in file"), ("13", "invalid ordered_at"),
    ]
    assert rows[0]["reject_reason"] == "invalid total: '-1' is negative"
    assert rows[2]["reject_reason"] == "invalid total: '1.234' has more than two decimals"
    assert rows[3]["total"] == "1,50"  # the original fields, to fix and import again
    assert _orders(ctx) == {
        ("csv", "A10"): ("ana@shop.example", 100, "EUR", datetime(2026, 5, 1, tzinfo=UTC), None)
    }


def test_parsers():
    assert parse_total("10.500") == 1050
    assert parse_total(" 7 ") == 700
    assert parse_total("0") == 0
    for bad in ("", "1e3", "+1", "NaN", "1.001", "-0.5", "1 000"):
        with pytest.raises(ValueError):
            parse_total(bad)
    assert parse_ordered_at("2026-05-01T23:30:00-01:00") == datetime(2026, 5, 2, 0, 30, tzinfo=UTC)
    assert parse_ordered_at("2026-05-01T10:00:00.123456") == datetime(
        2026, 5, 1, 10, 0, 0, 123456, tzinfo=UTC
    )


def test_reimport_is_idempotent_and_changes_are_updates(ctx, tmp_path):
    path = _csv(tmp_path, HEADER + "A1,ana@shop.example,10,EUR,2026-05-01,\nA2,ana@shop.example,5,EUR,2026-05-02,\n")
    _import(ctx, path)
    before = _orders(ctx)
    again = _import(ctx, path)
    assert (again.imported, again.updated, again.unchanged, again.contacts_created) == (0, 0, 2, 0)
    assert _orders(ctx) == before
    path.write_text(HEADER + "A1,ana@shop.example,12.5,EUR,2026-05-01,\nA2,ana@shop.example,5,EUR,2026-06-02,\n")
    changed = _import(ctx, path)
    assert (changed.imported, changed.updated, changed.unchanged) == (0, 2, 0)
    ana = _contacts(ctx)["ana@shop.example"]
    assert (ana.orders_count, ana.total_spent_cents) == (2, 1750)
    assert ana.last_order_at == datetime(2026, 6, 2, tzinfo=UTC)


def test_the_same_order_id_from_another_source_is_another_order(ctx, tmp_path):
    path = _csv(tmp_path, HEADER + "A1,ana@shop.example,10,EUR,2026-05-01,\n")
    _import(ctx, path)
    summary = _import(ctx, path, source="shopify")
    assert summary.imported == 1
    assert set(_orders(ctx)) == {("csv", "A1"), ("shopify", "A1")}
    assert _contacts(ctx)["ana@shop.example"].orders_count == 2
    with pytest.raises(InvalidInputError, match="source"):
        _import(ctx, path, source=" ")


def test_an_order_moved_to_another_email_moves_its_aggregates(ctx, tmp_path):
    path = _csv(tmp_path, HEADER + "A1,ana@shop.example,10,EUR,2026-05-01,\n")
    _import(ctx, path)
    path.write_text(HEADER + "A1,ben@shop.example,10,EUR,2026-05-01,\n")
    assert _import(ctx, path).updated == 1
    contacts = _contacts(ctx)
    ana, ben = contacts["ana@shop.example"], contacts["ben@shop.example"]
    assert (ana.orders_count, ana.total_spent_cents, ana.first_order_at, ana.last_order_at) == (0, 0, None, None)
    assert (ben.orders_count, ben.total_spent_cents) == (1, 1000)


def test_customer_id_links_rows_without_email(ctx, tmp_path):
    header = "order_id,email,total,currency,ordered_at,customer_id\n"
    path = _csv(
        tmp_path,
        header + "A1,ana@shop.example,10,EUR,2026-05-01,C-7\nA2,,20,EUR,2026-05-02,C-7\nA3,,5,EUR,2026-05-02,C-404\n",
    )
    summary = _import(ctx, path, batch_size=1)
    assert (summary.imported, summary.rejected) == (2, 1)
    assert _rejects(summary.rejects_file)[0]["reject_reason"].startswith("unknown customer_id")
    ana = _contacts(ctx)["ana@shop.example"]
    assert (ana.customer_id, ana.orders_count, ana.total_spent_cents) == ("C-7", 2, 3000)


def test_a_known_contact_gets_the_shops_customer_id_once(ctx, tmp_path):
    header = "order_id,email,total,currency,ordered_at,customer_id\n"
    _import(ctx, _csv(tmp_path, HEADER + "A1,ana@shop.example,10,EUR,2026-05-01,\n"))
    assert _contacts(ctx)["ana@shop.example"].customer_id is None
    _import(ctx, _csv(tmp_path, header + "A2,ana@shop.example,10,EUR,2026-05-01,C-1\n", "b.csv"))
    _import(ctx, _csv(tmp_path, header + "A3,ana@shop.example,10,EUR,2026-05-01,C-2\n", "c.csv"))
    assert _contacts(ctx)["ana@shop.example"].customer_id == "C-1"


def test_an_erased_address_gets_no_contact_again_but_its_order_counts(ctx, tmp_path):
    with ctx.session() as s:
        suppress(s, ctx.key, "erased@shop.example", SuppressionReason.ERASED, NOW)
        suppress(s, ctx.key, "bounced@shop.example", SuppressionReason.HARD_BOUNCE, NOW)
    path = _csv(tmp_path, HEADER + "A1,erased@shop.example,10,EUR,2026-05-01,\nA2,bounced@shop.example,10,EUR,2026-05-01,\n")
    summary = _import(ctx, path)
    assert (summary.imported, summary.contacts_created) == (2, 1)
    assert set(_contacts(ctx)) == {"bounced@shop.example"}  # a customer, though never mailed
    assert _orders(ctx)[("csv", "A1")][0] is None
    assert _import(ctx, path).unchanged == 2


def test_missing_columns_and_files_are_one_line_errors(ctx, tmp_path):
    with pytest.raises(InvalidInputError) as err:
        _import(ctx, _csv(tmp_path, "order_id,email,amount\n1,a@b.example,1\n"))
    assert str(err.value) == (
        "orders.csv: missing columns 'total', 'currency', 'ordered_at' "
        "(the header has 'order_id', 'email', 'amount')"
    )
    with pytest.raises(NotFoundError):
        _import(ctx, tmp_path / "none.csv")


def test_each_run_is_recorded(ctx, tmp_path):
    _import(ctx, _csv(tmp_path, HEADER + "A1,ana@shop.example,10,EUR,2026-05-01,\nA1,x,1,EUR,2026-05-01,\n"))
    with ctx.session() as s:
        run = s.execute(select(ImportRun)).scalar_one()
        assert (run.kind, run.rows, run.imported, run.rejected, run.list_id) == ("orders", 2, 1, 1, None)
        assert run.finished_at is not None


def _python_aggregates(rows):
    """Aggregates per email computed in Python from the rows of the last file imported."""
    out = {}
    for _, email, cents, at in rows:
        n, total, first, last = out.get(email, (0, 0, None, None))
        out[email] = (n + 1, total + cents, min(first or at, at), max(last or at, at))
    return out


def test_aggregates_are_exact_against_a_python_recomputation(ctx, tmp_path):
    rng = random.Random(7)
    emails = [f"c{i}@shop.example" for i in range(12)]
    start = datetime(2025, 1, 1, tzinfo=UTC)
    rows = [
        (f"O{i}", rng.choice(emails), rng.randrange(0, 50000),
         start + timedelta(seconds=rng.randrange(0, 86400 * 300), microseconds=rng.randrange(10**6)))
        for i in range(120)
    ]

    def write(rows):
        body = "".join(
            f"{oid},{email},{Decimal(cents) / 100},EUR,{at.isoformat()},\n" for oid, email, cents, at in rows
        )
        return _csv(tmp_path, HEADER + body)

    def check(rows):
        expected = _python_aggregates(rows)
        for email, c in _contacts(ctx).items():
            got = (c.orders_count, c.total_spent_cents, c.first_order_at, c.last_order_at)
            assert got == expected.get(email, (0, 0, None, None)), email

    _import(ctx, write(rows), batch_size=17)
    check(rows)
    # Change totals, dates and owners of a third of the orders, and import again.
    changed = [
        (oid, rng.choice(emails), rng.randrange(0, 50000), at - timedelta(days=3)) if i % 3 == 0 else r
        for i, r in enumerate(rows) for oid, _, _, at in [r]
    ]
    summary = _import(ctx, write(changed), batch_size=17)
    assert summary.updated == 40 and summary.unchanged == 80
    check(changed)


def test_recompute_order_aggregates_is_idempotent_and_resets_contacts_without_orders(ctx, tmp_path):
    _import(ctx, _csv(tmp_path, HEADER + "A1,ana@shop.example,10,EUR,2026-05-01,\nA2,ana@shop.example,5,EUR,2026-05-03,\n"))
    with ctx.session() as s:
        ana = s.execute(select(Contact)).scalar_one()
        recompute_order_aggregates(s, [ana.id])
        recompute_order_aggregates(s, [ana.id])
    ana = _contacts(ctx)["ana@shop.example"]
    assert (ana.orders_count, ana.total_spent_cents) == (2, 1500)
    with ctx.engine().begin() as conn:
        conn.execute(delete(Order))
        recompute_order_aggregates(conn, [ana.id])
    ana = _contacts(ctx)["ana@shop.example"]
    assert (ana.orders_count, ana.total_spent_cents, ana.first_order_at, ana.last_order_at) == (0, 0, None, None)


def _aggregates_from_orders(ctx):
    """Every contact's aggregates computed in Python from the orders table as it is."""
    with ctx.session() as s:
        expected = {cid: (0, 0, None, None) for cid in s.execute(select(Contact.id)).scalars()}
        for cid, cents, at in s.execute(select(Order.contact_id, Order.total_cents, Order.ordered_at)):
            if cid is not None:
                n, total, first, last = expected[cid]
                expected[cid] = (n + 1, total + cents, min(first or at, at), max(last or at, at))
        stored = {
            c.id: (c.orders_count, c.total_spent_cents, c.first_order_at, c.last_order_at)
            for c in s.execute(select(Contact)).scalars()
        }
    return stored, expected


class _Killed(Exception):
    pass


@pytest.mark.parametrize("then", ["same file again", "another file"])
def test_a_killed_import_leaves_aggregates_that_the_next_import_makes_exact(ctx, tmp_path, monkeypatch, then):
    monkeypatch.setattr(orders_import, "_ROWS_PER_COMMIT", 20)  # commits every 2 batches of 10
    rng = random.Random(11)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    emails = [f"c{i}@shop.example" for i in range(15)]
    _import(ctx, _csv(tmp_path, HEADER + "B0,c0@shop.example,7,EUR,2024-01-01,\n", "old.csv"))
    body = "".join(
        f"K{i},{rng.choice(emails)},{rng.randrange(1, 900)}.{rng.randrange(100):02d},EUR,"
        f"{(start + timedelta(minutes=rng.randrange(10**6))).isoformat()},\n"
        for i in range(120)
    )
    path = _csv(tmp_path, HEADER + body)
    calls = []

    def die_on_third_commit(done, total):
        calls.append(done)
        if len(calls) == 3:
            raise _Killed

    with pytest.raises(_Killed):
        _import(ctx, path, batch_size=10, progress=die_on_third_commit)
    with ctx.session() as s:
        assert s.execute(select(func.count()).select_from(Order)).scalar_one() == 1 + 60
        run = s.execute(select(ImportRun).order_by(ImportRun.id.desc())).scalars().first()
        assert run.file_name == str(path.resolve()) and run.finished_at is None
    stored, expected = _aggregates_from_orders(ctx)
    assert stored != expected  # the killed run's orders are not in the aggregates yet

    if then == "same file again":
        summary = _import(ctx, path, batch_size=10)
        assert (summary.imported, summary.unchanged) == (60, 60)
    else:
        summary = _import(ctx, _csv(tmp_path, HEADER + "N1,new@shop.example,1,EUR,2026-01-01,\n", "n.csv"))
        assert summary.imported == 1
    stored, expected = _aggregates_from_orders(ctx)
    assert stored == expected
    with ctx.session() as s:
        runs = s.execute(select(ImportRun.finished_at).order_by(ImportRun.id)).scalars().all()
        assert [at is not None for at in runs] == [True, False, True]


def test_a_large_share_of_changed_contacts_is_recomputed_over_the_whole_table(ctx, tmp_path):
    # Every contact gets orders here (the whole-table path, indexes rebuilt on SQLite); then a
    # small file touches one contact of many (the path by steps); both stay exact.
    body = "".join(f"W{i},w{i % 40}@shop.example,{i}.5,EUR,2026-0{1 + i % 9}-0{1 + i % 7},\n"
                   for i in range(200))
    _import(ctx, _csv(tmp_path, HEADER + body, "w.csv"))
    stored, expected = _aggregates_from_orders(ctx)
    assert stored == expected and len(stored) == 40
    _import(ctx, _csv(tmp_path, HEADER + "W3,w5@shop.example,1,EUR,2020-01-01,\n", "x.csv"))
    stored, expected = _aggregates_from_orders(ctx)
    assert stored == expected
    names = {i["name"] for i in sa_inspect(ctx.engine()).get_indexes("contacts")}
    assert {"ix_contacts_orders_last", "ix_contacts_total_spent"} <= names


def test_recompute_steps_are_ranges_where_ids_are_dense_and_lists_elsewhere(monkeypatch):
    monkeypatch.setattr(orders_import, "_STEP_IDS", 4)
    assert list(recompute_steps([1, 2, 4, 5, 6, 100, 200, 300, 301])) == [
        (1, 5), [6, 100, 200, 300], (301, 301),
    ]
    assert list(recompute_steps([])) == []


# CLI ------------------------------------------------------------------------------------------


def test_cli_orders_import_json_and_rerun(cli, tmp_path):
    path = _csv(tmp_path, "order_id;email;total;currency;ordered_at\nA1;ana@shop.example;10;EUR;2026-05-01\nA2;x;1;EUR;2026-05-01\n")
    r = cli("orders", "import", str(path), "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert {k: doc[k] for k in ("imported", "updated", "unchanged", "rejected", "contacts_created")} == {
        "imported": 1, "updated": 0, "unchanged": 0, "rejected": 1, "contacts_created": 1,
    }
    assert doc["rejects_file"] == str(tmp_path.absolute() / "orders.rejects.csv")
    doc = json.loads(cli("orders", "import", str(path), "--json", "--source", "shop").out)
    assert doc["imported"] == 1
    r = cli("orders", "import", str(path))
    assert "2 rows: 0 imported, 0 updated, 1 unchanged, 1 rejected" in r.out
    assert "1  invalid email" in r.out


def test_cli_orders_one_line_errors(cli, tmp_path):
    for args, needle in (
        ((str(tmp_path / "none.csv"),), "no such file"),
        ((str(_csv(tmp_path, "id,mail\n1,a@b.example\n")),), "missing columns"),
        ((str(_csv(tmp_path, HEADER, "o2.csv")), "--source", ""), "source"),
    ):
        r = cli("orders", "import", *args)
        assert r.code == 1 and r.out == ""
        assert r.err.startswith("patron: error: ") and r.err.count("\n") == 1
        assert needle in r.err


def test_a_helper_reader_process_gives_the_same_orders(ctx, tmp_path):
    body = "".join(f"P{i},c{i % 5}@shop.example,{i}.25,eur,2026-05-0{1 + i % 9}T10:00:00+02:00,\n"
                   for i in range(30))
    path = _csv(tmp_path, HEADER + body + "P3,x@shop.example,1,EUR,2026-05-01,\nP99,bad,1,EUR,2026-05-01,\n")
    summary = _import(ctx, path, parallel=True, batch_size=4)
    assert (summary.imported, summary.rejected, summary.contacts_created) == (30, 2, 5)
    helper, helper_rejects = _orders(ctx), summary.rejects_file.read_bytes()
    with ctx.session() as s:
        s.execute(delete(Order))
    again = _import(ctx, path, parallel=False, batch_size=4)
    assert (again.imported, again.rejected, again.rejects_file.read_bytes()) == (
        30, 2, helper_rejects,
    )
    assert _orders(ctx) == helper

"""`patron demo`: builds the demo shop through the real imports, on either backend, prints
what it made and the retention report; deterministic for a seed; never overwrites data. It
sends a win-back campaign and the pending sign-ups' confirmations through the built-in SMTP
sink: what the sink stored is what it says, signed, and only to people who may receive it."""

from __future__ import annotations

import email
import email.policy
import json
import re
import socket
from pathlib import Path

import dkim
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from campaigns.message.dkim import generate_dkim_key
from campaigns.models import Campaign, Message
from lists.models import ConsentEvent, Contact, MailingList, Order, Subscription, Suppression
from lists.suppressions import address_hmac
from patron.db import make_engine
from patron.demo import (
    DEFAULT_CONTACTS,
    default_demo_maildir,
    default_demo_path,
    generate,
    run_demo,
)

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


def test_demo_json_agrees_with_the_retention_and_stats_commands(cli, db_url):
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
    # what was sent, as `patron campaigns stats` counts it and as the sink stored it
    send = doc["send"]
    campaign_id = send["campaign"]["id"]
    stats = cli("campaigns", "stats", str(campaign_id), "--json")
    assert stats.code == 0, stats.err
    assert json.loads(stats.out) == send["stats"]
    assert send["stats"]["status"] == "sent" and send["stats"]["sent"] > 0
    assert send["holdout"] == send["stats"]["skipped"]["holdout"] > 0
    assert send["confirmations_sent"] == doc["confirmations_queued"]
    assert send["worker"]["delivered"] == send["stats"]["sent"] + send["confirmations_sent"]
    maildir = Path(send["sink"]["maildir"])
    assert maildir == default_demo_maildir()
    assert send["sink"]["stored"] == len(list((maildir / "new").iterdir())) == (
        send["worker"]["delivered"])


def test_demo_without_sending_builds_only_the_shop(cli, db_url):
    r = cli("demo", "--db", db_url, "--contacts", "300", "--seed", "3", "--no-send", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["send"] is None and doc["confirmations_queued"] > 0
    assert not (default_demo_maildir() / "new").exists()
    assert json.loads(cli("campaigns", "ls", "--json").out)[0]["kind"] == "confirmation"


def test_demo_refuses_a_database_with_data(cli, db_url):
    assert cli("demo", "--db", db_url, "--contacts", "50", "--no-send").code == 0
    r = cli("demo", "--db", db_url, "--contacts", "50")
    assert r.code == 1 and r.out == ""
    assert r.err.startswith("patron: error: the database given with --db already holds data")
    assert len(r.err.splitlines()) == 1


def test_default_database_and_maildir_are_recreated_each_run(isolated_env, capsys):
    from patron.cli.app import main

    path, maildir = default_demo_path(), default_demo_maildir()
    assert str(path).startswith(str(isolated_env))  # the test's own data directory
    assert str(maildir).startswith(str(isolated_env))
    assert main(["demo", "--contacts", "120", "--seed", "9"]) == 0
    assert path.exists() and str(path) in capsys.readouterr().out
    before = counts(f"sqlite:///{path}")
    stored = len(list((maildir / "new").iterdir()))
    assert stored > 0
    assert main(["demo", "--contacts", "120", "--seed", "9"]) == 0
    assert counts(f"sqlite:///{path}") == before  # replaced, not added to
    out = capsys.readouterr().out
    assert f"the sink stored {stored} messages in {maildir}" in out
    assert len(list((maildir / "new").iterdir())) == stored


# -- what the demo sends ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def dkim_key():
    return generate_dkim_key(2048)


def _figures(out: str) -> dict[str, int | str]:
    found = re.search(
        r"campaign (\d+) 'We miss you' \(discount, template winback\) to list newsletter, "
        r"segment lapsed-repeaters: orders >= 2 and last_order before 60d\n"
        r"  recipients (\d+), sent (\d+), delivered (\d+), holdout (\d+) \(10 %.*\n"
        r"(?:  skipped: (.*)\n)?"
        r"  double opt-in confirmations sent: (\d+)\n"
        r"  the sink stored (\d+) messages? in (\S+) ", out)
    assert found, out
    keys = ("campaign", "recipients", "sent", "delivered", "holdout", "skipped",
            "confirmations", "stored", "maildir")
    return {k: (v if k in ("skipped", "maildir") else int(v))
            for k, v in zip(keys, found.groups(), strict=True)}


def test_demo_sends_only_to_those_who_may_receive_it_and_says_so(
    cli, db_url, tmp_path, monkeypatch, dkim_key
):
    pem, txt = dkim_key
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(pem)
    monkeypatch.setenv("PATRON_DKIM__DOMAIN", "shop.example")
    monkeypatch.setenv("PATRON_DKIM__SELECTOR", "demo")
    monkeypatch.setenv("PATRON_DKIM__PRIVATE_KEY_FILE", str(key_file))
    r = cli("demo", "--db", db_url, "--contacts", "300", "--seed", "3")
    assert r.code == 0, r.err
    got = _figures(r.out)
    assert "Sent through the built-in SMTP sink (127.0.0.1:" in r.out
    assert f"patron campaigns stats {got['campaign']}" in r.out
    # the printed figures are the campaign's M1 stats
    stats = json.loads(cli("campaigns", "stats", str(got["campaign"]), "--json").out)
    assert (stats["recipients"], stats["sent"], stats["delivered"]) == (
        got["recipients"], got["sent"], got["delivered"])
    assert stats["skipped"].pop("holdout") == got["holdout"] > 0
    assert got["skipped"] == ", ".join(f"{n} {reason.replace('_', ' ')}"
                                       for reason, n in stats["skipped"].items())
    assert got["sent"] == got["recipients"] > 0 and got["confirmations"] > 0
    # what it says it stored is what the Maildir holds
    maildir = Path(got["maildir"])
    files = list((maildir / "new").iterdir())
    assert got["stored"] == len(files) == got["sent"] + got["confirmations"]

    def dns(name, timeout=5):
        assert name == b"demo._domainkey.shop.example."
        return txt.encode()

    engine = make_engine(db_url)
    try:
        with Session(engine) as s:
            newsletter = s.execute(
                select(MailingList.id).where(MailingList.name == "newsletter")).scalar_one()
            suppressed = set(s.execute(select(Suppression.address_hmac)).scalars())
            sent_rows = {
                m.message_id: (m, kind)
                for m, kind in s.execute(
                    select(Message, Campaign.kind)
                    .join(Campaign, Campaign.id == Message.campaign_id)
                    .where(Message.state == "sent"))
            }
            kinds = []
            for path in files:
                data = path.read_bytes()
                assert dkim.verify(data, dnsfunc=dns), path  # signed, and intact
                parsed = email.message_from_bytes(data, policy=email.policy.default)
                row, kind = sent_rows.pop(parsed["Message-ID"])  # each sent message once
                contact = s.get(Contact, row.contact_id)
                assert parsed["Delivered-To"] == contact.email
                assert parsed["To"].addresses[0].addr_spec == contact.email
                # consent is sacred: nobody suppressed, and only confirmed subscribers get
                # the offer; pending sign-ups get their confirmation and nothing else
                assert address_hmac(TEST_SECRET.encode(), contact.email) not in suppressed
                status = s.execute(
                    select(Subscription.status).where(Subscription.contact_id == contact.id,
                                                      Subscription.list_id == newsletter)
                ).scalar_one()
                if kind == "confirmation":
                    assert status == "pending" and b"/confirm/" in data
                    assert b"COMEBACK-" not in data
                else:
                    assert kind == "discount" and status == "confirmed"
                    assert row.skip_reason is None and contact.orders_count >= 2
                    assert row.discount_code.encode() in data
                kinds.append(kind)
            assert sent_rows == {}  # nothing sent that the sink did not store
    finally:
        engine.dispose()
    assert kinds.count("discount") == got["sent"]
    assert kinds.count("confirmation") == got["confirmations"]


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


def test_the_sink_stops_and_connections_close_when_sending_fails(cli, db_url, monkeypatch):
    import patron.cli.cmd_demo as cmd_demo
    from patron.sink import SmtpSink

    stopped, closed = [], []
    real_stop, real_engine = SmtpSink.stop, cmd_demo.demo_engine

    async def stop(self):
        await real_stop(self)
        stopped.append(self.port)

    def failing_engine(context):
        engine = real_engine(context)
        real_close = engine.close_transport

        async def run(*, once=False):
            raise RuntimeError("the database went away")

        async def close_transport():
            await real_close()
            closed.append(True)

        engine.run = run
        engine.close_transport = close_transport
        return engine

    monkeypatch.setattr(SmtpSink, "stop", stop)
    monkeypatch.setattr(cmd_demo, "demo_engine", failing_engine)
    r = cli("demo", "--db", db_url, "--contacts", "50")
    assert r.code == 70 and r.out == ""
    assert r.err == ("patron: error: internal error: RuntimeError: the database went away "
                     "(PATRON_DEBUG=1 shows more)\n")
    assert closed == [True] and len(stopped) == 1
    with pytest.raises(ConnectionRefusedError):  # nothing listens there any more
        socket.create_connection(("127.0.0.1", stopped[0]), timeout=2).close()


def test_a_dkim_setting_in_error_stops_the_demo_before_it_builds(cli, db_url, monkeypatch):
    monkeypatch.setenv("PATRON_DKIM__DOMAIN", "shop.example")
    r = cli("demo", "--db", db_url, "--contacts", "50")
    assert r.code == 1 and r.out == ""
    assert r.err.startswith("patron: error: DKIM needs PATRON_DKIM__DOMAIN")
    assert counts(db_url)["contacts"] == 0

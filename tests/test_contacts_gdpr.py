"""Contact lookup and detail, GDPR export and erasure (A9, L6, L7) through the domain and the
CLI: the export holds everything, erasure leaves no personal value in any table, keeps the
suppression and the anonymous counts, and a re-import of the address stays suppressed."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy import MetaData, select

from campaigns.models import Campaign, DiscountCode, Message
from lists.consent import Provenance, subscribe, unsubscribe
from lists.contacts import find_contact
from lists.errors import InvalidInputError, NotFoundError
from lists.gdpr import erase_contact, scrub_address
from lists.imports.contacts import import_contacts
from lists.imports.orders import import_orders
from lists.mailing_lists import create_list
from lists.models import ConsentEvent, Contact, Event, Order, Suppression
from lists.retention import retention_report
from lists.suppressions import address_hmac, is_suppressed

from .conftest import NOW, TEST_SECRET

KEY = TEST_SECRET.encode()
DAY = timedelta(days=1)
EMAIL = "zoe.muller@example.com"
IP, UA = "203.0.113.77", "Mozilla/5.0 (PatronTestBrowser 9.1)"
PERSONAL = (EMAIL, "Zoë", "Müller", "cust-4711", IP, UA, "Esch-sur-Alzette")


@pytest.fixture
def zoe(ctx):
    """A contact with everything: profile, two lists, ledger with IP and UA, orders, events;
    and a bystander who must come through any erasure untouched."""
    with ctx.session() as s:
        news = create_list(s, "news", NOW)
        vip = create_list(s, "vip", NOW, double_opt_in=False)
        c = Contact(email=EMAIL, first_name="Zoë", last_name="Müller", customer_id="cust-4711",
                    locale="fr-LU", timezone="Europe/Luxembourg",
                    attributes={"city": "Esch-sur-Alzette", "tags": "vip"},
                    orders_count=2, total_spent_cents=9000,
                    created_at=NOW - 300 * DAY, updated_at=NOW - DAY)
        other = Contact(email="bystander@example.com", first_name="Bo", created_at=NOW,
                        updated_at=NOW)
        s.add_all([c, other])
        s.flush()
        form = Provenance(source=f"https://shop.example/signup?email={EMAIL.replace('@', '%40')}",
                          ip=IP, user_agent=UA, consent_text_version="v3")
        subscribe(s, c.id, news, form, NOW - 200 * DAY)
        subscribe(s, c.id, news, Provenance(source="confirmation link", ip=IP, user_agent=UA),
                  NOW - 199 * DAY, confirmed=True)
        subscribe(s, c.id, vip, Provenance(source="api"), NOW - 100 * DAY)
        subscribe(s, other.id, news, Provenance(source="api", ip="198.51.100.1"), NOW)
        for i, (days, cents) in enumerate([(150, 4000), (20, 5000)]):
            s.add(Order(source="shop", order_id=f"o{i}", contact_id=c.id, total_cents=cents,
                        currency="EUR", ordered_at=NOW - days * DAY, created_at=NOW,
                        discount_code="WELCOME10" if i else None))
        s.add(Order(source="shop", order_id="o-other", contact_id=other.id, total_cents=1000,
                    currency="EUR", ordered_at=NOW - 5 * DAY, created_at=NOW))
        s.add_all([
            Event(contact_id=c.id, campaign_id=7, kind="sent", occurred_at=NOW - 10 * DAY),
            Event(contact_id=c.id, campaign_id=7, kind="open", ip=IP, user_agent=UA,
                  occurred_at=NOW - 9 * DAY),
            Event(contact_id=c.id, campaign_id=7, kind="click", ip=IP, user_agent=UA,
                  url=f"https://shop.example/p?utm_source=patron&who={EMAIL}",
                  occurred_at=NOW - 9 * DAY),
            Event(contact_id=other.id, campaign_id=7, kind="open", ip="198.51.100.1",
                  user_agent="Other UA", occurred_at=NOW - 9 * DAY),
        ])
        s.flush()
        return c.id


def all_rows(url):
    """Every row of every table in the database (including tables other modules add)."""
    from patron.db import make_engine

    engine = make_engine(url)
    meta = MetaData()
    meta.reflect(engine)
    try:
        with engine.connect() as conn:
            return {t.name: [tuple(r) for r in conn.execute(select(t))] for t in meta.sorted_tables}
    finally:
        engine.dispose()


def holding(rows, needle):
    low = needle.lower()
    return [(table, row) for table, table_rows in rows.items() for row in table_rows
            if any(low in str(v).lower() for v in row)]


# -- lookup and show ---------------------------------------------------------------------------

def test_find_contact_normalizes_and_names_the_unknown(ctx, zoe):
    with ctx.session() as s:
        assert find_contact(s, "  zoe.muller@EXAMPLE.com ").id == zoe
        assert find_contact(s, "Zoe.Muller@example.com").id == zoe  # one case-insensitive match
        with pytest.raises(NotFoundError, match=r"no contact with address 'nobody@example\.com'"):
            find_contact(s, "nobody@Example.com")
        with pytest.raises(InvalidInputError):
            find_contact(s, "not an address")


def test_show_json_and_human(cli, zoe):
    r = cli("contacts", "show", EMAIL, "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["profile"]["first_name"] == "Zoë" and doc["profile"]["locale"] == "fr-LU"
    assert doc["flags"] == {"is_role": False, "is_disposable": False, "suppressed": None}
    assert doc["aggregates"]["orders_count"] == 2
    assert [(x["list"], x["status"]) for x in doc["subscriptions"]] == [
        ("news", "confirmed"), ("vip", "confirmed")]
    assert [x["action"] for x in doc["consent_ledger"]] == [
        "granted", "confirmed", "granted", "confirmed"]
    assert [o["order_id"] for o in doc["orders"]] == ["o1", "o0"]  # newest first
    assert [e["kind"] for e in doc["events"]] == ["click", "open", "sent"]  # newest, then last

    human = cli("contacts", "show", EMAIL)
    assert human.code == 0, human.err
    assert "Zoë Müller <zoe.muller@example.com>" in human.out
    assert "attr.city: Esch-sur-Alzette" in human.out
    assert "WELCOME10" in human.out and "50.00 EUR" in human.out


def test_show_unknown_is_one_line(cli, zoe):
    r = cli("contacts", "show", "nobody@example.com")
    assert (r.code, r.out) == (1, "")
    assert r.err == "patron: error: no contact with address 'nobody@example.com'\n"


# -- export ------------------------------------------------------------------------------------

def test_export_contains_everything(cli, zoe):
    r = cli("contacts", "export", EMAIL)
    assert r.code == 0, r.err
    doc = json.loads(r.out)  # exactly one JSON document
    assert doc["format"] == "patron.contact-export" and doc["version"] == 1
    assert doc["profile"]["email"] == EMAIL and doc["profile"]["last_name"] == "Müller"
    assert doc["profile"]["attributes"] == {"city": "Esch-sur-Alzette", "tags": "vip"}
    assert {x["list"] for x in doc["subscriptions"]} == {"news", "vip"}
    ledger = doc["consent_ledger"]
    assert len(ledger) == 4
    assert ledger[0]["ip"] == IP and ledger[0]["user_agent"] == UA
    assert ledger[0]["consent_text_version"] == "v3"
    assert {o["order_id"] for o in doc["orders"]} == {"o0", "o1"}
    assert len(doc["events"]) == 3 and {e["kind"] for e in doc["events"]} == {"sent", "open",
                                                                               "click"}
    # nothing of the bystander
    assert "bystander" not in r.out and "198.51.100.1" not in r.out
    # every datetime is ISO 8601 in UTC
    stamps = [doc["exported_at"], doc["profile"]["created_at"], ledger[0]["occurred_at"],
              doc["orders"][0]["ordered_at"], doc["events"][0]["occurred_at"]]
    for stamp in stamps:
        assert datetime.fromisoformat(stamp).utcoffset() == timedelta(0), stamp


def test_export_unknown_is_one_line(cli):
    r = cli("contacts", "export", "nobody@example.com")
    assert r.code == 1 and r.out == "" and len(r.err.splitlines()) == 1


# -- erasure -----------------------------------------------------------------------------------

def test_erase_removes_personal_data_and_keeps_counts(cli, ctx, db_url, zoe):
    with ctx.session() as s:
        before = retention_report(s, NOW - 200 * DAY, NOW).current
    rows_before = all_rows(db_url)
    for value in PERSONAL:
        assert holding(rows_before, value), value  # the test data does hold each value

    r = cli("contacts", "erase", EMAIL, "--yes", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out) == {
        "erased": True, "subscriptions_deleted": 2, "ledger_rows_anonymized": 4,
        "orders_detached": 2, "events_detached": 3, "suppression_reason": "erased",
        "newly_suppressed": True,
    }

    rows = all_rows(db_url)
    for value in PERSONAL:
        assert holding(rows, value) == [], value
    # anonymous counts stay: ledger rows, orders and events are all still there
    for table in ("consent_ledger", "orders", "events"):
        assert len(rows[table]) == len(rows_before[table]), table
    with ctx.session() as s:
        detached = s.execute(select(ConsentEvent).where(ConsentEvent.contact_id.is_(None))).scalars().all()
        assert [e.action for e in detached] == ["granted", "confirmed", "granted", "confirmed"]
        assert detached[0].source == "https://shop.example/signup?email=[erased]"
        assert s.execute(select(Order).where(Order.contact_id.is_(None))).scalars().all()
        assert is_suppressed(s, KEY, EMAIL) == "erased"
        # the bystander is untouched
        other = find_contact(s, "bystander@example.com")
        assert s.execute(select(Event).where(Event.contact_id == other.id)).scalar_one().ip == \
            "198.51.100.1"
        after = retention_report(s, NOW - 200 * DAY, NOW).current
    assert (after["orders"], after["revenue"], after["average_order_value"]) == (
        before["orders"], before["revenue"], before["average_order_value"])
    assert after["customers"] == before["customers"] - 1

    again = cli("contacts", "erase", EMAIL, "--yes")
    assert again.code == 1 and "no contact with address" in again.err


def test_erase_keeps_an_earlier_suppression_reason(ctx, zoe):
    with ctx.session() as s:
        contact = s.get(Contact, zoe)
        unsubscribe(s, KEY, contact, Provenance(source="one-click"), NOW)
        result = erase_contact(s, KEY, contact, NOW + DAY)
        assert (result.newly_suppressed, result.suppression_reason) == (False, "unsubscribed_all")
        row = s.get(Suppression, address_hmac(KEY, EMAIL))
        assert (row.reason, row.created_at) == ("unsubscribed_all", NOW)


def test_reimport_after_erasure_stays_suppressed(cli, ctx, db_url, zoe, tmp_path):
    assert cli("contacts", "erase", EMAIL, "--yes").code == 0
    contacts_csv = tmp_path / "contacts.csv"
    contacts_csv.write_text("email,first_name\nZoe.Muller@EXAMPLE.com,Zoë\nnew@example.com,New\n",
                            encoding="utf-8")
    orders_csv = tmp_path / "orders.csv"
    orders_csv.write_text(f"order_id,email,total,currency,ordered_at\n"
                          f"o9,{EMAIL},12.00,EUR,2026-06-01T10:00:00Z\n", encoding="utf-8")
    engine = ctx.engine()
    summary = import_contacts(engine, KEY, contacts_csv, list_name="news",
                              consent_source="re-import test", now=NOW, confirmed=True)
    assert (summary.imported, summary.rejected) == (1, 1)
    assert dict(summary.rejected_by_reason) == {"suppressed": 1}
    import_orders(engine, orders_csv, now=NOW, key=KEY)
    with ctx.session() as s:
        emails = set(s.execute(select(Contact.email)).scalars())
    assert emails == {"bystander@example.com", "new@example.com"}
    assert holding(all_rows(db_url), "zoe.muller") == []


def test_erase_without_yes_and_without_a_tty_refuses(cli, ctx, zoe):
    r = cli("contacts", "erase", EMAIL)
    assert r.code == 1
    assert r.err == "patron: error: erasure cannot be undone: pass --yes to confirm it\n"
    with ctx.session() as s:
        assert s.get(Contact, zoe) is not None


@pytest.mark.parametrize(("answer", "erased"), [("n", False), ("y", True)])
def test_erase_asks_on_a_tty(db_url, ctx, zoe, answer, erased):
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "patron", "contacts", "erase", EMAIL, "--db", db_url],
        stdin=secondary, stdout=secondary, stderr=secondary, env=os.environ.copy(),
    )
    os.close(secondary)
    seen = b""
    deadline = time.monotonic() + 30
    while b"[y/N]" not in seen and time.monotonic() < deadline:
        seen += os.read(primary, 1024)
    assert b"Erase zoe.muller@example.com" in seen
    os.write(primary, f"{answer}\n".encode())
    proc.wait(timeout=30)
    os.close(primary)
    assert (proc.returncode == 0) is erased
    with ctx.session() as s:
        assert (s.get(Contact, zoe) is None) is erased


@pytest.fixture
def zoe_mailed(ctx, zoe):
    """Zoë also in the campaigns' send log: a message whose reply quotes her, a discount code."""
    with ctx.session() as s:
        campaign = Campaign(name="Summer", slug="summer", kind="discount", template="t",
                            template_source="<mjml></mjml>", subject="Hi", created_at=NOW,
                            updated_at=NOW)
        s.add(campaign)
        s.flush()
        s.add(Message(campaign_id=campaign.id, contact_id=zoe, state="failed", failure="hard",
                      last_reply=f"550 5.1.1 <{EMAIL}>: Recipient address rejected",
                      discount_code="SUMMER-7Q2X", created_at=NOW, updated_at=NOW))
        s.add(DiscountCode(campaign_id=campaign.id, code="SUMMER-7Q2X", contact_id=zoe,
                           assigned_at=NOW))
    return zoe


def test_export_and_erasure_cover_the_send_log(cli, ctx, db_url, zoe_mailed):
    doc = json.loads(cli("contacts", "export", EMAIL).out)
    assert [(m["state"], m["discount_code"]) for m in doc["messages"]] == [("failed", "SUMMER-7Q2X")]
    assert EMAIL in doc["messages"][0]["last_reply"]
    assert [d["code"] for d in doc["discount_codes"]] == ["SUMMER-7Q2X"]

    assert cli("contacts", "erase", EMAIL, "--yes").code == 0
    rows = all_rows(db_url)
    assert holding(rows, EMAIL) == []
    with ctx.session() as s:
        message = s.execute(select(Message)).scalar_one()
        assert message.contact_id is None
        assert message.last_reply == "550 5.1.1 <[erased]>: Recipient address rejected"
        assert s.execute(select(DiscountCode)).scalar_one().contact_id is None


def test_scrub_address_finds_every_spelling():
    text = "a=Zoe.Muller%40Example.com&b=zoe.muller@example.com&c=zoe.muller%40example.com"
    assert scrub_address(text, EMAIL) == "a=[erased]&b=[erased]&c=[erased]"
    assert scrub_address("https://shop.example/form", EMAIL) == "https://shop.example/form"

"""`patron unsubscribe` (L2): from one list or from all (which suppresses), idempotent, with the
ledger recording each withdrawal; an address without a contact can still be suppressed."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from lists.consent import Provenance, subscribe
from lists.errors import NotFoundError
from lists.mailing_lists import create_list
from lists.models import ConsentEvent, Contact, Subscription
from lists.opt_out import opt_out
from lists.suppressions import is_suppressed

from .conftest import NOW, TEST_SECRET

KEY = TEST_SECRET.encode()
CLI = Provenance(source="cli")


@pytest.fixture
def ana(ctx):
    """ana@shop.example, confirmed on `news` (double opt-in) and `vip` (single opt-in)."""
    with ctx.session() as s:
        news = create_list(s, "news", NOW)
        vip = create_list(s, "vip", NOW, double_opt_in=False)
        c = Contact(email="ana@shop.example", created_at=NOW, updated_at=NOW)
        s.add(c)
        s.flush()
        subscribe(s, c.id, news, Provenance(source="form"), NOW, confirmed=True)
        subscribe(s, c.id, vip, Provenance(source="form"), NOW)
        return c.id


def statuses(ctx, contact_id):
    with ctx.session() as s:
        rows = s.execute(select(Subscription.list_id, Subscription.status)
                         .where(Subscription.contact_id == contact_id)).all()
        names = {1: "news", 2: "vip"}
        return {names[lid]: status for lid, status in rows}


def withdrawals(ctx, contact_id):
    with ctx.session() as s:
        rows = s.execute(select(ConsentEvent).where(ConsentEvent.contact_id == contact_id,
                                                    ConsentEvent.action == "withdrawn")
                         .order_by(ConsentEvent.id)).scalars()
        return [(r.list_id, r.source) for r in rows]


def test_unsubscribe_from_one_list(cli, ctx, ana):
    r = cli("unsubscribe", "ana@shop.example", "--list", "vip")
    assert r.code == 0, r.err
    assert r.out.strip() == "unsubscribed ana@shop.example from 'vip'"
    assert statuses(ctx, ana) == {"news": "confirmed", "vip": "unsubscribed"}
    assert withdrawals(ctx, ana) == [(2, "cli")]
    with ctx.session() as s:
        assert is_suppressed(s, KEY, "ana@shop.example") is None

    again = cli("unsubscribe", "ana@shop.example", "--list", "vip", "--json")
    assert again.code == 0
    assert json.loads(again.out)["unsubscribed_from"] == []
    assert withdrawals(ctx, ana) == [(2, "cli")]


def test_unsubscribe_from_all_suppresses(cli, ctx, ana):
    r = cli("unsubscribe", "ANA@Shop.Example", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    # found whatever the case of the local part, and reported under its stored address
    assert doc == {"email": "ana@shop.example", "list": None, "contact_found": True,
                   "unsubscribed_from": ["news", "vip"], "suppressed": "unsubscribed_all",
                   "newly_suppressed": True}
    assert statuses(ctx, ana) == {"news": "unsubscribed", "vip": "unsubscribed"}
    # one withdrawal per list, and one for "all lists" that goes with the suppression
    assert withdrawals(ctx, ana) == [(1, "cli"), (2, "cli"), (None, "cli")]
    with ctx.session() as s:
        assert is_suppressed(s, KEY, "ana@shop.example") == "unsubscribed_all"

    again = cli("unsubscribe", "ana@shop.example")
    assert again.code == 0
    assert "already suppressed (unsubscribed_all)" in again.out
    assert len(withdrawals(ctx, ana)) == 3


def test_unsubscribe_all_after_one_list(cli, ctx, ana):
    assert cli("unsubscribe", "ana@shop.example", "--list", "news").code == 0
    r = cli("unsubscribe", "ana@shop.example")
    assert r.out.strip() == ("unsubscribed ana@shop.example from 'vip'; "
                             "address suppressed (unsubscribed_all)")
    assert withdrawals(ctx, ana) == [(1, "cli"), (2, "cli"), (None, "cli")]


def test_address_without_contact_is_suppressed(cli, ctx):
    r = cli("unsubscribe", "Stranger@Elsewhere.Example")
    assert r.code == 0, r.err
    assert "no contact with address 'Stranger@elsewhere.example'" in r.out
    assert "suppressed it" in r.out
    with ctx.session() as s:
        assert is_suppressed(s, KEY, "stranger@elsewhere.example") == "unsubscribed_all"
        assert s.execute(select(Contact)).first() is None
    again = cli("unsubscribe", "stranger@elsewhere.example", "--json")
    assert json.loads(again.out)["newly_suppressed"] is False


def test_not_subscribed_to_the_named_list(cli, ctx):
    with ctx.session() as s:
        create_list(s, "news", NOW)
        s.add(Contact(email="bo@shop.example", created_at=NOW, updated_at=NOW))
    r = cli("unsubscribe", "bo@shop.example", "--list", "news")
    assert r.code == 0
    assert r.out.strip() == "bo@shop.example is not subscribed to 'news'; nothing changed"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("ana@shop.example", "--list", "nope"),
         "patron: error: no list named 'nope' (see `patron lists ls`)\n"),
        (("nobody@shop.example", "--list", "news"),
         "patron: error: no contact with address 'nobody@shop.example'\n"),
    ],
)
def test_unknown_list_or_contact_is_one_line(cli, ana, args, error):
    r = cli("unsubscribe", *args)
    assert (r.code, r.err, r.out) == (1, error, "")


def test_invalid_address_is_one_line(cli):
    r = cli("unsubscribe", "not-an-address")
    assert r.code == 1
    assert r.err.startswith("patron: error: invalid address 'not-an-address'")
    assert len(r.err.splitlines()) == 1


def test_opt_out_domain_function(ctx, ana):
    with ctx.session() as s:
        first = opt_out(s, KEY, "ana@shop.example", CLI, NOW, list_name="news")
        second = opt_out(s, KEY, "ana@shop.example", CLI, NOW, list_name="news")
        with pytest.raises(NotFoundError):
            opt_out(s, KEY, "nobody@shop.example", CLI, NOW, list_name="news")
    assert first.unsubscribed_from == ("news",) and first.was_subscribed
    assert second.unsubscribed_from == () and second.was_subscribed
    assert first.suppression_reason is None and not first.newly_suppressed

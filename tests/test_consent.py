"""Subscription transitions, the consent ledger and confirmation tokens (A2, A3, A4)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from lists.consent import (
    Provenance,
    check_transition,
    confirm,
    confirm_token,
    subscribe,
    unsubscribe,
)
from lists.errors import ConflictError, InvalidInputError
from lists.mailing_lists import create_list
from lists.models import ConsentEvent, Contact, Subscription, SubscriptionStatus
from lists.suppressions import address_hmac, is_suppressed

from .conftest import NOW

KEY = b"k" * 32
S = SubscriptionStatus


def _contact(session, email="ana@shop.example"):
    c = Contact(email=email, created_at=NOW, updated_at=NOW)
    session.add(c)
    session.flush()
    return c


def _ledger(session, contact_id):
    rows = session.execute(
        select(ConsentEvent).where(ConsentEvent.contact_id == contact_id).order_by(ConsentEvent.id)
    ).scalars()
    return [(r.action, r.list_id, r.source) for r in rows]


def test_double_opt_in_goes_pending_then_confirmed(ctx):
    with ctx.session() as s:
        news = create_list(s, "news", NOW)
        c = _contact(s)
        form = Provenance(source="https://shop.example/signup", ip="203.0.113.9", user_agent="UA")
        assert subscribe(s, c.id, news, form, NOW) is S.PENDING
        token = confirm_token(KEY, c.id, news.id)
        assert confirm(s, KEY, token, Provenance(source="confirmation link"), NOW) is True
        assert confirm(s, KEY, token, Provenance(source="confirmation link"), NOW) is False
        sub = s.get(Subscription, (c.id, news.id))
        assert sub.status == S.CONFIRMED and sub.confirmed_at == NOW
        assert _ledger(s, c.id) == [
            ("granted", news.id, "https://shop.example/signup"),
            ("confirmed", news.id, "confirmation link"),
        ]
        first = s.execute(select(ConsentEvent).where(ConsentEvent.contact_id == c.id)).scalars().first()
        assert (first.ip, first.user_agent) == ("203.0.113.9", "UA")


def test_single_opt_in_and_attested_consent_are_confirmed(ctx):
    with ctx.session() as s:
        vip = create_list(s, "vip", NOW, double_opt_in=False)
        news = create_list(s, "news", NOW)
        a, b = _contact(s, "a@shop.example"), _contact(s, "b@shop.example")
        assert subscribe(s, a.id, vip, Provenance(source="api"), NOW) is S.CONFIRMED
        assert subscribe(s, b.id, news, Provenance(source="crm export"), NOW, confirmed=True) is S.CONFIRMED
        assert [x[0] for x in _ledger(s, b.id)] == ["granted", "confirmed"]


def test_forged_or_malformed_token_confirms_nothing(ctx):
    with ctx.session() as s:
        news = create_list(s, "news", NOW)
        c = _contact(s)
        subscribe(s, c.id, news, Provenance(source="form"), NOW)
        good = confirm_token(KEY, c.id, news.id)
        for bad in (good[:-2] + "xx", f"{c.id + 1}.{news.id}.{good.split('.')[2]}", "garbage", ""):
            with pytest.raises(InvalidInputError):
                confirm(s, KEY, bad, Provenance(source="link"), NOW)
        assert s.get(Subscription, (c.id, news.id)).status == S.PENDING


def test_unsubscribe_all_suppresses_and_is_idempotent(ctx):
    with ctx.session() as s:
        news = create_list(s, "news", NOW, double_opt_in=False)
        vip = create_list(s, "vip", NOW, double_opt_in=False)
        c = _contact(s, "Bob@Shop.example")
        for lst in (news, vip):
            subscribe(s, c.id, lst, Provenance(source="api"), NOW)
        assert unsubscribe(s, KEY, c, Provenance(source="cli"), NOW) == 2
        assert unsubscribe(s, KEY, c, Provenance(source="cli"), NOW) == 0
        assert is_suppressed(s, KEY, "bob@shop.example") == "unsubscribed_all"
        statuses = {sub.status for sub in s.execute(select(Subscription)).scalars()}
        assert statuses == {S.UNSUBSCRIBED}
        withdrawn = [x for x in _ledger(s, c.id) if x[0] == "withdrawn"]
        assert len(withdrawn) == 3  # one per list and one for "all"
        assert address_hmac(KEY, "BOB@shop.example") == address_hmac(KEY, "bob@shop.example")


def test_confirming_an_unsubscribed_contact_is_refused(ctx):
    with ctx.session() as s:
        news = create_list(s, "news", NOW)
        c = _contact(s)
        subscribe(s, c.id, news, Provenance(source="form"), NOW)
        unsubscribe(s, KEY, c, Provenance(source="cli"), NOW, mailing_list=news)
        with pytest.raises(ConflictError):
            confirm(s, KEY, confirm_token(KEY, c.id, news.id), Provenance(source="link"), NOW)
        assert s.get(Subscription, (c.id, news.id)).status == S.UNSUBSCRIBED


def test_transition_table():
    check_transition(None, S.PENDING)
    check_transition(S.PENDING, S.CONFIRMED)
    with pytest.raises(ConflictError):
        check_transition(S.CONFIRMED, S.PENDING)
    with pytest.raises(ConflictError):
        check_transition(None, S.UNSUBSCRIBED)

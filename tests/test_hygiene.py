"""List hygiene (A10): the sunset query on a hand-built dataset, and the address exclusions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from lists.hygiene import (
    HygienePolicy,
    address_excluded,
    excluded_from_marketing,
    marketable,
    sunset_contact_ids,
)
from lists.models import Contact, Event, Order

from .conftest import NOW

DAY = timedelta(days=1)


def contact(s, name, **flags):
    c = Contact(email=f"{name}@shop.example", created_at=NOW - 400 * DAY, updated_at=NOW, **flags)
    s.add(c)
    s.flush()
    return c


def sent(s, c, count, *, days_ago=1, campaign0=1):
    for i in range(count):
        s.add(Event(contact_id=c.id, campaign_id=campaign0 + i, kind="sent",
                    occurred_at=NOW - (days_ago + i) * DAY))


def event(s, c, kind, classification="human", days_ago=3):
    s.add(Event(contact_id=c.id, campaign_id=1, kind=kind, classification=classification,
                occurred_at=NOW - days_ago * DAY))


def order(s, c, days_ago):
    s.add(Order(source="t", order_id=f"{c.id}-{days_ago}", contact_id=c.id, total_cents=1000,
                currency="EUR", ordered_at=NOW - days_ago * DAY, created_at=NOW))


@pytest.fixture
def dataset(ctx):
    with ctx.session() as s:
        people = {}
        people["ignores"] = c = contact(s, "ignores")
        sent(s, c, 10)
        people["opened"] = c = contact(s, "opened")
        sent(s, c, 12)
        event(s, c, "open")
        people["machine_only"] = c = contact(s, "machine")
        sent(s, c, 10)
        event(s, c, "open", "apple_mpp")
        event(s, c, "open", "proxy")
        event(s, c, "click", "bot")
        people["clicked"] = c = contact(s, "clicked")
        sent(s, c, 10)
        event(s, c, "click")
        people["bought"] = c = contact(s, "bought")
        sent(s, c, 10)
        order(s, c, 100)
        people["nine_recent"] = c = contact(s, "nine")
        sent(s, c, 9)
        sent(s, c, 5, days_ago=200, campaign0=50)
        people["engaged_long_ago"] = c = contact(s, "longago")
        sent(s, c, 10)
        event(s, c, "open", days_ago=200)
        order(s, c, 300)
        people["never_mailed"] = contact(s, "never")
        s.flush()
        return {name: c.id for name, c in people.items()}


def test_sunset_default_policy(ctx, dataset):
    with ctx.session() as s:
        ids = set(s.execute(sunset_contact_ids(NOW)).scalars())
    assert ids == {dataset["ignores"], dataset["machine_only"], dataset["engaged_long_ago"]}


def test_sunset_policy_is_configurable(ctx, dataset):
    with ctx.session() as s:
        # 9 mails in 180 days is enough at N = 9; within 5 days everyone got only 5 mails
        nine = set(s.execute(sunset_contact_ids(NOW, campaigns=9)).scalars())
        short = set(s.execute(sunset_contact_ids(NOW, campaigns=5, days=5)).scalars())
    assert dataset["nine_recent"] in nine
    assert dataset["ignores"] in nine
    # within 5 days: 5 mails each; the click and the open 3 days ago still count as engagement
    assert short == {dataset["ignores"], dataset["machine_only"], dataset["bought"],
                     dataset["nine_recent"], dataset["engaged_long_ago"]}


def test_sunset_looks_at_the_window_before_now(ctx, dataset):
    # A year later nothing is recent: nobody received 10 mails in the last 180 days.
    with ctx.session() as s:
        assert list(s.execute(sunset_contact_ids(NOW + 365 * DAY))) == []


def test_sunset_rejects_a_meaningless_policy():
    with pytest.raises(ValueError, match="at least one"):
        sunset_contact_ids(NOW, campaigns=0)


def test_address_exclusions_follow_the_policy(ctx):
    with ctx.session() as s:
        person = contact(s, "ana").id
        role = contact(s, "info", is_role=True).id
        throwaway = contact(s, "tmp", is_disposable=True).id

        def ids(predicate):
            return set(s.execute(select(Contact.id).where(predicate)).scalars())

        assert ids(address_excluded()) == {role, throwaway}
        assert ids(address_excluded(HygienePolicy(exclude_role_addresses=False))) == {throwaway}
        assert ids(address_excluded(HygienePolicy(exclude_disposable_domains=False))) == {role}
        off = HygienePolicy(exclude_role_addresses=False, exclude_disposable_domains=False)
        assert ids(address_excluded(off)) == set()
        assert ids(marketable(NOW)) == {person}


def test_excluded_from_marketing_combines_address_and_sunset(ctx, dataset):
    with ctx.session() as s:
        role = contact(s, "sales", is_role=True).id
        excluded = set(s.execute(select(Contact.id).where(excluded_from_marketing(NOW))).scalars())
        kept = set(s.execute(select(Contact.id).where(marketable(NOW))).scalars())
    assert excluded == {role, dataset["ignores"], dataset["machine_only"],
                        dataset["engaged_long_ago"]}
    assert kept.isdisjoint(excluded) and dataset["never_mailed"] in kept

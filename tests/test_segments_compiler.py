"""Compiled segments on SQLite and PostgreSQL: lifecycle stages and RFM groups against small
hand-computed shops, the documented edge cases of each condition, saved segments, and SQL that
carries every value as a bound parameter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, inspect, select
from sqlalchemy.dialects import postgresql, sqlite

from campaigns.models import Campaign
from lists.errors import ConflictError, InvalidInputError, NotFoundError
from lists.models import Contact, Event, MailingList, Subscription
from lists.segments import (
    SegmentSyntaxError,
    compile_rule,
    count_segment,
    create_segment,
    delete_segment,
    get_segment,
    list_segments,
    sample_segment,
    segment_contact_ids_query,
)

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def add(session, name, orders=(), *, attributes=None, created=NOW - 400 * DAY, opened=None):
    """A contact whose aggregates come from ``orders``: [(days ago, euros)]."""
    dates = [NOW - days * DAY for days, _ in orders]
    contact = Contact(
        email=f"{name}@example.com", first_name=name, attributes=attributes or {},
        orders_count=len(orders), total_spent_cents=sum(round(eur * 100) for _, eur in orders),
        first_order_at=min(dates, default=None), last_order_at=max(dates, default=None),
        last_opened_at=opened, created_at=created, updated_at=created,
    )
    session.add(contact)
    session.flush()
    return contact


def members(session, rule, now=NOW):
    ids = segment_contact_ids_query(rule, now)
    query = select(Contact.first_name).where(Contact.id.in_(ids)).order_by(Contact.first_name)
    return set(session.execute(query).scalars())


LIFECYCLE_SHOP = {
    "ann": [(10, 20)],                          # one recent order
    "bob": [(400, 20), (100, 20)],              # last order 100 days ago
    "cat": [(200, 5), (190, 5), (185, 5)],      # three orders, all over 180 days ago
    "dan": [],                                  # never ordered
    "eve": [(60, 1), (40, 1), (20, 1), (5, 1)],
    "fay": [(90, 10)],                          # exactly 90 days ago
    "gus": [(180, 10)],                         # exactly 180 days ago
    "hal": [(30, 10)],                          # first order exactly 30 days ago
}


@pytest.mark.parametrize(("stage", "expected"), [
    ("new", {"ann", "hal"}),
    ("active", {"ann", "eve", "fay", "hal"}),
    ("repeat", {"bob", "cat", "eve"}),
    ("loyal", {"cat", "eve"}),
    ("at_risk", {"bob", "gus"}),
    ("lapsed", {"cat"}),
    ("never_purchased", {"dan"}),
])
def test_lifecycle_stages(ctx, stage, expected):
    with ctx.session() as session:
        for name, orders in LIFECYCLE_SHOP.items():
            add(session, name, orders)
        assert members(session, f'lifecycle = "{stage}"') == expected


# Ten customers with totals 10, 20, 40, 50, 80, 100, 200, 300, 500, 600: the monetary cut
# points are the totals at ranks 10 // 3 = 3 and 20 // 3 = 6, that is 50 and 200.
RFM_SHOP = {
    "a": [(10, 100), (40, 100), (70, 100)],     # R3 F3 M3: champions
    "b": [(10, 20), (30, 20), (50, 10)],        # R3 F3 M2: loyal
    "c": [(20, 40), (100, 40)],                 # R3 F2 M2: potential
    "d": [(5, 20)],                             # R3 F1 M1: new customer
    "e": [(120, 50), (200, 50)],                # R2 F2 M2: at risk
    "f": [(120, 50), (130, 50), (140, 50), (150, 50)],  # R2 F3 M3: loyal
    "g": [(400, 100)] * 5,                      # R1 F3 M3: can't lose
    "h": [(400, 10)],                           # R1 F1 M1: lost
    "i": [(300, 20), (310, 20)],                # R1 F2 M1: hibernating
    "j": [(250, 600)],                          # R1 F1 M3: can't lose
    "k": [],                                    # no orders: no group
}


@pytest.mark.parametrize(("rule", "expected"), [
    ('rfm = "champions"', {"a"}),
    ('rfm = "loyal"', {"b", "f"}),
    ('rfm = "potential"', {"c"}),
    ('rfm = "new_customers"', {"d"}),
    ('rfm = "at_risk"', {"e"}),
    ('rfm = "cant_lose"', {"g", "j"}),
    ('rfm = "hibernating"', {"i"}),
    ('rfm = "lost"', {"h"}),
    ("monetary = 3", {"a", "f", "g", "j"}),
    ("monetary = 1", {"d", "h", "i"}),
    ("monetary != 2", {"a", "d", "f", "g", "h", "i", "j"}),
    ("recency = 2", {"e", "f"}),
    ("recency != 2", {"a", "b", "c", "d", "g", "h", "i", "j"}),
    ("frequency >= 2", {"a", "b", "c", "e", "f", "g", "i"}),
    ("recency >= 1", set("abcdefghij")),
    ("recency > 3", set()),
    ('not rfm in ["champions", "loyal"]', set("cdeghijk")),
])
def test_rfm_scores_and_groups(ctx, rule, expected):
    with ctx.session() as session:
        for name, orders in RFM_SHOP.items():
            add(session, name, orders)
        assert members(session, rule) == expected


def test_monetary_terciles_follow_the_shop(ctx):
    with ctx.session() as session:
        assert count_segment(session, "monetary >= 1", NOW) == 0
        add(session, "only", [(1, 5)])
        assert members(session, "monetary = 3") == {"only"}   # one customer: the top third
        add(session, "more", [(1, 50)])
        add(session, "most", [(1, 500)])
        assert members(session, "monetary = 1") == {"only"}
        assert members(session, "monetary = 2") == {"more"}
        assert members(session, "monetary = 3") == {"most"}


def test_purchase_figures(ctx):
    with ctx.session() as session:
        add(session, "none")
        add(session, "hundred", [(1, 100)])
        add(session, "cent_more", [(1, 100.01)])
        add(session, "thirds", [(1, 50), (2, 25), (3, 25)])   # 100 over 3 orders
        assert members(session, "total_spent > 100") == {"cent_more"}
        assert members(session, "total_spent >= 100") == {"hundred", "cent_more", "thirds"}
        assert members(session, "total_spent > 99.995") == {"hundred", "cent_more", "thirds"}
        assert members(session, "total_spent = 100.005") == set()
        assert members(session, "total_spent < 0.5") == {"none"}
        assert members(session, "orders = 0") == {"none"}
        assert members(session, "orders > 1.5") == {"thirds"}
        assert members(session, "orders != 1") == {"none", "thirds"}
        # The average order value is exact (33.333…) and does not exist without orders.
        assert members(session, "aov > 33.33") == {"hundred", "cent_more", "thirds"}
        assert members(session, "aov < 33.34") == {"thirds"}
        assert members(session, "aov = 33.33") == set()
        assert members(session, "aov = 100") == {"hundred"}
        assert members(session, "aov != 100") == {"cent_more", "thirds"}
        assert members(session, "aov >= 0") == {"hundred", "cent_more", "thirds"}
        assert members(session, "not aov >= 0") == {"none"}


def test_times_are_relative_to_the_given_now(ctx):
    with ctx.session() as session:
        add(session, "recent", [(10, 1)], created=NOW - 2 * DAY, opened=NOW - timedelta(hours=5))
        add(session, "old", [(200, 1), (100, 1)], created=NOW - 30 * DAY)
        add(session, "none")
        assert members(session, "last_order within 90d") == {"recent"}
        assert members(session, "last_order before 90d") == {"old"}
        assert members(session, "not last_order within 90d") == {"old", "none"}
        assert members(session, "first_order within 30d") == {"recent"}
        assert members(session, "first_order before 150d") == {"old"}
        assert members(session, "created within 1w") == {"recent"}
        assert members(session, "created within 30d") == {"recent", "old"}
        assert members(session, "opened within 6h") == {"recent"}
        assert members(session, "opened within 4h") == set()
        assert members(session, "last_order within 10d") == {"recent"}   # the boundary is in
        assert members(session, "last_order before 10d") == {"old"}
        later = NOW + 100 * DAY
        assert members(session, "last_order within 90d", later) == set()
        assert members(session, "last_order before 90d", later) == {"recent", "old"}


def test_naive_now_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        compile_rule("orders >= 1", datetime(2026, 1, 1))


def test_campaign_engagement_counts_human_opens_and_clicks(ctx):
    with ctx.session() as session:
        people = {name: add(session, name) for name in ("opener", "clicker", "machine", "other",
                                                        "sent")}

        def event(name, campaign, kind, cls="human"):
            session.add(Event(contact_id=people[name].id, campaign_id=campaign, kind=kind,
                              classification=cls, occurred_at=NOW))

        event("opener", 12, "open")
        event("clicker", 12, "click")
        event("machine", 12, "open", "apple_mpp")
        event("machine", 12, "click", "bot")
        event("other", 13, "open")
        event("sent", 12, "sent")
        event("opener", 12, "sent")
        session.flush()
        assert members(session, "opened campaign 12") == {"opener", "clicker"}
        assert members(session, "clicked campaign 12") == {"clicker"}
        assert members(session, "emailed campaign 12") == {"sent", "opener"}
        assert members(session, "opened campaign 13") == {"other"}
        assert members(session, "not opened campaign 12") == {"machine", "other", "sent"}


def test_list_membership_means_confirmed(ctx):
    with ctx.session() as session:
        news = MailingList(name="newsletter", created_at=NOW)
        vip = MailingList(name="vip", created_at=NOW)
        session.add_all([news, vip])
        session.flush()
        for name, lst, status in [("yes", news, "confirmed"), ("pending", news, "pending"),
                                  ("gone", news, "unsubscribed"), ("vip", vip, "confirmed")]:
            contact = add(session, name)
            session.add(Subscription(contact_id=contact.id, list_id=lst.id, status=status,
                                     created_at=NOW, updated_at=NOW))
        add(session, "nowhere")
        session.flush()
        assert members(session, 'list = "newsletter"') == {"yes"}
        assert members(session, 'list in ["newsletter", "vip"]') == {"yes", "vip"}
        assert members(session, 'list != "newsletter"') == {"pending", "gone", "vip", "nowhere"}
        with pytest.raises(NotFoundError, match="the rule names list 'newsleter', which does "
                                                "not exist"):
            count_segment(session, 'orders >= 0 or list = "newsleter"', NOW)


def test_attribute_tests(ctx):
    with ctx.session() as session:
        add(session, "lu", attributes={"country": "LU", "city": "Esch", "age": 41,
                                       "tags": ["vip", "b2b"], "birthday": "1985-02-01"})
        add(session, "de", attributes={"country": "DE", "city": "Trier", "age": "29",
                                       "tags": "newsletter,vip-ish", "birthday": None})
        add(session, "fr", attributes={"country": ["LU"], "age": "unknown", "tags": ["VIP"],
                                       "birthday": "", "address": {"city": "Diekirch"}})
        add(session, "bare")
        assert members(session, 'attr.country = "LU"') == {"lu"}
        assert members(session, 'attr.country != "LU"') == {"de"}
        assert members(session, 'not attr.country = "LU"') == {"de", "fr", "bare"}
        assert members(session, 'attr.city in ["Esch", "Diekirch"]') == {"lu"}
        assert members(session, 'attr.address.city in ["Esch", "Diekirch"]') == {"fr"}
        assert members(session, 'attr.tags contains "vip"') == {"lu", "de"}
        assert members(session, 'attr.tags contains "VIP"') == {"fr"}
        assert members(session, 'attr.country contains "LU"') == {"lu", "fr"}
        assert members(session, "attr.birthday exists") == {"lu"}
        assert members(session, "not attr.birthday exists") == {"de", "fr", "bare"}
        assert members(session, "attr.address exists") == {"fr"}
        # Numbers compare as numbers, whether stored as JSON numbers or as numeric text.
        assert members(session, "attr.age >= 30") == {"lu"}
        assert members(session, "attr.age < 30") == {"de"}
        assert members(session, "attr.age = 29") == {"de"}
        assert members(session, "attr.age in [41, 29.0]") == {"lu", "de"}
        assert members(session, "attr.age != 41") == {"de"}
        assert members(session, "not attr.age >= 30") == {"de", "fr", "bare"}
        assert members(session, 'attr.age = "29"') == {"de"}


def test_values_are_bound_parameters_never_sql_text(ctx):
    hostile = "x'); DROP TABLE contacts; --"
    rule = f'attr.country = "{hostile}" or list = "{hostile}" or attr."{hostile}" exists'
    query = segment_contact_ids_query(rule, NOW)
    for dialect in (sqlite.dialect(), postgresql.dialect()):
        assert "DROP" not in str(query.compile(dialect=dialect))
    with ctx.session() as session:
        session.add(MailingList(name=hostile, created_at=NOW))
        add(session, "inj", attributes={"country": hostile, hostile: 1})
        assert members(session, rule) == {"inj"}
        assert "contacts" in inspect(session.get_bind()).get_table_names()


def test_ids_query_works_as_a_subquery_of_a_contacts_query(ctx):
    with ctx.session() as session:
        add(session, "one", [(5, 1)])
        add(session, "two", [(5, 1), (6, 1)])
        inner = segment_contact_ids_query("orders >= 2", NOW)
        outer = select(func.count()).select_from(Contact).where(
            Contact.id.in_(inner), Contact.orders_count >= 1)
        assert session.execute(outer).scalar_one() == 1


def test_saved_segments_are_dynamic(ctx):
    with ctx.session() as session:
        add(session, "early", [(3, 10), (4, 10)])
        row = create_segment(session, "  repeaters ", "orders >= 2", NOW)
        assert (row.name, row.rule) == ("repeaters", "orders >= 2")
        assert count_segment(session, get_segment(session, "repeaters").rule, NOW) == 1
        add(session, "late", [(1, 10), (2, 10), (3, 10)])
        assert count_segment(session, get_segment(session, "repeaters").rule, NOW) == 2
        assert [c.first_name for c in sample_segment(session, "orders >= 2", NOW)] == [
            "early", "late"]
        assert [c.first_name for c in sample_segment(session, "orders >= 2", NOW, limit=1)] == [
            "early"]
        create_segment(session, "all", "orders >= 0", NOW)
        assert [s.name for s in list_segments(session)] == ["all", "repeaters"]
        delete_segment(session, "all")
        assert [s.name for s in list_segments(session)] == ["repeaters"]


def test_saved_segment_validation(ctx):
    with ctx.session() as session:
        create_segment(session, "a", "orders >= 1", NOW)
        with pytest.raises(ConflictError, match="segment 'a' already exists"):
            create_segment(session, "a", "orders >= 2", NOW)
        with pytest.raises(SegmentSyntaxError, match="at column 11: expected a number"):
            create_segment(session, "b", "orders >= x", NOW)
        with pytest.raises(NotFoundError, match="list 'news'"):
            create_segment(session, "c", 'list = "news"', NOW)
        with pytest.raises(InvalidInputError, match="needs a name"):
            create_segment(session, "  ", "orders >= 1", NOW)
        with pytest.raises(NotFoundError, match="no segment named 'zzz'"):
            get_segment(session, "zzz")
        with pytest.raises(NotFoundError, match="no segment named 'zzz'"):
            delete_segment(session, "zzz")
        assert [s.name for s in list_segments(session)] == ["a"]


def test_a_segment_a_campaign_uses_cannot_be_deleted(ctx):
    with ctx.session() as session:
        row = create_segment(session, "vip", "orders >= 3", NOW)
        session.add(Campaign(name="c", slug="c", kind="newsletter", template="t",
                             template_source="<mjml></mjml>", subject="s", segment_id=row.id,
                             created_at=NOW, updated_at=NOW))
        session.flush()
        with pytest.raises(ConflictError, match="segment 'vip' is still used by 1 row"):
            delete_segment(session, "vip")
        assert get_segment(session, "vip").id == row.id

"""Properties of segments, on SQLite and PostgreSQL:

- the contacts a compiled rule selects are exactly those a direct Python reading of the rule's
  documented meaning (docs/segments.md) selects, for random shops and random rules;
- canonical rule text parses back to the same tree;
- fuzzed text and mutated rules never raise anything but SegmentSyntaxError, and whatever
  parses also compiles and runs.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert
from sqlalchemy.orm import Session

from lists.models import Contact, Event, MailingList, Subscription
from lists.segments import SegmentSyntaxError, count_segment, parse_rule, to_text
from lists.segments.compiler import segment_contact_ids_query
from lists.segments.parser import (
    And,
    AttrCompare,
    AttrContains,
    AttrExists,
    AttrIn,
    CampaignCondition,
    MembershipCondition,
    Node,
    Not,
    NumberCondition,
    Op,
    Or,
    TimeCondition,
)
from patron.db import make_engine

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
LISTS = ("news", "vip")
MISSING = object()

# ---------------------------------------------------------------------------------------------
# The shop: contacts with orders, engagement, subscriptions, campaign events and attributes.


@dataclass
class Person:
    orders: list[tuple[datetime, int]] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = NOW
    opened: datetime | None = None
    clicked: datetime | None = None
    emailed: datetime | None = None
    lists: dict[str, str] = field(default_factory=dict)
    events: list[tuple[int, str, str]] = field(default_factory=list)


BOUNDARY_HOURS = [0, 1, 12, 24, 24 * 7, 24 * 14, 24 * 30, 24 * 90, 24 * 180, 24 * 365]
hours_ago = st.one_of(
    st.sampled_from(BOUNDARY_HOURS),
    st.sampled_from(BOUNDARY_HOURS).map(lambda h: h + 1),
    st.sampled_from(BOUNDARY_HOURS[1:]).map(lambda h: h - 1),
    st.integers(-48, 24 * 400),
)
instants = hours_ago.map(lambda h: NOW - timedelta(hours=h))
CENTS = [0, 1, 500, 999, 1000, 1001, 2550, 3333, 5000, 10000, 12345]
TEXTS = ["LU", "DE", "", "Esch", "Diekirch", "vip", "a-vip-b", "VIP", "[1]", '{"a": 1}', "30",
         "30.5", "007", "-1", "-0", "1.50", "1e3", " 30", "30 ", "abc", "30.", ".5", "1.2.3", "-",
         "--1", "3-1", "+1", '["vip"]', "[3]", '{"city":"LU"}', "é", "0x10"]
json_scalars = st.one_of(
    st.none(), st.booleans(), st.sampled_from(TEXTS), st.integers(-50, 50),
    st.integers(-5000, 5000).map(lambda x: x / 100),
)
json_values = st.one_of(
    json_scalars,
    st.lists(st.one_of(st.sampled_from(["vip", "LU", "a", "30"]), st.integers(0, 3),
                       st.just(["vip"]), st.none()), max_size=3),
    st.dictionaries(st.sampled_from(["city", "vip"]), json_scalars, max_size=2),
)
KEYS = ["country", "age", "tags", "a b", "address", "é"]
people = st.builds(
    Person,
    orders=st.lists(st.tuples(instants, st.sampled_from(CENTS)), max_size=4),
    attributes=st.dictionaries(st.sampled_from(KEYS), json_values, max_size=4),
    created_at=instants,
    opened=st.none() | instants,
    clicked=st.none() | instants,
    emailed=st.none() | instants,
    lists=st.dictionaries(st.sampled_from(LISTS),
                          st.sampled_from(["pending", "confirmed", "unsubscribed"]), max_size=2),
    events=st.lists(st.tuples(st.integers(1, 3),
                              st.sampled_from(["sent", "open", "click", "bounce"]),
                              st.sampled_from(["human", "apple_mpp", "bot"])), max_size=3),
)
shops = st.lists(people, max_size=14)


def random_shop(seed: int, size: int) -> list[Person]:
    """A larger shop for the many-rules test, drawn with the stdlib generator."""
    rng = random.Random(seed)

    def instant() -> datetime:
        hours = rng.choice(BOUNDARY_HOURS) + rng.choice([-1, 0, 0, 1]) if rng.random() < 0.4 \
            else rng.randint(-48, 24 * 400)
        return NOW - timedelta(hours=max(hours, -48))

    def value(depth: int = 0) -> Any:
        roll = rng.random()
        if roll < 0.35:
            return rng.choice(TEXTS)
        if roll < 0.55:
            return rng.randint(-50, 50)
        if roll < 0.65:
            return rng.randint(-5000, 5000) / 100
        if roll < 0.7:
            return rng.choice([None, True, False])
        if depth == 0 and roll < 0.85:
            return [rng.choice(["vip", "LU", "a", 3, ["vip"]]) for _ in range(rng.randint(0, 3))]
        if depth == 0:
            return {"city": value(1)}
        return rng.choice(TEXTS)

    shop = []
    for _ in range(size):
        shop.append(Person(
            orders=[(instant(), rng.choice(CENTS)) for _ in range(rng.choice([0, 0, 1, 1, 2, 3, 4]))],
            attributes={k: value() for k in rng.sample(KEYS, rng.randint(0, 4))},
            created_at=instant(),
            opened=instant() if rng.random() < 0.6 else None,
            clicked=instant() if rng.random() < 0.4 else None,
            emailed=instant() if rng.random() < 0.7 else None,
            lists={name: rng.choice(["pending", "confirmed", "unsubscribed"])
                   for name in LISTS if rng.random() < 0.6},
            events=[(rng.randint(1, 3), rng.choice(["sent", "open", "click", "bounce"]),
                     rng.choice(["human", "apple_mpp", "bot"])) for _ in range(rng.randint(0, 3))],
        ))
    return shop


def store(session: Session, shop: list[Person]) -> list[int]:
    """Write the shop; the aggregates on each contact are derived from its orders."""
    list_ids = {}
    for name in LISTS:
        row = MailingList(name=name, created_at=NOW)
        session.add(row)
        session.flush()
        list_ids[name] = row.id
    ids = []
    for i, p in enumerate(shop):
        dates = [at for at, _ in p.orders]
        contact = Contact(
            email=f"p{i}@example.com", attributes=p.attributes, orders_count=len(p.orders),
            total_spent_cents=sum(c for _, c in p.orders), first_order_at=min(dates, default=None),
            last_order_at=max(dates, default=None), last_opened_at=p.opened,
            last_clicked_at=p.clicked, last_emailed_at=p.emailed, created_at=p.created_at,
            updated_at=p.created_at,
        )
        session.add(contact)
        session.flush()
        ids.append(contact.id)
        for name, status in p.lists.items():
            session.execute(insert(Subscription).values(
                contact_id=contact.id, list_id=list_ids[name], status=status, created_at=NOW,
                updated_at=NOW))
        for campaign, kind, cls in p.events:
            session.execute(insert(Event).values(
                contact_id=contact.id, campaign_id=campaign, kind=kind, classification=cls,
                occurred_at=NOW))
    session.flush()
    return ids


# ---------------------------------------------------------------------------------------------
# The reference: the rule's meaning read directly off docs/segments.md, one contact at a time.

NUMERIC_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def cmp(left: Any, op: Op, right: Any) -> bool:
    return {Op.EQ: left == right, Op.NE: left != right, Op.LT: left < right,
            Op.LE: left <= right, Op.GT: left > right, Op.GE: left >= right}[op]


def last_order(p: Person) -> datetime | None:
    return max((at for at, _ in p.orders), default=None)


def scores(p: Person, shop: list[Person]) -> tuple[int, int, int] | None:
    if not p.orders:
        return None
    age = NOW - last_order(p)
    r = 3 if age <= timedelta(days=90) else 2 if age <= timedelta(days=180) else 1
    f = min(len(p.orders), 3)
    totals = sorted(sum(c for _, c in q.orders) for q in shop if q.orders)
    low, high = totals[len(totals) // 3], totals[2 * len(totals) // 3]
    spent = sum(c for _, c in p.orders)
    m = 1 if spent < low else 2 if spent < high else 3
    return r, f, m


RFM = {
    "champions": lambda r, f, m: r == 3 and f == 3 and m == 3,
    "loyal": lambda r, f, m: f == 3 and r >= 2 and not (r == 3 and m == 3),
    "potential": lambda r, f, m: r == 3 and f == 2,
    "new_customers": lambda r, f, m: r == 3 and f == 1,
    "at_risk": lambda r, f, m: r == 2 and f <= 2,
    "cant_lose": lambda r, f, m: r == 1 and (f == 3 or m == 3),
    "hibernating": lambda r, f, m: r == 1 and f == 2 and m <= 2,
    "lost": lambda r, f, m: r == 1 and f == 1 and m <= 2,
}


def lifecycle(p: Person, stage: str) -> bool:
    last = last_order(p)
    first = min((at for at, _ in p.orders), default=None)
    days = timedelta(days=1)
    return {
        "new": first is not None and NOW - first <= 30 * days,
        "active": last is not None and NOW - last <= 90 * days,
        "repeat": len(p.orders) >= 2,
        "loyal": len(p.orders) >= 3,
        "at_risk": last is not None and 90 * days < NOW - last <= 180 * days,
        "lapsed": last is not None and NOW - last > 180 * days,
        "never_purchased": not p.orders,
    }[stage]


def attribute(p: Person, path: tuple[str, ...]) -> Any:
    value: Any = p.attributes
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return MISSING
        value = value[key]
    return value


def as_number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, str) and NUMERIC_TEXT.fullmatch(value):
        return Decimal(value)
    return None


def equals(value: Any, wanted: str | Decimal) -> bool:
    if isinstance(wanted, str):
        return isinstance(value, str) and value == wanted
    number = as_number(value)
    return number is not None and number == wanted


def matches(node: Node, p: Person, shop: list[Person]) -> bool:
    if isinstance(node, And):
        return all(matches(n, p, shop) for n in node.operands)
    if isinstance(node, Or):
        return any(matches(n, p, shop) for n in node.operands)
    if isinstance(node, Not):
        return not matches(node.operand, p, shop)
    if isinstance(node, NumberCondition):
        n, spent = len(p.orders), sum(c for _, c in p.orders)
        if node.field == "orders":
            return cmp(Decimal(n), node.op, node.value)
        if node.field == "total_spent":
            return cmp(Fraction(spent, 100), node.op, Fraction(node.value))
        if node.field == "aov":
            return n > 0 and cmp(Fraction(spent, 100 * n), node.op, Fraction(node.value))
        s = scores(p, shop)
        index = ("recency", "frequency", "monetary").index(node.field)
        return s is not None and cmp(Decimal(s[index]), node.op, node.value)
    if isinstance(node, TimeCondition):
        value = {
            "last_order": last_order(p),
            "first_order": min((at for at, _ in p.orders), default=None),
            "created": p.created_at, "opened": p.opened, "clicked": p.clicked,
            "emailed": p.emailed,
        }[node.field]
        if value is None:
            return False
        unit = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
        cutoff = NOW - node.amount * unit[node.unit]
        return value >= cutoff if node.relation == "within" else value < cutoff
    if isinstance(node, CampaignCondition):
        kinds = {"opened": {"open", "click"}, "clicked": {"click"}, "emailed": {"sent"}}
        return any(c == node.campaign_id and k in kinds[node.action]
                   and (node.action == "emailed" or cls == "human")
                   for c, k, cls in p.events)
    if isinstance(node, MembershipCondition):
        if node.kind == "list":
            return any(p.lists.get(name) == "confirmed" for name in node.names)
        if node.kind == "lifecycle":
            return any(lifecycle(p, name) for name in node.names)
        s = scores(p, shop)
        return s is not None and any(RFM[name](*s) for name in node.names)
    value = attribute(p, node.path)
    if isinstance(node, AttrCompare):
        if isinstance(node.value, str):
            if node.op is Op.EQ:
                return equals(value, node.value)
            return isinstance(value, str) and value != node.value
        number = as_number(value)
        return number is not None and cmp(number, node.op, node.value)
    if isinstance(node, AttrIn):
        return any(equals(value, v) for v in node.values)
    if isinstance(node, AttrContains):
        if isinstance(value, str):
            return node.text in value
        return isinstance(value, list) and any(
            isinstance(e, str) and e == node.text for e in value)
    assert isinstance(node, AttrExists)
    return value is not MISSING and value is not None and value != ""


# ---------------------------------------------------------------------------------------------
# Random rules from the grammar.

PATHS = [("country",), ("age",), ("tags",), ("a b",), ("address",), ("address", "city"),
         ("é",), ("missing",)]
NUMBERS = [Decimal(x) for x in ("0", "1", "2", "3", "2.5", "-1", "7", "30", "30.5", "0.5",
                                "-0.25", "10", "25.5", "33.33", "9.99", "100", "1000")]
ops = st.sampled_from(list(Op))
numbers = st.sampled_from(NUMBERS)
texts = st.sampled_from([*TEXTS[:-2], "a", "Es", "b", "vi"])
paths = st.sampled_from(PATHS)
literals = st.one_of(texts, numbers)

conditions = st.one_of(
    st.builds(NumberCondition, st.sampled_from(["orders", "total_spent", "aov"]), ops, numbers),
    st.builds(NumberCondition, st.sampled_from(["recency", "frequency", "monetary"]), ops,
              st.sampled_from([Decimal(x) for x in ("0", "1", "2", "3", "4", "1.5")])),
    st.builds(TimeCondition,
              st.sampled_from(["last_order", "first_order", "created", "opened", "clicked",
                               "emailed"]),
              st.sampled_from(["within", "before"]),
              st.sampled_from([0, 1, 2, 7, 12, 30, 90, 180, 365]),
              st.sampled_from(["h", "d", "w"])),
    st.builds(CampaignCondition, st.sampled_from(["opened", "clicked", "emailed"]),
              st.integers(1, 4)),
    st.builds(MembershipCondition, st.just("list"),
              st.lists(st.sampled_from(LISTS), min_size=1, max_size=2).map(tuple)),
    st.builds(MembershipCondition, st.just("rfm"),
              st.lists(st.sampled_from(sorted(RFM)), min_size=1, max_size=2).map(tuple)),
    st.builds(MembershipCondition, st.just("lifecycle"),
              st.lists(st.sampled_from(["new", "active", "repeat", "loyal", "at_risk", "lapsed",
                                        "never_purchased"]), min_size=1, max_size=2).map(tuple)),
    st.builds(AttrCompare, paths, st.sampled_from([Op.EQ, Op.NE]), texts),
    st.builds(AttrCompare, paths, ops, numbers),
    st.builds(AttrIn, paths, st.lists(literals, min_size=1, max_size=3).map(tuple)),
    st.builds(AttrContains, paths, texts.filter(bool)),
    st.builds(AttrExists, paths),
)
rules = st.recursive(
    conditions,
    lambda inner: st.one_of(
        st.builds(Not, inner),
        st.builds(And, st.lists(inner, min_size=2, max_size=3).map(tuple)),
        st.builds(Or, st.lists(inner, min_size=2, max_size=3).map(tuple)),
    ),
    max_leaves=6,
)


def check_rule(session: Session, node: Node, shop: list[Person], ids: list[int]) -> None:
    text = to_text(node)
    assert parse_rule(text) == node, text
    expected = {cid for cid, p in zip(ids, shop, strict=True) if matches(node, p, shop)}
    got = set(session.execute(segment_contact_ids_query(text, NOW)).scalars())
    assert got == expected, f"{text}: extra {sorted(got - expected)}, missing {sorted(expected - got)}"
    assert count_segment(session, node, NOW) == len(expected)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(shop=shops, batch=st.lists(rules, min_size=1, max_size=8))
def test_random_shops_and_rules_match_the_reference(db_factory, shop, batch):
    engine = make_engine(db_factory())
    try:
        with Session(engine) as session:
            ids = store(session, shop)
            session.commit()
            for node in batch:
                check_rule(session, node, shop, ids)
    finally:
        engine.dispose()


def test_many_rules_against_one_shop_match_the_reference(db_url):
    shop = random_shop(seed=20260615, size=120)
    engine = make_engine(db_url)
    with Session(engine) as session:
        ids = store(session, shop)
        session.commit()

        @settings(max_examples=300, deadline=None)
        @given(node=rules)
        def check(node: Node) -> None:
            check_rule(session, node, shop, ids)

        check()
    engine.dispose()


def test_rfm_groups_partition_customers_of_a_random_shop(db_url):
    shop = random_shop(seed=7, size=150)
    engine = make_engine(db_url)
    with Session(engine) as session:
        store(session, shop)
        session.commit()
        counts = {name: count_segment(session, f'rfm = "{name}"', NOW) for name in RFM}
        customers = count_segment(session, "orders > 0", NOW)
        assert sum(counts.values()) == customers
        assert count_segment(session, "rfm in [" + ", ".join(f'"{n}"' for n in RFM) + "]",
                             NOW) == customers
    engine.dispose()


# ---------------------------------------------------------------------------------------------
# Fuzzing: anything that is not a rule is a SegmentSyntaxError; anything that is, runs.

ALPHABET = st.sampled_from(list('orderstalpvcmnfiwhk_ .()[],"\\=!<>-0123456789dhwé\u00a0\t\n'))
fuzz_text = st.one_of(st.text(max_size=120), st.text(ALPHABET, max_size=120))


@st.composite
def mutated_rules(draw: st.DrawFn) -> str:
    text = to_text(draw(rules))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "duplicate", "replace", "truncate"]))
        piece = draw(st.one_of(
            st.text(ALPHABET, min_size=1, max_size=3),
            st.sampled_from([" and ", " or ", "not ", "(", ")", '"', "\\", "[", "]", ",",
                             "9" * 30, "99999d", "-", ".", "attr.", " in ", " exists", "\x00",
                             "\ud800", "campaign ", " within "]),
        ))
        end = draw(st.integers(at, min(len(text), at + 6)))
        if kind == "insert":
            text = text[:at] + piece + text[at:]
        elif kind == "delete":
            text = text[:at] + text[end:]
        elif kind == "duplicate":
            text = text[:end] + text[at:end] + text[end:]
        elif kind == "replace":
            text = text[:at] + piece + text[end:]
        else:
            text = text[:at]
    return text


def run_or_reject(session: Session, text: str) -> None:
    try:
        node = parse_rule(text)
    except SegmentSyntaxError as exc:
        message = str(exc)
        assert re.match(r"at column \d+: expected .+, found .+", message), message
        assert "\n" not in message
        assert 1 <= exc.column <= len(text) + 1
        return
    session.execute(segment_contact_ids_query(node, NOW)).all()
    assert parse_rule(to_text(node)) == node


@pytest.mark.parametrize("source", ["text", "mutations"])
def test_fuzzed_rules_raise_only_syntax_errors(db_url, source):
    engine = make_engine(db_url)
    with Session(engine) as session:
        store(session, random_shop(seed=3, size=20))
        session.commit()
        strategy = fuzz_text if source == "text" else mutated_rules()

        @settings(max_examples=250, deadline=None)
        @given(text=strategy)
        def check(text: str) -> None:
            run_or_reject(session, text)

        check()
    engine.dispose()


def test_attribute_keys_of_any_shape_are_found(db_url):
    odd = {"é": "x", "a b": "x", "a,b": "x", "{x}": "x", " lead": "x", "back\\slash": "x",
           "a.b": "x", "$[0]": "x", "it's": "x", "日本": "x", "": "x"}
    engine = make_engine(db_url)
    with Session(engine) as session:
        store(session, [Person(attributes=odd), Person(attributes={"other": "x"})])
        session.commit()
        for key in odd:
            if not key:
                continue
            rule = f"attr.{json.dumps(key, ensure_ascii=False)} = \"x\""
            assert count_segment(session, rule, NOW) == 1, key
            assert count_segment(session, f"attr.{json.dumps(key)} exists", NOW) == 1, key
    engine.dispose()

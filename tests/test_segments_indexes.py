"""Attribute indexes (`patron segments index|indexes`), on SQLite and PostgreSQL: created,
listed and dropped through the CLI; hostile attribute names refused or safely quoted; the
planner uses the index (a structural check of the plan, not a timing); counts are the same with
and without it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ClauseElement, Executable

from lists.errors import InvalidInputError, NotFoundError
from lists.segments import count_segment
from lists.segments.attribute_indexes import (
    GIN_INDEX,
    attribute_path,
    create_attribute_index,
    drop_attribute_index,
    index_name,
    list_attribute_indexes,
)
from lists.segments.compiler import compile_rule, contacts_table
from lists.segments.parser import quote_text
from patron.db import make_engine

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
RULE = 'orders >= 2 and last_order within 90d and attr.country = "LU"'
HOSTILE_KEYS = ["a'b", "a;drop table contacts", "x'); DROP TABLE contacts; --", "date of birth",
                "a\\b", "città", "$.x[0]", "it's fine"]


class _Explain(Executable, ClauseElement):
    inherit_cache = False

    def __init__(self, statement: Any, prefix: str) -> None:
        self.statement = statement
        self.prefix = prefix


@compiles(_Explain)
def _explain_sql(element: _Explain, compiler: Any, **kw: Any) -> str:
    return element.prefix + compiler.process(element.statement, **kw)


def plan(session: Session, rule: str) -> str:
    """The plan of counting ``rule``; on PostgreSQL with sequential scans disabled, so that a
    tiny table still shows whether an index can serve the rule."""
    query = select(func.count()).select_from(contacts_table()).where(compile_rule(rule, NOW))
    if session.get_bind().dialect.name == "sqlite":
        rows = session.execute(_Explain(query, "EXPLAIN QUERY PLAN "))
    else:
        session.execute(text("SET LOCAL enable_seqscan = off"))
        rows = session.execute(_Explain(query, "EXPLAIN "))
    return "\n".join(str(row[-1]) for row in rows)


def _person(i: int) -> dict[str, Any]:
    attributes: dict[str, Any] = {"country": "LU" if i % 50 == 0 else ("DE", "FR", "BE")[i % 3]}
    if i % 4 == 0:
        attributes["address"] = {"city": "Esch" if i % 8 == 0 else "Diekirch"}
    if i % 6 == 0:
        attributes["tags"] = ["vip", "new"]
    for n, key in enumerate(HOSTILE_KEYS):
        if i % (n + 3) == 0:
            attributes[key] = "x" if (i // (n + 3)) % 2 else "y"
    attributes["age"] = str(i % 80)
    last = NOW - timedelta(days=i % 60)
    return {"email": f"p{i}@example.com", "attributes": attributes, "orders_count": 2 + i % 3,
            "total_spent_cents": 1000 * (i % 30), "first_order_at": last - timedelta(days=100),
            "last_order_at": last, "created_at": NOW, "updated_at": NOW}


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """200 contacts, 4 in LU, all with recent repeat orders: only the attribute is selective."""
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(insert(contacts_table()), [_person(i) for i in range(200)])
        conn.exec_driver_sql("ANALYZE")
    yield engine
    engine.dispose()


@pytest.fixture
def without_gin(engine: Engine) -> Iterator[None]:
    """PostgreSQL: the schema's GIN index dropped for the test (the test database is shared by
    the session) and put back afterwards."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP INDEX {GIN_INDEX}")
    yield
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            create_attribute_index(conn, "country")


def test_cli_creates_lists_and_drops_an_index(cli, engine):
    sqlite = engine.dialect.name == "sqlite"
    r = cli("segments", "index", "country", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    name = index_name(("country",)) if sqlite else GIN_INDEX
    # PostgreSQL: the GIN index of the schema already serves every attribute.
    assert doc == {"attribute": "attr.country", "index": name, "created": sqlite}
    r = cli("segments", "index", "attr.country", "--json")
    assert json.loads(r.out) == {"attribute": "attr.country", "index": name, "created": False}
    r = cli("segments", "index", "address.city")
    assert r.code == 0, r.err
    assert ("created index" if sqlite else "already indexed by") in r.out
    assert "attr.address.city" in r.out

    r = cli("segments", "indexes", "--json")
    assert r.code == 0, r.err
    if sqlite:
        assert json.loads(r.out) == [
            {"attribute": "attr.address.city", "index": index_name(("address", "city")),
             "path": ["address", "city"]},
            {"attribute": "attr.country", "index": name, "path": ["country"]}]
    else:
        assert json.loads(r.out) == [{"attribute": "attr.*", "index": GIN_INDEX, "path": None}]
    r = cli("segments", "indexes")
    assert r.code == 0 and name in r.out

    r = cli("segments", "index", "--drop", "country", "--json")
    if sqlite:
        assert (r.code, json.loads(r.out)) == (
            0, {"attribute": "attr.country", "index": name, "dropped": True})
        assert [d["attribute"] for d in json.loads(cli("segments", "indexes", "--json").out)] == [
            "attr.address.city"]
        r = cli("segments", "index", "--drop", "country")
        assert (r.code, r.err) == (
            1, "patron: error: attr.country has no index (see `patron segments indexes`)\n")
    else:
        assert r.code == 1
        assert r.err.startswith("patron: error: attr.country has no index of its own: on "
                                f"PostgreSQL {GIN_INDEX}")
        assert r.err.count("\n") == 1


def test_cli_without_any_attribute_index(cli, engine, without_gin):
    r = cli("segments", "indexes")
    assert (r.code, r.out) == (0, "no attribute indexes: `patron segments index ATTR` creates one\n")
    assert json.loads(cli("segments", "indexes", "--json").out) == []


@pytest.mark.parametrize("attribute", [
    'a"b', "a;drop table contacts", "a'b", "country) or (1", "x exists or attr.y", "", "attr.",
    '""', "a b", "country;", "country --", '"a"b"', "address..city", "1abc",
])
def test_cli_refuses_what_is_not_an_attribute_name(cli, engine, attribute):
    before = cli("segments", "indexes", "--json").out
    r = cli("segments", "index", attribute)
    assert r.code == 1
    assert r.err.startswith(f"patron: error: not an attribute name: {attribute!r}")
    assert r.err.count("\n") == 1
    r = cli("segments", "index", "--drop", attribute)
    assert r.code == 1 and "not an attribute name" in r.err
    assert cli("segments", "indexes", "--json").out == before
    assert cli("segments", "count", "--rule", "orders >= 0").out == "200\n"


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_hostile_names_are_quoted_and_served(cli, engine, key):
    attribute = quote_text(key)
    rule = f"attr.{attribute} = \"x\""
    with Session(engine) as session:
        expected = count_segment(session, rule, NOW)
    assert expected > 0

    r = cli("segments", "index", attribute, "--json")
    assert r.code == 0, r.err
    shown = json.loads(r.out)["attribute"]
    assert shown in (f"attr.{attribute}", f"attr.{key}")  # quoted only where it must be
    assert attribute_path(shown) == (key,)
    with Session(engine) as session:
        # The table is intact, the index serves the rule, and the count has not changed.
        assert session.execute(select(func.count()).select_from(contacts_table())).scalar() == 200
        assert count_segment(session, rule, NOW) == expected
        used = plan(session, rule)
    if engine.dialect.name == "sqlite":
        assert index_name((key,)) in used
        listed = json.loads(cli("segments", "indexes", "--json").out)
        assert [d["path"] for d in listed] == [[key]]
        assert cli("segments", "index", "--drop", attribute).code == 0
    else:
        assert GIN_INDEX in used


def test_planner_uses_the_index(engine, without_gin):
    rules = [RULE, 'attr.country = "LU"', 'attr.country in ["LU", "BE"]',
             'attr.address.city = "Esch" and orders >= 3']
    with Session(engine) as session:
        for rule in rules:
            assert "ix_contacts_attr" not in plan(session, rule)
            assert GIN_INDEX not in plan(session, rule)
            session.rollback()
        made, created = create_attribute_index(session, "country")
        city, _ = create_attribute_index(session, "address.city")
        session.commit()
        assert created
        for rule in rules:
            used = plan(session, rule)
            assert (city if "city" in rule else made).name in used, f"{rule}:\n{used}"
            session.rollback()
        if engine.dialect.name == "postgresql":
            # Made again as the schema declares it (the models-vs-migrations check needs that).
            definition = session.execute(text(
                "SELECT indexdef FROM pg_indexes WHERE indexname = :name"), {"name": GIN_INDEX})
            assert "USING gin (attributes jsonb_path_ops)" in definition.scalar_one()
        else:
            # The orders range is searched in the index too: the aggregates are in its entries.
            assert f"{made.name} (<expr>=? AND orders_count>?)" in plan(session, RULE)
            stats = session.execute(text("SELECT stat FROM sqlite_stat1 WHERE idx = :name"),
                                    {"name": made.name}).scalar()
            assert stats is not None and stats.startswith("200 ")


RULES = [
    RULE,
    'attr.country = "LU"', 'attr.country != "LU"', 'not attr.country = "LU"',
    'attr.country in ["LU", "BE", 3]', 'attr.address.city = "Esch"',
    'attr.address.city in ["Esch", "Diekirch"] and last_order within 30d',
    'attr.tags contains "vip"', 'attr.tags exists', 'attr.age >= 40', 'attr.age = 7',
    'attr.country = "LU" or orders >= 4', 'attr.country = "LU" and lifecycle = "new"',
    'attr.country = "DE" and total_spent > 100 and aov <= 50',
    'attr."a\'b" = "x"', 'attr."a;drop table contacts" in ["x", "y"]',
]


def test_counts_are_the_same_with_and_without_indexes(engine, without_gin):
    with Session(engine) as session:
        before = {rule: count_segment(session, rule, NOW) for rule in RULES}
        for attribute in ("country", "address.city", "tags", "age", '"a\'b"',
                          '"a;drop table contacts"'):
            create_attribute_index(session, attribute)
        session.commit()
        assert len(list_attribute_indexes(session)) == (
            6 if engine.dialect.name == "sqlite" else 1)
        after = {rule: count_segment(session, rule, NOW) for rule in RULES}
    assert after == before
    assert before[RULE] == 4
    assert before['attr.country = "LU"'] + before['not attr.country = "LU"'] == 200


def test_domain_errors(engine):
    with Session(engine) as session:
        with pytest.raises(InvalidInputError, match="not an attribute name"):
            create_attribute_index(session, "a;b")
        with pytest.raises(NotFoundError, match=r"attr\.nothing has no index"):
            drop_attribute_index(session, "nothing")
    assert attribute_path("ATTR.address.city") == ("address", "city")
    assert attribute_path(' "date of birth" ') == ("date of birth",)


def test_index_names_are_safe_and_distinct():
    names = {index_name((key,)) for key in [*HOSTILE_KEYS, "A'B", "a b", "a_b", "ä", "ö"]}
    assert len(names) == len(HOSTILE_KEYS) + 5
    for name in names:
        assert len(name) <= 63
        assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789_")
    assert index_name(("x" * 200,)) != index_name(("x" * 201,))


keys = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters='"\0'),
               min_size=1, max_size=12)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(key=keys, values=st.lists(st.sampled_from(["v", "w", None]), min_size=3, max_size=8))
def test_any_attribute_name_gets_a_working_index(db_factory, key, values):
    engine = make_engine(db_factory())
    rule = f"attr.{quote_text(key)} = \"v\""
    try:
        with Session(engine) as session:
            session.execute(insert(contacts_table()), [
                {"email": f"h{i}@example.com", "created_at": NOW, "updated_at": NOW,
                 "attributes": {} if value is None else {key: value}}
                for i, value in enumerate(values)])
            made, _ = create_attribute_index(session, quote_text(key))
            session.commit()
            assert count_segment(session, rule, NOW) == values.count("v")
            if engine.dialect.name == "sqlite":
                assert made.name in plan(session, rule)
                assert [i.path for i in list_attribute_indexes(session)] == [(key,)]
                drop_attribute_index(session, quote_text(key))
                assert list_attribute_indexes(session) == []
    finally:
        engine.dispose()

"""Compiling a segment rule to one SQLAlchemy Core boolean expression over the contacts table.

Every value is a bound parameter; nothing is pasted into SQL text (the one thing rendered into
the statement, by SQLAlchemy's quoting, is an attribute's JSON path on SQLite, so that an
expression index can match it). Purchase and engagement conditions read the aggregates kept on
each contact (orders_count, last_order_at, …), so a rule never scans orders or events, except
``opened campaign N`` (an indexed EXISTS per contact). Attribute tests are rendered per dialect:
SQLite JSON1 functions, PostgreSQL JSONB operators (equality and ``contains`` as containment,
``@>``, which a GIN index serves).

Missing values: a condition on a value a contact does not have (no order, no such attribute) is
false for that contact, and ``not`` is the exact complement of what it negates. In SQL the
comparison yields NULL, so ``not`` wraps its operand in ``coalesce(…, false)``.

Time is relative to the ``now`` passed in; the clock is never read here.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    Numeric,
    Select,
    Table,
    Text,
    and_,
    case,
    cast,
    exists,
    false,
    func,
    inspect,
    literal,
    not_,
    or_,
    select,
    true,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.exc import CompileError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import operators
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.operators import OperatorType
from sqlmodel import SQLModel

from lists.models import (
    Contact,
    Event,
    EventClass,
    EventKind,
    MailingList,
    Subscription,
    SubscriptionStatus,
)
from lists.segments.lifecycle import LIFECYCLE_STAGES, RFM_GROUPS, SCORES, score_condition
from lists.segments.parser import (
    And,
    AttrCompare,
    AttrContains,
    AttrExists,
    AttrIn,
    CampaignCondition,
    Condition,
    MembershipCondition,
    Node,
    Not,
    NumberCondition,
    Op,
    Or,
    TimeCondition,
    parse_rule,
)

Compiled = tuple[ColumnElement[bool], bool]  # the expression, and whether it can be NULL

_TIME_COLUMNS = {
    "last_order": "last_order_at",
    "first_order": "first_order_at",
    "created": "created_at",
    "opened": "last_opened_at",
    "clicked": "last_clicked_at",
    "emailed": "last_emailed_at",
}
# A click implies the message was opened, so "opened" counts human opens and clicks alike;
# machine opens (Apple MPP, proxies, scanners) are not engagement.
_CAMPAIGN_EVENTS = {
    "opened": ((EventKind.OPEN, EventKind.CLICK), True),
    "clicked": ((EventKind.CLICK,), True),
    "emailed": ((EventKind.SENT,), False),
}
_NUMERIC_TEXT_PG = r"^-?[0-9]+(\.[0-9]+)?$"


_PYTHON_OPERATORS: dict[Op, Callable[[Decimal, Decimal], bool]] = {
    Op.EQ: operator.eq, Op.NE: operator.ne, Op.LT: operator.lt,
    Op.LE: operator.le, Op.GT: operator.gt, Op.GE: operator.ge,
}
_OPERATORS: dict[Op, OperatorType] = {
    Op.EQ: operators.eq, Op.NE: operators.ne, Op.LT: operators.lt,
    Op.LE: operators.le, Op.GT: operators.gt, Op.GE: operators.ge,
}


def table_of(model: type[SQLModel]) -> Table:
    """The Core table of a model."""
    table = inspect(model).local_table
    assert isinstance(table, Table)
    return table


def contacts_table() -> Table:
    """The contacts table, which every rule selects from."""
    return table_of(Contact)


def compile_rule(rule: str | Node, now: datetime) -> ColumnElement[bool]:
    """The boolean expression over the contacts table that selects the rule's contacts."""
    if now.tzinfo is None:
        raise ValueError("segments are evaluated at a timezone-aware time")
    node = parse_rule(rule) if isinstance(rule, str) else rule
    return _Compiler(now, contacts_table()).node(node)[0]


def segment_contact_ids_query(rule: str | Node, now: datetime) -> Select[int]:
    """``SELECT contacts.id FROM contacts WHERE <rule>``, usable as a subquery anywhere (it
    never correlates to an enclosing query's contacts)."""
    contacts = contacts_table()
    return (select(contacts.c.id).select_from(contacts).where(compile_rule(rule, now))
            .correlate(None))


@cache
def builtin_node(kind: str, name: str) -> Node:
    """The parsed definition of a lifecycle stage or an RFM group."""
    table = LIFECYCLE_STAGES if kind == "lifecycle" else RFM_GROUPS
    return parse_rule(table[name].rule)


def compare(left: Decimal, op: Op, right: Decimal) -> bool:
    """``left op right`` for numbers."""
    return bool(_PYTHON_OPERATORS[op](left, right))


def _apply(left: ColumnElement[Any], op: Op, right: Any) -> ColumnElement[bool]:
    return left.operate(_OPERATORS[op], right)


def _integer_compare(column: ColumnElement[Any], op: Op, value: Decimal) -> ColumnElement[bool]:
    """``column op value`` for an integer column, with integer bounds (index-friendly and exact
    when ``value`` has decimals: orders > 1.5 is orders >= 2)."""
    if value == value.to_integral_value():
        return _apply(column, op, int(value))
    if op is Op.EQ:
        return false()
    if op is Op.NE:
        return true()
    if op in (Op.GT, Op.GE):
        return column >= int(value.to_integral_value(rounding="ROUND_CEILING"))
    return column <= int(value.to_integral_value(rounding="ROUND_FLOOR"))


class _Compiler:
    def __init__(self, now: datetime, contacts: Table) -> None:
        self.now = now
        self.contacts = contacts

    def node(self, node: Node) -> Compiled:
        if isinstance(node, And):
            return self.combine(and_, node.operands)
        if isinstance(node, Or):
            return self.combine(or_, node.operands)
        if isinstance(node, Not):
            expr, nullable = self.node(node.operand)
            return not_(func.coalesce(expr, false()) if nullable else expr), False
        return self.condition(node)

    def condition(self, node: Condition) -> Compiled:
        c = self.contacts.c
        if isinstance(node, NumberCondition):
            if node.field == "orders":
                return _integer_compare(c.orders_count, node.op, node.value), False
            if node.field == "total_spent":
                return _integer_compare(c.total_spent_cents, node.op, node.value * 100), False
            if node.field == "aov":
                return self.average_order_value(node.op, node.value), False
            scores = frozenset(s for s in SCORES if compare(Decimal(s), node.op, node.value))
            expr = score_condition(node.field, scores, self.now, self.contacts)
            return expr, node.field != "frequency"
        if isinstance(node, TimeCondition):
            column = c[_TIME_COLUMNS[node.field]]
            cutoff = self.now - node.delta
            expr = column >= cutoff if node.relation == "within" else column < cutoff
            return expr, bool(column.nullable)
        if isinstance(node, CampaignCondition):
            return self.campaign_event(node), False
        if isinstance(node, MembershipCondition):
            return self.membership(node)
        return AttributeTest(node, self.contacts), True

    def average_order_value(self, op: Op, value: Decimal) -> ColumnElement[bool]:
        """total_spent / orders op value, cross-multiplied so that it stays exact:
        total_cents * q op orders * p where value * 100 = p / q (in NUMERIC, which cannot
        overflow on PostgreSQL). No orders: no average."""
        c = self.contacts.c
        ratio = Fraction(value) * 100
        left = cast(c.total_spent_cents, Numeric) * literal(ratio.denominator, BigInteger)
        right = cast(c.orders_count, Numeric) * literal(ratio.numerator, BigInteger)
        return and_(c.orders_count > 0, _apply(left, op, right))

    def campaign_event(self, node: CampaignCondition) -> ColumnElement[bool]:
        events = table_of(Event)
        kinds, human_only = _CAMPAIGN_EVENTS[node.action]
        where = [events.c.contact_id == self.contacts.c.id,
                 events.c.campaign_id == node.campaign_id,
                 events.c.kind.in_([k.value for k in kinds])]
        if human_only:
            where.append(events.c.classification == EventClass.HUMAN.value)
        return exists(select(literal(1)).select_from(events).where(*where)
                      .correlate(self.contacts))

    def membership(self, node: MembershipCondition) -> Compiled:
        if node.kind == "list":
            subs, lists = table_of(Subscription), table_of(MailingList)
            query = (select(literal(1))
                     .select_from(subs.join(lists, lists.c.id == subs.c.list_id))
                     .where(subs.c.contact_id == self.contacts.c.id,
                            subs.c.status == SubscriptionStatus.CONFIRMED.value,
                            lists.c.name.in_(node.names))
                     .correlate(self.contacts))
            return exists(query), False
        return self.combine(or_, [builtin_node(node.kind, name) for name in node.names])

    def combine(self, join: Callable[..., ColumnElement[bool]],
                operands: Iterable[Node]) -> Compiled:
        parts = [self.node(operand) for operand in operands]
        return join(*(expr for expr, _ in parts)), any(nullable for _, nullable in parts)


class AttributeTest(ColumnElement[bool]):
    """A test of one attribute (``attr.…``), rendered by the dialect in use."""

    __visit_name__ = "segment_attribute_test"
    inherit_cache = False  # holds a syntax-tree node, which SQLAlchemy's cache cannot key
    type = Boolean()
    _is_implicitly_boolean = True  # a predicate: SQLite must not see it as "(…) = 1"

    def __init__(self, node: AttrCompare | AttrIn | AttrContains | AttrExists,
                 contacts: Table) -> None:
        self.node = node
        self.contacts = contacts

    @property
    def _from_objects(self) -> list[Any]:
        return [self.contacts]


@compiles(AttributeTest)
def _unsupported(element: AttributeTest, compiler: SQLCompiler, **kw: Any) -> str:
    raise CompileError(f"attribute tests are not supported on {compiler.dialect.name}")


@compiles(AttributeTest, "sqlite")
def _sqlite(element: AttributeTest, compiler: SQLCompiler, **kw: Any) -> str:
    return f"({compiler.process(_sqlite_test(element.node, element.contacts), **kw)})"


@compiles(AttributeTest, "postgresql")
def _postgresql(element: AttributeTest, compiler: SQLCompiler, **kw: Any) -> str:
    return f"({compiler.process(_postgresql_test(element.node, element.contacts), **kw)})"


def _split(values: tuple[str | Decimal, ...]) -> tuple[list[str], list[Decimal]]:
    return ([v for v in values if isinstance(v, str)],
            [v for v in values if isinstance(v, Decimal)])


def _sqlite_number(value: Decimal) -> int | float:
    # SQLite has no decimal type; JSON numbers and numeric texts compare as integers or doubles.
    return int(value) if value == value.to_integral_value() else float(value)


def _sqlite_test(
    node: AttrCompare | AttrIn | AttrContains | AttrExists, contacts: Table
) -> ColumnElement[bool]:
    """SQLite JSON1: json_type is NULL for a missing key, 'null' for JSON null, 'text' for a
    string; json_extract gives a string unquoted and an array or object as its JSON text."""
    attributes = contacts.c.attributes
    # SQLite 3.40 compares path labels with the raw JSON text of keys, which json.dumps (what
    # SQLAlchemy and the importer write) escapes to ASCII: spell the label the same way.
    # The path is rendered into the statement (SQLAlchemy quotes it) rather than bound, so that
    # an expression index on json_extract(attributes, '$."key"') can serve the test.
    path = literal("$" + "".join(f'."{json.dumps(key)[1:-1]}"' for key in node.path),
                   literal_execute=True)
    kind = func.json_type(attributes, path)
    value = func.json_extract(attributes, path)

    def text_equals(texts: list[str]) -> ColumnElement[bool]:
        test = value.in_(texts) if len(texts) > 1 else value == texts[0]
        # Only an array's or object's JSON text can start with [ or {: no type test otherwise.
        if any(t[:1] in ("[", "{") for t in texts):
            return and_(kind == "text", test)
        return test

    def number() -> ColumnElement[Any]:
        text = value
        numeric_text = and_(
            or_(text.op("GLOB")("[0-9]*"), text.op("GLOB")("-[0-9]*")),
            not_(text.op("GLOB")("*[^0-9.-]*")),
            not_(text.op("GLOB")("?*-*")),
            not_(text.op("GLOB")("*.*.*")),
            not_(text.op("GLOB")("*.")),
        )
        return case((kind.in_(["integer", "real"]), value),
                    (and_(kind == "text", numeric_text), cast(value, Numeric)))

    if isinstance(node, AttrCompare):
        if isinstance(node.value, str):
            if node.op is Op.EQ:
                return text_equals([node.value])
            return and_(kind == "text", value != node.value)
        return _apply(number(), node.op, _sqlite_number(node.value))
    if isinstance(node, AttrIn):
        texts, numbers = _split(node.values)
        tests = [text_equals(texts)] if texts else []
        if numbers:
            tests.append(number().in_([_sqlite_number(n) for n in numbers]))
        return or_(*tests)
    if isinstance(node, AttrContains):
        items = func.json_each(attributes, path).table_valued("value", "type")
        in_array = exists(select(literal(1)).select_from(items)
                          .where(items.c.type == "text", items.c.value == node.text))
        return or_(and_(kind == "text", func.instr(value, node.text) > 0),
                   and_(kind == "array", in_array))
    return and_(kind.is_not(None), kind != "null", or_(kind != "text", value != ""))


def _nested(path: tuple[str, ...], leaf: Any) -> Any:
    for key in reversed(path):
        leaf = {key: leaf}
    return leaf


def _postgresql_test(
    node: AttrCompare | AttrIn | AttrContains | AttrExists, contacts: Table
) -> ColumnElement[bool]:
    """PostgreSQL JSONB: text equality and array membership are containment (``@>``), which the
    GIN index serves; jsonb_typeof is NULL for a missing key and 'null' for JSON null."""
    attributes = type_coerce(contacts.c.attributes, JSONB())
    # A text[] parameter: SQLAlchemy's own JSON path type does not quote the keys.
    path = literal(list(node.path), ARRAY(Text()))
    kind = func.jsonb_typeof(attributes.op("#>", return_type=JSONB())(path))
    text = attributes.op("#>>", return_type=Text())(path)

    def number() -> ColumnElement[Any]:
        numeric_text = and_(kind == "string", text.regexp_match(_NUMERIC_TEXT_PG))
        return case((or_(kind == "number", numeric_text), cast(text, Numeric)))

    if isinstance(node, AttrCompare):
        if isinstance(node.value, str):
            if node.op is Op.EQ:
                return attributes.contains(_nested(node.path, node.value))
            return and_(kind == "string", text != node.value)
        return _apply(number(), node.op, literal(node.value, Numeric))
    if isinstance(node, AttrIn):
        texts, numbers = _split(node.values)
        tests = [attributes.contains(_nested(node.path, t)) for t in texts]
        if numbers:
            tests.append(number().in_([literal(n, Numeric) for n in numbers]))
        return or_(*tests)
    if isinstance(node, AttrContains):
        return or_(attributes.contains(_nested(node.path, [node.text])),
                   and_(kind == "string", func.strpos(text, node.text) > 0))
    return and_(kind.is_not(None), kind != "null", or_(kind != "string", text != ""))

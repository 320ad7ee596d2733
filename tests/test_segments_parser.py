"""The segment language's parser: every form of SPEC A7 and its syntax tree, precedence, case,
escapes, canonical text, and error messages that name the column and what was expected."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from lists.errors import InvalidInputError, PatronError
from lists.segments import SegmentSyntaxError, parse_rule, to_text
from lists.segments.parser import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    And,
    AttrCompare,
    AttrContains,
    AttrExists,
    AttrIn,
    CampaignCondition,
    MembershipCondition,
    Not,
    NumberCondition,
    Op,
    Or,
    TimeCondition,
)

D = Decimal


@pytest.mark.parametrize(
    ("rule", "tree"),
    [
        ("orders >= 2", NumberCondition("orders", Op.GE, D(2))),
        ("orders = 0", NumberCondition("orders", Op.EQ, D(0))),
        ("orders != 1", NumberCondition("orders", Op.NE, D(1))),
        ("orders < 3", NumberCondition("orders", Op.LT, D(3))),
        ("orders <= 3", NumberCondition("orders", Op.LE, D(3))),
        ("total_spent > 100", NumberCondition("total_spent", Op.GT, D(100))),
        ("total_spent > 99.95", NumberCondition("total_spent", Op.GT, D("99.95"))),
        ("aov <= 50", NumberCondition("aov", Op.LE, D(50))),
        ("recency = 3", NumberCondition("recency", Op.EQ, D(3))),
        ("frequency >= 2", NumberCondition("frequency", Op.GE, D(2))),
        ("monetary < 3", NumberCondition("monetary", Op.LT, D(3))),
        ("last_order within 90d", TimeCondition("last_order", "within", 90, "d")),
        ("last_order before 180d", TimeCondition("last_order", "before", 180, "d")),
        ("first_order within 30d", TimeCondition("first_order", "within", 30, "d")),
        ("created within 7d", TimeCondition("created", "within", 7, "d")),
        ("opened within 30d", TimeCondition("opened", "within", 30, "d")),
        ("clicked within 30d", TimeCondition("clicked", "within", 30, "d")),
        ("emailed within 2d", TimeCondition("emailed", "within", 2, "d")),
        ("emailed within 12h", TimeCondition("emailed", "within", 12, "h")),
        ("opened before 2w", TimeCondition("opened", "before", 2, "w")),
        ("opened within 3 days", TimeCondition("opened", "within", 3, "d")),
        ("opened within 1 week", TimeCondition("opened", "within", 1, "w")),
        ("opened within 5 H", TimeCondition("opened", "within", 5, "h")),
        ("opened campaign 12", CampaignCondition("opened", 12)),
        ("clicked campaign 7", CampaignCondition("clicked", 7)),
        ("emailed campaign 1", CampaignCondition("emailed", 1)),
        ('list = "newsletter"', MembershipCondition("list", ("newsletter",))),
        ('list != "newsletter"', Not(MembershipCondition("list", ("newsletter",)))),
        ('list in ["a", "B c"]', MembershipCondition("list", ("a", "B c"))),
        ('rfm = "champions"', MembershipCondition("rfm", ("champions",))),
        ('rfm = "Cant lose"', MembershipCondition("rfm", ("cant_lose",))),
        ('lifecycle = "at_risk"', MembershipCondition("lifecycle", ("at_risk",))),
        ('lifecycle = "at risk"', MembershipCondition("lifecycle", ("at_risk",))),
        ('lifecycle in ["new", "never-purchased"]',
         MembershipCondition("lifecycle", ("new", "never_purchased"))),
        ('attr.country = "LU"', AttrCompare(("country",), Op.EQ, "LU")),
        ('attr.country != "LU"', AttrCompare(("country",), Op.NE, "LU")),
        ('attr.city in ["Esch", "Diekirch"]', AttrIn(("city",), ("Esch", "Diekirch"))),
        ('attr.size in ["M", 42, 42.5]', AttrIn(("size",), ("M", D(42), D("42.5")))),
        ('attr.tags contains "vip"', AttrContains(("tags",), "vip")),
        ("attr.birthday exists", AttrExists(("birthday",))),
        ("attr.age >= 30", AttrCompare(("age",), Op.GE, D(30))),
        ("attr.balance < -2.5", AttrCompare(("balance",), Op.LT, D("-2.5"))),
        ("attr.age = 30", AttrCompare(("age",), Op.EQ, D(30))),
        ('attr.address.city = "Esch"', AttrCompare(("address", "city"), Op.EQ, "Esch")),
        ('attr."date of birth" exists', AttrExists(("date of birth",))),
        ('attr."2fa".on exists', AttrExists(("2fa", "on"))),
        ("attr.first-name exists", AttrExists(("first-name",))),
        ("attr.Country exists", AttrExists(("Country",))),
        ("attr.and exists", AttrExists(("and",))),
    ],
)
def test_every_form_parses_to_its_tree(rule, tree):
    assert parse_rule(rule) == tree
    assert parse_rule(to_text(tree)) == tree


def test_keywords_and_fields_are_case_insensitive():
    assert parse_rule('ORDERS >= 2 AND Last_Order WITHIN 90D OR NOT ATTR.x EXISTS') == Or((
        And((NumberCondition("orders", Op.GE, D(2)),
             TimeCondition("last_order", "within", 90, "d"))),
        Not(AttrExists(("x",))),
    ))
    assert parse_rule('Opened Campaign 3') == CampaignCondition("opened", 3)
    assert parse_rule('attr.x IN ["a"] or attr.y Contains "b"') == Or((
        AttrIn(("x",), ("a",)), AttrContains(("y",), "b")))


def test_precedence_not_then_and_then_or():
    a, b, c = (NumberCondition("orders", Op.EQ, D(n)) for n in (1, 2, 3))
    assert parse_rule("orders = 1 or orders = 2 and orders = 3") == Or((a, And((b, c))))
    assert parse_rule("orders = 1 and orders = 2 or orders = 3") == Or((And((a, b)), c))
    assert parse_rule("not orders = 1 and orders = 2") == And((Not(a), b))
    assert parse_rule("not (orders = 1 and orders = 2)") == Not(And((a, b)))
    assert parse_rule("(orders = 1 or orders = 2) and orders = 3") == And((Or((a, b)), c))
    assert parse_rule("not not orders = 1") == Not(Not(a))
    assert parse_rule("((orders = 1))") == a
    # Parentheses keep their grouping (the canonical text keeps them too).
    nested = parse_rule("(orders = 1 and orders = 2) and orders = 3")
    assert nested == And((And((a, b)), c))
    assert parse_rule(to_text(nested)) == nested


def test_whitespace_is_optional_between_tokens():
    assert parse_rule('orders>=2 and(attr.x="a")') == And((
        NumberCondition("orders", Op.GE, D(2)), AttrCompare(("x",), Op.EQ, "a")))
    assert parse_rule("  orders\t>=\n2  ") == NumberCondition("orders", Op.GE, D(2))


def test_string_escapes():
    assert parse_rule(r'attr.x = "a \"q\" \\ \n\t\u00e9\/"') == AttrCompare(
        ("x",), Op.EQ, 'a "q" \\ \n\té/')
    assert parse_rule(r'attr.x = "\ud83d\ude00"').value == "\U0001f600"
    assert parse_rule('attr.x = "Esch-sur-Alzette, ünïcode"').value == "Esch-sur-Alzette, ünïcode"
    odd = AttrCompare(("k\\ey", "a.b"), Op.EQ, 'x"\\\n\x01\u2028')
    assert parse_rule(to_text(odd)) == odd


def test_durations_and_their_length():
    node = parse_rule("last_order within 2w")
    assert isinstance(node, TimeCondition)
    assert node.delta == timedelta(days=14)
    assert parse_rule("last_order within 36500d") == TimeCondition("last_order", "within", 36500, "d")
    assert parse_rule("last_order within 0d") == TimeCondition("last_order", "within", 0, "d")


def test_canonical_text():
    assert to_text(parse_rule('orders>=2 AND  lifecycle = "At Risk"')) == (
        'orders >= 2 and lifecycle = "at_risk"')
    assert to_text(parse_rule("not (orders = 1 or aov > 2.50)")) == "not (orders = 1 or aov > 2.50)"
    assert to_text(parse_rule('attr."a b".c exists')) == 'attr."a b".c exists'


def test_syntax_error_is_an_invalid_input_patron_error():
    with pytest.raises(SegmentSyntaxError) as info:
        parse_rule("orders >= abc")
    assert isinstance(info.value, InvalidInputError)
    assert isinstance(info.value, PatronError)
    assert info.value.column == 11
    assert str(info.value) == 'at column 11: expected a number after ">=", found "abc"'


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("last_order within abc",
         'at column 19: expected a duration such as 90d (a whole number and h, d or w) after '
         '"within", found "abc"'),
        ("last_order within 90", 'at column 19: expected a duration such as 90d'),
        ("last_order within 90x", 'at column 19: expected a duration such as 90d'),
        ("last_order within 1.5d", 'at column 19: expected a duration such as 90d'),
        ("last_order within 36501d", "at column 19: expected a duration of at most 36500 days"),
        ("last_order after 90d", 'at column 12: expected "within" or "before" after '
                                 '"last_order", found "after"'),
        ("opened at 90d", 'at column 8: expected "within", "before" or "campaign" after "opened"'),
        ("", 'at column 1: expected a field (orders, total_spent'),
        ("   ", "at column 4: expected a field"),
        ("ordrs >= 2", 'at column 1: expected a field (orders,'),
        ('orders >= 2 and ordrs >= 2', "at column 17: expected a field"),
        ("orders", 'at column 7: expected an operator (=, !=, <, <=, >, >=) after "orders", '
                   "found end of rule"),
        ("orders == 2", 'at column 9: expected a number after "=", found "="'),
        ("orders => 2", 'at column 9: expected a number after "=", found ">"'),
        ("orders ! 2", 'at column 9: expected "=" after "!"'),
        ("orders >= 2x", 'at column 11: expected a number such as 2, -5 or 49.90, found "2x"'),
        ("orders >= 2.", 'at column 12: expected "and", "or" or the end of the rule, found "."'),
        ("orders >= 1234567890123",
         "at column 11: expected a number of at most 12 digits before and 6 after the decimal "
         'point, found "1234567890123"'),
        ("aov > 1.1234567", "at column 7: expected a number of at most 12 digits"),
        ("orders >= 2 xyz", 'at column 13: expected "and", "or" or the end of the rule, '
                            'found "xyz"'),
        ("orders >= 2)", 'at column 12: expected "and", "or" or the end of the rule, found ")"'),
        ("(orders >= 2", 'at column 13: expected "and", "or" or ")", found end of rule'),
        ("(orders >= 2 orders", 'at column 14: expected "and", "or" or ")", found "orders"'),
        ("orders >= 2 and", "at column 16: expected a field"),
        ("not", "at column 4: expected a field"),
        ("()", 'at column 2: expected a field'),
        ('attr.country = "LU', 'at column 16: expected a closing " for the text that starts '
                               "here, found end of rule"),
        ('attr.country = "L\\qU"', 'at column 19: expected an escape'),
        ('attr.country = "\\u12"', "at column 17: expected four hex digits after \\u"),
        ('attr.country = "\\u0000"', "at column 17: expected a printable character"),
        ('attr.country = "\\ud800"', "at column 17: expected a printable character"),
        ('attr.x < "a"', 'at column 10: expected a number after "<", found the text "a"'),
        ("attr.x = abc", 'at column 10: expected a quoted text or a number after "=", '
                         'found "abc"'),
        ("attr.", "at column 6: expected an attribute name"),
        ("attr", 'at column 5: expected "." and an attribute name after "attr"'),
        ('attr.""', "at column 6: expected an attribute name"),
        ("attr.2fa exists", "at column 6: expected an attribute name"),
        ("attr.x", 'at column 7: expected an operator (=, !=, <, <=, >, >=), "in", "contains" '
                   'or "exists" after "attr.x", found end of rule'),
        ("attr.x.y is", 'at column 10: expected an operator (=, !=, <, <=, >, >=), "in", '
                        '"contains" or "exists" after "attr.x.y", found "is"'),
        ("attr.x in []", 'at column 12: expected a quoted text or a number, found "]"'),
        ("attr.x in ", 'at column 11: expected "[" after "in", found end of rule'),
        ('attr.x in ["a" "b"]', 'at column 16: expected "," or "]", found the text "b"'),
        ('attr.x in ["a",]', "at column 16: expected a quoted text or a number"),
        ('attr.x contains 3', 'at column 17: expected a non-empty quoted text after "contains"'),
        ('attr.x contains ""', "at column 17: expected a non-empty quoted text"),
        ("list = news", 'at column 8: expected a quoted name after "=", found "news"'),
        ('list = ""', "at column 8: expected a list name"),
        ('list >= "a"', 'at column 6: expected "=", "!=" or "in" after "list", found ">="'),
        ('rfm = "champ"', "at column 7: expected an RFM group (champions, loyal, potential, "
                          "new_customers, at_risk, cant_lose, hibernating, lost), found the "
                          'text "champ"'),
        ('lifecycle in ["new", "old"]', "at column 22: expected a lifecycle stage (new, "
                                        "active, repeat, loyal, at_risk, lapsed, "
                                        'never_purchased), found the text "old"'),
        ("opened campaign x", "at column 17: expected a campaign id (a whole number) after "
                              '"campaign", found "x"'),
        ("opened campaign 0", "at column 17: expected a campaign id"),
        ("opened campaign -3", "at column 17: expected a campaign id"),
        ("opened campaign 2147483648", "at column 17: expected a campaign id"),
        ("orders >= 2 # x", 'at column 13: expected a field, an operator or a value, found "#"'),
        ("orders >= 2 - 1", 'at column 13: expected a field, an operator or a value, found "-"'),
    ],
)
def test_error_names_column_and_expectation(rule, message):
    with pytest.raises(SegmentSyntaxError) as info:
        parse_rule(rule)
    text = str(info.value)
    assert text.startswith(message), text
    assert "\n" not in text
    assert info.value.column == int(text.split()[2].rstrip(":"))


def test_columns_count_characters_not_bytes():
    with pytest.raises(SegmentSyntaxError, match=r"^at column 18: expected"):
        parse_rule('attr.é = "ü" and é')


def test_long_found_text_is_shortened():
    with pytest.raises(SegmentSyntaxError) as info:
        parse_rule("orders >= 2 " + "x" * 500)
    assert len(str(info.value)) < 120


def test_limits_on_nesting_conditions_and_length():
    deep = "(" * MAX_DEPTH + "orders = 1" + ")" * MAX_DEPTH
    assert parse_rule(deep) == NumberCondition("orders", Op.EQ, D(1))
    with pytest.raises(SegmentSyntaxError, match=f"at column {MAX_DEPTH + 1}: expected at most"):
        parse_rule("(" + deep + ")")
    with pytest.raises(SegmentSyntaxError, match="nested"):
        parse_rule("not " * 2_000 + "orders = 1")
    with pytest.raises(SegmentSyntaxError, match="nested"):
        parse_rule("(" * 9_000)
    many = " or ".join(["orders = 1"] * MAX_CONDITIONS)
    assert isinstance(parse_rule(many), Or)
    with pytest.raises(SegmentSyntaxError, match=f"expected at most {MAX_CONDITIONS} conditions"):
        parse_rule(many + " or orders = 2")
    with pytest.raises(SegmentSyntaxError, match="expected a rule of at most 10000 characters"):
        parse_rule("orders = 1" + " " * 10_000)
    with pytest.raises(SegmentSyntaxError, match="at most 100 values"):
        parse_rule("attr.x in [" + ", ".join(["1"] * 101) + "]")


def test_giant_numbers_are_syntax_errors_not_overflows():
    for rule in ("orders >= " + "9" * 5000, "last_order within " + "9" * 5000 + "d",
                 "opened campaign " + "9" * 5000, "attr.x = " + "9" * 5000,
                 "attr.x = 0." + "1" * 5000):
        with pytest.raises(SegmentSyntaxError):
            parse_rule(rule)
    assert parse_rule("orders >= 000000000000000000002") == NumberCondition(
        "orders", Op.GE, D(2))

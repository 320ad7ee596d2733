"""The segment language (A7): a tokenizer and a recursive-descent parser that turn a rule such as
``orders >= 2 and last_order within 90d`` into a small typed syntax tree, and :func:`to_text`,
which prints a tree back as canonical rule text. docs/segments.md is the user's reference.

Grammar (keywords and field names are case-insensitive; ``not`` binds tighter than ``and``,
which binds tighter than ``or``)::

    rule       := or_expr END
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | "(" or_expr ")" | condition
    condition  := NUMBER_FIELD OP number
                | TIME_FIELD ("within" | "before") duration
                | ("opened" | "clicked" | "emailed") "campaign" INTEGER
                | ("list" | "rfm" | "lifecycle") ("=" | "!=") STRING
                | ("list" | "rfm" | "lifecycle") "in" "[" STRING ("," STRING)* "]"
                | "attr" "." key ("." key)* attr_test
    attr_test  := OP (STRING | number) | "in" "[" literal ("," literal)* "]"
                | "contains" STRING | "exists"

Every error is a :class:`SegmentSyntaxError` naming the 1-based column and what was expected.
Limits (rule length, conditions, nesting, digits, durations) keep hostile input from exhausting
the stack or overflowing the database's integer types.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Literal, NoReturn, TypeAlias, TypeVar, cast

from lists.errors import InvalidInputError
from lists.segments.lifecycle import LIFECYCLE_STAGES, RFM_GROUPS

MAX_RULE_LENGTH = 10_000
MAX_CONDITIONS = 100
MAX_DEPTH = 32
MAX_ITEMS = 100
MAX_PATH = 8
MAX_DAYS = 36_500
MAX_INTEGER_DIGITS = 12
MAX_DECIMALS = 6
MAX_CAMPAIGN_ID = 2**31 - 1

NumberField = Literal["orders", "total_spent", "aov", "recency", "frequency", "monetary"]
TimeField = Literal["last_order", "first_order", "created", "opened", "clicked", "emailed"]
CampaignAction = Literal["opened", "clicked", "emailed"]
MembershipKind = Literal["list", "rfm", "lifecycle"]
Unit = Literal["h", "d", "w"]

NUMBER_FIELDS: tuple[NumberField, ...] = (
    "orders", "total_spent", "aov", "recency", "frequency", "monetary",
)
TIME_FIELDS: tuple[TimeField, ...] = (
    "last_order", "first_order", "created", "opened", "clicked", "emailed",
)
MEMBERSHIP_KINDS: tuple[MembershipKind, ...] = ("list", "rfm", "lifecycle")
_UNITS: dict[str, Unit] = {
    "h": "h", "hour": "h", "hours": "h",
    "d": "d", "day": "d", "days": "d",
    "w": "w", "week": "w", "weeks": "w",
}
_HOURS: dict[Unit, int] = {"h": 1, "d": 24, "w": 24 * 7}
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_NUMBER = re.compile(r"-?([0-9]+)(?:\.([0-9]+))?")
_DURATION = re.compile(r"([0-9]+)([A-Za-z]*)")
_FIELD_HELP = (
    "a field (orders, total_spent, aov, recency, frequency, monetary, last_order, first_order, "
    'created, opened, clicked, emailed, list, rfm, lifecycle or attr.NAME), "not" or "("'
)


class SegmentSyntaxError(InvalidInputError):
    """A rule that does not parse: the message names the 1-based column and what was expected."""

    def __init__(self, column: int, expected: str, found: str) -> None:
        super().__init__(f"at column {column}: expected {expected}, found {found}")
        self.column = column
        self.expected = expected
        self.found = found


class Op(StrEnum):
    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="


@dataclass(frozen=True, slots=True)
class NumberCondition:
    """``orders >= 2``: a purchase figure or an RFM score compared with a number."""

    field: NumberField
    op: Op
    value: Decimal


@dataclass(frozen=True, slots=True)
class TimeCondition:
    """``last_order within 90d`` (at or after now minus 90 days) or ``before 90d`` (earlier)."""

    field: TimeField
    relation: Literal["within", "before"]
    amount: int
    unit: Unit

    @property
    def delta(self) -> timedelta:
        return timedelta(hours=self.amount * _HOURS[self.unit])


@dataclass(frozen=True, slots=True)
class CampaignCondition:
    """``opened campaign 12``: an engagement event of one campaign."""

    action: CampaignAction
    campaign_id: int


@dataclass(frozen=True, slots=True)
class MembershipCondition:
    """``list = "news"``, ``rfm in ["champions", "loyal"]``: member of any of the names."""

    kind: MembershipKind
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AttrCompare:
    """``attr.country = "LU"``, ``attr.age >= 30``."""

    path: tuple[str, ...]
    op: Op
    value: str | Decimal


@dataclass(frozen=True, slots=True)
class AttrIn:
    """``attr.city in ["Esch", "Diekirch"]``: equal to any of the values."""

    path: tuple[str, ...]
    values: tuple[str | Decimal, ...]


@dataclass(frozen=True, slots=True)
class AttrContains:
    """``attr.tags contains "vip"``: an array holding the text, or a text holding it."""

    path: tuple[str, ...]
    text: str


@dataclass(frozen=True, slots=True)
class AttrExists:
    """``attr.birthday exists``: present, not null and not the empty text."""

    path: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[Node, ...]


Condition: TypeAlias = (
    NumberCondition | TimeCondition | CampaignCondition | MembershipCondition | AttrCompare
    | AttrIn | AttrContains | AttrExists
)
Node: TypeAlias = Condition | Not | And | Or


class Kind(StrEnum):
    WORD = "word"
    NUMBER = "number"
    STRING = "string"
    OP = "operator"
    LPAREN = "("
    RPAREN = ")"
    LBRACKET = "["
    RBRACKET = "]"
    COMMA = ","
    DOT = "."
    END = "end"


@dataclass(frozen=True, slots=True)
class Token:
    kind: Kind
    text: str
    column: int
    value: str = ""

    def is_word(self, *words: str) -> bool:
        return self.kind is Kind.WORD and self.text.lower() in words


_T = TypeVar("_T")
_PUNCT = {"(": Kind.LPAREN, ")": Kind.RPAREN, "[": Kind.LBRACKET, "]": Kind.RBRACKET,
          ",": Kind.COMMA, ".": Kind.DOT}
_DIGITS = "0123456789"


def _quote(text: str) -> str:
    """How rule text is shown inside an error message: quoted, escaped so that the message stays
    on one line, at most 30 characters."""
    return quote_text(text if len(text) <= 30 else text[:29] + "…")


def describe(token: Token) -> str:
    """The token as an error message names it."""
    if token.kind is Kind.END:
        return "end of rule"
    if token.kind is Kind.STRING:
        return f"the text {_quote(token.value)}"
    return _quote(token.text)


def tokenize(rule: str) -> list[Token]:
    """The tokens of ``rule``, ending with an END token."""
    tokens: list[Token] = []
    i, n = 0, len(rule)
    while i < n:
        ch = rule[i]
        if ch.isspace():
            i += 1
            continue
        column = i + 1
        if ch in _PUNCT:
            tokens.append(Token(_PUNCT[ch], ch, column))
            i += 1
        elif ch in "<>=!":
            two = rule[i:i + 2]
            if two in ("<=", ">=", "!="):
                tokens.append(Token(Kind.OP, two, column))
                i += 2
            elif ch == "!":
                found = _quote(rule[i + 1]) if i + 1 < n else "end of rule"
                raise SegmentSyntaxError(column + 1, '"=" after "!"', found)
            else:
                tokens.append(Token(Kind.OP, ch, column))
                i += 1
        elif ch == '"':
            i = _string(rule, i, tokens)
        elif ch in _DIGITS or (ch == "-" and i + 1 < n and rule[i + 1] in _DIGITS):
            j = _digits(rule, i + 1)
            if j + 1 < n and rule[j] == "." and rule[j + 1] in _DIGITS:
                j = _digits(rule, j + 1)
            # A unit glued to the number ("90d") is part of the token.
            while j < n and (rule[j].isalnum() or rule[j] == "_"):
                j += 1
            tokens.append(Token(Kind.NUMBER, rule[i:j], column))
            i = j
        elif _starts_word(ch):
            j = i + 1
            while j < n and _continues_word(rule[j]):
                j += 1
            tokens.append(Token(Kind.WORD, rule[i:j], column))
            i = j
        else:
            raise SegmentSyntaxError(column, "a field, an operator or a value", _quote(ch))
    tokens.append(Token(Kind.END, "", n + 1))
    return tokens


def _digits(rule: str, i: int) -> int:
    while i < len(rule) and rule[i] in _DIGITS:
        i += 1
    return i


def _starts_word(ch: str) -> bool:
    return ch.isalpha() or ch == "_"


def _continues_word(ch: str) -> bool:
    return ch.isalnum() or ch in "_-"


def _string(rule: str, start: int, tokens: list[Token]) -> int:
    """Read the double-quoted text starting at ``start``; returns the index after it."""
    out: list[str] = []
    i, n = start + 1, len(rule)
    while i < n:
        ch = rule[i]
        if ch == '"':
            tokens.append(Token(Kind.STRING, rule[start:i + 1], start + 1, "".join(out)))
            return i + 1
        if ch == "\\":
            i = _escape(rule, i, out)
            continue
        if ch == "\0" or "\ud800" <= ch <= "\udfff":
            raise SegmentSyntaxError(i + 1, "a printable character in the text",
                                     f"the code point U+{ord(ch):04X}")
        out.append(ch)
        i += 1
    raise SegmentSyntaxError(start + 1, 'a closing " for the text that starts here',
                             "end of rule")


def _escape(rule: str, i: int, out: list[str]) -> int:
    """Decode the backslash escape at ``i`` into ``out``; returns the index after it."""
    nxt = rule[i + 1:i + 2]
    if nxt in _ESCAPES:
        out.append(_ESCAPES[nxt])
        return i + 2
    expected = 'an escape (\\", \\\\, \\n, \\t or \\uXXXX) after "\\"'
    if nxt != "u":
        raise SegmentSyntaxError(i + 2, expected, _quote(nxt) if nxt else "end of rule")
    code = _hex4(rule, i + 2)
    if code is None:
        raise SegmentSyntaxError(i + 1, "four hex digits after \\u", _quote(rule[i:i + 6]))
    end = i + 6
    if 0xD800 <= code <= 0xDBFF and rule[end:end + 2] == "\\u":
        low = _hex4(rule, end + 2)
        if low is not None and 0xDC00 <= low <= 0xDFFF:
            out.append(chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)))
            return end + 6
    if code == 0 or 0xD800 <= code <= 0xDFFF:
        raise SegmentSyntaxError(i + 1, "a printable character in the text",
                                 _quote(rule[i:i + 6]))
    out.append(chr(code))
    return end


def _hex4(rule: str, at: int) -> int | None:
    digits = rule[at:at + 4]
    if len(digits) == 4 and all(c in "0123456789abcdefABCDEF" for c in digits):
        return int(digits, 16)
    return None


def normalize_name(kind: MembershipKind, name: str) -> str:
    """Built-in names are matched loosely ("At risk" is "at_risk"); list names exactly."""
    if kind == "list":
        return name
    return re.sub(r"[\s-]+", "_", name.strip()).lower()


class _Parser:
    def __init__(self, rule: str) -> None:
        if len(rule) > MAX_RULE_LENGTH:
            raise SegmentSyntaxError(MAX_RULE_LENGTH + 1,
                                     f"a rule of at most {MAX_RULE_LENGTH} characters",
                                     f"{len(rule)} characters")
        self.tokens = tokenize(rule)
        self.pos = 0
        self.depth = 0
        self.conditions = 0

    def peek(self) -> Token:
        return self.tokens[self.pos]

    def advance(self) -> Token:
        token = self.tokens[self.pos]
        if token.kind is not Kind.END:
            self.pos += 1
        return token

    def fail(self, token: Token, expected: str) -> NoReturn:
        raise SegmentSyntaxError(token.column, expected, describe(token))

    def rule(self) -> Node:
        node = self.or_expr()
        token = self.peek()
        if token.kind is not Kind.END:
            self.fail(token, '"and", "or" or the end of the rule')
        return node

    def or_expr(self) -> Node:
        operands = [self.and_expr()]
        while self.peek().is_word("or"):
            self.advance()
            operands.append(self.and_expr())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def and_expr(self) -> Node:
        operands = [self.not_expr()]
        while self.peek().is_word("and"):
            self.advance()
            operands.append(self.not_expr())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def not_expr(self) -> Node:
        token = self.peek()
        if token.is_word("not") or token.kind is Kind.LPAREN:
            self.advance()
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise SegmentSyntaxError(token.column,
                                         f'at most {MAX_DEPTH} nested "not" and "("',
                                         "deeper nesting")
            if token.kind is Kind.LPAREN:
                node = self.or_expr()
                if self.peek().kind is not Kind.RPAREN:
                    self.fail(self.peek(), '"and", "or" or ")"')
                self.advance()
            else:
                node = Not(self.not_expr())
            self.depth -= 1
            return node
        return self.condition()

    def condition(self) -> Node:
        token = self.advance()
        if token.kind is not Kind.WORD:
            self.fail(token, _FIELD_HELP)
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise SegmentSyntaxError(token.column, f"at most {MAX_CONDITIONS} conditions",
                                     "more")
        name = token.text.lower()
        if name == "attr":
            return self.attribute(token)
        if name in NUMBER_FIELDS:
            op = self.operator(token)
            return NumberCondition(name, op, self.number(op))
        if name in ("opened", "clicked", "emailed") and self.peek().is_word("campaign"):
            return CampaignCondition(cast(CampaignAction, name), self.campaign_id(self.advance()))
        if name in TIME_FIELDS:
            return self.time(name, token)
        if name in MEMBERSHIP_KINDS:
            return self.membership(name, token)
        self.fail(token, _FIELD_HELP)

    def operator(self, after: Token) -> Op:
        token = self.advance()
        if token.kind is not Kind.OP:
            self.fail(token, f"an operator (=, !=, <, <=, >, >=) after {_quote(after.text)}")
        return Op(token.text)

    def number(self, after: Op) -> Decimal:
        token = self.advance()
        if token.kind is not Kind.NUMBER:
            self.fail(token, f'a number after "{after}"')
        return self.number_value(token)

    def number_value(self, token: Token) -> Decimal:
        match = _NUMBER.fullmatch(token.text)
        if match is None:
            self.fail(token, "a number such as 2, -5 or 49.90")
        whole, decimals = match.group(1), match.group(2) or ""
        if len(whole.lstrip("0")) > MAX_INTEGER_DIGITS or len(decimals) > MAX_DECIMALS:
            self.fail(token, f"a number of at most {MAX_INTEGER_DIGITS} digits before and "
                             f"{MAX_DECIMALS} after the decimal point")
        return Decimal(token.text)

    def time(self, field: TimeField, after: Token) -> TimeCondition:
        token = self.advance()
        if not token.is_word("within", "before"):
            choices = '"within", "before" or "campaign"' if field in (
                "opened", "clicked", "emailed") else '"within" or "before"'
            self.fail(token, f"{choices} after {_quote(after.text)}")
        relation: Literal["within", "before"] = "within" if token.is_word("within") else "before"
        amount, unit = self.duration(token)
        return TimeCondition(field, relation, amount, unit)

    def duration(self, after: Token) -> tuple[int, Unit]:
        token = self.advance()
        expected = ("a duration such as 90d (a whole number and h, d or w) after "
                    + _quote(after.text))
        match = _DURATION.fullmatch(token.text) if token.kind is Kind.NUMBER else None
        if match is None:
            self.fail(token, expected)
        digits, suffix = match.group(1), match.group(2).lower()
        if not suffix and self.peek().kind is Kind.WORD and self.peek().text.lower() in _UNITS:
            suffix = self.advance().text.lower()
        if suffix not in _UNITS:
            self.fail(token, expected)
        unit = _UNITS[suffix]
        if len(digits.lstrip("0")) > 9 or int(digits) * _HOURS[unit] > MAX_DAYS * 24:
            self.fail(token, f"a duration of at most {MAX_DAYS} days")
        return int(digits), unit

    def campaign_id(self, after: Token) -> int:
        token = self.advance()
        text = token.text
        if (token.kind is not Kind.NUMBER or not text.isdigit() or len(text.lstrip("0")) > 10
                or not 0 < int(text) <= MAX_CAMPAIGN_ID):
            self.fail(token, f"a campaign id (a whole number) after {_quote(after.text)}")
        return int(text)

    def membership(self, kind: MembershipKind, after: Token) -> Node:
        token = self.advance()
        if token.kind is Kind.OP and token.text in ("=", "!="):
            name = self.name(kind, self.advance(), f'a quoted name after "{token.text}"')
            node = MembershipCondition(kind, (name,))
            return Not(node) if token.text == "!=" else node
        if token.is_word("in"):
            items = self.bracketed(lambda item: self.name(kind, item, "a quoted name"))
            return MembershipCondition(kind, tuple(items))
        self.fail(token, f'"=", "!=" or "in" after {_quote(after.text)}')

    def name(self, kind: MembershipKind, token: Token, expected: str) -> str:
        if token.kind is not Kind.STRING:
            self.fail(token, expected)
        name = normalize_name(kind, token.value)
        known = {"rfm": RFM_GROUPS, "lifecycle": LIFECYCLE_STAGES}.get(kind)
        if known is not None and name not in known:
            what = "an RFM group" if kind == "rfm" else "a lifecycle stage"
            self.fail(token, f"{what} ({', '.join(known)})")
        if kind == "list" and not name.strip():
            self.fail(token, "a list name")
        return name

    def bracketed(self, item: Callable[[Token], _T]) -> list[_T]:
        token = self.advance()
        if token.kind is not Kind.LBRACKET:
            self.fail(token, '"[" after "in"')
        items = [item(self.advance())]
        while True:
            token = self.advance()
            if token.kind is Kind.RBRACKET:
                return items
            if token.kind is not Kind.COMMA:
                self.fail(token, '"," or "]"')
            if len(items) >= MAX_ITEMS:
                self.fail(self.peek(), f'"]" (a list holds at most {MAX_ITEMS} values)')
            items.append(item(self.advance()))

    def attribute(self, attr: Token) -> Condition:
        path: list[str] = []
        while True:
            dot = self.advance()
            if dot.kind is not Kind.DOT:
                if path:
                    self.fail(dot, "an attribute test")
                self.fail(dot, '"." and an attribute name after "attr"')
            key = self.advance()
            if key.kind is Kind.WORD:
                path.append(key.text)
            elif key.kind is Kind.STRING and key.value and '"' not in key.value:
                path.append(key.value)
            else:
                self.fail(key, 'an attribute name (a word, or any text in double quotes '
                               'without a ")')
            if len(path) > MAX_PATH:
                self.fail(key, f"an attribute path of at most {MAX_PATH} names")
            if self.peek().kind is not Kind.DOT:
                break
        key_path = tuple(path)
        shown = _quote(_path(key_path))
        token = self.advance()
        if token.kind is Kind.OP:
            op = Op(token.text)
            value = self.advance()
            if value.kind is Kind.STRING and op in (Op.EQ, Op.NE):
                return AttrCompare(key_path, op, value.value)
            if value.kind is Kind.NUMBER:
                return AttrCompare(key_path, op, self.number_value(value))
            self.fail(value, f'a number after "{op}"' if op not in (Op.EQ, Op.NE)
                      else f'a quoted text or a number after "{op}"')
        if token.is_word("in"):
            return AttrIn(key_path, tuple(self.bracketed(self.literal)))
        if token.is_word("contains"):
            text = self.advance()
            if text.kind is not Kind.STRING or not text.value:
                self.fail(text, 'a non-empty quoted text after "contains"')
            return AttrContains(key_path, text.value)
        if token.is_word("exists"):
            return AttrExists(key_path)
        self.fail(token, f'an operator (=, !=, <, <=, >, >=), "in", "contains" or "exists" '
                         f"after {shown}")

    def literal(self, token: Token) -> str | Decimal:
        if token.kind is Kind.STRING:
            return token.value
        if token.kind is Kind.NUMBER:
            return self.number_value(token)
        self.fail(token, "a quoted text or a number")


def parse_rule(rule: str) -> Node:
    """The syntax tree of ``rule``, or a :class:`SegmentSyntaxError` naming the position."""
    return _Parser(rule).rule()


def conditions(node: Node) -> Iterator[Condition]:
    """Every condition of the tree, left to right."""
    if isinstance(node, Not):
        yield from conditions(node.operand)
    elif isinstance(node, And | Or):
        for operand in node.operands:
            yield from conditions(operand)
    else:
        yield node


def quote_text(value: str) -> str:
    """``value`` as a double-quoted text of the language."""
    out = []
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ch in "\x7f\x85\u2028\u2029":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _literal(value: str | Decimal) -> str:
    return quote_text(value) if isinstance(value, str) else format(value, "f")


def _path(path: tuple[str, ...]) -> str:
    return "attr" + "".join(
        "." + (key if _is_bare(key) else quote_text(key)) for key in path)


def _is_bare(key: str) -> bool:
    return _starts_word(key[0]) and all(_continues_word(c) for c in key[1:])


def to_text(node: Node) -> str:
    """Canonical rule text of ``node``; parsing it gives ``node`` back."""
    if isinstance(node, Or):
        return " or ".join(_wrap(op, (Or,)) for op in node.operands)
    if isinstance(node, And):
        return " and ".join(_wrap(op, (Or, And)) for op in node.operands)
    if isinstance(node, Not):
        return "not " + _wrap(node.operand, (Or, And))
    if isinstance(node, NumberCondition):
        return f"{node.field} {node.op} {format(node.value, 'f')}"
    if isinstance(node, TimeCondition):
        return f"{node.field} {node.relation} {node.amount}{node.unit}"
    if isinstance(node, CampaignCondition):
        return f"{node.action} campaign {node.campaign_id}"
    if isinstance(node, MembershipCondition):
        if len(node.names) == 1:
            return f"{node.kind} = {quote_text(node.names[0])}"
        return f"{node.kind} in [{', '.join(quote_text(n) for n in node.names)}]"
    if isinstance(node, AttrCompare):
        return f"{_path(node.path)} {node.op} {_literal(node.value)}"
    if isinstance(node, AttrIn):
        return f"{_path(node.path)} in [{', '.join(_literal(v) for v in node.values)}]"
    if isinstance(node, AttrContains):
        return f"{_path(node.path)} contains {quote_text(node.text)}"
    return f"{_path(node.path)} exists"


def _wrap(node: Node, grouped: tuple[type, ...]) -> str:
    text = to_text(node)
    return f"({text})" if isinstance(node, grouped) else text

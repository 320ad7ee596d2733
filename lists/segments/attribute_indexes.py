"""Attribute indexes: the indexes that make segment rules on contact attributes fast
(``patron segments index ATTR``; docs/segments.md, "Making attribute rules fast").

No fixed index covers arbitrary attribute keys on SQLite, so there they are per attribute and
user-managed: an expression index on exactly the JSON path the compiler renders for the
attribute's ``=`` and ``in`` tests, followed by the purchase aggregates that rules pair with
attributes (orders, last and first order, total spent), so that a rule such as
``orders >= 2 and last_order within 90d and attr.country = "LU"`` is answered from the index
without reading the contacts. The index name is derived from the attribute path; the path is
validated by the rule parser and rendered by SQLAlchemy as a quoted literal, never pasted.

On PostgreSQL the same tests are JSONB containment (``@>``), which the schema's GIN index
``ix_contacts_attributes`` serves for every attribute; a per-attribute btree would not match the
compiled expressions, so none is created there.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Connection,
    DateTime,
    Index,
    Integer,
    MetaData,
    Table,
    func,
    literal,
    text,
)
from sqlalchemy.orm import Session
from sqlalchemy.schema import CreateIndex, DropIndex

from lists.errors import InvalidInputError, NotFoundError
from lists.segments.compiler import contacts_table
from lists.segments.parser import AttrExists, SegmentSyntaxError, parse_rule, to_text

PREFIX = "ix_contacts_attr_"
GIN_INDEX = "ix_contacts_attributes"
# Read from the index entries, after the attribute: the aggregates purchase conditions test.
COVERED_COLUMNS = ("orders_count", "last_order_at", "total_spent_cents", "first_order_at")
_MAX_SLUG = 30
_ATTR = re.compile(r"json_extract\(attributes, '((?:[^']|'')*)'\)")
_JSON_PATH = re.compile(r'\$(?:\."(?:[^"\\]|\\.)*")+')
_LABEL = re.compile(r'\."((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True, slots=True)
class AttributeIndex:
    """An index serving attribute tests: ``path`` is the attribute, or None when the index
    serves every attribute (PostgreSQL's GIN index)."""

    name: str
    path: tuple[str, ...] | None

    @property
    def attribute(self) -> str:
        """The attribute as a rule writes it (``attr.country``), ``attr.*`` for every one."""
        return "attr.*" if self.path is None else attribute_text(self.path)


def attribute_text(path: tuple[str, ...]) -> str:
    """``attr.NAME`` as the rule language writes the path (quoted where it must be)."""
    return to_text(AttrExists(path)).removesuffix(" exists")


def attribute_path(spec: str) -> tuple[str, ...]:
    """The attribute path of ``spec``, written as after ``attr.`` in a rule (``country``,
    ``address.city``, ``"date of birth"``; a leading ``attr.`` is accepted), checked by the
    rule parser."""
    body = spec.strip()
    if body[:5].lower() == "attr.":
        body = body[5:]
    try:
        node = parse_rule(f"attr.{body} exists") if body else None
    except SegmentSyntaxError:
        node = None
    if not isinstance(node, AttrExists):
        raise InvalidInputError(
            f"not an attribute name: {spec!r} (write it as in a rule after attr.: country, "
            'address.city, "date of birth"; a name cannot contain a double quote)')
    return node.path


def json_path(path: tuple[str, ...]) -> str:
    """The JSON path the segment compiler renders on SQLite for ``path``: every label quoted
    and escaped as json.dumps writes keys (what SQLite 3.40 compares labels with)."""
    return "$" + "".join(f'."{json.dumps(key)[1:-1]}"' for key in path)


def index_name(path: tuple[str, ...]) -> str:
    """The name of the attribute's index: a readable slug of the path and a hash of it, within
    PostgreSQL's 63-byte limit, made only of ``[a-z0-9_]``."""
    digest = hashlib.sha256(json.dumps(list(path)).encode()).hexdigest()[:10]
    slug = re.sub(r"[^a-z0-9]+", "_", "_".join(path).lower()).strip("_")[:_MAX_SLUG].rstrip("_")
    return f"{PREFIX}{slug}_{digest}" if slug else f"{PREFIX}{digest}"


def is_attribute_index_name(name: str) -> bool:
    """Whether ``name`` is a user-managed attribute index (not part of the schema)."""
    return name.startswith(PREFIX)


def _connection(db: Session | Connection) -> Connection:
    return db.connection() if isinstance(db, Session) else db


def _sqlite_index(path: tuple[str, ...]) -> Index:
    # A private table object: an Index built on the models' table would join their metadata.
    table = Table(
        "contacts", MetaData(), Column("attributes", JSON), Column("orders_count", Integer),
        Column("last_order_at", DateTime), Column("total_spent_cents", BigInteger),
        Column("first_order_at", DateTime),
    )
    # literal_execute: rendered as a quoted SQL literal, exactly as the compiler renders it, so
    # that SQLite matches the index expression with the rule's.
    value = func.json_extract(table.c.attributes, literal(json_path(path), literal_execute=True))
    return Index(index_name(path), value, *(table.c[name] for name in COVERED_COLUMNS))


def _gin_index() -> Index:
    return next(i for i in contacts_table().indexes if i.name == GIN_INDEX)


def _sqlite_indexes(conn: Connection) -> list[AttributeIndex]:
    rows = conn.execute(text(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'contacts' "
        "AND sql IS NOT NULL ORDER BY name"))
    found = []
    for name, sql in rows:
        path = _path_of(str(sql)) if is_attribute_index_name(name) else None
        # Only the indexes this module made: their name is the one their path derives.
        if path is not None and index_name(path) == name:
            found.append(AttributeIndex(name, path))
    return sorted(found, key=lambda index: index.attribute)


def _path_of(sql: str) -> tuple[str, ...] | None:
    """The attribute path of an attribute index's stored definition."""
    match = _ATTR.search(sql)
    if match is None:
        return None
    quoted = match.group(1).replace("''", "'")
    if _JSON_PATH.fullmatch(quoted) is None:
        return None
    return tuple(json.loads(f'"{label}"') for label in _LABEL.findall(quoted))


def _has_gin(conn: Connection) -> bool:
    found = conn.execute(text(
        "SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() "
        "AND tablename = 'contacts' AND indexname = :name"), {"name": GIN_INDEX}).first()
    return found is not None


def list_attribute_indexes(db: Session | Connection) -> list[AttributeIndex]:
    """The indexes serving attribute tests, by attribute."""
    conn = _connection(db)
    if conn.dialect.name == "postgresql":
        return [AttributeIndex(GIN_INDEX, None)] if _has_gin(conn) else []
    return _sqlite_indexes(conn)


def create_attribute_index(db: Session | Connection, attribute: str) -> tuple[AttributeIndex, bool]:
    """Make rules on ``attribute`` fast; returns the index serving it and whether it was created
    now (False: it already existed). Statistics are refreshed for the planner (ANALYZE).

    SQLite: creates the attribute's index. PostgreSQL: the GIN index of the schema serves every
    attribute; it is only created if it is missing."""
    path = attribute_path(attribute)
    conn = _connection(db)
    if conn.dialect.name == "postgresql":
        if _has_gin(conn):
            return AttributeIndex(GIN_INDEX, None), False
        conn.execute(CreateIndex(_gin_index(), if_not_exists=True))
        conn.execute(text("ANALYZE contacts"))
        return AttributeIndex(GIN_INDEX, None), True
    index = AttributeIndex(index_name(path), path)
    if index in _sqlite_indexes(conn):
        return index, False
    conn.execute(CreateIndex(_sqlite_index(path), if_not_exists=True))
    conn.exec_driver_sql(f"ANALYZE {conn.dialect.identifier_preparer.quote(index.name)}")
    return index, True


def drop_attribute_index(db: Session | Connection, attribute: str) -> AttributeIndex:
    """Drop the index of ``attribute`` made by :func:`create_attribute_index` (SQLite); a
    NotFoundError if there is none. PostgreSQL has no per-attribute index to drop."""
    path = attribute_path(attribute)
    shown = attribute_text(path)
    conn = _connection(db)
    if conn.dialect.name == "postgresql":
        raise NotFoundError(
            f"{shown} has no index of its own: on PostgreSQL {GIN_INDEX}, part of the schema, "
            "serves every attribute")
    index = AttributeIndex(index_name(path), path)
    if index not in _sqlite_indexes(conn):
        raise NotFoundError(f"{shown} has no index (see `patron segments indexes`)")
    conn.execute(DropIndex(_sqlite_index(path), if_exists=True))
    return index


SchemaFilter = Callable[[Any, str | None, str, bool, Any], bool]


def schema_comparison_filter(dialect: str) -> SchemaFilter:
    """An Alembic ``include_object`` hook for comparing the models with a ``dialect`` database:
    it leaves out the user-managed attribute indexes, which no migration knows, and indexes the
    models declare for another dialect only (``Index(…).ddl_if(dialect=…)``)."""

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if type_ != "index":
            return True
        if name is not None and is_attribute_index_name(name):
            return False
        only = getattr(getattr(obj, "_ddl_if", None), "dialect", None)
        if only is None:
            return True
        return dialect == only if isinstance(only, str) else dialect in only

    return include

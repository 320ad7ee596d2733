"""Saved segments (A7): a name and a rule, validated when saved and evaluated whenever used, so a
segment always reflects the contacts as they are at that moment."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import column, func, inspect, select, table
from sqlalchemy.orm import Session
from sqlmodel import col

from lists.errors import ConflictError, InvalidInputError, NotFoundError
from lists.models import Contact, MailingList, Segment
from lists.segments.compiler import compile_rule, contacts_table, table_of
from lists.segments.parser import MembershipCondition, Node, conditions, parse_rule

MAX_NAME = 200


def _node(rule: str | Node) -> Node:
    return parse_rule(rule) if isinstance(rule, str) else rule


def check_references(session: Session, rule: str | Node) -> Node:
    """The parsed rule, after checking that every list it names exists (a missing list is an
    error naming it rather than a segment that silently matches nobody)."""
    node = _node(rule)
    names = {name for cond in conditions(node)
             if isinstance(cond, MembershipCondition) and cond.kind == "list"
             for name in cond.names}
    if names:
        known = set(session.execute(
            select(col(MailingList.name)).where(col(MailingList.name).in_(names))
        ).scalars())
        missing = sorted(names - known)
        if missing:
            raise NotFoundError(f"the rule names list {missing[0]!r}, which does not exist "
                                "(see `patron lists ls`)")
    return node


def count_segment(session: Session, rule: str | Node, now: datetime) -> int:
    """How many contacts the rule selects at ``now``."""
    node = check_references(session, rule)
    contacts = contacts_table()
    query = select(func.count()).select_from(contacts).where(compile_rule(node, now))
    return int(session.execute(query).scalar_one())


def sample_segment(session: Session, rule: str | Node, now: datetime,
                   limit: int = 20) -> list[Contact]:
    """Up to ``limit`` contacts the rule selects at ``now``, oldest contacts first."""
    node = check_references(session, rule)
    query = (select(Contact).where(compile_rule(node, now))
             .order_by(col(Contact.id)).limit(max(limit, 0)))
    return list(session.execute(query).scalars())


def create_segment(session: Session, name: str, rule: str, now: datetime) -> Segment:
    """Save a segment; the rule must parse, compile and name existing lists."""
    name = name.strip()
    if not name:
        raise InvalidInputError("a segment needs a name")
    if len(name) > MAX_NAME:
        raise InvalidInputError(f"a segment name is at most {MAX_NAME} characters")
    rule = rule.strip()
    compile_rule(check_references(session, rule), now)
    taken = session.execute(select(col(Segment.id)).where(col(Segment.name) == name)).first()
    if taken is not None:
        raise ConflictError(f"segment {name!r} already exists")
    row = Segment(name=name, rule=rule, created_at=now)
    session.add(row)
    session.flush()
    return row


def get_segment(session: Session, name: str) -> Segment:
    """The saved segment called ``name``, or a NotFoundError naming it."""
    row = session.execute(select(Segment).where(col(Segment.name) == name)).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"no segment named {name!r} (see `patron segments ls`)")
    return row


def list_segments(session: Session) -> list[Segment]:
    """Every saved segment, by name."""
    return list(session.execute(select(Segment).order_by(col(Segment.name))).scalars())


def delete_segment(session: Session, name: str) -> None:
    """Delete a saved segment, unless a row elsewhere (a campaign) still refers to it: the
    reference would be set to NULL, silently widening that campaign's audience. The references
    are found in the database's own foreign keys, whatever models are loaded."""
    row = get_segment(session, name)
    schema = inspect(session.connection())
    segments = table_of(Segment).name
    for table_name in schema.get_table_names():
        for fk in schema.get_foreign_keys(table_name):
            if fk["referred_table"] != segments:
                continue
            [key] = fk["constrained_columns"]
            referring = table(table_name, column(key))
            used = session.execute(select(func.count()).select_from(referring)
                                   .where(referring.c[key] == row.id)).scalar_one()
            if used:
                raise ConflictError(f"segment {name!r} is still used by {used} row(s) of "
                                    f"{table_name}; change those first")
    session.delete(row)
    session.flush()

"""`patron segments create|count|ls|show|delete|index|indexes`: saved and built-in segments, and
the attribute indexes that make rules on attributes fast (docs/segments.md is the rule language
reference)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console

from lists.models import Contact
from lists.segments import (
    LIFECYCLE_STAGES,
    RFM_GROUPS,
    count_segment,
    create_segment,
    delete_segment,
    get_segment,
    list_segments,
    sample_segment,
)
from lists.segments.attribute_indexes import (
    attribute_path,
    attribute_text,
    create_attribute_index,
    drop_attribute_index,
    list_attribute_indexes,
)
from patron.cli.app import JsonOption, get_ctx
from patron.cli.output import emit, table

segments_app = typer.Typer(
    help="Segments: rules that select contacts, such as 'orders >= 2 and last_order within 90d' "
    "(the language is described in docs/segments.md).",
    no_args_is_help=True,
)

_RULE_HELP = 'A segment rule, for example: orders >= 2 and attr.country = "LU".'


def register(app: typer.Typer) -> None:
    app.add_typer(segments_app, name="segments")


@segments_app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Name of the new segment.")],
    rule: Annotated[str, typer.Option("--rule", metavar="EXPR", help=_RULE_HELP)],
    as_json: JsonOption = False,
) -> None:
    """Save a segment; its rule is checked now and evaluated whenever the segment is used."""
    context = get_ctx(ctx)
    now = context.now()
    with context.session() as session:
        row = create_segment(session, name, rule, now)
        doc = {"id": row.id, "name": row.name, "rule": row.rule,
               "count": count_segment(session, row.rule, now)}
    emit(doc, as_json, lambda c: c.print(
        f"created segment {doc['name']!r}: {doc['count']} contacts match it now"))


@segments_app.command("count")
def count(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="A saved segment.")] = None,
    rule: Annotated[str | None, typer.Option("--rule", metavar="EXPR", help=_RULE_HELP)] = None,
    as_json: JsonOption = False,
) -> None:
    """Count the contacts of a saved segment (NAME) or of a rule (--rule EXPR)."""
    if (name is None) == (rule is None):
        raise typer.BadParameter("give either a segment NAME or --rule EXPR (not both)",
                                 param_hint="NAME / --rule")
    context = get_ctx(ctx)
    with context.session() as session:
        text = rule if rule is not None else get_segment(session, str(name)).rule
        n = count_segment(session, text, context.now())
    emit({"count": n}, as_json, lambda c: c.print(str(n)))


@segments_app.command("ls")
def ls(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Show the saved segments and the built-in lifecycle stages and RFM groups."""
    context = get_ctx(ctx)
    with context.session() as session:
        docs: list[dict[str, Any]] = [
            {"name": row.name, "kind": "saved", "rule": row.rule, "created_at": row.created_at}
            for row in list_segments(session)
        ]
    for kind, definitions in (("lifecycle", LIFECYCLE_STAGES), ("rfm", RFM_GROUPS)):
        docs += [{"name": name, "kind": kind, "rule": f'{kind} = "{name}"',
                  "definition": d.rule, "description": d.description}
                 for name, d in definitions.items()]

    def human(c: Console) -> None:
        c.print(table(None, ["name", "kind", "rule", "meaning"],
                      [[d["name"], d["kind"], d["rule"], d.get("description", "")]
                       for d in docs]))
        if not any(d["kind"] == "saved" for d in docs):
            c.print("no saved segments yet: `patron segments create NAME --rule EXPR`")

    emit(docs, as_json, human)


def _member(contact: Contact) -> dict[str, Any]:
    return {"id": contact.id, "email": contact.email, "first_name": contact.first_name,
            "last_name": contact.last_name, "orders": contact.orders_count,
            "total_spent_cents": contact.total_spent_cents,
            "last_order_at": contact.last_order_at}


@segments_app.command("show")
def show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A saved segment.")],
    limit: Annotated[int, typer.Option(min=0, max=1000, help="How many contacts to show.")] = 10,
    as_json: JsonOption = False,
) -> None:
    """A saved segment's rule, how many contacts it selects now, and some of them."""
    context = get_ctx(ctx)
    now = context.now()
    with context.session() as session:
        row = get_segment(session, name)
        doc: dict[str, Any] = {
            "id": row.id, "name": row.name, "rule": row.rule, "created_at": row.created_at,
               "count": count_segment(session, row.rule, now),
               "sample": [_member(c) for c in sample_segment(session, row.rule, now, limit)]}

    def human(c: Console) -> None:
        c.print(f"{doc['name']}: {doc['rule']}")
        c.print(f"{doc['count']} contacts match now")
        if doc["sample"]:
            c.print(table(None, ["email", "name", "orders", "total spent", "last order"], [
                [m["email"], " ".join(filter(None, [m["first_name"], m["last_name"]])),
                 m["orders"], f"{m['total_spent_cents'] / 100:.2f}",
                 m["last_order_at"].date().isoformat() if m["last_order_at"] else ""]
                for m in doc["sample"]]))

    emit(doc, as_json, human)


@segments_app.command("delete")
def delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A saved segment.")],
    as_json: JsonOption = False,
) -> None:
    """Delete a saved segment (refused while a campaign still uses it)."""
    context = get_ctx(ctx)
    with context.session() as session:
        delete_segment(session, name)
    emit({"deleted": name}, as_json, lambda c: c.print(f"deleted segment {name!r}"))


@segments_app.command("index")
def index(
    ctx: typer.Context,
    attribute: Annotated[str, typer.Argument(
        metavar="ATTR", help='An attribute as a rule names it after "attr.": country, '
        'address.city, "date of birth".')],
    drop: Annotated[bool, typer.Option("--drop", help="Drop the attribute's index.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Index an attribute so that rules testing it with = or in are fast (with --drop: remove
    the index). On PostgreSQL one index of the schema already serves every attribute."""
    context = get_ctx(ctx)
    shown = attribute_text(attribute_path(attribute))
    with context.session() as session:
        if drop:
            gone = drop_attribute_index(session, attribute)
            doc: dict[str, Any] = {"attribute": shown, "index": gone.name, "dropped": True}
            message = f"dropped index {gone.name} of {shown}"
        else:
            made, created = create_attribute_index(session, attribute)
            doc = {"attribute": shown, "index": made.name, "created": created}
            every = " (it serves every attribute)" if made.path is None else ""
            message = (f"created index {made.name} for {shown}{every}" if created
                       else f"{shown} is already indexed by {made.name}{every}")
    emit(doc, as_json, lambda c: c.print(message))


@segments_app.command("indexes")
def indexes(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the attribute indexes and the attributes they serve (attr.* is every attribute)."""
    context = get_ctx(ctx)
    with context.session() as session:
        docs = [{"attribute": i.attribute, "index": i.name,
                 "path": list(i.path) if i.path is not None else None}
                for i in list_attribute_indexes(session)]

    def human(c: Console) -> None:
        if not docs:
            c.print("no attribute indexes: `patron segments index ATTR` creates one")
            return
        c.print(table(None, ["attribute", "index"], [[d["attribute"], d["index"]] for d in docs]))

    emit(docs, as_json, human)

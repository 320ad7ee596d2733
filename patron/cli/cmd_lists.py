"""`patron lists create|ls`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from lists.mailing_lists import create_list, list_summaries
from patron.cli.app import JsonOption, get_ctx
from patron.cli.output import emit, table

lists_app = typer.Typer(help="Mailing lists.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(lists_app, name="lists")


@lists_app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Name of the new list.")],
    single_opt_in: Annotated[
        bool,
        typer.Option("--single-opt-in", help="Confirm subscribers at once (no confirmation mail)."),
    ] = False,
    description: Annotated[str, typer.Option(help="What the list is for.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Create a list (double opt-in unless --single-opt-in)."""
    context = get_ctx(ctx)
    with context.session() as session:
        row = create_list(session, name, context.now(), double_opt_in=not single_opt_in,
                          description=description)
        doc = {"id": row.id, "name": row.name, "double_opt_in": row.double_opt_in}
    mode = "double opt-in" if doc["double_opt_in"] else "single opt-in"
    emit(doc, as_json, lambda c: c.print(f"created list {name!r} ({mode})"))


@lists_app.command("ls")
def ls(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Show every list with its subscriber counts."""
    context = get_ctx(ctx)
    with context.session() as session:
        rows = list_summaries(session)
    docs = [
        {"id": r.id, "name": r.name, "double_opt_in": r.double_opt_in, "confirmed": r.confirmed,
         "pending": r.pending, "unsubscribed": r.unsubscribed}
        for r in rows
    ]

    def human(c: Console) -> None:
        if not docs:
            c.print("no lists yet: `patron lists create NAME`")
            return
        c.print(table(None, ["name", "opt-in", "confirmed", "pending", "unsubscribed"],
                      [[d["name"], "double" if d["double_opt_in"] else "single", d["confirmed"],
                        d["pending"], d["unsubscribed"]] for d in docs]))

    emit(docs, as_json, human)

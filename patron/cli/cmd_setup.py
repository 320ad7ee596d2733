"""`patron init` and `patron config`."""

from __future__ import annotations

import typer
from rich.console import Console

from patron.cli.app import JsonOption, get_ctx
from patron.cli.output import emit, table
from patron.db import migrate
from patron.settings import effective_settings


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("config")(config)


def init(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Create or migrate the database."""
    context = get_ctx(ctx)
    revision = migrate(context.engine(check=False))
    url = effective_settings(context.settings, context.cli_overrides)[0]["value"]
    emit(
        {"database": url, "revision": revision},
        as_json,
        lambda c: c.print(f"database ready at revision {revision}: {url}"),
    )


def config(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Show the effective settings and where each comes from (secrets masked)."""
    context = get_ctx(ctx)
    rows = effective_settings(context.settings, context.cli_overrides)

    def human(c: Console) -> None:
        c.print(table(None, ["setting", "value", "source", "environment"],
                      [[r["setting"], r["value"], r["source"], r["env"]] for r in rows]))

    emit({r["setting"]: {"value": r["value"], "source": r["source"]} for r in rows}, as_json, human)

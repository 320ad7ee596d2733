"""`patron campaigns …`: create, list, show, preview, test-send; sending controls live in
cmd_sending.py and register onto the same group."""

from __future__ import annotations

import typer

campaigns_app = typer.Typer(help="Campaigns: create, preview, send, control.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    from patron.cli import cmd_sending

    cmd_sending.register_sending(campaigns_app, app)
    app.add_typer(campaigns_app, name="campaigns")

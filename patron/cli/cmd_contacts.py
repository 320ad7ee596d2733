"""`patron contacts …` and `patron unsubscribe`."""

from __future__ import annotations

import typer

contacts_app = typer.Typer(help="Contacts: import, show, export, erase.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    from patron.cli import cmd_imports

    cmd_imports.register_contacts_import(contacts_app)
    app.add_typer(contacts_app, name="contacts")

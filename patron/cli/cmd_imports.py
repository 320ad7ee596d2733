"""`patron contacts import` and `patron orders import`."""

from __future__ import annotations

import typer


def register_contacts_import(contacts_app: typer.Typer) -> None:
    """Adds `import` to the contacts group."""

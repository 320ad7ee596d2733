"""`patron contacts` commands."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Placeholder until the contacts commands land."""

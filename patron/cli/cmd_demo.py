"""`patron demo` commands."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Placeholder until the demo commands land."""

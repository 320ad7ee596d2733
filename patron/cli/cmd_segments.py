"""`patron segments` commands."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Placeholder until the segments commands land."""

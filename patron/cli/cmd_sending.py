"""`patron campaigns schedule|send|pause|resume|cancel|stats` and `patron worker`."""

from __future__ import annotations

import typer


def register_sending(campaigns_app: typer.Typer, app: typer.Typer) -> None:
    """Adds the sending commands to the campaigns group and `worker` to the root."""

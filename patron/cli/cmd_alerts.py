"""`patron alerts`: what the workers raised for an operator (campaigns paused by their complaint
or bounce rates, providers blocking us) and each recipient provider's current pace."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console

from patron.cli.app import JsonOption, get_ctx
from patron.cli.output import emit


def alerts_cmd(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(
        "--limit", min=1, max=10_000, help="How many of the newest alerts to show.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Delivery alerts, newest first, and the providers that are paused or slowed down.

    Exit status 0 either way: scripts read `alerts` and `providers` from --json."""
    from sqlalchemy import or_, select
    from sqlmodel import col

    from campaigns.delivery.alerts import recent_alerts
    from campaigns.delivery.throttle import Pace
    from campaigns.models import ProviderState

    context = get_ctx(ctx)
    now = context.now()
    d = context.settings.delivery

    def pace(p: ProviderState) -> float:
        # The stored factor is the one set at the last deferral; it recovers from there.
        return Pace(p.factor, p.last_deferral_at).effective(
            now, d.slowdown_recovery_step, d.slowdown_recovery_seconds
        )
    with context.session() as session:
        alerts: list[dict[str, Any]] = [
            {"id": a.id, "at": a.created_at, "level": a.level, "kind": a.kind,
             "campaign_id": a.campaign_id, "provider": a.provider, "message": a.message}
            for a in recent_alerts(session, limit)
        ]
        states = session.execute(
            select(ProviderState)
            .where(or_(col(ProviderState.factor) < 1.0, col(ProviderState.paused_until) > now))
            .order_by(col(ProviderState.provider))
        ).scalars()
        providers: list[dict[str, Any]] = [
            {"provider": p.provider,
             "paused_until": p.paused_until if _after(p.paused_until, now) else None,
             "pause_reason": p.pause_reason if _after(p.paused_until, now) else None,
             "pace": round(pace(p), 3), "last_deferral_at": p.last_deferral_at}
            for p in states
            if _after(p.paused_until, now) or pace(p) < 1.0
        ]
    document: dict[str, Any] = {"alerts": alerts, "providers": providers}

    def human(c: Console) -> None:
        # One line each (a table wraps the messages past reading in a narrow terminal).
        c.print("Alerts, newest first:" if alerts else "No alerts.")
        for a in alerts:
            about = ", ".join(
                part for part in (
                    f"campaign {a['campaign_id']}" if a["campaign_id"] is not None else "",
                    a["provider"] or "",
                ) if part
            )
            # Messages quote the receiving servers' replies: printed as they are, not as markup.
            c.print(f"  {_at(a['at'])}  {a['level']:<8} {a['kind']}"
                    + (f" ({about})" if about else "") + f": {a['message']}", markup=False)
        if providers:
            c.print("Providers paused or slowed down:")
        for p in providers:
            state = (f"paused until {_at(p['paused_until'])} ({p['pause_reason']})"
                     if p["paused_until"] else "not paused")
            c.print(f"  {p['provider']}: {state}, pace {p['pace']:.0%}", markup=False)

    emit(document, as_json, human)


def _after(moment: datetime | None, now: datetime) -> bool:
    return moment is not None and moment > now


def _at(moment: datetime | None) -> str:
    return "" if moment is None else f"{moment:%Y-%m-%d %H:%M} UTC"

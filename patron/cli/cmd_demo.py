"""`patron demo`: build the demo shop and show what it holds."""

from __future__ import annotations

import shlex
import time
from typing import Annotated, Any

import typer
from rich.console import Console

from patron.cli.app import JsonOption, get_ctx
from patron.cli.cmd_reports import print_retention
from patron.cli.output import emit, table
from patron.demo import DEFAULT_CONTACTS, DEFAULT_SEED, REPORT_DAYS, DemoResult, run_demo


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    ctx: typer.Context,
    contacts: Annotated[
        int, typer.Option("--contacts", help="How many people the demo shop has.", min=1)
    ] = DEFAULT_CONTACTS,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the generator (same seed, same shop).")
    ] = DEFAULT_SEED,
    as_json: JsonOption = False,
) -> None:
    """Build a demo shop (contacts, lists, consent, two years of orders) and report on it.

    Without --db it goes to demo.sqlite3 in the data directory, recreated each run; with
    --db the database must be empty."""
    context = get_ctx(ctx)
    started = time.monotonic()
    # The key later commands will use: PATRON_SECRET_KEY if set, else the one stored in the
    # demo database (what AppContext.key does once the database exists).
    configured = context.settings.secret_key
    secret = configured.get_secret_value() if configured is not None else ""
    key = secret.encode() if secret else None
    result = run_demo(
        context.cli_overrides.get("database_url"), contacts=contacts, seed=seed,
        now=context.now(), key=key,
    )
    elapsed = time.monotonic() - started
    emit(_document(result, elapsed), as_json, lambda c: _print(c, result, elapsed))


def _document(result: DemoResult, elapsed: float) -> dict[str, Any]:
    return {
        "database": result.url,
        "path": result.path,
        "contacts": result.contacts,
        "refused": result.refused_by_reason,
        "lists": [
            {"name": s.name, "double_opt_in": s.double_opt_in, "confirmed": s.confirmed,
             "pending": s.pending, "unsubscribed": s.unsubscribed}
            for s in result.lists
        ],
        "orders": result.orders,
        "history_start": result.history_start,
        "revenue": result.revenue_cents / 100,
        "currency": result.currency,
        "suppressions": result.suppressions,
        "confirmations_queued": result.confirmations_queued,
        "retention": result.report.to_document(),
        "seconds": round(elapsed, 2),
    }


def _print(c: Console, result: DemoResult, elapsed: float) -> None:
    where = result.path if result.path is not None else result.url
    c.print(f"[bold]Demo shop ready[/bold] in {elapsed:.1f} s: {where}")
    refused = ", ".join(f"{n} {reason}" for reason, n in sorted(result.refused_by_reason.items()))
    c.print(f"  contacts: {result.contacts:,}" + (f" (refused at import: {refused})"
                                                   if refused else ""))
    c.print(f"  orders: {result.orders:,} since {result.history_start:%Y-%m-%d}, revenue "
            f"{result.revenue_cents / 100:,.2f} {result.currency}")
    suppressed = ", ".join(f"{n} {reason}" for reason, n in sorted(result.suppressions.items()))
    c.print(f"  suppressed addresses: {sum(result.suppressions.values())}"
            + (f" ({suppressed})" if suppressed else ""))
    c.print(table(None, ["list", "opt-in", "confirmed", "pending", "unsubscribed"],
                  [[s.name, "double" if s.double_opt_in else "single", s.confirmed, s.pending,
                    s.unsubscribed] for s in result.lists]))
    if result.confirmations_queued:
        c.print(f"  double opt-in confirmations queued: {result.confirmations_queued} (recent "
                "pending sign-ups; `patron worker` sends them)")
    c.print()
    c.print("Point other commands at it:")
    c.print(f"  export PATRON_DATABASE_URL={shlex.quote(result.url)}", soft_wrap=True)
    c.print()
    c.print(f"Retention over the last {REPORT_DAYS} days:")
    print_retention(c, result.report)

"""`patron report retention`: the shop's retention KPIs (M7) with comparison periods."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from lists.errors import InvalidInputError
from lists.retention import DEFAULT_ACTIVE_WINDOW_DAYS, RetentionReport, retention_report
from patron.cli.app import JsonOption, get_ctx
from patron.cli.output import emit

report_app = typer.Typer(help="Reports: store retention.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(report_app, name="report")


def parse_moment(text: str, option: str) -> datetime:
    """YYYY-MM-DD (UTC midnight) or an ISO 8601 datetime (UTC when it has no offset)."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInputError(
            f"invalid {option} {text!r}: use YYYY-MM-DD or an ISO 8601 datetime"
        ) from None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


@report_app.command("retention")
def retention(
    ctx: typer.Context,
    start: Annotated[
        str, typer.Option("--start", help="First moment of the period: YYYY-MM-DD or ISO 8601.")
    ],
    end: Annotated[
        str, typer.Option("--end", help="End of the period, excluded: YYYY-MM-DD or ISO 8601.")
    ],
    active_window_days: Annotated[
        int,
        typer.Option(
            "--active-window-days",
            help="A customer is active if they ordered within this many days.",
        ),
    ] = DEFAULT_ACTIVE_WINDOW_DAYS,
    currency: Annotated[
        str | None,
        typer.Option(
            "--currency", help="Currency of the money figures (default: that of the latest orders)."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Store retention KPIs of [start, end) beside the previous period and a year earlier."""
    begin, finish = parse_moment(start, "--start"), parse_moment(end, "--end")
    if finish <= begin:
        raise InvalidInputError("--end must be after --start")
    context = get_ctx(ctx)
    with context.session() as session:
        report = retention_report(
            session, begin, finish, active_window_days=active_window_days, currency=currency
        )
    emit(report.to_document(), as_json, lambda c: print_retention(c, report))


ROWS = (
    ("customer retention", "customer_retention_rate", "pct"),
    ("churn", "churn_rate", "pct"),
    ("repeat purchase rate", "repeat_purchase_rate", "pct"),
    ("loyal customer rate", "loyal_customer_rate", "pct"),
    ("activation rate", "activation_rate", "pct"),
    ("average order value", "average_order_value", "money"),
    ("purchase frequency", "purchase_frequency", "num"),
    ("customer lifetime value", "customer_lifetime_value", "money"),
    ("orders", "orders", "int"),
    ("revenue", "revenue", "money"),
    ("customers", "customers", "int"),
    ("new customers", "new_customers", "int"),
    ("active at start", "active_at_start", "int"),
    ("active at end", "active_at_end", "int"),
    ("contacts", "contacts", "int"),
)


def _cell(value: Any, kind: str, currency: str | None) -> str:
    if value is None:
        return "–"
    if kind == "pct":
        return f"{value:.2f} %"
    if kind == "money":
        return f"{value:,.2f} {currency or ''}".rstrip()
    if kind == "num":
        return f"{value:.2f}"
    return f"{value:,}"


def _span(figures: dict[str, Any]) -> str:
    start, end = figures["start"], figures["end"]
    fmt = "%Y-%m-%d" if start.time() == end.time() == datetime.min.time() else "%Y-%m-%d %H:%M"
    return f"{start.strftime(fmt)}\n→ {end.strftime(fmt)}"


def print_retention(console: Console, report: RetentionReport) -> None:
    """The three periods side by side, one KPI per row."""
    table = Table(
        title=f"Store retention (active window {report.active_window_days} d)",
        show_edge=False,
        header_style="bold",
    )
    table.add_column("", no_wrap=True)
    for label, figures in (
        ("this period", report.current),
        ("previous", report.previous),
        ("year ago", report.year_ago),
    ):
        table.add_column(f"{label}\n{_span(figures)}", justify="right")
    for label, key, kind in ROWS:
        table.add_row(
            label,
            *(_cell(f[key], kind, report.currency)
              for f in (report.current, report.previous, report.year_ago)),
        )
    console.print(table)
    console.print("– : not defined (nothing to divide by)", style="dim")

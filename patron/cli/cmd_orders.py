"""`patron orders import`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from lists.imports.orders import import_orders
from patron.cli.app import JsonOption, get_ctx
from patron.cli.cmd_imports import RejectsOption, import_progress, print_rejects
from patron.cli.output import emit

orders_app = typer.Typer(help="Shop orders.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(orders_app, name="orders")


@orders_app.command("import")
def orders_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV file (UTF-8, `,` or `;`) of orders.")],
    source: Annotated[
        str,
        typer.Option(
            "--source", help="Where the orders come from; an order is unique per source and id."
        ),
    ] = "csv",
    rejects: RejectsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Import orders from a CSV file; refused rows go to a rejects file.

    Columns: order_id, email, total, currency, ordered_at (ISO 8601; UTC when it has no
    offset), and optionally discount_code and customer_id. A customer who is not a contact yet
    becomes one, without any subscription. Importing the same file again changes nothing."""
    context = get_ctx(ctx)
    engine = context.engine()
    with import_progress(enabled=not as_json, label=file.name) as progress:
        summary = import_orders(
            engine, file, now=context.now(), source=source, rejects_path=rejects,
            progress=progress, key=context.key,
        )

    def human(c: Console) -> None:
        c.print(
            f"{file.name}: {summary.rows:,} rows: {summary.imported:,} imported, "
            f"{summary.updated:,} updated, {summary.unchanged:,} unchanged, "
            f"{summary.rejected:,} rejected; {summary.contacts_created:,} new contacts "
            "(customers, not subscribed to any list)",
            markup=False,
        )
        print_rejects(c, summary.rejected_by_reason, summary.rejects_file)

    emit(summary.as_dict(), as_json, human)

"""`patron contacts import` (and the progress bar and rejects summary `orders import` shares)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from lists.imports.contacts import import_contacts
from patron.cli.app import JsonOption, get_ctx
from patron.cli.output import emit

RejectsOption = Annotated[
    Path | None,
    typer.Option(
        "--rejects",
        help="Where to write refused rows (default: <file>.rejects.csv beside the input).",
        metavar="PATH",
    ),
]


def register_contacts_import(contacts_app: typer.Typer) -> None:
    """Adds `import` to the contacts group."""
    contacts_app.command("import")(contacts_import)


def contacts_import(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(help="CSV file (UTF-8, `,` or `;`) with an email column.")
    ],
    list_name: Annotated[str, typer.Option("--list", help="List to subscribe the contacts to.")],
    consent_source: Annotated[
        str,
        typer.Option(
            "--consent-source",
            help="Where and how these people gave consent (recorded in the consent ledger).",
        ),
    ],
    confirmed: Annotated[
        bool,
        typer.Option(
            "--confirmed",
            help="Attest that consent was already confirmed elsewhere: no confirmation mail on a "
            "double opt-in list.",
        ),
    ] = False,
    rejects: RejectsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Import contacts from a CSV file into a list; refused rows go to a rejects file.

    Columns: email (required), first_name, last_name, locale, timezone; any other column is
    stored as an attribute. Importing the same file again changes nothing."""
    context = get_ctx(ctx)
    hygiene = context.settings.hygiene
    engine = context.engine()
    with import_progress(enabled=not as_json, label=file.name) as progress:
        summary = import_contacts(
            engine,
            context.key,
            file,
            list_name=list_name,
            consent_source=consent_source,
            now=context.now(),
            confirmed=confirmed,
            rejects_path=rejects,
            exclude_role=hygiene.exclude_role_addresses,
            exclude_disposable=hygiene.exclude_disposable_domains,
            progress=progress,
        )

    def human(c: Console) -> None:
        c.print(
            f"{file.name}: {summary.rows:,} rows: {summary.imported:,} imported, "
            f"{summary.updated:,} updated, {summary.unchanged:,} unchanged, "
            f"{summary.rejected:,} rejected",
            markup=False,
        )
        if summary.pending or summary.confirmed:
            note = " (they get the confirmation mail first)" if summary.pending else ""
            c.print(
                f"list {list_name!r}: {summary.pending:,} now pending{note}, "
                f"{summary.confirmed:,} now confirmed",
                markup=False,
            )
        print_rejects(c, summary.rejected_by_reason, summary.rejects_file)

    emit(summary.as_dict(), as_json, human)


def print_rejects(c: Console, reasons: Mapping[str, int], rejects_file: Path | None) -> None:
    """The rejects by reason, and where the rejects file is."""
    if not reasons:
        return
    c.print("rejected rows by reason:", markup=False)
    width = max(len(f"{n:,}") for n in reasons.values())
    for reason, count in reasons.items():
        c.print(f"  {count:>{width},}  {reason}", markup=False)
    if rejects_file is not None:
        c.print(
            f"rejects written to {rejects_file} (line number and reason first, then the row "
            "as it was: fix the rows and import that file again)",
            markup=False,
        )


@contextmanager
def import_progress(*, enabled: bool, label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A transient progress bar on stderr, fed with (bytes done, bytes total); none when
    stderr is not a terminal (cron, CI, pipes), where it would only leave noise."""
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield None
        return
    bar = Progress(
        TextColumn("[bold]importing[/] {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    task = bar.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield update

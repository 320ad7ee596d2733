"""How an import run proceeds: batches of checked rows, each written in one committed
transaction (a killed import keeps every batch it committed), rejects written in file order
after their batch, and the record of the run (shown in the TUI's imports view)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from lists.imports.bulk import Bulk
from lists.imports.csvfile import RejectsWriter
from lists.imports.reader import ParsedBatch, Reject
from lists.models import ImportRun

T = TypeVar("T", bound=tuple[Any, ...])


class RunCounts(Protocol):
    """The counts every import summary has."""

    @property
    def rows(self) -> int: ...
    @property
    def imported(self) -> int: ...
    @property
    def updated(self) -> int: ...
    @property
    def unchanged(self) -> int: ...
    @property
    def rejected(self) -> int: ...
    @property
    def rejects_file(self) -> Path | None: ...


def run_batches(
    engine: Engine,
    batches: Iterable[ParsedBatch[T]],
    writer: RejectsWriter,
    *,
    apply: Callable[[Bulk, list[T], list[Reject]], None],
    bytes_total: int,
    progress: Callable[[int, int], None] | None,
    rows_per_commit: int = 0,
) -> int:
    """Hand each batch's accepted rows to ``apply`` inside a committed transaction (``apply``
    may refuse more rows), then write the batches' rejects in line order. Consecutive batches
    share one transaction until it holds ``rows_per_commit`` accepted rows (0: one each): a
    commit costs about a page write per random index entry, which larger transactions share.
    Returns the number of rows read."""
    rows = 0
    held = 0
    pending: list[Reject] = []
    bytes_done = 0
    with ExitStack() as open_tx:
        bulk: Bulk | None = None
        for batch in batches:
            rows += len(batch.accepted) + len(batch.rejects)
            rejects = list(batch.rejects)
            if batch.accepted:
                if bulk is None:
                    bulk = open_tx.enter_context(Bulk.transaction(engine))
                apply(bulk, batch.accepted, rejects)
                held += len(batch.accepted)
            pending.extend(sorted(rejects, key=lambda r: r[0]))
            bytes_done = batch.bytes_done
            if held >= rows_per_commit:
                open_tx.close()  # commits
                bulk, held = None, 0
                _written(writer, pending, progress, bytes_done, bytes_total)
        open_tx.close()
    _written(writer, pending, None, bytes_done, bytes_total)
    if progress is not None:
        progress(bytes_total, bytes_total)
    return rows


def _written(
    writer: RejectsWriter,
    rejects: list[Reject],
    progress: Callable[[int, int], None] | None,
    bytes_done: int,
    bytes_total: int,
) -> None:
    for line, reason, detail, fields in rejects:
        writer.write(line, reason, detail, fields)
    rejects.clear()
    writer.flush()
    if progress is not None:
        progress(bytes_done, bytes_total)


def file_sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def start_run(
    engine: Engine,
    path: Path,
    *,
    kind: str,
    now: datetime,
    list_id: int | None = None,
    consent_source: str | None = None,
) -> int:
    """Record the start of an import; a run without ``finished_at`` was interrupted."""
    with Session(engine) as session:
        run = ImportRun(
            kind=kind, file_name=str(path.resolve()), file_sha256=file_sha256(path),
            list_id=list_id, consent_source=consent_source, started_at=now,
        )
        session.add(run)
        session.commit()
        assert run.id is not None
        return run.id


def finish_run(engine: Engine, run_id: int, summary: RunCounts, finished_at: datetime) -> None:
    """Record an import's counts and end."""
    with Session(engine) as session:
        run = session.get(ImportRun, run_id)
        assert run is not None
        run.rows = summary.rows
        run.imported = summary.imported
        run.updated = summary.updated
        run.unchanged = summary.unchanged
        run.rejected = summary.rejected
        run.rejects_file = str(summary.rejects_file) if summary.rejects_file else None
        run.finished_at = finished_at
        session.commit()


def interrupted_before(engine: Engine, run_id: int, *, kind: str) -> int:
    """How many runs of ``kind`` that started before ``run_id``, and after the last one of that
    kind that finished, have not finished: killed, or (rarely) still running elsewhere."""
    with Session(engine) as session:
        last_finished = (
            select(func.coalesce(func.max(ImportRun.id), 0))
            .where(col(ImportRun.kind) == kind, col(ImportRun.finished_at).is_not(None))
            .scalar_subquery()
        )
        return session.execute(
            select(func.count()).where(
                col(ImportRun.kind) == kind,
                col(ImportRun.finished_at).is_(None),
                col(ImportRun.id) < run_id,
                col(ImportRun.id) > last_finished,
            )
        ).scalar_one()

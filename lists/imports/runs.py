"""How an import run proceeds: rows parsed in batches, each batch written in one transaction
by a writer thread while the next batch is parsed, rejects written in file order, and the
record of the run (shown in the TUI's imports view).

The overlap pays because the database drivers release the GIL while SQLite steps through a
statement or PostgreSQL answers, which is about half of an import's time."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Protocol, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from lists.imports.bulk import Bulk
from lists.imports.csvfile import CsvInput, Record, RejectsWriter
from lists.models import ImportRun

T = TypeVar("T")
# Why a row is refused: (reason, detail); the reason is what summaries count.
Refusal = tuple[str, str]
# A refused row: line, reason, detail, original fields.
Reject = tuple[int, str, str, list[str]]


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


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last one shorter)."""
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def run_batches(
    engine: Engine,
    src: CsvInput,
    writer: RejectsWriter,
    *,
    parse: Callable[[Record], T | Refusal],
    apply: Callable[[Bulk, list[T], list[Reject]], None],
    batch_size: int,
    progress: Callable[[int, int], None] | None,
) -> int:
    """Parse every record of ``src``, hand each batch of accepted rows to ``apply`` inside one
    committed transaction (``apply`` may refuse more rows), and write the rejects of each
    committed batch in line order. Returns the number of rows read."""
    rows = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="patron-import") as pool:
        pending: Future[list[Reject]] | None = None
        pending_done = 0
        for batch in batched(src.records(), batch_size):
            rows += len(batch)
            accepted: list[T] = []
            rejects: list[Reject] = []
            for rec in batch:
                parsed = parse(rec)
                if isinstance(parsed, tuple):
                    rejects.append((rec.line, parsed[0], parsed[1], rec.fields))
                else:
                    accepted.append(parsed)
            if pending is not None:
                _write_rejects(writer, pending.result())
                if progress is not None:
                    progress(pending_done, src.bytes_total)
            pending = pool.submit(_commit_batch, engine, apply, accepted, rejects)
            pending_done = src.bytes_done
        if pending is not None:
            _write_rejects(writer, pending.result())
    if progress is not None:
        progress(src.bytes_total, src.bytes_total)
    return rows


def _commit_batch(
    engine: Engine,
    apply: Callable[[Bulk, list[T], list[Reject]], None],
    accepted: list[T],
    rejects: list[Reject],
) -> list[Reject]:
    if accepted:
        with Bulk.transaction(engine) as bulk:
            apply(bulk, accepted, rejects)
    return rejects


def _write_rejects(writer: RejectsWriter, rejects: list[Reject]) -> None:
    for line, reason, detail, fields in sorted(rejects, key=lambda r: r[0]):
        writer.write(line, reason, detail, fields)
    writer.flush()


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

"""Reading and writing import CSV files.

Input: UTF-8 with or without a byte-order mark, `,` or `;` (whichever the header line uses
more), streamed record by record with the physical line each record starts on (header = 1),
so a reject points at the line the user sees in an editor even after quoted multi-line fields.
Output: the rejects file, whose first two columns say where and why, followed by the original
fields so that it can be fixed and imported again (importers ignore those two columns).
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, NamedTuple

from lists.errors import InvalidInputError, NotFoundError

BOM = b"\xef\xbb\xbf"
DELIMITERS = (",", ";")
# The annotation columns a rejects file starts with; importers skip them on re-import.
REJECT_LINE = "reject_line"
REJECT_REASON = "reject_reason"
ANNOTATION_COLUMNS = frozenset({REJECT_LINE, REJECT_REASON})


class Record(NamedTuple):
    """One data row: where it starts, its fields, and a problem that makes it unreadable."""

    line: int
    fields: list[str]
    problem: str | None


def open_input(path: Path) -> CsvInput:
    """Open ``path`` for import, or a one-line error saying why it cannot be read."""
    if not path.exists():
        raise NotFoundError(f"no such file: {path}")
    if not path.is_file():
        raise InvalidInputError(f"not a file: {path}")
    return CsvInput(path)


def detect_delimiter(header_line: str) -> str:
    """`;` when the header has more unquoted semicolons than commas, else `,`."""
    counts = {d: 0 for d in DELIMITERS}
    quoted = False
    for ch in header_line:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in counts:
            counts[ch] += 1
    return ";" if counts[";"] > counts[","] else ","


class CsvInput:
    """A CSV file being read: its header, delimiter, and a stream of records with line numbers.
    ``bytes_done`` / ``bytes_total`` measure progress."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bytes_total = path.stat().st_size
        self.bytes_done = 0
        self._fh: IO[bytes] = path.open("rb")
        self._lines_read = 0
        self._bad_lines: dict[int, str] = {}
        try:
            first = self._fh.readline()
            self.has_bom = first.startswith(BOM)
            if self.has_bom:
                first = first[len(BOM) :]
            self.bytes_done = self._fh.tell()
            if not first.strip():
                raise InvalidInputError(f"{path.name}: the file is empty (no header line)")
            try:
                header_text = first.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInputError(
                    f"{path.name}: the header line is not UTF-8 (save the file as UTF-8)"
                ) from exc
            self.delimiter = detect_delimiter(header_text)
            self._reader = csv.reader(self._lines(header_text), delimiter=self.delimiter)
            try:
                header = next(self._reader)
            except csv.Error as exc:
                raise InvalidInputError(f"{path.name}: cannot read the header: {exc}") from exc
            self.header = [name.strip() for name in header]
            self.header_lines = self._lines_read
        except BaseException:
            self._fh.close()
            raise

    def _lines(self, first: str) -> Iterator[str]:
        self._lines_read = 1
        yield first
        for raw in self._fh:
            self.bytes_done += len(raw)
            self._lines_read += 1
            if b"\0" in raw:
                # PostgreSQL cannot store NUL in text, and no real name or address has one.
                self._bad_lines[self._lines_read] = "contains a NUL character"
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                self._bad_lines[self._lines_read] = "not valid UTF-8 (save the file as UTF-8)"
                yield raw.decode("utf-8", errors="replace")

    def records(self) -> Iterator[Record]:
        """Every non-blank data record after the header, in file order."""
        reader = self._reader
        while True:
            start = self._lines_read + 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield Record(start, [], f"malformed CSV: {exc}")
                continue
            if not "".join(fields).strip():
                continue  # a blank line (or one of empty cells only) is not a row
            problem = None
            if self._bad_lines:
                problem = next(
                    (
                        self._bad_lines[n]
                        for n in range(start, self._lines_read + 1)
                        if n in self._bad_lines
                    ),
                    None,
                )
            yield Record(start, fields, problem)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> CsvInput:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def default_rejects_path(path: Path) -> Path:
    """``contacts.csv`` → ``contacts.rejects.csv`` beside it."""
    return path.with_name(f"{path.stem}.rejects.csv")


class RejectsWriter:
    """Writes rejected rows as they come; the file is created on the first reject only, and a
    stale one from an earlier run is removed when this run rejects nothing."""

    def __init__(self, path: Path, header: Sequence[str], *, delimiter: str, bom: bool) -> None:
        self.path = path
        self.header = [h for h in header]
        self.delimiter = delimiter
        self.bom = bom
        self.count = 0
        self.reasons: Counter[str] = Counter()
        self._fh: IO[str] | None = None
        self._writer: csv.Writer | None = None  # type: ignore[name-defined]

    def write(self, line: int, reason: str, detail: str, fields: Sequence[str]) -> None:
        """One refused row: its line, why (``reason: detail``), and its original fields."""
        if self._writer is None:
            encoding = "utf-8-sig" if self.bom else "utf-8"
            self._fh = self.path.open("w", encoding=encoding, newline="")
            self._writer = csv.writer(self._fh, delimiter=self.delimiter)
            self._writer.writerow([REJECT_LINE, REJECT_REASON, *self.header])
        self._writer.writerow([line, f"{reason}: {detail}" if detail else reason, *fields])
        self.count += 1
        self.reasons[reason] += 1

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def finish(self) -> Path | None:
        """Close the file; the path when something was rejected, else None."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            return self.path
        self.path.unlink(missing_ok=True)
        return None


def check_rejects_path(input_path: Path, rejects_path: Path) -> None:
    """Refuse, before any row is read, a rejects file that could not be written or that would
    overwrite the file being imported."""
    if rejects_path.resolve() == input_path.resolve():
        raise InvalidInputError(f"the rejects file cannot be the input file ({input_path})")
    if not rejects_path.parent.is_dir():
        raise NotFoundError(f"no such directory for the rejects file: {rejects_path.parent}")

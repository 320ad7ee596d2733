"""Reading and checking an import file, batch by batch, in this process or in a helper process.

Parsing and checking a row (CSV, address normalization, HMAC) costs about as much as storing
it, so for large files a helper process does it while this one writes the previous batch: on
two cores that is most of the difference between ~30k and ~50k+ rows/s. Small files are read
in-process, where starting a Python interpreter would cost more than it saves.
"""

from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Generic, NamedTuple, Protocol, TypeVar

from lists.errors import PatronError
from lists.imports.csvfile import Record, open_input

R = TypeVar("R", bound=tuple[Any, ...])
R_co = TypeVar("R_co", bound=tuple[Any, ...], covariant=True)

# Files at least this large are parsed in a helper process (about 60k contact rows).
PARALLEL_FROM_BYTES = 4 * 1024 * 1024


class Refusal(NamedTuple):
    """Why a row is refused; ``reason`` is what summaries count, ``detail`` says more."""

    reason: str
    detail: str = ""


# A refused row: line, reason, detail, original fields.
Reject = tuple[int, str, str, list[str]]


class Parser(Protocol[R_co]):
    def parse(self, rec: Record) -> R_co | Refusal: ...


class ParserSpec(Protocol[R_co]):
    """What a helper process needs to build the parser: picklable, and importable by name.
    Rows are NamedTuples; they cross processes as plain tuples (pickling a NamedTuple costs
    five times more) and ``row_type`` turns them back."""

    @property
    def row_type(self) -> type[R_co]: ...

    def build(self) -> Parser[R_co]: ...


@dataclass(frozen=True, slots=True)
class ParsedBatch(Generic[R]):
    """The accepted rows and the refused ones of one batch, and how far the file is read."""

    accepted: list[R]
    rejects: list[Reject]
    bytes_done: int


def parsed_batches(
    path: Path, spec: ParserSpec[R], batch_size: int, *, parallel: bool | None = None
) -> Iterator[ParsedBatch[R]]:
    """The batches of ``path`` in file order; ``parallel`` None decides (:func:`worth_a_helper`)."""
    if parallel is None:
        parallel = worth_a_helper(path.stat().st_size)
    if not parallel:
        yield from _parse_file(path, spec, batch_size)
        return
    # A fresh interpreter, not multiprocessing: fork is unsafe beside threads (the TUI has
    # some) and spawn re-runs the caller's main script, which a library must not do.
    # A file for the child's stderr, not a pipe: a chatty child cannot block on it.
    with tempfile.TemporaryFile() as child_stderr:
        child = subprocess.Popen(
            [sys.executable, "-c", "from lists.imports.reader import serve; serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=child_stderr,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        )
        assert child.stdin is not None and child.stdout is not None
        try:
            job = (path, spec, batch_size)
            child.stdin.write(pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL))
            child.stdin.close()
            while True:
                message = _receive(child.stdout)
                if message is None:
                    code = child.wait()
                    child_stderr.seek(0)
                    tail = child_stderr.read()[-2000:].decode(errors="replace").strip()
                    last = tail.splitlines()[-1] if tail else f"exit code {code}"
                    raise PatronError(f"the import's reader process stopped: {last}")
                if message[0] == "batch":
                    accepted, rejects, done = message[1]
                    row_type: Any = spec.row_type
                    rows = [tuple.__new__(row_type, t) for t in accepted]
                    yield ParsedBatch(rows, rejects, done)
                elif message[0] == "done":
                    return
                else:
                    raise message[1]
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()
            child.stdout.close()


def _receive(stream: IO[bytes]) -> Any:
    """The next message from the reader process, or None at its end."""
    head = stream.read(8)
    if len(head) < 8:
        return None
    body = stream.read(int.from_bytes(head, "little"))
    # Only ever data pickled by our own child process, never input from elsewhere.
    return pickle.loads(body)  # noqa: S301


def _send(stream: IO[bytes], message: tuple[Any, ...]) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(len(data).to_bytes(8, "little"))
    stream.write(data)
    stream.flush()


def worth_a_helper(size: int) -> bool:
    """A helper process pays for a file of a few MiB when a core is free for it; on a busy
    machine the two processes would only take turns on one core."""
    if size < PARALLEL_FROM_BYTES:
        return False
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (cores or 1) >= 2 and os.getloadavg()[0] <= (cores or 1) - 1


def _parse_file(path: Path, spec: ParserSpec[R], batch_size: int) -> Iterator[ParsedBatch[R]]:
    parser = spec.build()
    with open_input(path) as src:
        accepted: list[R] = []
        rejects: list[Reject] = []
        for rec in src.records():
            parsed = parser.parse(rec)
            if isinstance(parsed, Refusal):
                rejects.append((rec.line, parsed.reason, parsed.detail, rec.fields))
            else:
                accepted.append(parsed)
            if len(accepted) + len(rejects) >= batch_size:
                yield ParsedBatch(accepted, rejects, src.bytes_done)
                accepted, rejects = [], []
        if accepted or rejects:
            yield ParsedBatch(accepted, rejects, src.bytes_done)


def serve() -> None:
    """The reader process: read (path, spec, batch size) on stdin, send batches on stdout."""
    out = sys.stdout.buffer
    # This process only parses: rows die young and make no cycles, so the collector's frequent
    # passes over the batch being built are pure cost (a fifth of the time).
    gc.set_threshold(100_000, 50, 50)
    try:
        path, spec, batch_size = pickle.load(sys.stdin.buffer)  # noqa: S301 - from our parent
        for batch in _parse_file(path, spec, batch_size):
            _send(out, ("batch", ([tuple(r) for r in batch.accepted], batch.rejects,
                                  batch.bytes_done)))
        _send(out, ("done",))
    except BrokenPipeError:
        return  # the importing process stopped reading: nothing left to do
    except Exception as exc:
        try:
            _send(out, ("error", exc))
        except Exception:  # the exception itself does not pickle: send its text
            text = f"reading the file failed: {type(exc).__name__}: {exc}"
            _send(out, ("error", PatronError(text)))

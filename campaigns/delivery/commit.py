"""Group commit (D2 at speed): the commit points and outcomes of many concurrent sends are
coalesced into one transaction. Whatever arrives while a transaction runs goes into the next
one, so batches grow with load and a lone message waits for a single transaction.

When the database fails (a restart, a lost connection), commit points fail at once (their
messages are not sent) while outcomes and releases are kept and retried with backoff: an
outcome is never dropped. If the database stays away longer than ``give_up_after``, the
committer stops with the error and the worker exits; its rows are settled by the reaper."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from campaigns.delivery.journal import Batch, BatchResult, Finish, StartDecision, StartMark
from campaigns.models import SkipReason

# Runs the batch in the database (in the worker's database thread) and commits it.
BatchWriter = Callable[[Batch], Awaitable[BatchResult]]
StartResult = tuple[StartDecision, SkipReason | None]
Release = tuple[int, datetime | None, str | None]


@dataclass(slots=True)
class CommitStats:
    transactions: int = 0
    items: int = 0
    seconds: float = 0.0
    largest: int = 0
    failures: int = 0
    last_error: str = ""

    def as_dict(self) -> dict[str, float | str]:
        mean = self.items / self.transactions if self.transactions else 0.0
        per = self.seconds / self.transactions * 1000 if self.transactions else 0.0
        return {
            "transactions": self.transactions,
            "items": self.items,
            "mean_batch": round(mean, 1),
            "largest_batch": self.largest,
            "mean_ms": round(per, 2),
            "failures": self.failures,
            "last_error": self.last_error,
        }


class GroupCommitter:
    """Collects writes and commits them together; each caller awaits its own result."""

    def __init__(
        self, writer: BatchWriter, *, max_batch: int = 2000, give_up_after: float = 120.0
    ) -> None:
        self._writer = writer
        self._max = max_batch
        self._give_up_after = give_up_after
        self._starts: list[tuple[StartMark, asyncio.Future[StartResult]]] = []
        self._finishes: list[tuple[Finish, asyncio.Future[None]]] = []
        self._releases: list[tuple[Release, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.stats = CommitStats()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    def mark_started(self, mark: StartMark) -> asyncio.Future[StartResult]:
        """Queue a commit point; resolves once it is durable (or refused)."""
        future: asyncio.Future[StartResult] = asyncio.get_running_loop().create_future()
        self._starts.append((mark, future))
        self._wake.set()
        return future

    def finish(self, finish: Finish) -> asyncio.Future[None]:
        """Queue an outcome; resolves once it is durable."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._finishes.append((finish, future))
        self._wake.set()
        return future

    def release(
        self, row_id: int, next_attempt_at: datetime | None = None, provider: str | None = None
    ) -> asyncio.Future[None]:
        """Queue giving a claimed row back (optionally due later)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._releases.append(((row_id, next_attempt_at, provider), future))
        self._wake.set()
        return future

    @property
    def pending(self) -> int:
        return len(self._starts) + len(self._finishes) + len(self._releases)

    async def close(self) -> None:
        """Commit what is queued and stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        try:
            await self._loop()
        except BaseException as exc:
            # Stopping for good: nobody may wait forever for a write that will not happen.
            error = exc if isinstance(exc, Exception) else RuntimeError("stopped")
            futures: list[asyncio.Future[Any]] = [f for _, f in self._starts]
            futures += [f for _, f in self._finishes] + [f for _, f in self._releases]
            for future in futures:
                if not future.done():
                    future.set_exception(error)
            raise

    async def _loop(self) -> None:
        failing_since: float | None = None
        backoff = 0.05
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.pending:
                ok = await self._commit_once()
                if ok:
                    failing_since, backoff = None, 0.05
                    continue
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > self._give_up_after:
                    raise RuntimeError("the database stayed unreachable: stopping the worker")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            if self._closing:
                return

    async def _commit_once(self) -> bool:
        room = self._max
        starts, self._starts = self._starts[:room], self._starts[room:]
        room -= len(starts)
        finishes, self._finishes = self._finishes[:room], self._finishes[room:]
        room -= len(finishes)
        releases, self._releases = self._releases[:room], self._releases[room:]
        batch = Batch(
            starts=[s for s, _ in starts],
            finishes=[f for f, _ in finishes],
            releases=[r for r, _ in releases],
        )
        began = time.perf_counter()
        try:
            result = await self._writer(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database failed: see the module docstring
            self.stats.failures += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"[:500]
            for _, future in starts:
                if not future.done():
                    future.set_exception(exc)
            # Outcomes and releases go back to the front, in order.
            self._finishes[:0] = finishes
            self._releases[:0] = releases
            return False
        self.stats.transactions += 1
        self.stats.items += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        self.stats.seconds += time.perf_counter() - began
        for mark, future in starts:
            if not future.done():
                row_id = mark.candidate.row_id
                decision = result.decisions.get(row_id, StartDecision.REFUSED)
                future.set_result((decision, result.skipped.get(row_id)))
        for _, waiter in (*finishes, *releases):
            if not waiter.done():
                waiter.set_result(None)
        return True

"""The async send loop of one worker (D2–D5, D8).

Data flows one way: claim due rows → resolve the recipient's provider → wait for the provider's
and the global pace → build the message → SMTP transaction whose commit point durably marks the
attempt started → classify the outcome → record it (group commit). A control tick every
``control_interval`` renews the worker's heartbeat, reaps dead workers, queues double opt-in
confirmations (an injected sweeper), starts due campaigns, finishes done ones, re-reads campaign
statuses and provider paces, and checks complaint and bounce rates."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import random
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlmodel import col

from campaigns.delivery.commit import GroupCommitter
from campaigns.delivery.config import DeliveryConfig
from campaigns.delivery.controls import (
    RateLimits,
    check_rates,
    finish_done,
    settle_cancelled,
    start_due,
)
from campaigns.delivery.eligibility import Candidate, Caps
from campaigns.delivery.journal import (
    Batch,
    BatchResult,
    Finish,
    StartDecision,
    StartMark,
    apply_batch,
)
from campaigns.delivery.outcomes import Action, Verdict, classify
from campaigns.delivery.pacing import ProviderView, load_providers
from campaigns.delivery.protocols import (
    AudienceFreezer,
    MessageFactory,
    PreparingFactory,
    Transport,
)
from campaigns.delivery.providers import ProviderDirectory, recipient_domain
from campaigns.delivery.queue import (
    SQLITE_SENDER_LEASE,
    Claimed,
    acquire_lease,
    claim,
    deregister,
    heartbeat,
    host_id,
    live_worker_count,
    messages,
    reap,
    register_worker,
)
from campaigns.delivery.scheduling import Window, next_in_window, parse_window, zone
from campaigns.delivery.statements import TRANSACTIONAL_KINDS
from campaigns.delivery.throttle import Pace, ProviderLane, ProviderLimits, RateLimiter, warmup_cap
from campaigns.models import (
    Campaign,
    CampaignStatus,
    DeliveryFailure,
    MessageState,
    SkipReason,
)
from lists.clock import Clock
from lists.errors import PatronError

T = TypeVar("T")
# Runs on each control tick, in its transaction: the double opt-in confirmation sweep
# (campaigns.confirmations.ConfirmationSweeper), which spaces its own runs.
Sweeper = Callable[[Session, datetime], object]

# Seconds without a working database after which a worker gives up (its rows are then
# settled by the reaper of another worker, or by itself when it starts again).
DATABASE_PATIENCE = 120.0


@dataclass(frozen=True, slots=True)
class WorkerIdentity:
    worker_id: str
    host: str
    pid: int

    @classmethod
    def create(cls) -> WorkerIdentity:
        return cls(uuid.uuid4().hex, host_id(), os.getpid())


@dataclass(frozen=True, slots=True)
class CampaignInfo:
    id: int
    kind: str
    window: Window | None

    @property
    def marketing(self) -> bool:
        return self.kind not in TRANSACTIONAL_KINDS


@dataclass(slots=True)
class RunReport:
    """What one run of a worker did."""

    worker_id: str
    claimed: int = 0
    delivered: int = 0
    deferred: int = 0
    bounced: int = 0
    failed: int = 0
    unknown: int = 0
    skipped: int = 0
    released: int = 0
    started_campaigns: list[int] = field(default_factory=list)
    finished_campaigns: list[int] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    seconds: float = 0.0
    loop_lag_max_ms: float = 0.0
    loop_lag_p99_ms: float = 0.0
    commits: dict[str, float | str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class _Tick:
    registered: bool
    may_send: bool
    campaigns: dict[int, CampaignInfo]
    providers: dict[str, ProviderView]
    workers: int
    budget: int | None
    due_scheduled: bool
    finished: list[int]
    alerts: list[str]


_CUSTOM_PLANS = "patron_custom_plans"


def _plan_each_statement(session: Session) -> None:
    """Plan the send path's statements with their actual values on this connection.

    psycopg prepares a statement after a few runs and PostgreSQL may then keep a generic plan;
    for "these 50 ids, if still under my lease" the generic plan scanned the campaign's whole
    queue through the claim index (120 ms on a million rows instead of 0.3 ms)."""
    connection = session.connection()
    if not connection.info.get(_CUSTOM_PLANS):
        connection.exec_driver_sql("SET plan_cache_mode = force_custom_plan")
        connection.info[_CUSTOM_PLANS] = True


class _CommitPoint:
    """One message's commit point: the mark is requested when the transaction begins and
    awaited before DATA; afterwards the engine reads what became of it."""

    def __init__(self, marks: GroupCommitter, mark: StartMark) -> None:
        self._marks = marks
        self._mark = mark
        self._future: asyncio.Future[tuple[StartDecision, SkipReason | None]] | None = None

    def begin(self) -> None:
        if self._future is None:
            self._future = self._marks.mark_started(self._mark)

    async def confirm(self) -> bool:
        self.begin()
        return await self.decision() is StartDecision.STARTED

    async def decision(self) -> StartDecision | None:
        """None if the transaction never began; REFUSED if the database failed."""
        if self._future is None:
            return None
        try:
            decision, _ = await asyncio.shield(self._future)
        except Exception:  # the database failed: the mark is not durable, nothing was sent
            return StartDecision.REFUSED
        return decision


def message_id_hint(row: Claimed) -> str:
    """What a row's Message-ID is made from: the same across its retries (a receiver that got
    an attempt whose outcome we never learnt drops the resend), new when the row is queued
    anew (a confirmation for a new sign-up)."""
    hint = f"{row.campaign_id}.{row.contact_id}.{row.id}"
    if row.created_at is not None:
        hint += f".{round(row.created_at.timestamp() * 1_000_000)}"
    return hint


class DeliveryEngine:
    """One worker's sender. ``run`` returns when stopped, or with ``once`` when nothing is due."""

    def __init__(
        self,
        db: Engine,
        *,
        factory: MessageFactory,
        transport: Transport,
        directory: ProviderDirectory,
        clock: Clock,
        config: DeliveryConfig,
        key: bytes,
        freezer: AudienceFreezer | None = None,
        sweeper: Sweeper | None = None,
        identity: WorkerIdentity | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._engine = db
        self._factory = factory
        self._transport = transport
        self._directory = directory
        self._clock = clock
        self._cfg = config
        self._key = key
        self._freezer = freezer
        self._sweeper = sweeper
        self.identity = identity or WorkerIdentity.create()
        self._rng = rng or random.Random()
        self._sqlite = db.dialect.name == "sqlite"
        # SQLite has one writer at a time anyway; on PostgreSQL commit points and outcomes
        # commit on two connections at once, so outcomes never delay a commit point.
        threads = 1 if self._sqlite else 2
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="patron-db")
        self._builders = (
            ThreadPoolExecutor(config.build_threads, thread_name_prefix="patron-build")
            if config.build_threads > 0
            else None
        )
        self._caps = Caps(config.frequency_cap_hours, config.discount_cap_days)
        self._limits = RateLimits(
            complaint_warn=config.complaint_warn_rate,
            complaint_pause=config.complaint_pause_rate,
            hard_bounce_pause=config.hard_bounce_pause_rate,
            min_messages=config.rate_check_min_messages,
            provider_pause=timedelta(minutes=config.provider_pause_minutes),
        )
        self._marks = GroupCommitter(self._write)  # commit points
        self._outcomes = GroupCommitter(self._write)  # outcomes and claims given back
        self._global = RateLimiter(config.rate, burst=max(1.0, config.rate / 10))
        self._lanes: dict[str, ProviderLane] = {}
        self._paces: dict[str, Pace] = {}
        self._paused: dict[str, datetime] = {}
        self._campaigns: dict[int, CampaignInfo] = {}
        self._workers = 1
        self._budget: int | None = None
        self._may_send = not self._sqlite
        self._due_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_transaction: set[asyncio.Task[None]] = set()
        self._space = asyncio.Event()
        self._stop = asyncio.Event()
        self._rr = 0
        self._next_rate_check = 0.0
        self._starting: asyncio.Task[None] | None = None
        self._next_start = 0.0
        self._lags: list[float] = []
        self._failure: BaseException | None = None
        self._db_failing_since: float | None = None
        self.report = RunReport(self.identity.worker_id)

    # -- database -------------------------------------------------------------------------

    async def _db(self, work: Callable[[Session], T]) -> T:
        def run() -> T:
            with Session(self._engine, expire_on_commit=False) as session, session.begin():
                if self._sqlite:
                    return work(session)
                info = session.connection().info
                _plan_each_statement(session)
                try:
                    return work(session)
                except BaseException:
                    info.pop(_CUSTOM_PLANS, None)  # the rollback undoes the SET too
                    raise

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    async def _write(self, batch: Batch) -> BatchResult:
        now = self._clock.now()
        # Transactional campaigns (confirmations, always sending) never compete for a contact.
        marketing = sum(1 for c in self._campaigns.values() if c.marketing)
        caps = dataclasses.replace(self._caps, concurrent_campaigns=marketing != 1)
        return await self._db(
            lambda s: apply_batch(s, self.identity.worker_id, self._key, now, batch, caps)
        )

    # -- the run --------------------------------------------------------------------------

    async def close_transport(self) -> None:
        """Close the transport's pooled connections (after ``run``)."""
        await self._transport.close()

    def stop(self) -> None:
        """Ask the run to end: no new claims; messages in an SMTP transaction finish and are
        recorded; the others (waiting for their pace) stop at once and their claims go back."""
        self._stop.set()
        self._space.set()
        for task in self._tasks - self._in_transaction:
            task.cancel()

    async def run(self, *, once: bool = False) -> RunReport:
        began = time.perf_counter()
        now = self._clock.now()
        ident = self.identity
        await self._db(lambda s: register_worker(s, ident.worker_id, ident.host, ident.pid, now))
        self._marks.start()
        self._outcomes.start()
        watchers = [
            asyncio.get_running_loop().create_task(self._watch_lag(), name="loop-lag"),
        ]
        try:
            await self._control_tick()
            watchers.append(
                asyncio.get_running_loop().create_task(self._control_loop(), name="control")
            )
            await self._claim_loop(once)
        finally:
            self._stop.set()
            if self._starting is not None:
                await asyncio.gather(self._starting, return_exceptions=True)
            if self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
            await self._marks.close()
            await self._outcomes.close()
            if self._failure is None and watchers[1:]:
                # Settle campaigns the last messages finished (--once exits right after).
                await self._control_tick()
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            done_at = self._clock.now()
            resend = self._cfg.unknown_outcome == "resend"
            await self._db(
                lambda s: deregister(s, self.identity.worker_id, done_at, resend_unknown=resend)
            )
            self._executor.shutdown(wait=True)
            if self._builders is not None:
                self._builders.shutdown(wait=True)
            self.report.seconds = round(time.perf_counter() - began, 3)
            self.report.commits = {
                **{f"marks_{k}": v for k, v in self._marks.stats.as_dict().items()},
                **{f"outcomes_{k}": v for k, v in self._outcomes.stats.as_dict().items()},
            }
            if self._lags:
                lags = sorted(self._lags)
                self.report.loop_lag_max_ms = round(lags[-1] * 1000, 2)
                self.report.loop_lag_p99_ms = round(lags[int(len(lags) * 0.99)] * 1000, 2)
        if self._failure is not None:
            raise self._failure
        return self.report

    async def _claim_loop(self, once: bool) -> None:
        backlog_limit = max(2 * self._cfg.claim_batch, 4 * self._cfg.max_in_flight)
        while not self._stop.is_set():
            for commit_task in (self._marks.task, self._outcomes.task):
                if commit_task is not None and commit_task.done():
                    commit_task.result()  # re-raises the database failure that stopped it
                    return
            room = backlog_limit - len(self._tasks)
            if not self._may_send or room < min(self._cfg.claim_batch, backlog_limit // 2):
                await self._wait(self._cfg.control_interval)
                continue
            limit = min(room, self._cfg.claim_batch)
            if self._budget is not None:
                limit = min(limit, self._budget)
            try:
                claimed = await self._claim(limit) if limit > 0 and self._campaigns else []
            except DBAPIError as exc:
                self._database_trouble(exc)
                await self._wait(1.0)
                continue
            self._database_ok()
            if claimed:
                self.report.claimed += len(claimed)
                if self._budget is not None:
                    self._budget -= len(claimed)
                for row in claimed:
                    task = asyncio.get_running_loop().create_task(self._deliver(row))
                    self._tasks.add(task)
                    task.add_done_callback(self._task_done)
                continue
            if once and self._starting is None and (
                not self._due_scheduled or time.monotonic() < self._next_start
            ):
                if not self._tasks:
                    return
                await asyncio.wait(list(self._tasks), return_when=asyncio.FIRST_COMPLETED)
                continue
            await self._wait(self._cfg.poll_seconds)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._in_transaction.discard(task)
        self._space.set()
        if not task.cancelled() and task.exception() is not None:
            # A bug, not a delivery outcome: stop this worker rather than loop on it. Its row
            # stays claimed and is settled when the worker deregisters.
            self._failure = self._failure or task.exception()
            self.stop()

    async def _wait(self, seconds: float) -> None:
        self._space.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._space.wait(), seconds)

    async def _claim(self, limit: int) -> list[Claimed]:
        now = self._clock.now()
        ids = list(self._campaigns)
        self._rr = (self._rr + 1) % max(1, len(ids))
        order = ids[self._rr :] + ids[: self._rr]
        paused = {p for p, until in self._paused.items() if until > now}
        crowded = {p for p, lane in self._lanes.items() if lane.waiting > self._lane_cap(lane) / 2}
        excluded = sorted(paused | crowded)
        me = self.identity.worker_id

        prepare = self._factory.prepare if isinstance(self._factory, PreparingFactory) else None

        def work(session: Session) -> list[Claimed]:
            rows: list[Claimed] = []
            for campaign_id in order:
                if len(rows) >= limit:
                    break
                rows += claim(session, me, campaign_id, now, limit - len(rows), excluded)
            if rows and prepare is not None:
                prepare(session, rows)
            return rows

        return await self._db(work)

    # -- one message ----------------------------------------------------------------------

    async def _deliver(self, row: Claimed) -> None:
        info = self._campaigns.get(row.campaign_id)
        if info is None:
            await self._release(row)
            return
        candidate = Candidate(
            row.id, row.campaign_id, row.contact_id, row.email, info.kind, info.marketing
        )
        if row.email is None or row.contact_id is None:
            # Erased since the audience was frozen: the commit point records the skip.
            erased, _ = await self._marks.mark_started(StartMark(candidate, "", ""))
            self._count_start(erased)
            return
        now = self._clock.now()
        tz = zone(row.timezone, self._cfg.default_timezone)
        if info.window is not None:
            opening = next_in_window(now, tz, info.window)
            if opening > now:
                await self._release(row, opening)
                return
        provider = row.provider or await self._directory.provider_of(recipient_domain(row.email))
        lane = self._lane(provider)
        if lane.is_paused(now):
            await self._release(row, lane.paused_until, provider)
            return
        if lane.waiting >= self._lane_cap(lane):
            later = now + timedelta(seconds=lane.backlog_seconds())
            await self._release(row, later, provider)
            return
        async with lane.slot():
            await self._global.acquire()
            now = self._clock.now()
            if row.campaign_id not in self._campaigns or lane.is_paused(now):
                await self._release(row, lane.paused_until if lane.is_paused(now) else None,
                                    provider)
                return
            build = functools.partial(
                self._factory.build,
                row.campaign_id,
                row.contact_id,
                row.variant,
                row.discount_code,
                message_id_hint(row),
            )
            try:
                if self._builders is None:
                    message = build()
                else:
                    message = await asyncio.get_running_loop().run_in_executor(
                        self._builders, build
                    )
            except Exception as exc:  # a recipient whose message cannot be made: recorded
                verdict = Verdict(
                    Action.FAIL, f"cannot build the message: {type(exc).__name__}: {exc}",
                    DeliveryFailure.ERROR,
                )
                await self._record(row, info, provider, verdict, started=False)
                return
            point = _CommitPoint(self._marks, StartMark(candidate, message.message_id, provider))
            current = asyncio.current_task()
            assert current is not None
            # From here on a stop lets the message finish and its outcome be recorded.
            self._in_transaction.add(current)
            outcome = await self._transport.send(message, point)
        decision = await point.decision()
        if decision is None:
            # The transaction failed before it began (no connection): an unstarted attempt.
            await self._record(row, info, provider, classify(outcome), started=False)
            return
        self._count_start(decision)
        if decision is not StartDecision.STARTED:
            # Skipped (recorded) or refused: nothing was sent; the claim goes back.
            if decision is StartDecision.REFUSED:
                await self._outcomes.release(row.id, None, provider)
            return
        await self._record(row, info, provider, classify(outcome), started=True)

    def _count_start(self, decision: StartDecision) -> None:
        if decision is StartDecision.SKIPPED:
            self.report.skipped += 1
        elif decision is StartDecision.REFUSED:
            self.report.released += 1

    async def _release(
        self, row: Claimed, later: datetime | None = None, provider: str | None = None
    ) -> None:
        self.report.released += 1
        await self._outcomes.release(row.id, later, provider)

    async def _record(
        self, row: Claimed, info: CampaignInfo, provider: str, verdict: Verdict, *, started: bool
    ) -> None:
        now = self._clock.now()
        attempt = row.attempts + 1
        state = verdict.state
        failure = verdict.failure.value if verdict.failure else None
        reply = verdict.reply
        next_at: datetime | None = None
        action = verdict.action
        if action is Action.UNKNOWN and self._cfg.unknown_outcome == "resend":
            action = Action.RETRY
        if action is Action.RETRY:
            first = row.first_attempt_at or now
            next_at = self._cfg.retry.next_attempt(attempt, first, now, self._rng)
            if next_at is None:
                state, failure = MessageState.BOUNCED, DeliveryFailure.SOFT_BOUNCE.value
                reply = f"gave up after {attempt} attempts: {reply}"
            else:
                state = MessageState.DEFERRED
                if info.window is not None:
                    tz = zone(row.timezone, self._cfg.default_timezone)
                    next_at = next_in_window(next_at, tz, info.window)
        slowdown = self._slow_down(provider, now) if verdict.slow_down else None
        pause_until = None
        if verdict.pause_provider:
            pause_until = now + timedelta(minutes=self._cfg.provider_pause_minutes)
            self._paused[provider] = pause_until
            self._lane(provider).paused_until = pause_until
        counter = {
            MessageState.SENT: "delivered",
            MessageState.DEFERRED: "deferred",
            MessageState.BOUNCED: "bounced",
            MessageState.FAILED: "failed",
            MessageState.UNKNOWN: "unknown",
        }[state]
        setattr(self.report, counter, getattr(self.report, counter) + 1)
        await self._outcomes.finish(
            Finish(
                row_id=row.id,
                attempt=attempt,
                started=started,
                state=state,
                reply=reply,
                campaign_id=row.campaign_id,
                contact_id=row.contact_id,
                email=row.email,
                marketing=info.marketing,
                provider=provider,
                failure=failure,
                next_attempt_at=next_at,
                suppress=verdict.suppress,
                slowdown=slowdown,
                pause_until=pause_until,
            )
        )

    # -- pace -----------------------------------------------------------------------------

    def _provider_limits(self) -> ProviderLimits:
        n = max(1, self._workers)
        base_rate = self._cfg.per_domain_rate or self._cfg.rate
        return ProviderLimits(max(1, self._cfg.per_domain_concurrency // n), base_rate / n)

    def _lane(self, provider: str) -> ProviderLane:
        lane = self._lanes.get(provider)
        if lane is None:
            lane = ProviderLane(provider, self._provider_limits())
            self._lanes[provider] = lane
            self._apply_pace(provider)
        return lane

    def _lane_cap(self, lane: ProviderLane) -> float:
        """Messages allowed to wait on one provider before the rest go back to the queue."""
        return max(4.0 * lane.concurrency, lane.rate * 5.0, 20.0)

    def _apply_pace(self, provider: str) -> None:
        lane = self._lanes.get(provider)
        if lane is None:
            return
        pace = self._paces.get(provider, Pace())
        factor = pace.effective(
            self._clock.now(), self._cfg.slowdown_recovery_step, self._cfg.slowdown_recovery_seconds
        )
        lane.set_pace(self._provider_limits(), factor)
        lane.paused_until = self._paused.get(provider)

    def _slow_down(self, provider: str, now: datetime) -> Pace | None:
        """AIMD: halve the provider's pace, at most once a second."""
        pace = self._paces.get(provider, Pace())
        if pace.last_deferral is not None and now - pace.last_deferral < timedelta(seconds=1):
            return None
        halved = pace.halved(
            now,
            self._cfg.slowdown_recovery_step,
            self._cfg.slowdown_recovery_seconds,
            self._cfg.slowdown_min_factor,
        )
        self._paces[provider] = halved
        self._apply_pace(provider)
        return halved

    # -- control --------------------------------------------------------------------------

    async def _control_loop(self) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(self._cfg.control_interval)
            try:
                await self._control_tick()
            except DBAPIError as exc:
                self._database_trouble(exc)
                continue
            self._database_ok()

    def _database_trouble(self, exc: DBAPIError) -> None:
        """A failed claim or control tick (a database restart, a lost connection) is retried;
        after DATABASE_PATIENCE seconds without a database the worker stops."""
        now = time.monotonic()
        self._db_failing_since = self._db_failing_since or now
        if now - self._db_failing_since > DATABASE_PATIENCE:
            self._failure = self._failure or exc
            self.stop()

    def _database_ok(self) -> None:
        self._db_failing_since = None

    async def _control_tick(self) -> None:
        now = self._clock.now()
        check_rates_now = time.monotonic() >= self._next_rate_check
        began = time.monotonic()
        tick = await self._db(lambda s: self._tick(s, now, check_rates_now))
        if check_rates_now:
            # The rate check scans the campaign's send log: on a big campaign, space the
            # checks so they never take more than ~5 % of the database thread.
            spent = time.monotonic() - began
            self._next_rate_check = began + max(self._cfg.rate_check_interval, 20 * spent)
        if (
            tick.due_scheduled
            and tick.may_send
            and self._starting is None
            and time.monotonic() >= self._next_start
        ):
            # Freezing a big audience takes a while: never inside the control tick, whose
            # heartbeat keeps this worker's claims alive.
            self._starting = asyncio.get_running_loop().create_task(self._start_due(now))
        if not tick.registered:
            # Reaped while alive (a long stall): our claims were taken over. Carry on under a
            # new identity; marks made under the old one fail their lease check.
            self.identity = WorkerIdentity.create()
            ident = self.identity
            await self._db(
                lambda s: register_worker(s, ident.worker_id, ident.host, ident.pid, now)
            )
        self._may_send = tick.may_send
        self._campaigns = tick.campaigns
        self._due_scheduled = tick.due_scheduled
        self._budget = tick.budget
        self.report.finished_campaigns += tick.finished
        self.report.alerts += tick.alerts
        if tick.workers != self._workers:
            self._workers = tick.workers
            share = self._cfg.rate / max(1, tick.workers)
            self._global.rate = share
            self._global.burst = max(1.0, share / 10)
        for provider, view in tick.providers.items():
            mine = self._paces.get(provider)
            theirs = view.pace
            if mine is None or (
                theirs.last_deferral is not None
                and (mine.last_deferral is None or theirs.last_deferral > mine.last_deferral)
            ):
                self._paces[provider] = theirs
            if view.paused_until is not None and view.paused_until > now:
                self._paused[provider] = view.paused_until
            else:
                self._paused.pop(provider, None)
        for provider in self._lanes:
            self._apply_pace(provider)
        self._space.set()

    async def _start_due(self, now: datetime) -> None:
        freezer = self._freezer
        assert freezer is not None
        try:
            started = await self._db(
                lambda s: start_due(s, now, freezer, self._cfg.default_timezone)
            )
            self.report.started_campaigns += started
        except PatronError as exc:
            # A campaign that cannot start (its discount pool is too small …) stays scheduled
            # and is tried again in a minute; the reason is in the report.
            self.report.alerts.append(f"a scheduled campaign could not start: {exc}")
            self._next_start = time.monotonic() + 60.0
        finally:
            self._starting = None
        self._space.set()

    def _tick(self, session: Session, now: datetime, with_rates: bool) -> _Tick:
        ident = self.identity
        cfg = self._cfg
        registered = heartbeat(session, ident.worker_id, now)
        reap(
            session, ident.worker_id, ident.host, now,
            timedelta(seconds=cfg.worker_timeout_seconds),
            resend_unknown=cfg.unknown_outcome == "resend",
        )
        may_send = True
        if self._sqlite:
            ttl = timedelta(seconds=cfg.worker_timeout_seconds)
            may_send = registered and acquire_lease(
                session, SQLITE_SENDER_LEASE, ident.worker_id, now, ttl
            )
        if may_send and self._sweeper is not None:
            self._sweeper(session, now)  # before the campaigns are read: it may make one
        finished = finish_done(session, now) if may_send else []
        if may_send:
            settle_cancelled(session, now)  # claims given back after a cancel
        rows = session.execute(
            select(
                col(Campaign.id), col(Campaign.status), col(Campaign.kind),
                col(Campaign.scheduled_at), col(Campaign.window_start), col(Campaign.window_end),
            ).where(
                col(Campaign.status).in_(
                    (CampaignStatus.SENDING.value, CampaignStatus.SCHEDULED.value)
                )
            )
        )
        campaigns: dict[int, CampaignInfo] = {}
        due_scheduled = False
        for campaign_id, status, kind, scheduled_at, window_start, window_end in rows:
            assert campaign_id is not None
            if status == CampaignStatus.SENDING.value:
                window = parse_window(f"{window_start}-{window_end}") if window_start else None
                campaigns[campaign_id] = CampaignInfo(campaign_id, kind, window)
            elif scheduled_at is not None and scheduled_at <= now and self._freezer:
                due_scheduled = True
        alerts: list[str] = []
        if with_rates and may_send:
            for campaign_id in campaigns:
                alerts += check_rates(session, campaign_id, now, self._limits)
        workers = max(1, live_worker_count(session))
        return _Tick(
            registered=registered,
            may_send=may_send,
            campaigns=campaigns,
            providers=load_providers(session),
            workers=workers,
            budget=self._claim_budget(session, now, workers),
            due_scheduled=due_scheduled,
            finished=finished,
            alerts=alerts,
        )

    def _claim_budget(self, session: Session, now: datetime, workers: int) -> int | None:
        """This worker's share of what the hourly rate and the warm-up cap still allow."""
        cfg = self._cfg
        limits: list[int] = []
        m = messages()
        if cfg.rate_per_hour is not None:
            used = session.execute(
                select(func.count()).where(m.c.last_attempt_at > now - timedelta(hours=1))
            ).scalar_one()
            limits.append(cfg.rate_per_hour - int(used))
        start = cfg.warmup_domains.get(cfg.sending_domain or "")
        if start is not None:
            cap = warmup_cap(cfg.warmup_ramp, start, now.date())
            if cap is not None:
                midnight = datetime.combine(now.date(), datetime.min.time(), tzinfo=UTC)
                used = session.execute(
                    select(func.count()).where(m.c.last_attempt_at >= midnight)
                ).scalar_one()
                limits.append(cap - int(used))
        if not limits:
            return None
        return max(0, min(limits) // workers)

    async def _watch_lag(self) -> None:
        interval = 0.05
        while True:
            began = time.perf_counter()
            await asyncio.sleep(interval)
            lag = time.perf_counter() - began - interval
            if len(self._lags) < 200_000:
                self._lags.append(max(0.0, lag))

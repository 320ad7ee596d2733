"""`patron campaigns schedule|send|pause|resume|cancel|stats` and `patron worker`, with the
wiring of the delivery engine: settings → DeliveryConfig, the aiosmtplib transport, the MX
resolver, the message factory, the audience freezer and the double opt-in confirmation
sweeper."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from email.utils import parseaddr
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from lists.errors import ConfigurationError, PatronError
from patron.cli.app import JsonOption, get_ctx
from patron.cli.output import emit
from patron.context import AppContext
from patron.settings import Settings

if TYPE_CHECKING:  # the delivery stack (aiosmtplib, dnspython) loads only when a command runs
    from campaigns.delivery.config import DeliveryConfig
    from campaigns.delivery.engine import DeliveryEngine, RunReport
    from campaigns.delivery.protocols import AudienceFreezer, MessageFactory
    from campaigns.delivery.smtp import SmtpConfig
    from campaigns.models import Campaign

IdArgument = Annotated[int, typer.Argument(help="Campaign id (see `patron campaigns ls`).")]
WORKER_SQLITE_CACHE_KIB = 8_192


def register_sending(campaigns_app: typer.Typer, app: typer.Typer) -> None:
    """Adds the sending commands to the campaigns group and `worker` and `alerts` (what the
    workers raise) to the root."""
    from patron.cli.cmd_alerts import alerts_cmd

    campaigns_app.command("schedule")(schedule_cmd)
    campaigns_app.command("send")(send_cmd)
    campaigns_app.command("pause")(pause_cmd)
    campaigns_app.command("resume")(resume_cmd)
    campaigns_app.command("cancel")(cancel_cmd)
    campaigns_app.command("stats")(stats_cmd)
    app.command("worker")(worker_cmd)
    app.command("alerts")(alerts_cmd)


# -- wiring ---------------------------------------------------------------------------------


def delivery_config(settings: Settings) -> DeliveryConfig:
    from campaigns.delivery.config import DeliveryConfig
    from campaigns.delivery.retry import RetryPolicy

    d = settings.delivery
    return DeliveryConfig(
        rate=d.rate,
        rate_per_hour=d.rate_per_hour,
        per_domain_concurrency=d.per_domain_concurrency,
        per_domain_rate=d.per_domain_rate,
        frequency_cap_hours=d.frequency_cap_hours,
        discount_cap_days=d.discount_cap_days,
        default_timezone=d.default_timezone,
        retry=RetryPolicy(
            initial_seconds=d.retry_initial_seconds,
            multiplier=d.retry_multiplier,
            max_interval_seconds=d.retry_max_interval_seconds,
            jitter=d.retry_jitter,
            lifetime_seconds=d.retry_lifetime_seconds,
        ),
        unknown_outcome=d.unknown_outcome,
        slowdown_min_factor=d.slowdown_min_factor,
        slowdown_recovery_step=d.slowdown_recovery_step,
        slowdown_recovery_seconds=d.slowdown_recovery_seconds,
        provider_pause_minutes=d.provider_pause_minutes,
        sending_domain=sending_domain(settings),
        warmup_domains=dict(d.warmup_domains),
        warmup_ramp=tuple(d.warmup_ramp),
        complaint_warn_rate=d.complaint_warn_rate,
        complaint_pause_rate=d.complaint_pause_rate,
        hard_bounce_pause_rate=d.hard_bounce_pause_rate,
        rate_check_min_messages=d.rate_check_min_messages,
        worker_timeout_seconds=d.worker_timeout_seconds,
        claim_batch=d.claim_batch,
        poll_seconds=d.poll_seconds,
        max_in_flight=settings.smtp.pool_size,
        build_threads=d.build_threads,
    )


def sending_domain(settings: Settings) -> str | None:
    address = parseaddr(settings.sender.from_)[1]
    return address.rpartition("@")[2].lower() or None


def smtp_config(settings: Settings) -> SmtpConfig:
    from campaigns.delivery.smtp import Relay, SmtpConfig

    s = settings.smtp
    relays = [Relay(s.host, s.port)]
    for entry in s.relays:
        host, sep, port = entry.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigurationError(f"invalid relay {entry!r}: use HOST:PORT")
        relays.append(Relay(host.strip("[]"), int(port)))
    return SmtpConfig(
        relays=tuple(relays),
        tls=s.tls,
        username=s.username,
        password=s.password.get_secret_value() if s.password else None,
        pool_size=s.pool_size,
        max_messages_per_connection=s.max_messages_per_connection,
        timeout=s.timeout,
        verify_certificates=s.verify_certificates,
        ca_file=s.ca_file,
        local_hostname=s.local_hostname,
    )


def audience_freezer(context: AppContext) -> AudienceFreezer:
    """campaigns.audience.freeze_audience with the key and the hygiene policy bound."""
    key = context.key
    hygiene = context.settings.hygiene

    def freeze(session: Any, campaign: Campaign, now: datetime) -> object:
        from campaigns.audience import freeze_audience
        from lists.hygiene import HygienePolicy

        policy = HygienePolicy(
            exclude_role_addresses=hygiene.exclude_role_addresses,
            exclude_disposable_domains=hygiene.exclude_disposable_domains,
            sunset_campaigns=hygiene.sunset_campaigns,
            sunset_days=hygiene.sunset_days,
        )
        return freeze_audience(session, campaign, key, now, policy)

    return freeze


def message_factory(context: AppContext, provider: str | None = None) -> MessageFactory:
    """The message factory: ``provider`` is MODULE:CALLABLE taking the AppContext (tests and
    benchmarks plug theirs in); by default patron.messages' campaign pipeline (render,
    assemble, sign)."""
    target = provider or "patron.messages:make_message_factory"
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        make = getattr(module, attribute or "make_message_factory")
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"no message factory at {target!r}: {exc}") from exc
    factory: MessageFactory = make(context)
    return factory


def build_engine(
    context: AppContext, factory_provider: str | None = None, *, resolve_mx: bool = True
) -> DeliveryEngine:
    """`patron worker`'s engine from the settings. Without ``resolve_mx`` recipient domains are
    not looked up in DNS: each domain is its own provider lane (the demo, offline)."""
    from campaigns.confirmations import ConfirmationSweeper
    from campaigns.delivery.engine import DeliveryEngine
    from campaigns.delivery.mx import DnsResolver
    from campaigns.delivery.providers import ProviderDirectory
    from campaigns.delivery.smtp import SmtpTransport

    settings = context.settings
    dns = settings.dns
    directory = (
        ProviderDirectory(DnsResolver(dns.nameservers, dns.timeout), timeout=dns.timeout)
        if resolve_mx
        else ProviderDirectory(None)
    )
    return DeliveryEngine(
        context.engine(),
        factory=message_factory(context, factory_provider),
        transport=SmtpTransport(smtp_config(settings)),
        directory=directory,
        clock=context.clock,
        config=delivery_config(settings),
        key=context.key,
        freezer=audience_freezer(context),
        sweeper=ConfirmationSweeper(),
    )


# -- campaign commands ----------------------------------------------------------------------


def _summary(campaign: Campaign) -> dict[str, Any]:
    return {
        "id": campaign.id,
        "status": campaign.status,
        "scheduled_at": campaign.scheduled_at,
        "local_send_time": campaign.local_send_time,
        "window": f"{campaign.window_start}-{campaign.window_end}"
        if campaign.window_start
        else None,
    }


def schedule_cmd(
    ctx: typer.Context,
    campaign_id: IdArgument,
    at: Annotated[str, typer.Option("--at", help="ISO 8601 date-time (or date with "
                                    "--local-time); without offset: delivery.default_timezone.")],
    local_time: Annotated[str | None, typer.Option(
        "--local-time", help="HH:MM: send at this time in each recipient's own time zone.")] = None,
    window: Annotated[str | None, typer.Option(
        "--window", help="HH:MM-HH:MM: only send within these local hours.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Schedule a campaign: at a time, or at each recipient's local time, within a window."""
    from campaigns.delivery import controls
    from campaigns.delivery.scheduling import parse_at, schedule

    context = get_ctx(ctx)
    when = parse_at(at, context.settings.delivery.default_timezone)
    with context.session() as session:
        campaign = controls.get_campaign(session, campaign_id, lock=True)
        _preflight(context, session, campaign)
        starts = schedule(campaign, when, context.now(), local_time=local_time, window=window)
        doc = _summary(campaign)
    emit(doc, as_json, lambda c: c.print(
        f"campaign {campaign_id} scheduled: starts {starts:%Y-%m-%d %H:%M} UTC"
        + (f", {local_time} local time" if local_time else "")
        + (f", window {window}" if window else "")
        + "; a running `patron worker` sends it"))


def _preflight(context: AppContext, session: Any, campaign: Campaign) -> None:
    """A campaign whose template fails for any of a sample of its real recipients is neither
    scheduled nor started (C3): the error names the recipient, the line and the variable."""
    from campaigns.pipeline import CampaignPipeline
    from campaigns.preflight import check_campaign
    from patron.sender import sender_identity

    if campaign.status not in ("draft", "scheduled"):
        return  # already sending, paused or over: the transition check answers
    pipeline = CampaignPipeline(session, campaign, sender_identity(context.settings), context.key)
    check_campaign(pipeline, session, context.now())


def send_cmd(ctx: typer.Context, campaign_id: IdArgument, as_json: JsonOption = False) -> None:
    """Start sending a campaign now (its audience is frozen at this moment)."""
    from campaigns.delivery import controls
    from campaigns.delivery.stats import delivery_stats

    context = get_ctx(ctx)
    freezer = audience_freezer(context)
    with context.session() as session:
        _preflight(context, session, controls.get_campaign(session, campaign_id, lock=True))
        campaign = controls.send_now(
            session, campaign_id, context.now(), freezer,
            context.settings.delivery.default_timezone,
        )
        doc = _summary(campaign)
        doc["stats"] = delivery_stats(session, campaign_id, campaign.status).as_dict()
    queued = doc["stats"]["queued"]
    emit(doc, as_json, lambda c: c.print(
        f"campaign {campaign_id} is sending: {queued} queued; a running `patron worker` "
        "delivers them (or run `patron worker --once`)"))


def _control(ctx: typer.Context, campaign_id: int, as_json: bool, action: str) -> None:
    from campaigns.delivery import controls

    context = get_ctx(ctx)
    act = {"pause": controls.pause, "resume": controls.resume, "cancel": controls.cancel}[action]
    with context.session() as session:
        campaign = act(session, campaign_id, context.now())
        doc = _summary(campaign)
    emit(doc, as_json, lambda c: c.print(f"campaign {campaign_id} is {doc['status']}"))


def pause_cmd(ctx: typer.Context, campaign_id: IdArgument, as_json: JsonOption = False) -> None:
    """Pause a sending campaign (workers stop within a second; resume continues it)."""
    _control(ctx, campaign_id, as_json, "pause")


def resume_cmd(ctx: typer.Context, campaign_id: IdArgument, as_json: JsonOption = False) -> None:
    """Resume a paused campaign."""
    _control(ctx, campaign_id, as_json, "resume")


def cancel_cmd(ctx: typer.Context, campaign_id: IdArgument, as_json: JsonOption = False) -> None:
    """Cancel a campaign for good (what was sent stays sent)."""
    _control(ctx, campaign_id, as_json, "cancel")


def stats_cmd(ctx: typer.Context, campaign_id: IdArgument, as_json: JsonOption = False) -> None:
    """Delivery counts of a campaign from its send log (M1)."""
    from campaigns.delivery import controls
    from campaigns.delivery.stats import delivery_stats

    context = get_ctx(ctx)
    with context.session() as session:
        campaign = controls.get_campaign(session, campaign_id)
        stats = delivery_stats(session, campaign_id, campaign.status).as_dict()

    def human(c: Console) -> None:
        c.print(f"campaign {campaign_id} ({stats['status']})")
        for key, value in stats.items():
            if key in ("campaign_id", "status"):
                continue
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items()) or "0"
            c.print(f"  {key:<14} {value}")

    emit(stats, as_json, human)


# -- the worker -----------------------------------------------------------------------------


def worker_cmd(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option(
        "--once", help="Send until nothing is due, then exit.")] = False,
    processes: Annotated[int, typer.Option(
        "--processes", min=1, max=64,
        help="Worker processes to run (PostgreSQL; SQLite sends from one at a time).")] = 1,
    factory: Annotated[str | None, typer.Option(
        "--factory", hidden=True, metavar="MODULE:CALLABLE",
        help="Message factory provider (tests and benchmarks).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Send due campaigns continuously (stop with Ctrl-C); --once: until nothing is due."""
    context = get_ctx(ctx)
    # The send path reads a small working set over and over: a small SQLite page cache keeps a
    # long-running worker's memory flat (64 MiB a connection was a third of its RSS).
    context.sqlite_cache_kib = WORKER_SQLITE_CACHE_KIB
    if processes > 1:
        if context.engine().dialect.name == "sqlite":
            sys.stderr.write("patron: SQLite sends from one worker at a time: using 1 process\n")
        else:
            _run_processes(context, processes, once, factory, as_json)
            return
    engine = build_engine(context, factory)
    report = asyncio.run(_serve(engine, once))
    doc = report.as_dict()
    emit(doc, as_json, lambda c: c.print(
        f"worker done: {report.delivered} sent, {report.deferred} deferred, "
        f"{report.bounced} bounced, {report.failed} failed, {report.unknown} unknown, "
        f"{report.skipped} skipped in {report.seconds:.1f}s"))


async def _serve(
    engine: DeliveryEngine, once: bool, on_signal: Callable[[int], None] | None = None
) -> RunReport:
    # Everything alive now (modules, settings, the engine) lives as long as the worker: keep it
    # out of the collector, whose full passes over it stalled the event loop by ~80 ms.
    gc.collect()
    gc.freeze()
    loop = asyncio.get_running_loop()

    def stop(signum: int) -> None:
        engine.stop()
        if on_signal is not None:
            on_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop, sig)
    try:
        return await engine.run(once=once)
    finally:
        await engine.close_transport()


def _run_processes(
    context: AppContext, processes: int, once: bool, factory: str | None, as_json: bool
) -> None:
    """This process is one of the workers; the others are child processes."""
    args = [sys.executable, "-m", "patron", "worker", "--json"]
    if once:
        args.append("--once")
    if factory:
        args += ["--factory", factory]
    # The URL travels in the environment, not on a command line others can read.
    env = {**os.environ, "PATRON_DATABASE_URL": context.settings.database_url}
    children = [
        subprocess.Popen(args, stdout=subprocess.PIPE, env=env)  # noqa: S603
        for _ in range(processes - 1)
    ]

    def forward(signum: int) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

    try:
        own: dict[str, Any] = asyncio.run(
            _serve(build_engine(context, factory), once, forward)
        ).as_dict()
    except BaseException:
        forward(signal.SIGTERM)
        raise
    finally:
        outputs = [child.communicate()[0] for child in children]
    reports: list[dict[str, Any]] = [own]
    for child, out in zip(children, outputs, strict=True):
        if child.returncode != 0:
            raise PatronError(f"a worker process exited with code {child.returncode}")
        reports.append(json.loads(out))
    total = {
        key: sum(int(r[key]) for r in reports)
        for key in ("claimed", "delivered", "deferred", "bounced", "failed", "unknown",
                    "skipped", "released")
    }
    doc = {"processes": processes, **total, "workers": reports}
    emit(doc, as_json, lambda c: c.print(
        f"{processes} workers done: {total['delivered']} sent, {total['deferred']} deferred, "
        f"{total['bounced']} bounced, {total['failed']} failed, {total['unknown']} unknown, "
        f"{total['skipped']} skipped"))

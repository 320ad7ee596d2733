"""`patron demo`: build the demo shop, send a win-back campaign (and the pending sign-ups'
confirmations) through the built-in SMTP sink, and show what happened."""

from __future__ import annotations

import asyncio
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from patron.cli.app import JsonOption, get_ctx
from patron.cli.cmd_reports import print_retention
from patron.cli.output import emit, table
from patron.context import AppContext
from patron.demo import (
    DEFAULT_CONTACTS,
    DEFAULT_SEED,
    DEMO_RATE,
    NEWSLETTER,
    REPORT_DAYS,
    WINBACK_HOLDOUT_PERCENT,
    WINBACK_RULE,
    WINBACK_SEGMENT,
    WINBACK_TEMPLATE,
    DemoResult,
    default_demo_maildir,
    run_demo,
)
from patron.settings import Settings

if TYPE_CHECKING:  # the delivery stack and aiosmtpd load only when the demo sends
    from campaigns.delivery.engine import DeliveryEngine, RunReport
    from campaigns.delivery.stats import DeliveryStats
    from patron.sink import SmtpSink


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


@dataclass(frozen=True, slots=True)
class DemoSend:
    """What the demo sent through its sink."""

    campaign_id: int
    campaign_name: str
    kind: str
    stats: DeliveryStats
    confirmations: int
    worker: RunReport
    sink_address: str
    maildir: Path
    stored: int
    seconds: float


def demo(
    ctx: typer.Context,
    contacts: Annotated[
        int, typer.Option("--contacts", help="How many people the demo shop has.", min=1)
    ] = DEFAULT_CONTACTS,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the generator (same seed, same shop).")
    ] = DEFAULT_SEED,
    send: Annotated[bool, typer.Option(
        "--send/--no-send",
        help="Send a win-back campaign and the confirmations through the built-in SMTP sink "
        "(--no-send: only build the shop).")] = True,
    maildir: Annotated[Path | None, typer.Option(
        "--maildir", metavar="DIR",
        help="Maildir the sink stores the demo's messages in (default: demo-mail in the data "
        "directory, emptied each run).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Build a demo shop (contacts, lists, consent, two years of orders), send a discount
    win-back campaign to its lapsed repeat buyers through the built-in SMTP sink, and report.

    Without --db it goes to demo.sqlite3 in the data directory, recreated each run; with
    --db the database must be empty. The sink listens on a free loopback port for this run
    only; what it received stays in its Maildir."""
    from patron.sender import sender_identity
    from patron.sink import Maildir

    context = get_ctx(ctx)
    started = time.monotonic()
    if send:
        sender_identity(context.settings)  # a DKIM setting in error stops us before building
    # The key later commands will use: PATRON_SECRET_KEY if set, else the one stored in the
    # demo database (what AppContext.key does once the database exists).
    configured = context.settings.secret_key
    secret = configured.get_secret_value() if configured is not None else ""
    key = secret.encode() if secret else None
    result = run_demo(
        context.cli_overrides.get("database_url"), contacts=contacts, seed=seed,
        now=context.now(), key=key,
    )
    box = Maildir((maildir or default_demo_maildir()).expanduser().resolve())
    if maildir is None:
        box.clear()  # the demo's own Maildir goes with the demo's new database
    sent = asyncio.run(_send(context, result.url, seed, box.path)) if send else None
    elapsed = time.monotonic() - started
    emit(_document(result, sent, elapsed), as_json, lambda c: _print(c, result, sent, elapsed))


# -- sending through the sink ---------------------------------------------------------------


def demo_settings(settings: Settings, url: str, sink: SmtpSink) -> Settings:
    """The effective settings pointed at the demo database and the sink, for this run only:
    no TLS, AUTH or extra relays (nothing leaves the machine, so no warm-up or hourly cap
    either), and the demo's fast global rate."""
    smtp = settings.smtp.model_copy(update={
        "host": sink.host, "port": sink.port, "tls": "none", "username": None,
        "password": None, "relays": [],
    })
    delivery = settings.delivery.model_copy(update={
        "rate": DEMO_RATE, "rate_per_hour": None, "warmup_domains": {},
    })
    return settings.model_copy(update={"database_url": url, "smtp": smtp, "delivery": delivery})


def demo_engine(context: AppContext) -> DeliveryEngine:
    """`patron worker`'s engine without DNS lookups of recipient domains: the demo's addresses
    are on reserved example domains whose MX says nothing, and the demo must work offline
    (each domain is its own provider lane)."""
    from patron.cli.cmd_sending import build_engine

    return build_engine(context, resolve_mx=False)


async def _send(context: AppContext, url: str, seed: int, maildir: Path) -> DemoSend:
    """Start the sink, create and start the win-back campaign, run the engine until nothing is
    due (as `patron worker --once`), and count what happened. The engine's connections and
    the sink are closed whatever fails."""
    from campaigns.delivery import controls
    from campaigns.delivery.stats import delivery_stats
    from patron.cli.cmd_sending import audience_freezer
    from patron.demo import confirmation_campaign_ids, create_winback
    from patron.sender import sender_identity
    from patron.sink import SmtpSink

    started = time.monotonic()
    async with SmtpSink(maildir, port=0) as sink:
        run = AppContext(clock=context.clock, _settings=demo_settings(context.settings, url, sink))
        try:
            key, now = run.key, run.now()
            with run.session() as session:
                campaign = create_winback(
                    session, sender_identity(run.settings), key, now, seed
                )
                assert campaign.id is not None
                controls.send_now(session, campaign.id, now, audience_freezer(run),
                                  run.settings.delivery.default_timezone)
                campaign_id, name, kind = campaign.id, campaign.name, campaign.kind
            engine = demo_engine(run)
            try:
                report = await engine.run(once=True)
            finally:
                await engine.close_transport()
            with run.session() as session:
                status = controls.get_campaign(session, campaign_id).status
                stats = delivery_stats(session, campaign_id, status)
                confirmations = sum(
                    delivery_stats(session, cid, "").sent
                    for cid in confirmation_campaign_ids(session)
                )
        finally:
            run.dispose()
    return DemoSend(
        campaign_id=campaign_id, campaign_name=name, kind=kind, stats=stats,
        confirmations=confirmations, worker=report, sink_address=sink.address,
        maildir=maildir, stored=sink.stored, seconds=time.monotonic() - started,
    )


# -- output ---------------------------------------------------------------------------------


def _document(result: DemoResult, sent: DemoSend | None, elapsed: float) -> dict[str, Any]:
    return {
        "database": result.url,
        "path": result.path,
        "contacts": result.contacts,
        "refused": result.refused_by_reason,
        "lists": [
            {"name": s.name, "double_opt_in": s.double_opt_in, "confirmed": s.confirmed,
             "pending": s.pending, "unsubscribed": s.unsubscribed}
            for s in result.lists
        ],
        "orders": result.orders,
        "history_start": result.history_start,
        "revenue": result.revenue_cents / 100,
        "currency": result.currency,
        "suppressions": result.suppressions,
        "confirmations_queued": result.confirmations_queued,
        "retention": result.report.to_document(),
        "send": _send_document(sent) if sent is not None else None,
        "seconds": round(elapsed, 2),
    }


def _send_document(sent: DemoSend) -> dict[str, Any]:
    report = sent.worker
    return {
        "campaign": {
            "id": sent.campaign_id, "name": sent.campaign_name, "kind": sent.kind,
            "template": WINBACK_TEMPLATE, "lists": [NEWSLETTER], "segment": WINBACK_SEGMENT,
            "rule": WINBACK_RULE, "holdout_percent": WINBACK_HOLDOUT_PERCENT,
        },
        "stats": sent.stats.as_dict(),
        "holdout": sent.stats.skipped.get("holdout", 0),
        "confirmations_sent": sent.confirmations,
        "worker": {
            "delivered": report.delivered, "deferred": report.deferred,
            "bounced": report.bounced, "failed": report.failed, "unknown": report.unknown,
            "skipped": report.skipped, "seconds": report.seconds,
        },
        "rate": DEMO_RATE,
        "sink": {"address": sent.sink_address, "maildir": sent.maildir, "stored": sent.stored},
        "seconds": round(sent.seconds, 2),
    }


def _print(c: Console, result: DemoResult, sent: DemoSend | None, elapsed: float) -> None:
    where = result.path if result.path is not None else result.url
    c.print(f"[bold]Demo shop ready[/bold] in {elapsed:.1f} s: {where}")
    refused = ", ".join(f"{n} {reason}" for reason, n in sorted(result.refused_by_reason.items()))
    c.print(f"  contacts: {result.contacts:,}" + (f" (refused at import: {refused})"
                                                   if refused else ""))
    c.print(f"  orders: {result.orders:,} since {result.history_start:%Y-%m-%d}, revenue "
            f"{result.revenue_cents / 100:,.2f} {result.currency}")
    suppressed = ", ".join(f"{n} {reason}" for reason, n in sorted(result.suppressions.items()))
    c.print(f"  suppressed addresses: {sum(result.suppressions.values())}"
            + (f" ({suppressed})" if suppressed else ""))
    c.print(table(None, ["list", "opt-in", "confirmed", "pending", "unsubscribed"],
                  [[s.name, "double" if s.double_opt_in else "single", s.confirmed, s.pending,
                    s.unsubscribed] for s in result.lists]))
    if sent is None:
        if result.confirmations_queued:
            c.print(f"  double opt-in confirmations queued: {result.confirmations_queued} "
                    "(recent pending sign-ups; `patron worker` sends them)")
    else:
        _print_send(c, sent)
    c.print()
    c.print("Point other commands at it:")
    c.print(f"  export PATRON_DATABASE_URL={shlex.quote(result.url)}", soft_wrap=True)
    if sent is not None:
        c.print(f"  patron campaigns stats {sent.campaign_id}        # the campaign's counts")
        c.print(f"  patron campaigns preview {sent.campaign_id} --format text")
        c.print(f"  ls {shlex.quote(str(sent.maildir / 'new'))}", soft_wrap=True)
    c.print()
    c.print(f"Retention over the last {REPORT_DAYS} days:")
    print_retention(c, result.report)


def _print_send(c: Console, sent: DemoSend) -> None:
    s = sent.stats
    holdout = s.skipped.get("holdout", 0)
    others = {reason: n for reason, n in s.skipped.items() if reason != "holdout"}
    c.print()
    c.print(f"[bold]Sent through the built-in SMTP sink[/bold] ({sent.sink_address}) in "
            f"{sent.seconds:.1f} s, at most {DEMO_RATE:g} messages/s with per-provider lanes:")
    c.print(f"  campaign {sent.campaign_id} {sent.campaign_name!r} ({sent.kind}, template "
            f"{WINBACK_TEMPLATE}) to list {NEWSLETTER}, segment {WINBACK_SEGMENT}: "
            f"{WINBACK_RULE}")
    c.print(f"  recipients {s.recipients}, sent {s.sent}, delivered {s.delivered}, "
            f"holdout {holdout} ({WINBACK_HOLDOUT_PERCENT:g} %, the control group for lift)")
    if others:
        c.print("  skipped: " + ", ".join(f"{n} {reason.replace('_', ' ')}"
                                          for reason, n in others.items()))
    problems = {"deferred": s.deferred, "bounced": s.bounced_hard + s.bounced_soft,
                "failed": s.failed, "unknown": s.unknown, "queued": s.queued}
    if any(problems.values()):
        c.print("  not sent: " + ", ".join(f"{n} {k}" for k, n in problems.items() if n))
    c.print(f"  double opt-in confirmations sent: {sent.confirmations}")
    messages = "message" if sent.stored == 1 else "messages"
    c.print(f"  the sink stored {sent.stored} {messages} in {sent.maildir} (a Maildir: one "
            "file per message in new/)", soft_wrap=True)

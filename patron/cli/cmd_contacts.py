"""`patron contacts …` and `patron unsubscribe`."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lists.consent import Provenance
from lists.contacts import contact_detail, find_contact
from lists.errors import InvalidInputError
from lists.gdpr import erase_contact, export_contact
from lists.opt_out import OptOutResult, opt_out
from patron.cli.app import JsonOption, get_ctx
from patron.cli.output import emit, print_json, table
from patron.privacy import erasure_steps, export_sections

contacts_app = typer.Typer(help="Contacts: import, show, export, erase.", no_args_is_help=True)

EmailArg = Annotated[str, typer.Argument(help="The contact's email address.", metavar="EMAIL")]
CLI_PROVENANCE = Provenance(source="cli")


def register(app: typer.Typer) -> None:
    from patron.cli import cmd_imports

    cmd_imports.register_contacts_import(contacts_app)
    contacts_app.command("show")(show)
    contacts_app.command("export")(export)
    contacts_app.command("erase")(erase)
    app.add_typer(contacts_app, name="contacts")
    app.command("unsubscribe")(unsubscribe)


def show(
    ctx: typer.Context,
    email: EmailArg,
    orders: Annotated[int, typer.Option("--orders", help="How many recent orders to show.")] = 10,
    events: Annotated[int, typer.Option("--events", help="How many recent events to show.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """Show a contact: profile, flags, aggregates, subscriptions, consent ledger, orders."""
    context = get_ctx(ctx)
    key = context.key
    with context.session() as session:
        contact = find_contact(session, email)
        detail = contact_detail(
            session, key, contact, orders_limit=max(orders, 0), events_limit=max(events, 0)
        )
    emit(detail.to_document(), as_json, lambda c: _print_detail(c, detail.to_document()))


def _at(value: str | None) -> str | None:
    # Human view: minutes are enough, and everything is UTC.
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M") if value else None


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    # Values are data, not rich markup: a source such as "[erased]" must print as written.
    return table(title, columns, [[None if v is None else escape(str(v)) for v in r] for r in rows])


def _print_detail(c: Console, doc: dict[str, Any]) -> None:
    p, flags, agg = doc["profile"], doc["flags"], doc["aggregates"]
    name = " ".join(x for x in (p["first_name"], p["last_name"]) if x) or "(no name)"
    c.print(f"[bold]{escape(name)}[/bold] <{escape(p['email'])}>  #{p['id']}")
    facts = [
        ("customer id", p["customer_id"]),
        ("locale", p["locale"]),
        ("time zone", p["timezone"]),
        ("created", _at(p["created_at"])),
        ("updated", _at(p["updated_at"])),
    ]
    for label, value in facts:
        if value:
            c.print(f"  {label}: {escape(str(value))}")
    for key, value in sorted(p["attributes"].items()):
        c.print(f"  attr.{escape(key)}: {escape(str(value))}")
    marks = [m for m, on in (("role address", flags["is_role"]),
                             ("disposable domain", flags["is_disposable"])) if on]
    if flags["suppressed"]:
        marks.append(f"suppressed ({flags['suppressed']})")
    c.print(f"  flags: {', '.join(marks) if marks else 'none'}")
    c.print(
        f"  orders: {agg['orders_count']}, spent {agg['total_spent_cents'] / 100:,.2f}"
        f", first {_at(agg['first_order_at']) or '–'}, last {_at(agg['last_order_at']) or '–'}"
    )
    c.print(
        f"  last emailed {_at(agg['last_emailed_at']) or '–'}"
        f", opened {_at(agg['last_opened_at']) or '–'}"
        f", clicked {_at(agg['last_clicked_at']) or '–'}"
    )
    c.print("  (times in UTC)", style="dim")
    c.print()
    c.print(_table("Subscriptions", ["list", "status", "since", "confirmed", "unsubscribed"],
                  [[s["list"], s["status"], _at(s["created_at"]), _at(s["confirmed_at"]),
                    _at(s["unsubscribed_at"])] for s in doc["subscriptions"]])
            if doc["subscriptions"] else "no subscriptions")
    c.print()
    c.print(_table("Consent ledger", ["when", "list", "action", "source", "ip", "text"],
                  [[_at(r["occurred_at"]), r["list"] or "(all lists)", r["action"], r["source"],
                    r["ip"], r["consent_text_version"]] for r in doc["consent_ledger"]])
            if doc["consent_ledger"] else "consent ledger: empty")
    if doc["orders"]:
        c.print()
        c.print(_table("Last orders", ["when", "order", "total", "discount"],
                      [[_at(o["ordered_at"]), o["order_id"],
                        f"{o['total_cents'] / 100:,.2f} {o['currency']}", o["discount_code"]]
                       for o in doc["orders"]]))
    if doc["events"]:
        c.print()
        c.print(_table("Recent events", ["when", "event", "class", "campaign", "url"],
                      [[_at(e["occurred_at"]), e["kind"], e["classification"], e["campaign_id"],
                        e["url"]] for e in doc["events"]]))


def export(ctx: typer.Context, email: EmailArg) -> None:
    """Print everything held about a contact as one JSON document (GDPR Art. 15/20)."""
    context = get_ctx(ctx)
    key = context.key
    with context.session() as session:
        contact = find_contact(session, email)
        doc = export_contact(session, key, contact, context.now(), sections=export_sections())
    print_json(doc)


def _interactive() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def erase(
    ctx: typer.Context,
    email: EmailArg,
    yes: Annotated[
        bool, typer.Option("--yes", help="Do not ask for confirmation (required in scripts).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Erase a contact's personal data (GDPR Art. 17); the address stays suppressed."""
    context = get_ctx(ctx)
    key = context.key
    with context.session() as session:
        address = find_contact(session, email).email
    if not yes:
        if not _interactive():
            raise InvalidInputError("erasure cannot be undone: pass --yes to confirm it")
        if not typer.confirm(f"Erase {address} and their personal data? This cannot be undone."):
            raise typer.Abort()
    with context.session() as session:
        result = erase_contact(
            session, key, find_contact(session, address), context.now(), steps=erasure_steps()
        )
    doc = {
        "erased": True,
        "subscriptions_deleted": result.subscriptions_deleted,
        "ledger_rows_anonymized": result.ledger_rows_anonymized,
        "orders_detached": result.orders_detached,
        "events_detached": result.events_detached,
        "suppression_reason": result.suppression_reason.value,
        "newly_suppressed": result.newly_suppressed,
    }

    def human(c: Console) -> None:
        kept = (
            "suppressed (erased)" if result.newly_suppressed
            else f"already suppressed ({result.suppression_reason.value}), kept"
        )
        c.print(
            f"erased: {result.subscriptions_deleted} subscriptions deleted, "
            f"{result.ledger_rows_anonymized} consent records anonymized, "
            f"{result.orders_detached} orders and {result.events_detached} events detached; "
            f"address {kept}"
        )

    emit(doc, as_json, human)


def unsubscribe(
    ctx: typer.Context,
    email: EmailArg,
    list_name: Annotated[
        str | None,
        typer.Option("--list", help="Only this list (default: every list, and suppress).",
                     metavar="NAME"),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Unsubscribe an address from one list, or from all lists and suppress it."""
    context = get_ctx(ctx)
    key = context.key
    with context.session() as session:
        result = opt_out(session, key, email, CLI_PROVENANCE, context.now(), list_name=list_name)
    doc = {
        "email": result.email,
        "list": result.list_name,
        "contact_found": result.contact_found,
        "unsubscribed_from": list(result.unsubscribed_from),
        "suppressed": result.suppression_reason.value if result.suppression_reason else None,
        "newly_suppressed": result.newly_suppressed,
    }
    emit(doc, as_json, lambda c: c.print(escape(describe_opt_out(result))))


def describe_opt_out(result: OptOutResult) -> str:
    """One sentence saying what an opt-out did."""
    who = result.email
    if not result.contact_found:
        if result.newly_suppressed:
            return (f"no contact with address {who!r}; suppressed it (unsubscribed_all) so no "
                    "import or send will reach it")
        reason = result.suppression_reason.value if result.suppression_reason else "?"
        return f"no contact with address {who!r}; it was already suppressed ({reason})"
    if result.list_name is not None:
        if result.unsubscribed_from:
            return f"unsubscribed {who} from {result.list_name!r}"
        if result.was_subscribed:
            return f"{who} was already unsubscribed from {result.list_name!r}"
        return f"{who} is not subscribed to {result.list_name!r}; nothing changed"
    lists = ", ".join(repr(n) for n in result.unsubscribed_from)
    first = f"unsubscribed {who} from {lists}" if lists else f"{who} had no active subscription"
    if result.newly_suppressed:
        return f"{first}; address suppressed (unsubscribed_all)"
    reason = result.suppression_reason.value if result.suppression_reason else "?"
    return f"{first}; address already suppressed ({reason})"

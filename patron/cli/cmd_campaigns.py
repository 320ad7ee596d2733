"""`patron campaigns …`: create, list, show, preview, test-send; sending controls live in
cmd_sending.py and register onto the same group."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from campaigns.discounts import import_codes, pool_size
from campaigns.message.assembly import AssembledMessage
from campaigns.models import Campaign, CampaignKind, CampaignList, Message, MessageState
from campaigns.pipeline import CampaignPipeline, discount_for, sample_discount
from campaigns.rendering import SHIPPED, load_shipped_template, load_template_file
from campaigns.service import (
    CampaignSpec,
    campaign_list_names,
    create_campaign,
    get_campaign,
    list_campaigns,
)
from lists.contacts import find_contact
from lists.errors import InvalidInputError, NotFoundError
from lists.models import Contact, Segment, Subscription
from patron.cli.app import JsonOption, get_ctx
from patron.cli.output import emit, table
from patron.context import AppContext
from patron.sender import sender_identity
from patron.test_send import send_once

campaigns_app = typer.Typer(help="Campaigns: create, preview, send, control.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    from patron.cli import cmd_sending

    cmd_sending.register_sending(campaigns_app, app)
    app.add_typer(campaigns_app, name="campaigns")


IdArg = Annotated[int, typer.Argument(help="Campaign id (see `patron campaigns ls`).")]
# The kinds a marketer creates: every CampaignKind but `confirmation`, which Patron makes itself
# for each double opt-in list (its mail may go to pending contacts, so it carries nothing else).
CreatableKind = Literal["newsletter", "discount", "welcome", "winback", "nps"]


def _content(pairs: list[str], content_file: Path | None) -> dict[str, Any]:
    content: dict[str, Any] = {}
    if content_file is not None:
        try:
            loaded = json.loads(content_file.read_text("utf-8"))
        except FileNotFoundError:
            raise NotFoundError(f"no such file: {content_file}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"{content_file} is not a JSON object: {exc}") from exc
        if not isinstance(loaded, dict):
            raise InvalidInputError(f"{content_file} must hold a JSON object of content fields")
        content.update({str(k): v for k, v in loaded.items()})
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise InvalidInputError(f"--content takes NAME=VALUE, got {pair!r}")
        content[name.strip()] = value
    return content


@campaigns_app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="Campaign name (shown in reports).")],
    kind_name: Annotated[CreatableKind, typer.Option("--kind", help="Kind of campaign.")],
    template: Annotated[
        str, typer.Option("--template", help="A shipped template name or the path of an MJML file.")
    ],
    subject: Annotated[str, typer.Option("--subject", help="Subject line (a Jinja template).")],
    lists: Annotated[list[str], typer.Option("--list", help="List to send to (repeatable).")],
    segment: Annotated[
        str | None, typer.Option("--segment", help="Saved segment narrowing the audience.")
    ] = None,
    exclude_segment: Annotated[
        str | None, typer.Option("--exclude-segment", help="Saved segment to leave out.")
    ] = None,
    content: Annotated[
        list[str] | None,
        typer.Option("--content", help="Template content field NAME=VALUE (repeatable)."),
    ] = None,
    content_file: Annotated[
        Path | None, typer.Option("--content-file", help="JSON object of content fields.")
    ] = None,
    holdout: Annotated[
        float, typer.Option("--holdout", help="Percent of the audience held out (0-50).")
    ] = 0.0,
    ab_subject: Annotated[
        list[str] | None,
        typer.Option("--ab-subject", help="A/B subject variant (repeat for each variant)."),
    ] = None,
    ab_test_percent: Annotated[
        float, typer.Option("--ab-test-percent", help="Percent of the audience in the A/B test.")
    ] = 20.0,
    discount_prefix: Annotated[
        str | None, typer.Option("--discount-prefix", help="Generate codes with this prefix.")
    ] = None,
    discount_expiry_days: Annotated[
        int | None, typer.Option("--discount-expiry-days", help="Days a generated code is valid.")
    ] = None,
    discount_codes: Annotated[
        Path | None,
        typer.Option("--discount-codes", help="File of codes created in the shop (one a line, "
                     "or CSV with code[,expires_at])."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a draft campaign from a shipped template or your own MJML file."""
    context = get_ctx(ctx)
    kind = CampaignKind(kind_name)
    source = load_shipped_template(template) if template in SHIPPED else _own_template(template)
    if kind is CampaignKind.DISCOUNT and not (discount_prefix or discount_codes):
        raise InvalidInputError("a discount campaign needs --discount-prefix or --discount-codes")
    spec = CampaignSpec(
        name=name,
        kind=kind,
        template=template if template in SHIPPED else str(Path(template).resolve()),
        template_source=source.text,
        subject=subject,
        lists=lists,
        segment=segment,
        exclude_segment=exclude_segment,
        content=_content(content or [], content_file),
        holdout_percent=holdout,
        ab_subjects=ab_subject or [],
        ab_test_percent=ab_test_percent,
        discount_prefix=discount_prefix,
        discount_expiry_days=discount_expiry_days,
    )
    with context.session() as session:
        campaign = create_campaign(session, spec, context.now())
        # Compiling now surfaces template errors (syntax, MJML, missing content) at creation.
        identity = sender_identity(context.settings)
        pipeline = CampaignPipeline(session, campaign, identity, context.key)
        pipeline.store_links(session)
        if discount_codes is not None:
            import_codes(session, campaign, discount_codes, context.now())
        doc = {"id": campaign.id, "name": campaign.name, "slug": campaign.slug,
               "status": campaign.status, "links": len(pipeline.compiled.links)}
    emit(doc, as_json, lambda c: c.print(
        f"created campaign {doc['id']} {name!r} ({kind.value}, draft, {doc['links']} tracked links)"
    ))


def _own_template(path: str) -> Any:
    if not path.endswith(".mjml") and not Path(path).exists():
        raise NotFoundError(
            f"no template named {path!r} (shipped: {', '.join(SHIPPED)}; or give an .mjml path)"
        )
    return load_template_file(path)


@campaigns_app.command("ls")
def ls(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List campaigns, newest first."""
    context = get_ctx(ctx)
    with context.session() as session:
        rows = list_campaigns(session)
    docs = [
        {"id": r.id, "name": r.name, "kind": r.kind, "status": r.status, "subject": r.subject,
         "scheduled_at": r.scheduled_at, "created_at": r.created_at, "recipients": r.recipients,
         "sent": r.sent}
        for r in rows
    ]

    def human(c: Console) -> None:
        if not docs:
            c.print("no campaigns yet: `patron campaigns create --help`")
            return
        c.print(table(None, ["id", "name", "kind", "status", "recipients", "sent", "scheduled"],
                      [[r.id, r.name, r.kind, r.status, r.recipients, r.sent,
                        r.scheduled_at and r.scheduled_at.strftime("%Y-%m-%d %H:%M")]
                       for r in rows]))

    emit(docs, as_json, human)


@campaigns_app.command("show")
def show(ctx: typer.Context, campaign_id: IdArg, as_json: JsonOption = False) -> None:
    """Show a campaign's settings, audience and links."""
    context = get_ctx(ctx)
    with context.session() as session:
        c = get_campaign(session, campaign_id)
        assert c.id is not None
        segment = session.get(Segment, c.segment_id) if c.segment_id else None
        total, free = pool_size(session, c.id)
        doc: dict[str, Any] = {
            "id": c.id, "name": c.name, "slug": c.slug, "kind": c.kind, "status": c.status,
            "template": c.template, "subject": c.subject, "ab_subjects": c.ab_subjects,
            "lists": campaign_list_names(session, c.id),
            "segment": segment.name if segment else None,
            "holdout_percent": c.holdout_percent, "scheduled_at": c.scheduled_at,
            "audience_frozen_at": c.audience_frozen_at, "content": c.content,
            "discount_codes": {"total": total, "unassigned": free} if total else None,
        }
    emit(doc, as_json, lambda con: con.print(table(
        None, ["field", "value"],
        [[k, json.dumps(v, default=str) if isinstance(v, dict | list) else v]
         for k, v in doc.items()])))


def _preview_contact(
    session: Session, campaign: Campaign, email: str | None
) -> tuple[Contact, int, str | None]:
    """The contact to preview for: the one asked for, else the first recipient, else anyone on
    the campaign's lists; with its A/B variant and discount code when the audience is frozen."""
    assert campaign.id is not None
    contact: Contact | None
    if email is not None:
        contact = find_contact(session, email)
    else:
        contact = session.execute(
            select(Contact)
            .join(Message, col(Message.contact_id) == col(Contact.id))
            .where(col(Message.campaign_id) == campaign.id,
                   col(Message.state) != MessageState.SKIPPED.value)
            .order_by(col(Contact.id)).limit(1)
        ).scalar_one_or_none()
        if contact is None:
            contact = session.execute(
                select(Contact)
                .join(Subscription, col(Subscription.contact_id) == col(Contact.id))
                .join(CampaignList, col(CampaignList.list_id) == col(Subscription.list_id))
                .where(col(CampaignList.campaign_id) == campaign.id)
                .order_by(col(Contact.id)).limit(1)
            ).scalar_one_or_none()
        if contact is None:
            raise NotFoundError(
                f"campaign {campaign.id} has nobody to preview for: pass --contact EMAIL"
            )
    message = session.execute(
        select(Message).where(col(Message.campaign_id) == campaign.id,
                              col(Message.contact_id) == contact.id)
    ).scalar_one_or_none()
    if message is None:
        return contact, 0, None
    return contact, max(message.variant, 0), message.discount_code


@campaigns_app.command("preview")
def preview(
    ctx: typer.Context,
    campaign_id: IdArg,
    contact: Annotated[
        str | None, typer.Option("--contact", help="Render for this contact's data.")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="html, text, or eml (the exact signed bytes).")
    ] = "html",
) -> None:
    """Print a campaign's message as one recipient would get it."""
    if fmt not in ("html", "text", "eml"):
        raise InvalidInputError(f"--format is html, text or eml, not {fmt!r}")
    message = _build(get_ctx(ctx), campaign_id, contact)
    if fmt == "eml":
        sys.stdout.buffer.write(message.data)
        sys.stdout.flush()
        return
    import email
    import email.policy

    parsed = email.message_from_bytes(message.data, policy=email.policy.default)
    part = parsed.get_body(preferencelist=(fmt if fmt == "html" else "plain",))
    assert part is not None
    sys.stdout.write(part.get_content())


@campaigns_app.command("test-send")
def test_send(
    ctx: typer.Context,
    campaign_id: IdArg,
    to: Annotated[str, typer.Option("--to", help="Address the test goes to.")],
    contact: Annotated[
        str | None, typer.Option("--contact", help="Render with this contact's data.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Send one message of the campaign now, through the configured SMTP relay."""
    from lists.addresses import normalize_email

    context = get_ctx(ctx)
    target = normalize_email(to)
    message = _build(context, campaign_id, contact, to_address=target)
    reply = send_once(context.settings.smtp, message)
    doc = {"to": target, "message_id": message.message_id, "reply": reply}
    emit(doc, as_json, lambda c: c.print(f"sent a test of campaign {campaign_id} to {target}: "
                                         f"{reply}"))


def _build(
    context: AppContext, campaign_id: int, contact: str | None, to_address: str | None = None
) -> AssembledMessage:
    """One recipient's signed message, rendered with the contact's data and, once the audience
    is frozen, their own variant and discount code (a stand-in code before)."""
    now = context.now()
    with context.session() as session:
        campaign = get_campaign(session, campaign_id)
        person, variant, code = _preview_contact(session, campaign, contact)
        identity = sender_identity(context.settings)
        pipeline = CampaignPipeline(session, campaign, identity, context.key)
        discount = discount_for(session, campaign, code) or sample_discount(campaign, now)
        return pipeline.build(
            person, now=now, variant=variant, discount=discount, to_address=to_address
        )

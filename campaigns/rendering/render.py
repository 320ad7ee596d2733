"""Rendering a compiled campaign for one recipient: subject, HTML and plain text, with signed
click, open and unsubscribe links; and the pre-scheduling check over sample recipients."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jinja2 import Template

from campaigns.rendering.compile import SUBJECT_FILE, CompiledCampaign
from campaigns.rendering.context import (
    ContactView,
    DiscountView,
    MessageKind,
    Namespace,
    Recipient,
)
from campaigns.rendering.environment import error_detail, template_line
from campaigns.rendering.errors import TemplateError
from campaigns.rendering.links import TrackedLink
from campaigns.rendering.text import tidy_rendered
from campaigns.tokens import make_click_tokens, make_open_token, make_unsubscribe_token

# Anything that would break a header line or hide in it: C0 controls, DEL, C1 controls.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Used by check_renders only: tokens are not what a render check is about.
CHECK_KEY = b"patron-render-check"


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """One recipient's message content; ``links`` is the campaign's link table and
    ``unsubscribe_url`` the target of the List-Unsubscribe header (None for transactional mail)."""

    subject: str
    html: str
    text: str
    links: tuple[TrackedLink, ...]
    unsubscribe_url: str | None
    # ``html`` as the template produced it: its fixed stretches are the same objects for every
    # recipient, which lets assembly encode them once per campaign.
    html_pieces: tuple[str, ...] = ()


def one_line(text: str) -> str:
    """``text`` as a single header-safe line: control characters and line breaks become
    spaces, runs of white space one space."""
    return " ".join(_CONTROL.sub(" ", text).split())


def recipient_context(
    compiled: CompiledCampaign, recipient: Recipient, key: bytes
) -> dict[str, Any]:
    """The variables of ``recipient``'s message (the subject is added once rendered)."""
    contact = ContactView(recipient)
    context = dict(compiled.base_context)
    context["contact"] = contact
    context["attr"] = contact.attributes
    context["campaign"] = Namespace("campaign", compiled.campaign_data)
    if recipient.discount is not None:
        context["discount"] = DiscountView(recipient.discount)
    if recipient.confirm_url is not None:
        context["confirm_url"] = recipient.confirm_url
    if compiled.kind is MessageKind.MARKETING:
        campaign_id, contact_id = compiled.campaign.id, recipient.contact_id
        base = compiled.tracking_base_url
        # One page serves both: T3's GET shows the preference centre with "unsubscribe from
        # all"; the same URL takes the RFC 8058 one-click POST.
        url = f"{base}/u/{make_unsubscribe_token(key, contact_id, campaign_id)}"
        context["unsubscribe_url"] = context["preferences_url"] = url
        context["_patron_click"] = make_click_tokens(
            key, campaign_id, contact_id, len(compiled.links)
        )
        context["_patron_open"] = make_open_token(key, campaign_id, contact_id)
    return context


def render_message(
    compiled: CompiledCampaign, recipient: Recipient, key: bytes
) -> RenderedMessage:
    """``recipient``'s subject, HTML and text. Raises TemplateError naming the template, the
    line and the cause when the template does not render for this recipient."""
    context = recipient_context(compiled, recipient, key)
    subject = one_line(_render(compiled, compiled.subject_template, context, subject=True))
    if not subject:
        raise TemplateError(compiled.template_name, "the subject is empty", file=SUBJECT_FILE)
    context["campaign"] = Namespace("campaign", {**compiled.campaign_data, "subject": subject})
    html_pieces = _render_pieces(compiled, compiled.html_template, context)
    text = _render(compiled, compiled.text_template, context)
    if compiled.text_needs_tidy:
        text = tidy_rendered(text)
    unsubscribe = context.get("unsubscribe_url")
    return RenderedMessage(
        subject, "".join(html_pieces), text, compiled.links, unsubscribe, html_pieces
    )


def _render(
    compiled: CompiledCampaign,
    template: Template,
    context: dict[str, Any],
    *,
    subject: bool = False,
) -> str:
    return "".join(_render_pieces(compiled, template, context, subject=subject))


def _render_pieces(
    compiled: CompiledCampaign,
    template: Template,
    context: dict[str, Any],
    *,
    subject: bool = False,
) -> tuple[str, ...]:
    env = template.environment
    try:
        try:
            # Template.render without its copy of the variables: they are fresh per recipient.
            return tuple(template.root_render_func(template.new_context(context, shared=True)))
        except Exception:
            env.handle_exception()  # re-raised with the template's lines in the traceback
    except TemplateError:
        raise
    except Exception as error:
        if subject:
            raise TemplateError(
                compiled.template_name,
                error_detail(error),
                line=template_line(error, SUBJECT_FILE),
                file=SUBJECT_FILE,
            ) from error
        raise compiled.locate_error(error, context) from error


def check_renders(
    compiled: CompiledCampaign, recipients: Iterable[Recipient], *, key: bytes = CHECK_KEY
) -> None:
    """Render for each sample recipient; the first failure is raised as a TemplateError that
    also names the recipient (a campaign cannot be scheduled until this passes)."""
    for recipient in recipients:
        try:
            render_message(compiled, recipient, key)
        except TemplateError as error:
            raise TemplateError(
                error.template,
                f"{error.detail} ({recipient.describe()})",
                line=error.line,
                file=error.file,
            ) from error

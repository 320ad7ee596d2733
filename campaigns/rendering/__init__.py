"""Rendering: MJML templates compiled once per campaign, personalized per recipient."""

from campaigns.rendering.compile import CompiledCampaign, compile_campaign
from campaigns.rendering.context import (
    CampaignInfo,
    Discount,
    MessageKind,
    Recipient,
    Shop,
)
from campaigns.rendering.errors import TemplateError
from campaigns.rendering.links import TrackedLink
from campaigns.rendering.render import RenderedMessage, check_renders, render_message
from campaigns.rendering.templates import (
    SHIPPED,
    TemplateInfo,
    TemplateSource,
    load_shipped_template,
    load_template_file,
    shipped_template_names,
)
from campaigns.rendering.text import html_to_text

__all__ = [
    "SHIPPED",
    "CampaignInfo",
    "CompiledCampaign",
    "Discount",
    "MessageKind",
    "Recipient",
    "RenderedMessage",
    "Shop",
    "TemplateError",
    "TemplateInfo",
    "TemplateSource",
    "TrackedLink",
    "check_renders",
    "compile_campaign",
    "html_to_text",
    "load_shipped_template",
    "load_template_file",
    "render_message",
    "shipped_template_names",
]

"""Compiling a campaign's template, once per campaign: Jinja syntax check, MJML to HTML, CSS
inlining, link discovery and rewriting, the open pixel, the plain-text part, and the Jinja
templates that remain to be rendered per recipient."""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import css_inline
from jinja2 import Template, TemplateSyntaxError
from mjml import mjml2html

from campaigns.rendering.context import (
    SYSTEM_URL_NAMES,
    CampaignInfo,
    MessageKind,
    Shop,
    campaign_namespace,
    content_namespace,
    shop_namespace,
)
from campaigns.rendering.environment import (
    compile_named,
    error_detail,
    html_environment,
    template_line,
    text_environment,
)
from campaigns.rendering.errors import TemplateError
from campaigns.rendering.links import (
    TrackedLink,
    find_anchors,
    is_trackable,
    slugify,
    unique_name,
    with_utm,
)
from campaigns.rendering.markers import Markers
from campaigns.rendering.templates import TemplateSource, read_partial
from campaigns.rendering.text import html_to_text

_MJML_POSITION = re.compile(r"\s*at position (\d+):(\d+)")
_MJML_WHERE = re.compile(r'\s*in template from "[^"]*"|\s*in root template')
_UNTRACKED = frozenset({"off", "no", "false", "0"})
SUBJECT_FILE = "subject"


@functools.cache
def _inliner() -> css_inline.CSSInliner:
    # Style tags stay: media queries (column stacking, dark mode) only work from them.
    return css_inline.CSSInliner(
        keep_style_tags=True, keep_link_tags=True, load_remote_stylesheets=False
    )


@dataclass(frozen=True, eq=False)
class CompiledCampaign:
    """A campaign's template, ready to be rendered for each recipient."""

    template_name: str
    kind: MessageKind
    campaign: CampaignInfo
    tracking_base_url: str
    links: tuple[TrackedLink, ...]
    html_template: Template
    text_template: Template
    subject_template: Template
    # Variables common to every recipient (Jinja's globals, shop, content).
    base_context: Mapping[str, Any]
    campaign_data: Mapping[str, Any]
    # Whether the text part keeps block tags, which can leave blank runs to tidy per recipient.
    text_needs_tidy: bool
    # The original sources (template, then partials), to locate rendering errors in them.
    sources: tuple[tuple[str, str], ...]
    _source_templates: dict[str, Template] = field(default_factory=dict, repr=False)

    def link(self, index: int) -> TrackedLink | None:
        """The tracked link ``index`` (what ``/c/{token}`` redirects to), or None."""
        return self.links[index] if 0 <= index < len(self.links) else None

    def locate_error(self, error: Exception, context: Mapping[str, Any]) -> TemplateError:
        """A rendering error restated against the original MJML line: the sources (template,
        then partials) are rendered as plain Jinja with the same variables, and the one that
        fails the same way names the line. Only runs on the error path."""
        detail = error_detail(error)
        name = self.template_name
        for label, text in self.sources:
            filename = _source_filename(label)
            if label not in self._source_templates:
                self._source_templates[label] = compile_named(html_environment(), text, filename)
            try:
                self._source_templates[label].render(context)
            except Exception as again:
                if type(again) is type(error) and error_detail(again) == detail:
                    line = template_line(again, filename)
                    return TemplateError(
                        name, detail, line=line, file=None if label == name else label
                    )
        return TemplateError(name, detail)


def _source_filename(label: str) -> str:
    return f"<patron template {label}>"


def _syntax_check(name: str, label: str, text: str) -> None:
    try:
        html_environment().parse(text)
    except TemplateSyntaxError as error:
        raise TemplateError(
            name, error_detail(error), line=error.lineno, file=None if label == name else label
        ) from None


def compile_campaign(
    source: TemplateSource,
    *,
    campaign: CampaignInfo,
    shop: Shop,
    tracking_base_url: str,
    content: Mapping[str, str] | None = None,
    kind: MessageKind | None = None,
) -> CompiledCampaign:
    """Compile ``source`` for ``campaign``. Raises TemplateError naming the line on a Jinja
    syntax error, an MJML error, a link that cannot be tracked, or (for marketing mail) a
    missing unsubscribe link or postal address."""
    name = source.name
    kind = kind or source.kind
    base = tracking_base_url.rstrip("/")
    given = dict(content or {})
    content_values = source.info.content(given) if source.info is not None else given
    shop_ns, content_ns = shop_namespace(shop), content_namespace(content_values)
    env = html_environment()

    def read_include(path: str) -> tuple[str, str]:
        label, text = read_partial(source, path)
        _syntax_check(name, label, text)
        return label, text

    campaign_context = {
        "shop": shop_ns,
        "campaign": campaign_namespace(campaign, None),
        "content": content_ns,
    }
    markers = Markers(name, env, campaign_context, read_include)

    try:
        subject_template = compile_named(text_environment(), campaign.subject, SUBJECT_FILE)
    except TemplateSyntaxError as error:
        raise TemplateError(
            name, error_detail(error), line=error.lineno, file=SUBJECT_FILE
        ) from None

    _syntax_check(name, name, source.text)
    markup = _mjml_to_html(name, markers.protect(source.text), markers)
    _check_blocks(name, markup, markers)
    markup, links = _rewrite_links(name, markup, markers, kind, campaign, base)
    if kind is MessageKind.MARKETING:
        markup = _add_pixel(markup, f"{base}/o/{markers.marker('O', 0)}")
    text = html_to_text(
        markup, keep=markers.block_pattern, urls=markers.pattern, canon=markers.canonical
    )
    if kind is MessageKind.MARKETING:
        _check_compliance(name, markup, text, markers, shop)

    html_source, text_source = markers.to_jinja(markup), markers.to_jinja(text)
    try:
        html_template = compile_named(env, html_source, f"<compiled {name}>")
        text_template = compile_named(text_environment(), text_source, f"<compiled {name} text>")
    except TemplateSyntaxError as error:
        # Each file parsed on its own, so only MJML moving Jinja tags around gets here.
        raise TemplateError(
            name, f"Jinja tags out of order after MJML ({error_detail(error)}); put tags "
            "that wrap MJML elements in <mj-raw>"
        ) from None
    return CompiledCampaign(
        template_name=name,
        kind=kind,
        campaign=campaign,
        tracking_base_url=base,
        links=tuple(links),
        html_template=html_template,
        text_template=text_template,
        subject_template=subject_template,
        base_context={**env.globals, "shop": shop_ns, "content": content_ns},
        text_needs_tidy=markers.block_pattern.search(text) is not None,
        campaign_data={"id": campaign.id, "name": campaign.name, "slug": campaign.utm_campaign},
        sources=tuple(markers.sources.items()),
    )


def _mjml_to_html(name: str, protected: str, markers: Markers) -> str:
    try:
        # No web fonts: loading them from Google tells it who opened the mail.
        markup = mjml2html(protected, disable_comments=False, fonts={})
    except ValueError as error:
        raise _mjml_error(name, str(error), markers) from None
    try:
        inlined: str = _inliner().inline(markup)
    except css_inline.InlineError as error:
        raise TemplateError(name, f"CSS: {error}") from None
    return markers.unwrap(inlined)


def _mjml_error(name: str, message: str, markers: Markers) -> TemplateError:
    """An MRML error (``… in root template at position 120:131``) with the line it means."""
    line, label = None, name
    position = _MJML_POSITION.search(message)
    if position is not None:
        # MRML counts bytes of UTF-8.
        protected = markers.protected
        offset = len(protected.encode("utf-8")[: int(position.group(1))].decode("utf-8", "ignore"))
        label, line = markers.locate(offset)
    detail = _MJML_WHERE.sub("", _MJML_POSITION.sub("", message))
    return TemplateError(name, f"MJML: {detail}", line=line, file=None if label == name else label)


def _check_blocks(name: str, markup: str, markers: Markers) -> None:
    for chunk in markers.chunks:
        if chunk.is_block and markup.count(markers.marker("B", chunk.number)) != 1:
            raise TemplateError(
                name,
                f"MJML dropped or repeated the Jinja tag {chunk.text}; put tags that wrap MJML "
                "elements in <mj-raw>, and none in <mj-title> or <mj-attributes>",
                line=chunk.line,
                file=None if chunk.file == name else chunk.file,
            )


def _rewrite_links(
    name: str,
    markup: str,
    markers: Markers,
    kind: MessageKind,
    campaign: CampaignInfo,
    base: str,
) -> tuple[str, list[TrackedLink]]:
    """Every trackable link pointed at ``{base}/c/{token}``; the table of original links."""
    links: list[TrackedLink] = []
    taken: set[str] = set()
    out: list[str] = []
    pos = 0
    for anchor in find_anchors(markup):
        href = anchor.get("href")
        wanted = anchor.get("data-name") or anchor.get("name") or ""
        untracked = (anchor.get("data-track") or "").strip().lower() in _UNTRACKED
        anchor.without("data-name", "data-track")
        chunks = markers.chunks_in(href or "")
        if href is None or kind is not MessageKind.MARKETING or untracked:
            pass
        elif chunks:
            for chunk in chunks:
                if chunk.is_block or not chunk.names <= SYSTEM_URL_NAMES:
                    raise TemplateError(
                        name,
                        f"link href {chunk.text} differs per recipient, so it cannot be "
                        'click-tracked; use a campaign-level URL or add data-track="off"',
                        line=chunk.line,
                        file=None if chunk.file == name else chunk.file,
                    )
        elif is_trackable(href):
            index = len(links)
            label = (
                slugify(markers.strip(wanted))
                or slugify(markers.strip(anchor.text()))
                or f"link-{index}"
            )
            label = unique_name(label, taken)
            final = with_utm(href, campaign.utm_campaign, label)
            links.append(TrackedLink(index, label, final, href))
            anchor.set("href", f"{base}/c/{markers.marker('C', index)}")
        out.append(markup[pos : anchor.start])
        out.append(f"{anchor.open_tag()}{anchor.inner}</a>")
        pos = anchor.end
    out.append(markup[pos:])
    return "".join(out), links


def _add_pixel(markup: str, src: str) -> str:
    pixel = (
        f'<img src="{html.escape(src, quote=True)}" width="1" height="1" alt="" '
        'style="display:block;border:0">'
    )
    at = markup.rfind("</body>")
    return markup + pixel if at < 0 else markup[:at] + pixel + markup[at:]


def _check_compliance(name: str, markup: str, text: str, markers: Markers, shop: Shop) -> None:
    """Marketing mail must carry an unsubscribe link and the sender's postal address."""
    has_unsubscribe = any(
        "unsubscribe_url" in chunk.names
        for anchor in find_anchors(markup)
        for chunk in markers.chunks_in(anchor.get("href") or "")
    )
    if not has_unsubscribe:
        raise TemplateError(
            name,
            'marketing mail needs an unsubscribe link: <a href="{{ unsubscribe_url }}"> '
            "(or include partials/footer.mjml)",
        )
    address = " ".join(shop.postal_address.split())
    if not address:
        raise TemplateError(name, "the shop's postal address is empty; marketing mail must show it")
    if address not in " ".join(text.split()):
        raise TemplateError(
            name,
            "the shop's postal address does not appear in the message; write "
            "{{ shop.postal_address }} (or include partials/footer.mjml)",
        )

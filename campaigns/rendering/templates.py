"""Finding templates: the MJML templates shipped in the ``templates`` package (with their
content fields), a marketer's own MJML file, and the partials either may include with
``<mj-include path="partials/footer.mjml" />``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath

from campaigns.rendering.context import MessageKind
from campaigns.rendering.errors import TemplateError
from lists.errors import NotFoundError

SHIPPED_PACKAGE = "templates"


@dataclass(frozen=True)
class ContentField:
    """A value a marketer fills in when creating a campaign from a shipped template; a
    ``default`` of None means the field is required."""

    name: str
    default: str | None
    help: str


@dataclass(frozen=True)
class TemplateInfo:
    """What a shipped template is for and which content it takes."""

    name: str
    description: str
    kind: MessageKind
    default_subject: str
    fields: tuple[ContentField, ...]

    def content(self, given: Mapping[str, str]) -> dict[str, str]:
        """``given`` completed with defaults; unknown or missing fields are errors."""
        known = {f.name for f in self.fields}
        unknown = sorted(set(given) - known)
        if unknown:
            raise TemplateError(
                self.name,
                f"unknown content field {unknown[0]!r} (fields: {', '.join(sorted(known))})",
            )
        content: dict[str, str] = {}
        for f in self.fields:
            value = given.get(f.name, f.default)
            if value is None:
                raise TemplateError(self.name, f"content.{f.name} is required ({f.help})")
            content[f.name] = value
        return content


_PREHEADER = ContentField(
    "preheader", "", "inbox preview text after the subject; defaults to the headline"
)
_BODY = ContentField("body", "", "plain text; blank lines separate paragraphs")
_BODY_HTML = ContentField("body_html", "", "HTML used instead of body (links in it are tracked)")


def _cta(text: str) -> tuple[ContentField, ContentField]:
    return (
        ContentField("cta_text", text, "text of the button"),
        ContentField("cta_url", "", "link of the button; defaults to shop.url"),
    )


SHIPPED: dict[str, TemplateInfo] = {
    info.name: info
    for info in (
        TemplateInfo(
            "newsletter",
            "Headline, optional image, text and a button.",
            MessageKind.MARKETING,
            "{{ content.headline }}",
            (
                _PREHEADER,
                ContentField("headline", None, "the main heading"),
                ContentField("image_url", "", "optional picture above the headline"),
                ContentField("image_alt", "", "description of the picture (required with it)"),
                _BODY,
                _BODY_HTML,
                *_cta("Read more"),
            ),
        ),
        TemplateInfo(
            "discount",
            "The recipient's unique discount code and its expiry.",
            MessageKind.MARKETING,
            "Your code for {{ content.offer }}",
            (
                _PREHEADER,
                ContentField("offer", None, 'what the code gives, e.g. "15% off your next order"'),
                ContentField("headline", "A little thank-you, just for you", "the main heading"),
                _BODY,
                *_cta("Shop now"),
            ),
        ),
        TemplateInfo(
            "welcome",
            "Greets a new subscriber or customer.",
            MessageKind.MARKETING,
            "Welcome to {{ shop.name }}",
            (
                _PREHEADER,
                ContentField("headline", "", "the main heading; defaults to Welcome to <shop>"),
                _BODY,
                _BODY_HTML,
                *_cta("Start shopping"),
            ),
        ),
        TemplateInfo(
            "winback",
            "Invites a lapsed customer back; shows their discount code if they have one.",
            MessageKind.MARKETING,
            "We miss you, {{ contact.first_name_or('friend') }}",
            (
                _PREHEADER,
                ContentField("headline", "It has been a while", "the main heading"),
                _BODY,
                _BODY_HTML,
                *_cta("See what's new"),
            ),
        ),
        TemplateInfo(
            "nps",
            "Net Promoter Score survey: eleven tracked score links 0-10.",
            MessageKind.MARKETING,
            "A quick question from {{ shop.name }}",
            (
                _PREHEADER,
                ContentField(
                    "question",
                    "",
                    "defaults to: How likely are you to recommend <shop> to a friend?",
                ),
                ContentField("body", "", "text under the question"),
                ContentField(
                    "survey_url",
                    "",
                    "thank-you page each score links to, with ?score=N; defaults to shop.url",
                ),
                ContentField("low_label", "Not likely", "label under 0"),
                ContentField("high_label", "Very likely", "label under 10"),
            ),
        ),
        TemplateInfo(
            "confirmation",
            "Double opt-in confirmation: a confirm button and nothing promotional.",
            MessageKind.TRANSACTIONAL,
            "Please confirm your subscription to {{ shop.name }}",
            (
                _PREHEADER,
                ContentField("headline", "Please confirm your subscription", "the main heading"),
                ContentField("body", "", "defaults to a sentence asking to confirm"),
                ContentField("cta_text", "Yes, subscribe me", "text of the confirm button"),
            ),
        ),
    )
}


@dataclass(frozen=True)
class TemplateSource:
    """An MJML template to compile: its name in messages, its text, the directory its
    partials are looked up in first, and (for a shipped template) its description."""

    name: str
    text: str
    directory: Path | Traversable
    info: TemplateInfo | None = None

    @property
    def kind(self) -> MessageKind:
        return self.info.kind if self.info is not None else MessageKind.MARKETING


def _shipped_root() -> Traversable:
    return resources.files(SHIPPED_PACKAGE)


def shipped_template_names() -> list[str]:
    """The names of the templates Patron ships."""
    return list(SHIPPED)


def load_shipped_template(name: str) -> TemplateSource:
    """The shipped template ``name``."""
    info = SHIPPED.get(name)
    if info is None:
        raise NotFoundError(
            f"no template named {name!r} (shipped: {', '.join(shipped_template_names())})"
        )
    root = _shipped_root()
    return TemplateSource(name, root.joinpath(f"{name}.mjml").read_text("utf-8"), root, info)


def load_template_file(path: Path | str) -> TemplateSource:
    """A marketer's own MJML file; its partials are looked up beside it, then among the
    shipped ones (so it may include ``partials/footer.mjml``)."""
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise NotFoundError(f"template file not found: {path}") from None
    except UnicodeDecodeError:
        raise TemplateError(path.stem, f"{path} is not UTF-8 text") from None
    except OSError as error:
        raise TemplateError(path.stem, f"cannot read {path}: {error.strerror}") from None
    return TemplateSource(path.stem, text, path.parent.resolve())


def read_partial(source: TemplateSource, include: str) -> tuple[str, str]:
    """The label and text of the partial that ``<mj-include path="…">`` names: relative to the
    template's directory, else to the shipped templates; never outside them."""
    relative = PurePosixPath(include.replace("\\", "/"))
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise TemplateError(
            source.name, f"include path {include!r} must stay inside the template's directory"
        )
    parts = [p for p in relative.parts if p != "."]
    for root in (source.directory, _shipped_root()):
        candidate = root.joinpath(*parts)
        if candidate.is_file():
            try:
                return "/".join(parts), candidate.read_text("utf-8")
            except (UnicodeDecodeError, OSError) as error:
                raise TemplateError(
                    source.name, f"cannot read partial {include!r}: {error}"
                ) from None
    raise TemplateError(source.name, f"partial {include!r} not found")

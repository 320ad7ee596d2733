"""Links in a compiled message: finding anchors, naming them, and adding UTM parameters."""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

# Serialized by html5ever (css_inline): attribute values are double-quoted, but '>' may occur
# inside them.
_ANCHOR_RE = re.compile(r"<a(\s(?:[^>\"']|\"[^\"]*\"|'[^']*')*)?>(.*?)</a\s*>", re.S | re.I)
_ATTR_RE = re.compile(r"""([^\s"'>/=]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?""")
_TAG_RE = re.compile(r"<[^>]*>")
_ALT_RE = re.compile(r"""<img\b[^>]*?\balt\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.I)
_NON_SLUG = re.compile(r"[^a-z0-9]+")

UTM_SOURCE = "patron"
UTM_MEDIUM = "email"
MAX_NAME_CHARS = 40


@dataclass(frozen=True, slots=True)
class TrackedLink:
    """One click-tracked link of a campaign: ``/c/{token}`` for ``index`` redirects to ``url``
    (the original link with UTM parameters); ``name`` is its ``utm_content``."""

    index: int
    name: str
    url: str
    original_url: str


@dataclass
class Anchor:
    """An ``<a>`` tag found in HTML, with its attributes (values unescaped) and inner HTML."""

    start: int
    end: int
    attrs: list[tuple[str, str | None]]
    inner: str

    def get(self, name: str) -> str | None:
        for key, value in self.attrs:
            if key == name:
                return value
        return None

    def without(self, *names: str) -> None:
        self.attrs = [(k, v) for k, v in self.attrs if k not in names]

    def set(self, name: str, value: str) -> None:
        self.attrs = [(k, value if k == name else v) for k, v in self.attrs]

    def open_tag(self) -> str:
        """The start tag, re-serialized with double-quoted, escaped values."""
        parts = ["<a"]
        for key, value in self.attrs:
            if value is None:
                parts.append(f" {key}")
            else:
                parts.append(f' {key}="{html.escape(value, quote=True)}"')
        return "".join(parts) + ">"

    def text(self) -> str:
        """The visible text of the link, else the alt text of an image inside it."""
        text = " ".join(html.unescape(_TAG_RE.sub(" ", self.inner)).split())
        if text:
            return text
        alt = _ALT_RE.search(self.inner)
        if alt is not None:
            return " ".join(html.unescape(alt.group(1) or alt.group(2) or "").split())
        return ""


def find_anchors(markup: str) -> list[Anchor]:
    """Every ``<a …>…</a>`` in ``markup``, in document order."""
    anchors = []
    for match in _ANCHOR_RE.finditer(markup):
        attrs: list[tuple[str, str | None]] = []
        for attr in _ATTR_RE.finditer(match.group(1) or ""):
            raw = attr.group(2) if attr.group(2) is not None else attr.group(3)
            if raw is None:
                raw = attr.group(4)
            attrs.append((attr.group(1).lower(), None if raw is None else html.unescape(raw)))
        anchors.append(Anchor(match.start(), match.end(), attrs, match.group(2)))
    return anchors


def slugify(text: str, max_chars: int = MAX_NAME_CHARS) -> str:
    """Lower-case ASCII words joined by dashes, cut at a word boundary (``Shop now!`` is
    ``shop-now``)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = _NON_SLUG.sub("-", ascii_text.lower()).strip("-")
    if len(slug) > max_chars:
        cut = slug[: max_chars + 1]
        slug = cut.rsplit("-", 1)[0] if "-" in cut else slug[:max_chars]
    return slug.strip("-")


def is_trackable(url: str) -> bool:
    """Whether ``url`` is an absolute http(s) link (the only kind that is click-tracked)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def add_query(url: str, params: Sequence[tuple[str, str]], *, override: bool) -> str:
    """``url`` with ``params`` appended to its query, before any fragment. The existing query is
    kept byte for byte; a key it already has is replaced when ``override``, else left alone."""
    base, hash_, fragment = url.partition("#")
    path, _, query = base.partition("?")
    pairs = [p for p in query.split("&") if p]
    present = {p.split("=", 1)[0] for p in pairs}
    new_keys = {k for k, _ in params}
    if override:
        pairs = [p for p in pairs if p.split("=", 1)[0] not in new_keys]
        present -= new_keys
    added = [(k, v) for k, v in params if k not in present]
    if added:
        pairs.append(urlencode(added))
    query = "&".join(pairs)
    return f"{path}{'?' if query else ''}{query}{hash_}{fragment}"


def with_utm(url: str, campaign_slug: str, content: str) -> str:
    """``url`` with Patron's UTM parameters, never overriding those the marketer set."""
    return add_query(
        url,
        [
            ("utm_source", UTM_SOURCE),
            ("utm_medium", UTM_MEDIUM),
            ("utm_campaign", campaign_slug),
            ("utm_content", content),
        ],
        override=False,
    )


def unique_name(wanted: str, taken: set[str]) -> str:
    """``wanted``, or ``wanted-2``, ``wanted-3``… when already taken; records the result."""
    name, n = wanted, 2
    while name in taken:
        name = f"{wanted}-{n}"
        n += 1
    taken.add(name)
    return name

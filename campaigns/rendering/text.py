"""The plain-text part, generated from the HTML: headings, paragraphs, lists and links as
``text (url)``, without head, CSS, scripts, Outlook conditionals or the hidden preheader."""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser

_SKIP_TAGS = frozenset({"head", "style", "script", "title", "template", "noscript", "xml"})
_VOID_TAGS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)
# Blocks set off by a blank line; the rest of the layout tags only break the line.
_PARAGRAPH_TAGS = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "blockquote", "pre", "table"}
)
_LINE_TAGS = frozenset({"div", "tr", "td", "th", "li", "section", "article", "center", "dd", "dt"})
_HEADING_PREFIX = {"h1": "# ", "h2": "## "}
_HIDDEN_RE = re.compile(r"display\s*:\s*none|mso-hide\s*:\s*all", re.I)
_BLANK_RUNS = re.compile(r"\n[ \t]*(?:\n[ \t]*)+")
_LINKABLE = ("http://", "https://", "mailto:", "tel:")


class _TextWriter(HTMLParser):
    def __init__(
        self,
        keep: re.Pattern[str] | None,
        urls: re.Pattern[str] | None,
        canon: Callable[[str], str],
    ) -> None:
        super().__init__(convert_charrefs=True)
        self.keep = keep
        self.urls = urls
        self.canon = canon
        self.out: list[str] = []
        self.newlines = 2  # trailing line breaks written so far (the start counts as a blank)
        self.skip_depth = 0
        self.lists: list[list[int]] = []  # per open list: [is_ordered, counter]
        self.links: list[tuple[str | None, int]] = []  # href, position of its text in out
        self.image_alts: list[str] = []
        self.quote_depth = 0

    # Output helpers -------------------------------------------------------------------------
    def _kept(self, text: str | None) -> None:
        # Template markers in content that is dropped must survive (their structure matters).
        if text and self.keep is not None:
            for marker in self.keep.findall(text):
                self.out.append(marker)

    def _write(self, text: str) -> None:
        if self.newlines:
            text = text.lstrip(" ")
            if not text:
                return
            if self.quote_depth:
                text = "> " * self.quote_depth + text
        if text:
            self.out.append(text)
            self.newlines = 0

    def _break(self, blank: bool) -> None:
        wanted = 2 if blank else 1
        if self.newlines < wanted:
            self.out.append("\n" * (wanted - self.newlines))
            self.newlines = wanted

    # Parser callbacks ----------------------------------------------------------------------
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if self.skip_depth:
            if tag not in _VOID_TAGS:
                self.skip_depth += 1
            for value in attributes.values():
                self._kept(value)
            return
        if tag in _SKIP_TAGS or _HIDDEN_RE.search(attributes.get("style") or ""):
            if tag not in _VOID_TAGS:
                self.skip_depth = 1
            for value in attributes.values():
                self._kept(value)
            return
        shown: set[str] = set()
        if tag in _PARAGRAPH_TAGS:
            self._break(blank=True)
        elif tag in _LINE_TAGS or tag == "br":
            self._break(blank=False)
        if tag in _HEADING_PREFIX:
            self._write(_HEADING_PREFIX[tag])
        elif tag in ("ul", "ol"):
            self.lists.append([tag == "ol", 0])
        elif tag == "li":
            if self.lists:
                current = self.lists[-1]
                current[1] += 1
                indent = "  " * (len(self.lists) - 1)
                self._write(f"{indent}{current[1]}. " if current[0] else f"{indent}- ")
            else:
                self._write("- ")
        elif tag == "blockquote":
            self.quote_depth += 1
        elif tag == "hr":
            self._break(blank=True)
            self._write("-" * 20)
            self._break(blank=True)
        elif tag == "a":
            self.links.append((attributes.get("href"), len(self.out)))
            shown.add("href")
        elif tag == "img" and self.links:
            self.image_alts.append(attributes.get("alt") or "")
            shown.add("alt")
        for key, value in attributes.items():
            if key not in shown:
                self._kept(value)

    def handle_endtag(self, tag: str) -> None:
        if self.skip_depth:
            self.skip_depth -= 1
            return
        if tag == "a" and self.links:
            self._end_link()
        elif tag in ("ul", "ol") and self.lists:
            self.lists.pop()
        elif tag == "blockquote" and self.quote_depth:
            self.quote_depth -= 1
        if tag in _PARAGRAPH_TAGS:
            self._break(blank=True)
        elif tag in _LINE_TAGS:
            self._break(blank=False)

    def _end_link(self) -> None:
        href, start = self.links.pop()
        text = " ".join("".join(self.out[start:]).split())
        alts = " ".join(self.image_alts)
        self.image_alts.clear()
        url = (href or "").strip()
        if not url.lower().startswith(_LINKABLE) and not (self.urls and self.urls.match(url)):
            if not text:
                self._write(alts)
            self._kept(href)
            return
        shown_url = url[7:] if url.lower().startswith("mailto:") else url
        if not text and alts:
            self._write(alts)
            text = alts
        if not text:
            self._write(shown_url)
        elif self.canon(text) != self.canon(shown_url):
            self._write(f" ({shown_url})")

    def handle_data(self, data: str) -> None:
        if self.skip_depth:
            self._kept(data)
            return
        if self.keep is None or self.keep.search(data) is None:
            self._text(data)
            return
        # Kept markers take no room: they must not count as text for the line breaks.
        pos = 0
        for marker in self.keep.finditer(data):
            self._text(data[pos : marker.start()])
            self.out.append(marker.group(0))
            pos = marker.end()
        self._text(data[pos:])

    def _text(self, data: str) -> None:
        text = " ".join(data.split())
        if not text:
            if data and not self.newlines and self.out and not self.out[-1].endswith(" "):
                self.out.append(" ")
            return
        if data[:1].isspace() and not self.newlines and self.out and not self.out[-1].endswith(" "):
            text = " " + text
        if data[-1:].isspace():
            text += " "
        self._write(text)

    def handle_comment(self, data: str) -> None:
        self._kept(data)


def tidy_text(text: str) -> str:
    """Trailing spaces off each line, at most one blank line in a row, no blank start or end."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip("\n") + "\n"


def tidy_rendered(text: str) -> str:
    """:func:`tidy_text` for a rendered text part, where only block tags can have left blank
    runs (``str.replace`` loops: several times faster than a regex on non-ASCII text)."""
    while " \n" in text:
        text = text.replace(" \n", "\n")
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip("\n") + "\n"


def html_to_text(
    markup: str,
    *,
    keep: re.Pattern[str] | None = None,
    urls: re.Pattern[str] | None = None,
    canon: Callable[[str], str] = str,
) -> str:
    """A readable plain-text rendering of ``markup``. Strings matching ``keep`` that sit in
    dropped places (attributes, head, comments) are carried over in document order; an href
    starting with a match of ``urls`` is shown like an http link; a link whose text is its URL
    (compared through ``canon``) is shown once."""
    writer = _TextWriter(keep, urls, canon)
    writer.feed(markup)
    writer.close()
    return tidy_text("".join(writer.out))

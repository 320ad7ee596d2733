"""Jinja inside MJML: each Jinja tag of a source is swapped for an inert marker before MJML and
CSS inlining see the markup, and swapped back into a Jinja template afterwards.

Markers are plain letters and digits, so neither MRML nor the HTML serializer alters them and
Jinja code may use quotes, ``<`` or ``>`` freely, even inside attributes. In the raw HTML
content of ``<mj-raw>``, ``<mj-text>`` and the like, a marker is wrapped in an HTML comment:
MRML places ``<mj-raw>`` between table rows, and the HTML parser of the CSS inliner would move
bare text out of a table (a ``{% for %}`` around ``<tr>`` rows in ``<mj-text>`` likewise).

Jinja built only from campaign-level names (``shop``, ``campaign``, ``content``) is evaluated
right away: expressions are replaced by their escaped values (so links inside them are tracked
like any other) and ``if`` chains keep only the branch that applies. The per-recipient template
only holds what really differs between recipients.

``<mj-include path="…">`` is expanded here too, rather than by MRML, which loses the body
width for included sections.
"""

from __future__ import annotations

import bisect
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from campaigns.rendering.context import CAMPAIGN_NAMES
from campaigns.rendering.errors import TemplateError

_CHUNK_RE = re.compile(
    r"""
    (?P<raw>\{%-?\s*raw\s*-?%\}(?P<rawbody>.*?)\{%-?\s*endraw\s*-?%\})
  | (?P<comment>\{\#.*?\#\})
  | (?P<expr>\{\{(?:[^"'}]|"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|\}(?!\}))*\}\})
  | (?P<block>\{%(?:[^"'%]|"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|%(?!\}))*%\})
    """,
    re.S | re.X,
)
_INCLUDE_RE = re.compile(r"<mj-include\b((?:[^>\"']|\"[^\"]*\"|'[^']*')*?)/?>(?:\s*</mj-include>)?")
_INCLUDE_ATTR_RE = re.compile(r"""([\w-]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
# MJML elements whose content is raw HTML (MRML passes it through; comments are safe there).
_HTML_EDGE_RE = re.compile(
    r"<(/?)(?:mj-raw|mj-text|mj-table|mj-button|mj-navbar-link|mj-social-element"
    r"|mj-accordion-title|mj-accordion-text)\b"
)
_TAG_NAME_RE = re.compile(r"\{%[-+]?\s*(\w+)")
_CONDITION_RE = re.compile(r"\{%[-+]?\s*(?:el)?if\s(.*?)[-+]?%\}", re.S)
_OPENING_TAGS = frozenset({"for", "if", "macro", "call", "filter", "block", "with", "autoescape"})
# A '{' that would open a Jinja tag once static text and restored tags are joined.
_STATIC_BRACE = re.compile(r"\{(?=[{%#]|\Z)")
MAX_INCLUDE_DEPTH = 8

# Reads a partial named by an include path: (label, text).
IncludeReader = Callable[[str], tuple[str, str]]


@dataclass(frozen=True)
class Chunk:
    """One Jinja tag left for rendering time: where it came from and what it uses."""

    number: int
    is_block: bool
    text: str
    file: str
    line: int
    names: frozenset[str]


@dataclass
class _Piece:
    text: str
    file: str
    origin: int  # offset of the piece in its file's source
    replaced: bool


@dataclass
class _Block:
    """An open Jinja block while scanning. An ``if`` chain whose conditions only use
    campaign-level names is decided at compile time: ``searching`` (no branch taken yet),
    ``taken`` (this branch is kept), ``done`` (a branch was taken before); ``dynamic`` blocks
    are left to rendering time; ``dead`` ones sit inside a dropped branch."""

    name: str
    state: str

    @property
    def live(self) -> bool:
        return self.state in ("pass", "dynamic", "taken")


@dataclass
class _Scan:
    """Where the scanner is in a file's markup: inside a tag, inside raw HTML content."""

    in_tag: bool = False
    in_html: bool = False

    def advance(self, static: str) -> None:
        lt, gt = static.rfind("<"), static.rfind(">")
        if lt >= 0 or gt >= 0:
            self.in_tag = lt > gt
        edges = _HTML_EDGE_RE.findall(static)
        if edges:
            self.in_html = edges[-1] == ""


class Markers:
    """The markers of one compilation (one campaign), with the Jinja they stand for."""

    def __init__(
        self,
        template_name: str,
        env: ImmutableSandboxedEnvironment,
        campaign_context: Mapping[str, Any],
        read_include: IncludeReader,
    ) -> None:
        self.template_name = template_name
        self.env = env
        self.campaign_context = dict(campaign_context)
        self.read_include = read_include
        # A fresh nonce per compilation: content can never spell a live marker by accident.
        self.prefix = "PTRN" + secrets.token_hex(5)
        self.pattern = re.compile(self.prefix + r"([JBCO])(\d+)E")
        self.block_pattern = re.compile(self.prefix + r"B\d+E")
        self._wrapped = re.compile(
            r"(?:<!--|&lt;!--)(" + self.prefix + r"[JB]\d+E)(?:-->|--&gt;)"
        )
        self.chunks: list[Chunk] = []
        self.sources: dict[str, str] = {}
        self._values: dict[str, str | None] = {}
        self.protected = ""
        self._pieces: list[_Piece] = []
        self._starts: list[int] = []

    def marker(self, letter: str, number: int) -> str:
        """The marker of a Jinja expression (J), tag (B), click token (C) or open token (O)."""
        return f"{self.prefix}{letter}{number}E"

    def protect(self, source: str) -> str:
        """The template's source with includes expanded and Jinja replaced by markers (or by
        the values of campaign-level expressions). Remembers where each offset came from."""
        self._pieces = self._protect(source, self.template_name, ())
        self._starts, total = [], 0
        for piece in self._pieces:
            self._starts.append(total)
            total += len(piece.text)
        self.protected = "".join(p.text for p in self._pieces)
        return self.protected

    def unwrap(self, markup: str) -> str:
        """``markup`` with the comments around markers removed (after the HTML parsers)."""
        return self._wrapped.sub(r"\1", markup)

    def _protect(
        self, source: str, file: str, stack: tuple[str, ...], *, in_html: bool = False
    ) -> list[_Piece]:
        self.sources.setdefault(file, source)
        pieces: list[_Piece] = []
        scan = _Scan(in_html=in_html)
        blocks: list[_Block] = []
        pos, line, strip_next = 0, 1, False
        for match in _CHUNK_RE.finditer(source):
            static = source[pos : match.start()]
            live = all(b.live for b in blocks)
            if live:
                self._static(pieces, static, file, pos, strip_next, scan, stack)
            line += static.count("\n")
            strip_next = False
            text = match.group(0)
            if not live and match.group("block") is None:
                pass
            elif match.group("raw") is not None:
                body = match.group("rawbody")
                pieces.append(_Piece(body, file, match.start("rawbody"), False))
                scan.advance(body)
            elif match.group("expr") is not None:
                value = self._evaluate(text)
                if value is None:
                    chunk = self._chunk(False, text, file, line)
                    pieces.append(_Piece(self._place("J", chunk, scan), file, match.start(), True))
                else:
                    if text.startswith("{{-") and pieces and not pieces[-1].replaced:
                        pieces[-1].text = pieces[-1].text.rstrip()
                    strip_next = text.endswith("-}}")
                    pieces.append(_Piece(value, file, match.start(), True))
            elif match.group("block") is not None:
                emitted = self._block(text, blocks, live)
                if emitted is not None:
                    chunk = self._chunk(True, emitted, file, line)
                    pieces.append(_Piece(self._place("B", chunk, scan), file, match.start(), True))
            line += text.count("\n")
            pos = match.end()
        if all(b.live for b in blocks):
            self._static(pieces, source[pos:], file, pos, strip_next, scan, stack)
        return pieces

    def _block(self, text: str, blocks: list[_Block], live: bool) -> str | None:
        """Track the block structure; decide campaign-level ``if`` chains now. Returns the tag
        to leave for rendering time, or None when the tag is resolved or dropped."""
        name_match = _TAG_NAME_RE.match(text)
        name = name_match.group(1) if name_match else ""
        top = blocks[-1] if blocks else None
        if name == "if":
            if not live:
                blocks.append(_Block("if", "dead"))
                return None
            decided = self._condition(text)
            state = "dynamic" if decided is None else ("taken" if decided else "searching")
            blocks.append(_Block("if", state))
            return text if decided is None else None
        if name in ("elif", "else") and top is not None and top.name == "if":
            if top.state in ("dead", "dynamic"):
                return text if top.state == "dynamic" else None
            if top.state in ("taken", "done"):
                top.state = "done"
                return None
            if name == "else":
                top.state = "taken"
                return None
            decided = self._condition(text)
            if decided is None:
                # Every earlier branch was false: this one opens the chain left for later.
                top.state = "dynamic"
                return "{% if" + text[text.index("elif") + 4 :]
            top.state = "taken" if decided else "searching"
            return None
        if name.startswith("end") and top is not None:
            blocks.pop()
            return text if top.state in ("pass", "dynamic") else None
        if name in _OPENING_TAGS or (name == "set" and "=" not in text):
            blocks.append(_Block(name, "pass" if live else "dead"))
        return text if live else None

    def _condition(self, text: str) -> bool | None:
        """The value of a campaign-level ``if``/``elif`` condition, or None when it is not
        one (or cannot be decided now)."""
        match = _CONDITION_RE.match(text)
        if match is None:
            return None
        value = self._evaluate("{% if " + match.group(1) + " %}1{% endif %}")
        return None if value is None else value == "1"

    def _place(self, letter: str, chunk: Chunk, scan: _Scan) -> str:
        marker = self.marker(letter, chunk.number)
        return f"<!--{marker}-->" if scan.in_html and not scan.in_tag else marker

    def _static(
        self,
        pieces: list[_Piece],
        static: str,
        file: str,
        origin: int,
        strip: bool,
        scan: _Scan,
        stack: tuple[str, ...],
    ) -> None:
        if strip:
            stripped = static.lstrip()
            origin += len(static) - len(stripped)
            static = stripped
        pos = 0
        for include in _INCLUDE_RE.finditer(static):
            self._plain(pieces, static[pos : include.start()], file, origin + pos, scan)
            pieces.extend(self._include(include, file, origin + include.start(), stack))
            pos = include.end()
        self._plain(pieces, static[pos:], file, origin + pos, scan)

    @staticmethod
    def _plain(pieces: list[_Piece], text: str, file: str, origin: int, scan: _Scan) -> None:
        if text:
            pieces.append(_Piece(text, file, origin, False))
            scan.advance(text)

    def _include(
        self, include: re.Match[str], file: str, origin: int, stack: tuple[str, ...]
    ) -> list[_Piece]:
        line = self.sources[file].count("\n", 0, origin) + 1
        shown = None if file == self.template_name else file
        attrs = {
            m.group(1): m.group(2) or m.group(3) or ""
            for m in _INCLUDE_ATTR_RE.finditer(include.group(1) or "")
        }
        path, kind = attrs.get("path", ""), attrs.get("type", "mjml")
        problem = None
        if not path or kind not in ("mjml", "html", "css"):
            problem = "<mj-include> needs a path and type mjml, html or css"
        elif len(stack) >= MAX_INCLUDE_DEPTH:
            problem = f"includes nested too deep at {path!r}"
        else:
            label, text = self.read_include(path)
            if label in stack or label == self.template_name:
                problem = f"{path!r} includes itself"
        if problem is not None:
            raise TemplateError(self.template_name, problem, line=line, file=shown)
        inner = self._protect(text, label, (*stack, label), in_html=kind == "html")
        if kind == "mjml":
            return inner
        at = origin
        if kind == "html":
            return [_Piece("<mj-raw>", file, at, True), *inner, _Piece("</mj-raw>", file, at, True)]
        inline = ' inline="inline"' if attrs.get("css-inline") == "inline" else ""
        return [
            _Piece(f"<mj-style{inline}>", file, at, True),
            *inner,
            _Piece("</mj-style>", file, at, True),
        ]

    def _chunk(self, is_block: bool, text: str, file: str, line: int) -> Chunk:
        names: frozenset[str] = frozenset()
        if not is_block:
            names = frozenset(meta.find_undeclared_variables(self.env.parse(text)))
        chunk = Chunk(len(self.chunks), is_block, text, file, line, names)
        self.chunks.append(chunk)
        return chunk

    def _evaluate(self, text: str) -> str | None:
        """The rendered value of campaign-level Jinja, or None to leave it for later."""
        if text not in self._values:
            self._values[text] = self._evaluate_once(text)
        return self._values[text]

    def _evaluate_once(self, text: str) -> str | None:
        names = meta.find_undeclared_variables(self.env.parse(text))
        if not names <= CAMPAIGN_NAMES:
            return None
        try:
            return self.env.from_string(text).render(self.campaign_context)
        except Exception:
            # It may only fail for want of recipient data (or be guarded by a condition):
            # rendering time decides, and reports, with the recipient named.
            return None

    def locate(self, offset: int) -> tuple[str, int]:
        """The file and line that character ``offset`` of the protected text came from."""
        i = max(bisect.bisect_right(self._starts, offset) - 1, 0)
        if not self._pieces:
            return self.template_name, 1
        piece = self._pieces[i]
        origin = piece.origin if piece.replaced else piece.origin + (offset - self._starts[i])
        source = self.sources[piece.file]
        return piece.file, source.count("\n", 0, min(origin, len(source))) + 1

    def chunks_in(self, text: str) -> list[Chunk]:
        """The Jinja chunks whose markers occur in ``text``."""
        return [self.chunks[int(n)] for letter, n in self.pattern.findall(text) if letter in "JB"]

    def canonical(self, text: str) -> str:
        """``text`` with each marker replaced by the Jinja it stands for, so that two markers
        of the same expression compare equal."""
        return self.pattern.sub(
            lambda m: self.chunks[int(m.group(2))].text if m.group(1) in "JB" else m.group(0),
            text,
        )

    def strip(self, text: str) -> str:
        """``text`` without markers (for naming links after their visible text)."""
        return self.pattern.sub(" ", text)

    def to_jinja(self, text: str) -> str:
        """Marked-up output turned back into Jinja source: static text made inert, markers
        replaced by the tags they stand for and by the per-recipient tokens."""
        parts = self.pattern.split(text)
        out = [_STATIC_BRACE.sub("{{ '{' }}", parts[0])]
        for i in range(1, len(parts), 3):
            letter, number = parts[i], int(parts[i + 1])
            if letter in "JB":
                out.append(self.chunks[number].text)
            elif letter == "C":
                out.append(f"{{{{ _patron_click[{number}] }}}}")
            else:
                out.append("{{ _patron_open }}")
            out.append(_STATIC_BRACE.sub("{{ '{' }}", parts[i + 2]))
        return "".join(out)

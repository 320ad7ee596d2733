"""The sandboxed Jinja environments templates run in, their filters, and error locations.

Templates are data from marketers and recipients' attributes are data from anyone: both run in
an immutable sandbox with ``StrictUndefined``, so a typo fails loudly instead of sending
"Hi ," to a million people, and no attribute value is ever evaluated as template code.
"""

from __future__ import annotations

import functools
from datetime import date, datetime
from types import TracebackType
from typing import Any

import jinja2
from jinja2 import StrictUndefined, Template
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup, escape

from campaigns.rendering.links import add_query
from campaigns.rendering.text import html_to_text


class PatronUndefined(StrictUndefined):
    """``StrictUndefined`` whose messages name template variables (``'contact' has no
    attribute 'nickname'``) instead of Python classes."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        label = getattr(self._undefined_obj, "_template_label", None)
        if self._undefined_hint is None and isinstance(label, str):
            what = "attribute" if isinstance(self._undefined_name, str) else "element"
            return f"{label!r} has no {what} {self._undefined_name!r}"
        message: str = super()._undefined_message
        return message


def format_date(value: date | datetime | None, fmt: str | None = None) -> str:
    """``{{ discount.expires_at | date }}`` → ``30 June 2026``; ``fmt`` is a strftime format."""
    if value is None:
        return ""
    if fmt is not None:
        return value.strftime(fmt)
    return f"{value.day} {value:%B %Y}"


def paragraphs(text: str) -> Markup:
    """Plain text to HTML: blank lines separate paragraphs, single newlines become ``<br>``."""
    blocks = [b.strip() for b in str(text).replace("\r\n", "\n").split("\n\n")]
    return Markup("\n").join(
        Markup("<p>{}</p>").format(Markup("<br>").join(escape(line) for line in b.split("\n")))
        for b in blocks
        if b
    )


def lines(text: str) -> Markup:
    """Plain text with its newlines as ``<br>`` (a postal address on several lines)."""
    return Markup("<br>").join(escape(line.strip()) for line in str(text).splitlines())


def with_query(url: str, **params: Any) -> str:
    """``url`` with query parameters set: ``{{ shop.url | with_query(score=7) }}``."""
    return add_query(str(url), [(k, str(v)) for k, v in params.items()], override=True)


def _text_finalize(value: Any) -> Any:
    # Trusted HTML reaching the plain-text part is converted, never pasted in as markup.
    if isinstance(value, Markup):
        return _markup_as_text(str(value))
    # Line breaks in data read as spaces, as they do in the HTML part: a value cannot forge
    # lines of the text part.
    if isinstance(value, str) and ("\n" in value or "\r" in value):
        return " ".join(value.split())
    return value


@functools.lru_cache(maxsize=256)
def _markup_as_text(markup: str) -> str:
    return html_to_text(markup).strip()


def _configure(env: ImmutableSandboxedEnvironment) -> ImmutableSandboxedEnvironment:
    env.filters.update(date=format_date, paragraphs=paragraphs, lines=lines, with_query=with_query)
    return env


@functools.cache
def html_environment() -> ImmutableSandboxedEnvironment:
    """The environment of HTML bodies: autoescaped."""
    return _configure(
        ImmutableSandboxedEnvironment(
            undefined=PatronUndefined, autoescape=True, keep_trailing_newline=True
        )
    )


@functools.cache
def text_environment() -> ImmutableSandboxedEnvironment:
    """The environment of plain-text parts and subjects: not escaped."""
    return _configure(
        ImmutableSandboxedEnvironment(
            undefined=PatronUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            finalize=_text_finalize,
        )
    )


def compile_named(env: ImmutableSandboxedEnvironment, source: str, filename: str) -> Template:
    """``source`` compiled so that tracebacks of its errors carry ``filename`` and its lines."""
    code = env.compile(source, name=filename, filename=filename)
    return env.template_class.from_code(env, code, env.make_globals(None))


def template_line(error: BaseException, filename: str) -> int | None:
    """The line of ``filename`` (compiled with :func:`compile_named`) where ``error`` arose."""
    line = getattr(error, "lineno", None) if getattr(error, "filename", None) == filename else None
    tb: TracebackType | None = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line if isinstance(line, int) else None


def error_detail(error: BaseException) -> str:
    """The one-line cause of a template error."""
    message = " ".join(str(getattr(error, "message", None) or error).split())
    if isinstance(error, jinja2.TemplateError):
        return message
    return f"{type(error).__name__}: {message}" if message else type(error).__name__

"""The one error of rendering: a template that cannot be compiled or rendered."""

from __future__ import annotations

from lists.errors import InvalidInputError


class TemplateError(InvalidInputError):
    """A template failed to compile or render; the message names the template, the line (when
    known) and the cause, on one line, e.g. ``template "newsletter" line 14: 'contact' has no
    attribute 'nickname'``."""

    def __init__(
        self, template: str, detail: str, *, line: int | None = None, file: str | None = None
    ) -> None:
        where = f'template "{template}"'
        if file is not None:
            where += f" ({file})"
        if line is not None:
            where += f" line {line}"
        super().__init__(f"{where}: {' '.join(detail.split())}")
        self.template = template
        self.detail = detail
        self.line = line
        self.file = file

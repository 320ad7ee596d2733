"""Generates docs/cli.md from the Typer app and docs/configuration.md from the settings model;
a test fails when either is stale. Regenerate with `python -m patron.docs_gen`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
CLI_DOC = ROOT / "docs" / "cli.md"
CONFIG_DOC = ROOT / "docs" / "configuration.md"


def cli_reference() -> str:
    import typer.main

    from patron.cli.app import app

    root = typer.main.get_command(app)
    lines = [
        "# CLI reference",
        "",
        "Generated from the code by `python -m patron.docs_gen`; a test fails when it is stale.",
        "Every command accepts `--db URL` (before or after the command name) and exits non-zero",
        "with a one-line error on stderr (`patron: error: …`) on failure; `--json` prints one JSON",
        "document on stdout.",
        "",
    ]
    _walk(root, ["patron"], lines)
    return "\n".join(lines).rstrip() + "\n"


def _walk(command: Any, path: list[str], lines: list[str]) -> None:
    import typer.main  # noqa: F401  (the command objects come from Typer's vendored click)

    subcommands = getattr(command, "commands", None)
    if subcommands is not None and len(path) > 1:
        lines += [f"## `{' '.join(path)}`", "", (command.help or "").strip(), ""]
    if subcommands is None:
        usage = " ".join(path)
        params = [p for p in command.params if p.name != "help"]
        args = " ".join(_arg_name(p) for p in params if p.param_type_name == "argument")
        title = f"{usage} {args}" if args else usage
        lines += [f"### `{title}`", "", (command.help or "").strip(), ""]
        options = [p for p in params if p.param_type_name == "option"]
        arguments = [p for p in params if p.param_type_name == "argument"]
        if arguments or options:
            lines += ["| parameter | description |", "| --- | --- |"]
            for p in arguments:
                lines.append(f"| `{_arg_name(p)}` | {(getattr(p, 'help', '') or '').strip()} |")
            for p in options:
                names = ", ".join(f"`{o}`" for o in p.opts)
                default = ""
                if not p.is_flag and p.default not in (None, "", ()) and not callable(p.default):
                    default = f" (default: `{p.default}`)"
                lines.append(f"| {names} | {(p.help or '').strip()}{default} |")
            lines.append("")
        return
    for name in sorted(subcommands):
        _walk(subcommands[name], [*path, name], lines)


def _arg_name(param: Any) -> str:
    return str(param.metavar or (param.name or "").upper())


def configuration_reference() -> str:
    from patron.settings import ENV_PREFIX, Settings

    lines = [
        "# Configuration reference",
        "",
        "Generated from `patron/settings.py` by `python -m patron.docs_gen`; a test fails when it",
        "is stale. Precedence: command-line options > environment > TOML file > defaults.",
        "The file is `$PATRON_CONFIG`, else `config.toml` in the user config directory (on",
        "Linux `~/.config/patron/config.toml`); its tables mirror the dotted names (`[smtp]`,",
        "`host = …`).",
        "`patron config` shows the effective values and where each came from, secrets masked.",
        "",
        "| setting | environment variable | default | description |",
        "| --- | --- | --- | --- |",
    ]
    _settings_rows(Settings, "", ENV_PREFIX, lines)
    return "\n".join(lines) + "\n"


def _settings_rows(model: type[BaseModel], prefix: str, env: str, lines: list[str]) -> None:
    for name, field in model.model_fields.items():
        key = field.alias or name
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            _settings_rows(annotation, f"{prefix}{key}.", f"{env}{key.upper()}__", lines)
            continue
        if field.default_factory is not None:
            default = "(computed)" if name == "database_url" else repr(field.default_factory())  # type: ignore[call-arg]
        else:
            default = "" if field.default is None else repr(field.default)
        if name == "database_url":
            default = "SQLite in the user data directory"
        desc = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{prefix}{key}` | `{env}{key.upper()}` | {default} | {desc} |")


def write_all() -> list[Path]:
    """Regenerate both documents; returns the paths that changed."""
    changed = []
    for path, text in ((CLI_DOC, cli_reference()), (CONFIG_DOC, configuration_reference())):
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            changed.append(path)
    return changed


if __name__ == "__main__":
    for changed_path in write_all():
        sys.stdout.write(f"wrote {changed_path.relative_to(ROOT)}\n")

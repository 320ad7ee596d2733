"""Docs generated from the code are current; settings are documented; the architecture holds."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from pydantic import BaseModel

from patron.docs_gen import CLI_DOC, CONFIG_DOC, cli_reference, configuration_reference
from patron.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_cli_reference_is_current():
    assert CLI_DOC.read_text() == cli_reference(), "run `python -m patron.docs_gen`"


def test_configuration_reference_is_current():
    assert CONFIG_DOC.read_text() == configuration_reference(), "run `python -m patron.docs_gen`"


def _leaf_fields(model: type[BaseModel], prefix: str = ""):
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _leaf_fields(ann, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def test_every_setting_is_documented():
    undocumented = [path for path, field in _leaf_fields(Settings) if not field.description]
    assert undocumented == []


def test_every_command_has_help():
    import typer.main

    from patron.cli.app import app

    missing = []

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs is None:
            if not (cmd.help or "").strip():
                missing.append(path)
            return
        for name, sub in subs.items():
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(app), "patron")
    assert missing == []


FORBIDDEN_IN_DOMAINS = {"textual", "starlette", "typer", "click", "uvicorn", "patron", "tui",
                        "tracking"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_domains_import_no_framework():
    offenders = []
    for package in ("lists", "campaigns"):
        for path in (ROOT / package).rglob("*.py"):
            bad = _imports(path) & FORBIDDEN_IN_DOMAINS
            if package == "lists":
                bad |= _imports(path) & {"campaigns"}
            if bad:
                offenders.append(f"{path.relative_to(ROOT)}: {sorted(bad)}")
    assert offenders == []


def test_import_linter_contracts_hold():
    exe = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(exe)], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_importing_modules_does_no_work(tmp_path):
    # No engine, directory or network at import time: importing every module of the shell and
    # the domains with an unwritable HOME must create nothing.
    code = (
        "import pkgutil, importlib, sys\n"
        "for pkg in ('lists', 'campaigns', 'patron'):\n"
        "    m = importlib.import_module(pkg)\n"
        "    for info in pkgutil.walk_packages(m.__path__, pkg + '.'):\n"
        "        if info.name.endswith('__main__'):\n"
        "            continue\n"
        "        importlib.import_module(info.name)\n"
    )
    home = tmp_path / "home"
    home.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin", "XDG_DATA_HOME": str(home / "d")},
    )
    assert done.returncode == 0, done.stderr
    assert list(home.iterdir()) == []

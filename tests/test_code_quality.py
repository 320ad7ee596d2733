"""Ruff and mypy are part of the suite, so CI cannot land code they reject."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=ROOT, capture_output=True, text=True, check=False)


def test_ruff_clean():
    done = _run(str(BIN / "ruff"), "check", "--no-cache", ".")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_mypy_clean():
    # strict on the domains (see [tool.mypy] overrides), checked on the shell too
    done = _run(sys.executable, "-m", "mypy", "lists", "campaigns", "patron", "tracking", "tui")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]

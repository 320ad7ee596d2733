"""The import benchmark runs at a tiny size and reports sane figures (its full run is manual)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.bench_import import run

from .conftest import PG_ADMIN_URL

ROOT = Path(__file__).resolve().parent.parent


def _sane(figures, size):
    assert figures["contacts_rows"] == size
    # The generator dirties about 1 % of the rows (bad, role, duplicate addresses).
    assert 0 < figures["contacts_rejected"] < size * 0.1
    assert figures["contacts_imported"] + figures["contacts_rejected"] == size
    assert figures["orders_rows"] == figures["orders_imported"] == 2 * size
    assert figures["orders_contacts_created"] > 0  # some buyers were not contacts yet
    assert figures["contacts_rows_per_s"] > 0 and figures["orders_rows_per_s"] > 0


def test_benchmark_reports_sane_figures_on_sqlite_and_postgresql(pg_database):
    result = run(400, PG_ADMIN_URL if pg_database else None)
    assert (result["name"], result["size"]) == ("import", 400)
    _sane(result["sqlite"], 400)
    assert result["sqlite"]["raw_executemany_rows_per_s"] > 0
    if pg_database:
        _sane(result["postgresql"], 400)
        assert result["postgresql"]["contacts_imported"] == result["sqlite"]["contacts_imported"]


def test_script_prints_one_json_line():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_import.py"), "--size", "50"],
        capture_output=True, text=True, check=True, timeout=120,
    )
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["sqlite"]["contacts_rows"] == 50

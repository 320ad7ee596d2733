"""The retention benchmark runs at a tiny size and reports sane figures (its full run is manual)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.bench_retention import run

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_reports_the_report_and_its_floor_at_tiny_size():
    result = run(400, None)
    assert (result["name"], result["size"], result["contacts"]) == ("retention", 400, 200)
    figures = result["sqlite"]
    assert 0 < figures["report_seconds"] < 60
    assert 0 <= figures["floor_grouped_pass_seconds"] < 60
    assert 0 < figures["customers"] <= 200
    assert 0 <= figures["customer_retention_rate"] <= 100
    assert "400 orders" in result["summary"]


def test_script_prints_one_json_line():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_retention.py"), "--size", "50"],
        capture_output=True, text=True, check=True, timeout=120,
    )
    [line] = done.stdout.strip().splitlines()
    assert json.loads(line)["size"] == 50

"""The assembly benchmark runs at a tiny size and reports sane figures (its full run is manual)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.bench_assembly import newsletter_template, run

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_reports_both_pipelines_at_tiny_size():
    result = run(3, None)
    assert result["name"] == "assembly" and result["size"] == 3
    assert result["naive_recipients"] == 3
    assert 20 <= result["html_kb"] <= 30  # the ~25 KB newsletter the figures are about
    for figure in ("ours_ms_per_msg", "naive_ms_per_msg", "local_floor_rsa2048_sign_ms"):
        assert 0 < result[figure] < 1000
    # Our pipeline includes one RSA signature, so it cannot beat the bare signature.
    assert result["ours_ms_per_msg"] >= result["ours_assemble_only_ms_per_msg"]
    ratio = result["naive_ms_per_msg"] / result["ours_ms_per_msg"]
    assert result["speedup"] == pytest.approx(ratio, rel=0.02)
    assert "recipients" in result["summary"]


def test_newsletter_is_html_with_personalization_slots():
    html = newsletter_template()
    assert html.startswith("<!doctype html>") and "{first}" in html and "{t9}" in html


def test_script_prints_one_json_line():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_assembly.py"), "--size", "2"],
        capture_output=True, text=True, check=True, timeout=120,
    )
    [line] = done.stdout.strip().splitlines()
    assert json.loads(line)["size"] == 2

"""The rendering benchmark runs at a tiny size and reports sane figures (its full run is manual)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import campaigns.rendering.compile as compile_module
from benchmarks.bench_render import run

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_reports_compile_once_and_per_recipient_figures():
    result = run(3, None)
    assert result["name"] == "render" and result["size"] == 3
    assert 20 <= result["html_kb"] <= 35  # the ~25 KB newsletter the figures are about
    assert result["links"] == 12 and result["naive_recipients"] == 3
    for figure in ("compile_ms", "compile_mjml_ms", "render_us_per_recipient",
                   "naive_us_per_recipient", "local_floor_hmac_sha256_us"):
        assert 0 < result[figure] < 1_000_000, figure
    assert result["compile_mjml_ms"] <= result["compile_ms"]
    # Rendering includes 14 HMACs, so it cannot beat 14 bare HMACs.
    assert result["render_us_per_recipient"] > 14 * result["local_floor_hmac_sha256_us"] * 0.5
    ratio = result["naive_us_per_recipient"] / result["render_us_per_recipient"]
    assert result["speedup"] == pytest.approx(ratio, rel=0.05)
    assert result["recipients_per_s_per_core"] == pytest.approx(
        1e6 / result["render_us_per_recipient"], rel=0.01
    )
    assert "recipients" in result["summary"]
    # The timing hook is taken out again.
    assert compile_module.mjml2html.__name__ == "mjml2html"


def test_script_prints_one_json_line():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_render.py"), "--size", "2"],
        capture_output=True, text=True, check=True, timeout=120,
    )
    [line] = done.stdout.strip().splitlines()
    assert json.loads(line)["size"] == 2

"""The segments benchmark runs at a tiny size and reports sane figures (its full run is manual)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.bench_segments import RULE, generate, run

ROOT = Path(__file__).resolve().parent.parent


def test_generated_shop_is_consistent():
    shop = generate(2000)
    assert len(shop.order_contact) == 4000
    assert sum(shop.count) == 4000
    assert sum(shop.spent) == sum(shop.order_cents)
    assert 0.05 < sum(shop.lu) / 2000 < 0.15
    for c in range(2000):
        if shop.count[c]:
            assert shop.created[c] <= shop.first[c] <= shop.last[c]


def test_benchmark_counts_the_rule_on_sqlite_at_tiny_size():
    result = run(3000, None)
    assert (result["name"], result["size"], result["orders"]) == ("segments", 3000, 6000)
    assert result["rule"] == RULE
    figures = result["sqlite"]
    assert figures["matching"] == generate(3000).expected() > 0
    for key in ("count_ms", "handwritten_sql_ms", "count_all_contacts_ms",
                "count_ms_without_attribute_index", "count_ms_with_single_column_index"):
        assert 0 <= figures[key] < 10_000, key
    assert any(figures["attribute_index"] in line for line in figures["plan"])
    assert not any("ix_contacts_attr" in line for line in figures["plan_without_attribute_index"])
    assert "3,000 contacts" in result["summary"]
    assert "postgresql" not in result


def test_script_prints_one_json_line():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_segments.py"), "--size", "200"],
        capture_output=True, text=True, check=True, timeout=120,
    )
    [line] = done.stdout.strip().splitlines()
    assert json.loads(line)["size"] == 200

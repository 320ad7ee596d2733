"""The delivery benchmark runs at a tiny size and reports sane figures (so it cannot rot).

It runs on SQLite here to keep the suite fast; the PostgreSQL paths it adds (`worker
--processes`, the real pipeline) are covered by tests/test_delivery_cli.py."""

from __future__ import annotations

from benchmarks.bench_delivery import run


def test_delivery_benchmark_at_tiny_size():
    result = run(300, None)
    assert result["name"] == "delivery" and result["size"] == 300
    assert 24_000 <= result["message_bytes"] <= 26_000
    assert result["limit_1_process_msg_per_s"] > 0
    figures = result["sqlite"]
    assert figures["delivered"] == 300
    assert figures["msg_per_s"] > 0 and figures["ratio_to_limit"] > 0
    assert 0 < figures["peak_worker_rss_mb"] < 1000
    assert figures["loop_lag_max_ms"] >= figures["loop_lag_p99_ms"] >= 0
    # Every message reached the sink once: the reference run's and the campaign's.
    assert result["sink_received"] >= 600
    assert "msg/s" in result["summary"] and "postgresql" not in result

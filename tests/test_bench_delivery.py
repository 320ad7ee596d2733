"""The delivery benchmark runs at a tiny size and reports sane figures (so it cannot rot)."""

from __future__ import annotations

from benchmarks.bench_delivery import run


def test_delivery_benchmark_at_tiny_size(pg_database):
    admin = None
    if pg_database is not None:
        from tests.conftest import PG_ADMIN_URL

        admin = PG_ADMIN_URL
    result = run(300, admin)
    assert result["name"] == "delivery" and result["size"] == 300
    assert 24_000 <= result["message_bytes"] <= 26_000
    assert result["limit_1_process_msg_per_s"] > 0
    backends = ["sqlite"] + (["postgresql"] if admin else [])
    for backend in backends:
        figures = result[backend]
        assert figures["delivered"] == 300
        assert figures["msg_per_s"] > 0 and figures["ratio_to_limit"] > 0
        assert 0 < figures["peak_worker_rss_mb"] < 1000
    if admin:
        real = result["postgresql_pipeline"]
        assert real["delivered"] == real["size"] == 300 and real["msg_per_s"] > 0
        backends.append("postgresql_pipeline")
    # Every message reached the sink once: the reference runs plus one per recipient per run.
    reference = result["sink_received"] - 300 * len(backends)
    assert reference >= 300
    assert "msg/s" in result["summary"]

"""The pipeline benchmark runs at a tiny size and reports sane figures (so it cannot rot)."""

from benchmarks.bench_pipeline import run


def test_pipeline_benchmark_tiny():
    result = run(20)
    assert result["size"] == 20
    assert 20 <= result["message_kb"] <= 60
    assert result["ms_per_message"] > 0 and result["naive_ms_per_message"] > 0
    assert result["speedup"] > 1

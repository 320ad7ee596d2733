"""Patron's benchmarks: `python -m benchmarks` runs them all and rewrites docs/benchmarks.md."""

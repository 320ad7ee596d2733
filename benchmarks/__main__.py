"""Run every benchmark and rewrite docs/benchmarks.md with the figures and the machine.

    python -m benchmarks                 # full sizes (minutes)
    python -m benchmarks --only import   # one benchmark
    python -m benchmarks --scale 0.01    # quick look at a hundredth of the full sizes

Each `benchmarks/bench_<name>.py` has `FULL_SIZE` and `run(size, pg_url) -> dict`; pg_url is an
admin URL of a PostgreSQL server where the benchmark creates (and drops) its own database.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from benchmarks.machine import describe

HERE = Path(__file__).resolve().parent
DOC = HERE.parent / "docs" / "benchmarks.md"
RESULTS = HERE / "out" / "results.json"
DEFAULT_PG = os.environ.get("PATRON_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def discover() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--only", action="append", help="benchmark name (repeatable)")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full sizes")
    parser.add_argument("--pg-url", default=DEFAULT_PG, help="PostgreSQL admin URL ('' to skip)")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args(argv)

    names = args.only or discover()
    previous: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results = dict(previous.get("results", {}))
    for name in names:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        size = max(1, int(module.FULL_SIZE * args.scale))
        print(f"== {name} (size {size:,})", file=sys.stderr, flush=True)
        result = module.run(size, args.pg_url or None)
        results[name] = result
        print(json.dumps(result), flush=True)
    payload = {"machine": describe(), "results": results}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(payload, indent=2))
    if not args.no_doc:
        DOC.write_text(render(payload))
        print(f"wrote {DOC}", file=sys.stderr)
    return 0


def render(payload: dict[str, Any]) -> str:
    machine = payload["machine"]
    lines = [
        "# Benchmarks",
        "",
        "Written by `python -m benchmarks` (see `benchmarks/`); every figure comes with the local",
        "limit measured in the same run. The test suite runs each benchmark at a tiny size so",
        "none of them rots; the figures below are from a full run.",
        "",
        "## Machine",
        "",
        "| | |",
        "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in machine.items()],
        "",
    ]
    for name, result in sorted(payload["results"].items()):
        lines += [f"## {name}", ""]
        summary = result.get("summary")
        if summary:
            lines += [summary, ""]
        lines += ["| figure | value |", "| --- | --- |"]
        for key, value in _flat(result).items():
            if key != "summary":
                lines.append(f"| {key} | {_fmt(value)} |")
        lines.append("")
    return "\n".join(lines)


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


if __name__ == "__main__":
    sys.exit(main())

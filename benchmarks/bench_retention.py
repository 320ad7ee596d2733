"""Benchmark of the store retention report (M7): three periods (the last 90 days, the 90 days
before, the same days a year earlier) over ``--size`` orders of ``size / 2`` contacts, next to
the local floor measured in the same run: one bare grouped pass over the same orders
(``count`` and ``min`` per contact), which any per-customer computation has to make.

    .venv/bin/python benchmarks/bench_retention.py --size 2000000 [--pg-url postgresql://…/postgres]

Rows are written with raw DBAPI calls (the report is what is timed, not the loading); with
``--pg-url`` (an administrative URL) the same rows also go to a PostgreSQL database the
benchmark creates and drops itself. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from benchmarks.pgscratch import scratch_database
from lists.retention import retention_report
from patron.db import make_engine, migrate

FULL_SIZE = 2_000_000
SEED = 20260615
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
HISTORY = timedelta(days=3 * 365)
REPEATS = 3
FLOOR_SQL = (
    "SELECT count(*) FROM (SELECT contact_id, count(*), min(ordered_at), sum(total_cents) "
    "FROM orders "
    "WHERE contact_id IS NOT NULL GROUP BY contact_id) AS per_contact"
)


def _stamp(moment: datetime) -> str:
    # The text form SQLite rows are stored in (UTC, no offset).
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def contact_rows(contacts: int) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(SEED)
    for i in range(1, contacts + 1):
        created = NOW - HISTORY * rng.random()
        yield (i, f"c{i}@example.com", "{}", False, False, 0, 0, created, created)


def order_rows(orders: int, contacts: int) -> Iterator[tuple[Any, ...]]:
    # A long tail: a Pareto draw makes most customers buy once and a few buy often; 3 % of
    # orders belong to erased customers (no contact).
    rng = random.Random(SEED + 1)
    for i in range(1, orders + 1):
        contact = None if rng.random() < 0.03 else min(contacts, int(rng.paretovariate(1.2)
                                                                     * contacts / 8) or 1)
        contact = None if contact is None else (contact * 7919) % contacts + 1
        at = NOW - HISTORY * rng.random()
        yield ("bench", f"o{i}", contact, rng.randint(500, 20_000), "EUR", at, at)


def _load_sqlite(path: Path, contacts: int, orders: int) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO contacts (id, email, attributes, is_role, is_disposable, orders_count, "
            "total_spent_cents, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ((*r[:7], _stamp(r[7]), _stamp(r[8])) for r in contact_rows(contacts)),
        )
        conn.executemany(
            "INSERT INTO orders (source, order_id, contact_id, total_cents, currency, ordered_at, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            ((*r[:5], _stamp(r[5]), _stamp(r[6])) for r in order_rows(orders, contacts)),
        )
    conn.execute("ANALYZE")
    conn.close()


def _load_pg(engine: Engine, contacts: int, orders: int) -> None:
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        with cur.copy(  # type: ignore[attr-defined]
            "COPY contacts (id, email, attributes, is_role, is_disposable, orders_count, "
            "total_spent_cents, created_at, updated_at) FROM STDIN"
        ) as copy:
            for row in contact_rows(contacts):
                copy.write_row(row)
        with cur.copy(  # type: ignore[attr-defined]
            "COPY orders (source, order_id, contact_id, total_cents, currency, ordered_at, "
            "created_at) FROM STDIN"
        ) as copy:
            for row in order_rows(orders, contacts):
                copy.write_row(row)
        cur.execute("SELECT setval('contacts_id_seq', %s)", (contacts,))
        cur.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()


def _measure(engine: Engine) -> dict[str, Any]:
    report_s, floor_s = [], []
    report = None
    for _ in range(REPEATS):
        with Session(engine) as session:
            started = time.perf_counter()
            report = retention_report(session, NOW - timedelta(days=90), NOW)
            report_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            session.execute(text(FLOOR_SQL)).scalar_one()
            floor_s.append(time.perf_counter() - started)
    assert report is not None
    best, floor = min(report_s), min(floor_s)
    return {
        "report_seconds": round(best, 4),
        "floor_grouped_pass_seconds": round(floor, 4),
        "report_over_floor": round(best / floor, 2) if floor else None,
        "customers": report.current["customers"],
        "customer_retention_rate": round(report.current["customer_retention_rate"] or 0, 2),
    }


def run(size: int, url: str | None) -> dict[str, Any]:
    """Time the retention report over ``size`` orders in SQLite (and PostgreSQL with ``url``,
    an administrative URL)."""
    contacts = max(1, size // 2)
    result: dict[str, Any] = {
        "name": "retention",
        "size": size,
        "contacts": contacts,
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python "
        f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}",
    }
    with tempfile.TemporaryDirectory(prefix="patron-bench-retention-") as tmp:
        path = Path(tmp) / "bench.sqlite3"
        engine = make_engine(f"sqlite:///{path}")
        try:
            migrate(engine)
            _load_sqlite(path, contacts, size)
            result["sqlite"] = _measure(engine)
        finally:
            engine.dispose()
    if url:
        result["postgresql"] = _with_pg_database(url, contacts, size)
    sqlite_figures = result["sqlite"]
    result["summary"] = (
        f"Retention report (3 periods) over {size:,} orders: {sqlite_figures['report_seconds']} s "
        f"on SQLite, {sqlite_figures['report_over_floor']}× one bare grouped pass over the orders."
    )
    return result


def _with_pg_database(admin_url: str, contacts: int, orders: int) -> dict[str, Any]:
    with scratch_database(admin_url, "bench_retention") as url:
        engine = make_engine(url)
        try:
            migrate(engine)
            _load_pg(engine, contacts, orders)
            return _measure(engine)
        finally:
            engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=FULL_SIZE, help="orders (contacts: half)")
    parser.add_argument("--pg-url", default=None, help="administrative PostgreSQL URL")
    args = parser.parse_args()
    print(json.dumps(run(args.size, args.pg_url)))


if __name__ == "__main__":
    main()

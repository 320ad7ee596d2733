"""Benchmark of counting a segment: ``orders >= 2 and last_order within 90d and
attr.country = "LU"`` over ``--size`` contacts with twice as many orders, warm, median of
several runs, next to the same condition written by hand in the backend's own SQL (the local
reference, measured in the same run) and a bare ``count(*)`` of all contacts.

Each is timed without any attribute index, then with the one ``patron segments index country``
makes (through the same domain function): on SQLite the attribute's covering expression index,
on PostgreSQL the schema's GIN index on the attributes. On SQLite a plain one-column expression
index is timed too, the alternative the covering one was chosen over. The 1-minute load average
is recorded around each backend's figures (the machine may be shared).

    .venv/bin/python benchmarks/bench_segments.py --size 1000000 [--pg-url postgresql://…/postgres]

Rows are written with raw DBAPI calls (executemany on SQLite, COPY on PostgreSQL) with the
secondary indexes dropped during the load and rebuilt after it, then ANALYZE (VACUUM ANALYZE on
PostgreSQL). Contacts carry aggregates consistent with their orders; 70 % of contacts are
customers, orders are spread over three years, 10 % of contacts live in Luxembourg. With
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
import statistics
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, func, select, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ClauseElement, Executable

from benchmarks.pgscratch import scratch_database
from lists.segments import count_segment
from lists.segments.attribute_indexes import (
    GIN_INDEX,
    create_attribute_index,
    is_attribute_index_name,
    json_path,
)
from lists.segments.compiler import compile_rule, contacts_table
from patron.db import make_engine, migrate

FULL_SIZE = 1_000_000
SEED = 20260615
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
HISTORY_DAYS = 3 * 365
RULE = 'orders >= 2 and last_order within 90d and attr.country = "LU"'
RUNS = 7
GOAL_MS = 100
ATTRIBUTE = "country"
COUNTRIES = ["DE", "FR", "BE", "NL", "PT", "IT", "ES", "AT", "CH"]
# The JSON path spelled as the index has it, so that SQLite can use the index here too.
HANDWRITTEN = {
    "sqlite": "SELECT count(*) FROM contacts WHERE orders_count >= 2 AND last_order_at >= ? "
              "AND json_extract(attributes, '$.\"country\"') = 'LU'",
    "postgresql": "SELECT count(*) FROM contacts WHERE orders_count >= 2 AND last_order_at >= %s "
                  "AND attributes @> '{\"country\": \"LU\"}'",
}


@dataclass
class Shop:
    """The generated rows in compact arrays (epoch seconds for times)."""

    contacts: int
    order_contact: array[int]
    order_at: array[float]
    order_cents: array[int]
    count: array[int]
    spent: array[int]
    first: array[float]
    last: array[float]
    created: array[float]
    lu: bytearray

    def expected(self) -> int:
        cutoff = (NOW - timedelta(days=90)).timestamp()
        return sum(1 for i in range(self.contacts)
                   if self.count[i] >= 2 and self.last[i] >= cutoff and self.lu[i])


def generate(contacts: int) -> Shop:
    rng = random.Random(SEED)
    now, span = NOW.timestamp(), HISTORY_DAYS * 86400
    customers = max(1, int(contacts * 0.7))
    orders = 2 * contacts
    shop = Shop(contacts, array("i", bytes(4 * orders)), array("d", bytes(8 * orders)),
                array("i", bytes(4 * orders)), array("i", bytes(4 * contacts)),
                array("q", bytes(8 * contacts)), array("d", [0.0]) * contacts,
                array("d", [0.0]) * contacts, array("d", [0.0]) * contacts, bytearray(contacts))
    for i in range(orders):
        # Customers are scattered over the ids; whole seconds keep the stored text simple.
        c = (int(rng.random() * customers) * 7919) % contacts
        at = float(int(now - span * rng.random()))
        cents = rng.randint(500, 20_000)
        shop.order_contact[i], shop.order_at[i], shop.order_cents[i] = c, at, cents
        shop.count[c] += 1
        shop.spent[c] += cents
        if shop.first[c] == 0.0 or at < shop.first[c]:
            shop.first[c] = at
        shop.last[c] = max(shop.last[c], at)
    for c in range(contacts):
        shop.created[c] = float(int(now - span * rng.random()))
        if shop.count[c]:
            shop.created[c] = min(shop.created[c], shop.first[c])
        shop.lu[c] = rng.random() < 0.1
    return shop


_LU = '{"country": "LU"}'
_OTHER = [f'{{"country": "{c}"}}' for c in COUNTRIES] + ["{}"]


def _sqlite_stamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S.000000", time.gmtime(seconds))


def _pg_stamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime(seconds))


def contact_rows(shop: Shop, stamp: Callable[[float], str]) -> Iterator[tuple[Any, ...]]:
    for c in range(shop.contacts):
        created = stamp(shop.created[c])
        bought = shop.count[c] > 0
        yield (c + 1, f"c{c + 1}@example.com", _LU if shop.lu[c] else _OTHER[c % len(_OTHER)],
               False, False, shop.count[c], shop.spent[c],
               stamp(shop.first[c]) if bought else None, stamp(shop.last[c]) if bought else None,
               created, created)


def order_rows(shop: Shop, stamp: Callable[[float], str]) -> Iterator[tuple[Any, ...]]:
    for i in range(len(shop.order_contact)):
        at = stamp(shop.order_at[i])
        yield ("bench", f"o{i + 1}", shop.order_contact[i] + 1, shop.order_cents[i], "EUR", at, at)


CONTACT_COLUMNS = ("id, email, attributes, is_role, is_disposable, orders_count, "
                   "total_spent_cents, first_order_at, last_order_at, created_at, updated_at")
ORDER_COLUMNS = "source, order_id, contact_id, total_cents, currency, ordered_at, created_at"


def _attribute_index(name: str) -> bool:
    # Left out by the loaders: the benchmark makes it as a user would, after timing without it.
    return name == GIN_INDEX or is_attribute_index_name(name)


def _load_sqlite(path: Path, shop: Shop) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
        "AND tbl_name IN ('contacts', 'orders')").fetchall()
    conn.execute("BEGIN")
    for name, _ in indexes:
        conn.execute(f'DROP INDEX "{name}"')
    conn.executemany(f"INSERT INTO contacts ({CONTACT_COLUMNS}) VALUES ({', '.join('?' * 11)})",
                     contact_rows(shop, _sqlite_stamp))
    conn.executemany(f"INSERT INTO orders ({ORDER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     order_rows(shop, _sqlite_stamp))
    for name, sql in indexes:
        if not _attribute_index(name):
            conn.execute(sql)
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


def _load_pg(engine: Engine, shop: Shop) -> None:
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename IN "
            "('contacts', 'orders') AND NOT EXISTS (SELECT 1 FROM pg_constraint c "
            "WHERE c.conname = i.indexname)")
        indexes = cur.fetchall()
        for name, _ in indexes:
            cur.execute(f'DROP INDEX "{name}"')
        with cur.copy(f"COPY contacts ({CONTACT_COLUMNS}) FROM STDIN") as copy:  # type: ignore[attr-defined]
            for row in contact_rows(shop, _pg_stamp):
                copy.write_row(row)
        with cur.copy(f"COPY orders ({ORDER_COLUMNS}) FROM STDIN") as copy:  # type: ignore[attr-defined]
            for row in order_rows(shop, _pg_stamp):
                copy.write_row(row)
        for name, sql in indexes:
            if not _attribute_index(name):
                cur.execute(sql)
        cur.execute("SELECT setval('contacts_id_seq', %s)", (shop.contacts,))
        raw.commit()
    finally:
        raw.close()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE contacts"))
        conn.execute(text("VACUUM ANALYZE orders"))


def _median_ms(action: Callable[[], Any]) -> tuple[float, Any]:
    action()  # warm the caches
    times, result = [], None
    for _ in range(RUNS):
        started = time.perf_counter()
        result = action()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2), result


class _Explain(Executable, ClauseElement):
    inherit_cache = False

    def __init__(self, statement: Any, prefix: str) -> None:
        self.statement = statement
        self.prefix = prefix


@compiles(_Explain)
def _explain_sql(element: _Explain, compiler: Any, **kw: Any) -> str:
    return element.prefix + compiler.process(element.statement, **kw)


def _plan(session: Session) -> list[str]:
    """The plan of the segment count as the application runs it."""
    query = select(func.count()).select_from(contacts_table()).where(compile_rule(RULE, NOW))
    prefix = "EXPLAIN QUERY PLAN " if session.get_bind().dialect.name == "sqlite" else "EXPLAIN "
    return [str(row[-1]) for row in session.execute(_Explain(query, prefix))]


def _timings(session: Session, param: Any) -> dict[str, Any]:
    backend = session.get_bind().dialect.name
    count_ms, count = _median_ms(lambda: count_segment(session, RULE, NOW))
    conn = session.connection()
    hand_ms, hand = _median_ms(
        lambda: conn.exec_driver_sql(HANDWRITTEN[backend], (param,)).scalar_one())
    explain = "EXPLAIN QUERY PLAN " if backend == "sqlite" else "EXPLAIN "
    hand_plan = [str(row[-1]) for row in conn.exec_driver_sql(explain + HANDWRITTEN[backend],
                                                               (param,))]
    return {"count_ms": count_ms, "handwritten_sql_ms": hand_ms, "plan": _plan(session),
            "handwritten_plan": hand_plan, "counted": (count, hand)}


def _load_average() -> float:
    return round(os.getloadavg()[0], 2)


def _measure(engine: Engine, shop: Shop) -> dict[str, Any]:
    backend = engine.dialect.name
    cutoff = NOW - timedelta(days=90)
    param: Any = _sqlite_stamp(cutoff.timestamp()) if backend == "sqlite" else cutoff
    load_before = _load_average()
    with Session(engine) as session:
        without = _timings(session, param)
        all_ms, _ = _median_ms(
            lambda: session.connection().exec_driver_sql("SELECT count(*) FROM contacts")
            .scalar_one())
        session.commit()
        started = time.perf_counter()
        index, created = create_attribute_index(session, ATTRIBUTE)
        session.commit()
        index_seconds = round(time.perf_counter() - started, 1)
        indexed = _timings(session, param)
        single: dict[str, Any] = {}
        if backend == "sqlite":
            single = _single_column_index(session, index.name, param)
    load_after = _load_average()
    expected = shop.expected()
    counted = {*without["counted"], *indexed["counted"], *single.get("counted", ())}
    if counted != {expected} or not created:
        raise AssertionError(f"{backend}: counted {counted}, expected {expected} (attribute "
                             f"index {index.name} created: {created})")
    figures = {
        "count_ms": indexed["count_ms"],
        "handwritten_sql_ms": indexed["handwritten_sql_ms"],
        "count_ms_without_attribute_index": without["count_ms"],
        "handwritten_sql_ms_without_attribute_index": without["handwritten_sql_ms"],
        "count_all_contacts_ms": all_ms,
        "matching": expected,
        "goal_ms": GOAL_MS,
        "attribute_index": index.name,
        "attribute_index_seconds": index_seconds,
        "plan": indexed["plan"],
        "handwritten_plan": indexed["handwritten_plan"],
        "plan_without_attribute_index": without["plan"],
        "load_average_1min": [load_before, load_after],
    }
    if single:
        figures["count_ms_with_single_column_index"] = single["count_ms"]
        figures["plan_with_single_column_index"] = single["plan"]
    return figures


def _single_column_index(session: Session, covering: str, param: Any) -> dict[str, Any]:
    """SQLite: the count with a plain expression index on the attribute alone (no purchase
    aggregates in its entries) instead of the covering one, for comparison."""
    conn = session.connection()
    path = json_path((ATTRIBUTE,)).replace("'", "''")
    conn.exec_driver_sql(f'DROP INDEX "{covering}"')
    conn.exec_driver_sql("CREATE INDEX bench_attr_only ON contacts "
                         f"(json_extract(attributes, '{path}'))")
    conn.exec_driver_sql("ANALYZE bench_attr_only")
    session.commit()
    return _timings(session, param)


def run(size: int, url: str | None) -> dict[str, Any]:
    """Time the segment count over ``size`` contacts and ``2 * size`` orders in SQLite (and
    PostgreSQL with ``url``, an administrative URL)."""
    started = time.perf_counter()
    shop = generate(size)
    result: dict[str, Any] = {
        "name": "segments",
        "size": size,
        "orders": 2 * size,
        "rule": RULE,
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python "
        f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}",
        "generate_seconds": round(time.perf_counter() - started, 1),
    }
    with tempfile.TemporaryDirectory(prefix="patron-bench-segments-") as tmp:
        path = Path(tmp) / "bench.sqlite3"
        engine = make_engine(f"sqlite:///{path}")
        try:
            migrate(engine)
            started = time.perf_counter()
            _load_sqlite(path, shop)
            result["sqlite_load_seconds"] = round(time.perf_counter() - started, 1)
            result["sqlite"] = _measure(engine, shop)
        finally:
            engine.dispose()
    if url:
        result["postgresql"] = _with_pg_database(url, shop, result)
    parts = [f"{b}: {result[b]['count_ms']} ms with the attribute index (hand-written SQL "
             f"{result[b]['handwritten_sql_ms']} ms), "
             f"{result[b]['count_ms_without_attribute_index']} ms without it (load average "
             f"{result[b]['load_average_1min'][1]})"
             for b in ("sqlite", "postgresql") if b in result]
    result["summary"] = (f"segments count over {size:,} contacts / {2 * size:,} orders, warm "
                         f"median of {RUNS}: " + "; ".join(parts) + f" (goal ≤ {GOAL_MS} ms)")
    return result


def _with_pg_database(admin_url: str, shop: Shop, result: dict[str, Any]) -> dict[str, Any]:
    with scratch_database(admin_url, "bench_segments") as url:
        engine = make_engine(url)
        try:
            migrate(engine)
            started = time.perf_counter()
            _load_pg(engine, shop)
            result["postgresql_load_seconds"] = round(time.perf_counter() - started, 1)
            return _measure(engine, shop)
        finally:
            engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=FULL_SIZE, help="contacts (orders: twice)")
    parser.add_argument("--pg-url", default=None, help="administrative PostgreSQL URL")
    args = parser.parse_args()
    print(json.dumps(run(args.size, args.pg_url)))


if __name__ == "__main__":
    main()

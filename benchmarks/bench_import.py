"""Benchmark of the CSV imports: contacts (A5) and orders (A6), end to end (reading, validation,
suppression checks, writes, rejects), next to the local limit measured in the same run: raw
``sqlite3`` executemany of the very rows the import stored, into the same table of a fresh file.

    .venv/bin/python benchmarks/bench_import.py --size 1000000 [--pg-url postgresql://…/postgres]

``--size`` contacts and twice as many orders, generated deterministically; with ``--pg-url``
(an administrative URL) the same files are also imported into a PostgreSQL database the
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from benchmarks.pgscratch import scratch_database
from lists.imports.contacts import import_contacts
from lists.imports.orders import import_orders
from lists.mailing_lists import create_list
from patron.db import make_engine, migrate

FULL_SIZE = 1_000_000  # contacts; orders are twice as many
SEED = 20260615
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
KEY = b"benchmark-key-0123456789abcdef"
FIRST = ["Anna", "Luc", "Marie", "Paul", "Sofia", "Jonas", "Lea", "Tom", "Eva", "Max"]
LAST = ["Muller", "Schmit", "Weber", "Wagner", "Hoffmann", "Klein", "Thill", "Reuter"]
DOMAINS = ["example.com", "mail.example.org", "shop.example.net", "post.example.lu", "example.de"]
CITIES = ["Esch", "Diekirch", "Luxembourg", "Ettelbruck", "Wiltz", "Remich"]
ZONES = ["Europe/Luxembourg", "Europe/Berlin", "Europe/Paris", "America/New_York", ""]


def email_of(i: int) -> str:
    return f"customer.{i}@{DOMAINS[i % len(DOMAINS)]}"


def write_contacts(path: Path, size: int) -> None:
    """``size`` rows: mostly clean, with the usual dirt (bad, role, duplicate) around 1 %."""
    rng = random.Random(SEED)
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("email,first_name,last_name,locale,timezone,city,loyalty\n")
        for i in range(size):
            roll = rng.random()
            if roll < 0.004:
                email = f"broken.{i}.example.com"
            elif roll < 0.006:
                email = f"info@shop{i}.example.com"
            elif roll < 0.01 and i > 0:
                email = email_of(rng.randrange(i)).upper()
            else:
                email = email_of(i)
            fh.write(
                f"{email},{rng.choice(FIRST)},{rng.choice(LAST)},{'fr-LU' if i % 3 else 'de'},"
                f"{ZONES[i % len(ZONES)]},{rng.choice(CITIES)},"
                f"{rng.choice(['gold', 'silver', ''])}\n"
            )


def write_orders(path: Path, size: int, customers: int) -> None:
    """``size`` orders of ``customers`` people (a few of them not yet contacts)."""
    rng = random.Random(SEED + 1)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("order_id,email,total,currency,ordered_at,discount_code\n")
        for i in range(size):
            who = rng.randrange(int(customers * 1.05) or 1)
            at = start + timedelta(seconds=rng.randrange(86400 * 900))
            cents = rng.randrange(500, 40000)
            code = "SPRING10" if rng.random() < 0.1 else ""
            fh.write(f"SO-{i},{email_of(who)},{cents // 100}.{cents % 100:02d},EUR,"
                     f"{at.isoformat()},{code}\n")


def _raw_executemany_rates(engine_url: str, tmp: Path) -> tuple[float, float]:
    """The local limit: rows/s of raw sqlite3 executemany of the rows the import stored, into
    fresh tables (same schema, indexes and pragmas), 5000 rows and a commit at a time like the
    import: into the contacts table alone, and into the three tables an import writes
    (contacts, subscriptions, consent ledger)."""
    src = sqlite3.connect(make_url(engine_url).database or "")
    tables = {}
    for table in ("contacts", "subscriptions", "consent_ledger"):
        cols = [r[1] for r in src.execute(f"PRAGMA table_info({table})")]
        rows = src.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall()
        tables[table] = (cols, rows)
    src.close()
    rates = []
    for names in (["contacts"], ["contacts", "subscriptions", "consent_ledger"]):
        fresh = tmp / f"reference-{len(names)}.sqlite3"
        engine = make_engine(f"sqlite:///{fresh}")
        migrate(engine)
        with Session(engine) as session:
            create_list(session, "newsletter", NOW, double_opt_in=True)
            session.commit()
        engine.dispose()
        db = sqlite3.connect(fresh)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                       "cache_size=-65536"):
            db.execute(f"PRAGMA {pragma}")
        contacts = len(tables["contacts"][1])
        started = time.perf_counter()
        for name in names:
            cols, rows = tables[name]
            sql = f"INSERT INTO {name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
            for i in range(0, len(rows), 5000):
                db.executemany(sql, rows[i : i + 5000])
                db.commit()
        elapsed = time.perf_counter() - started
        db.close()
        rates.append(contacts / elapsed if elapsed else 0.0)
    return rates[0], rates[1]


def _fresh(url: str) -> Any:
    engine = make_engine(url)
    migrate(engine)
    with Session(engine) as session:
        create_list(session, "newsletter", NOW, double_opt_in=True)
        session.commit()
    return engine


def _contacts(engine: Any, csv_path: Path, parallel: bool) -> tuple[Any, float]:
    started = time.perf_counter()
    summary = import_contacts(
        engine, KEY, csv_path, list_name="newsletter", consent_source="benchmark signup form",
        now=NOW, rejects_path=csv_path.with_suffix(".rejects.csv"), parallel=parallel,
    )
    return summary, time.perf_counter() - started


def _orders(engine: Any, csv_path: Path, parallel: bool) -> tuple[Any, float]:
    started = time.perf_counter()
    summary = import_orders(
        engine, csv_path, now=NOW, rejects_path=csv_path.with_suffix(".rejects.csv"), key=KEY,
        parallel=parallel,
    )
    return summary, time.perf_counter() - started


_STALE = """
SELECT count(*) FROM contacts c LEFT JOIN (
    SELECT contact_id, count(*) AS n, sum(total_cents) AS spent, min(ordered_at) AS first,
           max(ordered_at) AS last
    FROM orders WHERE contact_id IS NOT NULL GROUP BY contact_id
) t ON t.contact_id = c.id
WHERE c.orders_count != coalesce(t.n, 0) OR c.total_spent_cents != coalesce(t.spent, 0)
   OR c.first_order_at IS DISTINCT FROM t.first OR c.last_order_at IS DISTINCT FROM t.last
"""


def _stale_contacts(engine: Any) -> int:
    """Contacts whose stored order aggregates differ from their orders (0 when exact)."""
    sql = _STALE if engine.dialect.name == "postgresql" else _STALE.replace(
        "IS DISTINCT FROM", "IS NOT")
    with engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


def _import_into(url: str, contacts_csv: Path, orders_csv: Path,
                 second_url: str | None = None) -> dict[str, Any]:
    """Contacts read in-process into ``url``, then orders, then the same orders again (all
    unchanged: what re-running a killed import costs); with ``second_url``, contacts and orders
    again there with the helper reader process (what a large file gets, as on the command line,
    when a core is free)."""
    engine = _fresh(url)
    contacts, contacts_s = _contacts(engine, contacts_csv, parallel=False)
    orders, orders_s = _orders(engine, orders_csv, parallel=False)
    stale = _stale_contacts(engine)
    again, again_s = _orders(engine, orders_csv, parallel=False)
    assert again.unchanged == orders.imported, "re-running the orders import changed orders"
    stale += _stale_contacts(engine)
    engine.dispose()
    out = {
        "contacts_rows": contacts.rows,
        "contacts_imported": contacts.imported,
        "contacts_rejected": contacts.rejected,
        "contacts_seconds": round(contacts_s, 2),
        "contacts_rows_per_s": round(contacts.rows / contacts_s) if contacts_s else 0,
        "orders_rows": orders.rows,
        "orders_imported": orders.imported,
        "orders_contacts_created": orders.contacts_created,
        "orders_rejected": orders.rejected,
        "orders_seconds": round(orders_s, 2),
        "orders_rows_per_s": round(orders.rows / orders_s) if orders_s else 0,
        "orders_rerun_seconds": round(again_s, 2),
        "orders_rerun_rows_per_s": round(again.rows / again_s) if again_s else 0,
        "orders_stale_aggregates": stale,
    }
    if second_url is not None:
        engine = _fresh(second_url)
        helper, helper_s = _contacts(engine, contacts_csv, parallel=True)
        helper_orders, helper_orders_s = _orders(engine, orders_csv, parallel=True)
        out["orders_stale_aggregates"] += _stale_contacts(engine)
        engine.dispose()
        assert helper.imported == contacts.imported and helper.rejected == contacts.rejected
        assert helper_orders.imported == orders.imported
        out["contacts_reader_process_seconds"] = round(helper_s, 2)
        out["contacts_reader_process_rows_per_s"] = round(helper.rows / helper_s) if helper_s else 0
        out["orders_reader_process_seconds"] = round(helper_orders_s, 2)
        out["orders_reader_process_rows_per_s"] = (
            round(helper_orders.rows / helper_orders_s) if helper_orders_s else 0)
    assert out["orders_stale_aggregates"] == 0, "order aggregates are not exact"
    return out


def run(size: int, url: str | None) -> dict[str, Any]:
    """Import ``size`` contacts and ``2 * size`` orders into a fresh SQLite file (and into a
    fresh PostgreSQL database when ``url`` is an administrative PostgreSQL URL); contacts are
    also imported with the helper reader process into a second SQLite file, to show what it
    adds or costs on this machine at this moment."""
    with tempfile.TemporaryDirectory(prefix="patron-bench-import-") as tmp_name:
        tmp = Path(tmp_name)
        contacts_csv, orders_csv = tmp / "contacts.csv", tmp / "orders.csv"
        write_contacts(contacts_csv, size)
        write_orders(orders_csv, 2 * size, size)
        sqlite_url = f"sqlite:///{tmp / 'bench.sqlite3'}"
        result: dict[str, Any] = {
            "name": "import",
            "size": size,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python "
            f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}",
            "sqlite": _import_into(sqlite_url, contacts_csv, orders_csv,
                                   f"sqlite:///{tmp / 'bench-reader-process.sqlite3'}"),
        }
        alone, three = _raw_executemany_rates(sqlite_url, tmp)
        result["sqlite"]["raw_executemany_rows_per_s"] = round(alone)
        result["sqlite"]["raw_executemany_three_tables_rows_per_s"] = round(three)
        if url:
            result["postgresql"] = _with_pg_database(url, contacts_csv, orders_csv)
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    lite = result["sqlite"]
    result["summary"] = (
        f"SQLite: {size:,} contacts at {lite['contacts_rows_per_s']:,} rows/s end to end in one "
        f"process ({lite['contacts_reader_process_rows_per_s']:,} rows/s with the helper reader "
        f"process; raw sqlite3 executemany of the same rows into the contacts table alone: "
        f"{lite['raw_executemany_rows_per_s']:,} rows/s, into the three tables an import "
        f"writes: {lite['raw_executemany_three_tables_rows_per_s']:,}); {2 * size:,} orders at "
        f"{lite['orders_rows_per_s']:,} rows/s in one process, "
        f"{lite['orders_reader_process_rows_per_s']:,} with the helper reader process, aggregates "
        f"included (re-run, all unchanged: {lite['orders_rerun_rows_per_s']:,} rows/s; contacts "
        f"with stale aggregates: {lite['orders_stale_aggregates']})."
    )
    return result


def _with_pg_database(admin_url: str, contacts_csv: Path, orders_csv: Path) -> dict[str, Any]:
    with scratch_database(admin_url, "bench_import") as url:
        return _import_into(url, contacts_csv, orders_csv)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=FULL_SIZE, help="contacts (orders: twice)")
    parser.add_argument("--pg-url", default=None, help="administrative PostgreSQL URL")
    args = parser.parse_args()
    print(json.dumps(run(args.size, args.pg_url)))


if __name__ == "__main__":
    main()

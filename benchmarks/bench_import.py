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
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

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


def _raw_executemany_rate(engine_url: str, tmp: Path) -> float:
    """Rows/s of raw sqlite3 executemany of the stored contact rows into a fresh contacts
    table (same schema and indexes), in batches of 5000 with a commit each, like the import."""
    src = sqlite3.connect(make_url(engine_url).database or "")
    cols = [r[1] for r in src.execute("PRAGMA table_info(contacts)") if r[1] != "id"]
    rows = src.execute(f"SELECT {', '.join(cols)} FROM contacts").fetchall()
    src.close()
    fresh = tmp / "reference.sqlite3"
    engine = make_engine(f"sqlite:///{fresh}")
    migrate(engine)
    engine.dispose()
    db = sqlite3.connect(fresh)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    sql = f"INSERT INTO contacts ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    started = time.perf_counter()
    for i in range(0, len(rows), 5000):
        db.executemany(sql, rows[i : i + 5000])
        db.commit()
    elapsed = time.perf_counter() - started
    db.close()
    return len(rows) / elapsed if elapsed else 0.0


def _import_into(url: str, contacts_csv: Path, orders_csv: Path) -> dict[str, Any]:
    engine = make_engine(url)
    migrate(engine)
    with Session(engine) as session:
        create_list(session, "newsletter", NOW, double_opt_in=True)
        session.commit()
    started = time.perf_counter()
    contacts = import_contacts(
        engine, KEY, contacts_csv, list_name="newsletter", consent_source="benchmark signup form",
        now=NOW, rejects_path=contacts_csv.with_suffix(".rejects.csv"),
    )
    contacts_s = time.perf_counter() - started
    started = time.perf_counter()
    orders = import_orders(
        engine, orders_csv, now=NOW, rejects_path=orders_csv.with_suffix(".rejects.csv")
    )
    orders_s = time.perf_counter() - started
    engine.dispose()
    return {
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
    }


def run(size: int, url: str | None) -> dict[str, Any]:
    """Import ``size`` contacts and ``2 * size`` orders into a fresh SQLite file (and into a
    fresh PostgreSQL database when ``url`` is an administrative PostgreSQL URL)."""
    with tempfile.TemporaryDirectory(prefix="patron-bench-import-") as tmp_name:
        tmp = Path(tmp_name)
        contacts_csv, orders_csv = tmp / "contacts.csv", tmp / "orders.csv"
        write_contacts(contacts_csv, size)
        write_orders(orders_csv, 2 * size, size)
        sqlite_url = f"sqlite:///{tmp / 'bench.sqlite3'}"
        result: dict[str, Any] = {
            "name": "import",
            "size": size,
            "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python "
            f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}",
            "sqlite": _import_into(sqlite_url, contacts_csv, orders_csv),
        }
        result["sqlite"]["raw_executemany_rows_per_s"] = round(
            _raw_executemany_rate(sqlite_url, tmp)
        )
        if url:
            result["postgresql"] = _with_pg_database(url, contacts_csv, orders_csv)
    lite = result["sqlite"]
    result["summary"] = (
        f"SQLite: {size:,} contacts at {lite['contacts_rows_per_s']:,} rows/s end to end "
        f"(raw sqlite3 executemany of the same rows into the contacts table alone: "
        f"{lite['raw_executemany_rows_per_s']:,} rows/s); {2 * size:,} orders at "
        f"{lite['orders_rows_per_s']:,} rows/s."
    )
    return result


def _with_pg_database(admin_url: str, contacts_csv: Path, orders_csv: Path) -> dict[str, Any]:
    admin = make_url(admin_url)
    if admin.drivername == "postgresql":
        admin = admin.set(drivername="postgresql+psycopg")
    name = f"patron_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        return _import_into(
            admin.set(database=name).render_as_string(hide_password=False), contacts_csv, orders_csv
        )
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=FULL_SIZE, help="contacts (orders: twice)")
    parser.add_argument("--pg-url", default=None, help="administrative PostgreSQL URL")
    args = parser.parse_args()
    print(json.dumps(run(args.size, args.pg_url)))


if __name__ == "__main__":
    main()

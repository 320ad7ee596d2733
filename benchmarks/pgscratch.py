"""A scratch PostgreSQL database for one benchmark run: created empty, dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


@contextmanager
def scratch_database(admin_url: str, label: str = "bench") -> Iterator[str]:
    """Yield the URL of a new empty database on the server of ``admin_url``; drop it on exit
    (connections still open to it are terminated)."""
    admin = make_url(admin_url)
    if admin.drivername == "postgresql":
        admin = admin.set(drivername="postgresql+psycopg")
    name = f"patron_{label}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    server = create_engine(admin, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with server.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()

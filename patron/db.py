"""The database engine and migrations: the one place that turns a URL into an engine."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session
from sqlmodel import col

from lists.errors import ConfigurationError
from lists.models import Meta

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


# SQLite's page cache per connection, in KiB: imports and segment counts over a million
# contacts gain from a large one.
SQLITE_CACHE_KIB = 65_536


def _sqlite_pragmas(cache_kib: int) -> Any:
    def pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA temp_store=MEMORY")
        cur.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
        cur.close()

    return pragmas


def make_engine(url: str, *, sqlite_cache_kib: int = SQLITE_CACHE_KIB) -> Engine:
    """An engine for ``url``: SQLite in WAL mode (directory created) or PostgreSQL (psycopg 3).
    ``sqlite_cache_kib``: the page cache of each SQLite connection."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"invalid database URL {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas(sqlite_cache_kib))
        return engine
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_pre_ping=True)
    raise ConfigurationError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> str:
    """Create or upgrade the schema to the newest revision; returns that revision."""
    try:
        with engine.begin() as conn:
            cfg = alembic_config(engine)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except OperationalError as exc:
        raise ConfigurationError(f"cannot reach the database: {_first_line(exc)}") from exc
    with Session(engine) as session:
        ensure_secret_key(session)
        session.commit()
    return head_revision(engine)


def head_revision(engine: Engine) -> str:
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    return head or ""


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def check_schema(engine: Engine) -> None:
    """Fail with a clear message if the database is missing or not at the newest revision."""
    try:
        current = current_revision(engine)
    except OperationalError as exc:
        raise ConfigurationError(f"cannot reach the database: {_first_line(exc)}") from exc
    if current is None:
        raise ConfigurationError("the database is not initialized: run `patron init`")
    if current != head_revision(engine):
        raise ConfigurationError("the database schema is out of date: run `patron init`")


def ensure_secret_key(session: Session) -> str:
    """The stored installation key, generated on first use. PATRON_SECRET_KEY overrides it."""
    row = session.execute(select(Meta).where(col(Meta.key) == "secret_key")).scalar_one_or_none()
    if row is None:
        row = Meta(key="secret_key", value=secrets.token_urlsafe(32))
        session.add(row)
        session.flush()
    return row.value


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

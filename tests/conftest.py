"""Shared fixtures: real SQLite and PostgreSQL databases, an isolated environment, the CLI.

Every test that takes ``db_url`` (or ``ctx``, ``cli``) runs once on SQLite and once on
PostgreSQL. The PostgreSQL half uses a fresh database per test session on the local server;
where there is no server it is skipped with a notice, except under CI, where it fails.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from lists.clock import FixedClock
from patron.context import AppContext
from patron.db import make_engine, migrate
from tests.servers.smtp import FaultySmtpServer

PG_ADMIN_URL = os.environ.get(
    "PATRON_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
TEST_SECRET = "test-secret-key-0123456789abcdef"
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)

_pg_notice: list[str] = []


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"postgresql: {PG_ADMIN_URL}"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _pg_notice:
        terminalreporter.write_line(line, yellow=True, bold=True)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the developer's own config, data directory and PATRON_ variables out of tests."""
    home = tmp_path_factory.mktemp("home")
    for name in list(os.environ):
        if name.startswith("PATRON_") and name != "PATRON_TEST_PG_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("PATRON_CONFIG", str(home / "config" / "patron" / "config.toml"))
    monkeypatch.setenv("PATRON_SECRET_KEY", TEST_SECRET)
    return home


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies (cheaper than migrating each time)."""
    path = tmp_path_factory.mktemp("sqlite") / "template.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str | None]:
    """A fresh PostgreSQL database for this test session, migrated; None if no server."""
    admin_url = make_url(PG_ADMIN_URL)
    name = f"patron_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required under CI but unreachable: {exc}")
        _pg_notice.append(f"NOTICE: PostgreSQL tests skipped: no server at {PG_ADMIN_URL}")
        yield None
        return
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


_PG_TABLES = (
    "consent_ledger, subscriptions, events, orders, import_runs, segments, suppressions, "
    "contacts, lists"
)


def _reset_pg(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        tables = [
            r[0]
            for r in conn.execute(
                text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                    "AND tablename NOT IN ('alembic_version', 'meta')"
                )
            )
        ]
        conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_factory(
    backend: str,
    sqlite_template: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Callable[[], str]:
    """Returns a function that gives a clean, migrated database URL each time it is called
    (for hypothesis tests, which need a fresh database per example)."""
    if backend == "postgresql":
        pg_url = request.getfixturevalue("pg_database")
        if pg_url is None:
            pytest.skip("no PostgreSQL server (see the notice at the end)")

        def fresh_pg() -> str:
            _reset_pg(pg_url)
            return str(pg_url)

        return fresh_pg

    counter = iter(range(1_000_000))

    def fresh_sqlite() -> str:
        path = tmp_path / f"db{next(counter)}.sqlite3"
        shutil.copyfile(sqlite_template, path)
        return f"sqlite:///{path}"

    return fresh_sqlite


@pytest.fixture
def db_url(db_factory: Callable[[], str], monkeypatch: pytest.MonkeyPatch) -> str:
    """A clean, migrated database (SQLite or PostgreSQL), also set as PATRON_DATABASE_URL."""
    url = db_factory()
    monkeypatch.setenv("PATRON_DATABASE_URL", url)
    return url


@pytest.fixture
def db(db_url: str) -> Iterator[Engine]:
    """A SQLAlchemy engine on the test database (delivery tests drive the engine with it)."""
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def smtp() -> Iterator[FaultySmtpServer]:
    """The fault-injecting SMTP server on loopback, without faults unless a test sets some."""
    with FaultySmtpServer() as server:
        yield server


@pytest.fixture
def ctx(db_url: str) -> Iterator[AppContext]:
    """An application context on the test database with the clock fixed at NOW."""
    context = AppContext(cli_overrides={"database_url": db_url}, clock=FixedClock(NOW))
    yield context
    context.dispose()


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(db_url: str, capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run `patron ARGS…` in-process against the test database."""
    from patron.cli.app import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run

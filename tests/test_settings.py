"""Settings precedence: CLI > environment > TOML file > defaults; `patron config` shows sources."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lists.errors import ConfigurationError
from patron.settings import effective_settings, load_settings


def _write_config(text: str) -> Path:
    path = Path(os.environ["PATRON_CONFIG"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_use_sqlite_in_data_dir(isolated_env):
    s = load_settings()
    assert s.database_url.startswith("sqlite:///")
    assert str(isolated_env) in s.database_url
    assert s.delivery.frequency_cap_hours == 16


def test_file_then_env_then_cli(monkeypatch):
    _write_config('[smtp]\nhost = "file.example"\nport = 2600\n[delivery]\nrate = 7\n')
    s = load_settings()
    assert (s.smtp.host, s.smtp.port, s.delivery.rate) == ("file.example", 2600, 7)
    monkeypatch.setenv("PATRON_SMTP__HOST", "env.example")
    s = load_settings()
    assert (s.smtp.host, s.smtp.port) == ("env.example", 2600)
    s = load_settings(database_url="sqlite:////tmp/cli.sqlite3")
    assert s.database_url == "sqlite:////tmp/cli.sqlite3"
    sources = {r["setting"]: r["source"] for r in effective_settings(s, {"database_url": "x"})}
    assert sources["smtp.host"] == "env"
    assert sources["smtp.port"].startswith("file ")
    assert sources["database_url"] == "cli"
    assert sources["dns.timeout"] == "default"


def test_env_names_match_spec(monkeypatch):
    monkeypatch.setenv("PATRON_SENDER__FROM", "Shop <hi@shop.lu>")
    monkeypatch.setenv("PATRON_DNS__NAMESERVERS", '["127.0.0.1:5353"]')
    monkeypatch.setenv("PATRON_SMTP__TLS", "starttls")
    s = load_settings()
    assert s.sender.from_ == "Shop <hi@shop.lu>"
    assert s.dns.nameservers == ["127.0.0.1:5353"]
    assert s.smtp.tls == "starttls"
    envs = {r["env"] for r in effective_settings(s)}
    assert {"PATRON_SENDER__FROM", "PATRON_SMTP__POOL_SIZE", "PATRON_TRACKING__BASE_URL",
            "PATRON_WEBHOOKS__STRIPE_SECRET", "PATRON_DKIM__PRIVATE_KEY_FILE"} <= envs


def test_invalid_value_is_a_configuration_error(monkeypatch):
    monkeypatch.setenv("PATRON_SMTP__TLS", "sometimes")
    with pytest.raises(ConfigurationError, match="PATRON_SMTP__TLS"):
        load_settings()


def test_broken_config_file_is_one_line(cli):
    _write_config("[smtp\nhost=")
    r = cli("config")
    assert r.code == 1
    assert r.err.startswith("patron: error: cannot read config file")


def test_config_masks_secrets(cli, monkeypatch):
    monkeypatch.setenv("PATRON_SMTP__PASSWORD", "hunter2")
    r = cli("config", "--json")
    assert r.code == 0
    doc = json.loads(r.out)
    assert "hunter2" not in r.out
    assert doc["smtp.password"] == {"value": "********", "source": "env"}
    assert TEST_SECRET_SNIPPET not in r.out


TEST_SECRET_SNIPPET = "test-secret-key"


def test_sqlite_connections_get_the_page_cache_they_are_built_with(tmp_path):
    """Commands get a large SQLite page cache (imports, segment counts); the worker builds its
    engine with a small one so that its memory stays flat while it sends."""
    from sqlalchemy import text

    from patron.cli.cmd_sending import WORKER_SQLITE_CACHE_KIB
    from patron.db import SQLITE_CACHE_KIB, make_engine

    for kib in (SQLITE_CACHE_KIB, WORKER_SQLITE_CACHE_KIB):
        engine = make_engine(f"sqlite:///{tmp_path / f'c{kib}.sqlite3'}", sqlite_cache_kib=kib)
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA cache_size")).scalar_one() == -kib
        engine.dispose()
    assert WORKER_SQLITE_CACHE_KIB < SQLITE_CACHE_KIB

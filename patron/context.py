"""What a command runs with: settings, the engine, the installation key and the clock, built on
first use (never at import) and shared by the CLI, the demo and the TUI."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from lists.clock import Clock, SystemClock
from patron.db import SQLITE_CACHE_KIB, check_schema, ensure_secret_key, make_engine
from patron.settings import Settings, load_settings


@dataclass
class AppContext:
    """Lazily built runtime of one command."""

    cli_overrides: dict[str, Any] = field(default_factory=dict)
    clock: Clock = field(default_factory=SystemClock)
    # The page cache of each SQLite connection (KiB); set before the engine is first used.
    sqlite_cache_kib: int = SQLITE_CACHE_KIB
    _settings: Settings | None = None
    _engine: Engine | None = None
    _key: bytes | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(**self.cli_overrides)
        return self._settings

    def engine(self, *, check: bool = True) -> Engine:
        """The engine; with ``check`` it fails clearly unless the schema is current."""
        if self._engine is None:
            self._engine = make_engine(
                self.settings.database_url, sqlite_cache_kib=self.sqlite_cache_kib
            )
            if check:
                check_schema(self._engine)
        return self._engine

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits when the block ends normally and rolls back otherwise."""
        with Session(self.engine(), expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @property
    def key(self) -> bytes:
        """The HMAC key: PATRON_SECRET_KEY if set, else the one generated at `patron init`."""
        if self._key is None:
            configured = self.settings.secret_key
            if configured is not None and configured.get_secret_value():
                self._key = configured.get_secret_value().encode()
            else:
                with self.session() as session:
                    self._key = ensure_secret_key(session).encode()
        return self._key

    def now(self) -> Any:
        return self.clock.now()

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

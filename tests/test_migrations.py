"""The migrations build exactly the schema the models declare, on SQLite and PostgreSQL, and
can be rolled back and applied again."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

import campaigns.models  # noqa: F401
import lists.models  # noqa: F401
from patron.db import alembic_config, current_revision, head_revision, make_engine, migrate


def test_models_and_migrations_agree(db_url):
    engine = make_engine(db_url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, SQLModel.metadata)
    engine.dispose()
    assert diff == [], f"models differ from migrations: {diff}"


def test_downgrade_to_base_and_upgrade_again(db_url):
    engine = make_engine(db_url)
    with engine.begin() as conn:
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert current_revision(engine) is None
    migrate(engine)
    assert current_revision(engine) == head_revision(engine)
    engine.dispose()

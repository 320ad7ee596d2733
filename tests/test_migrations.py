"""The migrations build exactly the schema the models declare, on SQLite and PostgreSQL, and
can be rolled back and applied again, whatever attribute indexes users have added."""

from __future__ import annotations

import warnings
from contextlib import contextmanager

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.exc import SAWarning
from sqlmodel import SQLModel

import campaigns.models  # noqa: F401
import lists.models  # noqa: F401
from lists.segments.attribute_indexes import (
    create_attribute_index,
    list_attribute_indexes,
    schema_comparison_filter,
)
from patron.db import alembic_config, current_revision, head_revision, make_engine, migrate


@contextmanager
def _expression_indexes_skipped():
    # SQLAlchemy cannot reflect SQLite expression indexes (the users' attribute indexes) and
    # says it skips them, which is what comparisons and batch migrations want.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based",
                                SAWarning)
        yield


def _diff(engine):
    with engine.connect() as conn, _expression_indexes_skipped():
        ctx = MigrationContext.configure(conn, opts={
            "compare_type": True, "include_object": schema_comparison_filter(conn.dialect.name)})
        return compare_metadata(ctx, SQLModel.metadata)


def test_models_and_migrations_agree(db_url):
    engine = make_engine(db_url)
    diff = _diff(engine)
    engine.dispose()
    assert diff == [], f"models differ from migrations: {diff}"


def test_user_attribute_indexes_are_not_schema_differences(db_url):
    engine = make_engine(db_url)
    with engine.begin() as conn:
        create_attribute_index(conn, "country")
        create_attribute_index(conn, '"date of birth"')
        if conn.dialect.name == "postgresql":
            # Patron makes none there (the GIN index serves every attribute); one made by hand
            # under the attribute indexes' names is the user's too.
            conn.exec_driver_sql(
                "CREATE INDEX ix_contacts_attr_by_hand ON contacts ((attributes ->> 'country'))")
    try:
        with engine.connect() as conn:
            # SQLite: two indexes of their own; PostgreSQL: the schema's GIN index serves both.
            assert len(list_attribute_indexes(conn)) == (2 if conn.dialect.name == "sqlite" else 1)
        assert _diff(engine) == []
        with engine.begin() as conn, _expression_indexes_skipped():
            cfg = alembic_config(engine)
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        migrate(engine)
        assert current_revision(engine) == head_revision(engine)
        assert _diff(engine) == []
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP INDEX IF EXISTS ix_contacts_attr_by_hand")
        engine.dispose()


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

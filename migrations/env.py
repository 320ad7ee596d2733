"""Alembic environment: the engine or connection comes from patron.db, never from an ini file."""

from alembic import context
from sqlmodel import SQLModel

import campaigns.models  # noqa: F401  (registers the tables on SQLModel.metadata)
import lists.models  # noqa: F401
from lists.segments.attribute_indexes import schema_comparison_filter

config = context.config
target_metadata = SQLModel.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        engine = config.attributes["engine"]
        with engine.begin() as conn:
            _run_with(conn)
    else:
        _run_with(connection)


def _run_with(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        # Users' attribute indexes and other dialects' indexes are not the models' business.
        include_object=schema_comparison_filter(connection.dialect.name),
    )
    with context.begin_transaction():
        context.run_migrations()


run()

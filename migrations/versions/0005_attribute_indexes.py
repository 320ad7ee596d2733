"""attribute indexes: a GIN index on contacts.attributes on PostgreSQL

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _postgresql() -> bool:
    return op.get_bind().dialect.name == 'postgresql'


def upgrade() -> None:
    # Segment attribute equalities and `in` are JSONB containment (`@>`), which one GIN index
    # with jsonb_path_ops serves for every key. SQLite has no such index: there, attribute
    # indexes are per key and user-managed (`patron segments index ATTR`).
    if _postgresql():
        op.create_index('ix_contacts_attributes', 'contacts', ['attributes'], unique=False,
                        postgresql_using='gin', postgresql_ops={'attributes': 'jsonb_path_ops'})


def downgrade() -> None:
    if _postgresql():
        op.drop_index('ix_contacts_attributes', table_name='contacts')

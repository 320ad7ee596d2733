"""orders covering index: contact, time and total, for the order aggregates

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Recomputing contacts' order aggregates (count, sum of totals, first and last time) reads
    # this index alone, in contact order; it also serves everything (contact_id, ordered_at)
    # served, which it replaces.
    op.create_index('ix_orders_contact_totals', 'orders',
                    ['contact_id', 'ordered_at', 'total_cents'], unique=False)
    op.drop_index('ix_orders_contact_ordered', table_name='orders')


def downgrade() -> None:
    op.create_index('ix_orders_contact_ordered', 'orders', ['contact_id', 'ordered_at'],
                    unique=False)
    op.drop_index('ix_orders_contact_totals', table_name='orders')

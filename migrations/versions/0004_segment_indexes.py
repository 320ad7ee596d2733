"""segment indexes: total spent with the order count and last order, for segments

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Serves `total_spent` and `aov` rules, the RFM monetary cut points (an ordered scan) and
    # RFM groups, whose recency and frequency are then read from the same index entries.
    op.create_index('ix_contacts_total_spent', 'contacts',
                    ['total_spent_cents', 'orders_count', 'last_order_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_contacts_total_spent', table_name='contacts')

"""send log: drop ix_messages_campaign_state, a prefix of ix_messages_claim

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # (campaign_id, state) is the prefix of ix_messages_claim (campaign_id, state,
    # next_attempt_at), which serves every query it served; each send-log write (a million rows
    # when a campaign starts, three updates per message) maintained both.
    op.drop_index('ix_messages_campaign_state', table_name='messages')


def downgrade() -> None:
    op.create_index('ix_messages_campaign_state', 'messages', ['campaign_id', 'state'],
                    unique=False)

"""Connection health: broken (reconnect needed), hard expiry and the notices sent

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = ("hard_expires_at", "broken_at", "broken_notified_at", "expiry_warned_at")


def upgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("broken_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.drop_column("broken_reason")
        for name in reversed(COLUMNS):
            batch.drop_column(name)

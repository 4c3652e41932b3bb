"""Rate-limit buckets shared by every replica

``rate_buckets`` holds one QuickBooks (per realm) or Clio (per connection) budget per firm;
``hardcost.sync.pacing`` takes tokens from it in blocks.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_buckets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("firm_id", sa.Integer(), sa.ForeignKey("firms.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("tokens", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_ends_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("firm_id", "key", name="uq_rate_buckets_key"),
    )


def downgrade() -> None:
    op.drop_table("rate_buckets")

"""Purchases deleted or voided in QuickBooks, and what became of their Clio entries

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "purchase_removals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("firm_id", sa.Integer(), nullable=False),
        sa.Column("realm_id", sa.String(length=40), nullable=False),
        sa.Column("purchase_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["firm_id"], ["firms.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("firm_id", "realm_id", "purchase_id",
                            name="uq_purchase_removals_purchase"),
    )
    with op.batch_alter_table("entry_links") as batch:
        batch.add_column(sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("removal_note", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("entry_links") as batch:
        batch.drop_column("removal_note")
        batch.drop_column("removed_at")
    op.drop_table("purchase_removals")

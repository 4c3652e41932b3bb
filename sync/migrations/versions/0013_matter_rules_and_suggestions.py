"""Matter rules made from a click, and suggestions on waiting expenses

``matter_rules`` holds "Always do this for <payee> → <client>" rules (removed ones stay, with
``removed_at``). ``waiting_expenses.suggestion`` keeps what the prompt says beyond its choices:
the matter the firm's history supports and why, or why a rule did not apply.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("waiting_expenses", sa.Column("suggestion", sa.JSON(), nullable=True))
    op.create_table(
        "matter_rules",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("firm_id", sa.Integer(), sa.ForeignKey("firms.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("contact_id", sa.BigInteger(), nullable=False),
        sa.Column("client_name", sa.String(300), nullable=False),
        sa.Column("payee_id", sa.String(40), nullable=False),
        sa.Column("payee_name", sa.String(300), nullable=False),
        sa.Column("account_id", sa.String(40)),
        sa.Column("matter_id", sa.BigInteger(), nullable=False),
        sa.Column("matter_label", sa.String(300), nullable=False),
        sa.Column("created_by", sa.String(60), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("uses", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
        sa.Column("removed_at", sa.DateTime(timezone=True)),
        sa.Column("removed_by", sa.String(60)),
    )
    op.create_index("ix_matter_rules_firm_match", "matter_rules",
                    ["firm_id", "contact_id", "payee_id"])


def downgrade() -> None:
    op.drop_index("ix_matter_rules_firm_match", table_name="matter_rules")
    op.drop_table("matter_rules")
    op.drop_column("waiting_expenses", "suggestion")

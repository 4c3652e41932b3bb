"""Grouped prompts, undo and the daily digest

``prompt_groups`` holds one message for several expenses of one client waiting for the same
matter choice; ``waiting_expenses.group_id`` names a member's group. ``firm_settings`` gains
``prompts`` (each | digest), ``digest_hour``, ``timezone`` and ``digest_sent_on`` (the local day
whose digest went out, so a restart never sends a second one). Undo needs no column: a link
being undone is in state ``undoing`` for the moment it takes.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prompt_groups",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("firm_id", sa.Integer(), sa.ForeignKey("firms.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("customer_id", sa.String(40), nullable=False),
        sa.Column("customer_name", sa.String(300), nullable=False),
        sa.Column("choice_key", sa.String(1000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
        sa.Column("resolution", sa.String(20)),
        sa.Column("resolved_by", sa.String(40)),
        sa.Column("outcome", sa.JSON()),
        sa.Column("slack_channel", sa.String(40)),
        sa.Column("slack_ts", sa.String(40)),
    )
    op.create_index("ix_prompt_groups_firm_open", "prompt_groups",
                    ["firm_id", "customer_id", "resolved_at"])
    op.add_column("waiting_expenses", sa.Column("group_id", sa.Integer(), nullable=True))
    op.create_index("ix_waiting_expenses_group_id", "waiting_expenses", ["group_id"])
    op.add_column("firm_settings", sa.Column("prompts", sa.String(10), nullable=False,
                                             server_default="each"))
    op.add_column("firm_settings", sa.Column("digest_hour", sa.Integer(), nullable=False,
                                             server_default="9"))
    op.add_column("firm_settings", sa.Column("timezone", sa.String(64), nullable=False,
                                             server_default="UTC"))
    op.add_column("firm_settings", sa.Column("digest_sent_on", sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("firm_settings") as batch:
        batch.drop_column("digest_sent_on")
        batch.drop_column("timezone")
        batch.drop_column("digest_hour")
        batch.drop_column("prompts")
    op.drop_index("ix_waiting_expenses_group_id", table_name="waiting_expenses")
    with op.batch_alter_table("waiting_expenses") as batch:
        batch.drop_column("group_id")
    op.drop_index("ix_prompt_groups_firm_open", table_name="prompt_groups")
    op.drop_table("prompt_groups")

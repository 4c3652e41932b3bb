"""No customer on an expense: ask which matter (``no-customer ask|skip``), and the matter cache

``firm_settings.no_customer`` says what happens to import-account lines without a customer:
``ask`` (the default, also for existing firms) makes them wait for a person to pick any open
or pending matter; ``skip`` skips them as before. ``matter_cache`` keeps the firm's open and
pending Clio matters (refreshed by runs, ``firm_settings.matters_cached_at``) so the search
menu of such a prompt answers within Slack's 3 seconds without asking Clio.

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("firm_settings", sa.Column("no_customer", sa.String(10), nullable=False,
                                             server_default="ask"))
    op.add_column("firm_settings", sa.Column("matters_cached_at", sa.DateTime(timezone=True),
                                             nullable=True))
    op.create_table(
        "matter_cache",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("firm_id", sa.Integer(), sa.ForeignKey("firms.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("matter_id", sa.BigInteger(), nullable=False),
        sa.Column("display_number", sa.String(100), nullable=False),
        sa.Column("description", sa.String(300), nullable=False),
        sa.Column("client_name", sa.String(300), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("number_key", sa.String(100), nullable=False),
        sa.Column("search_text", sa.String(720), nullable=False),
        sa.UniqueConstraint("firm_id", "matter_id", name="uq_matter_cache_firm_matter"),
    )
    op.create_index("ix_matter_cache_firm_number", "matter_cache", ["firm_id", "number_key"])


def downgrade() -> None:
    op.drop_index("ix_matter_cache_firm_number", table_name="matter_cache")
    op.drop_table("matter_cache")
    op.drop_column("firm_settings", "matters_cached_at")
    op.drop_column("firm_settings", "no_customer")

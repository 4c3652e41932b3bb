"""Ready to bill: QuickBooks' billable status, a category and a UTBMS code per import account

``firm_settings.not_billable`` says what happens to QuickBooks lines marked ``NotBillable``:
``import`` (the default, also for existing firms: as non-billable Clio entries) or ``skip``.
``firm_settings.utbms_code_id``/``utbms_code`` are the default UTBMS expense code (none for
existing firms). ``account_codings`` keeps, per firm and QuickBooks import account, the Clio
expense category and UTBMS expense code its entries are written with.

Revision ID: 0022
Revises: 0021
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("firm_settings", sa.Column("not_billable", sa.String(10), nullable=False,
                                             server_default="import"))
    op.add_column("firm_settings", sa.Column("utbms_code_id", sa.BigInteger(), nullable=True))
    op.add_column("firm_settings", sa.Column("utbms_code", sa.String(20), nullable=True))
    op.create_table(
        "account_codings",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("firm_id", sa.Integer(), sa.ForeignKey("firms.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("account_name", sa.String(300), nullable=False),
        sa.Column("expense_category_id", sa.BigInteger(), nullable=True),
        sa.Column("category_name", sa.String(300), nullable=True),
        sa.Column("utbms_code_id", sa.BigInteger(), nullable=True),
        sa.Column("utbms_code", sa.String(20), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("firm_id", "account_id"),
    )


def downgrade() -> None:
    op.drop_table("account_codings")
    op.drop_column("firm_settings", "utbms_code")
    op.drop_column("firm_settings", "utbms_code_id")
    op.drop_column("firm_settings", "not_billable")

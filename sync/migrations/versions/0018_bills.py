"""Vendor Bills: the firm's ``bills`` setting (off | on-entry | on-payment)

``off`` (the default) imports nothing from Bills, so nothing changes for a firm that does not
ask; ``on-entry`` imports a Bill's lines as it is entered, ``on-payment`` once it is paid.

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("firm_settings", sa.Column("bills", sa.String(12), nullable=False,
                                             server_default="off"))


def downgrade() -> None:
    with op.batch_alter_table("firm_settings") as batch:
        batch.drop_column("bills")

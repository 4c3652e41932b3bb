"""Receipts: files attached in QuickBooks, filed on the matters in Clio (issue 28)

``receipt_files``: one row per QuickBooks Attachable and the transaction it is attached to
(``txn_key``: the purchase id, or ``bill-<id>`` as ``entry_links`` keeps Bills), with what the
filing needs to know (file name, type, size, whether QuickBooks still has it).
``receipt_links``: one row per (Attachable, matter), unique, written ``pending`` before the
upload and settled ``created`` with the Clio document, like ``entry_links`` for entries.
``firm_settings.receipts``: the firm's ``receipts on|off`` setting (on by default).

Revision ID: 0025
Revises: 0024
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("firm_settings", sa.Column("receipts", sa.Boolean(), nullable=False,
                                             server_default=sa.text("true")))
    op.create_table(
        "receipt_files",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("firm_id", sa.Integer(), sa.ForeignKey("firms.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("realm_id", sa.String(40), nullable=False),
        sa.Column("attachable_id", sa.String(40), nullable=False),
        sa.Column("txn_key", sa.String(40), nullable=False),
        sa.Column("file_name", sa.String(300), nullable=False),
        sa.Column("content_type", sa.String(100)),
        sa.Column("size", sa.BigInteger()),
        sa.Column("removed", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("removed_at", sa.DateTime(timezone=True)),
        sa.Column("qbo_updated_at", sa.String(40)),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("firm_id", "realm_id", "attachable_id", "txn_key",
                            name="uq_receipt_files_key"),
    )
    op.create_index("ix_receipt_files_firm_txn", "receipt_files", ["firm_id", "txn_key"])
    op.create_table(
        "receipt_links",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("firm_id", sa.Integer(), sa.ForeignKey("firms.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("realm_id", sa.String(40), nullable=False),
        sa.Column("attachable_id", sa.String(40), nullable=False),
        sa.Column("matter_id", sa.BigInteger(), nullable=False),
        sa.Column("txn_key", sa.String(40), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("clio_document_id", sa.BigInteger()),
        sa.Column("uuid", sa.String(100)),
        sa.Column("bytes", sa.BigInteger()),
        sa.Column("name", sa.String(300)),
        sa.Column("reason", sa.Text()),
        sa.Column("run_id", sa.Integer()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("firm_id", "realm_id", "attachable_id", "matter_id",
                            name="uq_receipt_links_key"),
    )
    op.create_index("ix_receipt_links_firm_state", "receipt_links", ["firm_id", "state"])
    op.create_index("ix_receipt_links_firm_txn", "receipt_links", ["firm_id", "txn_key"])


def downgrade() -> None:
    op.drop_index("ix_receipt_links_firm_txn", table_name="receipt_links")
    op.drop_index("ix_receipt_links_firm_state", table_name="receipt_links")
    op.drop_table("receipt_links")
    op.drop_index("ix_receipt_files_firm_txn", table_name="receipt_files")
    op.drop_table("receipt_files")
    with op.batch_alter_table("firm_settings") as batch:
        batch.drop_column("receipts")

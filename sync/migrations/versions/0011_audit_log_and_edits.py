"""The audit trail, and what edits of imported purchases need on their links

``audit_log`` is append-only: a trigger refuses UPDATEs on both backends (rows go only with
their firm). ``entry_links.written`` keeps what hardcost last wrote to the Clio entry, so an
entry a person changed in Clio is never overwritten; ``superseded_at`` marks an entry whose
purchase no longer calls for it (its customer or lines changed), to be removed by this run or
the next. ``waiting_expenses.prompt_stale`` asks for a posted prompt to be updated in place
after its expense was edited in QuickBooks.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

NO_UPDATE = "the audit log is append-only"


def upgrade() -> None:
    op.add_column("entry_links", sa.Column("written", sa.JSON(), nullable=True))
    op.add_column("entry_links",
                  sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("waiting_expenses",
                  sa.Column("prompt_stale", sa.Boolean(), nullable=False,
                            server_default=sa.false()))
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("firm_id", sa.Integer(), sa.ForeignKey("firms.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(60), nullable=False),
        sa.Column("action", sa.String(30), nullable=False),
        sa.Column("realm_id", sa.String(40)),
        sa.Column("purchase_id", sa.String(40)),
        sa.Column("customer_id", sa.String(40)),
        sa.Column("line_id", sa.String(40)),
        sa.Column("client", sa.String(300)),
        sa.Column("amount", sa.Numeric(14, 2)),
        sa.Column("clio_activity_id", sa.BigInteger()),
        sa.Column("clio_matter_id", sa.BigInteger()),
        sa.Column("matter", sa.String(300)),
        sa.Column("before", sa.JSON()),
        sa.Column("after", sa.JSON()),
        sa.Column("detail", sa.Text()),
        sa.Column("run_id", sa.Integer()),
    )
    op.create_index("ix_audit_log_firm_id_id", "audit_log", ["firm_id", "id"])
    op.create_index("ix_audit_log_firm_at", "audit_log", ["firm_id", "at"])
    op.create_index("ix_audit_log_firm_purchase", "audit_log", ["firm_id", "purchase_id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"""
            CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$
            BEGIN RAISE EXCEPTION '{NO_UPDATE}'; END; $$ LANGUAGE plpgsql""")
        op.execute("""
            CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
            FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()""")
    else:
        op.execute(f"""
            CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
            BEGIN SELECT RAISE(ABORT, '{NO_UPDATE}'); END""")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only")
    op.drop_table("audit_log")
    op.drop_column("waiting_expenses", "prompt_stale")
    op.drop_column("entry_links", "superseded_at")
    op.drop_column("entry_links", "written")

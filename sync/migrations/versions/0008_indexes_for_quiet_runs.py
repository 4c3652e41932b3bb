"""Indexes the quiet run's queries need as a firm's history grows

Found by bench/quiet_bench.py: open failures and waiting expenses, the firm's latest run, and
the Slack outbox were read by full scans.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

INDEXES = [
    ("ix_runs_firm_id_id", "runs", ["firm_id", "id"]),
    ("ix_failures_firm_open", "failures", ["firm_id", "resolved_at"]),
    ("ix_waiting_expenses_firm_open", "waiting_expenses", ["firm_id", "resolved_at"]),
    ("ix_slack_outbox_unsent", "slack_outbox", ["sent_at", "next_attempt_at"]),
    ("ix_slack_outbox_firm_ref", "slack_outbox", ["firm_id", "ref_kind", "method"]),
    ("ix_slack_outbox_firm_unsent", "slack_outbox", ["firm_id", "sent_at", "next_attempt_at"]),
]


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)

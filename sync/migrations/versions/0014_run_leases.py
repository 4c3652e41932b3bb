"""Run leases: scheduled work claimed from the database, one import of a firm at a time

``run_leases`` has one row per firm. ``next_run_at`` is when its next scheduled import is due
(spread over the first interval here, so firms that share a schedule do not tick together);
``claim_token``/``claimed_by``/``claim_kind``/``lease_until`` say which process runs the firm's
import now and until when its lease holds unless renewed. Every import (scheduled, Slack,
webhook, the command line) takes the lease, so no advisory lock, and no connection held for it,
is needed any more. ``runs.quiet`` marks runs that did nothing, which housekeeping prunes.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    leases = op.create_table(
        "run_leases",
        sa.Column("firm_id", sa.Integer(), sa.ForeignKey("firms.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claim_token", sa.String(40)),
        sa.Column("claimed_by", sa.String(200)),
        sa.Column("claim_kind", sa.String(20)),
        sa.Column("claimed_at", sa.DateTime(timezone=True)),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_run_leases_next_run_at", "run_leases", ["next_run_at"])
    op.add_column("runs", sa.Column("quiet", sa.Boolean(), nullable=False,
                                    server_default=sa.false()))
    bind = op.get_bind()
    rows = bind.execute(sa.text(
        "SELECT f.id, s.schedule_minutes FROM firms f "
        "LEFT JOIN firm_settings s ON s.firm_id = f.id")).all()
    now = datetime.now(UTC)
    if rows:
        op.bulk_insert(leases, [
            {"firm_id": firm_id,
             "next_run_at": now + timedelta(minutes=random.uniform(0, max(minutes or 15, 1)))}
            for firm_id, minutes in rows])


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("quiet")
    op.drop_index("ix_run_leases_next_run_at", table_name="run_leases")
    op.drop_table("run_leases")

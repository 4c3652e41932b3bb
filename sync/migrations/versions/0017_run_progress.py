"""A run's live progress, its Slack message's channel, and a request to stop it

``runs.progress`` holds the figures a long run last published (``sync.live``), for
``/hardcost status`` and App Home on any replica; ``runs.slack_channel`` with ``slack_ts`` is
the run's one message (its progress, then its summary); ``runs.stop_requested_by`` /
``stop_requested_at`` are a person's *Stop*, which the run's own process reads between
entries.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("progress", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("slack_channel", sa.String(40), nullable=True))
        batch.add_column(sa.Column("stop_requested_by", sa.String(40), nullable=True))
        batch.add_column(sa.Column("stop_requested_at", sa.DateTime(timezone=True),
                                   nullable=True))
    op.create_index("ix_slack_outbox_firm_ref_id", "slack_outbox",
                    ["firm_id", "ref_kind", "ref_id"])


def downgrade() -> None:
    op.drop_index("ix_slack_outbox_firm_ref_id", table_name="slack_outbox")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("stop_requested_at")
        batch.drop_column("stop_requested_by")
        batch.drop_column("slack_channel")
        batch.drop_column("progress")

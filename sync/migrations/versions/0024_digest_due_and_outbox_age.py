"""The digest job and the outbox pruning read what is due, by index

``firm_settings.digest_due_at``: when the daily digest job next looks at a firm in digest mode
(its next digest hour, in UTC), with an index on (``prompts``, ``digest_due_at``): the job,
every minute on every replica, reads only the firms whose digest time has come (or is not
known yet: None, as for every digest firm after this migration, looked at once by the next
tick) instead of every firm's settings. ``ix_slack_outbox_created_at``: the hourly pruning
finds the outbox rows older than the retention by index instead of scanning the table.

Revision ID: 0024
Revises: 0023
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("firm_settings", sa.Column("digest_due_at", sa.DateTime(timezone=True)))
    op.create_index("ix_firm_settings_digest_due", "firm_settings",
                    ["prompts", "digest_due_at"])
    op.create_index("ix_slack_outbox_created_at", "slack_outbox", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_slack_outbox_created_at", table_name="slack_outbox")
    op.drop_index("ix_firm_settings_digest_due", table_name="firm_settings")
    with op.batch_alter_table("firm_settings") as batch:
        batch.drop_column("digest_due_at")

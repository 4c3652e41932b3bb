"""An index for the webhook queue's depth (``/metrics`` counts unprocessed events each scrape)

Processed webhook events stay in the table; without this index each scrape read all of them.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_webhook_events_unprocessed", "webhook_events", ["processed_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_events_unprocessed", table_name="webhook_events")

"""The monthly report job reads what is due, by index

``firm_settings.report_due_at``: when the monthly report job next looks at a firm with
``report monthly`` (its next report time, in UTC: the first working day's digest hour, or when
a claim of a report not posted lapses), with an index on (``report``, ``report_due_at``): the
job, every minute on every replica, reads only the firms whose time has come (or is not known
yet: None, as for every firm after this migration, looked at once by the next tick) instead of
every monthly firm's settings.

Revision ID: 0026
Revises: 0025
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("firm_settings", sa.Column("report_due_at", sa.DateTime(timezone=True)))
    op.create_index("ix_firm_settings_report_due", "firm_settings",
                    ["report", "report_due_at"])


def downgrade() -> None:
    op.drop_index("ix_firm_settings_report_due", table_name="firm_settings")
    with op.batch_alter_table("firm_settings") as batch:
        batch.drop_column("report_due_at")

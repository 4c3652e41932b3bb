"""The monthly hard-cost report: whether a firm gets it, and which month's is claimed

``firm_settings.report`` (``monthly`` | ``off``, default ``monthly``) is ``/hardcost set
report``. ``report_month`` (``YYYY-MM``) is the latest month whose automatic report a process
claimed, with ``report_claimed_at`` while it is being made (NULL once posted): a claim is a
compare-and-set on these, so each month's report is posted once per firm across restarts and
replicas, and a claim whose process died is taken over after a while (bot/month_report.py).

Revision ID: 0023
Revises: 0022
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("firm_settings", sa.Column("report", sa.String(8), nullable=False,
                                             server_default="monthly"))
    op.add_column("firm_settings", sa.Column("report_month", sa.String(7)))
    op.add_column("firm_settings", sa.Column("report_claimed_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("firm_settings", "report_claimed_at")
    op.drop_column("firm_settings", "report_month")
    op.drop_column("firm_settings", "report")

"""Indexes for a quiet run's look-ups of pending and superseded entry links

A quiet run asks for the firm's ``pending`` links (writes a stopped run left) and its
superseded links not yet removed. With only the unique key (firm, realm, purchase, …) each
question read every link of the firm; these indexes make it read only those links.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_entry_links_firm_state", "entry_links", ["firm_id", "state"])
    op.create_index("ix_entry_links_firm_superseded", "entry_links",
                    ["firm_id", "superseded_at"])


def downgrade() -> None:
    op.drop_index("ix_entry_links_firm_superseded", table_name="entry_links")
    op.drop_index("ix_entry_links_firm_state", table_name="entry_links")

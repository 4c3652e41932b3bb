"""One active matter rule per client and payee (and account); what a grouped message showed

``matter_rules`` gets two partial unique indexes (active rules without an account, and with
one), so that clicks at the same moment make one rule. Active rules that already repeat
another (made by such clicks) are removed first, by ``hardcost``, keeping the newest: the one
runs applied. ``prompt_groups.shown`` keeps the waiting expenses a grouped message or digest
menu showed: its answer applies to those only.

Revision ID: 0020_rules_unique_group_shown
Revises: 0019
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

ACTIVE_ANY_ACCOUNT = "removed_at IS NULL AND account_id IS NULL"
ACTIVE_ONE_ACCOUNT = "removed_at IS NULL AND account_id IS NOT NULL"


def upgrade() -> None:
    rules = sa.table("matter_rules", sa.column("id", sa.Integer()),
                     sa.column("firm_id", sa.Integer()), sa.column("contact_id", sa.BigInteger()),
                     sa.column("payee_id", sa.String()), sa.column("account_id", sa.String()),
                     sa.column("removed_at", sa.DateTime(timezone=True)),
                     sa.column("removed_by", sa.String()))
    newer = rules.alias("newer")
    repeated = sa.exists().where(
        newer.c.firm_id == rules.c.firm_id, newer.c.contact_id == rules.c.contact_id,
        newer.c.payee_id == rules.c.payee_id, newer.c.removed_at.is_(None),
        newer.c.id > rules.c.id,
        sa.or_(newer.c.account_id == rules.c.account_id,
               sa.and_(newer.c.account_id.is_(None), rules.c.account_id.is_(None))))
    op.execute(rules.update().where(rules.c.removed_at.is_(None), repeated)
               .values(removed_at=datetime.now(UTC), removed_by="hardcost"))
    op.create_index("uq_matter_rules_active_any_account", "matter_rules",
                    ["firm_id", "contact_id", "payee_id"], unique=True,
                    postgresql_where=sa.text(ACTIVE_ANY_ACCOUNT),
                    sqlite_where=sa.text(ACTIVE_ANY_ACCOUNT))
    op.create_index("uq_matter_rules_active_account", "matter_rules",
                    ["firm_id", "contact_id", "payee_id", "account_id"], unique=True,
                    postgresql_where=sa.text(ACTIVE_ONE_ACCOUNT),
                    sqlite_where=sa.text(ACTIVE_ONE_ACCOUNT))
    op.add_column("prompt_groups", sa.Column("shown", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("prompt_groups", "shown")
    op.drop_index("uq_matter_rules_active_account", table_name="matter_rules")
    op.drop_index("uq_matter_rules_active_any_account", table_name="matter_rules")

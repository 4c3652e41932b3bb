"""Which start of which process holds a lease; lapsed leases found without a scan

``run_leases.holder_start`` says which start of a process holds the lease (a number made when
the process started) and in which process space of which machine its pid counts: a process
restarted on the same host sees at once that its predecessor's leases are dead (its pid is gone,
or it is its own pid of an earlier start, as pid 1 in a container), and takes them over. The
index on ``lease_until`` lets the scheduler find the leases of a replica that died for good.

Revision ID: 0021_lease_holder_start
Revises: 0020
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("run_leases", sa.Column("holder_start", sa.String(120)))
    op.create_index("ix_run_leases_lease_until", "run_leases", ["lease_until"])


def downgrade() -> None:
    op.drop_index("ix_run_leases_lease_until", table_name="run_leases")
    op.drop_column("run_leases", "holder_start")

"""encrypt stored tokens

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 10:00:00.000000

Data only: ``connections.access_token`` and ``refresh_token`` stay Text and now hold Fernet
ciphertext (``HARDCOST_SECRET_KEY``). Upgrade encrypts plaintext values in place with
the newest key; downgrade decrypts them. Values already in the target form are left alone, so
either direction can be re-run.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

from hardcost.sync.crypto import KeyRing, SecretDecryptError, keyring_for, looks_encrypted

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

COLUMNS = ("access_token", "refresh_token")

connections = sa.table(
    "connections",
    sa.column("id", sa.Integer()),
    *(sa.column(name, sa.Text()) for name in COLUMNS),
)


def _encrypt(ring: KeyRing, value: str) -> str | None:
    return None if ring.can_decrypt(value) else ring.encrypt(value)


def _decrypt(ring: KeyRing, value: str) -> str | None:
    if ring.can_decrypt(value):
        return ring.decrypt(value)
    if looks_encrypted(value):
        raise SecretDecryptError(f"connections: a stored token cannot be decrypted with the "
                                 f"keys of {ring.source}; nothing was changed.")
    return None  # plaintext already


def _convert(convert: Callable[[KeyRing, str], str | None]) -> None:
    if op.get_context().as_sql:
        raise RuntimeError("0002 converts stored tokens and needs a live database "
                           "(offline --sql mode cannot do it).")
    bind = op.get_bind()
    ring = keyring_for(bind)
    rows = bind.execute(sa.select(connections).order_by(connections.c.id)).mappings().all()
    for row in rows:
        values = {}
        for name in COLUMNS:
            if row[name] is not None:
                new = convert(ring, row[name])
                if new is not None:
                    values[name] = new
        if values:
            bind.execute(connections.update().where(connections.c.id == row["id"])
                         .values(values))


def upgrade() -> None:
    _convert(_encrypt)


def downgrade() -> None:
    _convert(_decrypt)

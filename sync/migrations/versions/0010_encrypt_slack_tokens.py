"""Slack workspaces' tokens encrypted at rest

Revision ID: 0010
Revises: 0009

Multi-workspace mode stores each workspace's bot token in slack-sdk's tables
(``slack_installations``, ``slack_bots``), which held them in clear while the QuickBooks and
Clio tokens were encrypted. The token columns (and the incoming-webhook URL, which can post to
a channel) become Text holding Fernet ciphertext of the same key ring; upgrade encrypts what is
stored, downgrade decrypts it. Values already in the target form are left alone.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

from hardcost.sync.crypto import KeyRing, SecretDecryptError, keyring_for, looks_encrypted

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

COLUMNS = {
    "slack_installations": ("bot_token", "bot_refresh_token", "user_token",
                            "user_refresh_token", "incoming_webhook_url"),
    "slack_bots": ("bot_token", "bot_refresh_token"),
}


def _table(name: str) -> sa.TableClause:
    return sa.table(name, sa.column("id", sa.Integer()),
                    *(sa.column(column, sa.Text()) for column in COLUMNS[name]))


def _encrypt(ring: KeyRing, value: str) -> str | None:
    return None if ring.can_decrypt(value) else ring.encrypt(value)


def _decrypt(ring: KeyRing, value: str) -> str | None:
    if ring.can_decrypt(value):
        return ring.decrypt(value)
    if looks_encrypted(value):
        raise SecretDecryptError(f"a stored Slack token cannot be decrypted with the keys of "
                                 f"{ring.source}; nothing was changed.")
    return None  # plaintext already


def _convert(convert: Callable[[KeyRing, str], str | None]) -> None:
    if op.get_context().as_sql:
        raise RuntimeError("0010 converts stored tokens and needs a live database "
                           "(offline --sql mode cannot do it).")
    bind = op.get_bind()
    ring = keyring_for(bind)
    for name in COLUMNS:
        table = _table(name)
        for row in bind.execute(sa.select(table).order_by(table.c.id)).mappings().all():
            values = {column: new for column in COLUMNS[name]
                      if row[column] is not None
                      and (new := convert(ring, row[column])) is not None}
            if values:
                bind.execute(table.update().where(table.c.id == row["id"]).values(values))


def _retype(type_: sa.types.TypeEngine[str]) -> None:
    for name, columns in COLUMNS.items():
        with op.batch_alter_table(name) as batch:
            for column in columns:
                batch.alter_column(column, type_=type_, existing_nullable=True)


def upgrade() -> None:
    _retype(sa.Text())  # ciphertext is longer than the 200 characters of a token
    _convert(_encrypt)


def downgrade() -> None:
    _convert(_decrypt)
    _retype(sa.String(200))

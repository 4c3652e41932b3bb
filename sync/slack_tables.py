"""The tables of slack-sdk's SQLAlchemy installation and OAuth-state stores (multi-workspace).

Built with the stores' own table builders, so the columns are exactly the ones the stores read
and write, except that the tokens (and the incoming-webhook URL, which can post to a channel)
are ``EncryptedText``: stored with the same key ring as the QuickBooks and Clio tokens, and
re-encrypted by ``hardcost keys rotate``. Migrations 0005 and 0010 create them (the stores'
``create_tables()`` is never called), and ``tests/test_schema.py`` compares this metadata with
the migrations alongside the models.
"""

from __future__ import annotations

from slack_sdk.oauth.installation_store.sqlalchemy import SQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.sqlalchemy import SQLAlchemyOAuthStateStore
from sqlalchemy import MetaData, Table

from hardcost.sync.crypto import EncryptedText

INSTALLATIONS_TABLE = SQLAlchemyInstallationStore.default_installations_table_name
BOTS_TABLE = SQLAlchemyInstallationStore.default_bots_table_name
OAUTH_STATES_TABLE = SQLAlchemyOAuthStateStore.default_table_name

SECRET_COLUMNS = frozenset({"bot_token", "bot_refresh_token", "user_token",
                            "user_refresh_token", "incoming_webhook_url"})


def _encrypted(table: Table) -> Table:
    for column in table.columns:
        if column.name in SECRET_COLUMNS:
            column.type = EncryptedText()
    return table


class EncryptedInstallationStore(SQLAlchemyInstallationStore):
    """slack-sdk's installation store, with the workspaces' tokens encrypted at rest. Its
    queries never compare tokens, so encrypted columns change nothing else."""

    @classmethod
    def build_installations_table(cls, metadata: MetaData, table_name: str) -> Table:
        return _encrypted(super().build_installations_table(metadata, table_name))

    @classmethod
    def build_bots_table(cls, metadata: MetaData, table_name: str) -> Table:
        return _encrypted(super().build_bots_table(metadata, table_name))


SLACK_METADATA = MetaData()
EncryptedInstallationStore.build_installations_table(SLACK_METADATA, INSTALLATIONS_TABLE)
EncryptedInstallationStore.build_bots_table(SLACK_METADATA, BOTS_TABLE)
SQLAlchemyOAuthStateStore.build_oauth_states_table(SLACK_METADATA, OAUTH_STATES_TABLE)

__all__ = ["BOTS_TABLE", "INSTALLATIONS_TABLE", "OAUTH_STATES_TABLE", "SLACK_METADATA",
           "EncryptedInstallationStore"]

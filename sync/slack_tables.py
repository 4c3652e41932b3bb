"""The tables of slack-sdk's SQLAlchemy installation and OAuth-state stores (multi-workspace).

Built with the stores' own table builders, so the columns are exactly the ones the stores read
and write. Migration 0005 creates them (the stores' ``create_tables()`` is never called), and
``tests/test_schema.py`` compares this metadata with the migrations alongside the models.
"""

from __future__ import annotations

from slack_sdk.oauth.installation_store.sqlalchemy import SQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.sqlalchemy import SQLAlchemyOAuthStateStore
from sqlalchemy import MetaData

INSTALLATIONS_TABLE = SQLAlchemyInstallationStore.default_installations_table_name
BOTS_TABLE = SQLAlchemyInstallationStore.default_bots_table_name
OAUTH_STATES_TABLE = SQLAlchemyOAuthStateStore.default_table_name

SLACK_METADATA = MetaData()
SQLAlchemyInstallationStore.build_installations_table(SLACK_METADATA, INSTALLATIONS_TABLE)
SQLAlchemyInstallationStore.build_bots_table(SLACK_METADATA, BOTS_TABLE)
SQLAlchemyOAuthStateStore.build_oauth_states_table(SLACK_METADATA, OAUTH_STATES_TABLE)

__all__ = ["BOTS_TABLE", "INSTALLATIONS_TABLE", "OAUTH_STATES_TABLE", "SLACK_METADATA"]

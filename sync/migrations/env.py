"""Alembic environment: runs the migrations against the URL the caller configured."""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any, Literal

from alembic import context

from hardcost.sync.config import Settings
from hardcost.sync.crypto import EncryptedText
from hardcost.sync.engine import make_engine
from hardcost.sync.slack_tables import SLACK_METADATA
from hardcost.sync.store import Base, UTCDateTime

config = context.config
if config.config_file_name is not None:  # the alembic command with alembic.ini: its logging
    fileConfig(config.config_file_name, disable_existing_loggers=False)
# The models, and the tables of slack-sdk's installation/state stores (multi-workspace mode).
target_metadata = [Base.metadata, SLACK_METADATA]


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Migrations spell columns in plain SQLAlchemy types, independent of today's models."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if type_ == "type" and isinstance(obj, EncryptedText):
        return "sa.Text()"  # ciphertext; converting existing values is a data migration
    return False


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=True, render_item=render_item)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url())
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata,
                          render_as_batch=True, render_item=render_item)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


def _url() -> str:
    """The URL the caller set (``hardcost db upgrade``), else ``DATABASE_URL`` (alembic.ini)."""
    return config.get_main_option("sqlalchemy.url") or Settings().resolved_database_url()


if context.is_offline_mode():
    context.configure(url=_url(),
                      target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()

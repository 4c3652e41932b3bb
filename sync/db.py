"""Schema migrations (Alembic) and database access for the CLI and server.

The Alembic configuration is built here, in code, from the migrations installed with the
package (``hardcost.sync.migrations``): ``hardcost db upgrade|current|history|downgrade`` work
from an installed wheel, without the checkout's ``alembic.ini``."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).with_name("migrations")

MIGRATION_LOCK_KEY = 0x68617264636F7374  # "hardcost" in ASCII: a fixed bigint
"""The PostgreSQL advisory lock held while the schema changes (``pg_advisory_xact_lock``):
replicas that start at once run ``hardcost db upgrade`` one after the other; the first
migrates, the others then find the schema at head and do nothing."""


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str | None:
    """The newest revision the installed migrations know."""
    return ScriptDirectory.from_config(alembic_config("")).get_current_head()


@contextmanager
def _migrating(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction for a schema change; on PostgreSQL the transaction first
    takes the migration lock and holds it until it commits or rolls back.

    A transaction-level lock (``pg_advisory_xact_lock``) rather than a session-level one: it
    cannot outlive the migration, and it works through PgBouncer in transaction mode, where a
    session lock could be taken on one server connection and "released" on another. A process
    that waited reads the schema afresh once it has the lock (each statement of a READ
    COMMITTED transaction sees what was committed before it began), so it finds the first
    process's migrations done and does nothing."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": MIGRATION_LOCK_KEY})
        yield connection


def upgrade(engine: Engine) -> None:
    """Bring the database at ``engine`` to the newest schema."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with _migrating(engine) as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema back to ``revision`` (dropping what later migrations added).
    ``alembic.util.CommandError`` when the revision is unknown or not below the current."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with _migrating(engine) as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


@dataclass(frozen=True)
class SchemaState:
    current: str | None  # None: no schema (never upgraded)
    head: str | None

    @property
    def at_head(self) -> bool:
        return self.current is not None and self.current == self.head


def schema_state(engine: Engine) -> SchemaState:
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return SchemaState(current=current, head=head_revision())


def history() -> str:
    """Every revision, newest first, one line each (Alembic's ``history``)."""
    config = alembic_config("")
    out = io.StringIO()
    config.stdout = out
    command.history(config)
    return out.getvalue()

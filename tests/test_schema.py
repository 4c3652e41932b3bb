"""The Alembic migrations build exactly the schema the models describe, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Engine

from hardcost.sync.slack_tables import SLACK_METADATA
from hardcost.sync.store import Base


def test_migrations_match_the_models(db_engine: Engine) -> None:
    # The models, plus the tables of slack-sdk's installation and OAuth-state stores (multi-
    # workspace mode), which migration 0005 creates with the stores' own columns.
    with db_engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        differences = compare_metadata(context, [Base.metadata, SLACK_METADATA])

    assert differences == []


def test_every_firm_table_carries_the_firm_id() -> None:
    global_tables = {"firms"}
    for table in Base.metadata.sorted_tables:
        if table.name in global_tables:
            continue
        assert "firm_id" in table.columns, table.name

"""Replicas that start at once each run ``hardcost db upgrade`` (the unit file's
``ExecStartPre``): on PostgreSQL one migrates while the others wait for it, then find nothing
to do, instead of creating the same tables side by side and failing (issue 27).

The three processes are made to meet: the test creates Alembic's version table in a
transaction it keeps open, so whichever process gets to create it waits for the test; once all
three wait on a lock, the test rolls back and lets them go at the same moment."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from hardcost.sync.db import head_revision
from hardcost.sync.engine import make_engine
from tests.conftest import POSTGRES_URL

pytestmark = pytest.mark.postgres


@pytest.fixture
def empty_schema() -> Iterator[tuple[str, str]]:
    """(a URL whose tables go to a new, empty schema of the test database, its name)."""
    name = f"upgrade_race_{uuid.uuid4().hex[:10]}"
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {name}"))
    url = make_url(POSTGRES_URL).update_query_dict(
        {"options": f"-csearch_path={name}", "application_name": name})
    try:
        yield url.render_as_string(hide_password=False), name
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {name} CASCADE"))
        admin.dispose()


def test_three_upgrades_at_once_migrate_once_and_all_succeed(
        empty_schema: tuple[str, str]) -> None:
    url, schema = empty_schema
    env = {**os.environ, "DATABASE_URL": url}
    gate = make_engine(POSTGRES_URL)
    with gate.connect() as held:
        held.execute(text(f"CREATE TABLE {schema}.alembic_version "
                          "(version_num VARCHAR(32) NOT NULL)"))
        procs = [subprocess.Popen([sys.executable, "-m", "hardcost", "db", "upgrade"],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(3)]
        deadline = time.monotonic() + 60
        with gate.connect() as watch:
            while watch.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name "
                    "AND wait_event_type = 'Lock'"), {"name": schema}).scalar() < 3:
                watch.rollback()
                assert all(proc.poll() is None for proc in procs), \
                    [proc.communicate() for proc in procs]
                assert time.monotonic() < deadline, "the upgrades never all waited"
                time.sleep(0.05)
        held.rollback()  # all three go now
    gate.dispose()
    outputs = [proc.communicate(timeout=120) for proc in procs]

    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out + err
        assert "Database is up to date" in out
        assert "Error" not in err and "Traceback" not in err, err
    engine = make_engine(url)
    with engine.connect() as conn:
        versions = conn.execute(text(f"SELECT version_num FROM {schema}.alembic_version")).all()
        firms = conn.execute(text(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema = :schema AND table_name = 'firms'"), {"schema": schema}).scalar()
    engine.dispose()
    assert versions == [(head_revision(),)]
    assert firms == 1

"""Shared fixtures: a migrated database per test (SQLite file or PostgreSQL), sandboxes.

The database is chosen by ``HARDCOST_TEST_DATABASE_URL``: unset → a fresh SQLite file per
test; a ``postgresql://`` URL → that server, schema migrated once, tables emptied per test.
``scripts/test.sh`` runs the suite once each way.

Stored tokens are encrypted: a SQLite test database gets its ``hardcost.key`` beside it; for
PostgreSQL this session makes up a ``HARDCOST_SECRET_KEY`` unless one is set (child
``hardcost`` processes inherit it).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync.crypto import generate_key
from hardcost.sync.db import upgrade
from hardcost.sync.engine import make_engine, make_session_factory
from hardcost.sync.slack_tables import SLACK_METADATA
from hardcost.sync.store import Base

POSTGRES_URL = os.environ.get("HARDCOST_TEST_DATABASE_URL", "")
if POSTGRES_URL and not os.environ.get("HARDCOST_SECRET_KEY"):
    os.environ["HARDCOST_SECRET_KEY"] = generate_key()


def pytest_report_header(config: pytest.Config) -> str:
    return "database: " + ("PostgreSQL " + POSTGRES_URL.rsplit("@", 1)[-1]
                           if POSTGRES_URL else "SQLite files")


@pytest.fixture(scope="session")
def _migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if POSTGRES_URL:
        engine = make_engine(POSTGRES_URL)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        upgrade(engine)
        engine.dispose()
        yield POSTGRES_URL
    else:
        path = tmp_path_factory.mktemp("template") / "template.sqlite"
        engine = make_engine(f"sqlite:///{path}")
        upgrade(engine)
        engine.dispose()
        yield str(path)


@pytest.fixture
def database_url(_migrated_template: str, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty, fully migrated database for this test alone."""
    if POSTGRES_URL:
        engine = make_engine(POSTGRES_URL)
        tables = ", ".join(t.name for t in [*Base.metadata.sorted_tables,
                                            *SLACK_METADATA.sorted_tables])
        for attempt in range(1, 6):
            try:
                with engine.begin() as conn:
                    conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
                break
            except OperationalError as exc:
                # A background thread of the test before (a server's last write) may still
                # hold a table: PostgreSQL picks the TRUNCATE as a deadlock's victim. Again.
                if getattr(exc.orig, "sqlstate", None) != "40P01" or attempt == 5:
                    raise
                time.sleep(0.2 * attempt)
        engine.dispose()
        yield POSTGRES_URL
    else:
        path = tmp_path / "hardcost.sqlite"
        shutil.copyfile(_migrated_template, path)
        yield f"sqlite:///{path}"


@pytest.fixture
def db_engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(db_engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(db_engine)


@pytest.fixture
def world() -> Iterator[Any]:
    """The sandbox QuickBooks and Clio, serving on loopback for this test."""
    from hardcost.sandbox.world import SandboxWorld

    with SandboxWorld.start() as started:
        yield started


@pytest.fixture
def firm(world: Any, sessions: sessionmaker[Session]) -> Any:
    """A firm connected to fresh sandbox companies (see tests/firmkit.py)."""
    from tests.firmkit import make_firm

    return make_firm(world, sessions)


@pytest.fixture
def serve_slack() -> Iterator[tuple[str, str]]:
    """A sandbox Slack with one workspace for a ``hardcost serve`` process (tests.crashkit):
    (the workspace's bot token, the sandbox Slack's URL)."""
    from hardcost.sandbox.server import serve_in_thread
    from hardcost.sandbox.slack import SlackSandbox

    sandbox = SlackSandbox()
    server = serve_in_thread(sandbox)
    workspace = sandbox.add_workspace("T0001")
    yield workspace.bot_token, server.url
    server.stop()


@pytest.fixture
def transport(request: pytest.FixtureRequest) -> str:
    """How Slack reaches the app in ``rig``: ``http``, or ``socket`` (Socket Mode) as well for
    tests marked ``both_transports``."""
    return str(getattr(request, "param", "http"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("both_transports") is not None and \
            "rig" in metafunc.fixturenames:
        metafunc.parametrize("transport", ["http", "socket"], indirect=True)


@pytest.fixture
def rig(firm: Any, transport: str) -> Iterator[Any]:
    """The real Slack app for ``firm``, with a sandbox Slack (sandbox/slack_rig.py): over HTTP,
    or over Socket Mode too where a test is marked ``both_transports``."""
    from hardcost.sandbox.server import serve_in_thread
    from hardcost.sandbox.slack import SlackSandbox
    from hardcost.sandbox.slack_rig import make_rig

    slack = SlackSandbox(clock=firm.world.clock)
    server = serve_in_thread(slack)
    slack.base_url = server.url
    started = make_rig(firm, slack, server, transport)
    yield started
    started.stop()
    server.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[Any]) -> None:
    if POSTGRES_URL:
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL: set HARDCOST_TEST_DATABASE_URL "
                            "(scripts/test.sh does)")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)

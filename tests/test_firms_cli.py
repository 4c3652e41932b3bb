"""``hardcost firms``: every firm at a glance for the IT person, and an exit status a monitor
can use (issue 27)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from hardcost import cli
from hardcost.sync.config import get_settings
from hardcost.sync.store import Failure, Run, utcnow
from hardcost.sync.tokens import mark_broken
from tests.firmkit import Firm, make_firm


@pytest.fixture
def run_cli(database_url: str, monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]) -> Iterator[object]:
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()

    def run(*args: str) -> tuple[int, str]:
        status = cli.main(["firms", *args])
        return status, capsys.readouterr().out

    yield run
    get_settings.cache_clear()


@pytest.fixture
def healthy(firm: Firm) -> Firm:
    """A firm whose last run went well and left one expense waiting for a matter choice."""
    firm.update_settings(slack_channel_id="C0COSTS")
    firm.client("Jane Smith", ["Smith estate", "Smith divorce"])
    firm.expense(("120.00", "Jane Smith"))
    firm.run()
    return firm


def _troubled(world: object, sessions: sessionmaker[Session]) -> Firm:
    """A second firm: Clio refused its tokens, its last run failed, one failure is open."""
    other = make_firm(world, sessions, name="Broken & Sons")  # type: ignore[arg-type]
    mark_broken(sessions, other.id, "clio", "invalid_grant", utcnow())
    with sessions() as session:
        session.add(Run(firm_id=other.id, trigger="schedule", status="failed",
                        started_at=utcnow() - timedelta(minutes=3), finished_at=utcnow(),
                        error="Clio refused the connection: reconnect Clio"))
        session.add(Failure(firm_id=other.id, realm_id=other.qbo.realm_id, purchase_id="77",
                            kind="entry", code="clio_400", message="Clio refused the entry"))
        session.commit()
    return other


def test_healthy_firms_list_and_exit_zero(healthy: Firm, run_cli: object) -> None:
    status, out = run_cli()  # type: ignore[operator]

    header, row = out.splitlines()
    assert status == 0
    assert header.split() == ["id", "name", "workspace", "channel", "quickbooks", "clio",
                              "last", "run", "next", "run", "waiting", "failures"]
    cells = row.split()
    assert cells[0] == str(healthy.id) and "Sandbox Law" in row
    assert "C0COSTS" in cells and cells.count("connected") == 2
    assert " ok " in row and row.split()[-2:] == ["1", "0"]  # one waiting, no failure
    assert "UTC" in row and "never" not in row


def test_a_refused_connection_or_a_failed_run_is_shown_and_exits_one(
        healthy: Firm, run_cli: object) -> None:
    other = _troubled(healthy.world, healthy.sessions)

    status, out = run_cli()  # type: ignore[operator]
    as_json_status, as_json = run_cli("--json")  # type: ignore[operator]

    assert status == 1 and as_json_status == 1
    lines = out.splitlines()
    broken = next(line for line in lines if line.startswith(f"{other.id} "))
    assert "Broken & Sons" in broken and "connected broken" in " ".join(broken.split())
    assert "failed" in broken and "not scheduled" in broken  # Clio refused: no schedule
    assert broken.split()[-2:] == ["0", "1"]
    assert f"Firm {other.id}: the Clio connection was refused (invalid_grant): reconnect it " \
        "in Slack (/hardcost connect clio)" in lines
    assert f"Firm {other.id}: the last run failed: Clio refused the connection: reconnect " \
        "Clio" in lines
    assert not any(line.startswith(f"Firm {healthy.id}:") for line in lines)

    firms = {firm["id"]: firm for firm in json.loads(as_json)}
    assert firms[healthy.id]["clio"]["state"] == "connected"
    assert firms[healthy.id]["waiting"] == 1 and firms[healthy.id]["problems"] == []
    assert firms[other.id]["clio"]["state"] == "broken"
    assert firms[other.id]["clio"]["reason"] == "invalid_grant"
    assert firms[other.id]["quickbooks"]["state"] == "connected"
    assert firms[other.id]["last_run"]["status"] == "failed"
    assert firms[other.id]["next_run"] == "not scheduled"
    assert firms[other.id]["open_failures"] == 1


def test_no_firm_yet_says_so(run_cli: object) -> None:
    status, out = run_cli()  # type: ignore[operator]
    assert status == 0 and out.startswith("No firm yet")

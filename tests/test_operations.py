"""What an operator relies on: logs with timestamps and firm/run ids (text or JSON) and no
token in them, ``/metrics`` during a run, ``hardcost --version``, progress of ``hardcost sync``,
and the standard Alembic commands through ``alembic.ini``."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from slack_sdk.signature import SignatureVerifier
from sqlalchemy import select

from hardcost import __version__
from hardcost.progress import ProgressDisplay
from hardcost.sandbox.faults import Fault
from hardcost.sandbox.slack_rig import SlackRig, wait_for
from hardcost.sync.store import Connection, Run
from hardcost.sync.summary import RunProgress
from tests.firmkit import Firm, env_for, free_port, serve_env, start_serve

ROOT = Path(__file__).resolve().parents[1]


def hardcost(*args: str, env: dict[str, str] | None = None,
             cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hardcost", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


# -- version, demo ----------------------------------------------------------------------------

def test_version_names_the_installed_release() -> None:
    result = hardcost("--version")

    assert result.returncode == 0
    assert result.stdout.strip() == f"hardcost {__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", __version__), __version__


def test_demo_speaks_to_users_and_reports_request_checks_only_with_v() -> None:
    plain = hardcost("demo")
    verbose = hardcost("-v", "demo")

    assert plain.returncode == 0 and verbose.returncode == 0, plain.stderr + verbose.stderr
    assert "OpenAPI" not in plain.stdout and "validation" not in plain.stdout
    assert plain.stdout.rstrip().endswith("in your own Slack workspace (docs/setup.md).")
    assert "Sandbox Clio: " in verbose.stdout and "OpenAPI document" in verbose.stdout


# -- logs -------------------------------------------------------------------------------------

def _serve_one_run(firm: Firm, database_url: str, **env_extra: str) -> tuple[str, str, int]:
    """``hardcost serve`` imports one expense on ``/hardcost run``; its (stdout, stderr) and
    the run's id."""
    from hardcost.sandbox.server import serve_in_thread
    from hardcost.sandbox.slack import SlackSandbox

    firm.client("Jane Smith", ["Smith estate"])
    firm.expense(("125.00", "Jane Smith", "Filing fee"))
    slack = SlackSandbox()
    slack_server = serve_in_thread(slack)
    workspace = slack.add_workspace("T0001")
    with firm.sessions() as session:  # the firm answers to this workspace's commands
        from hardcost.sync.store import Firm as FirmRow

        row = session.get(FirmRow, firm.id)
        assert row is not None
        row.slack_team_id = "T0001"
        session.commit()
    port = free_port()
    env = {**serve_env(firm.world, database_url, bot_token=workspace.bot_token,
                       slack_url=slack_server.url, port=port, signing_secret="s3cret-signing"),
           **env_extra}
    proc = start_serve(env, port)
    base = f"http://127.0.0.1:{port}"
    try:
        body = urlencode({"team_id": "T0001", "user_id": "U1", "command": "/hardcost",
                          "text": "run", "channel_id": "C1",
                          "response_url": f"{slack_server.url}/respond"})
        ts = str(int(time.time()))
        signature = SignatureVerifier("s3cret-signing").generate_signature(
            timestamp=ts, body=body)
        answer = requests.post(f"{base}/slack/events", data=body, timeout=10, headers={
            "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded"})
        assert answer.status_code == 200, answer.text
        wait_for(lambda: firm.entries() or None, what="the entry in Clio", timeout=30)
        run_id = wait_for(lambda: _finished_run(firm), what="the run's record")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        slack_server.stop()
    assert proc.returncode == 0, err
    return out, err, run_id


def _finished_run(firm: Firm) -> int | None:
    with firm.sessions() as session:
        return session.scalars(select(Run.id).where(
            Run.firm_id == firm.id, Run.finished_at.is_not(None))).first()


def _secrets(firm: Firm, *extra: str) -> list[str]:
    with firm.sessions() as session:
        rows = list(session.scalars(select(Connection).where(Connection.firm_id == firm.id)))
    found = [*extra]
    for row in rows:
        found += [row.access_token, *([row.refresh_token] if row.refresh_token else [])]
    assert len(found) >= len(extra) + 4  # QuickBooks' and Clio's access and refresh tokens
    return [s for s in found if s]


def test_serve_logs_a_run_with_timestamps_and_firm_and_run_ids(
        firm: Firm, database_url: str) -> None:
    _, err, run_id = _serve_one_run(firm, database_url)

    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    ids = rf"\[firm {firm.id} run {run_id}\]"
    assert re.search(rf"^{stamp} INFO hardcost\.sync\.importer {ids} run {run_id} ok in ",
                     err, re.M), err
    assert "will be unused" not in err  # Bolt's start-up warning about our own client
    # INFO by default for serve: its own start-up line is there too.
    assert re.search(rf"^{stamp} INFO hardcost\.bot\.server serving http://", err, re.M), err


def test_json_logs_are_one_object_per_line_and_carry_no_token(
        firm: Firm, database_url: str) -> None:
    _, err, run_id = _serve_one_run(firm, database_url, HARDCOST_LOG_FORMAT="json",
                                    HARDCOST_LOG_LEVEL="DEBUG")

    records = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert records and all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    of_the_run = [r for r in records if r.get("run_id") == run_id]
    assert of_the_run and all(r["firm_id"] == firm.id for r in of_the_run)
    assert any(r["message"].startswith(f"run {run_id} started") for r in of_the_run)
    assert any(r["message"].startswith(f"run {run_id} ok") for r in of_the_run)
    assert any(r["level"] == "DEBUG" for r in records)  # the level asked for was applied
    for secret in _secrets(firm, "s3cret-signing"):
        assert secret not in err


def test_a_bad_log_setting_is_named_with_the_choices() -> None:
    result = hardcost("--help", env={**os.environ, "HARDCOST_LOG_FORMAT": "yaml"})
    assert result.returncode == 0  # --help and --version answer before logging starts

    bad = hardcost("db", "upgrade", env={**os.environ, "HARDCOST_LOG_FORMAT": "yaml"})
    assert bad.returncode == 2
    assert "HARDCOST_LOG_FORMAT is 'yaml': use text or json." in bad.stderr
    assert "Traceback" not in bad.stderr


# -- metrics ----------------------------------------------------------------------------------

def _scrape(rig: SlackRig) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = requests.get(f"{rig.web.url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples}


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_answer_during_a_run_and_count_what_it_did(rig: SlackRig) -> None:
    rig.firm.client("Jane Smith", ["Smith estate"])
    rig.firm.expense(("435.00", "Jane Smith", "Filing fee"))
    rig.firm.world.clio.faults.add(Fault(path=r"/activities\.json$", method="POST",
                                         passthrough=True, delay=1.5))
    before = _scrape(rig)

    assert rig.command("run").status_code == 200
    wait_for(lambda: rig.firm.world.clio.faults.pending() == 0 or None,
             what="the run's slow POST to Clio")
    during = _scrape(rig)  # the POST is being answered slowly: the run is under way
    wait_for(lambda: rig.firm.entries() or None, what="the entry")
    wait_for(lambda: _value(_scrape(rig), "hardcost_runs_total", trigger="slack", outcome="ok")
             > _value(before, "hardcost_runs_total", trigger="slack", outcome="ok") or None,
             what="the run counted")
    after = _scrape(rig)

    assert _value(during, "hardcost_runs_total", trigger="slack", outcome="ok") == \
        _value(before, "hardcost_runs_total", trigger="slack", outcome="ok")
    for name, labels, grew_by in [
            ("hardcost_runs_total", {"trigger": "slack", "outcome": "ok"}, 1),
            ("hardcost_run_duration_seconds_count", {"trigger": "slack"}, 1),
            ("hardcost_entries_total", {"action": "created"}, 1)]:
        assert _value(after, name, **labels) - _value(before, name, **labels) == grew_by, name
    for service in ("quickbooks", "clio"):
        assert _value(after, "hardcost_api_requests_total", service=service) > \
            _value(before, "hardcost_api_requests_total", service=service)
    names = {name for name, _ in after}
    assert {"hardcost_failures_total", "hardcost_api_rate_limited_total",
            "hardcost_outbox_depth", "hardcost_outbox_oldest_age_seconds",
            "hardcost_webhook_queue_depth", "hardcost_scheduler_lateness_seconds_count",
            "hardcost_entries_total"} <= names
    for kind in ("config", "transient", "data"):
        assert ("hardcost_failures_total", (("kind", kind),)) in after
    assert _value(after, "hardcost_webhook_queue_depth") == 0


def test_outbox_depth_and_age_come_from_the_database(rig: SlackRig) -> None:
    from datetime import timedelta

    from hardcost.sync.store import SlackOutbox

    with rig.firm.sessions() as session:
        session.add(SlackOutbox(firm_id=rig.firm.id, method="chat.postMessage",
                                payload={"channel": "C1", "text": "waiting"}, attempts=0,
                                created_at=rig.ctx.clock() - timedelta(minutes=10),
                                next_attempt_at=rig.ctx.clock() + timedelta(hours=1)))
        session.commit()

    samples = _scrape(rig)

    assert _value(samples, "hardcost_outbox_depth") >= 1
    assert _value(samples, "hardcost_outbox_oldest_age_seconds") >= 590


# -- progress ---------------------------------------------------------------------------------

def test_sync_shows_progress_as_plain_lines_when_not_on_a_terminal(
        firm: Firm, database_url: str) -> None:
    firm.client("Jane Smith", ["Smith estate"])
    for n in range(3):
        firm.expense((f"{n + 10}.00", "Jane Smith"))

    result = hardcost("sync", "--firm", str(firm.id), env=env_for(firm.world, database_url))

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"Firm {firm.id}: reading: 3 purchases read, 0 written, 0 waiting, 0 failed" in lines
    assert any(re.fullmatch(rf"Firm {firm.id}: writing \([123] of 3 entries\): 3 purchases "
                            r"read, [123] written, 0 waiting, 0 failed", line) for line in lines)
    assert "\r" not in result.stdout  # no bar drawn into a file
    summary = next(i for i, line in enumerate(lines) if line.startswith(f"Firm {firm.id}: Run"))
    assert all(line.startswith(f"Firm {firm.id}: reading") or
               line.startswith(f"Firm {firm.id}: writing") for line in lines[:summary])
    assert len(firm.entries()) == 3


def test_progress_on_a_terminal_is_a_bar_that_clears_itself() -> None:
    screen = io.StringIO()
    display = ProgressDisplay("Firm 7", screen, terminal=True)

    display(RunProgress("reading", 40, 0, 0, 0, 0, 0, 0.0))
    display(RunProgress("writing", 40, 10, 4, 3, 1, 0, 12.0))
    display(RunProgress("done", 40, 10, 10, 8, 1, 1, 12.0))

    drawn = screen.getvalue()
    assert "Firm 7: reading" in drawn and "Firm 7: writing" in drawn
    assert "4/10" in drawn and "12 s waiting on rate limits" in drawn
    assert display._bar is None  # closed at the end: the summary prints on a clean line


def test_plain_progress_prints_at_most_one_line_per_stage_every_few_seconds() -> None:
    out = io.StringIO()
    now = [0.0]
    display = ProgressDisplay("Firm 1", out, terminal=False, clock=lambda: now[0])

    for handled in range(1, 6):
        display(RunProgress("writing", 5, 5, handled, handled, 0, 0, 0.0))
    now[0] = 6.0
    display(RunProgress("writing", 5, 5, 5, 5, 0, 0, 0.0))

    assert out.getvalue().splitlines() == [
        "Firm 1: writing (1 of 5 entries): 5 purchases read, 1 written, 0 waiting, 0 failed",
        "Firm 1: writing (5 of 5 entries): 5 purchases read, 5 written, 0 waiting, 0 failed"]


# -- Alembic ----------------------------------------------------------------------------------

def _alembic(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "alembic", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_alembic_ini_runs_the_standard_commands_against_database_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'alembic.sqlite'}"

    upgraded = _alembic("upgrade", "head", url=url)
    head = _alembic("current", url=url)
    drift = _alembic("check", url=url)
    down = _alembic("downgrade", "-1", url=url)
    after = _alembic("current", url=url)

    assert upgraded.returncode == 0, upgraded.stderr
    assert re.search(r"^(\d{4}) \(head\)$", head.stdout, re.M), head.stdout + head.stderr
    number = int(re.search(r"^(\d{4}) \(head\)$", head.stdout, re.M).group(1))  # type: ignore
    assert down.returncode == 0, down.stderr
    assert after.stdout.strip() == f"{number - 1:04d}"
    # The models and the migrations agree: autogenerate finds nothing to add.
    assert drift.returncode == 0, drift.stderr
    assert "No new upgrade operations detected" in drift.stdout + drift.stderr


# -- a run's record tells the truth -----------------------------------------------------------

def test_a_run_that_crashes_is_recorded_and_counted_as_such(
        firm: Firm, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever escapes a run (a full disk, a bug), its row must not say ``ok``. The failure
    is injected: what is tested is the run's record, not the cause."""
    from hardcost.sync.metrics import REGISTRY
    from hardcost.sync.placer import Placer

    firm.client("Jane Smith", ["Smith estate"])
    firm.expense(("125.00", "Jane Smith"))

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Placer, "place_all", disk_full)
    before = REGISTRY.get_sample_value(
        "hardcost_runs_total", {"trigger": "manual", "outcome": "crashed"}) or 0.0

    with pytest.raises(OSError):
        firm.engine.run()

    with firm.sessions() as session:
        run = session.scalars(select(Run).where(Run.firm_id == firm.id)).one()
    assert run.status == "failed" and run.finished_at is not None
    assert run.error is not None and "unexpected error (OSError)" in run.error
    assert REGISTRY.get_sample_value(
        "hardcost_runs_total", {"trigger": "manual", "outcome": "crashed"}) == before + 1

"""The ``hardcost`` command line as a person runs it: separate processes, real environment."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync.engine import make_engine
from tests.firmkit import Firm, env_for, free_port, serve_env, start_serve


def hardcost(*args: str, env: dict[str, str] | None = None,
             cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hardcost", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def firm(firm: Firm) -> Firm:
    """The conftest firm with one client, Jane Smith, who has one matter."""
    firm.client("Jane Smith", ["Smith estate"])
    return firm


def test_demo_runs_the_whole_flow_and_second_run_is_quiet() -> None:
    result = hardcost("demo")

    assert result.returncode == 0, result.stderr
    out = result.stdout
    # waiting 4: three matter or contact questions, and check 1044, whose line has no customer
    assert "Run 1: imported 5 ($1,197.10), waiting 4, failed 1, skipped 1" in out
    assert "Item details are not supported" in out
    # check 1042's receipt, attached in QuickBooks, on both matters its entries went to
    assert "Check 1042's receipt (clerk-receipt-1042.pdf, attached in QuickBooks) is filed" in out
    assert "“2026-10-06 Superior Court Clerk 447.50 – clerk-receipt-1042.pdf” (document #" in out
    assert "on 00002 Acme v. Beta Logistics" in out and "Receipts filed" in out
    assert "finds nothing new" in out and "Run 2: imported 0" in out
    assert "What #costs sees in Slack" in out and "Which matter is this expense for?" in out
    assert "Linked to 00004 Acme – Employment claim (Reyes) by @Sam Staff" in out
    assert "deletes the $36.20 expense for Acme Holdings in QuickBooks" in out
    assert "Run 3: imported 0" in out and "1 deleted from Clio, 0 left in Clio" in out
    assert "deleted in QuickBooks; Clio entry #15 was deleted" in out
    assert "Deleted from Clio: 1" in out  # the channel's summary
    assert "Suggested — 1 of the last 1 Speedy Couriers costs for Acme Holdings went to " \
        "00004" in out
    assert "Rule made by @Sam Staff: Speedy Couriers → Acme Holdings" in out
    assert "by the rule Speedy Couriers → Acme Holdings, made by @Sam Staff" in out
    assert "Bills waiting for payment" in out
    assert "imported 1 ($1,850.00, 1 from Bills)" in out  # once paid
    assert "2026-11-04  $1,850.00  Jane Smith" in out  # dated the payment
    assert "imported 1 expense (1 from Bills) into Clio" in out  # the channel's summary
    assert "No client on this expense: which matter?" in out
    assert "• 00001 Smith – Estate of Harold Smith (Jane Smith)" in out  # the search's answer
    assert "Linked to 00001 Smith – Estate of Harold Smith by @Sam Staff" in out
    # a court fee under its account's category and UTBMS code (issue 29)
    assert "Entries of Court Costs now carry UTBMS code E112 (Court fees)." in out
    assert "under Filing fees, UTBMS E112 (Court fees)" in out
    # 5, a choice, a rule's import, the expense with no customer, a Bill's, the court fee
    assert "Clio now holds 10 hard-cost entries" in out
    # it ends with the month's report, its chart written to a file it names
    assert "Hard costs for October 2026: 9 entries imported" in out
    assert "hardcost-report-2026-10.png, hardcost-report-2026-10.csv" in out
    png = re.search(r"The chart is written to (\S+\.png)", out)
    assert png is not None and Path(png.group(1)).read_bytes().startswith(b"\x89PNG")
    assert "Traceback" not in result.stderr


def test_db_upgrade_creates_the_schema_and_is_repeatable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    env = {**os.environ, "DATABASE_URL": url}

    first = hardcost("db", "upgrade", env=env)
    second = hardcost("db", "upgrade", env=env)

    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    tables = set(inspect(make_engine(url)).get_table_names())
    assert {"firms", "entry_links", "failures", "waiting_expenses", "runs"} <= tables


def test_db_downgrade_to_an_unknown_revision_says_so_and_changes_nothing(
        tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"}
    assert hardcost("db", "upgrade", env=env).returncode == 0

    refused = hardcost("db", "downgrade", "0999", env=env)
    current = hardcost("db", "current", env=env)

    assert refused.returncode == 1
    assert refused.stderr.startswith("hardcost db downgrade: ") and "0999" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert current.stdout.strip().endswith("(head)")


def test_default_database_is_a_sqlite_file_in_the_working_directory(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}

    result = hardcost("db", "upgrade", env=env, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "hardcost.sqlite").exists()


def test_sync_runs_one_import_for_a_firm(firm: Firm, database_url: str) -> None:
    firm.expense(("125.00", "Jane Smith", "Filing fee"))
    env = env_for(firm.world, database_url)

    dry = hardcost("sync", "--firm", str(firm.id), "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "Dry run (nothing written): imported 1 ($125.00)" in dry.stdout
    assert firm.entries() == []

    real = hardcost("sync", "--firm", str(firm.id), env=env)
    assert real.returncode == 0, real.stderr
    assert "imported 1 ($125.00)" in real.stdout
    assert len(firm.entries()) == 1


def test_sync_of_an_unknown_firm_says_so(firm: Firm, database_url: str) -> None:
    result = hardcost("sync", "--firm", "999", env=env_for(firm.world, database_url))

    assert result.returncode == 1
    assert "no firm 999" in result.stderr
    assert "Traceback" not in result.stderr


def test_sync_without_app_credentials_names_the_missing_variable(
        firm: Firm, database_url: str) -> None:
    env = env_for(firm.world, database_url)
    del env["QBO_CLIENT_SECRET"]

    result = hardcost("sync", "--firm", str(firm.id), env=env)

    assert result.returncode == 1
    assert "QBO_CLIENT_SECRET is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_answers_signed_slack_requests_and_health(firm: Firm, database_url: str) -> None:
    import signal
    import time
    from urllib.parse import urlencode

    import requests
    from slack_sdk.signature import SignatureVerifier

    from hardcost.sandbox.server import serve_in_thread
    from hardcost.sandbox.slack import SlackSandbox

    slack = SlackSandbox()
    slack_server = serve_in_thread(slack)
    workspace = slack.add_workspace("T0001")
    port = free_port()
    env = serve_env(firm.world, database_url, bot_token=workspace.bot_token,
                    slack_url=slack_server.url, port=port)
    proc = start_serve(env, port)
    base = f"http://127.0.0.1:{port}"
    try:
        health = requests.get(f"{base}/healthz", timeout=2)
        assert health.status_code == 200 and health.json()["database"] == "ok"

        body = urlencode({"team_id": "T0001", "user_id": "U1", "command": "/hardcost",
                          "text": "help", "channel_id": "C1", "response_url": "http://x/"})
        ts = str(int(time.time()))
        signed = SignatureVerifier("s3cret").generate_signature(timestamp=ts, body=body)
        headers = {"X-Slack-Request-Timestamp": ts,
                   "Content-Type": "application/x-www-form-urlencoded"}
        ok = requests.post(f"{base}/slack/events", data=body,
                           headers={**headers, "X-Slack-Signature": signed}, timeout=5)
        forged = requests.post(f"{base}/slack/events", data=body,
                               headers={**headers, "X-Slack-Signature": "v0=bad"}, timeout=5)
        assert ok.status_code == 200 and "pending" in ok.text
        assert forged.status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        slack_server.stop()
    assert proc.returncode == 0


def test_serve_refuses_a_database_that_is_not_migrated(tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite'}",
           "SLACK_BOT_TOKEN": "xoxb-x", "SLACK_SIGNING_SECRET": "s"}

    result = hardcost("serve", env=env)

    assert result.returncode == 1
    assert "run `hardcost db upgrade` first" in result.stderr


def test_serve_without_a_signing_secret_says_so(database_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    env.update(DATABASE_URL=database_url, SLACK_BOT_TOKEN="xoxb-x")

    result = hardcost("serve", env=env)

    assert result.returncode == 1
    assert "SLACK_SIGNING_SECRET is not set" in result.stderr


def test_sigterm_mid_import_stops_between_entries_and_loses_nothing(
        firm: Firm, database_url: str) -> None:
    import signal
    import time
    from urllib.parse import urlencode

    import requests
    from slack_sdk.signature import SignatureVerifier

    from hardcost.sandbox.faults import Fault
    from hardcost.sandbox.server import serve_in_thread
    from hardcost.sandbox.slack import SlackSandbox
    from hardcost.sync.store import EntryLink, FirmSettings
    from hardcost.sync.store import Firm as FirmRow

    slack = SlackSandbox()
    slack_server = serve_in_thread(slack)
    slack.base_url = slack_server.url
    workspace = slack.add_workspace("T0001")
    channel = workspace.add_channel("costs")["id"]
    user = workspace.add_user("Ada Admin", is_admin=True)["id"]
    with firm.sessions() as session:
        row = session.get(FirmRow, firm.id)
        settings = session.get(FirmSettings, firm.id)
        assert row is not None and settings is not None
        row.slack_team_id = "T0001"
        settings.slack_channel_id = channel
        session.commit()
    for n in range(12):
        firm.expense((f"{n + 1}.00", "Jane Smith"))
    firm.world.clio.faults.add(Fault(path=r"/activities\.json$", method="POST",
                                     passthrough=True, delay_after=0.4, times=100))
    port = free_port()
    env = serve_env(firm.world, database_url, bot_token=workspace.bot_token,
                    slack_url=slack_server.url, port=port)
    proc = start_serve(env, port)
    try:
        body = urlencode({"team_id": "T0001", "user_id": user, "command": "/hardcost",
                          "text": "run", "channel_id": channel,
                          "response_url": slack.response_url("T0001", user_id=user,
                                                             channel_id=channel)})
        ts = str(int(time.time()))
        signature = SignatureVerifier("s3cret").generate_signature(timestamp=ts, body=body)
        ack = requests.post(f"http://127.0.0.1:{port}/slack/events", data=body, timeout=5,
                            headers={"X-Slack-Request-Timestamp": ts,
                                     "X-Slack-Signature": signature,
                                     "Content-Type": "application/x-www-form-urlencoded"})
        assert ack.status_code == 200
        deadline = time.monotonic() + 30
        while len(firm.entries()) < 2:
            assert time.monotonic() < deadline, "the import never started writing"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        slack_server.stop()

    assert proc.returncode == 0
    written = len(firm.entries())
    assert 2 <= written < 12, "the run stopped between entries, not at the end"
    with firm.sessions() as session:
        states = {link.state for link in session.query(EntryLink).all()}
    assert states == {"created"}  # nothing half-recorded
    firm.world.clio.faults.clear()
    firm.later()
    assert firm.run().imported == 12 - written
    assert len(firm.entries()) == 12


def test_serve_sandbox_starts_with_the_demo_books(database_url: str) -> None:
    import signal
    import time

    import requests

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QBO_", "CLIO_"))}
    env.update(DATABASE_URL=database_url, SLACK_BOT_TOKEN="xoxb-x",
               SLACK_SIGNING_SECRET="s", PORT=str(port))
    from hardcost.sandbox.server import serve_in_thread
    from hardcost.sandbox.slack import SlackSandbox

    slack = SlackSandbox()
    server = serve_in_thread(slack)
    slack.add_workspace("T0001", bot_token="xoxb-x")
    env["SLACK_API_URL"] = f"{server.url}/api/"
    proc = start_serve(env, port, "--sandbox")
    try:
        # Healthy once the scheduler runs its jobs (a moment after the server listens).
        deadline = time.monotonic() + 30
        while (health := requests.get(f"http://127.0.0.1:{port}/healthz",
                                      timeout=5)).status_code != 200:
            assert time.monotonic() < deadline, health.text
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        server.stop()
    assert proc.returncode == 0
    assert "SANDBOX mode" in err


def test_quickbooks_webhook_route_refuses_an_unsigned_delivery(
        sessions: sessionmaker[Session]) -> None:
    from slack_bolt import App
    from slack_sdk import WebClient
    from werkzeug.test import Client

    from hardcost.bot.context import BotContext
    from hardcost.bot.web import make_wsgi_app
    from hardcost.bot.webhooks import webhook_routes
    from hardcost.sync.config import Settings

    ctx = BotContext(sessions=sessions, importer_for=lambda firm_id: None,  # type: ignore[arg-type,return-value]
                     config=Settings(QBO_WEBHOOK_VERIFIER="v"))
    app = make_wsgi_app(App(client=WebClient(token="x"), signing_secret="s",
                            token_verification_enabled=False), sessions,
                        routes=webhook_routes(ctx))

    response = Client(app).post("/webhooks/quickbooks", data="[]")  # type: ignore[arg-type]

    assert response.status_code == 401

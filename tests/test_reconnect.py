"""Token lifecycle: a refused connection pauses imports with one "Reconnect" message, the
reconnect resumes from the watermark, QuickBooks' 5-year limit is warned of, and refreshes of
one realm never race — across threads or processes."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from typing import Any

import requests
from sqlalchemy import select

from hardcost.sandbox.slack_rig import SlackRig, wait_for
from hardcost.sync.store import Connection
from tests.firmkit import Firm as KitFirm
from tests.firmkit import env_for


def _text(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks") or []) + message.get("text", "")


def _connection(rig: SlackRig, provider: str) -> Connection:
    with rig.firm.sessions() as session:
        return session.scalars(select(Connection).where(
            Connection.firm_id == rig.firm.id, Connection.provider == provider)).one()


def _revoke_qbo(rig: SlackRig) -> None:
    """QuickBooks forgets hardcost's grant (the firm removed the app there, say)."""
    row = _connection(rig, "quickbooks")
    requests.post(f"{rig.firm.world.qbo_server.url}/v2/oauth2/tokens/revoke", timeout=5,
                  json={"token": row.refresh_token},
                  auth=("sandbox-qbo-client", "sandbox-qbo-secret")).raise_for_status()


def _reconnect_messages(rig: SlackRig) -> list[dict[str, Any]]:
    return [m for m in rig.channel_messages() if "Reconnect QuickBooks" in _text(m)]


def test_refused_connection_pauses_imports_with_one_reconnect_message(rig: SlackRig) -> None:
    rig.firm.client("Jane Smith", ["Smith estate"])
    rig.firm.expense(("10.00", "Jane Smith"))
    _revoke_qbo(rig)

    rig.command("run")
    wait_for(lambda: _reconnect_messages(rig), what="the reconnect message")
    assert _connection(rig, "quickbooks").broken_at is not None

    rig.command("run")  # paused: says why, does not post the message again
    wait_for(lambda: any("reconnect QuickBooks" in _text(m)
                         for m in rig.replies_to(rig.admin)))
    assert len(_reconnect_messages(rig)) == 1
    assert rig.firm.entries() == []

    # The button starts the connect flow; the browser comes back; imports resume.
    [notice] = _reconnect_messages(rig)
    rig.click(notice, "hc_reconnect", value="quickbooks", user=rig.admin)
    reply = wait_for(lambda: next((m for m in rig.replies_to(rig.admin)
                                   if "Connect QuickBooks" in _text(m)), None))
    link = next(e["url"] for b in reply["blocks"] for e in b.get("elements", [])
                if e.get("url"))
    page = requests.get(link, timeout=10)
    assert page.status_code == 200 and "QuickBooks is connected" in page.text
    assert _connection(rig, "quickbooks").broken_at is None

    summary = rig.firm.run()
    assert summary.imported == 1 and summary.error is None  # nothing was lost


def test_reconnect_button_is_for_admins(rig: SlackRig) -> None:
    _revoke_qbo(rig)
    rig.command("run")
    [notice] = wait_for(lambda: _reconnect_messages(rig))

    rig.click(notice, "hc_reconnect", value="quickbooks", user=rig.staff)

    wait_for(lambda: any("Only workspace admins" in _text(m)
                         for m in rig.replies_to(rig.staff)))


def test_connecting_records_the_hard_expiry_and_warns_30_days_before(rig: SlackRig) -> None:
    rig.command("disconnect quickbooks")
    wait_for(lambda: any("disconnected" in _text(m) for m in rig.replies_to(rig.admin)))
    rig.command("connect quickbooks")
    reply = wait_for(lambda: next((m for m in rig.replies_to(rig.admin)
                                   if "Connect QuickBooks" in _text(m)), None))
    link = next(e["url"] for b in reply["blocks"] for e in b.get("elements", [])
                if e.get("url"))
    assert requests.get(link, timeout=10).status_code == 200
    row = _connection(rig, "quickbooks")
    assert row.hard_expires_at is not None
    assert row.hard_expires_at - rig.firm.world.clock.now() > timedelta(days=4 * 365)

    with rig.firm.sessions() as session:
        stored = session.get(Connection, row.id)
        assert stored is not None
        stored.hard_expires_at = rig.firm.world.clock.now() + timedelta(days=20)
        session.commit()
    rig.command("run")
    rig.command("run")

    warning = wait_for(lambda: [m for m in rig.channel_messages() if "five years" in _text(m)])
    assert len(warning) == 1


WORKER = """
import sys
from hardcost.sync.config import Settings
from hardcost.sync.engine import make_engine, make_session_factory
from hardcost.sync.tokens import StoredTokens, qbo_refresher

config = Settings()
sessions = make_session_factory(make_engine(config.resolved_database_url()))
tokens = StoredTokens(sessions, int(sys.argv[1]), "quickbooks", qbo_refresher(
    config.qbo_token_url, config.qbo_client_id, config.qbo_client_secret))
for _ in range(int(sys.argv[2])):
    tokens.refresh(tokens.access_token())  # as if QuickBooks had refused the current one
print("ok")
"""


def test_hundred_rotating_refreshes_across_two_processes_never_hit_invalid_grant(
        firm: KitFirm, database_url: str) -> None:
    firm.world.qbo.refresh_grace_seconds = 0  # a superseded refresh token dies at once
    env = env_for(firm.world, database_url)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(firm.id), "50"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=240) for p in procs]

    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-2000:]
        assert out.strip() == "ok"
    # A refresh that finds the other process already refreshed uses that token instead.
    assert 50 <= firm.world.qbo.calls.count("POST", r"/tokens/bearer") <= 100
    # The stored refresh token is the newest one: it still works.
    firm.world.qbo.expire_access_tokens()
    assert firm.run().error is None

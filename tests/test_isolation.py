"""One firm's bad data and settings never stop another firm's imports (issue 10).

Firm A's admin sends every bad setting and hostile payload the hardening issue lists, and A's
row is given a schedule no scheduler can compute, while the scheduler runs firm B every
``UNIT`` seconds: B's scheduled runs keep coming, on time, and the app stays healthy.
"""

from __future__ import annotations

import json
import time

import requests
from sqlalchemy import func, select

from hardcost.sandbox.slack_rig import SlackRig
from hardcost.sync.scheduler import ImportScheduler
from hardcost.sync.store import Run
from tests.conftest import POSTGRES_URL
from tests.firmkit import make_firm

UNIT = 0.5  # seconds per schedule "minute" for both firms

HOSTILE_COMMANDS = [
    "set schedule 10000000000", "set schedule ²", "set schedule 99999999999999999999999",
    "set schedule 3000000000", "set start-date 0001-01-01", "set category " + "x" * 5000,
    "set approvers " + " ".join(f"<@U{n:08d}>" for n in range(60)),
    "set account <https://evil.example|click>", "set channel <!here>", "run", "run", "check",
    "set deletions shred", "set split-lines maybe", "connect nothing", "\x00",
]
HOSTILE_PAYLOADS = [
    {"type": "view_submission", "view": {"callback_id": "hc_settings"}},
    {"type": "block_actions", "actions": []},
    {"type": "block_actions", "actions": [{"action_id": "hc_choose_matter", "value": "x:y"}]},
    {"type": "block_actions", "team": "T1"},
]


def _scheduled_runs(rig: SlackRig, firm_id: int) -> list[Run]:
    with rig.firm.sessions() as session:
        return list(session.scalars(select(Run).where(
            Run.firm_id == firm_id, Run.trigger == "schedule").order_by(Run.id)))


def test_one_firms_bad_settings_and_payloads_stop_no_other_firms_schedule(
        rig: SlackRig) -> None:
    other = make_firm(rig.firm.world, rig.firm.sessions)
    other.client("Jane Smith", ["Smith estate"])
    other.update_settings(schedule_minutes=2)  # every second
    rig.firm.update_settings(schedule_minutes=2)
    scheduler = ImportScheduler(
        rig.firm.sessions, rig.ctx.importer_for, leases=rig.ctx.run_leases(), unit_seconds=UNIT,
        refresh_every=UNIT, clock=rig.firm.world.clock.now)
    scheduler.start()
    try:
        started = time.monotonic()
        for text in HOSTILE_COMMANDS:
            assert rig.command(text).status_code < 500, text
        for payload in HOSTILE_PAYLOADS:
            assert rig.interaction(payload).status_code < 500, payload
        body = json.dumps({"eventNotifications": [{"realmId": rig.firm.qbo.realm_id,
                                                   "dataChangeEvent": {"entities": "x"}}]})
        raw = body.encode()
        assert requests.post(f"{rig.web.url}/webhooks/quickbooks", data=raw, timeout=10,
                             headers={"Content-Type": "application/json",
                                      "intuit-signature": rig.firm.world.qbo.sign_webhook(raw)}
                             ).status_code == 400
        # And a row no scheduler can compute (as stored before the bounds existed; PostgreSQL's
        # integer column cannot even hold one, so there it is merely absurd).
        rig.firm.update_settings(schedule_minutes=2_000_000_000 if POSTGRES_URL else 10**12)
        other.expense(("12.34", "Jane Smith"))
        other.later()
        deadline = time.monotonic() + 20
        while len(_scheduled_runs(rig, other.id)) < 4 or not other.entries():
            assert time.monotonic() < deadline, "firm B's scheduled runs stopped"
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        health = scheduler.health()
    finally:
        scheduler.shutdown()
        scheduler.wait(10)

    assert health.ok, health
    if not POSTGRES_URL:
        assert health.skipped == (rig.firm.id,)
    b_runs = _scheduled_runs(rig, other.id)
    assert all(run.status == "ok" for run in b_runs if run.finished_at is not None)
    assert len(other.entries()) == 1
    # On time: at least one run per interval and a half while A was misbehaving.
    assert len(b_runs) >= int(elapsed / (2 * UNIT * 1.5))
    with rig.firm.sessions() as session:
        statuses = set(session.scalars(select(Run.status).where(Run.firm_id == rig.firm.id)))
        running = session.scalar(select(func.count()).select_from(Run).where(
            Run.status == "running", Run.finished_at.is_not(None)))
    assert statuses <= {"ok", "failed", "running"} and running == 0
    assert requests.get(f"{rig.web.url}/healthz", timeout=10).status_code == 200

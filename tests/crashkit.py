"""SIGKILL in the middle of a write, then a restart: the scaffolding of the crash tests.

``hardcost serve`` runs as a process of its own against the test's database and the sandboxes;
``/hardcost run`` is sent to it as a signed slash command; the sandbox Clio holds the entry's
POST open (before it creates the entry, or after, with the reply held back) so that the kill
lands exactly there. After the restart the first ``/hardcost run`` must bring everything in,
each entry once."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from urllib.parse import urlencode

import requests
from slack_sdk.signature import SignatureVerifier
from sqlalchemy import select

from hardcost.sandbox.faults import Fault
from hardcost.sync.store import Firm as FirmRow
from hardcost.sync.store import LinkState, Run
from tests.firmkit import Firm, free_port, lapse_leases, not_due, serve_env, start_serve

POST = r"/api/v4/activities\.json$"
SECRET = "crash-signing-secret"
MOMENTS = ["before the POST reaches Clio", "after Clio created the entry"]
"""Where the kill lands (``crash_mid_write``'s ``moment``)."""


def serve(firm: Firm, database_url: str, slack: tuple[str, str]
          ) -> tuple[subprocess.Popen[str], str]:
    """``hardcost serve`` for ``firm`` as a process; (the process, its base URL)."""
    token, url = slack
    port = free_port()
    env = serve_env(firm.world, database_url, bot_token=token, slack_url=url, port=port,
                    signing_secret=SECRET)
    return start_serve(env, port), f"http://127.0.0.1:{port}"


def run_command(base: str) -> requests.Response:
    """``/hardcost run``, signed as Slack signs it."""
    body = urlencode({"team_id": "T0001", "user_id": "U1", "command": "/hardcost",
                      "text": "run", "channel_id": "C1", "response_url": "http://127.0.0.1:9/"})
    ts = str(int(time.time()))
    return requests.post(f"{base}/slack/events", data=body, timeout=10, headers={
        "X-Slack-Request-Timestamp": ts, "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Signature": SignatureVerifier(SECRET).generate_signature(timestamp=ts,
                                                                          body=body)})


def wait(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def crash_mid_write(firm: Firm, database_url: str, slack: tuple[str, str], moment: str,
                    markers: list[str], *, lapse: bool = True,
                    within: float = 30.0) -> list[str]:
    """Kill ``hardcost serve`` with SIGKILL while it writes the first of ``markers``' entries
    (``moment``: one of ``MOMENTS``), restart it, run again; assert every marker is in Clio
    once, ``within`` seconds of the restart, and nothing else is. Returns the firm's runs'
    statuses, oldest first.

    ``lapse``: the dead process's leases are made to run out by hand (as they do
    ``HARDCOST_LEASE_SECONDS`` after the kill); without it the restarted process must see
    that their holder, a process of its own host, is gone, and take them itself."""
    with firm.sessions() as session:
        row = session.get(FirmRow, firm.id)
        assert row is not None
        row.slack_team_id = "T0001"
        session.commit()
    held = (Fault(path=POST, method="POST", passthrough=True, delay=60)
            if moment.startswith("before")
            else Fault(path=POST, method="POST", passthrough=True, delay_after=60))
    firm.world.clio.faults.add(held)
    not_due(firm)  # only /hardcost run imports here

    proc, base = serve(firm, database_url, slack)
    try:
        answer = run_command(base)
        assert answer.status_code == 200, (answer.status_code, answer.text[:200])
        wait(lambda: firm.world.clio.faults.pending() == 0, "the POST to be held")
        if moment.startswith("after"):
            wait(lambda: len(firm.entries()) == 1, "Clio to create the entry")
        time.sleep(0.2)  # the held request is Clio's; hardcost waits for its answer
        # The batch's pending links were committed together, before its first POST.
        assert [link.state for link in firm.links()] == [LinkState.PENDING] * len(markers)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    if lapse:
        lapse_leases(firm)  # as they do HARDCOST_LEASE_SECONDS after the kill
    firm.world.clio.faults.clear()

    restarted = time.monotonic()
    proc, base = serve(firm, database_url, slack)  # restarted
    try:
        assert run_command(base).status_code == 200
        wait(lambda: len(firm.entries()) >= len(markers)
             and all(link.state == LinkState.CREATED for link in firm.links()),
             "every entry in Clio", timeout=max(within - (time.monotonic() - restarted), 0.1))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)

    in_clio = Counter(marker for entry in firm.entries() for marker in markers
                      if marker in (entry.get("note") or ""))
    assert in_clio == dict.fromkeys(markers, 1)
    assert len(firm.entries()) == len(markers)
    with firm.sessions() as session:
        return [run.status for run in session.scalars(
            select(Run).where(Run.firm_id == firm.id).order_by(Run.id))]

"""After a crash, the next run finishes what the dead run left, at once (issue 18).

``hardcost serve`` is killed with SIGKILL at the two worst moments of a write: (a) after the
pending link is committed and before the POST reaches Clio, and (b) after Clio created the entry
and before its reply reached hardcost. The sandbox Clio holds the POST open, so the kill lands
exactly there. After a restart, the first ``/hardcost run`` brings every purchase into Clio
exactly once, without waiting out the write grace; the dead run is marked ``abandoned``.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from slack_sdk.signature import SignatureVerifier
from sqlalchemy import select

from hardcost.sandbox.faults import Fault
from hardcost.sandbox.server import serve_in_thread
from hardcost.sandbox.slack import SlackSandbox
from hardcost.sync.store import Firm as FirmRow
from hardcost.sync.store import LinkState, Run
from tests.firmkit import Firm, free_port, lapse_leases, not_due, serve_env, start_serve

POST = r"/api/v4/activities\.json$"
SECRET = "crash-signing-secret"
PURCHASES = 5


@pytest.fixture
def slack() -> Iterator[tuple[str, str]]:
    """(the workspace's bot token, the sandbox Slack's URL)."""
    sandbox = SlackSandbox()
    server = serve_in_thread(sandbox)
    workspace = sandbox.add_workspace("T0001")
    yield workspace.bot_token, server.url
    server.stop()


def _serve(firm: Firm, database_url: str, slack: tuple[str, str]
           ) -> tuple[subprocess.Popen[str], str]:
    token, url = slack
    port = free_port()
    env = serve_env(firm.world, database_url, bot_token=token, slack_url=url, port=port,
                    signing_secret=SECRET)
    return start_serve(env, port), f"http://127.0.0.1:{port}"


def _run_command(base: str) -> requests.Response:
    body = urlencode({"team_id": "T0001", "user_id": "U1", "command": "/hardcost",
                      "text": "run", "channel_id": "C1", "response_url": "http://127.0.0.1:9/"})
    ts = str(int(time.time()))
    return requests.post(f"{base}/slack/events", data=body, timeout=10, headers={
        "X-Slack-Request-Timestamp": ts, "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Signature": SignatureVerifier(SECRET).generate_signature(timestamp=ts,
                                                                          body=body)})


def _wait(condition: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("moment", ["before the POST reaches Clio",
                                    "after Clio created the entry"])
def test_the_first_run_after_a_crash_lands_every_purchase_once_at_once(
        firm: Firm, database_url: str, slack: tuple[str, str], moment: str) -> None:
    firm.client("Jane Smith", ["Smith estate"])
    markers = []
    for n in range(PURCHASES):
        purchase = firm.expense((f"{10 + n}.00", "Jane Smith", f"Filing {n}"))
        markers.append(f"[qbo {firm.qbo.realm_id}/{purchase['Id']}/"
                       f"{firm.customers['Jane Smith']}]")
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

    proc, base = _serve(firm, database_url, slack)
    try:
        assert _run_command(base).status_code == 200
        _wait(lambda: firm.world.clio.faults.pending() == 0, "the POST to be held")
        if moment.startswith("after"):
            _wait(lambda: len(firm.entries()) == 1, "Clio to create the entry")
        time.sleep(0.2)  # the held request is Clio's; hardcost waits for its answer
        # The batch's pending links were committed together, before its first POST.
        assert [link.state for link in firm.links()] == [LinkState.PENDING] * PURCHASES
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    lapse_leases(firm)  # as they do HARDCOST_LEASE_SECONDS after the kill
    firm.world.clio.faults.clear()

    proc, base = _serve(firm, database_url, slack)  # restarted
    try:
        assert _run_command(base).status_code == 200
        _wait(lambda: len(firm.entries()) >= PURCHASES
              and all(link.state == LinkState.CREATED for link in firm.links()),
              "every purchase in Clio")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)

    in_clio = Counter(marker for entry in firm.entries() for marker in markers
                      if marker in (entry.get("note") or ""))
    assert in_clio == dict.fromkeys(markers, 1)
    assert len(firm.entries()) == PURCHASES
    # The dead run, then the first run after the restart, which did it all: no second run
    # after the 2-minute write grace was needed.
    with firm.sessions() as session:
        runs = list(session.scalars(select(Run).where(Run.firm_id == firm.id)
                                    .order_by(Run.id)))
    assert [run.status for run in runs] == ["abandoned", "ok"]


def test_a_choice_being_written_while_a_run_starts_is_written_once(rig: Any) -> None:
    """A person's choice has no run id: a run that starts while Clio holds the choice's POST
    leaves its pending link alone (another writer may be live), so the entry lands once."""
    import threading

    from hardcost.sandbox.slack_rig import button_value, wait_for

    rig.firm.client("Acme Holdings", ["Lease", "Employment"])
    rig.firm.expense(("48.75", "Acme Holdings", "Courier"))
    assert rig.command("run").status_code == 200
    prompt = wait_for(lambda: rig.prompts()[0] if rig.prompts() else None, what="the prompt")
    rig.firm.client("Jane Smith", ["Smith estate"])
    rig.firm.expense(("10.00", "Jane Smith"))
    rig.firm.world.clio.faults.add(Fault(path=POST, method="POST", passthrough=True,
                                         delay=1.5))
    lease = rig.firm.clio.matters[rig.firm.matters["Lease"]]
    click = threading.Thread(target=rig.click, args=(prompt, "hc_choose_matter"),
                             kwargs={"value": button_value(prompt, lease["display_number"])})
    click.start()
    wait_for(lambda: any(link.state == LinkState.PENDING for link in rig.firm.links()) or None,
             what="the choice's write under way")

    # The run starts while the choice's POST is held (and within the write grace, as a
    # scheduled tick at that moment would be).
    summary = rig.firm.world.importer(rig.firm.sessions, rig.firm.id).run(trigger="schedule")
    click.join(timeout=30)
    wait_for(lambda: len(rig.firm.entries()) == 2 or None, what="both entries")

    assert summary.error is None and summary.imported == 1  # Jane Smith's, not the choice's
    time.sleep(0.3)
    notes = [entry.get("note") or "" for entry in rig.firm.entries()]
    assert len(notes) == 2 and sum("48.75" in n or "Courier" in n for n in notes) == 1
    assert all(link.state == LinkState.CREATED for link in rig.firm.links())
    assert rig.firm.waiting() == []  # the choice settled its question

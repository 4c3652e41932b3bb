"""After a crash, the next run finishes what the dead run left, at once (issue 18).

``hardcost serve`` is killed with SIGKILL at the two worst moments of a write: (a) after the
pending link is committed and before the POST reaches Clio, and (b) after Clio created the entry
and before its reply reached hardcost. The sandbox Clio holds the POST open, so the kill lands
exactly there. After a restart, the first ``/hardcost run`` brings every purchase into Clio
exactly once, without waiting out the write grace; the dead run is marked ``abandoned``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from hardcost.sandbox.faults import Fault
from hardcost.sync.store import LinkState
from tests.crashkit import MOMENTS, POST, crash_mid_write
from tests.firmkit import Firm

PURCHASES = 5


def _purchases(firm: Firm) -> list[str]:
    """``PURCHASES`` filing fees of Jane Smith's; their markers."""
    firm.client("Jane Smith", ["Smith estate"])
    markers = []
    for n in range(PURCHASES):
        purchase = firm.expense((f"{10 + n}.00", "Jane Smith", f"Filing {n}"))
        markers.append(f"[qbo {firm.qbo.realm_id}/{purchase['Id']}/"
                       f"{firm.customers['Jane Smith']}]")
    return markers


@pytest.mark.parametrize("moment", MOMENTS)
def test_the_first_run_after_a_crash_lands_every_purchase_once_at_once(
        firm: Firm, database_url: str, serve_slack: tuple[str, str],
        moment: str) -> None:
    markers = _purchases(firm)

    statuses = crash_mid_write(firm, database_url, serve_slack, moment, markers)

    # The dead run, then the first run after the restart, which did it all: no second run
    # after the 2-minute write grace was needed. (The firm is due at once when its dead run is
    # abandoned, so the scheduler may start that run; a `/hardcost run` after it finds nothing.)
    assert statuses[:2] == ["abandoned", "ok"] and set(statuses[1:]) == {"ok"}


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


@pytest.mark.postgres
def test_a_restart_on_the_same_host_takes_the_dead_process_s_lease_at_once(
        firm: Firm, database_url: str, serve_slack: tuple[str, str]) -> None:
    """``hardcost serve`` killed with SIGKILL mid-write on PostgreSQL, restarted on the same
    host, its lease NOT made to lapse by hand (issue #12): the restarted process sees that the
    lease's holder (a pid of this host, gone) is dead and takes it at once, so the import is
    carried on straight away: every purchase in Clio exactly once within 30 s of the restart,
    not after the lease's 180 s."""
    markers = _purchases(firm)

    statuses = crash_mid_write(firm, database_url, serve_slack, MOMENTS[0], markers,
                               lapse=False, within=30.0)

    # The dead run, taken over at start-up; then the run that did it all (the firm is due at
    # once when its lease is taken from the dead, so the scheduler may be first to it; a
    # `/hardcost run` after it finds nothing more).
    assert statuses[0] == "abandoned" and statuses[1:] and set(statuses[1:]) == {"ok"}

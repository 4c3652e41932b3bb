"""Never a duplicate, never a lost expense: crashes, lost replies and outages mid-write."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from hardcost.sandbox.clio import server_error_fault
from hardcost.sandbox.faults import Fault
from hardcost.sync.store import LinkState
from hardcost.sync.writer import HEAL_TRIES
from tests.firmkit import Firm, env_for

POST_ACTIVITY = r"/api/v4/activities\.json$"
SEARCH = r"/api/v4/activities\.json$"  # the marker look-up (GET) shares the index's path


@pytest.fixture
def firm(firm: Firm) -> Firm:
    """The conftest firm with one client, Jane Smith, who has one matter."""
    firm.client("Jane Smith", ["Smith estate"])
    return firm


def _kill_sync_once(firm: Firm, database_url: str, ready: Callable[[], bool],
                    what: str) -> None:
    """``hardcost sync`` for the firm, killed with SIGKILL as soon as ``ready()``."""
    proc = subprocess.Popen([sys.executable, "-m", "hardcost", "sync", "--firm", str(firm.id)],
                            env=env_for(firm.world, database_url),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not ready():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()


def test_process_killed_between_clio_post_and_link_commit_leaves_one_entry(
        firm: Firm, database_url: str) -> None:
    """`hardcost sync` dies after Clio created the entry but before it heard back."""
    firm.expense(("125.00", "Jane Smith", "Filing fee"))
    firm.world.clio.faults.add(Fault(path=POST_ACTIVITY, method="POST", passthrough=True,
                                     delay_after=20))
    _kill_sync_once(firm, database_url, lambda: bool(firm.entries()),
                    "Clio to receive the entry")
    [pending] = firm.links()
    assert pending.state == LinkState.PENDING  # the write-ahead record survived the crash

    firm.world.clio.calls.clear()
    soon = firm.run()  # the write may still be in flight in a live process: left alone
    assert [link.state for link in firm.links()] == [LinkState.PENDING]
    assert soon.imported == 0

    firm.later()
    summary = firm.run()

    assert len(firm.entries()) == 1
    assert firm.world.clio.calls.count("POST", POST_ACTIVITY) == 0
    [link] = firm.links()
    assert link.state == LinkState.CREATED
    assert link.clio_activity_id == firm.entries()[0]["id"]
    assert summary.imported == 0 and summary.error is None


def test_lost_reply_from_clio_is_found_by_marker_within_the_run(firm: Firm) -> None:
    firm.expense(("40.00", "Jane Smith"))
    firm.world.clio.faults.add(Fault(path=POST_ACTIVITY, method="POST", after_handler=True,
                                     status=504, body='{"error": {"type": "GatewayTimeout"}}'))

    summary = firm.run()

    assert summary.imported == 1 and summary.failed == 0
    assert firm.world.clio.calls.count("POST", POST_ACTIVITY) == 1  # looked up, not re-posted
    assert len(firm.entries()) == 1
    assert [link.state for link in firm.links()] == [LinkState.CREATED]
    assert firm.links()[0].clio_activity_id == firm.entries()[0]["id"]


def test_lost_reply_from_clio_is_recovered_by_marker_not_posted_twice(firm: Firm) -> None:
    """Clio took the POST, then neither its reply nor any look-up within the run got
    through: the pending link stays, and the next run finds the entry by its marker."""
    firm.expense(("40.00", "Jane Smith"))
    firm.world.clio.faults.add(Fault(path=POST_ACTIVITY, method="POST", after_handler=True,
                                     status=504, body='{"error": {"type": "GatewayTimeout"}}'))
    firm.world.clio.faults.add(server_error_fault(503, times=100, path=SEARCH))

    first = firm.run()
    assert first.failed == 1 and first.failures[0].kind == "transient"
    assert [link.state for link in firm.links()] == [LinkState.PENDING]
    firm.world.clio.faults.clear()

    firm.later()
    second = firm.run()

    assert len(firm.entries()) == 1
    assert [link.state for link in firm.links()] == [LinkState.CREATED]
    assert firm.open_failures() == []
    assert second.error is None


def test_post_that_failed_before_clio_saved_it_is_posted_again_within_the_run(
        firm: Firm) -> None:
    firm.expense(("40.00", "Jane Smith"))
    firm.world.clio.faults.add(server_error_fault(500, path=POST_ACTIVITY))

    summary = firm.run()

    assert summary.imported == 1 and summary.failed == 0
    assert len(firm.entries()) == 1  # looked up first (absent), then posted once more
    assert firm.world.clio.calls.count("POST", POST_ACTIVITY) == 2


def test_memo_quoting_another_purchases_marker_does_not_stand_in_for_it(firm: Firm) -> None:
    """Issue 24 #3: purchase 500's memo quotes 501's marker. 501's POST fails (a 500), and the
    look-up before posting again must not take 500's entry for 501's: both end in Clio once,
    each at its own amount, each link on its own entry."""
    customer = firm.customers["Jane Smith"]
    quoted = f"[qbo {firm.qbo.realm_id}/501/{customer}]"
    firm.expense(("125.00", "Jane Smith", "Filing fee"), id="500",
                 private_note=f"see {quoted}")
    assert firm.run().imported == 1

    firm.expense(("975.00", "Jane Smith", "Expert report"), id="501")
    firm.world.clio.faults.add(server_error_fault(500, path=POST_ACTIVITY, method="POST"))
    firm.later()
    summary = firm.run()

    assert summary.imported == 1 and summary.failed == 0
    prices = {e["id"]: Decimal(str(e["price"])) for e in firm.entries()}
    assert sorted(prices.values()) == [Decimal("125.00"), Decimal("975.00")]
    by_purchase = {link.purchase_id: link.clio_activity_id for link in firm.links()}
    assert set(by_purchase) == {"500", "501"}
    assert prices[by_purchase["500"]] == Decimal("125.00")
    assert prices[by_purchase["501"]] == Decimal("975.00")


def test_post_that_failed_before_clio_saved_it_is_posted_again_next_run(firm: Firm) -> None:
    firm.expense(("40.00", "Jane Smith"))
    firm.world.clio.faults.add(Fault(path=POST_ACTIVITY, method="POST", status=500,
                                     times=HEAL_TRIES))

    first = firm.run()
    assert first.failed == 1 and firm.entries() == []

    firm.later()  # past the watermark: only the open failure brings the purchase back
    second = firm.run()

    assert second.imported == 1
    assert len(firm.entries()) == 1
    assert firm.open_failures() == []


def test_clio_outage_stops_writing_after_a_few_tries_and_loses_nothing(firm: Firm) -> None:
    for n in range(8):
        firm.expense((f"{n + 1}.00", "Jane Smith"))
    firm.world.clio.faults.add(server_error_fault(503, times=100, path=POST_ACTIVITY))

    down = firm.run()

    posts = firm.world.clio.calls.count("POST", POST_ACTIVITY)
    # Each entry's POST may have reached Clio, and the look-up by marker fails too during an
    # outage: its link stays pending; three such entries and the run stops hammering Clio.
    assert posts == 3
    assert down.failed == 8 and down.imported == 0
    assert {f.kind for f in firm.open_failures()} == {"transient"}

    firm.world.clio.faults.clear()
    firm.later()
    back = firm.run()

    assert back.imported == 8
    assert len(firm.entries()) == 8
    assert firm.open_failures() == []


def test_clio_rejection_is_a_readable_failure_and_the_run_goes_on(firm: Firm) -> None:
    firm.client("Acme Holdings", ["Acme v. Beta"])
    firm.expense(("10.00", "Jane Smith"))
    firm.expense(("20.00", "Acme Holdings"))
    firm.world.clio.faults.add(Fault(
        path=POST_ACTIVITY, method="POST", status=422,
        body='{"error": {"type": "UnprocessableEntity", "message": "Matter is closed"}}'))

    summary = firm.run()

    assert summary.imported == 1 and summary.failed == 1
    assert "Matter is closed" in summary.failures[0].message
    assert summary.failures[0].kind == "data"
    assert len(firm.links()) == 1  # the rejected one left no pending link behind


@pytest.mark.parametrize("body", ['{"data": {}}', '{"data": [1, 2]}', '{"data": {"id": "x"}}',
                                  "[]", "not json", '{"data": {"id": 1e400}}'])
@pytest.mark.parametrize("created", [False, True], ids=["not-created", "created"])
def test_a_malformed_success_from_clio_is_a_failure_and_the_entry_lands_once(
        firm: Firm, body: str, created: bool) -> None:
    """Issue 10 #3: ``201 {"data":{}}`` once raised ``KeyError`` out of the run, which was
    then recorded ``ok``. Clio may or may not have made the entry: the run looks it up by its
    marker and links it, or posts it once more (issue 11: faults heal within the run)."""
    firm.expense(("125.00", "Jane Smith"))
    firm.world.clio.faults.add(Fault(path=POST_ACTIVITY, method="POST", status=201, body=body,
                                     after_handler=created))

    first = firm.run(malformed_answers=True)

    assert first.error is None and first.failed == 0 and first.imported == 1
    assert len(firm.entries()) == 1
    assert [link.state for link in firm.links()] == [LinkState.CREATED]
    assert firm.world.clio.calls.count("POST", POST_ACTIVITY) == (1 if created else 2)
    assert firm.open_failures() == []


@pytest.mark.parametrize("body", ['{"data": {}}', "not json"])
def test_a_malformed_success_every_time_is_a_failure_and_the_entry_lands_once(
        firm: Firm, body: str) -> None:
    """Every try within the run gets an answer hardcost cannot read (and Clio made the
    entry the first time): the run records a readable failure, and the next run finds the
    entry by its marker instead of posting it again."""
    firm.expense(("125.00", "Jane Smith"))
    firm.world.clio.faults.add(Fault(path=POST_ACTIVITY, method="POST", status=201, body=body,
                                     after_handler=True))
    firm.world.clio.faults.add(Fault(path=SEARCH, method="GET", status=200, body=body,
                                     times=100))

    first = firm.run(malformed_answers=True)
    firm.world.clio.faults.clear()
    firm.later()
    second = firm.run()

    assert first.error is None and first.failed == 1 and first.imported == 0
    assert "does not understand" in first.failures[0].message
    assert first.failures[0].kind == "transient"
    assert len(firm.entries()) == 1
    assert [link.state for link in firm.links()] == [LinkState.CREATED]
    assert second.failed == 0 and firm.open_failures() == []


def _kill_sync_when(firm: Firm, database_url: str, ready: Any) -> None:
    """``hardcost sync`` in a process of its own, killed with SIGKILL once ``ready()``."""
    proc = subprocess.Popen([sys.executable, "-m", "hardcost", "sync", "--firm", str(firm.id)],
                            env=env_for(firm.world, database_url),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not ready():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the kill point was never reached"
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("kill_at", ["after the batch's commit, before its POSTs",
                                     "in the middle of the batch's POSTs"])
def test_a_batch_killed_between_commit_and_posts_or_among_its_posts_lands_once(
        firm: Firm, database_url: str, kill_at: str) -> None:
    """A batch's pending links are committed together before its first POST; a SIGKILL then,
    or after some of its POSTs reached Clio, leaves pending links only. The next run finds
    the posted entries by their markers and posts the others: each entry once."""
    markers = []
    for n in range(8):
        purchase = firm.expense((f"{20 + n}.00", "Jane Smith", f"Filing {n}"))
        markers.append(f"[qbo {firm.qbo.realm_id}/{purchase['Id']}/"
                       f"{firm.customers['Jane Smith']}]")
    if kill_at.startswith("after"):
        # The first POST is held before Clio sees it: every link is pending, none posted.
        firm.world.clio.faults.add(Fault(path=POST_ACTIVITY, method="POST", passthrough=True,
                                         delay=20))
        _kill_sync_when(firm, database_url, lambda: firm.world.clio.faults.pending() == 0
                        and len(firm.links()) == 8)
        assert firm.entries() == []
    else:
        # Three POSTs go through; the fourth is created in Clio but its reply held back.
        firm.world.clio.faults.add(Fault(path=POST_ACTIVITY, method="POST", passthrough=True,
                                         times=3))
        firm.world.clio.faults.add(Fault(path=POST_ACTIVITY, method="POST", passthrough=True,
                                         delay_after=20))
        _kill_sync_when(firm, database_url, lambda: len(firm.entries()) == 4)
        assert len(firm.entries()) == 4
    assert [link.state for link in firm.links()] == [LinkState.PENDING] * 8

    firm.world.clio.faults.clear()
    firm.world.clio.calls.clear()
    firm.later()  # past the write grace: the dead run's links are settled
    summary = firm.run()

    assert summary.error is None
    notes = [entry.get("note") or "" for entry in firm.entries()]
    assert sorted(sum(marker in note for note in notes) for marker in markers) == [1] * 8
    assert [link.state for link in firm.links()] == [LinkState.CREATED] * 8
    posted_before = 0 if kill_at.startswith("after") else 4
    assert firm.world.clio.calls.count("POST", POST_ACTIVITY) == 8 - posted_before


def test_a_dead_runs_post_that_lands_late_is_found_not_posted_again(
        firm: Firm, database_url: str, db_engine: Any) -> None:
    """``hardcost sync`` is killed while Clio holds its POST, and Clio applies the POST after
    the process is gone. The next run, started at once, does not post the entry again: the
    dead run's link is young, so the run waits (``late_write``) and finds it by its marker."""
    from datetime import timedelta

    from hardcost.sync.leases import settle_abandoned_runs
    from tests.firmkit import lapse_leases

    firm.expense(("125.00", "Jane Smith", "Filing fee"))
    firm.world.clio.faults.add(Fault(path=POST_ACTIVITY, method="POST", passthrough=True,
                                     delay=1.5))
    _kill_sync_once(firm, database_url, lambda: not firm.world.clio.faults.pending(),
                    "Clio to hold the POST")
    lapse_leases(firm)
    settle_abandoned_runs(db_engine)  # the dead run is over: its link is an orphan
    firm.engine.late_write = timedelta(seconds=3)

    summary = firm.run()
    time.sleep(1.6)  # the held POST has landed by now, whatever the run did

    assert len(firm.entries()) == 1, firm.entries()
    [link] = firm.links()
    assert link.state == LinkState.CREATED
    assert link.clio_activity_id == firm.entries()[0]["id"]
    assert summary.error is None

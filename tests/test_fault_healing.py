"""Clio faults heal within the run: a flaky Clio still gets every new purchase exactly once.

The issue: "With 20% of Clio calls failing (429, 500, 502, timeouts), one run brings every new
purchase in exactly once." The sandbox Clio fails a seeded fifth of its calls with every kind
of ``FAULT_KINDS``; the client's waits and read timeout are made short so the run is quick.
"""

from __future__ import annotations

import re
import time
from collections import Counter

import pytest

from hardcost.sandbox.clio import (
    FAULT_KINDS,
    LATE_REPLY,
    LOST_REPLY,
    random_faults,
    server_error_fault,
)
from hardcost.sandbox.faults import Fault
from hardcost.sync.rules import QboKey
from hardcost.sync.store import LinkState
from hardcost.sync.writer import HEAL_TRIES
from tests.firmkit import Firm

POST_ACTIVITY = r"/api/v4/activities\.json$"
MARKER = re.compile(r"\[qbo [^\]]+\]")
READ_TIMEOUT = 1.0  # the client's: well above a loaded sandbox's slowest real answer
HANG = 1.5  # a sandbox timeout holds the reply longer than READ_TIMEOUT
PURCHASES = 60
FAULT_SEED = 20


@pytest.fixture
def firm(firm: Firm) -> Firm:
    """The conftest firm, with Clio's rate limit out of the way (the 429s here are injected)
    and the Clio client's read timeout short."""
    firm.world.clio.rate_limit_per_minute = 1_000_000
    firm.world.clio_timeout = (5.0, READ_TIMEOUT)
    return firm


def markers_in_clio(firm: Firm) -> Counter[str]:
    found = (MARKER.search(entry.get("note") or "") for entry in firm.entries())
    return Counter(match.group() for match in found if match)


def marker_lookups(firm: Firm) -> int:
    return sum(1 for call in firm.world.clio.calls.all()
               if call.method == "GET" and re.search(POST_ACTIVITY, call.path)
               and "query=" in call.query)


def test_one_run_with_a_fifth_of_clio_calls_failing_brings_every_purchase_in_exactly_once(
        firm: Firm) -> None:
    wanted = set()
    for n in range(PURCHASES):
        name = f"Client {n:02d}"
        firm.client(name, [f"{name} matter"])
        purchase = firm.expense((f"{n + 10}.25", name, "Filing fee"))
        wanted.add(QboKey(firm.qbo.realm_id, purchase["Id"], firm.customers[name]).marker)
    faults = random_faults(0.2, seed=FAULT_SEED, hang=HANG)
    firm.world.clio.faults.random = faults

    summary = firm.run()

    in_clio = markers_in_clio(firm)
    assert set(in_clio) == wanted  # none missing, none unexpected
    assert [m for m, n in in_clio.items() if n > 1] == []  # none twice
    links = firm.links()
    assert len(links) == PURCHASES
    assert {link.state for link in links} == {LinkState.CREATED}
    assert {link.clio_activity_id for link in links} == {e["id"] for e in firm.entries()}
    assert firm.open_failures() == []
    assert summary.error is None
    assert (summary.imported, summary.failed) == (PURCHASES, 0)
    # The run really met a flaky Clio: every kind of fault, and writes that landed without a
    # reply, which only a look-up by marker can settle.
    assert set(faults.injected) == set(FAULT_KINDS), faults.injected
    assert faults.by_method[(LOST_REPLY, "POST")] + faults.by_method[(LATE_REPLY, "POST")] > 0
    assert marker_lookups(firm) > 0


def test_a_lost_reply_inside_a_run_is_found_by_marker_and_not_posted_again(firm: Firm) -> None:
    firm.client("Jane Smith", ["Smith estate"])
    firm.expense(("40.00", "Jane Smith"))
    firm.world.clio.faults.add(server_error_fault(502, path=POST_ACTIVITY, method="POST",
                                                  after_handler=True))

    summary = firm.run()

    assert len(firm.entries()) == 1
    assert firm.world.clio.calls.count("POST", POST_ACTIVITY) == 1
    assert marker_lookups(firm) == 1
    [link] = firm.links()
    assert (link.state, link.clio_activity_id) == (LinkState.CREATED, firm.entries()[0]["id"])
    assert (summary.imported, summary.failed) == (1, 0)
    assert firm.open_failures() == []


@pytest.mark.parametrize("failed_lookups", [1, HEAL_TRIES - 1], ids=["one", "all"])
def test_a_marker_look_up_that_fails_is_a_failed_try_and_nothing_is_posted_blind(
        firm: Firm, failed_lookups: int) -> None:
    """The POST took effect but its reply was lost; then the look-up by marker fails all its
    retries. The next try looks again before it posts: found, it is recorded; never found
    within the run, the link stays pending (the entry may be there) and nothing is posted
    again."""
    firm.client("Jane Smith", ["Smith estate"])
    firm.expense(("40.00", "Jane Smith"))
    clio = firm.world.clio
    clio.faults.add(server_error_fault(502, path=POST_ACTIVITY, method="POST",
                                       after_handler=True))
    clio.faults.add(server_error_fault(500, times=failed_lookups * firm.world.retry.attempts,
                                       path=POST_ACTIVITY, method="GET"))

    summary = firm.run()

    assert len(firm.entries()) == 1
    assert clio.calls.count("POST", POST_ACTIVITY) == 1
    [link] = firm.links()
    if failed_lookups < HEAL_TRIES - 1:
        assert (link.state, link.clio_activity_id) == (LinkState.CREATED,
                                                       firm.entries()[0]["id"])
        assert (summary.imported, summary.failed) == (1, 0)
        return
    assert link.state == LinkState.PENDING
    assert (summary.imported, summary.failed) == (0, 1)
    firm.later()
    firm.run()
    assert len(firm.entries()) == 1
    assert [link.state for link in firm.links()] == [LinkState.CREATED]
    assert firm.open_failures() == []


@pytest.mark.parametrize("last_try_landed", [False, True], ids=["never-landed", "last-landed"])
def test_when_every_try_fails_the_link_stays_pending_and_the_next_run_settles_it(
        firm: Firm, last_try_landed: bool) -> None:
    """Every try of the POST fails with a 5xx, so Clio may or may not hold the entry (the last
    try's reply was lost after it took effect, or none took): the link stays pending, and the
    next run finds the entry by its marker or posts it once."""
    firm.client("Jane Smith", ["Smith estate"])
    firm.expense(("40.00", "Jane Smith"))
    clio = firm.world.clio
    clio.faults.add(server_error_fault(500, times=HEAL_TRIES - 1, path=POST_ACTIVITY,
                                       method="POST"))
    clio.faults.add(server_error_fault(502, path=POST_ACTIVITY, method="POST",
                                       after_handler=last_try_landed))

    first = firm.run()

    assert clio.calls.count("POST", POST_ACTIVITY) == HEAL_TRIES
    assert len(firm.entries()) == (1 if last_try_landed else 0)
    assert [link.state for link in firm.links()] == [LinkState.PENDING]
    assert (first.imported, first.failed) == (0, 1)
    assert first.failures[0].kind == "transient"

    firm.later()
    clio.calls.clear()
    second = firm.run()

    assert len(firm.entries()) == 1
    assert clio.calls.count("POST", POST_ACTIVITY) == (0 if last_try_landed else 1)
    [link] = firm.links()
    assert (link.state, link.clio_activity_id) == (LinkState.CREATED, firm.entries()[0]["id"])
    assert second.error is None and second.failed == 0
    assert firm.open_failures() == []


def answered_everything(firm: Firm) -> None:
    """Wait until the sandbox has answered every request the client sent (late ones too)."""
    deadline = time.monotonic() + 10 * HANG
    while len(firm.world.clio.calls.all()) < firm.engine.clio.calls:
        assert time.monotonic() < deadline, "the sandbox never answered a held request"
        time.sleep(0.05)


def test_a_post_clio_applies_after_the_client_gave_up_is_not_posted_again(firm: Firm) -> None:
    """Clio holds the POST past the client's read timeout, then applies it (the sandbox's
    ``SLOW_WRITE``): the run waits as long again before it looks the entry up, finds it and
    does not post it again."""
    firm.client("Jane Smith", ["Smith estate"])
    firm.expense(("40.00", "Jane Smith"))
    firm.world.clio.faults.add(Fault(path=POST_ACTIVITY, method="POST", delay=HANG,
                                     passthrough=True))

    firm.run()
    answered_everything(firm)

    assert list(markers_in_clio(firm).values()) == [1]

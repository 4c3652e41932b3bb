"""The exactly-once writer alone (sync/writer.py): a pending link before the POST, one entry
per line whatever calls it twice, a refused POST leaves nothing, a dead writer's links settled
by what Clio holds."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest

from hardcost.sandbox.faults import Fault
from hardcost.sync.http import ApiError
from hardcost.sync.run_state import Queued
from hardcost.sync.store import LinkState
from hardcost.sync.writer import PENDING_GRACE, AlreadyImported
from tests.firmkit import Firm, price
from tests.partkit import Parts, parts

POST = r"/api/v4/activities\.json$"


@pytest.fixture
def kit(firm: Firm) -> Parts:
    firm.client("Jane Smith", ["Smith estate"])
    return parts(firm)


def test_a_line_is_written_once_however_often_it_is_written(kit: Parts) -> None:
    firm = kit.firm
    [entry] = kit.planned(firm.expense(("125.00", "Jane Smith", "Filing fee"))["Id"])
    matter = firm.matters["Smith estate"]
    activity = kit.writer.write(kit.state, entry, matter, resolution="imported")
    with pytest.raises(AlreadyImported):
        kit.writer.write(kit.state, entry, matter, resolution="imported")
    [link] = firm.links()
    assert (link.state, link.clio_activity_id, link.amount) == \
        (LinkState.CREATED, activity.id, Decimal("125.00"))
    [written] = firm.entries()
    assert written["id"] == activity.id and price(written) == Decimal("125.00")
    assert entry.marker in written["note"]


def test_the_pending_link_is_committed_before_the_post(kit: Parts) -> None:
    firm = kit.firm
    [entry] = kit.planned(firm.expense(("40.00", "Jane Smith"))["Id"])
    firm.world.clio.faults.add(Fault(path=POST, method="POST", passthrough=True, delay=1.0))
    writing = threading.Thread(target=kit.writer.write, args=(kit.state, entry,
                                                              firm.matters["Smith estate"]),
                               kwargs={"resolution": "imported"})
    writing.start()
    deadline = time.monotonic() + 10
    while firm.world.clio.faults.pending():  # the POST is held by Clio now
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert [link.state for link in firm.links()] == [LinkState.PENDING]
    assert firm.entries() == []
    writing.join(10)
    assert [link.state for link in firm.links()] == [LinkState.CREATED]


def test_a_refused_post_leaves_no_link_and_no_entry(kit: Parts) -> None:
    firm = kit.firm
    [entry] = kit.planned(firm.expense(("40.00", "Jane Smith"))["Id"])
    firm.world.clio.faults.add(Fault(path=POST, method="POST", status=422,
                                     body='{"error": {"message": "Price is invalid"}}'))
    with pytest.raises(ApiError):
        kit.writer.write(kit.state, entry, firm.matters["Smith estate"], resolution="imported")
    assert firm.links() == [] and firm.entries() == []
    # Nothing stands in the way of the next try.
    kit.writer.write(kit.state, entry, firm.matters["Smith estate"], resolution="imported")
    assert len(firm.entries()) == 1


def test_a_batch_writes_each_line_once_and_counts_it(kit: Parts) -> None:
    firm = kit.firm
    entries = kit.planned(firm.expense(("10.00", "Jane Smith", "a"))["Id"]) + \
        kit.planned(firm.expense(("20.00", "Jane Smith", "b"))["Id"])
    matter = firm.matters["Smith estate"]
    for entry in entries:
        kit.writer.queue(kit.state, Queued(entry, matter, "Smith estate", None))
    kit.writer.queue(kit.state, Queued(entries[0], matter, "Smith estate", None))  # twice
    kit.writer.flush(kit.state)
    assert sorted(price(e) for e in firm.entries()) == [Decimal("10.00"), Decimal("20.00")]
    assert kit.state.summary.imported == 2 and kit.state.summary.unchanged == 1
    assert kit.state.batch == [] and "writing" in kit.stages
    assert {link.state for link in firm.links()} == {LinkState.CREATED}


def test_a_dead_writers_links_are_settled_by_what_clio_holds(kit: Parts) -> None:
    firm = kit.firm
    posted_id = firm.expense(("30.00", "Jane Smith", "posted"))["Id"]
    lost_id = firm.expense(("50.00", "Jane Smith", "never sent"))["Id"]
    [posted], [lost] = kit.planned(posted_id), kit.planned(lost_id)
    matter = firm.matters["Smith estate"]
    # A writer died after Clio took the first POST, and before it sent the second.
    kit.writer.write(kit.state, posted, matter, resolution="imported")
    for link in firm.links():
        with firm.sessions() as session:
            row = session.get(type(link), link.id)
            assert row is not None
            row.state = LinkState.PENDING
            row.clio_activity_id = None
            session.commit()
    assert kit.writer._insert_pending(lost, matter, None) is not None  # died before its POST

    kit.ahead = PENDING_GRACE + timedelta(seconds=1)  # no live process can be writing them
    refetch = kit.writer.recover_pending(kit.state)
    assert refetch == {lost_id}  # read again and posted once by the run
    [link] = firm.links()
    [entry] = firm.entries()
    assert (link.purchase_id, link.state, link.clio_activity_id) == \
        (posted_id, LinkState.CREATED, entry["id"])

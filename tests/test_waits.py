"""The waits alone (sync/waits.py): one question per line, asked again only when it changed,
closed for good once answered, and settled by the writer's records."""

from __future__ import annotations

import pytest

from hardcost.sync import waits
from hardcost.sync.clio import Contact
from hardcost.sync.matching import Resolution
from hardcost.sync.store import WaitingExpense, WaitReason, utcnow
from tests.firmkit import Firm
from tests.partkit import Parts, parts


@pytest.fixture
def kit(firm: Firm) -> Parts:
    firm.client("Jane Smith", ["Smith estate", "Smith divorce"])
    return parts(firm)


def _several(firm: Firm) -> Resolution:
    contact = Contact(firm.contacts["Jane Smith"], "Jane Smith", "", None)
    return Resolution(contact=contact, reason=WaitReason.SEVERAL_MATTERS,
                      candidates=[{"kind": "matter", "id": firm.matters[m], "label": m}
                                  for m in ("Smith estate", "Smith divorce")])


def test_a_question_is_asked_once_and_counted_as_still_waiting(kit: Parts) -> None:
    firm = kit.firm
    purchase_id = firm.expense(("75.00", "Jane Smith"))["Id"]
    [entry] = kit.planned(purchase_id)
    kit.waits.ask(kit.state, entry, _several(firm), dry_run=False)
    kit.waits.ask(kit.state, entry, _several(firm), dry_run=False)
    summary = kit.state.summary
    assert (summary.waiting, summary.still_waiting) == (1, 1)
    [row] = firm.waiting()
    assert row.reason == WaitReason.SEVERAL_MATTERS.value
    with firm.sessions() as session:
        assert list(kit.waits.open_of(session, row.realm_id, [purchase_id])) == [purchase_id]


def test_an_answered_question_is_not_asked_again(kit: Parts) -> None:
    firm = kit.firm
    [entry] = kit.planned(firm.expense(("75.00", "Jane Smith"))["Id"])
    kit.waits.ask(kit.state, entry, _several(firm), dry_run=False)
    with firm.sessions() as session:  # the writer records the person's choice
        waits.settle_one(session, firm.id, entry.key, utcnow(), resolution="linked",
                         resolved_by="U1", clio_activity_id=9,
                         clio_matter_id=firm.matters["Smith estate"])
        session.commit()
    assert firm.waiting() == []
    kit.waits.ask(kit.state, entry, _several(firm), dry_run=False)
    assert firm.waiting() == [] and kit.state.summary.unchanged == 1
    with firm.sessions() as session:
        [row] = session.query(WaitingExpense).all()
        assert waits.answered_for_good(row, entry)
        assert (row.resolution, row.resolved_by, row.clio_activity_id) == ("linked", "U1", 9)


def test_a_dry_run_asks_nobody(kit: Parts) -> None:
    firm = kit.firm
    [entry] = kit.planned(firm.expense(("75.00", "Jane Smith"))["Id"])
    kit.waits.ask(kit.state, entry, _several(firm), dry_run=True)
    assert firm.waiting() == [] and kit.state.summary.waiting == 1

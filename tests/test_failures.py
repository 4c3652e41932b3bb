"""The failures alone (sync/failures.py): one row per line and reason, counted while it
recurs, closed once its purchase reads clean, and retried only when it was not the data."""

from __future__ import annotations

import pytest

from hardcost.sync.rules import LineFailure
from hardcost.sync.store import FailureKind
from tests.firmkit import Firm
from tests.partkit import Parts, parts


@pytest.fixture
def kit(firm: Firm) -> Parts:
    return parts(firm)


def _failure(purchase_id: str, code: str = "no_amount") -> LineFailure:
    return LineFailure(purchase_id, code, f"Expense #{purchase_id} has no amount.", "c1", "1")


def test_a_recurring_failure_is_one_row_counted_again(kit: Parts) -> None:
    kit.failures.record(kit.state, _failure("11"), FailureKind.DATA, False)
    kit.failures.record(kit.state, _failure("11"), FailureKind.DATA, False)
    [row] = kit.firm.open_failures()
    assert (row.purchase_id, row.occurrences, row.kind) == ("11", 2, "data")
    assert (kit.state.summary.failed, kit.state.summary.still_failing) == (1, 1)
    assert [item.new for item in kit.state.summary.failures] == [True, False]


def test_a_failure_that_did_not_recur_is_closed(kit: Parts) -> None:
    kit.failures.record(kit.state, _failure("11"), FailureKind.DATA, False)
    kit.failures.record(kit.state, _failure("12"), FailureKind.TRANSIENT, False)
    kit.state.raised = {("12", "c1", "1", "no_amount")}  # this run raised 12 again, not 11
    kit.failures.close_settled(kit.state, ["11", "12", "13"])
    assert [row.purchase_id for row in kit.firm.open_failures()] == ["12"]


def test_only_failures_of_a_service_or_a_setting_are_retried(kit: Parts) -> None:
    kit.failures.record(kit.state, _failure("11"), FailureKind.DATA, False)
    kit.failures.record(kit.state, _failure("12", "clio_500"), FailureKind.TRANSIENT, False)
    kit.failures.record(kit.state, _failure("13", "clio_403"), FailureKind.CONFIG, False)
    assert kit.failures.to_retry() == {"12", "13"}


def test_a_dry_run_records_nothing(kit: Parts) -> None:
    kit.failures.record(kit.state, _failure("11"), FailureKind.DATA, True)
    assert kit.firm.open_failures() == [] and kit.state.summary.failed == 1

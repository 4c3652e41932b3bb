"""Purchases deleted or voided in QuickBooks after import (docs/purchases.md, "Deletions and
voids"), found by the CDC sweep of every run, by a reconciliation pass when CDC can't answer for the
whole time, or by a read that shows a void: the unbilled Clio entry is deleted, a billed one is kept
and reported."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import select

from hardcost.sandbox.clio import server_error_fault
from hardcost.sandbox.qbo import account_line
from hardcost.sandbox.slack_rig import SlackRig, wait_for
from hardcost.sync.removals import REMOVALS_STREAM
from hardcost.sync.store import LinkState, PurchaseRemoval, Watermark
from tests.firmkit import Firm

CDC = r"/cdc$"
ACTIVITY = r"/activities/\d+\.json$"


def _imported(firm: Firm, *amounts: str) -> list[dict[str, Any]]:
    """Expenses for Jane Smith (one matter), imported, with the first sweep mark set."""
    firm.client("Jane Smith", ["Smith estate"])
    purchases = [firm.expense((amount, "Jane Smith"), doc_number=f"10{n}")
                 for n, amount in enumerate(amounts)]
    first = firm.run()
    assert first.imported == len(amounts)
    firm.later()
    return purchases


def _removals(firm: Firm) -> list[PurchaseRemoval]:
    with firm.sessions() as session:
        return list(session.scalars(select(PurchaseRemoval).where(
            PurchaseRemoval.firm_id == firm.id).order_by(PurchaseRemoval.id)))


def _set_sweep_mark(firm: Firm, value: str) -> None:
    with firm.sessions() as session:
        mark = session.scalars(select(Watermark).where(
            Watermark.firm_id == firm.id, Watermark.stream == REMOVALS_STREAM)).one()
        mark.value = value
        session.commit()


def _entry_ids(firm: Firm) -> set[int]:
    return {a["id"] for a in firm.entries()}


# -- the CDC sweep -----------------------------------------------------------------------------

def test_a_purchase_deleted_in_quickbooks_is_deleted_from_clio_by_the_next_run(
        firm: Firm) -> None:
    kept, gone = _imported(firm, "10.00", "20.00")
    [gone_link] = [link for link in firm.links() if link.purchase_id == gone["Id"]]
    firm.qbo.delete_purchase(gone["Id"])
    firm.later()

    summary = firm.run()

    assert summary.deleted == 1 and summary.kept == 0
    assert _entry_ids(firm) == {link.clio_activity_id for link in firm.links()
                                if link.purchase_id == kept["Id"]}
    assert gone_link.clio_activity_id not in _entry_ids(firm)
    [item] = summary.removed_items
    assert (item.purchase_id, item.kind, item.outcome) == (gone["Id"], "deleted", "deleted")
    assert item.amount == Decimal("20.00")
    assert firm.world.qbo.calls.count("GET", CDC) >= 1
    states = {link.purchase_id: link.state for link in firm.links()}
    assert states == {kept["Id"]: LinkState.CREATED, gone["Id"]: LinkState.DELETED}
    [removal] = _removals(firm)
    assert removal.source == "cdc" and removal.handled_at is not None
    assert summary.did_something


def test_a_deletion_is_dealt_with_once(firm: Firm) -> None:
    [purchase] = _imported(firm, "10.00")
    firm.qbo.delete_purchase(purchase["Id"])
    firm.later()
    firm.run()
    deletes = firm.world.clio.calls.count("DELETE", ACTIVITY)

    again = firm.run()  # the deletion is still inside CDC's answer (the margin)
    firm.later()
    third = firm.run()

    assert deletes == 1
    assert firm.world.clio.calls.count("DELETE", ACTIVITY) == 1
    assert again.removed_items == [] and third.removed_items == []
    assert third.clio_calls == 0 and not third.did_something
    assert len(_removals(firm)) == 1


def test_a_billed_entry_is_kept_and_reported(firm: Firm) -> None:
    [purchase] = _imported(firm, "75.00")
    [link] = firm.links()
    assert link.clio_activity_id is not None
    firm.clio.mark_billed(link.clio_activity_id, state="awaiting_payment")
    firm.qbo.delete_purchase(purchase["Id"])
    firm.later()

    summary = firm.run()

    assert firm.world.clio.calls.count("DELETE", ACTIVITY) == 0
    assert _entry_ids(firm) == {link.clio_activity_id}
    assert summary.deleted == 0 and summary.kept == 1
    [item] = summary.removed_items
    assert item.outcome == "kept_billed" and "bill #" in item.note
    assert "awaiting payment" in item.note
    assert firm.links()[0].state == LinkState.KEPT
    assert summary.did_something  # the channel hears about it
    firm.later()
    assert firm.run().removed_items == []  # reported once


def test_a_draft_bill_keeps_the_entry_too(firm: Firm) -> None:
    [purchase] = _imported(firm, "75.00")
    [link] = firm.links()
    assert link.clio_activity_id is not None
    firm.clio.mark_billed(link.clio_activity_id, state="draft")
    firm.qbo.delete_purchase(purchase["Id"])
    firm.later()

    summary = firm.run()

    assert [i.outcome for i in summary.removed_items] == ["kept_billed"]
    assert _entry_ids(firm) == {link.clio_activity_id}


def test_deletions_set_to_alert_keep_the_entry_and_report_it(firm: Firm) -> None:
    [purchase] = _imported(firm, "12.50")
    firm.update_settings(deletions="alert")
    firm.qbo.delete_purchase(purchase["Id"])
    firm.later()

    summary = firm.run()

    assert len(firm.entries()) == 1
    assert [i.outcome for i in summary.removed_items] == ["kept_alert"]
    assert summary.kept == 1 and "alert" in summary.removed_items[0].note


def test_an_entry_already_removed_in_clio_is_noted_not_an_error(firm: Firm) -> None:
    [purchase] = _imported(firm, "12.50")
    [link] = firm.links()
    assert link.clio_activity_id is not None
    del firm.clio.activities[link.clio_activity_id]
    firm.qbo.delete_purchase(purchase["Id"])
    firm.later()

    summary = firm.run()

    assert [i.outcome for i in summary.removed_items] == ["already_gone"]
    assert summary.failed == 0 and firm.open_failures() == []
    assert firm.links()[0].state == LinkState.DELETED


def test_a_voided_purchase_read_by_the_run_deletes_its_entry(firm: Firm) -> None:
    [purchase] = _imported(firm, "40.00")
    firm.qbo.void_purchase(purchase["Id"])
    firm.later()

    summary = firm.run()

    assert firm.entries() == []
    assert [(i.kind, i.outcome) for i in summary.removed_items] == [("voided", "deleted")]
    assert _removals(firm)[0].kind == "voided"


def test_a_deleted_purchase_that_was_never_imported_needs_nothing(firm: Firm) -> None:
    firm.client("Jane Smith", ["Smith estate"])
    other = firm.qbo.add_purchase(payment_type="Cash", txn_date="2026-02-03", lines=[
        account_line("5.00", firm.other_account)])
    firm.run()
    firm.later()
    firm.qbo.delete_purchase(other["Id"])
    firm.later()

    summary = firm.run()

    assert summary.removed_items == [] and _removals(firm) == []
    assert summary.clio_calls == 0


def test_a_clio_failure_while_deleting_is_retried_by_the_next_run(firm: Firm) -> None:
    [purchase] = _imported(firm, "33.00")
    firm.qbo.delete_purchase(purchase["Id"])
    firm.later()
    firm.world.clio.faults.add(server_error_fault(503, times=10, path=ACTIVITY))

    first = firm.run()

    assert len(firm.entries()) == 1
    assert first.deleted == 0 and first.failed == 1
    [failure] = firm.open_failures()
    assert "could not be removed" in failure.message and failure.kind == "transient"
    [removal] = _removals(firm)
    assert removal.handled_at is None and removal.attempts == 1
    firm.world.clio.faults.clear()
    firm.later()

    second = firm.run()

    assert firm.entries() == []
    assert second.deleted == 1
    assert firm.open_failures() == []
    assert _removals(firm)[0].handled_at is not None


def test_clio_being_down_stops_the_removals_after_the_first_failure(firm: Firm) -> None:
    purchases = _imported(firm, "1.00", "2.00", "3.00")
    for purchase in purchases:
        firm.qbo.delete_purchase(purchase["Id"])
    firm.later()
    firm.world.clio.faults.add(server_error_fault(503, times=1000, path=ACTIVITY))

    first = firm.run()

    assert first.failed == 1 and len(firm.entries()) == 3
    assert [r.attempts for r in _removals(firm)] == [1, 0, 0]
    firm.world.clio.faults.clear()
    firm.later()
    second = firm.run()
    assert second.deleted == 3 and firm.entries() == []
    assert firm.open_failures() == []


def test_a_waiting_expense_whose_purchase_is_deleted_stops_waiting(firm: Firm) -> None:
    firm.client("Acme Holdings", ["Lease", "Employment"])
    purchase = firm.expense(("48.75", "Acme Holdings"))
    assert firm.run().waiting == 1
    firm.later()
    firm.qbo.delete_purchase(purchase["Id"])
    firm.later()

    summary = firm.run()

    assert firm.waiting() == [] and firm.entries() == []
    assert summary.removed_items == []  # nothing was in Clio
    [removal] = _removals(firm)
    assert removal.handled_at is not None


# -- CDC's limits ------------------------------------------------------------------------------

def test_a_saturated_cdc_answer_is_followed_from_its_newest_change(firm: Firm) -> None:
    [purchase] = _imported(firm, "10.00")
    account = firm.other_account
    for _ in range(1100):  # other changes first, one per second, then the deletion
        firm.qbo.add_purchase(payment_type="Cash", txn_date="2026-02-03", lines=[
            account_line("1.00", account)])
        firm.world.clock.advance(1)
    firm.qbo.delete_purchase(purchase["Id"])
    firm.later()

    summary = firm.run()

    assert firm.entries() == []
    assert firm.world.qbo.calls.count("GET", CDC) >= 2
    assert summary.reconciled is None  # the split answered for the whole window
    assert summary.deleted == 1


def test_changes_cdc_cannot_split_lead_to_comparing_every_purchase(firm: Firm) -> None:
    [purchase] = _imported(firm, "10.00")
    account = firm.other_account
    added = [firm.qbo.add_purchase(payment_type="Cash", txn_date="2026-02-03", lines=[
        account_line("1.00", account)]) for _ in range(1001)]
    # More than one answer holds, all stamped in the same second (set outright: the sandbox
    # clock is real time, and a loaded machine may cross a second while adding them).
    stamp = added[0]["MetaData"]["LastUpdatedTime"]
    for record in added:
        firm.qbo.purchases[record["Id"]]["MetaData"]["LastUpdatedTime"] = stamp
    firm.qbo.delete_purchase(purchase["Id"])
    firm.later()

    summary = firm.run()

    assert summary.reconciled is not None and summary.reconciled.reason == "saturated"
    assert summary.reconciled.checked == 1 and summary.reconciled.removed == 1
    assert firm.entries() == []


def test_a_firm_offline_for_over_30_days_is_reconciled_and_told(firm: Firm) -> None:
    kept, gone = _imported(firm, "10.00", "20.00")
    firm.qbo.delete_purchase(gone["Id"])
    firm.world.clock.advance(40 * 86400)  # the deletion is now older than CDC remembers
    cdc_before = firm.world.qbo.calls.count("GET", CDC)

    summary = firm.run()

    assert firm.world.qbo.calls.count("GET", CDC) == cdc_before  # not asked: it can't answer
    assert summary.reconciled is not None
    assert summary.reconciled.reason == "offline"
    assert (summary.reconciled.checked, summary.reconciled.removed) == (2, 1)
    assert summary.deleted == 1 and len(firm.entries()) == 1
    assert summary.did_something
    firm.later()
    follow_up = firm.run()
    assert follow_up.reconciled is None and firm.world.qbo.calls.count("GET", CDC) > cdc_before


def test_cdc_refusing_the_window_falls_back_to_comparing(firm: Firm) -> None:
    [purchase] = _imported(firm, "10.00")
    firm.qbo.delete_purchase(purchase["Id"])
    firm.later()
    # A mark QuickBooks considers too old although hardcost's margin did not (clock skew).
    stale = (firm.world.clock.now().replace(microsecond=0)).isoformat()
    _set_sweep_mark(firm, stale)
    firm.world.qbo.faults.add(path=CDC, status=400, body=(
        '{"Fault": {"Error": [{"Message": "Request has invalid or unsupported property", '
        '"Detail": "changedSince must be within 30 days", "code": "2010"}], '
        '"type": "ValidationFault"}, "time": "2026-02-03T10:00:00-08:00"}'))

    summary = firm.run()

    assert summary.reconciled is not None and summary.reconciled.reason == "refused"
    assert firm.entries() == []


def test_dry_run_sweeps_nothing_and_deletes_nothing(firm: Firm) -> None:
    [purchase] = _imported(firm, "10.00")
    firm.qbo.delete_purchase(purchase["Id"])
    firm.later()
    cdc_before = firm.world.qbo.calls.count("GET", CDC)

    summary = firm.run(dry_run=True)

    assert len(firm.entries()) == 1 and summary.removed_items == []
    assert firm.world.qbo.calls.count("GET", CDC) == cdc_before


# -- Slack ------------------------------------------------------------------------------------

def test_the_summary_and_thread_report_deleted_and_kept_entries(rig: SlackRig) -> None:
    firm = rig.firm
    gone, billed = _imported(firm, "10.00", "20.00")
    [billed_link] = [link for link in firm.links() if link.purchase_id == billed["Id"]]
    assert billed_link.clio_activity_id is not None
    firm.clio.mark_billed(billed_link.clio_activity_id, state="paid")
    firm.qbo.delete_purchase(gone["Id"])
    firm.qbo.delete_purchase(billed["Id"])
    firm.later()
    before = len(rig.channel_messages())

    assert rig.command("run").status_code == 200

    summary = wait_for(lambda: next((m for m in rig.channel_messages()[before:]
                                     if "Deleted from Clio" in str(m.get("blocks"))), None),
                       what="the run summary")
    text = str(summary["blocks"])
    assert "Left in Clio" in text
    details = wait_for(lambda: (text := " ".join(
        str(m.get("blocks")) for m in rig.ws.thread(rig.channel, summary["ts"])[1:]))
        and "Gone from QuickBooks" in text and text, what="the details in the thread")
    assert f"Clio #{billed_link.clio_activity_id}" in details and "on a bill" in details
    assert "credit or adjust the bill" in details


def test_a_prompt_whose_purchase_is_deleted_loses_its_buttons(rig: SlackRig) -> None:
    firm = rig.firm
    firm.client("Acme Holdings", ["Lease", "Employment"])
    purchase = firm.expense(("48.75", "Acme Holdings"))
    assert rig.command("run").status_code == 200
    prompt = wait_for(lambda: rig.prompts()[0] if rig.prompts() else None, what="the prompt")
    firm.later()
    firm.qbo.delete_purchase(purchase["Id"])
    firm.later()

    assert rig.command("run").status_code == 200

    updated = wait_for(lambda: (m := rig.ws.message(rig.channel, prompt["ts"]))
                       and m.get("updated") and m, what="the prompt updated")
    text = str(updated["blocks"])
    assert "Deleted in QuickBooks" in text
    assert "hc_choose_matter" not in text


def test_status_tells_of_deletions_clio_did_not_take_yet(rig: SlackRig) -> None:
    firm = rig.firm
    [purchase] = _imported(firm, "9.00")
    firm.qbo.delete_purchase(purchase["Id"])
    firm.later()
    firm.world.clio.faults.add(server_error_fault(503, times=1000, path=ACTIVITY))
    firm.run()

    rig.command("status")

    reply = wait_for(lambda: next((m for m in rig.replies_to(rig.admin)
                                   if "could not be removed yet" in str(m.get("blocks"))), None),
                     what="the status reply")
    assert "1 expense(s) deleted or voided in QuickBooks" in str(reply["blocks"])
    firm.world.clio.faults.clear()
    firm.later()
    firm.run()
    rig.command("status")
    last = wait_for(lambda: next((m for m in rig.replies_to(rig.admin)[1:]
                                  if "QuickBooks" in str(m.get("blocks"))), None))
    assert "could not be removed yet" not in str(last["blocks"])
    assert "1 deleted from Clio" in str(last["blocks"])

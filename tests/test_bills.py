"""Vendor Bills (docs/purchases.md "Vendor Bills", issue 17), over real HTTP against the sandbox
QuickBooks and Clio: imported on entry or once fully paid (dated the payment), edits, deletions and
voids followed into Clio, nothing read from Bills with ``bills off``, and a quiet run stays at three
QuickBooks calls."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
import requests
from sqlalchemy import select

from hardcost.sandbox.qbo import account_line, item_line
from hardcost.sandbox.slack_rig import SlackRig, button_value, wait_for
from hardcost.sync.store import AuditEntry, FirmSettings, LinkState, WaitReason
from hardcost.sync.webhooks import process_pending
from tests.crashkit import MOMENTS, crash_mid_write
from tests.firmkit import Firm, price

ACTIVITY = r"/activities/\d+\.json$"


def _vendor(firm: Firm, name: str = "Dr. Expert LLC") -> str:
    """The vendor of that name, added the first time."""
    found = [v for v in firm.qbo.records("Vendor") if v["DisplayName"] == name]
    return str(found[0]["Id"] if found else firm.qbo.add_vendor(name)["Id"])


def _bill(firm: Firm, *lines: tuple[str, str] | tuple[str, str, str], vendor: str | None = None,
          txn_date: str = "2026-02-03", doc_number: str | None = "INV-77",
          **kwargs: Any) -> dict[str, Any]:
    """A Bill with import-account lines given as (amount, customer name[, description])."""
    built = [account_line(line[0], firm.import_account, customer_id=firm.customers[line[1]],
                          description=line[2] if len(line) > 2 else None)
             for line in lines]
    return firm.qbo.add_bill(lines=built, vendor_id=vendor or _vendor(firm), txn_date=txn_date,
                             doc_number=doc_number, **kwargs)


def _with_bills(firm: Firm, mode: str = "on-entry") -> Firm:
    firm.update_settings(bills=mode)
    firm.client("Jane Smith", ["Smith estate"])
    return firm


def _bill_queries(firm: Firm) -> int:
    return sum(1 for call in firm.world.qbo.calls.all()
               if call.path.endswith("/query") and "FROM Bill " in (call.statement or ""))


# -- on entry ----------------------------------------------------------------------------------

def test_a_bill_is_imported_on_entry_with_the_vendor_as_payee_and_its_number(
        firm: Firm) -> None:
    _with_bills(firm)
    vendor = _vendor(firm, "Court Reporters Inc")
    expert = firm.clio.add_contact("Court Reporters Inc", type="Company")
    bill = _bill(firm, ("850.00", "Jane Smith", "Deposition transcript"), vendor=vendor,
                 doc_number="CR-2210")

    summary = firm.run()

    assert summary.imported == 1 and summary.imported_bills == 1
    [entry] = firm.entries()
    assert price(entry) == Decimal("850.00")
    assert entry["date"] == "2026-02-03"
    assert entry["reference"] == "CR-2210"
    assert entry["vendor"]["id"] == expert["id"]
    assert entry["matter"]["id"] == firm.matters["Smith estate"]
    realm = firm.qbo.realm_id
    customer = firm.customers["Jane Smith"]
    assert f"[qbo {realm}/bill-{bill['Id']}/{customer}]" in entry["note"]
    assert "Deposition transcript" in entry["note"]
    [link] = firm.links()
    assert link.purchase_id == f"bill-{bill['Id']}" and link.state == LinkState.CREATED

    firm.later()
    again = firm.run()
    assert again.imported == 0 and len(firm.entries()) == 1


def test_a_bill_and_a_purchase_with_the_same_id_make_two_entries(firm: Firm) -> None:
    _with_bills(firm)
    purchase = firm.expense(("10.00", "Jane Smith"), doc_number="1001")
    bill = _bill(firm, ("20.00", "Jane Smith"))
    assert purchase["Id"] == bill["Id"] == "1"

    summary = firm.run()

    assert summary.imported == 2 and summary.imported_bills == 1
    assert sorted(price(e) for e in firm.entries()) == [Decimal("10.00"), Decimal("20.00")]


def test_bill_lines_follow_the_purchase_rules(firm: Firm) -> None:
    """Aggregation per customer, other accounts ignored, the customer's matter."""
    _with_bills(firm)
    firm.client("Acme Holdings", ["Lease"])
    lines = [account_line("100.00", firm.import_account, customer_id=firm.customers["Jane Smith"]),
             account_line("25.50", firm.import_account, customer_id=firm.customers["Jane Smith"]),
             account_line("40.00", firm.import_account,
                          customer_id=firm.customers["Acme Holdings"]),
             account_line("999.00", firm.other_account,
                          customer_id=firm.customers["Acme Holdings"])]
    firm.qbo.add_bill(lines=lines, vendor_id=_vendor(firm), txn_date="2026-02-10")

    summary = firm.run()

    assert summary.imported == 2
    by_matter = {e["matter"]["id"]: price(e) for e in firm.entries()}
    assert by_matter == {firm.matters["Smith estate"]: Decimal("125.50"),
                         firm.matters["Lease"]: Decimal("40.00")}


def test_bills_off_imports_nothing_from_bills_and_reads_none(firm: Firm) -> None:
    firm.client("Jane Smith", ["Smith estate"])
    _bill(firm, ("850.00", "Jane Smith"))
    firm.expense(("10.00", "Jane Smith"))

    summary = firm.run()

    assert summary.imported == 1 and summary.imported_bills == 0
    assert [price(e) for e in firm.entries()] == [Decimal("10.00")]
    assert _bill_queries(firm) == 0
    assert all("Bill" not in call.query for call in firm.world.qbo.calls.all()
               if call.path.endswith("/cdc"))


# -- on payment --------------------------------------------------------------------------------

def test_on_payment_an_unpaid_bill_waits_for_payment_and_nobody_is_asked(firm: Firm) -> None:
    _with_bills(firm, "on-payment")
    bill = _bill(firm, ("600.00", "Jane Smith"))

    summary = firm.run()

    assert summary.imported == 0 and firm.entries() == []
    assert summary.waiting == 1 and summary.waiting_for_payment == 1
    [row] = firm.waiting()
    assert row.reason == WaitReason.PAYMENT.value
    assert row.purchase_id == f"bill-{bill['Id']}" and row.amount == Decimal("600.00")
    assert row.candidates == []


def test_on_payment_a_partly_paid_bill_still_waits(firm: Firm) -> None:
    _with_bills(firm, "on-payment")
    bill = _bill(firm, ("600.00", "Jane Smith"))
    firm.run()
    firm.later()

    firm.qbo.pay_bill(bill["Id"], "250.00", txn_date="2026-02-20")
    firm.later()
    summary = firm.run()

    assert summary.imported == 0 and firm.entries() == []
    [row] = firm.waiting()
    assert row.reason == WaitReason.PAYMENT.value
    assert firm.qbo.bills[bill["Id"]]["Balance"] == Decimal("350")


def test_on_payment_a_fully_paid_bill_imports_dated_the_payment_that_settled_it(
        firm: Firm) -> None:
    _with_bills(firm, "on-payment")
    bill = _bill(firm, ("600.00", "Jane Smith"), txn_date="2026-02-03")
    firm.run()
    firm.later()
    firm.qbo.pay_bill(bill["Id"], "250.00", txn_date="2026-02-20")
    firm.later()
    firm.run()
    firm.later()

    firm.qbo.pay_bill(bill["Id"], txn_date="2026-03-02")  # the rest
    firm.later()
    summary = firm.run()

    assert summary.imported == 1 and summary.imported_bills == 1
    [entry] = firm.entries()
    assert price(entry) == Decimal("600.00")
    assert entry["date"] == "2026-03-02"
    assert firm.waiting() == []
    firm.later()
    assert firm.run().imported == 0 and len(firm.entries()) == 1


def test_on_payment_a_bill_paid_before_the_first_run_imports_at_once(firm: Firm) -> None:
    _with_bills(firm, "on-payment")
    bill = _bill(firm, ("75.00", "Jane Smith"), txn_date="2026-02-03")
    firm.qbo.pay_bill(bill["Id"], txn_date="2026-02-28")

    summary = firm.run()

    [entry] = firm.entries()
    assert summary.imported_bills == 1 and entry["date"] == "2026-02-28"


def test_on_payment_a_waiting_bill_deleted_in_quickbooks_waits_no_more(firm: Firm) -> None:
    _with_bills(firm, "on-payment")
    bill = _bill(firm, ("600.00", "Jane Smith"))
    firm.run()
    firm.later()
    assert len(firm.waiting()) == 1

    firm.qbo.delete_bill(bill["Id"])
    firm.later()
    firm.run()

    assert firm.waiting() == [] and firm.entries() == []


def test_a_firm_that_moves_from_on_payment_to_on_entry_imports_its_waiting_bills(
        firm: Firm) -> None:
    _with_bills(firm, "on-payment")
    _bill(firm, ("600.00", "Jane Smith"), txn_date="2026-02-03")
    firm.run()
    firm.later()

    firm.update_settings(bills="on-entry")
    summary = firm.run()

    assert summary.imported_bills == 1 and firm.waiting() == []
    assert [e["date"] for e in firm.entries()] == ["2026-02-03"]


def test_on_entry_an_unpaid_bill_imports_dated_as_entered(firm: Firm) -> None:
    _with_bills(firm, "on-entry")
    bill = _bill(firm, ("75.00", "Jane Smith"), txn_date="2026-02-03")
    firm.run()
    firm.later()
    firm.qbo.pay_bill(bill["Id"], txn_date="2026-02-28")
    firm.later()

    summary = firm.run()

    [entry] = firm.entries()
    assert entry["date"] == "2026-02-03" and summary.updated == 0


# -- changes after import (docs/purchases.md) ------------------------------------------------------

def _imported_bill(firm: Firm, mode: str = "on-entry") -> dict[str, Any]:
    _with_bills(firm, mode)
    bill = _bill(firm, ("1200.00", "Jane Smith", "Expert report"))
    if mode == "on-payment":
        firm.qbo.pay_bill(bill["Id"], txn_date="2026-02-25")
    assert firm.run().imported_bills == 1
    firm.later()
    return bill


def test_an_edited_bill_updates_its_clio_entry_in_place(firm: Firm) -> None:
    bill = _imported_bill(firm)
    [before] = firm.entries()

    firm.qbo.update_bill(bill["Id"], lines=[account_line(
        "1350.00", firm.import_account, customer_id=firm.customers["Jane Smith"],
        description="Expert report, revised")], doc_number="INV-77b")
    firm.later()
    summary = firm.run()

    assert summary.updated == 1 and summary.imported == 0
    [after] = firm.entries()
    assert after["id"] == before["id"]
    assert price(after) == Decimal("1350.00") and after["reference"] == "INV-77b"
    assert firm.world.clio.calls.count("PATCH", ACTIVITY) == 1


def test_a_deleted_bill_deletes_its_unbilled_clio_entry(firm: Firm) -> None:
    bill = _imported_bill(firm)

    firm.qbo.delete_bill(bill["Id"])
    firm.later()
    summary = firm.run()

    assert firm.entries() == []
    [item] = summary.removed_items
    assert (item.purchase_id, item.kind, item.outcome) == (f"bill-{bill['Id']}", "deleted",
                                                           "deleted")
    cdc = [c.query for c in firm.world.qbo.calls.all() if c.path.endswith("/cdc")]
    assert cdc and all("Purchase%2CBill%2CBillPayment" in q for q in cdc)


def test_a_voided_bill_deletes_its_unbilled_clio_entry(firm: Firm) -> None:
    bill = _imported_bill(firm)

    firm.qbo.void_bill(bill["Id"])
    firm.later()
    summary = firm.run()

    assert firm.entries() == []
    assert [(r.kind, r.outcome) for r in summary.removed_items] == [("voided", "deleted")]
    [link] = firm.links()
    assert link.state == LinkState.DELETED


def test_a_deleted_bill_on_a_clio_bill_is_kept_and_reported(firm: Firm) -> None:
    bill = _imported_bill(firm)
    [entry] = firm.entries()
    firm.clio.mark_billed(entry["id"])

    firm.qbo.delete_bill(bill["Id"])
    firm.later()
    summary = firm.run()

    assert [e["id"] for e in firm.entries()] == [entry["id"]]
    assert [(r.kind, r.outcome) for r in summary.removed_items] == [("deleted", "kept_billed")]


def test_on_payment_a_paid_bill_whose_payment_date_changes_follows_it(firm: Firm) -> None:
    bill = _imported_bill(firm, "on-payment")
    [payment_id] = [link["TxnId"] for link in firm.qbo.bills[bill["Id"]]["LinkedTxn"]]
    firm.qbo.delete_bill_payment(payment_id)
    firm.qbo.pay_bill(bill["Id"], txn_date="2026-03-09")
    firm.later()

    summary = firm.run()

    [entry] = firm.entries()
    assert entry["date"] == "2026-03-09" and summary.updated == 1


@pytest.mark.parametrize("touches", [False, True], ids=["bill-untouched", "bill-touched"])
@pytest.mark.parametrize("change", ["deleted", "reduced"])
def test_on_payment_a_paid_bill_no_longer_paid_is_reported_and_its_entry_kept(
        firm: Firm, change: str, touches: bool) -> None:
    """A BillPayment deleted (or replaced by a smaller one) leaves an imported on-payment Bill
    owing again: the Clio entry stays, and the run summary and the audit trail say so (it
    was silent: counted "already in Clio"). Whether QuickBooks bumps the Bill when one of its
    payments goes is unconfirmed: both readings."""
    firm.qbo.payments_touch_bills = touches
    bill = _imported_bill(firm, "on-payment")
    [entry] = firm.entries()
    [payment_id] = [link["TxnId"] for link in firm.qbo.bills[bill["Id"]]["LinkedTxn"]]
    firm.qbo.delete_bill_payment(payment_id)
    if change == "reduced":
        firm.qbo.pay_bill(bill["Id"], "200.00", txn_date="2026-03-09")
    firm.later()

    summary = firm.run()

    assert [e["id"] for e in firm.entries()] == [entry["id"]]  # kept, unchanged
    assert price(firm.entries()[0]) == Decimal("1200.00")
    [item] = summary.changed_items
    assert (item.purchase_id, item.outcome, item.clio_id) == (f"bill-{bill['Id']}", "unpaid",
                                                              entry["id"])
    assert item.note == (f"paid Bill INV-77 is no longer paid in QuickBooks; its Clio entry "
                         f"#{entry['id']} is kept")
    assert summary.unpaid == 1 and summary.updated == 0 and summary.deleted == 0
    with firm.sessions() as session:
        rows = list(session.scalars(select(AuditEntry).where(
            AuditEntry.purchase_id == f"bill-{bill['Id']}", AuditEntry.action == "kept")))
    assert [(r.clio_activity_id, r.detail) for r in rows] == [(entry["id"], item.note)]

    firm.later()
    quiet = firm.run()  # nothing changed since: not said again
    assert quiet.changed_items == [] and quiet.unpaid == 0


def test_the_slack_summary_shows_a_bill_no_longer_paid() -> None:
    from datetime import UTC, datetime

    from hardcost.bot.ui.runs import run_details, run_summary
    from hardcost.sync.summary import ChangedItem, RunSummary

    summary = RunSummary(firm_id=1, run_id=7, dry_run=False,
                         started_at=datetime(2026, 3, 1, tzinfo=UTC), unpaid=1)
    note = "paid Bill INV-78 is no longer paid in QuickBooks; its Clio entry #123 is kept"
    summary.changed_items.append(ChangedItem("[qbo 1/bill-9/3]", "bill-9", "unpaid", 123,
                                             "00042 Smith estate", {}, {}, None, note))

    head = json.dumps(run_summary(summary, firm_name="Acme Law").blocks)
    thread = json.dumps([m.blocks for m in run_details(summary)])

    assert "No longer paid in QuickBooks" in head
    assert note in thread and "no figure changed" not in thread


# -- webhooks ----------------------------------------------------------------------------------

def _deliver(rig: SlackRig, payload: Any) -> None:
    body = json.dumps(payload).encode()
    response = requests.post(rig.web.url + "/webhooks/quickbooks", data=body, timeout=10,
                             headers={"Content-Type": "application/json",
                                      "intuit-signature": rig.firm.world.qbo.sign_webhook(body)})
    assert response.status_code == 200


def _legacy(realm: str, name: str, entity_id: str, operation: str = "Create",
            updated: str = "2026-02-03T10:00:00.000Z") -> dict[str, Any]:
    return {"eventNotifications": [{"realmId": realm, "dataChangeEvent": {"entities": [
        {"name": name, "id": entity_id, "operation": operation, "lastUpdated": updated}]}}]}


def _cloud(realm: str, entity: str, entity_id: str, verb: str = "created",
           event_id: str = "ev-1") -> dict[str, Any]:
    return {"specversion": "1.0", "id": event_id, "source": "intuit.quickbooks",
            "type": f"qbo.{entity}.{verb}.v1", "datacontenttype": "application/json",
            "time": "2026-02-03T10:00:00Z", "intuitaccountid": realm,
            "intuitentityid": entity_id, "data": {}}


def _process(rig: SlackRig) -> Any:
    return process_pending(rig.ctx.sessions, rig.ctx.importer_for, clock=rig.ctx.clock)


def test_a_bill_webhook_imports_the_bill(rig: SlackRig) -> None:
    firm = _with_bills(rig.firm)
    bill = _bill(firm, ("310.00", "Jane Smith"))

    _deliver(rig, _legacy(firm.qbo.realm_id, "Bill", bill["Id"]))
    assert firm.entries() == []  # stored, not yet imported
    done = _process(rig)

    [entry] = firm.entries()
    assert price(entry) == Decimal("310.00")
    assert f"/bill-{bill['Id']}/" in entry["note"]
    assert done.runs[firm.id].imported_bills == 1


def test_a_bill_payment_cloudevent_imports_the_bill_it_settled(rig: SlackRig) -> None:
    firm = _with_bills(rig.firm, "on-payment")
    bill = _bill(firm, ("310.00", "Jane Smith"))
    _deliver(rig, [_cloud(firm.qbo.realm_id, "bill", bill["Id"], event_id="ev-bill")])
    _process(rig)
    assert firm.entries() == [] and [w.reason for w in firm.waiting()] == ["payment"]

    payment = firm.qbo.pay_bill(bill["Id"], txn_date="2026-02-27")
    _deliver(rig, [_cloud(firm.qbo.realm_id, "billpayment", payment["Id"],
                          event_id="ev-payment")])
    _process(rig)

    [entry] = firm.entries()
    assert entry["date"] == "2026-02-27" and firm.waiting() == []


def test_a_bill_deletion_webhook_deletes_the_unbilled_clio_entry(rig: SlackRig) -> None:
    firm = _with_bills(rig.firm)
    bill = _bill(firm, ("310.00", "Jane Smith"))
    _deliver(rig, _legacy(firm.qbo.realm_id, "Bill", bill["Id"]))
    _process(rig)
    assert len(firm.entries()) == 1

    firm.qbo.delete_bill(bill["Id"])
    _deliver(rig, _legacy(firm.qbo.realm_id, "Bill", bill["Id"], "Delete",
                          "2026-02-04T10:00:00.000Z"))
    done = _process(rig)

    assert firm.entries() == []
    [summary] = done.runs.values()
    assert [(r.kind, r.outcome) for r in summary.removed_items] == [("deleted", "deleted")]


def test_bill_webhooks_for_a_firm_with_bills_off_import_nothing(rig: SlackRig) -> None:
    firm = rig.firm
    firm.client("Jane Smith", ["Smith estate"])
    bill = _bill(firm, ("310.00", "Jane Smith"))

    _deliver(rig, _legacy(firm.qbo.realm_id, "Bill", bill["Id"]))
    done = _process(rig)

    assert firm.entries() == [] and done.runs == {} and done.events == 1


# -- quiet runs --------------------------------------------------------------------------------

def test_a_quiet_run_with_bills_on_makes_three_quickbooks_calls_and_no_clio_call(
        firm: Firm) -> None:
    _with_bills(firm, "on-payment")
    firm.expense(("10.00", "Jane Smith"))
    paid = _bill(firm, ("20.00", "Jane Smith"))
    firm.qbo.pay_bill(paid["Id"], txn_date="2026-02-10")
    _bill(firm, ("30.00", "Jane Smith"))  # waits for payment
    first = firm.run()
    assert first.imported == 2 and first.waiting_for_payment == 1
    firm.later()
    firm.run()  # the first CDC sweep
    firm.later()
    calls_before = len(firm.world.qbo.calls.all())
    bill_queries = _bill_queries(firm)

    quiet = firm.run()

    assert not quiet.did_something
    assert quiet.qbo_calls <= 3 and quiet.clio_calls == 0
    made = firm.world.qbo.calls.all()[calls_before:]
    assert len(made) == quiet.qbo_calls
    assert _bill_queries(firm) - bill_queries == 1  # one read of changed Bills, none by id
    assert sum(1 for c in made if c.path.endswith("/cdc")) == 1
    assert not any("BillPayment" in (c.statement or "") for c in made)


# -- SIGKILL in the middle of a Bill import ----------------------------------------------------

BILLS = 4


@pytest.mark.parametrize("moment", MOMENTS)
def test_sigkill_in_the_middle_of_a_bill_import_doubles_nothing(
        firm: Firm, database_url: str, serve_slack: tuple[str, str],
        moment: str) -> None:
    _with_bills(firm, "on-payment")
    markers = []
    for n in range(BILLS):
        bill = _bill(firm, (f"{100 + n}.00", "Jane Smith", f"Expert invoice {n}"),
                     doc_number=f"EX-{n}")
        firm.qbo.pay_bill(bill["Id"], txn_date="2026-02-21")
        markers.append(f"[qbo {firm.qbo.realm_id}/bill-{bill['Id']}/"
                       f"{firm.customers['Jane Smith']}]")

    statuses = crash_mid_write(firm, database_url, serve_slack, moment, markers)

    assert {entry["date"] for entry in firm.entries()} == {"2026-02-21"}
    assert statuses == ["abandoned", "ok"]


# -- Slack: the setting, the summary, pending and status ---------------------------------------

def _text(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks") or []) + message.get("text", "")


def _reply(rig: SlackRig, user: str, contains: str) -> dict[str, Any]:
    return wait_for(lambda: next((m for m in rig.replies_to(user) if contains in _text(m)),
                                 None), what=f"a reply containing {contains!r}")


def test_set_bills_is_saved_audited_and_refused_with_a_bad_value(rig: SlackRig) -> None:
    rig.command("set bills on-payment")
    _reply(rig, rig.admin, "once they are fully paid")
    rig.command("set bills sometimes")
    _reply(rig, rig.admin, "not off, on-entry or on-payment")

    with rig.firm.sessions() as session:
        settings = session.get(FirmSettings, rig.firm.id)
        assert settings is not None and settings.bills == "on-payment"
        [row] = session.scalars(select(AuditEntry).where(
            AuditEntry.firm_id == rig.firm.id, AuditEntry.action == "setting"))
    assert (row.before, row.after, row.actor) == ({"bills": "off"}, {"bills": "on-payment"},
                                                  rig.admin)


def test_a_bill_waiting_for_payment_is_in_pending_and_status_without_a_prompt(
        rig: SlackRig) -> None:
    firm = _with_bills(rig.firm, "on-payment")
    bill = _bill(firm, ("640.00", "Jane Smith"), doc_number="CR-9")
    assert rig.command("run").status_code == 200
    summary = wait_for(lambda: next((m for m in rig.channel_messages()
                                     if "Bills waiting for payment" in _text(m)), None),
                       what="the run summary")
    assert "1 new" in _text(summary)

    rig.command("pending", user=rig.staff)
    listed = _reply(rig, rig.staff, "Jane Smith")
    assert "waiting for payment" in _text(listed)
    assert "hc_choose_matter" not in _text(listed) and "hc_not_client_cost" not in _text(listed)
    rig.command("status")
    status = _reply(rig, rig.admin, "Vendor Bills")
    assert "1 waiting for payment" in _text(status)
    assert rig.prompts() == []

    firm.qbo.pay_bill(bill["Id"], txn_date="2026-03-01")
    firm.later()
    assert rig.command("run").status_code == 200
    wait_for(lambda: next((m for m in rig.channel_messages()
                           if "1 from Bills" in _text(m)), None), what="the second summary")
    assert [e["date"] for e in firm.entries()] == ["2026-03-01"]
    assert rig.prompts() == []


# -- hostile shapes ----------------------------------------------------------------------------

def test_bills_of_strange_shapes_are_skipped_or_failed_with_a_reason_and_the_run_goes_on(
        firm: Firm) -> None:
    _with_bills(firm, "on-payment")
    good = _bill(firm, ("90.00", "Jane Smith"))
    firm.qbo.pay_bill(good["Id"], txn_date="2026-02-12")
    customer = {"value": firm.customers["Jane Smith"], "name": "Jane Smith"}
    line = {"Id": "1", "Amount": Decimal("12"), "DetailType": "AccountBasedExpenseLineDetail",
            "AccountBasedExpenseLineDetail": {"AccountRef": {"value": firm.import_account},
                                              "CustomerRef": customer}}
    firm.qbo.put_bill_raw({"TxnDate": "2026-02-03", "Balance": "lots", "Line": [line]})
    firm.qbo.put_bill_raw({"TxnDate": "2026-02-03", "Balance": 0, "Line": "not lines",
                           "LinkedTxn": "nope", "VendorRef": ["x"], "MetaData": ["odd"]})
    firm.qbo.put_bill_raw({"TxnDate": "2026-02-03", "Balance": 0, "Line": [line],
                           "LinkedTxn": [{"TxnId": "999", "TxnType": "BillPaymentCheck"}, 7]})

    summary = firm.run()

    assert summary.error is None
    assert any("balance hardcost cannot read" in reason for reason in summary.skips)
    assert any(f.purchase_id.startswith("bill-") for f in firm.open_failures())  # no lines
    dates = sorted((e["date"], price(e)) for e in firm.entries())
    # the good one dated its payment; the one whose payment cannot be found, as entered
    assert dates == [("2026-02-03", Decimal("12.00")), ("2026-02-12", Decimal("90.00"))]


def test_a_bill_for_a_client_with_several_matters_is_asked_and_the_choice_written_once(
        rig: SlackRig) -> None:
    firm = rig.firm
    firm.update_settings(bills="on-entry", split_lines=True)
    firm.client("Acme Holdings", ["Lease", "Employment"])
    bill = _bill(firm, ("300.00", "Acme Holdings", "Deposition"),
                 ("45.00", "Acme Holdings", "Exhibits"), doc_number="CR-31")
    assert rig.command("run").status_code == 200
    prompts = wait_for(lambda: rig.prompts() if len(rig.prompts()) == 2 else None,
                       what="a prompt per line (split-lines)")
    prompt = next(p for p in prompts if "300.00" in _text(p))
    assert "Bill no." in _text(prompt) and "CR-31" in _text(prompt)
    lease = firm.clio.matters[firm.matters["Lease"]]

    rig.click(prompt, "hc_choose_matter", value=button_value(prompt, lease["display_number"]))
    rig.click(prompt, "hc_choose_matter", value=button_value(prompt, lease["display_number"]))

    [entry] = wait_for(lambda: firm.entries() or None, what="the chosen entry")
    assert entry["matter"]["id"] == lease["id"] and price(entry) == Decimal("300.00")
    realm, customer = firm.qbo.realm_id, firm.customers["Acme Holdings"]
    assert f"[qbo {realm}/bill-{bill['Id']}/{customer}/1]" in entry["note"]
    wait_for(lambda: "Linked to" in _text(rig.ws.message(rig.channel, prompt["ts"]) or {}),
             what="the prompt updated in place")
    assert len(firm.entries()) == 1


def test_bill_item_lines_and_foreign_currency_follow_the_purchase_rules(firm: Firm) -> None:
    _with_bills(firm)
    firm.update_settings(item_lines=True)
    item = firm.qbo.add_item("Transcript", expense_account_id=firm.import_account)
    firm.qbo.add_bill(vendor_id=_vendor(firm), txn_date="2026-02-04", currency="EUR",
                      exchange_rate="1.10", doc_number="EU-1", lines=[
                          item_line("200.00", item["Id"], customer_id=firm.customers["Jane Smith"],
                                    description="Certified transcript")])

    summary = firm.run()

    assert summary.imported_bills == 1
    [entry] = firm.entries()
    assert price(entry) == Decimal("220.00")
    assert "Paid 200.00 EUR at 1.1" in entry["note"]


def test_history_of_a_bill_by_its_document_id(rig: SlackRig) -> None:
    firm = _with_bills(rig.firm)
    bill = _bill(firm, ("310.00", "Jane Smith"))
    firm.run()

    rig.command(f"history BILL-{bill['Id']}")

    reply = _reply(rig, rig.admin, "Audit trail")
    assert f"bill-{bill['Id']}" in _text(reply) and "$310.00" in _text(reply)


def test_a_bills_payments_are_found_whatever_kind_of_payment_quickbooks_names() -> None:
    """QuickBooks links a Bill to its payment with the payment's kind in ``TxnType``
    (Intuit's Bill example: ``BillPaymentCheck``; card payments ``BillPaymentCreditCard``):
    each is a payment; a link to another kind of transaction is not."""
    from hardcost.sync.bills import linked_ids

    bill = {"Id": "25", "Balance": 0, "LinkedTxn": [
        {"TxnId": "118", "TxnType": "BillPaymentCheck"},
        {"TxnId": "119", "TxnType": "BillPaymentCreditCard"},
        {"TxnId": "120", "TxnType": "PurchaseOrder"},
        {"TxnId": "121", "TxnType": "Bill"}]}

    assert linked_ids(bill, "BillPayment") == ["118", "119"]
    assert linked_ids(bill, "PurchaseOrder") == ["120"]
    assert linked_ids(bill, "Bill") == ["121"]

"""Entries that arrive ready to bill (issue 29), over real HTTP against the sandboxes: QuickBooks'
``BillableStatus`` respected (``HasBeenBilled`` not imported, ``NotBillable`` imported
non-billable or skipped, a line billed in QuickBooks after its import reported once), a
category and a UTBMS expense code per import account, codes checked against Clio's enabled
sets, and a LEDES matter's refusal told as what to set."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from hardcost.bot.service import lookups
from hardcost.sandbox.qbo import account_line, item_line
from hardcost.sandbox.slack_rig import SlackRig, wait_for
from hardcost.sync.firm_settings import SettingError, apply_setting
from hardcost.sync.store import AccountCoding, AuditEntry, FirmSettings
from tests.firmkit import Firm


def _set(firm: Firm, key: str, raw: str) -> str:
    with firm.sessions() as session:
        said = apply_setting(session, firm.id, key, raw, lookups(firm.engine), actor="U1")
        session.commit()
    return said


def _refused(firm: Firm, key: str, raw: str) -> str:
    with firm.sessions() as session, pytest.raises(SettingError) as caught:
        apply_setting(session, firm.id, key, raw, lookups(firm.engine), actor="U1")
    return caught.value.problem


def _utbms(firm: Firm) -> dict[str, Any]:
    """A LEDES code set (enabled) with E101, E112, E124 and an activity code A101, and a
    disabled set with its own E199."""
    ledes = firm.clio.add_utbms_set("LEDES 1998B")
    codes = {c: firm.clio.add_utbms_code(ledes["id"], c, n)
             for c, n in (("E101", "Copying"), ("E112", "Court fees"), ("E124", "Other"))}
    codes["A101"] = firm.clio.add_utbms_code(ledes["id"], "A101", "Plan and prepare",
                                             type="UtbmsActivity")
    old = firm.clio.add_utbms_set("Old codes", enabled=False)
    codes["E199"] = firm.clio.add_utbms_code(old["id"], "E199", "Retired")
    return codes


def _purchase(firm: Firm, *lines: dict[str, Any]) -> dict[str, Any]:
    return firm.qbo.add_purchase(payment_type="Check", txn_date="2026-02-03", lines=list(lines))


def _line(firm: Firm, amount: str, customer: str, *, account: str | None = None,
          billable: bool = True) -> dict[str, Any]:
    return account_line(amount, account or firm.import_account,
                        customer_id=firm.customers[customer], billable=billable)


# -- BillableStatus ----------------------------------------------------------------------------

def test_a_line_billed_in_quickbooks_already_is_not_imported_and_the_run_says_why(
        firm: Firm) -> None:
    firm.client("Acme Corp", ["Acme v. Widget"])
    billed = _purchase(firm, _line(firm, "80.00", "Acme Corp"))
    firm.qbo.set_billable_status("Purchase", billed["Id"], billed["Line"][0]["Id"],
                                 "HasBeenBilled")
    fresh = _purchase(firm, _line(firm, "25.00", "Acme Corp"))

    summary = firm.run()

    assert summary.imported == 1
    assert [a["note"].splitlines()[-1] for a in firm.entries()] == [
        f"[qbo {firm.qbo.realm_id}/{fresh['Id']}/{firm.customers['Acme Corp']}]"]
    assert [s for s in summary.skips if "already billed in QuickBooks" in s] == [
        f"Check #{billed['Id']} line {billed['Line'][0]['Id']} is already billed in QuickBooks"]
    assert summary.skipped == 1


def test_a_not_billable_line_arrives_non_billable_or_is_skipped_with_skip(firm: Firm) -> None:
    firm.client("Acme Corp", ["Acme v. Widget"])
    _purchase(firm, _line(firm, "40.00", "Acme Corp", billable=False))
    _purchase(firm, _line(firm, "60.00", "Acme Corp"))

    firm.run()

    by_price = {str(a["price"]): a for a in firm.entries()}
    assert by_price["40.00"]["non_billable"] is True
    assert by_price["60.00"]["non_billable"] is False

    assert "skipped" in _set(firm, "not-billable", "skip")
    firm.later()
    _purchase(firm, _line(firm, "15.00", "Acme Corp", billable=False))
    summary = firm.run()
    assert summary.imported == 0
    assert any("marked not billable in QuickBooks" in s for s in summary.skips)
    assert len(firm.entries()) == 2


def test_item_lines_follow_the_same_rule(firm: Firm) -> None:
    firm.client("Acme Corp", ["Acme v. Widget"])
    item = firm.qbo.add_item("Courier", expense_account_id=firm.import_account)
    firm.update_settings(item_lines=True)
    purchase = _purchase(firm, item_line("30.00", item["Id"],
                                         customer_id=firm.customers["Acme Corp"]))
    firm.qbo.set_billable_status("Purchase", purchase["Id"], purchase["Line"][0]["Id"],
                                 "HasBeenBilled")

    summary = firm.run()

    assert summary.imported == 0 and firm.entries() == []
    assert any("already billed in QuickBooks" in s for s in summary.skips)


def test_a_line_billed_in_quickbooks_after_its_import_is_reported_once_never_deleted(
        firm: Firm) -> None:
    firm.client("Acme Corp", ["Acme v. Widget"])
    purchase = _purchase(firm, _line(firm, "80.00", "Acme Corp"))
    firm.run()
    [entry] = firm.entries()

    firm.later()
    firm.qbo.set_billable_status("Purchase", purchase["Id"], purchase["Line"][0]["Id"],
                                 "HasBeenBilled")
    summary = firm.run()

    assert [a["id"] for a in firm.entries()] == [entry["id"]]  # kept
    [item] = [c for c in summary.changed_items if c.outcome == "billed_in_qbo"]
    assert item.clio_id == entry["id"]
    assert f"billed in QuickBooks too: check Clio entry #{entry['id']}" in item.note
    assert summary.deleted == 0 and summary.kept == 0

    firm.later()  # read again (another edit): said once already
    firm.qbo.update_purchase(purchase["Id"], private_note="invoiced")
    again = firm.run()
    assert [c for c in again.changed_items if c.outcome == "billed_in_qbo"] == []
    assert [a["id"] for a in firm.entries()] == [entry["id"]]
    with firm.sessions() as session:
        notes = list(session.scalars(select(AuditEntry.detail).where(
            AuditEntry.firm_id == firm.id, AuditEntry.detail.like("billed in QuickBooks%"))))
    assert len(notes) == 1


# -- category and UTBMS code per account -------------------------------------------------------

def test_an_account_mapped_to_a_category_and_a_code_gets_both_others_keep_the_default(
        firm: Firm) -> None:
    codes = _utbms(firm)
    firm.client("Acme Corp", ["Acme v. Widget"])
    court = firm.qbo.add_account("Court Costs")["Id"]
    filing = firm.clio.add_expense_category("Filing fees")
    _set(firm, "account", "+Court Costs")

    said = _set(firm, "category", "Filing fees for Court Costs")
    assert said == "Entries of Court Costs now go under Filing fees."
    said = _set(firm, "utbms", "e112 for Court Costs")
    assert said == "Entries of Court Costs now carry UTBMS code E112 (Court fees)."
    _purchase(firm, _line(firm, "120.00", "Acme Corp", account=court))
    _purchase(firm, _line(firm, "9.00", "Acme Corp"))

    firm.run()

    by_price = {str(a["price"]): a for a in firm.entries()}
    assert by_price["120.00"]["expense_category"] == {"id": filing["id"]}
    assert by_price["120.00"]["utbms_expense"] == {"id": codes["E112"]["id"]}
    assert by_price["9.00"]["expense_category"] == {"id": firm.category_id}
    assert by_price["9.00"]["utbms_expense"] is None
    with firm.sessions() as session:
        [row] = session.scalars(select(AccountCoding).where(AccountCoding.firm_id == firm.id))
        assert (row.account_id, row.account_name, row.utbms_code) == (court, "Court Costs",
                                                                      "E112")
        trail = list(session.scalars(select(AuditEntry).where(
            AuditEntry.firm_id == firm.id, AuditEntry.action == "setting")))
    assert {"utbms": {"account": "Court Costs", "value": "E112"}} in [t.after for t in trail]


def test_the_default_code_and_a_categorys_own_code(firm: Firm) -> None:
    codes = _utbms(firm)
    firm.client("Acme Corp", ["Acme v. Widget"])
    copies = firm.qbo.add_account("Copies")["Id"]
    copying = firm.clio.add_expense_category("Copying", utbms_code_id=codes["E101"]["id"])
    _set(firm, "account", "+Copies")
    _set(firm, "category", "Copying for Copies")
    assert _set(firm, "utbms", "E124").startswith("Default UTBMS code is now E124 (Other)")
    _purchase(firm, _line(firm, "3.00", "Acme Corp", account=copies))
    _purchase(firm, _line(firm, "4.00", "Acme Corp"))

    firm.run()

    by_price = {str(a["price"]): a for a in firm.entries()}
    assert by_price["3.00"]["expense_category"] == {"id": copying["id"]}
    assert by_price["3.00"]["utbms_expense"] == {"id": codes["E101"]["id"]}  # the category's
    assert by_price["4.00"]["utbms_expense"] == {"id": codes["E124"]["id"]}  # the default


def test_unknown_disabled_and_activity_codes_are_refused_with_a_reason(firm: Firm) -> None:
    _utbms(firm)

    unknown = _refused(firm, "utbms", "E999")
    assert unknown.startswith("“E999” is not a UTBMS expense code in this Clio account.")
    assert "E112 (court fees)" in unknown  # the hint
    disabled = _refused(firm, "utbms", "E199")
    assert disabled.startswith("E199 is in the UTBMS set “Old codes”, which is not enabled")
    activity = _refused(firm, "utbms", "A101")
    assert activity.startswith("“A101” is not a UTBMS expense code")
    not_import = _refused(firm, "utbms", "E112 for Office Supplies")
    assert "“Office Supplies” is not an import account" in not_import
    with firm.sessions() as session:
        settings = session.get(FirmSettings, firm.id)
        assert settings is not None and settings.utbms_code is None
        assert list(session.scalars(select(AccountCoding))) == []


def test_a_changed_mapping_applies_to_an_edit_that_rewrites_the_entry(firm: Firm) -> None:
    codes = _utbms(firm)
    firm.client("Acme Corp", ["Acme v. Widget"])
    purchase = _purchase(firm, _line(firm, "50.00", "Acme Corp"))
    firm.run()
    [entry] = firm.entries()
    assert entry["utbms_expense"] is None

    _set(firm, "utbms", "E124")
    firm.later()
    firm.qbo.update_purchase(purchase["Id"], lines=[_line(firm, "55.00", "Acme Corp")])
    summary = firm.run()

    assert summary.updated == 1
    [entry] = firm.entries()
    assert str(entry["price"]) == "55.00"
    assert entry["utbms_expense"] == {"id": codes["E124"]["id"]}


def test_a_ledes_matter_refusing_an_entry_without_a_code_is_a_configuration_failure(
        firm: Firm) -> None:
    _utbms(firm)
    firm.client("Acme Corp", ["Acme v. Widget"])
    firm.clio.require_utbms(firm.matters["Acme v. Widget"])
    _purchase(firm, _line(firm, "70.00", "Acme Corp"))

    summary = firm.run()

    assert firm.entries() == []
    [failure] = firm.open_failures()
    assert failure.kind == "config"
    assert "Clio needs a UTBMS expense code on this matter (LEDES billing): " \
           f"/hardcost set utbms <code> for account {firm.import_account}" in failure.message
    assert summary.failed == 1

    _set(firm, "utbms", "E124")
    firm.later()
    firm.run()
    assert len(firm.entries()) == 1 and firm.open_failures() == []


# -- in Slack: set, status, check --------------------------------------------------------------

def _answer(rig: SlackRig, text: str) -> str:
    before = len(rig.replies_to(rig.admin))
    rig.command(text)
    reply = wait_for(lambda: rig.replies_to(rig.admin)[before:] and
                     rig.replies_to(rig.admin)[-1], what=f"the answer to {text!r}")
    return json.dumps(reply.get("blocks") or [], ensure_ascii=False) + reply.get("text", "")


def test_set_status_and_check_in_slack_and_a_deleted_category_reported(rig: SlackRig) -> None:
    firm = rig.firm
    _utbms(firm)
    firm.qbo.add_account("Court Costs")
    filing = firm.clio.add_expense_category("Filing fees")
    _answer(rig, "set account +Court Costs")

    assert "Entries of Court Costs now go under Filing fees." in _answer(
        rig, "set category Filing fees for Court Costs")
    assert "Entries of Court Costs now carry UTBMS code E112 (Court fees)." in _answer(
        rig, "set utbms E112 for Court Costs")
    refused = _answer(rig, "set utbms E199")
    assert "E199 is in the UTBMS set “Old codes”, which is not enabled in Clio" in refused
    assert "/hardcost set utbms" in refused  # the usage line
    assert "imported as non-billable entries" in _answer(rig, "set not-billable import")

    trail = _answer(rig, "history last 3")  # each mapping change, named with its account
    assert "utbms: _none_ for Court Costs → E112 for Court Costs" in trail, trail
    assert "category: _none_ for Court Costs → Filing fees for Court Costs" in trail, trail

    rig.command("settings")  # the form shows each account's mapping under the category
    form = json.dumps(rig.settings_form(), ensure_ascii=False)
    assert "Court Costs — Filing fees · UTBMS E112" in form, form

    status = _answer(rig, "status")
    assert "*Category and UTBMS code*" in status
    assert "Court Costs — Filing fees · UTBMS E112" in status

    checked = _answer(rig, "check")
    assert "✅ Court Costs: Filing fees · UTBMS E112" in checked

    firm.clio.delete_expense_category(filing["id"])
    checked = _answer(rig, "check")
    assert ("❌ Court Costs: the Clio category Filing fees was deleted or is no longer a "
            "hard-cost category: /hardcost set category &lt;category&gt; for Court Costs"
            in checked)

"""Vendor Bills (SPEC §2 rule 7, issue 17), over real HTTP against the sandbox QuickBooks and
Clio: imported on entry or once fully paid (dated the payment), edits, deletions and voids
followed into Clio, nothing read from Bills with ``bills off``, and a quiet run stays at three
QuickBooks calls."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hardcost.sandbox.qbo import account_line
from hardcost.sync.store import LinkState, WaitReason
from tests.firmkit import Firm, price

BILL_QUERY = "Bill"
ACTIVITY = r"/activities/\d+\.json$"


def _vendor(firm: Firm, name: str = "Dr. Expert LLC") -> str:
    return str(firm.qbo.add_vendor(name)["Id"])


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

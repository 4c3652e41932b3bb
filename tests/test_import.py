"""docs/purchases.md ("Which purchases count" to "The Clio entry", and "Which matter"), end to end
over real HTTP against the sandboxes.

Each test names the rule it shows. The firm's database is a real SQLite file or the
PostgreSQL server (see conftest); QuickBooks and Clio are the sandbox servers on loopback.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sandbox.qbo import account_line, item_line
from hardcost.sandbox.world import SandboxWorld
from hardcost.sync.rules import ITEM_DETAILS_MESSAGE
from hardcost.sync.store import ContactLink, LinkState
from tests.firmkit import Firm, make_firm, price

# -- §2.1 what counts as a purchase ------------------------------------------------------------

@pytest.mark.parametrize("payment_type", ["Check", "Cash", "CreditCard"])
def test_rule_2_1_checks_expenses_and_card_charges_are_imported(firm: Firm,
                                                               payment_type: str) -> None:
    firm.client("Jane Smith", ["Smith estate"])
    firm.expense(("125.00", "Jane Smith", "Filing fee"), payment_type=payment_type)

    summary = firm.run()

    assert summary.imported == 1 and summary.error is None
    [entry] = firm.entries()
    assert entry["type"] == "HardCostEntry"
    assert price(entry) == Decimal("125.00")
    assert entry["matter"]["id"] == firm.matters["Smith estate"]


def test_rule_2_1_card_refund_is_skipped_with_reason(firm: Firm) -> None:
    firm.client("Jane Smith", ["Smith estate"])
    firm.expense(("40.00", "Jane Smith"), payment_type="CreditCard", credit=True)

    summary = firm.run()

    assert summary.imported == 0 and summary.skipped == 1
    assert "credit card credit" in summary.skips[0]
    assert firm.entries() == []


@pytest.mark.parametrize("payment_type", ["Expense", "Other", ""])
def test_rule_2_1_unknown_payment_type_is_skipped_not_crashed(firm: Firm,
                                                            payment_type: str) -> None:
    firm.client("Jane Smith", ["Smith estate"])
    firm.expense(("40.00", "Jane Smith"))  # a normal one beside it still imports
    raw = firm.expense(("10.00", "Jane Smith"))
    raw["PaymentType"] = payment_type
    firm.qbo.put_purchase_raw(raw)

    summary = firm.run()

    assert summary.imported == 1 and summary.skipped == 1 and summary.error is None
    assert "payment type" in summary.skips[0]


# -- §2.2 start date ---------------------------------------------------------------------------

def test_rule_2_2_only_purchases_on_or_after_the_start_date(firm: Firm) -> None:
    firm.client("Jane Smith", ["Smith estate"])
    firm.expense(("10.00", "Jane Smith"), txn_date="2025-12-31")
    firm.expense(("20.00", "Jane Smith"), txn_date="2026-01-01")

    summary = firm.run()

    assert [price(e) for e in firm.entries()] == [Decimal("20.00")]
    assert summary.skipped == 0 and summary.failed == 0


def test_rule_2_2_moving_start_date_earlier_backfills_without_duplicates(firm: Firm) -> None:
    firm.client("Jane Smith", ["Smith estate"])
    firm.expense(("10.00", "Jane Smith"), txn_date="2025-11-15")
    firm.expense(("20.00", "Jane Smith"), txn_date="2026-01-10")
    firm.run()
    assert len(firm.entries()) == 1

    firm.later()
    firm.update_settings(start_date=date(2025, 11, 1))
    backfill = firm.run()
    firm.later()
    again = firm.run()

    assert backfill.imported == 1 and again.imported == 0
    assert sorted(price(e) for e in firm.entries()) == [Decimal("10.00"), Decimal("20.00")]


# -- §2.3 which lines count --------------------------------------------------------------------

def test_rule_2_3_lines_in_other_accounts_are_ignored(firm: Firm) -> None:
    jane = firm.client("Jane Smith", ["Smith estate"])
    firm.qbo.add_purchase(lines=[
        account_line("50.00", firm.import_account, customer_id=jane),
        account_line("75.00", firm.other_account, customer_id=jane),
    ])

    summary = firm.run()

    assert summary.imported == 1 and summary.skipped == 0
    assert [price(e) for e in firm.entries()] == [Decimal("50.00")]


def test_rule_2_3_import_account_line_without_customer_waits_for_a_matter_by_default(
        firm: Firm) -> None:
    firm.qbo.add_purchase(doc_number="311", lines=[
        account_line("19.99", firm.import_account, description="Binding")])

    summary = firm.run()

    assert summary.skipped == 0 and summary.imported == 0 and summary.waiting == 1
    [row] = firm.waiting()
    assert row.reason == "no_customer" and row.amount == Decimal("19.99")


def test_rule_2_3_import_account_line_without_customer_is_skipped_with_reason_with_skip(
        firm: Firm) -> None:
    firm.update_settings(no_customer="skip")
    firm.qbo.add_purchase(doc_number="311", lines=[
        account_line("19.99", firm.import_account, description="Binding")])

    summary = firm.run()

    assert summary.skipped == 1 and summary.imported == 0
    assert "no customer" in summary.skips[0] and "311" in summary.skips[0]


# -- §2.4 item details -------------------------------------------------------------------------

def test_rule_2_4_item_detail_line_is_a_failure_with_the_fix(firm: Firm) -> None:
    jane = firm.client("Jane Smith", ["Smith estate"])
    item = firm.qbo.add_item("Courier", expense_account_id=firm.import_account)
    purchase = firm.qbo.add_purchase(lines=[item_line("22.00", item["Id"], customer_id=jane)])

    summary = firm.run()

    assert summary.failed == 1 and summary.imported == 0
    [failure] = firm.open_failures()
    assert ITEM_DETAILS_MESSAGE in failure.message
    assert failure.kind == "data" and failure.purchase_id == purchase["Id"]
    assert summary.failures[0].url and purchase["Id"] in summary.failures[0].url


def test_rule_2_4_item_lines_opt_in_imports_items_of_an_import_account(
        world: SandboxWorld, sessions: sessionmaker[Session]) -> None:
    firm = make_firm(world, sessions, item_lines=True)
    jane = firm.client("Jane Smith", ["Smith estate"])
    courier = firm.qbo.add_item("Courier", expense_account_id=firm.import_account)
    paper = firm.qbo.add_item("Paper", expense_account_id=firm.other_account)
    purchase = firm.qbo.add_purchase(lines=[
        item_line("22.00", courier["Id"], customer_id=jane),
        item_line("9.00", paper["Id"], customer_id=jane)])

    summary = firm.run()

    assert summary.imported == 0 and summary.failed == 1  # the paper line blocks Jane's entry
    firm.qbo.update_purchase(purchase["Id"],
                             lines=[item_line("22.00", courier["Id"], customer_id=jane)])
    firm.later()
    fixed = firm.run()
    assert fixed.imported == 1
    assert [price(e) for e in firm.entries()] == [Decimal("22.00")]
    assert firm.open_failures() == []


# -- §2.5 aggregation --------------------------------------------------------------------------

def test_rule_2_5_one_entry_per_purchase_and_customer(firm: Firm) -> None:
    firm.client("Jane Smith", ["Smith estate"])
    firm.client("Acme Holdings", ["Acme v. Beta"])
    firm.expense(("435.00", "Jane Smith", "Petition fee"), ("12.50", "Jane Smith", "Copies"),
                 ("435.00", "Acme Holdings", "Complaint fee"), doc_number="1042")

    summary = firm.run()

    assert summary.imported == 2
    assert summary.imported_total == Decimal("882.50")
    by_matter = {e["matter"]["id"]: e for e in firm.entries()}
    jane = by_matter[firm.matters["Smith estate"]]
    assert price(jane) == Decimal("447.50")
    assert "Petition fee" in jane["note"] and "Copies" in jane["note"]
    assert price(by_matter[firm.matters["Acme v. Beta"]]) == Decimal("435.00")


def test_rule_2_5_split_lines_makes_one_entry_per_line(world: SandboxWorld,
                                                       sessions: sessionmaker[Session]) -> None:
    firm = make_firm(world, sessions, split_lines=True)
    firm.client("Jane Smith", ["Smith estate"])
    purchase = firm.expense(("435.00", "Jane Smith"), ("12.50", "Jane Smith"))

    summary = firm.run()

    assert summary.imported == 2
    assert sorted(price(e) for e in firm.entries()) == [Decimal("12.50"), Decimal("435.00")]
    markers = sorted(link.marker for link in firm.links())
    jane = firm.customers["Jane Smith"]
    realm = firm.qbo.realm_id
    assert markers == [f"[qbo {realm}/{purchase['Id']}/{jane}/1]",
                       f"[qbo {realm}/{purchase['Id']}/{jane}/2]"]


# -- §2.6 the entry ----------------------------------------------------------------------------

def test_rule_2_6_entry_fields(firm: Firm) -> None:
    firm.client("Jane Smith", ["Smith estate"])
    court = firm.qbo.add_vendor("Superior Court Clerk")
    firm.clio.add_contact("Superior Court Clerk", type="Company")
    purchase = firm.expense(("435.00", "Jane Smith", "Petition filing fee"), doc_number="1042",
                            txn_date="2026-02-03", private_note="February filings",
                            entity=(court["Id"], "Vendor"))

    firm.run()

    [entry] = firm.entries()
    marker = f"[qbo {firm.qbo.realm_id}/{purchase['Id']}/{firm.customers['Jane Smith']}]"
    assert entry["date"] == "2026-02-03"
    assert entry["reference"] == "1042"
    assert entry["note"].startswith("Petition filing fee; February filings")
    assert entry["note"].endswith(marker)
    assert entry["expense_category"]["id"] == firm.category_id
    assert entry["user"]["id"] == firm.clio.owner_id
    vendor = [c for c in firm.clio.contacts.values() if c["name"] == "Superior Court Clerk"]
    assert entry["vendor"]["id"] == vendor[0]["id"]


def test_rule_2_6_amounts_are_exact_to_the_cent(firm: Firm) -> None:
    firm.client("Jane Smith", ["Smith estate"])
    firm.expense(*[("0.10", "Jane Smith")] * 3, ("0.20", "Jane Smith"))

    summary = firm.run()

    assert summary.imported_total == Decimal("0.50")
    assert price(firm.entries()[0]) == Decimal("0.50")


def test_rule_2_6_foreign_currency_uses_home_amount_and_keeps_original_in_note(
        firm: Firm) -> None:
    firm.client("Jane Smith", ["Smith estate"])
    firm.expense(("200.00", "Jane Smith", "Apostille"), currency="EUR", exchange_rate="1.0850",
                 payment_type="CreditCard")

    firm.run()

    [entry] = firm.entries()
    assert price(entry) == Decimal("217.00")
    assert "Paid 200.00 EUR at 1.085" in entry["note"]


def test_rule_2_6_employee_payee_entry_belongs_to_their_clio_user(firm: Firm) -> None:
    firm.client("Jane Smith", ["Smith estate"])
    maria = firm.clio.add_user("Maria Lopez")
    employee = firm.qbo.add_employee("Maria Lopez")
    firm.expense(("61.40", "Jane Smith", "Mileage"), payment_type="Cash",
                 entity=(employee["Id"], "Employee"))

    firm.run()

    assert firm.entries()[0]["user"]["id"] == maria["id"]


def test_rule_2_6_user_chosen_by_the_firm(world: SandboxWorld,
                                          sessions: sessionmaker[Session]) -> None:
    firm = make_firm(world, sessions)
    paralegal = firm.clio.add_user("Pat Paralegal")
    firm.update_settings(clio_user_id=paralegal["id"])
    firm.client("Jane Smith", ["Smith estate"])
    firm.expense(("5.00", "Jane Smith"))

    firm.run()

    assert firm.entries()[0]["user"]["id"] == paralegal["id"]


def test_rule_2_6_expense_entry_when_hard_costs_are_off_in_clio(firm: Firm) -> None:
    firm.clio.hard_costs_enabled = False
    firm.client("Jane Smith", ["Smith estate"])
    firm.expense(("30.00", "Jane Smith"))
    firm.expense(("45.00", "Jane Smith"))

    summary = firm.run()

    assert summary.imported == 2 and summary.failed == 0
    assert {e["type"] for e in firm.entries()} == {"ExpenseEntry"}


# -- §3 baseline: which contact, which matter ---------------------------------------------------

def test_rule_3_1_contact_by_normalised_name(firm: Firm) -> None:
    firm.qbo.add_customer("SMITH,  Jane ")  # QBO keeps its own spelling
    firm.customers["SMITH,  Jane "] = next(
        c for c in firm.qbo.records("Customer") if c["DisplayName"] == "SMITH,  Jane ")["Id"]
    contact = firm.clio.add_contact("Smith, Jane")
    matter = firm.clio.add_matter(contact["id"], description="Estate")
    firm.expense(("10.00", "SMITH,  Jane "))

    firm.run()

    assert firm.entries()[0]["matter"]["id"] == matter["id"]


def test_rule_3_1_contact_by_email_when_the_name_differs(firm: Firm) -> None:
    firm.client("J. Smith (Estate)", email="jane@example.com", contact=False)
    contact = firm.clio.add_contact("Jane Smith", email="JANE@example.com")
    matter = firm.clio.add_matter(contact["id"], description="Estate")
    firm.expense(("10.00", "J. Smith (Estate)"))

    summary = firm.run()

    assert summary.imported == 1
    assert firm.entries()[0]["matter"]["id"] == matter["id"]


def test_rule_3_1_stored_link_wins_over_name(firm: Firm) -> None:
    firm.client("Jane Smith", ["Name match matter"])
    chosen = firm.clio.add_contact("Jane A. Smith")
    chosen_matter = firm.clio.add_matter(chosen["id"], description="Chosen by staff")
    with firm.sessions() as session:
        session.add(ContactLink(firm_id=firm.id, qbo_type="Customer",
                                qbo_id=firm.customers["Jane Smith"],
                                clio_contact_id=chosen["id"], source="staff"))
        session.commit()
    firm.expense(("10.00", "Jane Smith"))

    firm.run()

    assert firm.entries()[0]["matter"]["id"] == chosen_matter["id"]


def test_rule_3_1_sub_customer_resolves_through_its_parent(firm: Firm) -> None:
    firm.client("Acme Holdings", ["Acme general"])
    firm.client("Warehouse claim", parent="Acme Holdings", contact=False)
    firm.expense(("80.00", "Warehouse claim"))

    summary = firm.run()

    assert summary.imported == 1
    assert firm.entries()[0]["matter"]["id"] == firm.matters["Acme general"]


def test_rule_3_1_no_matching_contact_waits(firm: Firm) -> None:
    firm.client("Garcia Family Trust", contact=False)
    firm.expense(("84.15", "Garcia Family Trust"))

    summary = firm.run()

    assert summary.waiting == 1 and summary.imported == 0
    [waiting] = firm.waiting()
    assert waiting.reason == "no_contact" and waiting.amount == Decimal("84.15")


def test_rule_3_1_several_matching_contacts_wait_with_candidates(firm: Firm) -> None:
    firm.client("John Lee", contact=False)
    a = firm.clio.add_contact("John Lee", email="jlee@a.example")
    b = firm.clio.add_contact("John Lee", email="jlee@b.example")
    firm.expense(("15.00", "John Lee"))

    firm.run()

    [waiting] = firm.waiting()
    assert waiting.reason == "several_contacts"
    assert {c["id"] for c in waiting.candidates} == {a["id"], b["id"]}


def test_rule_3_2_exactly_one_open_matter_is_chosen_automatically(firm: Firm) -> None:
    firm.client("Jane Smith", ["Open matter"])
    closed = firm.clio.add_matter(firm.contacts["Jane Smith"], description="Old",
                                  status="Closed")
    firm.expense(("10.00", "Jane Smith"))

    firm.run()

    [entry] = firm.entries()
    assert entry["matter"]["id"] == firm.matters["Open matter"] != closed["id"]


def test_rule_3_2_a_pending_matter_counts(firm: Firm) -> None:
    firm.client("Jane Smith")
    matter = firm.clio.add_matter(firm.contacts["Jane Smith"], description="Intake",
                                  status="Pending")
    firm.expense(("10.00", "Jane Smith"))

    firm.run()

    assert firm.entries()[0]["matter"]["id"] == matter["id"]


def test_rule_3_2_several_matters_wait_with_the_matters_as_choices(firm: Firm) -> None:
    firm.client("Acme Holdings", ["Lease", "Employment", "Litigation"])
    firm.expense(("48.75", "Acme Holdings"))

    summary = firm.run()

    assert summary.waiting == 1 and firm.entries() == []
    [waiting] = firm.waiting()
    assert waiting.reason == "several_matters"
    assert sorted(c["description"] for c in waiting.candidates) == [
        "Employment", "Lease", "Litigation"]


def test_rule_3_2_no_matter_waits_then_imports_once_a_matter_exists(firm: Firm) -> None:
    firm.client("Robert Brown")
    purchase = firm.expense(("2500.00", "Robert Brown"))
    assert firm.run().waiting == 1

    matter = firm.clio.add_matter(firm.contacts["Robert Brown"], description="Brown v. Lee")
    firm.qbo.update_purchase(purchase["Id"], private_note="re-saved")  # read again
    firm.later()
    summary = firm.run()

    assert summary.imported == 1 and firm.waiting() == []
    assert firm.entries()[0]["matter"]["id"] == matter["id"]


def test_waiting_for_a_matter_imports_by_itself_when_one_appears(firm: Firm) -> None:
    firm.client("Robert Brown")
    firm.expense(("2500.00", "Robert Brown"))
    assert firm.run().waiting == 1
    firm.later()
    firm.world.clio.calls.clear()
    quiet = firm.run()  # still no matter: one matters look-up for that one client, no writes
    assert quiet.imported == 0 and firm.world.clio.calls.count(None, r"/matters") == 1
    assert firm.world.clio.calls.count("POST", r"/activities") == 0

    matter = firm.clio.add_matter(firm.contacts["Robert Brown"], description="Brown v. Lee")
    firm.later()
    summary = firm.run()  # the purchase itself is not read again

    assert summary.purchases_read == 0 and summary.imported == 1
    assert firm.entries()[0]["matter"]["id"] == matter["id"]
    assert firm.waiting() == []
    firm.later()
    assert firm.run().imported == 0


def test_rule_3_2_memo_naming_a_display_number_picks_that_matter(firm: Firm) -> None:
    firm.client("Acme Holdings", ["Lease", "Employment"])
    lease = firm.clio.matters[firm.matters["Lease"]]
    firm.expense(("36.20", "Acme Holdings"), private_note=f"docs for {lease['display_number']}")

    summary = firm.run()

    assert summary.imported == 1
    assert firm.entries()[0]["matter"]["id"] == lease["id"]


def test_rule_3_contacts_and_matters_are_looked_up_once_per_run(firm: Firm) -> None:
    firm.client("Jane Smith", ["Smith estate"])
    for n in range(5):
        firm.expense((f"{n + 1}.00", "Jane Smith"))
    calls = firm.world.clio.calls
    calls.clear()

    summary = firm.run()

    assert summary.imported == 5
    assert calls.count("GET", r"/contacts\.json") == 1
    assert calls.count("GET", r"/matters\.json") == 1
    assert calls.count("POST", r"/activities\.json") == 5


@pytest.mark.parametrize("other_contacts, expected_contact_calls", [
    (300, 2),  # listing every contact takes 2 pages: cheaper than 12 searches
    (2600, 1 + 12),  # 14 pages: one page tells the size, then each name is searched
])
def test_rule_3_many_new_clients_cost_the_fewest_clio_calls(
        firm: Firm, other_contacts: int, expected_contact_calls: int) -> None:
    for n in range(other_contacts):
        firm.clio.add_contact(f"Someone Else {n:04d}")
    names = ["Ava Thompson", "Ben Okafor", "Cara Lindqvist", "Dev Raman", "Eli Moreau",
             "Fay Nakamura", "Gus Petrakis", "Hana Kowalski", "Ian Fitzgerald", "Jo Abernathy",
             "Kai Mbeki", "Lia Castellano"]
    for name in names:
        firm.client(name, [f"{name} matter"])
        firm.expense(("10.00", name))
    firm.world.clio.calls.clear()

    summary = firm.run()

    assert summary.imported == 12
    assert firm.world.clio.calls.count("GET", r"/contacts\.json") == expected_contact_calls
    assert firm.world.clio.calls.count("GET", r"/matters\.json") == 1


def test_rule_3_automatic_contact_match_is_remembered(firm: Firm) -> None:
    firm.client("Jane Smith", ["Smith estate"])
    firm.expense(("1.00", "Jane Smith"))
    firm.run()
    firm.expense(("2.00", "Jane Smith"))
    firm.later()
    firm.world.clio.calls.clear()

    firm.run()

    assert firm.world.clio.calls.count("GET", r"/contacts\.json") == 0
    assert len(firm.entries()) == 2


# -- exactly once ------------------------------------------------------------------------------

def test_rerunning_an_import_creates_nothing_new(firm: Firm) -> None:
    firm.client("Jane Smith", ["Smith estate"])
    firm.client("Acme Holdings", ["Acme v. Beta"])
    firm.expense(("10.00", "Jane Smith"), ("20.00", "Acme Holdings"))
    firm.expense(("30.00", "Jane Smith"))
    first = firm.run()

    second = firm.run()  # inside the watermark's margin: everything is read again
    firm.later()
    third = firm.run()
    firm.later()
    fourth = firm.run()

    assert first.imported == 3
    assert second.imported == 0 and second.unchanged == 3
    assert third.imported == 0
    # A quiet run: one query for changed purchases, one CDC sweep for deleted ones.
    assert fourth.purchases_read == 0 and fourth.qbo_calls == 2 and fourth.clio_calls == 0
    assert firm.world.qbo.calls.count("GET", r"/cdc$") >= 1
    assert len(firm.entries()) == 3
    assert all(link.state == LinkState.CREATED for link in firm.links())


def test_dry_run_writes_nothing(firm: Firm) -> None:
    firm.client("Jane Smith", ["Smith estate"])
    firm.expense(("10.00", "Jane Smith"))

    summary = firm.run(dry_run=True)

    assert summary.imported == 1 and summary.run_id is None
    assert firm.entries() == [] and firm.links() == []
    assert firm.run().imported == 1  # the watermark did not move either


def test_edited_purchase_already_imported_is_not_duplicated(firm: Firm) -> None:
    firm.client("Jane Smith", ["Smith estate"])
    purchase = firm.expense(("10.00", "Jane Smith"))
    firm.run()

    firm.qbo.update_purchase(purchase["Id"], private_note="edited")
    firm.later()
    summary = firm.run()

    assert summary.imported == 0 and summary.updated == 1  # the memo is in the note
    entries = firm.entries()
    assert len(entries) == 1 and "edited" in entries[0]["note"]


def test_firm_without_settings_gets_a_clear_message(
        world: SandboxWorld, sessions: sessionmaker[Session]) -> None:
    firm = make_firm(world, sessions)
    firm.update_settings(import_account_ids=[])

    from hardcost.sync.importer import FirmNotReady

    with pytest.raises(FirmNotReady, match="choose the import account"):
        firm.engine.run()

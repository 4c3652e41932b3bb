"""docs/purchases.md (what gets imported, and the hints of "2. Contact → matter"), as table-driven
tests of the pure functions.

Purchases are plain dicts shaped like QBO JSON, amounts as ``Decimal`` (as the client decodes
them). No database, no HTTP, no clock.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from decimal import Decimal as D
from typing import Any

import pytest

from hardcost.sync.clio import Matter
from hardcost.sync.matching import leaf_name, matters_hinted, normalise_name, root_name
from hardcost.sync.rules import (
    NOTE_LIMIT,
    ImportRules,
    Payee,
    PlannedEntry,
    PurchasePlan,
    QboKey,
    build_note,
    home_amount,
    is_voided,
    plan_purchase,
    to_amount,
)

REALM = "9130"
PURCHASE_ID = "345"
IMPORT = "80"  # "Reimbursable Expenses"
IMPORT_2 = "81"  # a second import account
OTHER = "60"  # "Office Supplies": not a client cost
START = date(2024, 1, 1)
LABEL = "Check 1042 to Acme Couriers"  # how the default purchase is named in messages
SPEC_ITEM_SENTENCE = ("Item details are not supported — re-enter this line under Category "
                      "details in QuickBooks")
SMITH = ("7", "Smith")
JONES = ("8", "Jones")

# -- builders ---------------------------------------------------------------------------------


def acct_line(amount: Any, customer: tuple[str, str] | None = SMITH, *, line_id: str = "1",
              account: str = IMPORT, description: str | None = None) -> dict[str, Any]:
    detail: dict[str, Any] = {"AccountRef": {"value": account, "name": f"Account {account}"},
                              "BillableStatus": "Billable"}
    if customer is not None:
        detail["CustomerRef"] = {"value": customer[0], "name": customer[1]}
    line: dict[str, Any] = {"Id": line_id, "Amount": amount,
                            "DetailType": "AccountBasedExpenseLineDetail",
                            "AccountBasedExpenseLineDetail": detail}
    if description is not None:
        line["Description"] = description
    return line


def item_line(amount: Any, customer: tuple[str, str] | None = SMITH, *, line_id: str = "1",
              item: str | None = "ITEM1", description: str | None = None) -> dict[str, Any]:
    detail: dict[str, Any] = {"Qty": D("1"), "UnitPrice": amount, "BillableStatus": "Billable"}
    if item is not None:
        detail["ItemRef"] = {"value": item, "name": "Courier service"}
    if customer is not None:
        detail["CustomerRef"] = {"value": customer[0], "name": customer[1]}
    line: dict[str, Any] = {"Id": line_id, "Amount": amount,
                            "DetailType": "ItemBasedExpenseLineDetail",
                            "ItemBasedExpenseLineDetail": detail}
    if description is not None:
        line["Description"] = description
    return line


def purchase(*lines: Any, **fields: Any) -> dict[str, Any]:
    """A QBO Purchase: a Check numbered 1042 to the vendor Acme Couriers, dated 2024-03-15."""
    total = sum((ln["Amount"] for ln in lines
                 if isinstance(ln, dict) and isinstance(ln.get("Amount"), D)), D("0"))
    data: dict[str, Any] = {
        "Id": PURCHASE_ID, "SyncToken": "3", "domain": "QBO", "sparse": False,
        "TxnDate": "2024-03-15", "PaymentType": "Check", "DocNumber": "1042",
        "AccountRef": {"value": "35", "name": "Checking"},
        "EntityRef": {"value": "55", "name": "Acme Couriers", "type": "Vendor"},
        "TotalAmt": total, "Line": list(lines),
        "MetaData": {"CreateTime": "2024-03-15T10:00:00-08:00",
                     "LastUpdatedTime": "2024-03-15T10:00:00-08:00"},
    }
    for key, value in fields.items():
        if value is _DROP:
            data.pop(key, None)
        else:
            data[key] = value
    return data


_DROP = object()  # purchase(Field=_DROP) removes the field


def rules(**overrides: Any) -> ImportRules:
    settings: dict[str, Any] = {"start_date": START, "import_account_ids": frozenset({IMPORT})}
    settings.update(overrides)
    return ImportRules(**settings)


def plan(data: Any, **overrides: Any) -> PurchasePlan:
    return plan_purchase(data, REALM, rules(**overrides))


def only_entry(result: PurchasePlan) -> PlannedEntry:
    assert result.failures == [] and result.skips == [], (result.failures, result.skips)
    assert len(result.entries) == 1, result.entries
    return result.entries[0]


def entries_by_key(result: PurchasePlan) -> dict[tuple[str, str], D]:
    return {(e.key.customer_id, e.key.line_id): e.amount for e in result.entries}


def assert_nothing_happened(result: PurchasePlan) -> None:
    assert (result.entries, result.skips, result.failures) == ([], [], [])


# -- §2.1 payment types -----------------------------------------------------------------------


@pytest.mark.parametrize("fields", [
    pytest.param({"PaymentType": "Check"}, id="check"),
    pytest.param({"PaymentType": "Cash"}, id="cash-expense"),
    pytest.param({"PaymentType": "CreditCard"}, id="card-charge"),
    pytest.param({"PaymentType": "CreditCard", "Credit": False}, id="card-credit-false"),
])
def test_rule_2_1_check_cash_and_card_purchases_are_imported(fields: dict[str, Any]) -> None:
    entry = only_entry(plan(purchase(acct_line(D("12.50")), **fields)))
    assert entry.payment_type == fields["PaymentType"]
    assert entry.amount == D("12.50")
    assert not plan(purchase(acct_line(D("12.50")), **fields)).out_of_scope


def test_rule_2_1_credit_card_credit_is_skipped_with_reason() -> None:
    result = plan(purchase(acct_line(D("40.00")), PaymentType="CreditCard", Credit=True))
    assert result.entries == [] and result.failures == []
    assert len(result.skips) == 1
    skip = result.skips[0]
    assert skip.purchase_id == PURCHASE_ID
    assert "credit" in skip.reason.lower() and "refund" in skip.reason.lower()


@pytest.mark.parametrize("payment_type, shown", [
    pytest.param("Expense", "'Expense'", id="xsd-expense"),
    pytest.param("Other", "'Other'", id="xsd-other"),
    pytest.param("Wire", "'Wire'", id="made-up"),
    pytest.param("", "no payment type", id="empty"),
    pytest.param(None, "no payment type", id="null"),
    pytest.param(_DROP, "no payment type", id="missing"),
    pytest.param(7, "'7'", id="a-number"),
])
def test_rule_2_1_unknown_payment_type_is_skipped_with_reason(payment_type: Any,
                                                              shown: str) -> None:
    result = plan(purchase(acct_line(D("12.50")), PaymentType=payment_type))
    assert result.entries == [] and result.failures == []
    assert len(result.skips) == 1
    assert shown in result.skips[0].reason
    assert "payment type" in result.skips[0].reason


# -- §2.2 start date --------------------------------------------------------------------------


@pytest.mark.parametrize("txn_date, start, fields, imported", [
    pytest.param("2024-01-01", START, {}, True, id="on-the-start-date-counts"),
    pytest.param("2024-01-02", START, {}, True, id="after-the-start-date"),
    pytest.param("2023-12-31", START, {}, False, id="day-before-is-out-of-scope"),
    pytest.param("2023-12-31", START, {"PaymentType": "Expense"}, False,
                 id="day-before-not-skipped-even-if-unimportable"),
    pytest.param("2023-12-31", START, {"Line": []}, False,
                 id="day-before-not-failed-even-if-broken"),
    pytest.param("1999-06-30", None, {}, True, id="no-start-date-takes-everything"),
])
def test_rule_2_2_start_date_boundary(txn_date: str, start: date | None,
                                      fields: dict[str, Any], imported: bool) -> None:
    result = plan(purchase(acct_line(D("9.99")), TxnDate=txn_date, **fields), start_date=start)
    if imported:
        entry = only_entry(result)
        assert entry.date == date.fromisoformat(txn_date)
        assert not result.out_of_scope
    else:
        assert result.out_of_scope
        assert_nothing_happened(result)


# -- §2.3 which lines count -------------------------------------------------------------------


@pytest.mark.parametrize("lines, expected", [
    pytest.param([acct_line(D("10.00"), line_id="1"),
                  acct_line(D("99.00"), account=OTHER, line_id="2")],
                 {("7", ""): D("10.00")}, id="other-account-line-of-same-customer"),
    pytest.param([acct_line(D("99.00"), account=OTHER, line_id="1"),
                  acct_line(D("98.00"), None, account=OTHER, line_id="2")],
                 {}, id="only-other-accounts-with-and-without-customer"),
    pytest.param([acct_line(D("10.00"), line_id="1"),
                  acct_line(D("5.00"), account=IMPORT_2, line_id="2"),
                  acct_line(D("99.00"), account=OTHER, line_id="3")],
                 {("7", ""): D("15.00")}, id="two-import-accounts"),
])
def test_rule_2_3_lines_in_other_accounts_are_ignored(lines: list[dict[str, Any]],
                                                      expected: dict[Any, D]) -> None:
    result = plan(purchase(*lines), import_account_ids=frozenset({IMPORT, IMPORT_2}))
    assert entries_by_key(result) == expected
    assert result.skips == [] and result.failures == []


@pytest.mark.parametrize("line", [
    pytest.param(acct_line(D("20.00"), None, line_id="2"), id="no-customer-ref"),
    pytest.param({**acct_line(D("20.00"), None, line_id="2"),
                  "AccountBasedExpenseLineDetail": {"AccountRef": {"value": IMPORT},
                                                    "CustomerRef": None}},
                 id="customer-ref-null"),
])
def test_rule_2_3_import_account_line_without_customer_is_skipped_with_reason(
        line: dict[str, Any]) -> None:
    result = plan(purchase(acct_line(D("10.00"), line_id="1"), line))
    assert result.failures == []
    assert entries_by_key(result) == {("7", ""): D("10.00")}  # the customer's line still counts
    assert len(result.skips) == 1
    skip = result.skips[0]
    assert (skip.purchase_id, skip.line_id) == (PURCHASE_ID, "2")
    assert "no customer" in skip.reason and LABEL in skip.reason


# -- §2.4 item details ------------------------------------------------------------------------


def test_rule_2_4_item_line_with_customer_is_a_failure_with_the_spec_sentence() -> None:
    result = plan(purchase(item_line(D("15.00"), line_id="4")))
    assert result.entries == [] and result.skips == []
    assert len(result.failures) == 1
    failure = result.failures[0]
    assert SPEC_ITEM_SENTENCE in failure.message
    assert failure.message == f"{LABEL} line 4: {SPEC_ITEM_SENTENCE}."
    assert (failure.purchase_id, failure.code, failure.customer_id, failure.line_id) == (
        PURCHASE_ID, "item_details", "7", "4")


@pytest.mark.parametrize("lines", [
    pytest.param([item_line(D("5.00"), line_id="1"),
                  acct_line(D("10.00"), line_id="2"),
                  acct_line(D("20.00"), JONES, line_id="3")], id="item-line-first"),
    pytest.param([acct_line(D("10.00"), line_id="1"),
                  acct_line(D("20.00"), JONES, line_id="2"),
                  item_line(D("5.00"), line_id="3")], id="item-line-last"),
])
def test_rule_2_4_item_failure_holds_back_the_customers_other_lines(
        lines: list[dict[str, Any]]) -> None:
    result = plan(purchase(*lines))
    # Smith's category line is not imported on its own: the whole expense waits for the fix.
    assert entries_by_key(result) == {("8", ""): D("20.00")}
    assert [(f.code, f.customer_id) for f in result.failures] == [("item_details", "7")]
    assert result.skips == []


def test_rule_2_4_item_line_without_customer_is_ignored() -> None:
    result = plan(purchase(acct_line(D("10.00"), line_id="1"),
                           item_line(D("5.00"), None, line_id="2")))
    assert entries_by_key(result) == {("7", ""): D("10.00")}
    assert result.failures == [] and result.skips == []


@pytest.mark.parametrize("item_lines, item, item_accounts, expected_amount", [
    pytest.param(True, "ITEM1", {"ITEM1": IMPORT}, D("15.00"),
                 id="opt-in-item-expense-account-is-import-account"),
    pytest.param(True, "ITEM1", {"ITEM1": OTHER}, None,
                 id="opt-in-item-expense-account-is-other"),
    pytest.param(True, "ITEM1", {}, None, id="opt-in-item-account-unknown"),
    pytest.param(True, None, {"ITEM1": IMPORT}, None, id="opt-in-line-without-item-ref"),
    pytest.param(False, "ITEM1", {"ITEM1": IMPORT}, None, id="not-opted-in"),
])
def test_rule_2_4_item_lines_opt_in_imports_lines_whose_item_is_in_an_import_account(
        item_lines: bool, item: str | None, item_accounts: dict[str, str],
        expected_amount: D | None) -> None:
    result = plan(purchase(acct_line(D("10.00"), line_id="1"),
                           item_line(D("5.00"), line_id="2", item=item)),
                  item_lines=item_lines, item_expense_accounts=item_accounts)
    if expected_amount is not None:
        entry = only_entry(result)
        assert entry.amount == expected_amount  # merged with the customer's category line
    else:
        assert result.entries == []
        assert [(f.code, f.line_id) for f in result.failures] == [("item_details", "2")]


# -- §2.5 aggregation -------------------------------------------------------------------------

THREE_SMITH_ONE_JONES = [
    acct_line(D("10.00"), line_id="1", description="Courier to court"),
    acct_line(D("20.00"), JONES, line_id="2", description="Jones filing fee"),
    acct_line(D("2.50"), line_id="3", description="Parking"),
    acct_line(D("7.25"), line_id="4", description="Copies"),
]


@pytest.mark.parametrize("lines, expected", [
    pytest.param(THREE_SMITH_ONE_JONES,
                 {("7", ""): (D("19.75"), ("Courier to court", "Parking", "Copies")),
                  ("8", ""): (D("20.00"), ("Jones filing fee",))},
                 id="two-customers-interleaved"),
    pytest.param([acct_line(D("1.00"), line_id="1", description="Same"),
                  acct_line(D("2.00"), line_id="2", description="Same")],
                 {("7", ""): (D("3.00"), ("Same",))}, id="repeated-description-once"),
    pytest.param([acct_line(D("1.00"), ("7", "Smith"), line_id="1"),
                  acct_line(D("2.00"), ("7", "Smith (renamed)"), line_id="2")],
                 {("7", ""): (D("3.00"), ())}, id="grouped-by-customer-id-not-name"),
])
def test_rule_2_5_lines_of_one_customer_merge_into_one_entry(
        lines: list[dict[str, Any]], expected: dict[Any, tuple[D, tuple[str, ...]]]) -> None:
    result = plan(purchase(*lines))
    assert result.failures == [] and result.skips == []
    got = {(e.key.customer_id, e.key.line_id): (e.amount, e.descriptions)
           for e in result.entries}
    assert got == expected
    for entry in result.entries:
        assert entry.note.endswith(f"[qbo {REALM}/{PURCHASE_ID}/{entry.key.customer_id}]")


def test_rule_2_5_split_lines_makes_one_entry_per_line() -> None:
    result = plan(purchase(*THREE_SMITH_ONE_JONES), split_lines=True)
    assert result.failures == [] and result.skips == []
    got = {(e.key.customer_id, e.key.line_id): (e.amount, e.descriptions, e.note)
           for e in result.entries}
    assert got == {
        ("7", "1"): (D("10.00"), ("Courier to court",), "Courier to court\n[qbo 9130/345/7/1]"),
        ("8", "2"): (D("20.00"), ("Jones filing fee",), "Jones filing fee\n[qbo 9130/345/8/2]"),
        ("7", "3"): (D("2.50"), ("Parking",), "Parking\n[qbo 9130/345/7/3]"),
        ("7", "4"): (D("7.25"), ("Copies",), "Copies\n[qbo 9130/345/7/4]"),
    }


def test_rule_2_5_split_lines_without_line_ids_uses_the_line_position() -> None:
    lines = [acct_line(D("1.00")), acct_line(D("2.00"))]
    for line in lines:
        del line["Id"]
    result = plan(purchase(*lines), split_lines=True)
    assert entries_by_key(result) == {("7", "1"): D("1.00"), ("7", "2"): D("2.00")}


@pytest.mark.parametrize("amounts, expected", [
    pytest.param([D("0.10"), D("0.20")], "0.30", id="tenth-plus-fifth"),
    pytest.param([D("0.01")] * 100, "1.00", id="hundred-cents"),
    pytest.param([D("0.01")] * 333, "3.33", id="many-cents"),
    pytest.param([D("0.1"), D("0.1"), D("0.1")], "0.30", id="three-tenths"),
    pytest.param([D("12345678.91"), D("0.09")], "12345679.00", id="large"),
    pytest.param([5, 7], "12.00", id="integers"),
    pytest.param(["1.10", " 2.20 "], "3.30", id="numeric-strings"),
    pytest.param([D("10.00"), D("-2.50")], "7.50", id="with-a-negative-line"),
])
def test_rule_2_5_amounts_are_summed_exactly_in_decimal(amounts: list[Any],
                                                        expected: str) -> None:
    lines = [acct_line(a, line_id=str(i)) for i, a in enumerate(amounts, start=1)]
    entry = only_entry(plan(purchase(*lines)))
    assert isinstance(entry.amount, D)
    assert str(entry.amount) == expected


@pytest.mark.parametrize("amounts", [
    pytest.param([D("0.00")], id="zero-line"),
    pytest.param([D("10.00"), D("-10.00")], id="lines-cancel-out"),
])
def test_rule_2_5_zero_amount_group_is_skipped(amounts: list[D]) -> None:
    lines = [acct_line(a, line_id=str(i)) for i, a in enumerate(amounts, start=1)]
    result = plan(purchase(*lines, TotalAmt=D("0"), PrivateNote="not voided"))
    assert result.entries == [] and result.failures == []
    assert len(result.skips) == 1
    assert result.skips[0].customer_id == "7"
    assert "0.00" in result.skips[0].reason


def test_rule_2_5_negative_amount_group_is_a_failure() -> None:
    result = plan(purchase(acct_line(D("-25.00"), line_id="1"),
                           acct_line(D("5.00"), line_id="2"),
                           acct_line(D("20.00"), JONES, line_id="3")))
    assert entries_by_key(result) == {("8", ""): D("20.00")}
    assert result.skips == []
    assert len(result.failures) == 1
    failure = result.failures[0]
    assert (failure.code, failure.customer_id) == ("negative_amount", "7")
    assert "-20.00" in failure.message and "negative" in failure.message


# -- §2.6 the entry ---------------------------------------------------------------------------


def test_rule_2_6_entry_date_token_and_payment_type_come_from_the_purchase() -> None:
    entry = only_entry(plan(purchase(acct_line(D("1.00")), TxnDate="2024-02-29",
                                     SyncToken="17", PaymentType="Cash")))
    assert entry.date == date(2024, 2, 29)
    assert entry.sync_token == "17"
    assert entry.payment_type == "Cash"
    assert entry.key == QboKey(REALM, PURCHASE_ID, "7", "")


@pytest.mark.parametrize("amount, rate, expected", [
    pytest.param(D("10.35"), D("1.5"), "15.53", id="half-up-not-half-even-nor-float"),
    pytest.param(D("10.25"), D("1.5"), "15.38", id="half-up"),
    pytest.param(D("100.00"), D("0.7456"), "74.56", id="rate-below-one"),
    pytest.param(D("33.33"), D("1.23456"), "41.15", id="long-rate"),
    pytest.param(D("2.675"), None, "2.68", id="no-rate-half-up"),
    pytest.param(D("0.005"), None, "0.01", id="half-cent-up"),
    pytest.param(D("10"), None, "10.00", id="two-places"),
])
def test_rule_2_6_home_amount_rounds_half_up_to_cents(amount: D, rate: D | None,
                                                      expected: str) -> None:
    assert str(home_amount(amount, rate)) == expected


@pytest.mark.parametrize("amounts, rate, home, original", [
    pytest.param([D("10.35")], D("1.5"), "15.53", "10.35", id="one-line"),
    pytest.param([D("0.01"), D("0.01")], D("1.5"), "0.03", "0.02",
                 id="sum-then-convert"),
    pytest.param([D("100.00")], D("0.7456"), "74.56", "100.00", id="rate-below-one"),
])
def test_rule_2_6_multi_currency_entry_is_in_home_currency_with_original_in_note(
        amounts: list[D], rate: D, home: str, original: str) -> None:
    lines = [acct_line(a, line_id=str(i), description="Translation")
             for i, a in enumerate(amounts, start=1)]
    entry = only_entry(plan(purchase(*lines, CurrencyRef={"value": "EUR", "name": "Euro"},
                                     ExchangeRate=rate, PrivateNote="Paris office")))
    assert str(entry.amount) == home
    body, currency_line, marker = entry.note.split("\n")
    assert body == "Translation; Paris office"
    assert f"{original} EUR" in currency_line and str(rate) in currency_line
    assert marker == "[qbo 9130/345/7]"


@pytest.mark.parametrize("fields", [
    pytest.param({"CurrencyRef": {"value": "USD"}, "ExchangeRate": D("1")}, id="rate-1"),
    pytest.param({"CurrencyRef": {"value": "USD"}, "ExchangeRate": D("1.000000")},
                 id="rate-1.000000"),
    pytest.param({"CurrencyRef": {"value": "USD"}}, id="no-rate"),
])
def test_rule_2_6_exchange_rate_one_means_no_currency_note(fields: dict[str, Any]) -> None:
    entry = only_entry(plan(purchase(acct_line(D("10.35"), description="Copies"), **fields)))
    assert entry.amount == D("10.35")
    assert entry.note == "Copies\n[qbo 9130/345/7]"


@pytest.mark.parametrize("doc_number, expected", [
    pytest.param("1042", "1042", id="check-number"),
    pytest.param("A" * 21, "A" * 21, id="exactly-21"),
    pytest.param("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "ABCDEFGHIJKLMNOPQRSTU", id="cut-to-21"),
    pytest.param("  77  ", "77", id="trimmed"),
    pytest.param(_DROP, None, id="missing"),
    pytest.param("   ", None, id="blank"),
])
def test_rule_2_6_reference_is_the_doc_number(doc_number: Any, expected: str | None) -> None:
    entry = only_entry(plan(purchase(acct_line(D("1.00")), DocNumber=doc_number)))
    assert entry.reference == expected


@pytest.mark.parametrize("descriptions, memo, expected", [
    pytest.param(["Courier to court", "Filing fee"], "Smith costs",
                 "Courier to court; Filing fee; Smith costs\n[qbo 9130/345/7]",
                 id="descriptions-then-memo-then-marker"),
    pytest.param(["Courier"], None, "Courier\n[qbo 9130/345/7]", id="no-memo"),
    pytest.param([], "Smith costs", "Smith costs\n[qbo 9130/345/7]", id="memo-only"),
    pytest.param(["Courier"], "Courier", "Courier\n[qbo 9130/345/7]",
                 id="memo-same-as-description-once"),
    pytest.param([], None, "[qbo 9130/345/7]", id="marker-only"),
    pytest.param(["Copies [QBO 9130/346/7]"], "see [qbo 9130/501/7]",
                 "Copies (QBO 9130/346/7]; see (qbo 9130/501/7]\n[qbo 9130/345/7]",
                 id="quoted-marker-disarmed"),
])
def test_rule_2_6_note_is_descriptions_then_memo_then_marker(
        descriptions: list[str], memo: str | None, expected: str) -> None:
    lines = [acct_line(D("1.00"), line_id=str(i), description=text)
             for i, text in enumerate(descriptions or [None], start=1)]
    entry = only_entry(plan(purchase(*lines, PrivateNote=memo)))
    assert entry.note == expected
    assert entry.memo == memo


@pytest.mark.parametrize("descriptions, memo, currency_note", [
    pytest.param(["x" * 5000], None, None, id="one-huge-description"),
    pytest.param(["d" * 1500, "e" * 1500], "m" * 3000, None, id="descriptions-and-memo"),
    pytest.param(["y" * (NOTE_LIMIT - 10)], None, "Paid 10.00 EUR at 1.1",
                 id="with-currency-note"),
    pytest.param(["z" * 2500], "Voided? no", None, id="long-then-memo"),
])
def test_rule_2_6_marker_is_last_and_intact_when_text_exceeds_the_note_limit(
        descriptions: list[str], memo: str | None, currency_note: str | None) -> None:
    marker = QboKey(REALM, PURCHASE_ID, "7", "12").marker
    note = build_note(descriptions, memo, marker, currency_note)
    assert len(note) <= NOTE_LIMIT
    assert note.endswith("\n" + marker)
    assert note.count(marker) == 1
    assert note.startswith(descriptions[0][:100])
    if currency_note:
        assert note.endswith(f"\n{currency_note}\n{marker}")


def test_rule_2_6_marker_survives_long_descriptions_through_plan_purchase() -> None:
    lines = [acct_line(D("1.00"), line_id=str(i), description=f"{i:03d} " + "w" * 300)
             for i in range(1, 21)]
    entry = only_entry(plan(purchase(*lines, PrivateNote="memo " * 200)))
    assert len(entry.note) <= NOTE_LIMIT
    assert entry.note.endswith("\n[qbo 9130/345/7]")
    assert entry.note.startswith("001 www")
    assert len(entry.descriptions) == 20  # the full texts are kept beside the cut note


@pytest.mark.parametrize("key, marker", [
    pytest.param(QboKey("9130", "345", "7"), "[qbo 9130/345/7]", id="merged-no-line-id"),
    pytest.param(QboKey("9130", "345", "7", ""), "[qbo 9130/345/7]", id="empty-line-id"),
    pytest.param(QboKey("9130", "345", "7", "2"), "[qbo 9130/345/7/2]", id="with-line-id"),
    pytest.param(QboKey("4620816365", "1", "58", "10"), "[qbo 4620816365/1/58/10]",
                 id="long-realm"),
])
def test_rule_2_6_marker_format(key: QboKey, marker: str) -> None:
    assert key.marker == marker


@pytest.mark.parametrize("split, marker", [
    pytest.param(False, "[qbo 9130/345/7]", id="merged"),
    pytest.param(True, "[qbo 9130/345/7/6]", id="split"),
])
def test_rule_2_6_marker_of_a_planned_entry(split: bool, marker: str) -> None:
    entry = only_entry(plan(purchase(acct_line(D("1.00"), line_id="6")), split_lines=split))
    assert entry.marker == marker
    assert entry.note.endswith(marker)


@pytest.mark.parametrize("entity_ref, payee", [
    pytest.param({"value": "55", "name": "Acme Couriers", "type": "Vendor"},
                 Payee("55", "Acme Couriers", "Vendor"), id="vendor"),
    pytest.param({"value": "12", "name": "Jane Clerk", "type": "Employee"},
                 Payee("12", "Jane Clerk", "Employee"), id="employee"),
    pytest.param({"value": "7", "name": "Smith", "type": "Customer"},
                 Payee("7", "Smith", "Customer"), id="customer"),
    pytest.param({"value": "55", "name": "Acme Couriers"},
                 Payee("55", "Acme Couriers", ""), id="no-type"),
    pytest.param(_DROP, None, id="no-entity-ref"),
    pytest.param({"value": "", "name": "Ghost"}, None, id="empty-value"),
])
def test_rule_2_6_payee_comes_from_entity_ref(entity_ref: Any, payee: Payee | None) -> None:
    entry = only_entry(plan(purchase(acct_line(D("1.00")), EntityRef=entity_ref)))
    assert entry.payee == payee


def test_rule_2_6_sub_customers_keep_their_full_name_and_their_own_entry() -> None:
    result = plan(purchase(acct_line(D("1.00"), ("21", "Smith:Smith v. Jones"), line_id="1"),
                           acct_line(D("2.00"), ("22", "Smith:00043"), line_id="2")))
    names = {e.key.customer_id: e.customer_name for e in result.entries}
    assert names == {"21": "Smith:Smith v. Jones", "22": "Smith:00043"}
    assert {root_name(n) for n in names.values()} == {"Smith"}
    assert entries_by_key(result) == {("21", ""): D("1.00"), ("22", ""): D("2.00")}


# -- §4 voids (a purchase that reaches planning voided is not imported) ---------------------


@pytest.mark.parametrize("total, memo, voided", [
    pytest.param(D("0"), "Voided - 03/15/2024", True, id="zero-and-voided-memo"),
    pytest.param(D("0.00"), "voided", True, id="lower-case"),
    pytest.param(0, "  Voided", True, id="int-zero-leading-space"),
    pytest.param(D("12.00"), "Voided", False, id="non-zero-total"),
    pytest.param(D("0"), "Payment voided", False, id="voided-not-at-start"),
    pytest.param(D("0"), None, False, id="zero-no-memo"),
    pytest.param(_DROP, "Voided", False, id="no-total"),
    pytest.param("abc", "Voided", False, id="garbled-total"),
])
def test_rule_4_voided_purchase_detection(total: Any, memo: str | None,
                                          voided: bool) -> None:
    assert is_voided(purchase(TotalAmt=total, PrivateNote=memo)) is voided


def test_rule_4_voided_purchase_is_skipped() -> None:
    result = plan(purchase(acct_line(D("0"), line_id="1"), acct_line(D("0"), JONES, line_id="2"),
                           TotalAmt=D("0"), PrivateNote="Voided - was 40.00"))
    assert result.entries == [] and result.failures == []
    assert len(result.skips) == 1
    assert "voided" in result.skips[0].reason.lower()


# -- malformed input: a failure with a readable reason, never an exception ------------------


def _with(**fields: Any) -> Callable[[], dict[str, Any]]:
    return lambda: purchase(acct_line(D("10.00")), **fields)


def _with_line(line: Any) -> Callable[[], dict[str, Any]]:
    return lambda: purchase(line)


def _line_with(**fields: Any) -> Callable[[], dict[str, Any]]:
    def build() -> dict[str, Any]:
        line = acct_line(D("10.00"))
        for key, value in fields.items():
            if value is _DROP:
                del line[key]
            else:
                line[key] = value
        return purchase(line)
    return build


MALFORMED = [
    pytest.param(lambda: purchase(acct_line(D("1")), Id=_DROP), "without an id",
                 id="missing-id"),
    pytest.param(lambda: purchase(acct_line(D("1")), Id=None), "without an id", id="null-id"),
    pytest.param(lambda: purchase(acct_line(D("1")), Id="  "), "without an id", id="blank-id"),
    pytest.param(lambda: None, "without an id", id="purchase-is-none"),
    pytest.param(lambda: ["not", "a", "purchase"], "without an id", id="purchase-is-a-list"),
    pytest.param(_with(TxnDate=_DROP), "transaction date", id="missing-txn-date"),
    pytest.param(_with(TxnDate=None), "transaction date", id="null-txn-date"),
    pytest.param(_with(TxnDate=""), "transaction date", id="empty-txn-date"),
    pytest.param(_with(TxnDate="15/03/2024"), "'15/03/2024'", id="garbled-txn-date"),
    pytest.param(_with(TxnDate="2024-02-30"), "'2024-02-30'", id="impossible-txn-date"),
    pytest.param(_with(TxnDate=20240315), "transaction date", id="numeric-txn-date"),
    pytest.param(_with(Line=_DROP), "no lines", id="line-missing"),
    pytest.param(_with(Line=None), "no lines", id="line-null"),
    pytest.param(_with(Line={"Id": "1"}), "no lines", id="line-is-a-dict"),
    pytest.param(_with(Line="abc"), "no lines", id="line-is-a-string"),
    pytest.param(_with(Line=[]), "no lines", id="line-empty"),
    pytest.param(_with_line("x"), "line 1 is not a line", id="line-item-is-a-string"),
    pytest.param(_with_line(None), "line 1 is not a line", id="line-item-is-none"),
    pytest.param(_with_line(5), "line 1 is not a line", id="line-item-is-a-number"),
    pytest.param(_with_line(["a"]), "line 1 is not a line", id="line-item-is-a-list"),
    pytest.param(_line_with(Amount="abc"), "'abc'", id="amount-abc"),
    pytest.param(_line_with(Amount=""), "not a number", id="amount-empty-string"),
    pytest.param(_line_with(Amount=None), "no amount", id="amount-none"),
    pytest.param(_line_with(Amount=_DROP), "no amount", id="amount-missing"),
    pytest.param(_line_with(Amount=True), "no amount", id="amount-true"),
    pytest.param(_line_with(Amount=False), "no amount", id="amount-false"),
    pytest.param(_line_with(Amount=[D("1")]), "not a number", id="amount-list"),
    pytest.param(_line_with(Amount={"value": 1}), "not a number", id="amount-dict"),
    pytest.param(_line_with(Amount=D("NaN")), "not a number", id="amount-nan"),
    pytest.param(_line_with(Amount="Infinity"), "not a number", id="amount-infinity"),
    pytest.param(_line_with(Amount=10.0), "not a number", id="amount-float-never-used"),
    pytest.param(_line_with(DetailType="MysteryLineDetail"), "MysteryLineDetail",
                 id="unknown-detail-type"),
    pytest.param(_line_with(DetailType=_DROP), "no detail type", id="missing-detail-type"),
    pytest.param(_line_with(AccountBasedExpenseLineDetail=_DROP), "no details",
                 id="detail-dict-missing"),
    pytest.param(_line_with(AccountBasedExpenseLineDetail="oops"), "no details",
                 id="detail-not-a-dict"),
    pytest.param(_with(ExchangeRate="abc"), "exchange rate", id="exchange-rate-garbled"),
    pytest.param(_with(ExchangeRate=D("0")), "exchange rate", id="exchange-rate-zero"),
    pytest.param(_with(ExchangeRate=D("-1.2")), "exchange rate", id="exchange-rate-negative"),
]


@pytest.mark.parametrize("build, fragment", MALFORMED)
def test_malformed_input_is_a_failure_with_a_readable_reason(
        build: Callable[[], Any], fragment: str) -> None:
    result = plan(build())  # must not raise
    assert result.entries == [] and result.skips == []
    assert len(result.failures) == 1
    message = result.failures[0].message
    assert fragment in message
    assert "Traceback" not in message and "Error" not in message
    if "without an id" in fragment:
        assert result.failures[0].purchase_id == "?"
    else:
        assert result.failures[0].purchase_id == PURCHASE_ID
        assert message.startswith(LABEL), message  # says which expense, as a person sees it


@pytest.mark.parametrize("bad_line", [
    pytest.param({**acct_line("abc", line_id="2")}, id="bad-amount"),
    pytest.param({**acct_line(D("3.00"), line_id="2"), "DetailType": "MysteryLineDetail",
                  "MysteryLineDetail": {"CustomerRef": {"value": "7"}}},
                 id="unknown-detail-type-with-customer"),
])
def test_malformed_line_holds_back_its_customer_only(bad_line: dict[str, Any]) -> None:
    result = plan(purchase(acct_line(D("10.00"), line_id="1"), bad_line,
                           acct_line(D("20.00"), JONES, line_id="3")))
    assert entries_by_key(result) == {("8", ""): D("20.00")}
    assert [(f.customer_id, f.line_id) for f in result.failures] == [("7", "2")]


def test_malformed_customer_ref_with_empty_value_is_not_imported() -> None:
    detail = {"AccountRef": {"value": IMPORT}, "CustomerRef": {"value": "", "name": "Smith"}}
    line = {"Id": "1", "Amount": D("10.00"), "DetailType": "AccountBasedExpenseLineDetail",
            "AccountBasedExpenseLineDetail": detail}
    result = plan(purchase(line))  # must not raise
    assert result.entries == []
    assert len(result.skips) + len(result.failures) == 1


@pytest.mark.parametrize("customer_ref", [
    pytest.param({"value": "", "name": "Smith"}, id="empty-string"),
    pytest.param({"value": None, "name": "Smith"}, id="null"),
    pytest.param({"value": "   "}, id="blank"),
])
def test_rule_2_3_empty_customer_ref_counts_as_no_customer_and_is_skipped(
        customer_ref: dict[str, Any]) -> None:
    # docs/purchases.md, "Lines with no customer": import-account lines without a customer are
    # skipped with a reason.
    detail = {"AccountRef": {"value": IMPORT}, "CustomerRef": customer_ref}
    line = {"Id": "1", "Amount": D("10.00"), "DetailType": "AccountBasedExpenseLineDetail",
            "AccountBasedExpenseLineDetail": detail}
    result = plan(purchase(line))
    assert result.entries == [] and result.failures == []
    assert len(result.skips) == 1 and "no customer" in result.skips[0].reason


@pytest.mark.parametrize("build", [
    pytest.param(lambda: purchase(acct_line(D("1E+30"))), id="huge-line-amount"),
    pytest.param(lambda: purchase(acct_line("1e26")), id="huge-amount-string"),
    pytest.param(lambda: purchase(acct_line(D("10.00")), CurrencyRef={"value": "EUR"},
                                  ExchangeRate=D("1E+30")), id="huge-exchange-rate"),
])
def test_malformed_out_of_range_amount_is_a_failure_not_an_exception(
        build: Callable[[], dict[str, Any]]) -> None:
    # home_amount's quantize overflows the 28-digit context from 1E+26 upwards.
    result = plan(build())  # must not raise decimal.InvalidOperation
    assert result.entries == [] and result.skips == []
    assert [(f.code, f.customer_id) for f in result.failures] == [("bad_amount", "7")]
    assert result.failures[0].message.startswith(LABEL)


@pytest.mark.parametrize("amount, fields", [
    pytest.param(D("12.123456789"), {}, id="nine-places"),
    pytest.param(D("0.004"), {}, id="under-a-cent"),
    pytest.param("10.005", {}, id="three-places-as-text"),
    pytest.param(D("1.0001"), {"CurrencyRef": {"value": "KWD"}, "ExchangeRate": D("3.25")},
                 id="four-places-in-a-three-place-currency"),
    pytest.param(D("99999999999999999999.99"), {}, id="beyond-any-real-cost"),
    pytest.param(D("10000000000.00"), {}, id="ten-billion"),
    pytest.param(D("9000000000.00"), {"CurrencyRef": {"value": "EUR"},
                                      "ExchangeRate": D("2")}, id="too-large-once-converted"),
])
def test_amounts_that_would_be_rounded_or_cannot_be_real_are_failures_not_entries(
        amount: Any, fields: dict[str, Any]) -> None:
    """Issue 10 #12: 99999999999999999999.99 reached Clio and 12.123456789 was rounded."""
    result = plan(purchase(acct_line(amount), **fields))

    assert result.entries == [] and result.skips == []
    assert [(f.code, f.customer_id) for f in result.failures] == [("bad_amount", "7")]
    assert "Fix the amount in QuickBooks" in result.failures[0].message


@pytest.mark.parametrize("amount, fields, expected", [
    pytest.param(D("12.500"), {}, "12.50", id="trailing-zero-is-two-places"),
    pytest.param(D("1.125"), {"CurrencyRef": {"value": "KWD"}, "ExchangeRate": D("3.25")},
                 "3.66", id="three-places-in-a-three-place-currency"),
    pytest.param(D("9999999999.99"), {}, "9999999999.99", id="the-largest"),
])
def test_amounts_within_their_currencys_places_and_the_bound_are_imported(
        amount: D, fields: dict[str, Any], expected: str) -> None:
    entry = only_entry(plan(purchase(acct_line(amount), **fields)))
    assert str(entry.amount) == expected


@pytest.mark.parametrize("value, expected", [
    pytest.param(D("12.34"), "12.34", id="decimal"),
    pytest.param(12, "12", id="int"),
    pytest.param(" 0.10 ", "0.10", id="string-with-spaces"),
    pytest.param("-3.5", "-3.5", id="negative-string"),
])
def test_to_amount_accepts_exact_numbers(value: Any, expected: str) -> None:
    amount = to_amount(value, "line 1")
    assert isinstance(amount, D) and str(amount) == expected


@pytest.mark.parametrize("value", [
    pytest.param("abc", id="abc"), pytest.param(None, id="none"),
    pytest.param(True, id="true"), pytest.param([1], id="list"),
    pytest.param(0.1, id="float"), pytest.param("NaN", id="nan"),
])
def test_to_amount_rejects_non_numbers_with_a_readable_message(value: Any) -> None:
    with pytest.raises(Exception) as info:
        to_amount(value, "line 1")
    assert "line 1 has" in str(info.value)
    assert getattr(info.value, "code", None) == "bad_amount"


# -- PlannedEntry persistence -----------------------------------------------------------------


@pytest.mark.parametrize("build, split", [
    pytest.param(lambda: purchase(acct_line(D("10.35"), description="Translation"),
                                  CurrencyRef={"value": "EUR"}, ExchangeRate=D("1.5"),
                                  PrivateNote="Paris"), False, id="full-merged"),
    pytest.param(lambda: purchase(acct_line(D("0.10"), line_id="9"), EntityRef=_DROP,
                                  DocNumber=_DROP, PaymentType="Cash"), True,
                 id="bare-split"),
])
def test_planned_entry_json_round_trip(build: Callable[[], dict[str, Any]],
                                       split: bool) -> None:
    entry = only_entry(plan(build(), split_lines=split))
    text = json.dumps(entry.to_json())  # plain JSON, no Decimal/date objects
    again = PlannedEntry.from_json(json.loads(text))
    assert again == entry
    assert isinstance(again.amount, D) and str(again.amount) == str(entry.amount)
    assert again.marker == entry.marker


# -- §3.1 names -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [
    pytest.param(None, id="none"),
    pytest.param("", id="empty"),
    pytest.param("  \t\n", id="only-whitespace"),
    pytest.param("&", id="only-ampersand-is-the-word-and"),
])
def test_normalise_name_of_nothing(name: str | None) -> None:
    assert normalise_name(name) == ("and" if name == "&" else "")


@pytest.mark.parametrize("a, b, same", [
    pytest.param("SMITH and JONES llp", "smith and jones LLP", True, id="case"),
    pytest.param("Smith & Jones", "smith and jones", True, id="and-vs-ampersand"),
    pytest.param("A&B Couriers", "A and B Couriers", True, id="ampersand-without-spaces"),
    pytest.param("Zoë Adams", "Zoe Adams", True, id="accent"),
    pytest.param("Café Müller", "Cafe Muller", True, id="accents"),
    pytest.param("Straße", "STRASSE", True, id="sharp-s-casefold"),
    pytest.param("Acme, Inc.", "Acme Inc", True, id="punctuation"),
    pytest.param("O'Brien-Smith, Inc.", "O Brien Smith Inc", True, id="more-punctuation"),
    pytest.param("  Smith \t  Jones\n", "Smith Jones", True, id="whitespace"),
    pytest.param("Acme\u00a0Inc", "Acme Inc", True, id="non-breaking-space"),
    pytest.param("Smith, Jane", "Jane Smith", True, id="word-order"),
    pytest.param("Smith", "Smyth", False, id="different-names"),
    pytest.param("Smith & Co", "Smith Co", False, id="ampersand-is-a-word"),
    pytest.param("Jane Smith", "Jane Smithson", False, id="prefix-is-not-equal"),
    pytest.param("Jane Smith", "Jane Smith Jr", False, id="extra-word"),
])
def test_normalise_name_equivalence(a: str, b: str, same: bool) -> None:
    assert (normalise_name(a) == normalise_name(b)) is same
    assert normalise_name(a) == normalise_name(normalise_name(a))  # idempotent


@pytest.mark.parametrize("name, root, leaf", [
    pytest.param("Smith", "Smith", "Smith", id="top-level"),
    pytest.param("Smith:Smith v. Jones", "Smith", "Smith v. Jones", id="sub-customer"),
    pytest.param("Smith:Estate:00042", "Smith", "00042", id="three-levels"),
    pytest.param(" Smith : 00042 ", "Smith", "00042", id="spaces"),
])
def test_root_and_leaf_name(name: str, root: str, leaf: str) -> None:
    assert (root_name(name), leaf_name(name)) == (root, leaf)


# -- §3.2 bullet 2: matters hinted by sub-customer or memo -----------------------------------

MATTERS = [
    Matter(1, "00042", "Smith v. Jones", "Open", 100),
    Matter(2, "00043", "Estate of Smith", "Open", 100),
    Matter(3, "00044", "Smith purchase of 12 Elm St", "Pending", 100),
]


def entry_for(customer_name: str, memo: str | None = None,
              descriptions: tuple[str, ...] = ()) -> PlannedEntry:
    return PlannedEntry(key=QboKey(REALM, PURCHASE_ID, "7"), sync_token="0",
                        date=date(2024, 3, 15), amount=D("10.00"), reference=None, note="",
                        customer_name=customer_name, payee=None, memo=memo,
                        descriptions=descriptions, payment_type="Check")


@pytest.mark.parametrize("customer_name, memo, descriptions, expected", [
    pytest.param("Smith:Smith v Jones", None, (), [1], id="sub-customer-is-description"),
    pytest.param("Smith:SMITH V. JONES", None, (), [1], id="description-normalised"),
    pytest.param("Smith:00043", None, (), [2], id="sub-customer-is-display-number"),
    pytest.param("Parent:Smith:Estate of Smith", None, (), [2], id="deep-sub-customer-leaf"),
    pytest.param("Smith:Unrelated", None, (), [], id="sub-customer-matches-nothing"),
    pytest.param("Smith:Jones v. Smith", None, (), [], id="reversed-case-name-is-another-case"),
    pytest.param("Smith v. Jones", None, (), [], id="top-level-name-is-no-hint"),
    pytest.param("Smith", "re 00042 filing", (), [1], id="memo-quotes-display-number"),
    pytest.param("Smith", "(00042).", (), [1], id="memo-quotes-with-punctuation"),
    pytest.param("Smith", None, ("Courier for 00044",), [3], id="description-quotes"),
    pytest.param("Smith", "re 000421", (), [], id="longer-number-does-not-match"),
    pytest.param("Smith", "re 100042", (), [], id="number-inside-another"),
    pytest.param("Smith", "ref A00042", (), [], id="letter-prefix-does-not-match"),
    pytest.param("Smith", "00042 and 00043", (), [1, 2], id="memo-quotes-two"),
    pytest.param("Smith:Unrelated", "re 00043", (), [2], id="memo-when-sub-customer-misses"),
    pytest.param("Smith", "Smith v. Jones costs", (), [], id="memo-description-is-no-hint"),
    pytest.param("Smith", None, (), [], id="no-hint"),
])
def test_rule_3_2_matters_hinted(customer_name: str, memo: str | None,
                                 descriptions: tuple[str, ...], expected: list[int]) -> None:
    hinted = matters_hinted(entry_for(customer_name, memo, descriptions), MATTERS)
    assert [m.id for m in hinted] == expected


def test_rule_3_2_planned_sub_customer_entry_hints_its_matter() -> None:
    result = plan(purchase(acct_line(D("5.00"), ("21", "Smith:00044")),
                           PrivateNote="no number here"))
    assert [m.id for m in matters_hinted(only_entry(result), MATTERS)] == [3]

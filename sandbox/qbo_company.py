"""One QuickBooks Online company (realm) of the QBO sandbox: its records, shaped like QBO's JSON.

Amounts are Decimals (normalised: ``12.50`` is stored as ``12.5``); timestamps are ISO-8601 in
Pacific time at one-second resolution, like QBO, so several records can share one.
"""

from __future__ import annotations

import copy
import functools
import mimetypes
import threading
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, Concatenate, ParamSpec, TypeVar

from hardcost.sandbox.clock import SandboxClock
from hardcost.sandbox.qbo_files import FileBody
from hardcost.sandbox.qbo_query import COMPANY_TZ, parse_instant

ENTITIES = ("Purchase", "Bill", "BillPayment", "Customer", "Vendor", "Employee", "Account",
            "Item", "Attachable")
TRANSACTIONS = frozenset({"Purchase", "Bill", "BillPayment"})
DELETABLE = TRANSACTIONS | {"Attachable"}
"""Entities whose deletions CDC reports (as ``status: Deleted`` stubs)."""
ATTACHABLE = "Attachable"
ATTACHABLE_ID_BASE = 100000000004190000
"""Attachable ids run long in QuickBooks (Intuit's examples: ``100000000004190865``)."""
ATTACHABLE_TARGETS = {"purchase": "Purchase", "bill": "Bill"}
NAME_LISTS = frozenset({"Customer", "Vendor", "Employee", "Account", "Item"})
PAYEE_TYPES = ("Customer", "Vendor", "Employee")
CURRENCY_NAMES = {
    "USD": "United States Dollar",
    "CAD": "Canadian Dollar",
    "EUR": "Euro",
    "GBP": "British Pound Sterling",
    "AUD": "Australian Dollar",
}
ACCOUNT_CLASSIFICATION = {
    "Bank": "Asset",
    "Credit Card": "Liability",
    "Expense": "Expense",
    "Other Expense": "Expense",
    "Cost of Goods Sold": "Expense",
    "Accounts Payable": "Liability",
}
Amount = str | int | float | Decimal
Record = dict[str, Any]

P = ParamSpec("P")
R = TypeVar("R")


def money(value: Amount) -> Decimal:
    """A Decimal written the way QBO writes amounts: no float artefacts, no trailing zeros."""
    amount = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    amount = amount.normalize()
    return amount.quantize(Decimal(1)) if amount == amount.to_integral_value() else amount


def pacific_stamp(now: datetime) -> str:
    """QBO's MetaData timestamp: Pacific time, whole seconds, with offset."""
    return now.astimezone(COMPANY_TZ).replace(microsecond=0).isoformat()


# --- line builders ----------------------------------------------------------------------------


def account_line(amount: Amount, account_id: str, *, customer_id: str | None = None,
                 description: str | None = None, billable: bool = True,
                 line_id: str | None = None) -> Record:
    """A "Category details" line; ref names are filled in by ``QboCompany.add_purchase``."""
    detail: Record = {"AccountRef": {"value": account_id}}
    _set_customer(detail, customer_id, billable)
    detail["TaxCodeRef"] = {"value": "NON"}
    return _line(amount, "AccountBasedExpenseLineDetail", detail, description, line_id)


def item_line(amount: Amount, item_id: str, *, customer_id: str | None = None,
              description: str | None = None, qty: Amount = 1,
              line_id: str | None = None) -> Record:
    """An "Item details" line; ``UnitPrice`` = amount / qty."""
    quantity = money(qty)
    detail: Record = {"ItemRef": {"value": item_id}, "Qty": quantity,
                      "UnitPrice": _unit_price(money(amount), quantity)}
    _set_customer(detail, customer_id, billable=True)
    detail["TaxCodeRef"] = {"value": "NON"}
    return _line(amount, "ItemBasedExpenseLineDetail", detail, description, line_id)


def _set_customer(detail: Record, customer_id: str | None, billable: bool) -> None:
    if customer_id is not None:
        detail["CustomerRef"] = {"value": customer_id}
    detail["BillableStatus"] = "Billable" if billable and customer_id else "NotBillable"


def _unit_price(amount: Decimal, qty: Decimal) -> Decimal:
    if not qty:
        return amount
    price = amount / qty
    return money(price if price == price.quantize(Decimal("1e-7")) else
                 price.quantize(Decimal("1e-7")))


def _line(amount: Amount, detail_type: str, detail: Record, description: str | None,
          line_id: str | None) -> Record:
    line: Record = {}
    if line_id is not None:
        line["Id"] = line_id
    line["Amount"] = money(amount)
    if description is not None:
        line["Description"] = description
    line["DetailType"] = detail_type
    line[detail_type] = detail
    return line


# --- the company ------------------------------------------------------------------------------


CompanyMethod = Callable[Concatenate["QboCompany", P], R]


def _locked(method: CompanyMethod[P, R]) -> CompanyMethod[P, R]:
    """Run a public method under the sandbox lock (HTTP handlers read concurrently)."""

    @functools.wraps(method)
    def wrapper(self: QboCompany, *args: P.args, **kwargs: P.kwargs) -> R:
        with self.lock:
            return method(self, *args, **kwargs)

    return wrapper


_PLAIN_PURCHASE_FIELDS = {
    "payment_type": "PaymentType",
    "txn_date": "TxnDate",
    "doc_number": "DocNumber",
    "private_note": "PrivateNote",
    "credit": "Credit",
}
_PLAIN_BILL_FIELDS = {
    "txn_date": "TxnDate",
    "due_date": "DueDate",
    "doc_number": "DocNumber",
    "private_note": "PrivateNote",
}
_BILL_KEYWORDS = frozenset({*_PLAIN_BILL_FIELDS, "lines", "vendor_id", "currency",
                            "exchange_rate"})
_PURCHASE_KEYWORDS = frozenset(
    {*_PLAIN_PURCHASE_FIELDS, "lines", "entity", "currency", "exchange_rate", "paying_account_id"}
)


class QboCompany:
    """A realm's data. Public methods seed and change it as the QuickBooks UI would."""

    def __init__(self, realm_id: str, *, clock: SandboxClock, lock: threading.RLock,
                 tracking_by_customer: bool = True, home_currency: str = "USD",
                 name: str = "Sandbox Company") -> None:
        self.realm_id = realm_id
        self.name = name
        self.home_currency = home_currency
        self.clock = clock
        self.lock = lock
        self._records: dict[str, dict[str, Record]] = {entity: {} for entity in ENTITIES}
        self._counters: dict[str, int] = dict.fromkeys(ENTITIES, 0)
        self._deleted: dict[str, dict[str, Record]] = {entity: {} for entity in DELETABLE}
        self._counters[ATTACHABLE] = ATTACHABLE_ID_BASE
        self._files: dict[str, FileBody] = {}
        self.attachables: dict[str, Record] = self._records[ATTACHABLE]
        self.purchases: dict[str, Record] = self._records["Purchase"]
        self.bills: dict[str, Record] = self._records["Bill"]
        self.bill_payments: dict[str, Record] = self._records["BillPayment"]
        self.payments_touch_bills = False
        """Whether paying a Bill also bumps the Bill's ``SyncToken``/``LastUpdatedTime``.
        Unconfirmed for QuickBooks: by default only the BillPayment shows as changed, the
        harder case for a reader (the Bill's ``Balance`` moves silently)."""
        self.preferences: dict[str, bool] = {
            "TrackingByCustomer": tracking_by_customer,
            "BillableExpenseTracking": True,
            "MultiCurrencyEnabled": False,
        }
        self._preferences_updated = self._stamp()

    # --- name lists ---------------------------------------------------------------------------

    @_locked
    def add_account(self, name: str, *, account_type: str = "Expense",
                    parent_id: str | None = None, id: str | None = None,
                    active: bool = True) -> Record:
        account: Record = {"Name": name, "FullyQualifiedName": name, "SubAccount": False}
        if parent_id is not None:
            parent = self._get("Account", parent_id)
            account["FullyQualifiedName"] = f"{parent['FullyQualifiedName']}:{name}"
            account["SubAccount"] = True
            account["ParentRef"] = {"value": parent_id}
        account.update({
            "Active": active,
            "AccountType": account_type,
            "Classification": ACCOUNT_CLASSIFICATION.get(account_type, "Expense"),
            "CurrentBalance": 0,
            "CurrencyRef": self._currency_ref(self.home_currency),
        })
        return self._insert("Account", account, id)

    @_locked
    def add_customer(self, display_name: str, *, email: str | None = None,
                     parent_id: str | None = None, active: bool = True,
                     id: str | None = None) -> Record:
        self._check_display_name(display_name)
        customer: Record = {"DisplayName": display_name, "FullyQualifiedName": display_name,
                            "Job": False, "BillWithParent": False, "Level": 0}
        if parent_id is not None:
            parent = self._get("Customer", parent_id)
            customer.update({
                "FullyQualifiedName": f"{parent['FullyQualifiedName']}:{display_name}",
                "Job": True,
                "ParentRef": {"value": parent_id},
                "Level": parent.get("Level", 0) + 1,
            })
        customer.update({"IsProject": False, "Active": active, "Balance": 0,
                         "CurrencyRef": self._currency_ref(self.home_currency)})
        _set_email(customer, email)
        return self._insert("Customer", customer, id)

    @_locked
    def add_vendor(self, display_name: str, *, email: str | None = None,
                   id: str | None = None) -> Record:
        self._check_display_name(display_name)
        vendor: Record = {"DisplayName": display_name, "PrintOnCheckName": display_name,
                          "Active": True, "Vendor1099": False, "Balance": 0}
        _set_email(vendor, email)
        return self._insert("Vendor", vendor, id)

    @_locked
    def add_employee(self, display_name: str, *, email: str | None = None,
                     id: str | None = None) -> Record:
        self._check_display_name(display_name)
        employee: Record = {"DisplayName": display_name, "PrintOnCheckName": display_name,
                            "Active": True, "BillableTime": False}
        _set_email(employee, email)
        return self._insert("Employee", employee, id)

    @_locked
    def add_item(self, name: str, *, expense_account_id: str, id: str | None = None) -> Record:
        account = self._get("Account", expense_account_id)
        item: Record = {
            "Name": name, "FullyQualifiedName": name, "Active": True, "Type": "NonInventory",
            "ExpenseAccountRef": {"value": expense_account_id,
                                  "name": account["FullyQualifiedName"]},
        }
        return self._insert("Item", item, id)

    # --- purchases ----------------------------------------------------------------------------

    @_locked
    def add_purchase(self, *, payment_type: str = "Check", txn_date: str = "2026-01-05",
                     lines: list[Record], doc_number: str | None = None,
                     private_note: str | None = None, entity: tuple[str, str] | None = None,
                     credit: bool | None = None, currency: str | None = None,
                     exchange_rate: str | Decimal | None = None,
                     paying_account_id: str | None = None, id: str | None = None) -> Record:
        purchase: Record = {}
        fields: dict[str, Any] = {
            "payment_type": payment_type, "paying_account_id": paying_account_id, "entity": entity,
            "credit": credit, "doc_number": doc_number, "private_note": private_note,
            "txn_date": txn_date, "currency": currency or self.home_currency,
            "exchange_rate": exchange_rate, "lines": lines,
        }
        for key, value in fields.items():
            self._apply_purchase_field(purchase, key, value)
        return self._insert("Purchase", purchase, id)

    @_locked
    def put_purchase_raw(self, purchase: Record) -> Record:
        """Store a purchase verbatim (malformed ones too); fills Id/SyncToken/MetaData if absent."""
        record = copy.deepcopy(purchase)
        if "Id" not in record:
            record["Id"] = self._next_id("Purchase")
        else:
            self._bump_counter("Purchase", str(record["Id"]))
        record.setdefault("SyncToken", "0")
        if "MetaData" not in record:
            stamp = self._stamp()
            record["MetaData"] = {"CreateTime": stamp, "LastUpdatedTime": stamp}
        self._deleted["Purchase"].pop(str(record["Id"]), None)
        self.purchases[str(record["Id"])] = record
        return copy.deepcopy(record)

    @_locked
    def update_purchase(self, purchase_id: str, **changes: Any) -> Record:
        """Change the given ``add_purchase`` fields (None removes an optional one)."""
        unknown = set(changes) - _PURCHASE_KEYWORDS
        if unknown:
            raise TypeError(f"update_purchase: unknown fields {sorted(unknown)}")
        purchase = self._get("Purchase", purchase_id)
        for key, value in changes.items():
            self._apply_purchase_field(purchase, key, value)
        return self._touch(purchase)

    @_locked
    def set_billable_status(self, entity: str, record_id: str, line_id: str,
                            status: str) -> Record:
        """A line's ``BillableStatus`` changes: ``HasBeenBilled`` when the firm puts it on a
        QuickBooks invoice (the record's SyncToken moves, as any change moves it)."""
        if status not in ("Billable", "NotBillable", "HasBeenBilled"):
            raise ValueError(f"unknown BillableStatus {status!r}")
        record = self._get(entity, record_id)
        line = next(x for x in record["Line"] if x.get("Id") == line_id)
        line[line["DetailType"]]["BillableStatus"] = status
        return self._touch(record)

    @_locked
    def delete_purchase(self, purchase_id: str) -> None:
        self._delete("Purchase", purchase_id)

    @_locked
    def void_purchase(self, purchase_id: str) -> Record:
        purchase = self._get("Purchase", purchase_id)
        _zero(purchase)
        return self._touch(purchase)

    # --- bills and bill payments (accounts payable) --------------------------------------------

    @_locked
    def add_bill(self, *, txn_date: str = "2026-01-05", lines: list[Record],
                 vendor_id: str | None = None, doc_number: str | None = None,
                 private_note: str | None = None, due_date: str | None = None,
                 currency: str | None = None, exchange_rate: str | Decimal | None = None,
                 id: str | None = None) -> Record:
        """A vendor's invoice entered as a Bill: unpaid (``Balance`` = ``TotalAmt``)."""
        bill: Record = {"LinkedTxn": []}
        fields: dict[str, Any] = {
            "vendor_id": vendor_id, "doc_number": doc_number, "private_note": private_note,
            "txn_date": txn_date, "due_date": due_date or txn_date,
            "currency": currency or self.home_currency, "exchange_rate": exchange_rate,
            "lines": lines,
        }
        for key, value in fields.items():
            self._apply_bill_field(bill, key, value)
        bill["APAccountRef"] = self._ref("Account", self._payables_account(),
                                         "FullyQualifiedName")
        self._rebalance(bill)
        return self._insert("Bill", bill, id)

    @_locked
    def update_bill(self, bill_id: str, **changes: Any) -> Record:
        """Change the given ``add_bill`` fields (None removes an optional one)."""
        unknown = set(changes) - _BILL_KEYWORDS
        if unknown:
            raise TypeError(f"update_bill: unknown fields {sorted(unknown)}")
        bill = self._get("Bill", bill_id)
        for key, value in changes.items():
            self._apply_bill_field(bill, key, value)
        self._rebalance(bill)
        return self._touch(bill)

    @_locked
    def put_bill_raw(self, bill: Record) -> Record:
        """Store a Bill verbatim (malformed ones too); fills Id/SyncToken/MetaData if absent."""
        record = copy.deepcopy(bill)
        if "Id" not in record:
            record["Id"] = self._next_id("Bill")
        else:
            self._bump_counter("Bill", str(record["Id"]))
        record.setdefault("SyncToken", "0")
        if "MetaData" not in record:
            stamp = self._stamp()
            record["MetaData"] = {"CreateTime": stamp, "LastUpdatedTime": stamp}
        self.bills[str(record["Id"])] = record
        return copy.deepcopy(record)

    @_locked
    def delete_bill(self, bill_id: str) -> None:
        self._delete("Bill", bill_id)

    @_locked
    def void_bill(self, bill_id: str) -> Record:
        bill = self._get("Bill", bill_id)
        _zero(bill)
        bill["Balance"] = Decimal(0)
        return self._touch(bill)

    @_locked
    def pay_bill(self, bill_id: str, amount: Amount | None = None, *,
                 txn_date: str = "2026-01-20", pay_type: str = "Check",
                 id: str | None = None) -> Record:
        """A BillPayment of ``amount`` (default: the Bill's whole balance) linked to the Bill;
        the Bill's ``Balance`` goes down by it."""
        bill = self._get("Bill", bill_id)
        paid = money(bill.get("Balance", 0) if amount is None else amount)
        payment: Record = {
            "VendorRef": copy.deepcopy(bill.get("VendorRef")) if bill.get("VendorRef") else None,
            "PayType": pay_type, "TxnDate": txn_date, "TotalAmt": paid,
            "CurrencyRef": copy.deepcopy(bill.get("CurrencyRef")),
            "Line": [{"Amount": paid, "LinkedTxn": [{"TxnId": bill_id, "TxnType": "Bill"}]}],
        }
        payment = {k: v for k, v in payment.items() if v is not None}
        stored = self._insert("BillPayment", payment, id)
        # As QuickBooks links them: the payment's kind is part of the type (Intuit's Bill
        # example has "BillPaymentCheck"; card payments read "BillPaymentCreditCard").
        kind = "BillPaymentCreditCard" if pay_type == "CreditCard" else "BillPaymentCheck"
        bill.setdefault("LinkedTxn", []).append({"TxnId": stored["Id"], "TxnType": kind})
        self._rebalance(bill)
        if self.payments_touch_bills:
            self._touch(bill)
        return stored

    @_locked
    def delete_bill_payment(self, payment_id: str) -> None:
        """The payment goes; its Bills owe again what it paid."""
        self._get("BillPayment", payment_id)
        self._delete("BillPayment", payment_id)
        for bill in self.bills.values():
            links = bill.get("LinkedTxn") or []
            kept = [link for link in links if not (
                str(link.get("TxnType", "")).startswith("BillPayment")
                and link.get("TxnId") == payment_id)]
            if len(kept) != len(links):
                bill["LinkedTxn"] = kept
                self._rebalance(bill)
                if self.payments_touch_bills:
                    self._touch(bill)

    # --- attachments (Attachable) --------------------------------------------------------------

    @_locked
    def attach(self, txn_type: str, txn_id: str, file_name: str, *, size: int | None = None,
               data: bytes | None = None, content_type: str | None = None,
               category: str = "Receipt", note: str | None = None,
               id: str | None = None) -> str:
        """A file attached to a purchase or Bill (``txn_type`` ``Purchase``/``Bill``), as the
        QuickBooks UI's "Attachments" box makes one; returns the Attachable's id. Give the
        bytes (``data``) or only a ``size``: the content is then generated from the id (the
        same for the same id, never held whole in memory)."""
        ref = self._attachable_ref(txn_type, txn_id)
        record_id = id or self._next_id(ATTACHABLE)
        body = FileBody.of(data, size if data is None else None,
                           f"{self.realm_id}/{record_id}")
        guessed = mimetypes.guess_type(file_name)[0]
        record: Record = {"AttachableRef": [ref], "FileName": file_name}
        if note is not None:
            record["Note"] = note
        record.update({
            "Category": category,
            "ContentType": content_type or guessed or "application/octet-stream",
            "Size": body.size,
            "FileAccessUri": f"/v3/company/{self.realm_id}/download/{record_id}",
        })
        stored = self._insert(ATTACHABLE, record, record_id)
        self._files[stored["Id"]] = body
        return str(stored["Id"])

    @_locked
    def link_attachable(self, attachable_id: str, txn_type: str, txn_id: str) -> Record:
        """The file is attached to one more transaction (one Attachable, several refs)."""
        record = self._get(ATTACHABLE, attachable_id)
        record.setdefault("AttachableRef", []).append(self._attachable_ref(txn_type, txn_id))
        return self._touch(record)

    @_locked
    def detach(self, attachable_id: str, txn_type: str, txn_id: str) -> Record:
        """The file is taken off the transaction (it stays in the attachment list)."""
        record = self._get(ATTACHABLE, attachable_id)
        record["AttachableRef"] = [
            ref for ref in record.get("AttachableRef", [])
            if not _refers_to(ref, txn_type, txn_id)]
        return self._touch(record)

    @_locked
    def set_attachment_inactive(self, attachable_id: str, txn_type: str, txn_id: str,
                                inactive: bool = True) -> Record:
        """The link to the transaction is kept but marked ``Inactive``."""
        record = self._get(ATTACHABLE, attachable_id)
        for ref in record.get("AttachableRef", []):
            if _refers_to(ref, txn_type, txn_id):
                ref["Inactive"] = inactive
        return self._touch(record)

    @_locked
    def delete_attachable(self, attachable_id: str) -> None:
        """The file is deleted: CDC reports a ``status: Deleted`` stub, reads answer 610."""
        self._delete(ATTACHABLE, attachable_id)
        self._files.pop(attachable_id, None)

    @_locked
    def put_attachable_raw(self, attachable: Record, *, data: bytes | None = None,
                           size: int | None = None) -> Record:
        """Store an Attachable verbatim (malformed ones too); fills Id/SyncToken/MetaData if
        absent. With ``data`` or ``size`` it has a file to download."""
        record = copy.deepcopy(attachable)
        if "Id" not in record:
            record["Id"] = self._next_id(ATTACHABLE)
        else:
            self._bump_counter(ATTACHABLE, str(record["Id"]))
        record.setdefault("SyncToken", "0")
        if "MetaData" not in record:
            stamp = self._stamp()
            record["MetaData"] = {"CreateTime": stamp, "LastUpdatedTime": stamp}
        record_id = str(record["Id"])
        self.attachables[record_id] = record
        if data is not None or size is not None:
            self._files[record_id] = FileBody.of(data, size, f"{self.realm_id}/{record_id}")
        return copy.deepcopy(record)

    def attachment(self, attachable_id: str) -> FileBody | None:
        """The file's content (``chunks()``, ``sha256()``, ``size``), None when it has none."""
        with self.lock:
            return self._files.get(attachable_id)

    def attachment_sha256(self, attachable_id: str) -> str:
        body = self.attachment(attachable_id)
        if body is None:
            raise KeyError(f"Attachable {attachable_id!r} has no file")
        return body.sha256()

    def _attachable_ref(self, txn_type: str, txn_id: str) -> Record:
        entity = ATTACHABLE_TARGETS.get(txn_type.lower())
        if entity is None:
            raise ValueError(f"attach to a Purchase or a Bill, not {txn_type!r}")
        self._get(entity, txn_id)
        return {"EntityRef": {"type": entity, "value": txn_id}, "IncludeOnSend": False,
                "Inactive": False}

    # --- preferences --------------------------------------------------------------------------

    @_locked
    def set_preferences(self, *, tracking_by_customer: bool | None = None,
                        billable_expense_tracking: bool | None = None,
                        multi_currency_enabled: bool | None = None) -> None:
        new = {"TrackingByCustomer": tracking_by_customer,
               "BillableExpenseTracking": billable_expense_tracking,
               "MultiCurrencyEnabled": multi_currency_enabled}
        self.preferences.update({k: v for k, v in new.items() if v is not None})
        self._preferences_updated = self._stamp()

    def preferences_body(self) -> Record:
        prefs = self.preferences
        return {
            "VendorAndPurchasesPrefs": {
                "TrackingByCustomer": prefs["TrackingByCustomer"],
                "BillableExpenseTracking": prefs["BillableExpenseTracking"],
                "DefaultTerms": {"value": "3"},
                "DefaultMarkup": 0,
                "POCustomField": [],
            },
            "CurrencyPrefs": {
                "MultiCurrencyEnabled": prefs["MultiCurrencyEnabled"],
                "HomeCurrency": {"value": self.home_currency},
            },
            "domain": "QBO", "sparse": False, "Id": "1", "SyncToken": "0",
            "MetaData": {"CreateTime": self._preferences_updated,
                         "LastUpdatedTime": self._preferences_updated},
        }

    # --- reads for the HTTP layer (call under ``lock``) ----------------------------------------

    def records(self, entity: str) -> list[Record]:
        return list(self._records[entity].values())

    def record(self, entity: str, record_id: str) -> Record | None:
        return self._records[entity].get(record_id)

    def changes_since(self, entity: str, since: datetime) -> list[Record]:
        """Current records and deletion stubs last updated at or after ``since``."""
        candidates = self.records(entity)
        if entity in DELETABLE:
            candidates += list(self._deleted[entity].values())
        return [r for r in candidates if (at := last_updated(r)) is not None and at >= since]

    # --- internals ----------------------------------------------------------------------------

    def _apply_purchase_field(self, purchase: Record, key: str, value: Any) -> None:
        if key in _PLAIN_PURCHASE_FIELDS:
            _set_or_drop(purchase, _PLAIN_PURCHASE_FIELDS[key], value)
        elif key == "lines":
            purchase["Line"] = [self._complete_line(line, n) for n, line in enumerate(value, 1)]
            purchase["TotalAmt"] = money(sum((Decimal(str(line["Amount"]))
                                              for line in purchase["Line"]), Decimal(0)))
        elif key == "entity":
            _set_or_drop(purchase, "EntityRef", value and self._entity_ref(*value))
        elif key == "currency":
            purchase["CurrencyRef"] = self._currency_ref(value or self.home_currency)
            if value and value != self.home_currency:
                self.preferences["MultiCurrencyEnabled"] = True
        elif key == "exchange_rate":
            _set_or_drop(purchase, "ExchangeRate", None if value is None else money(value))
        elif key == "paying_account_id":
            paying = value or self._default_paying_account(purchase.get("PaymentType", "Check"))
            purchase["AccountRef"] = self._ref("Account", paying, "FullyQualifiedName")

    def _apply_bill_field(self, bill: Record, key: str, value: Any) -> None:
        if key in _PLAIN_BILL_FIELDS:
            _set_or_drop(bill, _PLAIN_BILL_FIELDS[key], value)
        elif key == "vendor_id":
            _set_or_drop(bill, "VendorRef", value and self._ref("Vendor", value, "DisplayName"))
        else:  # lines, currency, exchange_rate: as a purchase's
            self._apply_purchase_field(bill, key, value)

    def _rebalance(self, bill: Record) -> None:
        """``Balance`` = ``TotalAmt`` less what the linked payments paid of this Bill."""
        paid = Decimal(0)
        for link in bill.get("LinkedTxn") or []:
            if not str(link.get("TxnType", "")).startswith("BillPayment"):
                continue
            payment = self._records["BillPayment"].get(str(link.get("TxnId")))
            for line in (payment or {}).get("Line", []):
                if any(t.get("TxnId") == bill.get("Id") and t.get("TxnType") == "Bill"
                       for t in line.get("LinkedTxn", [])):
                    paid += Decimal(str(line.get("Amount", 0)))
        total = Decimal(str(bill.get("TotalAmt", 0)))
        bill["Balance"] = money(max(total - paid, Decimal(0)))

    def _payables_account(self) -> str:
        for account in self._records["Account"].values():
            if account.get("AccountType") == "Accounts Payable":
                return str(account["Id"])
        return str(self.add_account("Accounts Payable (A/P)",
                                    account_type="Accounts Payable")["Id"])

    def _delete(self, entity: str, record_id: str) -> None:
        self._get(entity, record_id)
        del self._records[entity][record_id]
        self._deleted[entity][record_id] = {
            "Id": record_id, "status": "Deleted", "domain": "QBO",
            "MetaData": {"LastUpdatedTime": self._stamp()}}

    def _complete_line(self, line: Record, number: int) -> Record:
        line = {"Id": str(number), **copy.deepcopy(line)}
        line["Amount"] = money(line["Amount"])
        detail = line.get(line.get("DetailType", ""), {})
        for key, entity in (("AccountRef", "Account"), ("ItemRef", "Item")):
            if key in detail:
                detail[key] = self._ref(entity, detail[key]["value"], "FullyQualifiedName")
        if not self.preferences["TrackingByCustomer"]:
            detail.pop("CustomerRef", None)
            detail["BillableStatus"] = "NotBillable"
        elif "CustomerRef" in detail:
            detail["CustomerRef"] = self._ref("Customer", detail["CustomerRef"]["value"],
                                              "FullyQualifiedName")
        return line

    def _entity_ref(self, entity_id: str, entity_type: str) -> Record:
        if entity_type not in PAYEE_TYPES:
            raise ValueError(f"payee type must be one of {PAYEE_TYPES}, not {entity_type!r}")
        return {**self._ref(entity_type, entity_id, "DisplayName"), "type": entity_type}

    def _ref(self, entity: str, record_id: str, name_field: str) -> Record:
        return {"value": record_id, "name": self._get(entity, record_id)[name_field]}

    def _currency_ref(self, code: str) -> Record:
        return {"value": code, "name": CURRENCY_NAMES.get(code, code)}

    def _default_paying_account(self, payment_type: str) -> str:
        name, account_type = (("Visa", "Credit Card") if payment_type == "CreditCard"
                              else ("Checking", "Bank"))
        for account in self._records["Account"].values():
            if account.get("Name") == name and account.get("AccountType") == account_type:
                return str(account["Id"])
        return str(self.add_account(name, account_type=account_type)["Id"])

    def _check_display_name(self, display_name: str) -> None:
        if ":" in display_name:
            raise ValueError(f"DisplayName may not contain ':': {display_name!r}")
        for entity in PAYEE_TYPES:
            if any(r.get("DisplayName") == display_name for r in self._records[entity].values()):
                raise ValueError(f"Duplicate Name Exists Error: {display_name!r} ({entity})")

    def _get(self, entity: str, record_id: str) -> Record:
        record = self._records[entity].get(record_id)
        if record is None:
            raise KeyError(f"no {entity} {record_id!r} in realm {self.realm_id}")
        return record

    def _insert(self, entity: str, record: Record, record_id: str | None) -> Record:
        if record_id is None:
            record_id = self._next_id(entity)
        elif record_id in self._records[entity]:
            raise ValueError(f"{entity} {record_id!r} already exists")
        else:
            self._bump_counter(entity, record_id)
        stamp = self._stamp()
        record.update({"domain": "QBO", "sparse": False, "Id": record_id, "SyncToken": "0",
                       "MetaData": {"CreateTime": stamp, "LastUpdatedTime": stamp}})
        self._records[entity][record_id] = record
        return copy.deepcopy(record)

    def _touch(self, record: Record) -> Record:
        record["SyncToken"] = str(int(record.get("SyncToken", "0")) + 1)
        metadata = record.setdefault("MetaData", {})
        metadata["LastUpdatedTime"] = self._stamp()
        return copy.deepcopy(record)

    def _next_id(self, entity: str) -> str:
        self._counters[entity] += 1
        while str(self._counters[entity]) in self._records[entity]:
            self._counters[entity] += 1
        return str(self._counters[entity])

    def _bump_counter(self, entity: str, record_id: str) -> None:
        if record_id.isdigit():
            self._counters[entity] = max(self._counters[entity], int(record_id))

    def _stamp(self) -> str:
        return pacific_stamp(self.clock.now())


def last_updated(record: Record) -> datetime | None:
    metadata = record.get("MetaData")
    stamp = metadata.get("LastUpdatedTime") if isinstance(metadata, dict) else None
    return parse_instant(stamp) if isinstance(stamp, str) else None


def _zero(transaction: Record) -> None:
    """A void: amounts zeroed, the memo prefixed "Voided"."""
    for line in transaction.get("Line", []):
        line["Amount"] = Decimal(0)
        detail = line.get(line.get("DetailType", ""), {})
        if "UnitPrice" in detail:
            detail["UnitPrice"] = Decimal(0)
    transaction["TotalAmt"] = Decimal(0)
    note = transaction.get("PrivateNote")
    transaction["PrivateNote"] = f"Voided - {note}" if note else "Voided"


def _refers_to(ref: Any, txn_type: str, txn_id: str) -> bool:
    entity = ref.get("EntityRef") if isinstance(ref, dict) else None
    return isinstance(entity, dict) and str(entity.get("type", "")).lower() == \
        txn_type.lower() and str(entity.get("value")) == txn_id


def _set_or_drop(record: Record, key: str, value: Any) -> None:
    if value is None:
        record.pop(key, None)
    else:
        record[key] = value


def _set_email(record: Record, email: str | None) -> None:
    if email is not None:
        record["PrimaryEmailAddr"] = {"Address": email}

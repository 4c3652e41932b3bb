"""Vendor Bills (docs/purchases.md, "Vendor Bills") read as purchase-like documents, as pure
functions.

A QuickBooks ``Bill`` becomes a document shaped like a ``Purchase`` (id ``bill-<Bill id>``,
payment type ``Bill``, the vendor as payee, the bill number as ``DocNumber``), so the purchase
pipeline plans, resolves, writes, follows edits and removals of Bills exactly as it does for
purchases, and the note marker ``[qbo <realm>/bill-<id>/<customer>]`` makes their imports
exactly-once. What differs is only when a Bill is due and which date it carries:

- ``on-entry``: as entered, dated the Bill's ``TxnDate``;
- ``on-payment``: once its ``Balance`` is 0, dated the ``TxnDate`` of the latest BillPayment
  linked to it; before that it waits for payment (nobody is asked).

No HTTP, no database, no clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from hardcost.sync.rules import BILL, BILL_PREFIX, Skip, is_bill, to_amount

OFF = "off"
ON_ENTRY = "on-entry"
ON_PAYMENT = "on-payment"
MAX_BILL_ID = 40 - len(BILL_PREFIX)  # ``bill-<id>`` fits the 40 characters of a purchase id
PAYMENT_PREFIX = "billpayment-"
"""A targeted run's id for a BillPayment a webhook named: its Bills are read."""

_COPIED = ("SyncToken", "TxnDate", "DocNumber", "PrivateNote", "CurrencyRef", "ExchangeRate",
           "Line", "TotalAmt", "MetaData", "domain")


@dataclass
class BillDocuments:
    """One page of Bills as purchase-like documents."""

    documents: list[dict[str, Any]] = field(default_factory=list)
    awaiting_payment: set[str] = field(default_factory=set)
    """Document ids of Bills not fully paid (``on-payment``): their new entries wait."""
    skips: list[Skip] = field(default_factory=list)  # Bills of a shape that cannot be read


def document_id(bill_id: str) -> str:
    return f"{BILL_PREFIX}{bill_id}"


def bill_id_of(document: str) -> str:
    return document[len(BILL_PREFIX):]


def split_ids(ids: Iterable[str]) -> tuple[set[str], set[str], set[str]]:
    """(purchase ids, Bill ids, BillPayment ids) of a run's document ids."""
    purchases: set[str] = set()
    bills: set[str] = set()
    payments: set[str] = set()
    for raw in ids:
        if raw.startswith(PAYMENT_PREFIX):
            payments.add(raw[len(PAYMENT_PREFIX):])
        elif is_bill(raw):
            bills.add(bill_id_of(raw))
        else:
            purchases.add(raw)
    return purchases, bills, payments


PAYMENT_TXN = "BillPayment"
"""``TxnType`` of a Bill's link to its payment, as a prefix: QuickBooks writes the payment's
kind after it (``BillPaymentCheck``, ``BillPaymentCreditCard``; docs/purchases.md, Bills)."""


def _links_to(link: Mapping[str, Any], txn_type: str) -> bool:
    kind = link.get("TxnType")
    if not isinstance(kind, str):
        return False
    return kind.startswith(PAYMENT_TXN) if txn_type == PAYMENT_TXN else kind == txn_type


def linked_ids(record: Mapping[str, Any], txn_type: str) -> list[str]:
    """Ids of the transactions of ``txn_type`` a Bill (header ``LinkedTxn``) or a BillPayment
    (``Line[].LinkedTxn``) links to; anything of another shape is passed over. ``BillPayment``
    takes every kind of payment (``BillPaymentCheck``, ``BillPaymentCreditCard``, …)."""
    links: list[Any] = []
    header = record.get("LinkedTxn")
    if isinstance(header, list):
        links += header
    lines = record.get("Line")
    if isinstance(lines, list):
        for line in lines:
            if isinstance(line, Mapping) and isinstance(line.get("LinkedTxn"), list):
                links += line["LinkedTxn"]
    found: list[str] = []
    for link in links:
        if isinstance(link, Mapping) and _links_to(link, txn_type) and \
                link.get("TxnId") is not None and str(link["TxnId"]) not in found:
            found.append(str(link["TxnId"]))
    return found


def is_paid(bill: Mapping[str, Any]) -> bool | None:
    """Whether the Bill's ``Balance`` is 0; None when it has no readable balance."""
    try:
        return to_amount(bill.get("Balance"), "balance") == 0
    except Exception:  # noqa: BLE001 - any shape QuickBooks should never send
        return None


def payments_needed(bills: Iterable[Any], mode: str) -> set[str]:
    """The BillPayment ids whose dates the fully paid Bills of a page need (``on-payment``)."""
    if mode != ON_PAYMENT:
        return set()
    return {payment for bill in bills if isinstance(bill, Mapping) and is_paid(bill)
            for payment in linked_ids(bill, PAYMENT_TXN)}


def as_documents(bills: Iterable[Any], mode: str,
                 payments: Mapping[str, Mapping[str, Any]]) -> BillDocuments:
    """Bills as purchase-like documents (``payments``: BillPayment id → BillPayment, for the
    dates of paid Bills under ``on-payment``). A Bill of a shape that cannot be read is left
    out with a reason."""
    page = BillDocuments()
    for bill in bills:
        if not isinstance(bill, Mapping) or bill.get("Id") is None or \
                not str(bill["Id"]).strip():
            page.skips.append(Skip("?", "A QuickBooks Bill came without an id (or not as a "
                                   "record); it cannot be imported or tracked"))
            continue
        bill_id = str(bill["Id"]).strip()
        if len(bill_id) > MAX_BILL_ID:
            page.skips.append(Skip("?", f"A QuickBooks Bill came with an id QuickBooks should "
                                   f"never send ({bill_id[:20]!r}…); it cannot be tracked"))
            continue
        document = _document(bill, bill_id)
        if mode == ON_PAYMENT:
            paid = is_paid(bill)
            if paid is None:
                page.skips.append(Skip(document["Id"], f"Bill #{bill_id} has a balance "
                                       "hardcost cannot read, so whether it is paid is not "
                                       "known; check it in QuickBooks"))
                continue
            if paid:
                _date_by_payment(document, bill, payments)
            else:
                page.awaiting_payment.add(document["Id"])
        page.documents.append(document)
    return page


def _document(bill: Mapping[str, Any], bill_id: str) -> dict[str, Any]:
    document: dict[str, Any] = {key: bill[key] for key in _COPIED if key in bill}
    if not isinstance(document.get("MetaData"), Mapping):
        document.pop("MetaData", None)  # the watermark passes over it; the rest is planned
    document["Id"] = document_id(bill_id)
    document["PaymentType"] = BILL
    vendor = bill.get("VendorRef")
    if isinstance(vendor, Mapping):
        document["EntityRef"] = {**vendor, "type": "Vendor"}
    return document


def _date_by_payment(document: dict[str, Any], bill: Mapping[str, Any],
                     payments: Mapping[str, Mapping[str, Any]]) -> None:
    """Date the document by the latest payment that settled it, and let a change of that
    payment (its date, or another payment) count as an edit of the document."""
    latest: tuple[date, str, str] | None = None
    for payment_id in linked_ids(bill, PAYMENT_TXN):
        payment = payments.get(payment_id)
        if not isinstance(payment, Mapping):
            continue
        raw = payment.get("TxnDate")
        try:
            paid_on = date.fromisoformat(str(raw).strip()[:10])
        except ValueError:
            continue
        found = (paid_on, payment_id, str(payment.get("SyncToken") or "0"))
        if latest is None or found > latest:
            latest = found
    if latest is None:
        return  # paid otherwise (a credit, a journal): dated as entered
    document["TxnDate"] = latest[0].isoformat()
    digest = hashlib.sha1("/".join((latest[0].isoformat(), latest[1], latest[2])).encode())
    token = str(bill.get("SyncToken") or "0")[:12]
    document["SyncToken"] = f"{token}.{digest.hexdigest()[:7]}"


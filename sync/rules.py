"""docs/purchases.md ("Which purchases count", "Which lines count") as pure functions: which
purchases and lines count, and what each entry looks like.

No HTTP, no database, no clock. Input is a QBO ``Purchase`` as decoded JSON (numbers as
``Decimal``); output is a :class:`PurchasePlan` of planned entries, skips and failures.
Anything malformed becomes a failure with a sentence a bookkeeper can act on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from hardcost.sync.bounds import ID, NAME, SYNC_TOKEN, clean, clip, digest_key, fits

log = logging.getLogger(__name__)

CENT = Decimal("0.01")
MAX_AMOUNT = Decimal("9999999999.99")
"""The largest entry hardcost writes (ten billion less a cent): Clio keeps prices as doubles,
whose cents are exact far beyond this; anything larger is a typo, not a hard cost."""
THREE_PLACE_CURRENCIES = frozenset({"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"})
"""ISO 4217 currencies with three decimal places; every other amount has at most two."""
NOTE_LIMIT = 2000
IMPORTABLE_PAYMENT_TYPES = frozenset({"Check", "Cash", "CreditCard"})
BILL = "Bill"
"""The payment type of a vendor Bill read as a purchase-like document (``sync/bills.py``)."""
BILL_PREFIX = "bill-"
"""A Bill's document id is ``bill-<Bill id>``: its links, waits, failures and note marker
(``[qbo <realm>/bill-<id>/<customer>]``) never meet a purchase's."""
ACCOUNT_LINE = "AccountBasedExpenseLineDetail"
ITEM_LINE = "ItemBasedExpenseLineDetail"
IGNORED_DETAIL_TYPES = frozenset({"TaxLineDetail", "SubTotalLineDetail", "DescriptionOnly",
                                  "DiscountLineDetail"})

NO_CUSTOMER = "-"
"""The customer id in the key (and note marker) of an entry whose lines carry no customer:
``[qbo <realm>/<purchase id>/-[/<line id>]]``. QuickBooks ids are digits, so it never names a
real customer, and the marker stays unique and findable in Clio."""

BILLABLE_STATUS = "BillableStatus"
HAS_BEEN_BILLED = "HasBeenBilled"
NOT_BILLABLE = "NotBillable"
ALREADY_BILLED = "already billed in QuickBooks"
"""The reason a line QuickBooks has put on one of its own invoices is not imported."""

ITEM_DETAILS_MESSAGE = ("Item details are not supported — re-enter this line under Category "
                        "details in QuickBooks")


@dataclass(frozen=True)
class ImportRules:
    """The firm's settings that decide what is imported."""

    start_date: date | None
    import_account_ids: frozenset[str]
    split_lines: bool = False
    item_lines: bool = False
    item_expense_accounts: Mapping[str, str] = field(default_factory=dict)
    """Item id → its expense account id; consulted only when ``item_lines`` is on."""
    ask_without_customer: bool = False
    """``no-customer ask``: import-account lines with no customer become entries keyed by
    :data:`NO_CUSTOMER` (they wait for a person to pick the matter) instead of skips."""
    skip_not_billable: bool = False
    """``not-billable skip``: lines QuickBooks marks ``NotBillable`` are skipped instead of
    imported as non-billable entries."""


@dataclass(frozen=True)
class Payee:
    id: str
    name: str
    type: str  # Vendor | Employee | Customer | ""


@dataclass(frozen=True)
class QboKey:
    """Identifies one future Clio entry: the link table's unique key."""

    realm_id: str
    purchase_id: str
    customer_id: str
    line_id: str = ""  # "" = all the customer's lines of the purchase, merged

    @property
    def marker(self) -> str:
        parts = [self.realm_id, self.purchase_id, self.customer_id]
        if self.line_id:
            parts.append(self.line_id)
        return f"[qbo {'/'.join(parts)}]"


@dataclass(frozen=True)
class PlannedEntry:
    """A Clio hard-cost entry to create, before its matter is known."""

    key: QboKey
    sync_token: str
    date: date
    amount: Decimal  # home currency, two places
    reference: str | None
    note: str
    customer_name: str  # QBO FullyQualifiedName, "Parent:Child" for sub-customers
    payee: Payee | None
    memo: str | None
    descriptions: tuple[str, ...]
    payment_type: str
    account_id: str | None = None
    """The QuickBooks account of the entry's lines, when they share one (matter rules may
    name it, and its category and UTBMS code apply)."""
    non_billable: bool = False
    """Every line of the entry is ``NotBillable`` in QuickBooks: written non-billable."""

    @property
    def marker(self) -> str:
        return self.key.marker

    def to_json(self) -> dict[str, Any]:
        return {
            "key": [self.key.realm_id, self.key.purchase_id, self.key.customer_id,
                    self.key.line_id],
            "sync_token": self.sync_token,
            "date": self.date.isoformat(),
            "amount": str(self.amount),
            "reference": self.reference,
            "note": self.note,
            "customer_name": self.customer_name,
            "payee": [self.payee.id, self.payee.name, self.payee.type] if self.payee else None,
            "memo": self.memo,
            "descriptions": list(self.descriptions),
            "payment_type": self.payment_type,
            "account_id": self.account_id,
            **({"non_billable": True} if self.non_billable else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlannedEntry:
        payee = data.get("payee")
        return cls(
            key=QboKey(*data["key"]),
            sync_token=data["sync_token"],
            date=date.fromisoformat(data["date"]),
            amount=Decimal(data["amount"]),
            reference=data.get("reference"),
            note=data["note"],
            customer_name=data["customer_name"],
            payee=Payee(*payee) if payee else None,
            memo=data.get("memo"),
            descriptions=tuple(data.get("descriptions") or ()),
            payment_type=data.get("payment_type", ""),
            account_id=data.get("account_id"),
            non_billable=bool(data.get("non_billable")),
        )


@dataclass(frozen=True)
class Skip:
    """Deliberately not imported, with the reason shown in the run's details."""

    purchase_id: str
    reason: str
    customer_id: str = ""
    line_id: str = ""


@dataclass(frozen=True)
class LineFailure:
    """Could not be imported until someone fixes it in QuickBooks."""

    purchase_id: str
    code: str
    message: str
    customer_id: str = ""
    line_id: str = ""


@dataclass
class PurchasePlan:
    purchase_id: str
    entries: list[PlannedEntry] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    failures: list[LineFailure] = field(default_factory=list)
    out_of_scope: bool = False  # before the start date: neither imported nor reported
    billed_keys: set[tuple[str, str]] = field(default_factory=set)
    """(customer id, line id) of entries whose lines are all billed in QuickBooks already: an
    entry imported before under such a key is reported, never removed."""
    unbillable_keys: set[tuple[str, str]] = field(default_factory=set)
    """(customer id, line id) of entries whose lines are all skipped as ``NotBillable``
    (``not-billable skip``): an entry imported before under such a key is left as it is."""


class _Malformed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def to_amount(value: Any, what: str) -> Decimal:
    """A QBO amount as ``Decimal``; never goes through float."""
    if isinstance(value, bool) or value is None:
        raise _Malformed("bad_amount", f"{what} has no amount")
    if isinstance(value, Decimal | int):
        amount = Decimal(value)
    elif isinstance(value, str):
        try:
            amount = Decimal(value.strip())
        except ArithmeticError:
            raise _Malformed("bad_amount", f"{what} has an amount that is not a number "
                             f"({value!r})") from None
    else:  # floats only reach here if someone decoded JSON without Decimal
        raise _Malformed("bad_amount", f"{what} has an amount that is not a number ({value!r})")
    if not amount.is_finite():
        raise _Malformed("bad_amount", f"{what} has an amount that is not a number ({value!r})")
    return amount


def _text(value: Any) -> str | None:
    """Text from QuickBooks, without NULs (``sync.bounds``), or None when empty."""
    if value is None:
        return None
    text = clean(str(value)).strip()
    return text or None


def _ref(value: Any) -> tuple[str, str] | None:
    """(value, name) of a QBO reference, or None when absent or empty. The name is clipped
    to what the tables keep (a customer's full name can run past 300 characters); the id is
    kept whole: callers refuse one that does not fit (:func:`_bad_id`)."""
    if not isinstance(value, Mapping):
        return None
    ref_id = _text(value.get("value"))
    if ref_id is None:
        return None
    return ref_id, clip(_text(value.get("name")) or "", NAME)


def _bad_id(value: str | None) -> bool:
    """An id QuickBooks never sends: longer than the tables keep (its ids are numbers)."""
    return value is not None and not fits(value, ID)


def _shown_id(value: str) -> str:
    """An id as a failure record keeps it: clipped, so that even a refused one fits."""
    return clip(value, ID)


def _txn_date(purchase: Mapping[str, Any]) -> date:
    raw = purchase.get("TxnDate")
    if not isinstance(raw, str):
        raise _Malformed("bad_date", "has no transaction date")
    try:
        return date.fromisoformat(raw.strip()[:10])
    except ValueError:
        raise _Malformed("bad_date", f"has a transaction date QuickBooks should never send "
                         f"({raw!r})") from None


def home_amount(amount: Decimal, exchange_rate: Decimal | None) -> Decimal:
    """Amount in the home currency, to the cent (QBO's own rounding: half up)."""
    if exchange_rate is not None:
        amount = amount * exchange_rate
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass
class _Group:
    customer_id: str
    customer_name: str
    line_id: str
    amount: Decimal = Decimal("0")
    descriptions: list[str] = field(default_factory=list)
    failed: bool = False
    accounts: set[str] = field(default_factory=set)
    billable_lines: int = 0  # lines not marked NotBillable in QuickBooks


_MARKER_OPENING = re.compile(r"\[(?=qbo\s)", re.IGNORECASE)


def unmarked(text: str) -> str:
    """Text copied from QuickBooks with any ``[qbo `` made ``(qbo ``: it can never read as a
    marker, not even one quoted from another entry's note."""
    return _MARKER_OPENING.sub("(", text)


def build_note(descriptions: list[str], memo: str | None, marker: str,
               currency_note: str | None) -> str:
    """Line descriptions (then the memo when it adds something), currency, and the marker.

    The marker is always the note's last line, and the only ``[qbo `` in it: the copied text
    has its own made ``(qbo `` (:func:`unmarked`). Long text is cut so the marker always
    survives: it is how an entry is found again.
    """
    parts: list[str] = []
    for text in [*descriptions, memo or ""]:
        text = unmarked(text.strip())
        if text and text not in parts:
            parts.append(text)
    body = "; ".join(parts)
    tail = "\n".join(x for x in (currency_note and unmarked(currency_note), marker) if x)
    room = NOTE_LIMIT - len(tail) - 1
    if len(body) > room:
        body = body[: max(room - 1, 0)].rstrip() + "…"
    return f"{body}\n{tail}" if body else tail


def plan_safely(purchase: dict[str, Any], realm_id: str, rules: ImportRules) -> PurchasePlan:
    """``plan_purchase``, with any surprise turned into a failure of that purchase alone."""
    try:
        return plan_purchase(purchase, realm_id, rules)
    except Exception:
        purchase_id = str(purchase.get("Id") or "?")
        log.exception("could not plan purchase %s", purchase_id)
        return PurchasePlan(purchase_id, failures=[LineFailure(
            purchase_id, "unreadable", f"Expense #{purchase_id} could not be read by hardcost "
            "(an unexpected shape). Check it in QuickBooks; the details are in the server "
            "log.")])


def plan_purchase(purchase: Mapping[str, Any], realm_id: str,
                  rules: ImportRules) -> PurchasePlan:
    """Turn one QBO purchase into the Clio entries it should become (docs/purchases.md, "The Clio
    entry")."""
    purchase_id = _text(purchase.get("Id")) if isinstance(purchase, Mapping) else None
    if purchase_id is None:
        return PurchasePlan("?", failures=[LineFailure(
            "?", "bad_purchase", "A QuickBooks expense came without an id; it cannot be "
            "imported or tracked. Tell support with the run's date.")])
    if _bad_id(purchase_id):
        shown = _shown_id(purchase_id)
        return PurchasePlan(shown, failures=[LineFailure(
            shown, "bad_purchase", f"A QuickBooks expense came with an id QuickBooks should "
            f"never send ({shown!r}); it cannot be imported or tracked. Tell support with the "
            "run's date.")])
    plan = PurchasePlan(purchase_id)
    label = _label(purchase, purchase_id)
    try:
        txn_date = _txn_date(purchase)
    except _Malformed as exc:
        plan.failures.append(LineFailure(purchase_id, exc.code, f"{label} {exc.message}."))
        return plan
    if rules.start_date and txn_date < rules.start_date:
        plan.out_of_scope = True
        return plan

    payment_type = _text(purchase.get("PaymentType")) or ""
    if payment_type not in IMPORTABLE_PAYMENT_TYPES and not is_bill(purchase_id):
        shown = payment_type or "no payment type"
        plan.skips.append(Skip(purchase_id, f"{label} has payment type {shown!r}, which is "
                               "not an expense, check or card charge"))
        return plan
    if payment_type == "CreditCard" and purchase.get("Credit") is True:
        plan.skips.append(Skip(purchase_id, f"{label} is a credit card credit (a refund), "
                               "not a cost"))
        return plan

    if is_voided(purchase):
        plan.skips.append(Skip(purchase_id, f"{label} was voided in QuickBooks"))
        return plan

    lines = purchase.get("Line")
    if not isinstance(lines, list) or not lines:
        plan.failures.append(LineFailure(purchase_id, "no_lines", f"{label} has no lines, so "
                                         "there is nothing to import. Check it in QuickBooks."))
        return plan

    try:
        exchange_rate = _exchange_rate(purchase)
    except _Malformed as exc:
        plan.failures.append(LineFailure(purchase_id, exc.code, f"{label} {exc.message}."))
        return plan

    currency = _ref(purchase.get("CurrencyRef"))
    places = 3 if currency is not None and currency[0].upper() in THREE_PLACE_CURRENCIES else 2
    groups: dict[tuple[str, str], _Group] = {}
    for index, line in enumerate(lines, start=1):
        _plan_line(plan, groups, line, index, label, rules, places)

    memo = _text(purchase.get("PrivateNote"))
    payee_ref = purchase.get("EntityRef")
    payee = None
    if (p := _ref(payee_ref)) is not None and not _bad_id(p[0]):  # else no payee to remember
        payee_type = str(payee_ref.get("type") or "") if isinstance(payee_ref, Mapping) else ""
        payee = Payee(p[0], p[1], payee_type)
    # Only ever compared with the stored one: a token too long to keep is kept as its digest.
    sync_token = digest_key(_text(purchase.get("SyncToken")) or "0", SYNC_TOKEN)
    reference = _text(purchase.get("DocNumber"))

    for group in groups.values():
        if group.failed:
            continue
        key = QboKey(realm_id, purchase_id, group.customer_id, group.line_id)
        plan.billed_keys.discard((group.customer_id, group.line_id))
        plan.unbillable_keys.discard((group.customer_id, group.line_id))
        if group.customer_id == NO_CUSTOMER:
            who = f"{label} (no customer)"
        else:
            who = f"{label} for {group.customer_name or 'customer ' + group.customer_id}"
        try:
            amount = home_amount(group.amount, exchange_rate)
        except ArithmeticError:
            plan.failures.append(LineFailure(
                purchase_id, "bad_amount", f"{who} has an amount too large to be real "
                f"({group.amount}). Fix the amount in QuickBooks.",
                group.customer_id, group.line_id))
            continue
        if amount == 0:
            plan.skips.append(Skip(purchase_id, f"{who} comes to 0.00",
                                   group.customer_id, group.line_id))
            continue
        if amount > MAX_AMOUNT:
            plan.failures.append(LineFailure(
                purchase_id, "bad_amount", f"{who} comes to {amount}, more than hardcost "
                f"imports as one cost ({MAX_AMOUNT:,}). Fix the amount in QuickBooks.",
                group.customer_id, group.line_id))
            continue
        if amount < 0:
            plan.failures.append(LineFailure(
                purchase_id, "negative_amount",
                f"{who} comes to {amount}, a negative cost; Clio needs a positive amount. "
                "Record refunds as a credit card credit or fix the lines in QuickBooks.",
                group.customer_id, group.line_id))
            continue
        currency_note = None
        if exchange_rate is not None and currency is not None:
            currency_note = (f"Paid {group.amount.quantize(CENT, rounding=ROUND_HALF_UP)} "
                             f"{currency[0]} at {exchange_rate}")
        plan.entries.append(PlannedEntry(
            key=key, sync_token=sync_token, date=txn_date, amount=amount,
            reference=reference[:21] if reference else None,
            note=build_note(group.descriptions, memo, key.marker, currency_note),
            customer_name=group.customer_name, payee=payee, memo=memo,
            descriptions=tuple(group.descriptions), payment_type=payment_type,
            account_id=next(iter(group.accounts)) if len(group.accounts) == 1 else None,
            non_billable=group.billable_lines == 0,
        ))
    return plan


def _plan_line(plan: PurchasePlan, groups: dict[tuple[str, str], _Group], line: Any,
               index: int, label: str, rules: ImportRules, places: int = 2) -> None:
    purchase_id = plan.purchase_id
    if not isinstance(line, Mapping):
        plan.failures.append(LineFailure(purchase_id, "bad_line",
                                         f"{label} line {index} is not a line QuickBooks "
                                         "should send. Check the expense in QuickBooks."))
        return
    line_id = _text(line.get("Id")) or str(index)
    detail_type = _text(line.get("DetailType")) or ""
    line_label = f"{label} line {line_id}"
    if detail_type in IGNORED_DETAIL_TYPES:
        return
    if _bad_id(line_id):  # its customer's other lines wait with it: no partial amount
        line_id = _shown_id(line_id)
        customer = _line_customer(line, detail_type)
        plan.failures.append(LineFailure(purchase_id, "bad_line",
                                         f"{label} line {line_id} has an id QuickBooks should "
                                         "never send. Check the expense in QuickBooks.",
                                         customer[0] if customer else "", line_id))
        if customer:
            _group(groups, customer, line_id, rules).failed = True
        return
    if detail_type not in (ACCOUNT_LINE, ITEM_LINE):
        customer = _line_customer(line, detail_type)
        plan.failures.append(LineFailure(
            purchase_id, "unknown_line_type",
            f"{line_label} is of a kind hardcost does not know "
            f"({detail_type or 'no detail type'}); enter it under Category details.",
            customer[0] if customer else "", line_id))
        if customer:
            _group(groups, customer, line_id, rules).failed = True
        return
    detail = line.get(detail_type)
    if not isinstance(detail, Mapping):
        plan.failures.append(LineFailure(purchase_id, "bad_line",
                                         f"{line_label} has no details. Check the expense in "
                                         "QuickBooks.", "", line_id))
        return
    customer = _ref(detail.get("CustomerRef"))
    if customer is not None and _bad_id(customer[0]):
        plan.failures.append(LineFailure(
            purchase_id, "bad_customer", f"{line_label} names a customer by an id QuickBooks "
            f"should never send ({_shown_id(customer[0])!r}). Check the expense in QuickBooks.",
            "", line_id))
        return
    line_account: str | None = None

    if detail_type == ITEM_LINE:
        if customer is None:
            return  # not a client cost
        item = _ref(detail.get("ItemRef"))
        item_account = rules.item_expense_accounts.get(item[0]) if item else None
        if rules.item_lines and item_account in rules.import_account_ids:
            account_ok = True
            line_account = item_account
        else:
            plan.failures.append(LineFailure(purchase_id, "item_details",
                                             f"{line_label}: {ITEM_DETAILS_MESSAGE}.",
                                             customer[0], line_id))
            _group(groups, customer, line_id, rules).failed = True
            return
    else:
        account = _ref(detail.get("AccountRef"))
        account_ok = account is not None and account[0] in rules.import_account_ids
        line_account = account[0] if account is not None else None
    if line_account is not None and _bad_id(line_account):
        line_account = None  # kept as "any import account" (it is only a rule's scope)
    if not account_ok:
        return  # another account: not a client cost
    tagged = customer is not None  # BillableStatus means something only with a customer
    if customer is None:
        if not rules.ask_without_customer:
            plan.skips.append(Skip(purchase_id, f"{line_label} is in the import account but "
                                   "has no customer, so no matter can be charged", "", line_id))
            return
        customer = (NO_CUSTOMER, "")  # waits for a person to pick the matter
    status = _text(detail.get(BILLABLE_STATUS)) if tagged else None
    if status == HAS_BEEN_BILLED:  # on a QuickBooks invoice: never billed a second time
        plan.skips.append(Skip(purchase_id, f"{line_label} is {ALREADY_BILLED}",
                               customer[0], line_id))
        plan.billed_keys.add((customer[0], line_id if rules.split_lines else ""))
        return
    if status == NOT_BILLABLE and rules.skip_not_billable:
        plan.skips.append(Skip(purchase_id, f"{line_label} is marked not billable in "
                               "QuickBooks (not-billable is set to skip)", customer[0],
                               line_id))
        plan.unbillable_keys.add((customer[0], line_id if rules.split_lines else ""))
        return
    group = _group(groups, customer, line_id, rules)
    try:
        amount = to_amount(line.get("Amount"), line_label)
        if abs(amount) > MAX_AMOUNT:
            raise _Malformed("bad_amount", f"{line_label} has an amount too large to be real "
                             f"({amount})")
        if amount != amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP):
            raise _Malformed("bad_amount", f"{line_label} has an amount with more than "
                             f"{places} decimal places ({amount}), which would have to be "
                             "rounded")
    except _Malformed as exc:
        plan.failures.append(LineFailure(purchase_id, exc.code,
                                         f"{exc.message}. Fix the amount in QuickBooks.",
                                         customer[0], line_id))
        group.failed = True
        return
    group.amount += amount
    if status != NOT_BILLABLE:
        group.billable_lines += 1
    if line_account:
        group.accounts.add(line_account)
    description = _text(line.get("Description"))
    if description and description not in group.descriptions:
        group.descriptions.append(description)


def _line_customer(line: Mapping[str, Any], detail_type: str) -> tuple[str, str] | None:
    """The customer of a line that cannot be planned, when it has one that fits."""
    detail = line.get(detail_type) if detail_type else None
    customer = _ref(detail.get("CustomerRef")) if isinstance(detail, Mapping) else None
    return customer if customer is not None and not _bad_id(customer[0]) else None


def _group(groups: dict[tuple[str, str], _Group], customer: tuple[str, str], line_id: str,
           rules: ImportRules) -> _Group:
    key = (customer[0], line_id if rules.split_lines else "")
    group = groups.get(key)
    if group is None:
        group = groups[key] = _Group(customer[0], customer[1], key[1])
    return group


def _exchange_rate(purchase: Mapping[str, Any]) -> Decimal | None:
    raw = purchase.get("ExchangeRate")
    if raw is None:
        return None
    rate = to_amount(raw, "the exchange rate")
    if rate <= 0:
        raise _Malformed("bad_exchange_rate", f"has an exchange rate of {rate}")
    if rate == 1:
        return None
    return rate


def _label(purchase: Mapping[str, Any], purchase_id: str) -> str:
    """How a person recognises the purchase: "Check 1042 to Acme Couriers"."""
    if is_bill(purchase_id):
        kind, purchase_id, to = "Bill", purchase_id[len(BILL_PREFIX):], "from"
    else:
        kind = {"Check": "Check", "CreditCard": "Card expense", "Cash": "Expense"}.get(
            str(purchase.get("PaymentType") or ""), "Expense")
        to = "to"
    doc = _text(purchase.get("DocNumber"))
    payee = _ref(purchase.get("EntityRef"))
    text = f"{kind} {doc}" if doc else f"{kind} #{purchase_id}"
    if payee and payee[1]:
        text += f" {to} {payee[1]}"
    return text


def is_bill(purchase_id: str) -> bool:
    """A Bill's document id (QuickBooks' own ids are numbers)."""
    return purchase_id.startswith(BILL_PREFIX)


def is_voided(purchase: Mapping[str, Any]) -> bool:
    """QBO voids zero the amounts and prefix the memo with "Voided"."""
    try:
        total = to_amount(purchase.get("TotalAmt"), "total")
    except _Malformed:
        return False
    memo = _text(purchase.get("PrivateNote")) or ""
    return total == 0 and memo.lower().startswith("voided")

"""The monthly hard-cost report (docs/reports.md): where the money hardcost brought into Clio
stands — billed, on a draft bill, unbilled, non-billable — read from Clio now.

Slack-free. :func:`build` makes a :class:`MonthReport` from one pass over Clio's entries of
the firm's entry type (``activities.json?type=…&start_date=…&end_date=…``, 200 a page, paced
by the client's pacer like every Clio call), kept only when the link table says hardcost made
them (``entry_links``: created, or kept after its purchase left QuickBooks). The rows are held
for this one report and dropped with it. QuickBooks is read for the month's documents (the
reconciliation) and for the purchases of open failures (their amounts).

The state of an entry:

- ``billed``: on an issued bill (``bill.state`` awaiting_payment or paid; ``billed`` true);
- ``draft``: on a bill not issued yet (draft, awaiting_approval);
- ``unbilled``: on no bill (or on a void or deleted one);
- ``non_billable``: marked non-billable, or no charge (written off), whatever its bill.

Amounts are Decimal, to the cent, in the firm's home currency.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import IO, Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync.audit import safe_cell
from hardcost.sync.bills import document_id
from hardcost.sync.clio import ClioClient
from hardcost.sync.qbo import QboClient
from hardcost.sync.rules import (
    ImportRules,
    home_amount,
    is_voided,
    plan_safely,
)
from hardcost.sync.store import (
    EntryLink,
    Failure,
    Firm,
    FirmSettings,
    LinkState,
    WaitingExpense,
    WaitReason,
)

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
STATES = ("billed", "draft", "unbilled", "non_billable")
STATE_WORDS = {"billed": "billed", "draft": "on a draft bill", "unbilled": "unbilled",
               "non_billable": "non-billable or written off"}
ISSUED = frozenset({"awaiting_payment", "paid"})
NOT_ISSUED = frozenset({"draft", "awaiting_approval"})
AGE_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("0–30 days", 0, 30), ("31–60 days", 31, 60), ("61–90 days", 61, 90),
    ("over 90 days", 91, None))
CHART_MONTHS = 6
TOP_MATTERS = 10
OLDEST_MATTERS = 5
FAILURE_PURCHASES = 200
"""The most open failures whose purchases are read for their amounts (one QuickBooks query);
beyond, the line says how many more have no amount."""
CSV_COLUMNS = ("date", "client", "matter", "vendor", "amount", "state", "bill_number",
               "days_unbilled", "clio_entry_id", "qbo_purchase_id")
SYMBOLS = {"USD": "$", "CAD": "$", "AUD": "$", "NZD": "$", "GBP": "£", "EUR": "€"}
_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")
MONTHS = (date(2000, 1, 1), date(2099, 12, 31))


class MonthError(ValueError):
    """A month that is no ``YYYY-MM``, or out of bounds; the message is a sentence."""


@dataclass(frozen=True, order=True)
class Month:
    year: int
    month: int

    @property
    def first(self) -> date:
        return date(self.year, self.month, 1)

    @property
    def last(self) -> date:
        return self.shift(1).first - timedelta(days=1)

    @property
    def slug(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def short(self) -> str:
        return self.first.strftime("%b %Y")

    def __str__(self) -> str:
        return self.first.strftime("%B %Y")

    def shift(self, months: int) -> Month:
        index = self.year * 12 + self.month - 1 + months
        return Month(index // 12, index % 12 + 1)

    @classmethod
    def of(cls, day: date) -> Month:
        return cls(day.year, day.month)


def parse_month(raw: str | None, today: date) -> Month:
    """``YYYY-MM`` (2000 to the current month), or last month when ``raw`` is empty."""
    if not raw or not raw.strip():
        return Month.of(today).shift(-1)
    match = _MONTH.fullmatch(raw.strip())
    if match is None or not 1 <= int(match.group(2)) <= 12:
        shown = raw.strip() if len(raw.strip()) <= 20 else raw.strip()[:19] + "…"
        raise MonthError(f"“{shown}” is not a month like 2026-03.")
    month = Month(int(match.group(1)), int(match.group(2)))
    if month.first < MONTHS[0] or month > Month.of(today):
        raise MonthError(f"{month} is outside 2000 to this month.")
    return month


def first_working_day(month: Month) -> date:
    """The month's first weekday (Monday to Friday; holidays are not known here)."""
    day = month.first
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


def money(amount: Decimal, currency: str = "USD") -> str:
    """``$12,345.67``; a currency without a symbol here as ``12,345.67 SEK``."""
    sign = "-" if amount < 0 else ""
    symbol = SYMBOLS.get(currency)
    figure = f"{abs(amount):,.2f}"
    return f"{sign}{symbol}{figure}" if symbol else f"{sign}{figure} {currency}"


@dataclass
class Split:
    """Amounts (and counts) by state."""

    amounts: dict[str, Decimal] = field(default_factory=lambda: dict.fromkeys(STATES, ZERO))
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATES, 0))

    def add(self, state: str, amount: Decimal) -> None:
        self.amounts[state] += amount
        self.counts[state] += 1

    @property
    def total(self) -> Decimal:
        return sum(self.amounts.values(), ZERO)

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    def __getitem__(self, state: str) -> Decimal:
        return self.amounts[state]


@dataclass(frozen=True)
class Entry:
    activity_id: int
    date: date
    client: str
    matter: str
    matter_id: int | None
    vendor: str
    amount: Decimal
    state: str
    bill_number: str | None
    days_unbilled: int | None
    purchase_id: str


@dataclass
class MatterLine:
    client: str
    matter: str
    matter_id: int | None
    split: Split = field(default_factory=Split)


@dataclass(frozen=True)
class Bucket:
    label: str
    amount: Decimal
    count: int


@dataclass(frozen=True)
class OldMatter:
    client: str
    matter: str
    days: int
    amount: Decimal  # everything of the matter unbilled


@dataclass(frozen=True)
class Outstanding:
    """What is not in Clio yet, whatever its month."""

    waiting: int
    waiting_total: Decimal
    payment: int  # Bills waiting for payment (``bills on-payment``)
    payment_total: Decimal
    failures: int  # open failures (their purchases)
    failures_total: Decimal
    failures_unknown: int  # of those, how many have no amount (purchase not read)


@dataclass(frozen=True)
class Reconciliation:
    """QuickBooks' total for the import accounts in the month against what reached Clio."""

    qbo_total: Decimal
    reached: Decimal
    waiting: Decimal
    failed: Decimal
    skipped: tuple[tuple[str, Decimal], ...]  # (reason, amount)
    not_yet: Decimal  # read by no run yet (the next one imports it)

    @property
    def difference(self) -> Decimal:
        return self.qbo_total - self.reached


@dataclass(frozen=True)
class HistoryMonth:
    month: Month
    billed: Decimal
    draft: Decimal
    unbilled: Decimal
    waiting: Decimal


@dataclass
class MonthReport:
    firm_id: int
    firm_name: str
    month: Month
    as_of: date
    currency: str
    entries: list[Entry]  # the month's, by date
    split: Split
    matters: list[MatterLine]  # largest unbilled first
    ageing: list[Bucket]
    oldest: list[OldMatter]
    outstanding: Outstanding
    reconciliation: Reconciliation | None
    history: list[HistoryMonth]
    missing: int = 0  # links of the month whose entry Clio no longer has
    clio_rows: int = 0  # entries Clio listed (the pass's size)

    def money(self, amount: Decimal) -> str:
        return money(amount, self.currency)

    @property
    def unbilled_total(self) -> Decimal:
        return sum((b.amount for b in self.ageing), ZERO)


Progress = Callable[[int], None]
"""Told how many Clio entries were read so far, after each page."""


def state_of(row: Mapping[str, Any]) -> str:
    if row.get("non_billable") or row.get("no_charge"):
        return "non_billable"
    bill = row.get("bill") if isinstance(row.get("bill"), dict) else None
    state = str((bill or {}).get("state") or "")
    if state in ISSUED:
        return "billed"
    if state in NOT_ISSUED:
        return "draft"
    if bill is None or state in ("void", "deleted"):
        return "billed" if row.get("billed") and bill is None else "unbilled"
    return "billed" if row.get("billed") else ("draft" if row.get("on_bill") else "unbilled")


def _amount(row: Mapping[str, Any]) -> Decimal:
    value = row.get("total")
    if value is None:
        value = row.get("price")
    try:
        return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)
    except (InvalidOperation, ValueError):
        return ZERO


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _day(value: object) -> date | None:
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def _links(session: Session, firm_id: int) -> dict[int, EntryLink]:
    """The firm's entries in Clio by their Clio id: created (not on their way out), or kept."""
    rows = session.scalars(select(EntryLink).where(
        EntryLink.firm_id == firm_id, EntryLink.clio_activity_id.is_not(None),
        or_(EntryLink.state == LinkState.KEPT.value,
            (EntryLink.state == LinkState.CREATED.value)
            & EntryLink.superseded_at.is_(None))))
    return {link.clio_activity_id: link for link in rows
            if link.clio_activity_id is not None}


def build(sessions: sessionmaker[Session], firm_id: int, month: Month, *, clio: ClioClient,
          qbo: QboClient | None, today: date, progress: Progress | None = None) -> MonthReport:
    """The report of ``month`` as Clio and QuickBooks stand now (``today``: the firm's local
    date, for days unbilled). ``qbo`` None: no reconciliation, failures without amounts."""
    with sessions() as session:
        firm = session.get(Firm, firm_id)
        settings = session.get(FirmSettings, firm_id)
        if firm is None or settings is None:
            raise ValueError(f"there is no firm {firm_id}")
        links = _links(session, firm_id)
        waits = list(session.scalars(select(WaitingExpense).where(
            WaitingExpense.firm_id == firm_id, WaitingExpense.resolved_at.is_(None),
            WaitingExpense.resolution.is_(None))))
        failures = list(session.scalars(select(Failure).where(
            Failure.firm_id == firm_id, Failure.resolved_at.is_(None))))
    currency = "USD"
    if qbo is not None:
        prefs = qbo.preferences()
        home = ((prefs.get("CurrencyPrefs") or {}).get("HomeCurrency") or {}).get("value")
        currency = str(home) if isinstance(home, str) and home.isalpha() and len(home) == 3 \
            else "USD"

    rows = _read_clio(clio, settings.clio_entry_type or "HardCostEntry", links, today,
                      progress)
    matters = _matter_names(clio, {r["matter"] for r in rows if r["matter"] is not None})
    entries: list[Entry] = []
    for row in rows:
        link = links[row["id"]]
        client, number = matters.get(row["matter"], ("", "")) if row["matter"] else ("", "")
        state = state_of(row["raw"])
        day = row["date"]
        entries.append(Entry(
            activity_id=row["id"], date=day, client=client,
            matter=number or row["matter_number"] or "",
            matter_id=row["matter"], vendor=row["vendor"], amount=row["amount"], state=state,
            bill_number=row["bill_number"],
            days_unbilled=(today - day).days if state == "unbilled" else None,
            purchase_id=link.purchase_id))

    in_month = sorted((e for e in entries if month.first <= e.date <= month.last),
                      key=lambda e: (e.date, e.activity_id))
    split = Split()
    by_matter: dict[Any, MatterLine] = {}
    for entry in in_month:
        split.add(entry.state, entry.amount)
        line = by_matter.setdefault(entry.matter_id or (entry.client, entry.matter),
                                    MatterLine(entry.client, entry.matter, entry.matter_id))
        line.split.add(entry.state, entry.amount)
    matter_lines = sorted(by_matter.values(), key=lambda m: (
        -m.split["unbilled"], -m.split.total, m.client, m.matter))

    ageing, oldest = _ageing([e for e in entries if e.state == "unbilled"])
    history = _history(entries, waits, month)
    found = {e.activity_id for e in entries}
    missing = sum(1 for activity_id, link in links.items()
                  if month.first <= link.txn_date <= month.last and activity_id not in found)
    reconciliation = None
    failure_amounts: dict[int, Decimal] = {}
    if qbo is not None:
        reconciliation = _reconcile(qbo, settings, firm, month, links, waits, failures)
        failure_amounts = _failure_amounts(qbo, settings, failures)
    outstanding = _outstanding(waits, failures, failure_amounts)
    return MonthReport(firm_id=firm_id, firm_name=firm.name, month=month, as_of=today,
                       currency=currency, entries=in_month, split=split, matters=matter_lines,
                       ageing=ageing, oldest=oldest, outstanding=outstanding,
                       reconciliation=reconciliation, history=history, missing=missing,
                       clio_rows=len(rows))


def _read_clio(clio: ClioClient, entry_type: str, links: Mapping[int, EntryLink], today: date,
               progress: Progress | None) -> list[dict[str, Any]]:
    """One pass over the firm's entries of ``entry_type`` from the oldest hardcost made to
    today; only hardcost's are kept, each reduced to what the report needs."""
    if not links:
        return []
    start = min(link.txn_date for link in links.values())
    kept: list[dict[str, Any]] = []
    read = 0
    for raw in clio.cost_entries(entry_type=entry_type, start=start, end=today):
        read += 1
        if progress is not None and read % 200 == 0:
            progress(read)
        try:
            activity_id = int(raw["id"])
        except (KeyError, TypeError, ValueError):
            continue
        if activity_id not in links:
            continue
        day = _day(raw.get("date")) or links[activity_id].txn_date
        matter, vendor, bill = (_object(raw.get(key)) for key in ("matter", "vendor", "bill"))
        matter_id = matter.get("id") if isinstance(matter.get("id"), int) else None
        kept.append({
            "id": activity_id, "date": day, "amount": _amount(raw), "matter": matter_id,
            "matter_number": str(matter.get("display_number") or ""),
            "vendor": str(vendor.get("name") or ""),
            "bill_number": str(bill["number"]) if bill.get("number") else None,
            "raw": {k: raw.get(k) for k in ("billed", "on_bill", "non_billable", "no_charge",
                                            "bill")}})
    if progress is not None:
        progress(read)
    return kept


def _matter_names(clio: ClioClient, ids: set[int]) -> dict[int, tuple[str, str]]:
    """Matter id → (client name, display number)."""
    if not ids:
        return {}
    return {m.id: (m.client_name, f"{m.display_number} {m.description}".strip())
            for m in clio.matters_by_id(ids)}


def _ageing(unbilled: list[Entry]) -> tuple[list[Bucket], list[OldMatter]]:
    buckets = []
    for label, low, high in AGE_BUCKETS:
        chosen = [e for e in unbilled if e.days_unbilled is not None
                  and e.days_unbilled >= low and (high is None or e.days_unbilled <= high)]
        buckets.append(Bucket(label, sum((e.amount for e in chosen), ZERO), len(chosen)))
    by_matter: dict[Any, list[Entry]] = {}
    for entry in unbilled:
        by_matter.setdefault(entry.matter_id or (entry.client, entry.matter), []).append(entry)
    oldest = sorted((OldMatter(group[0].client, group[0].matter,
                               max(e.days_unbilled or 0 for e in group),
                               sum((e.amount for e in group), ZERO))
                     for group in by_matter.values()),
                    key=lambda m: (-m.days, -m.amount, m.client, m.matter))
    return buckets, oldest[:OLDEST_MATTERS]


def _history(entries: list[Entry], waits: list[WaitingExpense], month: Month
             ) -> list[HistoryMonth]:
    history = []
    for back in range(CHART_MONTHS - 1, -1, -1):
        shown = month.shift(-back)
        split = Split()
        for entry in entries:
            if shown.first <= entry.date <= shown.last:
                split.add(entry.state, entry.amount)
        waiting = sum((Decimal(w.amount) for w in waits
                       if shown.first <= w.txn_date <= shown.last), ZERO)
        history.append(HistoryMonth(shown, split["billed"], split["draft"], split["unbilled"],
                                    waiting))
    return history


def _outstanding(waits: list[WaitingExpense], failures: list[Failure],
                 amounts: Mapping[int, Decimal]) -> Outstanding:
    asked = [w for w in waits if w.reason != WaitReason.PAYMENT.value]
    payment = [w for w in waits if w.reason == WaitReason.PAYMENT.value]
    return Outstanding(
        waiting=len(asked), waiting_total=sum((Decimal(w.amount) for w in asked), ZERO),
        payment=len(payment), payment_total=sum((Decimal(w.amount) for w in payment), ZERO),
        failures=len(failures), failures_total=sum(amounts.values(), ZERO),
        failures_unknown=sum(1 for f in failures if f.id not in amounts))


# -- QuickBooks: the month's documents, and the amounts of failures --------------------------


def _rules(settings: FirmSettings) -> ImportRules:
    return ImportRules(start_date=settings.start_date,
                       import_account_ids=frozenset(str(a) for a in
                                                    settings.import_account_ids or []),
                       split_lines=bool(settings.split_lines),
                       item_lines=bool(settings.item_lines),
                       ask_without_customer=settings.no_customer != "skip")


def _import_lines(document: Mapping[str, Any], accounts: frozenset[str], *,
                  items: bool = False) -> list[tuple[str, str, Decimal]]:
    """(customer id, line id, home amount) of each line in an import account; with
    ``items``, also each Item details line with a customer (what an ``item_details`` failure
    holds back)."""
    try:
        rate = Decimal(str(document["ExchangeRate"])) if document.get("ExchangeRate") \
            else None
    except (InvalidOperation, ValueError):
        rate = None
    found = []
    for line in document.get("Line") or []:
        if not isinstance(line, dict):
            continue
        detail = line.get("AccountBasedExpenseLineDetail")
        item = line.get("ItemBasedExpenseLineDetail") if items else None
        if isinstance(detail, dict):
            account = str((detail.get("AccountRef") or {}).get("value") or "")
            if account not in accounts:
                continue
        elif isinstance(item, dict) and (item.get("CustomerRef") or {}).get("value"):
            detail = item
        else:
            continue
        customer = str((detail.get("CustomerRef") or {}).get("value") or "")
        try:
            amount = home_amount(Decimal(str(line.get("Amount"))), rate)
        except (InvalidOperation, ValueError, ArithmeticError):
            continue
        found.append((customer, str(line.get("Id") or ""), amount))
    return found


def _documents(qbo: QboClient, settings: FirmSettings, month: Month
               ) -> list[dict[str, Any]]:
    documents = [p for rows in qbo.dated("Purchase", month.first, month.last) for p in rows]
    if settings.bills != "off":
        for rows in qbo.dated("Bill", month.first, month.last):
            for bill in rows:
                documents.append({**bill, "Id": document_id(str(bill.get("Id"))),
                                  "PaymentType": "Bill"})
    return documents


def _reconcile(qbo: QboClient, settings: FirmSettings, firm: Firm, month: Month,
               links: Mapping[int, EntryLink], waits: list[WaitingExpense],
               failures: list[Failure]) -> Reconciliation:
    accounts = frozenset(str(a) for a in settings.import_account_ids or [])
    rules = _rules(settings)
    reached_by: dict[str, Decimal] = {}
    for link in links.values():
        reached_by[link.purchase_id] = reached_by.get(link.purchase_id, ZERO) + link.amount
    waiting_by: dict[str, Decimal] = {}
    for wait in waits:
        waiting_by[wait.purchase_id] = waiting_by.get(wait.purchase_id, ZERO) + wait.amount
    failed_ids = {f.purchase_id for f in failures}
    qbo_total = reached = waiting = failed = not_yet = ZERO
    skipped: dict[str, Decimal] = {}
    for document in _documents(qbo, settings, month):
        if is_voided(document):
            continue
        total = sum((amount for _, _, amount in _import_lines(document, accounts)), ZERO)
        purchase_id = str(document.get("Id"))
        if total == 0 and purchase_id not in reached_by:
            continue
        qbo_total += total
        got = reached_by.get(purchase_id, ZERO)
        waits_here = waiting_by.get(purchase_id, ZERO)
        reached += got
        waiting += waits_here
        rest = total - got - waits_here
        if rest == 0:
            continue
        if purchase_id in failed_ids:
            failed += rest
            continue
        plan = plan_safely(document, firm.qbo_realm_id or "", rules)
        if plan.out_of_scope:
            skipped["dated before the start date"] = skipped.get(
                "dated before the start date", ZERO) + rest
        elif plan.skips:
            reason = _short_reason(plan.skips[0].reason)
            skipped[reason] = skipped.get(reason, ZERO) + rest
        else:
            not_yet += rest
    return Reconciliation(qbo_total=qbo_total, reached=reached, waiting=waiting,
                          failed=failed, skipped=tuple(sorted(skipped.items())),
                          not_yet=not_yet)


def _short_reason(reason: str) -> str:
    """A skip's sentence without the expense's own label (so like reasons add up)."""
    for cut in (" has payment type", " is a credit card credit", " was voided",
                " is in the import account but has no customer", " comes to 0.00"):
        if cut in reason:
            return {" has payment type": "not an expense, check or card charge",
                    " is a credit card credit": "card credits (refunds)",
                    " was voided": "voided",
                    " is in the import account but has no customer": "no customer",
                    " comes to 0.00": "came to 0.00"}[cut]
    return reason[:120]


def _failure_amounts(qbo: QboClient, settings: FirmSettings, failures: list[Failure]
                     ) -> dict[int, Decimal]:
    """Failure id → the amount of the lines it holds back (its customer's, or its line's, in
    an import account), for the first ``FAILURE_PURCHASES`` purchases."""
    chosen = failures[:FAILURE_PURCHASES]
    purchase_ids = {f.purchase_id for f in chosen if not f.purchase_id.startswith("bill-")
                    and f.purchase_id.isdigit()}
    bill_ids = {f.purchase_id.removeprefix("bill-") for f in chosen
                if f.purchase_id.startswith("bill-")
                and f.purchase_id.removeprefix("bill-").isdigit()}
    documents: dict[str, Mapping[str, Any]] = {}
    if purchase_ids:
        documents.update({str(p.get("Id")): p for p in qbo.purchases_by_id(purchase_ids)})
    if bill_ids:
        documents.update({document_id(str(b.get("Id"))): b for b in qbo.bills_by_id(bill_ids)})
    accounts = frozenset(str(a) for a in settings.import_account_ids or [])
    amounts: dict[int, Decimal] = {}
    counted: set[tuple[str, str, str]] = set()
    for failure in chosen:
        document = documents.get(failure.purchase_id)
        if document is None:
            continue
        total = ZERO
        for customer, line_id, amount in _import_lines(document, accounts, items=True):
            if failure.customer_id and customer != failure.customer_id:
                continue
            if failure.line_id and line_id != failure.line_id:
                continue
            key = (failure.purchase_id, customer, line_id)
            if key in counted:  # two failures of one line: its amount once
                continue
            counted.add(key)
            total += amount
        amounts[failure.id] = total
    return amounts


# -- the CSV -----------------------------------------------------------------------------------


def csv_rows(report: MonthReport) -> Iterable[list[str]]:
    for entry in report.entries:
        yield [entry.date.isoformat(), safe_cell(entry.client), safe_cell(entry.matter),
               safe_cell(entry.vendor), f"{entry.amount:.2f}", entry.state,
               safe_cell(entry.bill_number or ""),
               "" if entry.days_unbilled is None else str(entry.days_unbilled),
               str(entry.activity_id), safe_cell(entry.purchase_id)]


def write_csv(report: MonthReport, out: IO[str]) -> int:
    """One row per entry of the month (a header first, a BOM before it so spreadsheets read
    UTF-8); returns how many entries. Cells that a spreadsheet would run are quoted
    (``audit.safe_cell``); a line break inside a cell is always quoted."""
    line = io.StringIO()
    writer = csv.writer(line, lineterminator="\r\n")
    out.write("\ufeff")
    count = -1
    for cells in (list(CSV_COLUMNS), *csv_rows(report)):
        line.seek(0)
        line.truncate()
        writer.writerow(cells)
        out.write(line.getvalue()[:-2] + "\n")
        count += 1
    return count


def render_text(report: MonthReport) -> str:
    """The report for a terminal (``hardcost report``, the demo)."""
    money, split = report.money, report.split
    lines = [f"Hard costs for {report.month} — {report.firm_name} (read from Clio on "
             f"{report.as_of.isoformat()})",
             f"  imported: {split.count} entries, {money(split.total)}"]
    for state in STATES:
        lines.append(f"    {STATE_WORDS[state]}: {money(split[state])} "
                     f"({split.counts[state]})")
    if report.matters:
        lines.append("  by matter, most unbilled first:")
        for line in report.matters[:TOP_MATTERS]:
            lines.append(f"    {line.client} — {line.matter}: "
                         f"{money(line.split['unbilled'])} unbilled, "
                         f"{money(line.split['draft'])} draft, "
                         f"{money(line.split['billed'])} billed")
    lines.append(f"  unbilled, all months ({money(report.unbilled_total)}): " + ", ".join(
        f"{b.label} {money(b.amount)}" for b in report.ageing))
    for old in report.oldest:
        lines.append(f"    oldest: {old.client} — {old.matter}: {old.days} days, "
                     f"{money(old.amount)}")
    out = report.outstanding
    lines.append(f"  not in Clio yet: {out.waiting} waiting ({money(out.waiting_total)}), "
                 f"{out.failures} open failures ({money(out.failures_total)}), "
                 f"{out.payment} Bills waiting for payment ({money(out.payment_total)})")
    rec = report.reconciliation
    if rec is not None:
        why = [f"{money(rec.waiting)} waiting", f"{money(rec.failed)} failed",
               *(f"{money(a)} skipped ({r})" for r, a in rec.skipped),
               f"{money(rec.not_yet)} not read yet"]
        lines.append(f"  QuickBooks {money(rec.qbo_total)} in the import accounts, "
                     f"{money(rec.reached)} in Clio; difference {money(rec.difference)}: "
                     + ", ".join(why))
    return "\n".join(lines)

"""Reading QuickBooks for a run: pages of purchases and of Bills, each stream under its own
watermark, by id when asked, and how far each watermark may move (docs/design.md).

This part knows QuickBooks and the ``watermarks`` table, nothing of Clio. The watermark lags
to the moment QuickBooks answered the run's first query (minus a margin), so anything changed
during the run is read again next time; it moves after each recorded page (``PageReader``)
and at the end of the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync.batches import chunks
from hardcost.sync.bills import as_documents, linked_ids, payments_needed, split_ids
from hardcost.sync.http import ApiError
from hardcost.sync.matching import CustomerInfo
from hardcost.sync.qbo import PAGE_SIZE, QboClient, instant
from hardcost.sync.rules import ImportRules
from hardcost.sync.run_state import RunState, bills_on
from hardcost.sync.store import Watermark, utcnow
from hardcost.sync.summary import keep

log = logging.getLogger(__name__)

WATERMARK_STREAM = "purchases"
BILLS_STREAM = "bills"  # the Bills' own watermark: they are read by a query of their own
WATERMARK_MARGIN = timedelta(seconds=60)
QUIET_MARK_REFRESH = timedelta(hours=6)
"""How far behind a quiet run lets a stored watermark fall before it writes the new one."""

Progress = Callable[[RunState, str, int | None], None]
"""Told the run's stage, and how many purchases are read counting the page at hand."""


@dataclass
class PageReader:
    """Where a run's read has got, and how far the watermark may move.

    Pages come oldest change first (``ORDERBY MetaData.LastUpdatedTime``, offset paging).
    Once a page is recorded, every purchase changed before its last row is recorded too, so
    the watermark may move to that row's time (never past QuickBooks' clock at the run's first
    answer, less the margin, as at the end of a run). A purchase changed while the run was
    writing can shift the rows behind it by one position and push one past a page boundary
    unread; such a change shows itself when the edited purchase comes back later in the same
    read, and then the watermark stays at the boundary before it, so the next run reads from
    there again (re-reads are harmless: the links are unique)."""

    since: str | None  # the stored watermark
    read_start: date | None  # the start date it was read with
    start_date: date | None  # the firm's start date now
    refetch: set[str]  # purchases to read again by id, unless the pages bring them
    server_time: str | None = None  # QuickBooks' clock at its first answer
    swept: bool = False  # the CDC sweep for deletions has run
    main_done: bool = False
    pages: list[tuple[datetime | None, datetime | None]] = field(default_factory=list)
    """(QuickBooks' clock at the answer, the newest change on the page) for each main page."""
    cap: datetime | None = None  # the watermark may not pass this (a page boundary)
    newest: datetime | None = None  # the newest change on the main pages so far

    @property
    def backfill_from(self) -> date | None:
        """The old start date when the firm moved its start date earlier (read once)."""
        if self.since and self.read_start and self.start_date and \
                self.start_date < self.read_start:
            return self.read_start
        return None

    @property
    def progress_start(self) -> date | None:
        """The start date a mark saved mid-run records: the old one while the dates a start
        date moved earlier are still to be read."""
        return self.read_start if self.backfill_from is not None else self.start_date

    def saw(self, purchases: list[dict[str, Any]], server_time: str | None, *,
            main: bool) -> None:
        if self.server_time is None and server_time is not None:
            self.server_time = server_time
        first = instant(self.server_time)
        answered = instant(server_time)
        page_newest: datetime | None = None
        for purchase in purchases:
            if not isinstance(purchase, dict):
                continue
            if purchase.get("Id") is not None:
                self.refetch.discard(str(purchase["Id"]))
            changed = instant((purchase.get("MetaData") or {}).get("LastUpdatedTime"))
            if changed is None:
                continue
            if main and first is not None and len(self.pages) >= 1 and \
                    changed >= first - WATERMARK_MARGIN:
                self._changed_during_read(changed)
            if page_newest is None or changed > page_newest:
                page_newest = changed
        if main:
            self.pages.append((answered, page_newest))
            if page_newest is not None and (self.newest is None or page_newest > self.newest):
                self.newest = page_newest

    def _changed_during_read(self, changed: datetime) -> None:
        """A purchase changed after the read began: rows behind its old place may have
        shifted past the boundary of the last page read before the change."""
        before = [newest for answered, newest in self.pages
                  if answered is not None and answered + WATERMARK_MARGIN < changed]
        boundary = before[-1] if before else self.pages[0][1]
        if boundary is not None and (self.cap is None or boundary < self.cap):
            self.cap = boundary

    def _bounded(self, value: datetime, now: datetime) -> datetime:
        value = min(value, instant(lagged(self.server_time, now)) or value)
        return min(value, self.cap) if self.cap is not None else value

    def progress_mark(self, now: datetime) -> str | None:
        """The watermark after a recorded main page, or None when it may not move yet."""
        if self.main_done or self.newest is None:
            return None
        mark = self._bounded(self.newest, now)
        old = instant(self.since)
        if old is not None and mark <= old:
            return None
        return mark.isoformat(timespec="seconds")

    def final_mark(self, now: datetime) -> str:
        lagged_mark = instant(lagged(self.server_time, now))
        assert lagged_mark is not None
        mark = self._bounded(lagged_mark, now)
        old = instant(self.since)
        if old is not None and mark < old:
            mark = old
        return mark.isoformat(timespec="seconds")


def lagged(server_time: str | None, now: datetime) -> str:
    """The next watermark: QuickBooks' own clock at the first answer, less a margin."""
    return ((instant(server_time) or now) - WATERMARK_MARGIN).isoformat(timespec="seconds")


class Reader:
    """One firm's QuickBooks reads and watermarks."""

    def __init__(self, sessions: sessionmaker[Session], firm_id: int, qbo: QboClient, *,
                 progress: Progress, counting: bool) -> None:
        self.sessions = sessions
        self.firm_id = firm_id
        self.qbo = qbo
        self.progress = progress
        self.counting = counting  # someone follows the run's progress: count a long backlog
        self.marks: dict[str, tuple[str, date | None]] | None = None
        """The stored watermarks as the run's first statement read them (``run_record.start``),
        kept up to date by ``save_watermark``; None: each is read when asked for."""

    # -- watermarks -------------------------------------------------------------------------

    def watermark(self, stream: str = WATERMARK_STREAM) -> tuple[str | None, date | None]:
        """The stored watermark and the start date it was read with."""
        if self.marks is not None:
            return self.marks.get(stream, (None, None))
        with self.sessions() as session:
            mark = session.scalars(select(Watermark).where(
                Watermark.firm_id == self.firm_id,
                Watermark.stream == stream)).one_or_none()
            return (mark.value, mark.start_date) if mark else (None, None)

    def save_watermark(self, value: str, start_date: date | None, *,
                       stream: str = WATERMARK_STREAM, quiet: bool = False) -> None:
        """Store the stream's watermark. ``quiet``: the run read nothing and its sweep found
        nothing, so the stored mark (read under the same start date) is as good as the new one
        and is left alone, unless it is more than ``QUIET_MARK_REFRESH`` behind: a quiet run
        writes nothing, and the CDC sweep's window stays far inside QuickBooks' 30 days."""
        known = self.marks.get(stream) if self.marks is not None else None
        if quiet and known is not None and known[1] == start_date:
            old, new = instant(known[0]), instant(value)
            if old is not None and new is not None and new - old < QUIET_MARK_REFRESH:
                return
        with self.sessions() as session:
            if self.marks is not None and known is not None:  # the row exists: one UPDATE
                session.execute(update(Watermark).where(
                    Watermark.firm_id == self.firm_id, Watermark.stream == stream).values(
                    value=value, start_date=start_date, updated_at=utcnow()))
            else:
                mark = session.scalars(select(Watermark).where(
                    Watermark.firm_id == self.firm_id,
                    Watermark.stream == stream)).one_or_none()
                if mark is None:
                    mark = Watermark(firm_id=self.firm_id, stream=stream, value=value)
                    session.add(mark)
                mark.value = value
                mark.start_date = start_date
            session.commit()
        if self.marks is not None:
            self.marks[stream] = (value, start_date)

    # -- pages ------------------------------------------------------------------------------

    def pages(self, state: RunState, reader: PageReader,
              bill_reader: PageReader | None = None) -> Iterator[
            tuple[list[dict[str, Any]], PageReader | None]]:
        """The purchases changed since the watermark, a QuickBooks page at a time; then the
        dates a start date moved earlier brought in; then, when the firm imports Bills, the
        Bills the same way (as purchase-like documents, ``sync.bills``) under their own
        watermark; then ``refetch`` not seen on the way. Each page is handled (planned,
        written, recorded) before the next one is asked for; each comes with the reader
        whose watermark it may move (None: none)."""
        settings = state.settings
        for page in self.qbo.purchases_changed_since(reader.since, settings.start_date):
            reader.saw(page.purchases, page.server_time, main=True)
            if len(page.purchases) >= PAGE_SIZE:
                self._count_backlog(state, reader)
            self.progress(state, "reading", state.summary.purchases_read + len(page.purchases))
            yield page.purchases, reader
        reader.main_done = True
        if reader.backfill_from is not None:
            # The start date moved earlier: read the newly included dates once (backfill).
            for page in self.qbo.purchases_changed_since(None, settings.start_date,
                                                         before_start=reader.backfill_from):
                reader.saw(page.purchases, page.server_time, main=False)
                yield page.purchases, None
        if bill_reader is not None:
            for page in self.qbo.bills_changed_since(bill_reader.since, settings.start_date):
                documents = self.bill_documents(state, page.purchases)
                bill_reader.saw(documents, page.server_time, main=True)
                self.progress(state, "reading",
                              state.summary.purchases_read + len(documents))
                yield documents, bill_reader
            bill_reader.main_done = True
            if bill_reader.backfill_from is not None:
                for page in self.qbo.bills_changed_since(
                        None, settings.start_date, before_start=bill_reader.backfill_from):
                    documents = self.bill_documents(state, page.purchases)
                    bill_reader.saw(documents, page.server_time, main=False)
                    yield documents, None
        if reader.refetch:
            for chunk in chunks(sorted(reader.refetch), PAGE_SIZE):
                found = self.by_id(state, set(chunk))
                reader.saw(found, None, main=False)
                yield found, None

    def _count_backlog(self, state: RunState, reader: PageReader) -> None:
        """A first page that is full means a long run: count what it will read (one query),
        so its progress can say "400 of 2,000" and when it will be done."""
        if not self.counting or state.purchases_expected is not None:
            return
        try:
            state.purchases_expected = self.qbo.count_purchases_changed_since(
                reader.since, state.settings.start_date)
        except ApiError as exc:  # only the estimate is lost
            log.info("could not count the purchases to read: %s", exc)

    def by_id(self, state: RunState, ids: set[str]) -> list[dict[str, Any]]:
        """Purchases, and Bills as documents, by id: ``bill-<id>`` names a Bill,
        ``billpayment-<id>`` a payment whose Bills are read (a webhook's). With Bills off,
        Bills are not read."""
        purchase_ids, bill_ids, payment_ids = split_ids(ids)
        found = self.qbo.purchases_by_id(purchase_ids)
        if not bills_on(state) or not (bill_ids or payment_ids):
            if bill_ids:
                log.info("bills are off: %d Bill(s) not read again", len(bill_ids))
            return found
        if payment_ids:
            for payment in self.qbo.bill_payments_by_id(payment_ids):
                if isinstance(payment, dict):
                    bill_ids.update(linked_ids(payment, "Bill"))
        if bill_ids:
            found += self.bill_documents(state, self.qbo.bills_by_id(bill_ids))
        return found

    def bill_documents(self, state: RunState, bills: list[Any]) -> list[dict[str, Any]]:
        """A page of Bills as purchase-like documents; under ``on-payment`` the paid ones are
        dated by their latest payment (one query for the page's payments, only when some are
        paid) and the others noted as awaiting payment."""
        mode = state.settings.bills
        needed = payments_needed(bills, mode)
        payments = {str(p["Id"]): p for p in self.qbo.bill_payments_by_id(needed)
                    if isinstance(p, dict) and p.get("Id") is not None} if needed else {}
        page = as_documents(bills, mode, payments)
        state.awaiting_payment -= {str(d["Id"]) for d in page.documents}
        state.awaiting_payment |= page.awaiting_payment
        for skip in page.skips:
            state.summary.skipped += 1
            keep(state.summary.skips, skip.reason)
        return page.documents

    # -- what planning and matching need from QuickBooks ------------------------------------

    def rules(self, state: RunState, purchases: list[dict[str, Any]]) -> ImportRules:
        """The import rules for one page (item lines' accounts are asked for once a run)."""
        settings = state.settings
        accounts = frozenset(str(a) for a in settings.import_account_ids or [])
        item_accounts = state.item_accounts
        if settings.item_lines:
            item_ids = {str(ref["value"]) for p in purchases for line in p.get("Line") or []
                        if isinstance(line, dict)
                        for ref in [(line.get("ItemBasedExpenseLineDetail") or {}).get("ItemRef")]
                        if isinstance(ref, dict) and ref.get("value")}
            new = item_ids - state.items_asked
            if new:
                state.items_asked |= new
                for item in self.qbo.items(new):
                    account = item.get("ExpenseAccountRef") or {}
                    if account.get("value"):
                        item_accounts[str(item["Id"])] = str(account["value"])
        return ImportRules(start_date=settings.start_date, import_account_ids=accounts,
                           split_lines=bool(settings.split_lines),
                           item_lines=bool(settings.item_lines),
                           item_expense_accounts=dict(item_accounts),
                           ask_without_customer=settings.no_customer != "skip",
                           skip_not_billable=settings.not_billable == "skip")

    def customer_info(self, customer_ids: set[str]) -> dict[str, CustomerInfo]:
        """Emails of customers (and their parents) that names alone did not settle."""
        customers = {str(c.get("Id")): c for c in self.qbo.customers(customer_ids)}
        parent_ids = {str((c.get("ParentRef") or {}).get("value")) for c in customers.values()
                      if (c.get("ParentRef") or {}).get("value")}
        parents = {str(c.get("Id")): c for c in self.qbo.customers(parent_ids - customers.keys())} \
            if parent_ids - customers.keys() else {}
        everyone = {**customers, **parents}
        info: dict[str, CustomerInfo] = {}
        for customer_id, customer in customers.items():
            parent = everyone.get(str((customer.get("ParentRef") or {}).get("value")))
            info[customer_id] = CustomerInfo(email=_email(customer),
                                             parent_email=_email(parent) if parent else None)
        return info


def _email(customer: dict[str, Any] | None) -> str | None:
    if not customer:
        return None
    address = (customer.get("PrimaryEmailAddr") or {}).get("Address")
    return str(address) if address else None

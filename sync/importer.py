"""One import run for one firm: read QuickBooks, plan, resolve matters, write Clio, record.

Delivery is at-least-once from QuickBooks and exactly-once into Clio:

- the watermark lags to the moment QuickBooks answered the run's first query (minus a margin),
  so anything changed during the run is read again next time; it advances only after every
  entry of the run has been recorded;
- each entry gets a ``pending`` link committed *before* the Clio POST and completed after it;
  a run that finds a ``pending`` link first searches Clio for its note marker and only posts
  again when the entry is really absent;
- the link table is unique on the QuickBooks key, so re-reads create nothing.

One bad purchase never stops the run: it becomes a recorded failure with a class (config,
transient, data) and a sentence a bookkeeper understands.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection as SqlConnection
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync import audit, matter_cache, matter_rules, suggestions
from hardcost.sync.audit import Action
from hardcost.sync.batches import chunks
from hardcost.sync.bills import (
    OFF,
    ON_ENTRY,
    ON_PAYMENT,
    as_documents,
    bill_id_of,
    linked_ids,
    payments_needed,
    split_ids,
)
from hardcost.sync.clio import Activity, ClioClient, Contact, HardCostsDisabled
from hardcost.sync.edits import Edits
from hardcost.sync.http import (
    ApiError,
    ConfigError,
    ReconnectRequired,
    ServiceDown,
    TransientError,
)
from hardcost.sync.log_context import run_context, set_run_id
from hardcost.sync.matching import CustomerInfo, MatterResolver, Resolution
from hardcost.sync.metrics import ENTRIES, FAILURES, RUN_SECONDS, RUNS
from hardcost.sync.qbo import PAGE_SIZE, QboClient, instant, transaction_url
from hardcost.sync.removals import REMOVALS_STREAM, Removals, note_removals
from hardcost.sync.rules import (
    BILL_PREFIX,
    NO_CUSTOMER,
    ImportRules,
    LineFailure,
    PlannedEntry,
    PurchasePlan,
    QboKey,
    is_bill,
    is_voided,
    plan_purchase,
)
from hardcost.sync.store import (
    PROVIDER_FOR_SERVICE,
    PROVIDER_NAMES,
    AuditEntry,
    Connection,
    ContactLink,
    EntryLink,
    Failure,
    FailureKind,
    Firm,
    FirmSettings,
    LinkState,
    MatterRule,
    Run,
    WaitingExpense,
    WaitReason,
    Watermark,
    utcnow,
)
from hardcost.sync.summary import (
    ChangedItem,
    FailureItem,
    ImportedEntry,
    RunProgress,
    RunStopped,
    RunSummary,
    WaitingItem,
    keep,
    matter_label,
)
from hardcost.sync.tokens import broken_reason, mark_broken

log = logging.getLogger(__name__)
NO_LONGER_PAID = "paid Bill "
"""How the audit trail's note on a Bill that owes again starts (said once per change)."""

WATERMARK_STREAM = "purchases"
BILLS_STREAM = "bills"  # the Bills' own watermark: they are read by a query of their own
WATERMARK_MARGIN = timedelta(seconds=60)
PENDING_GRACE = timedelta(minutes=2)
"""A pending link younger than this, written by a person's choice or by a run still marked
running, may be a write in flight in a live process (a POST waits at most 70 s for Clio):
recovery leaves it alone. One of a run that is over is looked up at once."""
LATE_WRITE = timedelta(seconds=20)
"""A POST a process sent just before it died may still be applied by Clio after the process is
gone (Clio got the request; nobody reads its answer). A dead run's pending link younger than
this that is not in Clio yet is looked up again once it is older (the run waits for it, once,
before it reads QuickBooks): reposting it at once could make the entry twice. A run stopped
while it waits leaves such links pending for the next run."""
CIRCUIT_BREAK_AFTER = 3  # consecutive transient Clio failures before the rest wait for next run
HEAL_TRIES = 6
"""Tries of one Clio write within a run: after a 5xx, a timeout or a 429 that outlasted the
client's own retries, the run waits as the retry policy does, looks the entry up by its
marker when the write may have happened, and writes again only when it is not there."""


WRITE_BATCH = 100
"""Entries whose pending links are committed together before their POSTs, and whose results
are recorded together after them. A crash leaves at most this many links for the next run to
look up by marker (one Clio call each)."""


SHUTDOWN = threading.Event()
"""Set when the process is asked to stop: runs finish the entry they are writing, then stop."""


class AlreadyImported(Exception):
    """The entry's link exists: it was written (or is being written) already."""


class FirmNotReady(Exception):
    """The firm's settings do not allow a run yet; the message says what to set."""


@dataclass
class _RunState:
    firm: Firm
    settings: FirmSettings
    summary: RunSummary
    resolver: MatterResolver
    entry_type: str
    actor: str = "schedule"  # who the audit trail names: a Slack user id, or the trigger
    consecutive_transient: int = 0
    clio_blocked: ApiError | None = None
    raised: set[tuple[str, str, str, str]] = field(default_factory=set)
    obsolete: dict[tuple[str, str], list[EntryLink]] = field(default_factory=dict)
    """(purchase id, line id) → entries an edit made obsolete, not removed yet: one whose
    client is the new entry's may be moved to the new matter instead (``Edits.move``)."""
    to_write: int = 0  # entries this run writes or asks about (for progress)
    handled: int = 0  # of those, done so far
    purchases_expected: int | None = None  # a long run's count of what it will read
    posting: int = 0  # entries of the batch being written that are in Clio, not recorded yet
    waited_before: float = 0.0  # the clients' rate-limit waits when the run started
    rules: list[MatterRule] | None = None  # the firm's active matter rules, read when needed
    batch: list[_Queued] = field(default_factory=list)  # entries waiting for their POST
    asked_before: set[tuple[str, str, str, str]] = field(default_factory=set)
    """Keys read this run that were already waiting (a question asked in an earlier run)."""
    item_accounts: dict[str, str] = field(default_factory=dict)  # item id → expense account
    items_asked: set[str] = field(default_factory=set)  # item ids QuickBooks was asked about
    awaiting_payment: set[str] = field(default_factory=set)
    """Bills read this run that are not fully paid (``bills on-payment``): new entries wait."""
    asked_untagged: bool = False  # an expense with no customer waits: the matter search needs
    # the firm's matters (``matter_cache``)


class _OneConnection(sessionmaker[Session]):
    """Sessions on one connection, one at a time (see ``Importer._one_connection``)."""

    def __init__(self, shared: sessionmaker[Session], connection: SqlConnection) -> None:
        super().__init__(class_=shared.class_, **{**shared.kw, "bind": connection})
        self.shared = shared
        self.open = 0

    def __call__(self, **local_kw: Any) -> Session:
        if self.open:
            # Nested: its own transaction on its own connection, never joined to the open one.
            return self.shared(**local_kw)
        session = super().__call__(**local_kw)
        self.open += 1
        close = session.close

        def closed() -> None:
            if session.info.pop("_one_connection_open", None):
                self.open -= 1
            close()

        session.info["_one_connection_open"] = True
        session.close = closed  # type: ignore[method-assign]
        return session


@dataclass(frozen=True)
class _Queued:
    """An entry whose matter is known, queued for the next batch of writes."""

    entry: PlannedEntry
    matter_id: int
    label: str  # the matter as the run's details and the audit trail name it
    rule: MatterRule | None  # the matter rule that chose the matter, if one did


@dataclass
class _PageReader:
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
        value = min(value, instant(_lagged(self.server_time, now)) or value)
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
        lagged = instant(_lagged(self.server_time, now))
        assert lagged is not None
        mark = self._bounded(lagged, now)
        old = instant(self.since)
        if old is not None and mark < old:
            mark = old
        return mark.isoformat(timespec="seconds")


class Importer:
    """Runs imports for one firm with the clients it is given."""

    def __init__(self, sessions: sessionmaker[Session], firm_id: int, *, qbo: QboClient,
                 clio: ClioClient, clock: Callable[[], datetime] = utcnow,
                 sandbox_links: bool = False) -> None:
        self.sessions = sessions
        self.firm_id = firm_id
        self.qbo = qbo
        self.clio = clio
        self.clock = clock
        self.sandbox_links = sandbox_links
        self.stopping: threading.Event = SHUTDOWN
        self.late_write = LATE_WRITE
        self.on_progress: Callable[[RunProgress], None] | None = None
        """Told how far each run has got (after each page read and each entry handled)."""

    # -- the run --------------------------------------------------------------------------

    def run(self, *, trigger: str = "manual", dry_run: bool = False,
            purchase_ids: set[str] | None = None,
            removed: dict[str, str] | None = None, actor: str | None = None) -> RunSummary:
        """One import. ``purchase_ids`` limits it to those purchases (a Retry button, a
        webhook): they are read by id, the watermark is left where it is and no CDC sweep is
        made. ``removed`` (purchase id → ``deleted``/``voided``) are purchases a webhook said
        left QuickBooks: recorded, then handled with any others still open. ``actor`` is the
        Slack user who asked for the run, for the audit trail (default: the trigger)."""
        with run_context(self.firm_id):
            return self._logged_run(trigger, dry_run, purchase_ids, removed, actor)

    def _logged_run(self, trigger: str, dry_run: bool, purchase_ids: set[str] | None,
                    removed: dict[str, str] | None, actor: str | None) -> RunSummary:
        started = time.monotonic()
        qbo_calls, clio_calls = self.qbo.calls, self.clio.calls
        with self.sessions() as session:
            firm = session.get(Firm, self.firm_id)
            settings = session.get(FirmSettings, self.firm_id)
            if firm is None or settings is None:
                raise FirmNotReady(f"There is no firm {self.firm_id}.")
            broken = {c.provider: c.broken_reason for c in session.scalars(
                select(Connection).where(Connection.firm_id == self.firm_id))
                if c.broken_at is not None}
            _check_ready(firm, settings, broken)
            run_id = None
            if not dry_run:
                run = Run(firm_id=self.firm_id, trigger=trigger, dry_run=dry_run,
                          started_at=self.clock())
                session.add(run)
                session.commit()
                run_id = run.id
                set_run_id(run_id)
            stored = self._stored_contacts(session)
        log.debug("run %s started (%s%s)", run_id, trigger, ", dry run" if dry_run else "")
        summary = RunSummary(self.firm_id, run_id, dry_run, self.clock(), actor=actor)
        outcome = "crashed"
        state = _RunState(firm, settings, summary, MatterResolver(self.clio, stored),
                          settings.clio_entry_type or "HardCostEntry", actor=actor or trigger,
                          waited_before=self.qbo.waited + self.clio.waited)
        try:
            if removed and not dry_run:
                note_removals(self.sessions, self.firm_id, firm.qbo_realm_id or "", removed,
                              "webhook", self.clock())
            with self._one_connection():
                self._run(state, dry_run, purchase_ids)
            outcome = "ok"
        except (ApiError, FirmNotReady, RunStopped) as exc:
            outcome = "failed"
            summary.error = str(exc)
            log.warning("run for firm %s stopped: %s", self.firm_id, exc)
            if isinstance(exc, ReconnectRequired) and exc.service in PROVIDER_FOR_SERVICE:
                mark_broken(self.sessions, self.firm_id, PROVIDER_FOR_SERVICE[exc.service],
                            broken_reason(exc), self.clock())
        except Exception as exc:
            # A bug or an answer of a shape nobody expected: the run's record must not say ok.
            summary.error = (f"The run stopped on an unexpected error ({type(exc).__name__}); "
                             "the details are in the server log.")
            raise
        finally:
            summary.duration_s = time.monotonic() - started
            summary.handled = state.handled
            summary.entries_expected = _entries_expected(state)
            summary.qbo_calls = self.qbo.calls - qbo_calls
            summary.clio_calls = self.clio.calls - clio_calls
            if not dry_run:
                self._finish_run(summary, state)
            RUNS.labels(trigger, outcome).inc()
            RUN_SECONDS.labels(trigger).observe(summary.duration_s)
            self._progress(state, "done")
            # A quiet run (most scheduled ones) is a DEBUG line; anything that happened is INFO.
            log.log(logging.INFO if summary.did_something else logging.DEBUG,
                    "run %s %s in %.1f s: %d imported, %d waiting, %d failed, %d skipped",
                    run_id, outcome, summary.duration_s, summary.imported, summary.waiting,
                    summary.failed, summary.skipped)
        return summary

    @contextmanager
    def _one_connection(self) -> Iterator[None]:
        """The run's database work on one connection, checked out once: the sessions the run
        (and the edits, removals and audit rows it makes) opens one after another are bound
        to it, so the pool is not asked (nor a pre-ping sent) per entry. Each still commits
        its own transaction, as before; one opened while another is open gets a connection
        of its own from the pool, as before."""
        shared = self.sessions
        engine = shared.kw.get("bind")
        if not isinstance(engine, Engine):
            yield
            return
        with engine.connect() as connection:
            self.sessions = _OneConnection(shared, connection)
            try:
                yield
            finally:
                self.sessions = shared

    def _progress(self, state: _RunState, stage: str, purchases_read: int | None = None
                  ) -> None:
        if self.on_progress is None:
            return
        summary = state.summary
        read = summary.purchases_read if purchases_read is None else purchases_read
        self.on_progress(RunProgress(
            stage, read, state.to_write, state.handled + state.posting,
            summary.imported + state.posting,
            summary.waiting + summary.still_waiting, summary.failed + summary.still_failing,
            self.qbo.waited + self.clio.waited - state.waited_before,
            run_id=summary.run_id, entries_expected=_entries_expected(state),
            purchases_expected=state.purchases_expected,
            clio_rate_limit=getattr(self.clio, "rate_limit", None)))

    def _count_backlog(self, state: _RunState, reader: _PageReader) -> None:
        """A first page that is full means a long run: count what it will read (one query),
        so its progress can say "400 of 2,000" and when it will be done."""
        if self.on_progress is None or state.purchases_expected is not None:
            return
        try:
            state.purchases_expected = self.qbo.count_purchases_changed_since(
                reader.since, state.settings.start_date)
        except ApiError as exc:  # only the estimate is lost
            log.info("could not count the purchases to read: %s", exc)

    def _run(self, state: _RunState, dry_run: bool, purchase_ids: set[str] | None) -> None:
        """Read, plan and write a QuickBooks page at a time: only one page of purchases (and
        one batch of writes) is held, whatever the size of the backlog. The watermark moves
        after each page past what is recorded (``_PageReader``), so a run that dies carries
        on from its last whole page."""
        refetch = set() if dry_run else self._recover_pending(state) | self._superseded()
        if purchase_ids is not None:
            by_id: dict[str, dict[str, Any]] = {}
            unkeyed: list[dict[str, Any]] = []
            _collect(by_id, unkeyed, self._read_by_id(state, purchase_ids | refetch))
            purchases = [*by_id.values(), *unkeyed]
            del by_id, unkeyed
            if not dry_run:
                self._note_voided(purchases, state)
                self._removals(state).handle()
            self._handle_page(state, purchases, dry_run)
            del purchases
            self._finish_pages(state, dry_run, targeted=True)
            return
        refetch |= self._purchases_to_retry() | self._no_longer_awaiting_payment(state)
        since, read_start = self._watermark()
        reader = _PageReader(since, read_start, state.settings.start_date, refetch)
        bill_reader = None
        if _bills_on(state):
            since, read_start = self._watermark(BILLS_STREAM)
            # The same refetch set: a Bill its pages bring is not read again by id.
            bill_reader = _PageReader(since, read_start, state.settings.start_date, refetch)
        for purchases, source in self._pages(state, reader, bill_reader):
            if not dry_run:
                voided = self._note_voided(purchases, state)
                if not reader.swept:
                    reader.swept = True
                    removals = self._removals(state)
                    removals.sweep(reader.server_time)
                    self._read_paid_bills(state, removals, refetch)
                    removals.handle()
                elif voided:
                    self._removals(state).handle()
            self._handle_page(state, purchases, dry_run)
            del purchases
            if not dry_run and source is not None and \
                    (mark := source.progress_mark(self.clock())) is not None:
                self._save_watermark(mark, source.progress_start,
                                     stream=WATERMARK_STREAM if source is reader
                                     else BILLS_STREAM)
        if not dry_run and not reader.swept:  # nothing read at all (no page came back)
            removals = self._removals(state)
            removals.sweep(None)
            removals.handle()
        self._finish_pages(state, dry_run, targeted=False)
        if not dry_run:
            self._save_watermark(reader.final_mark(self.clock()), state.settings.start_date)
            if bill_reader is not None:
                self._save_watermark(bill_reader.final_mark(self.clock()),
                                     state.settings.start_date, stream=BILLS_STREAM)
            self._save_watermark(_lagged(reader.server_time, self.clock()), None,
                                 stream=REMOVALS_STREAM)

    def _pages(self, state: _RunState, reader: _PageReader,
               bill_reader: _PageReader | None = None) -> Iterator[
            tuple[list[dict[str, Any]], _PageReader | None]]:
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
            self._progress(state, "reading", state.summary.purchases_read + len(page.purchases))
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
                documents = self._bill_documents(state, page.purchases)
                bill_reader.saw(documents, page.server_time, main=True)
                self._progress(state, "reading",
                               state.summary.purchases_read + len(documents))
                yield documents, bill_reader
            bill_reader.main_done = True
            if bill_reader.backfill_from is not None:
                for page in self.qbo.bills_changed_since(
                        None, settings.start_date, before_start=bill_reader.backfill_from):
                    documents = self._bill_documents(state, page.purchases)
                    bill_reader.saw(documents, page.server_time, main=False)
                    yield documents, None
        if reader.refetch:
            for chunk in chunks(sorted(reader.refetch), PAGE_SIZE):
                found = self._read_by_id(state, set(chunk))
                reader.saw(found, None, main=False)
                yield found, None

    def _read_by_id(self, state: _RunState, ids: set[str]) -> list[dict[str, Any]]:
        """Purchases, and Bills as documents, by id: ``bill-<id>`` names a Bill,
        ``billpayment-<id>`` a payment whose Bills are read (a webhook's). With Bills off,
        Bills are not read."""
        purchase_ids, bill_ids, payment_ids = split_ids(ids)
        found = self.qbo.purchases_by_id(purchase_ids)
        if not _bills_on(state) or not (bill_ids or payment_ids):
            if bill_ids:
                log.info("bills are off: %d Bill(s) not read again", len(bill_ids))
            return found
        if payment_ids:
            for payment in self.qbo.bill_payments_by_id(payment_ids):
                if isinstance(payment, dict):
                    bill_ids.update(linked_ids(payment, "Bill"))
        if bill_ids:
            found += self._bill_documents(state, self.qbo.bills_by_id(bill_ids))
        return found

    def _bill_documents(self, state: _RunState, bills: list[Any]) -> list[dict[str, Any]]:
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

    def _read_paid_bills(self, state: _RunState, removals: Removals,
                         refetch: set[str]) -> None:
        """Bills whose payments changed (the CDC sweep saw the BillPayments) are read again:
        their balance, hence whether and when they import, may have moved."""
        if state.settings.bills == ON_PAYMENT:
            refetch |= removals.paid
            if removals.payments_gone:
                refetch |= self._imported_bills()

    def _imported_bills(self) -> set[str]:
        """``bill-<id>`` of every Bill with an entry in Clio: a BillPayment was deleted, and
        CDC does not say which Bills it paid (only its id), so they are all read again (by
        id, a thousand a query); those still paid are left as they are."""
        with self.sessions() as session:
            return set(session.scalars(select(EntryLink.purchase_id).where(
                EntryLink.firm_id == self.firm_id, EntryLink.removed_at.is_(None),
                EntryLink.state == LinkState.CREATED,
                EntryLink.purchase_id.startswith(BILL_PREFIX, autoescape=True)).distinct()))

    def _note_voided(self, purchases: list[dict[str, Any]], state: _RunState) -> bool:
        voided = {str(p["Id"]): "voided" for p in purchases
                  if isinstance(p, dict) and p.get("Id") is not None and is_voided(p)}
        if voided:
            note_removals(self.sessions, self.firm_id, state.firm.qbo_realm_id or "", voided,
                          "read", self.clock())
        return bool(voided)

    def _handle_page(self, state: _RunState, purchases: list[dict[str, Any]],
                     dry_run: bool) -> None:
        """Plan one page of purchases, follow edits, write or ask, and record it all."""
        realm_id = state.firm.qbo_realm_id or ""
        state.summary.purchases_read += len(purchases)
        rules = self._rules(state, purchases)
        plans = [_plan_safely(p, realm_id, rules) for p in purchases]
        by_id = {str(p["Id"]): p for p in purchases
                 if isinstance(p, dict) and p.get("Id") is not None}
        known = self._known(realm_id, [p.purchase_id for p in plans])
        to_resolve: list[PlannedEntry] = []
        to_update: list[tuple[PlannedEntry, EntryLink]] = []
        to_hold: list[PlannedEntry] = []  # Bills' entries waiting for payment
        no_longer_paid: list[tuple[PlannedEntry, EntryLink, dict[str, Any] | None]] = []
        superseding = False
        for plan in plans:
            unpaid = plan.purchase_id in state.awaiting_payment
            for skip in plan.skips:
                state.summary.skipped += 1
                keep(state.summary.skips, skip.reason)
            for failure in plan.failures:
                self._record_failure(state, failure, FailureKind.DATA, dry_run)
            links, waiting = known.get(plan.purchase_id, ([], []))
            link_of = {(link.customer_id, link.line_id): link for link in links}
            waited = {(row.customer_id, row.line_id) for row in waiting}
            for entry in plan.entries:
                link = link_of.get((entry.key.customer_id, entry.key.line_id))
                if link is None or _revivable(link):
                    if unpaid:
                        to_hold.append(entry)
                        continue
                    to_resolve.append(entry)
                    if (entry.key.customer_id, entry.key.line_id) in waited:
                        state.asked_before.add(_key_tuple(entry.key))
                    continue
                # Still the same purchase: whatever failed before for it is settled.
                state.raised.add((entry.key.purchase_id, entry.key.customer_id,
                                  entry.key.line_id, "*"))
                if unpaid:  # imported before (paid then, or on entry): left until paid again
                    if link.state == LinkState.CREATED and link.clio_activity_id is not None:
                        no_longer_paid.append((entry, link, by_id.get(plan.purchase_id)))
                    else:
                        state.summary.unchanged += 1
                elif _edited(link, entry):
                    to_update.append((entry, link))
                else:
                    state.summary.unchanged += 1
            if not dry_run and (links or waiting):
                superseding = True
                self._supersede(state, plan, by_id.get(plan.purchase_id), links, waiting)
                for link in links:
                    if link.superseded_at is not None and link.removed_at is None and \
                            link.state == LinkState.CREATED:
                        state.obsolete.setdefault((link.purchase_id, link.line_id),
                                                  []).append(link)
        del by_id, known

        for entry, link in to_update:
            if self.stopping.is_set():
                raise RunStopped.by(self.stopping)
            self._follow_edit(state, entry, link, dry_run)
        for entry, link, bill in no_longer_paid:
            self._no_longer_paid(state, entry, link, bill, dry_run)
        for entry in to_hold:  # nobody is asked: it imports by itself once paid
            self._wait(state, entry, Resolution(reason=WaitReason.PAYMENT), dry_run)
        self._resolve_and_write(state, to_resolve, dry_run)
        if not dry_run and superseding:
            self._removals(state).handle_superseded()
        state.obsolete.clear()
        if not dry_run:
            page_ids = [p.purchase_id for p in plans]
            self._close_settled_failures(state, page_ids)
            # What this page raised is settled in the database now; the run keeps no more.
            done = set(page_ids)
            state.raised = {r for r in state.raised if r[0] not in done}

    def _no_longer_paid(self, state: _RunState, entry: PlannedEntry, link: EntryLink,
                        bill: dict[str, Any] | None, dry_run: bool) -> None:
        """An imported Bill (``bills on-payment``) owes again: a payment was deleted or made
        smaller in QuickBooks. Its Clio entry is kept (the money may be paid again, and the
        entry may be billed); the run summary and the audit trail say so, once until it
        changes again."""
        number = bill.get("DocNumber") if isinstance(bill, dict) else None
        name = number.strip() if isinstance(number, str) and number.strip() else \
            f"#{bill_id_of(link.purchase_id)}"
        note = (f"paid Bill {name} is no longer paid in QuickBooks; its Clio entry "
                f"#{link.clio_activity_id} is kept")
        if not dry_run:
            with self.sessions() as session:
                last = session.scalars(select(AuditEntry).where(
                    AuditEntry.firm_id == self.firm_id,
                    AuditEntry.purchase_id == link.purchase_id,
                    AuditEntry.customer_id == link.customer_id,
                    AuditEntry.line_id == link.line_id).order_by(
                        AuditEntry.id.desc()).limit(1)).first()
                if last is not None and last.action == Action.KEPT.value and \
                        (last.detail or "").startswith(NO_LONGER_PAID):
                    state.summary.unchanged += 1  # said before, and nothing happened since
                    return
                audit.record(session, self.firm_id, Action.KEPT, state.actor,
                             realm_id=link.realm_id, purchase_id=link.purchase_id,
                             customer_id=link.customer_id, line_id=link.line_id,
                             client=entry.customer_name, amount=link.amount,
                             clio_activity_id=link.clio_activity_id,
                             clio_matter_id=link.clio_matter_id, detail=note,
                             run_id=state.summary.run_id, at=self.clock())
                session.commit()
            log.info("firm %s: %s", self.firm_id, note)
        figures = {"amount": f"{link.amount:.2f}", "date": link.txn_date.isoformat()}
        state.summary.unpaid += 1
        state.summary.changed_items.append(ChangedItem(
            link.marker, link.purchase_id, "unpaid", link.clio_activity_id, None, figures,
            figures, None, note, self.clio.matter_url(link.clio_matter_id)))

    def _finish_pages(self, state: _RunState, dry_run: bool, *, targeted: bool) -> None:
        if not dry_run and not targeted:
            self._import_where_a_matter_appeared(state)
        if not dry_run:
            self._remember_contacts(state)
        if not dry_run and state.clio_blocked is None and (
                state.asked_untagged or (state.summary.purchases_read
                                         and self._untagged_waiting())):
            self._refresh_matter_cache()

    def _untagged_waiting(self) -> bool:
        with self.sessions() as session:
            return session.scalars(select(WaitingExpense.id).where(
                WaitingExpense.firm_id == self.firm_id, WaitingExpense.resolved_at.is_(None),
                WaitingExpense.reason == WaitReason.NO_CUSTOMER.value).limit(1)).first() \
                is not None

    def _refresh_matter_cache(self) -> None:
        """The search menu of an expense with no client offers the firm's open and pending
        matters from a local copy; a run that asks such a question, or that reads purchases
        while one is open, keeps it fresh (at most hourly: ``matter_cache``). A quiet run
        (nothing read) asks nothing. Clio refusing leaves the copy as it was: the run's
        entries are written already."""
        try:
            matter_cache.refresh_if_stale(self.sessions, self.firm_id, self.clio, self.clock)
        except ReconnectRequired:
            raise
        except ApiError as exc:
            log.warning("the firm's matters could not be read for the search menu: %s", exc)

    def _follow_edit(self, state: _RunState, entry: PlannedEntry, link: EntryLink,
                     dry_run: bool) -> None:
        """An imported purchase was edited in QuickBooks: follow it into Clio (``Edits``)."""
        summary = state.summary
        if dry_run:
            summary.updated += 1  # would be compared with Clio, and updated unless billed
            summary.changed_items.append(ChangedItem(
                link.marker, link.purchase_id, "updated", link.clio_activity_id, None,
                {"amount": f"{link.amount:.2f}", "date": link.txn_date.isoformat()},
                {"amount": f"{entry.amount:.2f}", "date": entry.date.isoformat()}, None,
                "edited in QuickBooks: would be updated in Clio unless it is on a bill"))
            return
        if state.clio_blocked is not None:
            self._record_edit_failure(state, entry, link, state.clio_blocked)
            return
        try:
            Edits(self.sessions, self.firm_id, self.clio, summary, state.actor,
                  self.clock).follow(entry, link)
        except ReconnectRequired:
            raise
        except ApiError as exc:
            self._record_edit_failure(state, entry, link, exc)
            _count_clio_failure(state, exc)
            return
        state.consecutive_transient = 0

    def _moved(self, state: _RunState, entry: PlannedEntry, resolution: Resolution,
               label: str) -> bool:
        """A line that moved to another QuickBooks customer of the same Clio client (say, from
        sub-customer "Acme:Lease" to "Acme:Employment"): its obsolete entry is moved to the
        new matter with one PATCH, when Clio allows it (unbilled, untouched by people).
        False when there is nothing to move or Clio would not: the obsolete entry is then
        removed and the new one written, as for any changed key."""
        candidates = state.obsolete.get((entry.key.purchase_id, entry.key.line_id))
        if not candidates or resolution.contact is None or resolution.matter is None:
            return False
        client_matters = {m.id for m in state.resolver.matters_of(resolution.contact.id)}
        link = next((c for c in candidates if c.clio_matter_id in client_matters), None)
        if link is None:
            return False
        try:
            moved = Edits(self.sessions, self.firm_id, self.clio, state.summary, state.actor,
                          self.clock).move(link, entry, resolution.matter.id, label)
        except ReconnectRequired:
            raise
        except ApiError as exc:
            log.info("%s could not be moved (%s); the obsolete entry goes instead",
                     link.marker, exc)
            return False
        if moved:
            candidates.remove(link)
            state.raised.add((entry.key.purchase_id, entry.key.customer_id,
                              entry.key.line_id, "*"))
        return moved

    def _record_edit_failure(self, state: _RunState, entry: PlannedEntry, link: EntryLink,
                             exc: ApiError) -> None:
        message = (f"{_entry_label(entry)} was edited in QuickBooks, but its Clio entry "
                   f"#{link.clio_activity_id} could not be updated: {exc.message}")
        code = f"clio_update_{exc.code or exc.status or 'error'}".lower()[:60]
        failure = LineFailure(entry.key.purchase_id, code, message, entry.key.customer_id,
                              entry.key.line_id)
        self._record_failure(state, failure, exc.kind, False, detail=str(exc))

    def _supersede(self, state: _RunState, plan: PurchasePlan, purchase: Any,
                   links: list[EntryLink], waiting: list[WaitingExpense]) -> None:
        Edits(self.sessions, self.firm_id, self.clio, state.summary, state.actor,
              self.clock).supersede(plan, purchase, links, waiting)

    def _import_where_a_matter_appeared(self, state: _RunState) -> None:
        """Expenses waiting because their client had no open matter import by themselves once
        one exists. Only the clients with such expenses are asked (once each, cached). Those
        this run already asked about (its own questions, and earlier ones it read again) are
        left as they are."""
        with self.sessions() as session:
            rows = list(session.scalars(select(WaitingExpense).where(
                WaitingExpense.firm_id == self.firm_id, WaitingExpense.resolved_at.is_(None),
                WaitingExpense.resolution.is_(None),
                WaitingExpense.reason == WaitReason.NO_MATTER.value,
                WaitingExpense.contact_id.is_not(None))))
        run_id = state.summary.run_id
        for row in rows:
            entry = PlannedEntry.from_json(row.entry)
            if (run_id is not None and row.run_id == run_id) or \
                    _key_tuple(entry.key) in state.asked_before or self.stopping.is_set():
                continue
            assert row.contact_id is not None
            contact = Contact(row.contact_id, row.customer_name, "", None)
            resolution = state.resolver.choose_matter(entry, contact, "stored")
            if resolution.resolved or resolution.reason != WaitReason.NO_MATTER:
                self._settle(state, entry, resolution, dry_run=False)  # several now: ask
        self._flush_writes(state)

    # -- reading ----------------------------------------------------------------------------

    def _watermark(self, stream: str = WATERMARK_STREAM) -> tuple[str | None, date | None]:
        """The stored watermark and the start date it was read with."""
        with self.sessions() as session:
            mark = session.scalars(select(Watermark).where(
                Watermark.firm_id == self.firm_id,
                Watermark.stream == stream)).one_or_none()
            return (mark.value, mark.start_date) if mark else (None, None)

    def _rules(self, state: _RunState, purchases: list[dict[str, Any]]) -> ImportRules:
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
                           ask_without_customer=settings.no_customer != "skip")

    # -- resolving and writing -------------------------------------------------------------

    def _resolve_and_write(self, state: _RunState, entries: list[PlannedEntry],
                           dry_run: bool) -> None:
        untagged = [e for e in entries if e.key.customer_id == NO_CUSTOMER]
        if untagged:
            # No customer, so no contact to match: a person picks among all the firm's matters.
            entries = [e for e in entries if e.key.customer_id != NO_CUSTOMER]
            state.to_write += len(untagged)
            for entry in untagged:
                self._wait(state, entry, Resolution(reason=WaitReason.NO_CUSTOMER), dry_run)
                state.handled += 1
            state.asked_untagged = True
        if not entries:
            return
        resolver = state.resolver
        resolver.prepare(entries)
        unsure = [e for e in entries if resolver.needs_customer_info(e)]
        if unsure:
            resolver.customer_info = self._customer_info({e.key.customer_id for e in unsure})
        resolutions = [(entry, resolver.resolve_contact(entry.key.customer_id,
                                                        entry.customer_name))
                       for entry in entries]
        resolver.prefetch_matters({r.contact.id for _, r in resolutions if r.contact})
        state.to_write += len(resolutions)
        for entry, found in resolutions:
            if self.stopping.is_set():
                # Between two entries: every write so far is complete and recorded (the
                # batch's unsent ones are dropped), and the watermark is not moved past this
                # page, so the next run carries on from here.
                self._flush_writes(state)
                raise RunStopped.by(self.stopping)
            resolution = found if found.contact is None else resolver.choose_matter(
                entry, found.contact, found.contact_source)
            queued = len(state.batch)
            self._settle(state, entry, resolution, dry_run)
            if len(state.batch) == queued:  # asked, failed or moved: done already
                state.handled += 1
                self._progress(state, "writing")
            elif len(state.batch) >= WRITE_BATCH:
                self._flush_writes(state)
        self._flush_writes(state)

    def _settle(self, state: _RunState, entry: PlannedEntry, resolution: Resolution,
                dry_run: bool) -> None:
        """Write the entry where its matter is known, or where a matter rule sends it;
        otherwise ask (with a note when a rule's matter has closed)."""
        if resolution.resolved:
            self._write_entry(state, entry, resolution, dry_run)
            return
        note = None
        if resolution.reason == WaitReason.SEVERAL_MATTERS and resolution.contact is not None:
            rule = self._rule_for(state, resolution.contact.id, entry)
            if rule is not None:
                matter = next((m for m in state.resolver.matters_of(resolution.contact.id)
                               if m.id == rule.matter_id), None)
                if matter is not None:
                    self._write_entry(state, entry, Resolution(
                        contact=resolution.contact, matter=matter,
                        contact_source=resolution.contact_source), dry_run, rule=rule)
                    return
                note = (f"The rule {matter_rules.describe(rule)} sends these to "
                        f"{rule.matter_label}, which is no longer open or pending in Clio, "
                        "so this one is asked.")
        self._wait(state, entry, resolution, dry_run, note=note)

    def _rule_for(self, state: _RunState, contact_id: int,
                  entry: PlannedEntry) -> MatterRule | None:
        if entry.payee is None:
            return None
        if state.rules is None:
            with self.sessions() as session:
                state.rules = matter_rules.active(session, self.firm_id)
        return matter_rules.matching(state.rules, contact_id, entry)

    def _customer_info(self, customer_ids: set[str]) -> dict[str, CustomerInfo]:
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

    def _write_entry(self, state: _RunState, entry: PlannedEntry, resolution: Resolution,
                     dry_run: bool, *, rule: MatterRule | None = None) -> None:
        """``rule``: the matter rule that chose the matter (named in the run's details and
        the audit trail, and counted as used)."""
        assert resolution.matter is not None
        matter = resolution.matter
        summary = state.summary
        label = matter_label(matter.display_number, matter.description)
        rule_name = matter_rules.describe(rule) if rule is not None else None
        rule_by = rule.created_by if rule is not None else None
        if dry_run:
            summary.imported += 1
            summary.imported_bills += is_bill(entry.key.purchase_id)
            summary.by_rule += rule is not None
            summary.imported_total += entry.amount
            keep(summary.imported_entries, ImportedEntry(
                entry.marker, entry.amount, entry.date, entry.customer_name, label, None,
                rule_name, rule_by))
            return
        if state.clio_blocked is not None:
            self._record_write_failure(state, entry, state.clio_blocked)
            return
        if self._moved(state, entry, resolution, label):
            return
        state.batch.append(_Queued(entry, matter.id, label, rule))

    # -- batched writes (a run's entries) ---------------------------------------------------

    def _flush_writes(self, state: _RunState) -> None:
        """Write the queued entries exactly once, as a batch (see docs/design.md):

        1. one INSERT of every entry's ``pending`` link, committed before any POST;
        2. the POSTs, one by one (healing as ``write`` does); between two of them a shutdown
           stops the batch;
        3. one transaction records the results: links ``created``, audit rows, waiting rows
           settled, rules' uses, and the links of entries never sent (or refused) dropped.

        A crash between 1 and 3 leaves ``pending`` links: the next run looks each up in Clio
        by its marker and records it, or drops it and posts the entry again."""
        queued, state.batch = state.batch, []
        if not queued:
            return
        summary = state.summary
        link_ids = self._insert_pending_batch(queued, summary.run_id)
        posted: list[tuple[_Queued, int, Activity]] = []
        dropped: list[int] = []
        stopped = False
        try:
            for n, item in enumerate(queued):
                entry = item.entry
                link_id = link_ids.get(_key_tuple(entry.key))
                if link_id is None:
                    summary.unchanged += 1  # another run or a person recorded it first
                    state.handled += 1
                    continue
                if self.stopping.is_set():
                    # Never sent: nothing can be in Clio, so the links simply go.
                    dropped += [i for q in queued[n:]
                                if (i := link_ids.get(_key_tuple(q.entry.key))) is not None]
                    stopped = True
                    break
                if state.clio_blocked is not None:
                    dropped.append(link_id)
                    self._record_write_failure(state, entry, state.clio_blocked)
                    state.handled += 1
                    continue
                try:
                    activity = self._post_healing(state, entry, item.matter_id)
                except ApiError as exc:
                    if not (isinstance(exc, ServiceDown) and exc.ambiguous):
                        dropped.append(link_id)  # nothing was created: start afresh later
                    self._record_write_failure(state, entry, exc)
                    _count_clio_failure(state, exc)
                    state.handled += 1
                    self._progress(state, "writing")
                    continue
                ENTRIES.labels("created").inc()
                state.consecutive_transient = 0
                posted.append((item, link_id, activity))
                state.posting = len(posted)
                self._progress(state, "writing")
        finally:
            state.posting = 0
            self._record_results(state, posted, dropped)
        for item, _, activity in posted:
            entry, rule = item.entry, item.rule
            summary.imported += 1
            summary.imported_bills += is_bill(entry.key.purchase_id)
            summary.by_rule += rule is not None
            summary.imported_total += entry.amount
            keep(summary.imported_entries, ImportedEntry(
                entry.marker, entry.amount, entry.date, entry.customer_name, item.label,
                activity.id, matter_rules.describe(rule) if rule is not None else None,
                rule.created_by if rule is not None else None))
            state.raised.add((entry.key.purchase_id, entry.key.customer_id, entry.key.line_id,
                              "*"))
            state.handled += 1
        self._progress(state, "writing")
        if stopped:  # the rest of the page was not written: the watermark must not pass it
            raise RunStopped.by(self.stopping)

    def _insert_pending_batch(self, queued: list[_Queued],
                              run_id: int | None) -> dict[tuple[str, str, str, str], int]:
        """The batch's ``pending`` links in one INSERT, committed; key → link id. A key whose
        link exists already is not inserted: one an edit made obsolete (revivable) is taken
        back as ``write`` does, any other is left out (written already)."""
        now = self.clock()
        rows = [dict(firm_id=self.firm_id, realm_id=q.entry.key.realm_id,
                     purchase_id=q.entry.key.purchase_id, customer_id=q.entry.key.customer_id,
                     line_id=q.entry.key.line_id, state=LinkState.PENDING,
                     marker=q.entry.key.marker, sync_token=q.entry.sync_token,
                     amount=q.entry.amount, txn_date=q.entry.date, clio_matter_id=q.matter_id,
                     run_id=run_id, created_at=now, updated_at=now) for q in queued]
        ids: dict[tuple[str, str, str, str], int] = {}
        with self.sessions() as session:
            dialect = session.get_bind().dialect.name
            insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
            # One statement whatever the batch's size (the rows go as parameters, sent as
            # one multi-row VALUES), so the compiled-statement cache holds one, not one per
            # batch size.
            statement = insert(EntryLink).on_conflict_do_nothing().returning(
                EntryLink.id, EntryLink.realm_id, EntryLink.purchase_id,
                EntryLink.customer_id, EntryLink.line_id)
            for link_id, realm_id, purchase_id, customer_id, line_id in session.execute(
                    statement, rows):
                ids[(realm_id, purchase_id, customer_id, line_id)] = link_id
            session.commit()
        for q in queued:  # rare: a key with a link already (an obsolete entry called again)
            if _key_tuple(q.entry.key) not in ids:
                revived = self._insert_pending(q.entry, q.matter_id, run_id)
                if revived is not None:
                    ids[_key_tuple(q.entry.key)] = revived
        return ids

    def _record_results(self, state: _RunState, posted: list[tuple[_Queued, int, Activity]],
                        dropped: list[int]) -> None:
        """One transaction for a batch's outcome (see ``_flush_writes``)."""
        if not posted and not dropped:
            return
        now = self.clock()
        with self.sessions() as session:
            if posted:
                session.execute(update(EntryLink), [
                    {"id": link_id, "state": LinkState.CREATED,
                     "clio_activity_id": activity.id, "clio_etag": activity.etag,
                     "written": activity.written_fields(), "updated_at": now}
                    for _, link_id, activity in posted])
                by_key = {_key_tuple(item.entry.key): (item, activity)
                          for item, _, activity in posted}
                waiting = session.execute(select(
                    WaitingExpense.id, WaitingExpense.realm_id, WaitingExpense.purchase_id,
                    WaitingExpense.customer_id, WaitingExpense.line_id).where(
                    WaitingExpense.firm_id == self.firm_id, WaitingExpense.resolved_at.is_(None),
                    WaitingExpense.purchase_id.in_(
                        sorted({key[1] for key in by_key})))).all()
                settled = [{"id": row_id, "resolved_at": now, "resolution": "imported",
                            "resolved_by": None, "clio_activity_id": found[1].id,
                            "clio_matter_id": found[0].matter_id}
                           for row_id, *key in waiting
                           if (found := by_key.get(tuple(key))) is not None]  # type: ignore[arg-type]
                if settled:
                    session.execute(update(WaitingExpense), settled)
                uses: dict[int, int] = {}
                trail: list[dict[str, Any]] = []
                for item, _, activity in posted:
                    entry, rule = item.entry, item.rule
                    trail.append(audit.values(
                        self.firm_id, Action.IMPORTED, state.actor,
                        **_audit_key(entry), amount=entry.amount,
                        clio_activity_id=activity.id, clio_matter_id=item.matter_id,
                        matter=item.label or activity.matter_number,
                        after={"amount": entry.amount, "date": entry.date,
                               "reference": entry.reference},
                        detail=None if rule is None else
                        f"Matter chosen by the rule {matter_rules.describe(rule)}, made by "
                        f"{rule.created_by}.",
                        run_id=state.summary.run_id, at=now))
                    if rule is not None:
                        uses[rule.id] = uses.get(rule.id, 0) + 1
                if trail:  # one multi-row INSERT for the batch (no ids needed back)
                    session.execute(insert(AuditEntry).values(trail))
                for rule_id, times in uses.items():
                    matter_rules.mark_used(session, rule_id, now, times=times)
            if dropped:
                session.execute(delete(EntryLink).where(EntryLink.firm_id == self.firm_id,
                                                        EntryLink.id.in_(dropped)))
            session.commit()

    def write(self, state: _RunState, entry: PlannedEntry, matter_id: int, *,
              resolution: str, resolved_by: str | None = None,
              matter: str | None = None, rule: MatterRule | None = None) -> Activity:
        """Write one entry exactly once: pending link, POST, record; settle its wait if any.

        Raises :class:`AlreadyImported` when the link exists, and the client's ``ApiError``
        when Clio did not take it (the link is dropped unless the POST may have happened).
        ``matter`` is the matter's label for the audit trail; ``rule`` the matter rule that
        chose it (its use is counted with the entry's record).
        """
        link_id = self._insert_pending(entry, matter_id, state.summary.run_id)
        if link_id is None:
            raise AlreadyImported(entry.marker)
        try:
            activity = self._post_healing(state, entry, matter_id)
        except ApiError as exc:
            if not (isinstance(exc, ServiceDown) and exc.ambiguous):
                self._drop_link(link_id)  # nothing was created: let a later try start afresh
            raise
        ENTRIES.labels("created").inc()
        now = self.clock()
        with self.sessions() as session:
            link = session.get(EntryLink, link_id)
            assert link is not None
            link.state = LinkState.CREATED
            link.clio_activity_id = activity.id
            link.clio_etag = activity.etag
            link.written = activity.written_fields()
            link.updated_at = now
            session.execute(update(WaitingExpense).where(
                *_waiting_key(self.firm_id, entry.key), WaitingExpense.resolved_at.is_(None)
            ).values(resolved_at=now, resolution=resolution, resolved_by=resolved_by,
                     clio_activity_id=activity.id, clio_matter_id=matter_id))
            chosen = resolution == "linked" and resolved_by is not None
            audit.record(
                session, self.firm_id, Action.CHOSEN if chosen else Action.IMPORTED,
                resolved_by if chosen else state.actor, **_audit_key(entry),
                amount=entry.amount, clio_activity_id=activity.id, clio_matter_id=matter_id,
                matter=matter or activity.matter_number,
                after={"amount": entry.amount, "date": entry.date,
                       "reference": entry.reference},
                detail=None if rule is None else
                f"Matter chosen by the rule {matter_rules.describe(rule)}, made by "
                f"{rule.created_by}.",
                run_id=state.summary.run_id, at=now)
            if rule is not None:
                matter_rules.mark_used(session, rule.id, now)
            session.commit()
        return activity

    def _post_healing(self, state: _RunState, entry: PlannedEntry, matter_id: int) -> Activity:
        """POST the entry; heal a fault within the run (``HEAL_TRIES``): after a wait, an
        entry whose POST may have happened is looked up by its marker and only posted again
        when it is not in Clio (after a POST that got no answer at all, only once as long again
        as the client waits for one has passed: Clio may apply it late). A look-up that fails
        is a failed try too: the next try looks again before it posts. Raises the last error
        when the tries run out (an ambiguous one, while a POST may have happened and no
        look-up said otherwise, keeps the pending link for the next run to settle)."""
        attempt = 0
        unsure: ServiceDown | None = None  # a POST that may have reached Clio: look first
        while True:
            attempt += 1
            try:
                if unsure is not None:
                    found = self.clio.find_by_marker(entry.marker)
                    if found:
                        log.info("%s: the POST had reached Clio (entry %s)", entry.marker,
                                 found[0].id)
                        return found[0]
                    unsure = None
                return self._post(state, entry, matter_id)
            except TransientError as exc:
                if isinstance(exc, ServiceDown) and exc.ambiguous:
                    unsure = exc
                if attempt >= HEAL_TRIES or self.stopping.is_set():
                    raise (unsure or exc) from None
                log.info("%s: Clio failed (%s); trying again within the run", entry.marker,
                         exc)
                self.clio.pause(attempt)
                if isinstance(exc, ServiceDown) and exc.ambiguous and exc.unanswered:
                    # No answer: Clio may still apply the POST; look only once it would have.
                    self.clio.wait_out_late_write()
            except ApiError:
                if unsure is not None:
                    raise unsure from None  # still unknown: the pending link stays
                raise

    def writer_state(self, trigger: str) -> _RunState:
        """What ``write`` needs outside a run (a person's choice in Slack)."""
        with self.sessions() as session:
            firm = session.get(Firm, self.firm_id)
            settings = session.get(FirmSettings, self.firm_id)
            if firm is None or settings is None:
                raise FirmNotReady(f"There is no firm {self.firm_id}.")
            stored = self._stored_contacts(session)
        summary = RunSummary(self.firm_id, None, False, self.clock())
        return _RunState(firm, settings, summary, MatterResolver(self.clio, stored),
                         settings.clio_entry_type or "HardCostEntry", actor=trigger)

    def _stored_contacts(self, session: Session) -> dict[tuple[str, str], int]:
        return {(link.qbo_type, link.qbo_id): link.clio_contact_id
                for link in session.scalars(select(ContactLink).where(
                    ContactLink.firm_id == self.firm_id))}

    def _post(self, state: _RunState, entry: PlannedEntry, matter_id: int) -> Activity:
        resolver = state.resolver
        kwargs = dict(on=entry.date, price=entry.amount, matter_id=matter_id,
                      note=entry.note, reference=entry.reference,
                      user_id=resolver.user_for(entry, state.settings.clio_user_id),
                      vendor_id=resolver.vendor_for(entry))
        category = state.settings.expense_category_id
        try:
            return self.clio.create_entry(
                entry_type=state.entry_type,
                expense_category_id=category if state.entry_type == "HardCostEntry" else None,
                **kwargs)  # type: ignore[arg-type]
        except HardCostsDisabled:
            if state.entry_type != "HardCostEntry":
                raise
            # Fall back to an expense entry when the firm has not enabled hard costs
            # (docs/purchases.md, "The Clio entry").
            log.warning("hard costs are off in Clio for firm %s; using ExpenseEntry",
                        self.firm_id)
            state.entry_type = "ExpenseEntry"
            with self.sessions() as session:
                settings = session.get(FirmSettings, self.firm_id)
                if settings is not None:
                    settings.clio_entry_type = "ExpenseEntry"
                    session.commit()
            return self.clio.create_entry(entry_type="ExpenseEntry", expense_category_id=None,
                                          **kwargs)  # type: ignore[arg-type]

    def _insert_pending(self, entry: PlannedEntry, matter_id: int,
                        run_id: int | None) -> int | None:
        key = entry.key
        with self.sessions() as session:
            link = EntryLink(firm_id=self.firm_id, realm_id=key.realm_id,
                             purchase_id=key.purchase_id, customer_id=key.customer_id,
                             line_id=key.line_id, state=LinkState.PENDING, marker=key.marker,
                             sync_token=entry.sync_token, amount=entry.amount,
                             txn_date=entry.date, clio_matter_id=matter_id, run_id=run_id,
                             created_at=self.clock(), updated_at=self.clock())
            session.add(link)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
            else:
                return link.id
            # The key's entry was removed from Clio because an edit made it obsolete, and the
            # purchase calls for it again: the row is taken back (once: compare and set).
            revived = session.execute(update(EntryLink).where(
                EntryLink.firm_id == self.firm_id, EntryLink.realm_id == key.realm_id,
                EntryLink.purchase_id == key.purchase_id,
                EntryLink.customer_id == key.customer_id, EntryLink.line_id == key.line_id,
                EntryLink.state == LinkState.DELETED, EntryLink.superseded_at.is_not(None),
            ).values(state=LinkState.PENDING, sync_token=entry.sync_token, amount=entry.amount,
                     txn_date=entry.date, clio_matter_id=matter_id, clio_activity_id=None,
                     clio_etag=None, written=None, run_id=run_id, superseded_at=None,
                     removed_at=None, removal_note=None, updated_at=self.clock()))
            session.commit()
            if revived.rowcount != 1:  # type: ignore[attr-defined]
                return None
            return session.scalars(select(EntryLink.id).where(
                EntryLink.firm_id == self.firm_id, EntryLink.realm_id == key.realm_id,
                EntryLink.purchase_id == key.purchase_id,
                EntryLink.customer_id == key.customer_id,
                EntryLink.line_id == key.line_id)).one()

    def _drop_link(self, link_id: int) -> None:
        with self.sessions() as session:
            session.execute(delete(EntryLink).where(EntryLink.id == link_id,
                                                    EntryLink.firm_id == self.firm_id))
            session.commit()

    def _wait(self, state: _RunState, entry: PlannedEntry, resolution: Resolution,
              dry_run: bool, *, note: str | None = None) -> None:
        """Record the question; a matter question carries the suggestion the firm's history
        supports (its matter first among the candidates) and ``note`` (why a rule did not
        apply)."""
        assert resolution.reason is not None
        summary = state.summary
        state.raised.add((entry.key.purchase_id, entry.key.customer_id, entry.key.line_id, "*"))
        with self.sessions() as session:
            row = session.scalars(select(WaitingExpense).where(
                *_waiting_key(self.firm_id, entry.key))).one_or_none()
            if row is not None and _answered_for_good(row, entry):
                summary.unchanged += 1
                return
            candidates, suggestion = list(resolution.candidates), None
            if resolution.reason == WaitReason.SEVERAL_MATTERS:
                candidates, suggestion = suggestions.suggest(
                    session, self.firm_id, entry,
                    resolution.contact.id if resolution.contact else None, candidates)
            hints = {**(suggestion.to_json() if suggestion else {}),
                     **({"note": note} if note else {})} or None
            # The same matters in another order (a new suggestion) are the same question.
            new = row is None or row.resolved_at is not None or \
                row.reason != resolution.reason.value or \
                _choice_ids(row.candidates) != _choice_ids(candidates)
            if new:
                summary.waiting += 1
                summary.waiting_for_payment += resolution.reason == WaitReason.PAYMENT
            else:
                summary.still_waiting += 1
            if resolution.reason == WaitReason.NO_CUSTOMER:
                summary.untagged_waiting += 1
            keep(summary.waiting_items, WaitingItem(
                entry.marker, entry.amount, entry.date, entry.customer_name,
                resolution.reason.value, len(resolution.candidates), new))
            if dry_run:
                return
            if row is None:
                row = WaitingExpense(firm_id=self.firm_id, realm_id=entry.key.realm_id,
                                     purchase_id=entry.key.purchase_id,
                                     customer_id=entry.key.customer_id,
                                     line_id=entry.key.line_id)
                session.add(row)
            shown_before = _shown(row)
            row.reason = resolution.reason.value
            row.contact_id = resolution.contact.id if resolution.contact else None
            row.candidates = candidates
            row.suggestion = hints
            row.entry = entry.to_json()
            row.amount = entry.amount
            row.txn_date = entry.date
            row.customer_name = entry.customer_name
            row.run_id = summary.run_id
            row.resolved_at = None
            row.resolution = None
            row.resolved_by = None
            if new:
                row.slack_ts = row.slack_channel = None  # a new question: a new prompt
                row.created_at = self.clock()
                row.reminded_at = None
                row.prompt_stale = False
            elif row.slack_ts is not None and shown_before != _shown(row):
                row.prompt_stale = True  # edited in QuickBooks: the prompt follows in place
            try:
                session.commit()
            except IntegrityError:  # another process recorded the same wait a moment ago
                session.rollback()

    def _removals(self, state: _RunState) -> Removals:
        def record(failure: LineFailure, kind: FailureKind, detail: str) -> None:
            self._record_failure(state, failure, kind, False, detail=detail)

        return Removals(self.sessions, self.firm_id, state.firm.qbo_realm_id or "", self.qbo,
                        self.clio, state.summary, state.settings.deletions, record, self.clock,
                        self.stopping, state.actor, bills=_bills_on(state))

    # -- recovery ---------------------------------------------------------------------------

    def _recover_pending(self, state: _RunState) -> set[str]:
        """Settle links left ``pending`` by a run that stopped between POST and record.

        Found in Clio by marker → recorded as created. Not found → dropped, and the purchase
        is read again this run so it is posted once.

        A link is orphaned, and settled at once, when the run that wrote it is over (``ok``,
        ``failed``, or ``abandoned``: its process died, found by whoever took the firm's run
        lock next or by ``hardcost serve`` starting). Only a write no finished run accounts
        for may still be in flight in a live process: a person's choice (no run id) or a run
        still marked ``running``; those are left alone for ``PENDING_GRACE``. An orphaned link
        written less than ``LATE_WRITE`` ago and not in Clio is looked up again once it is
        that old: the dead process's POST may still land.
        """
        now = self.clock()
        settled_before = now - PENDING_GRACE
        with self.sessions() as session:
            over = select(Run.id).where(Run.firm_id == self.firm_id, Run.status != "running",
                                        Run.id != state.summary.run_id)
            pending = list(session.scalars(select(EntryLink).where(
                EntryLink.firm_id == self.firm_id, EntryLink.state == LinkState.PENDING,
                or_(EntryLink.updated_at < settled_before, EntryLink.run_id.in_(over)))))
        refetch: set[str] = set()
        young: list[EntryLink] = []
        for link in pending:
            found = self.clio.find_by_marker(link.marker)
            if not found and link.updated_at > now - self.late_write:
                young.append(link)  # written moments ago by a process that is gone
                continue
            self._settle_pending(link, found, refetch)
        if young:
            wait = (max(link.updated_at for link in young) + self.late_write - now).total_seconds()
            log.info("firm %s: %d entries a stopped run may still have written: looked up "
                     "again in %.0f s", self.firm_id, len(young), wait)
            if self.stopping.wait(min(max(wait, 0.0), self.late_write.total_seconds())):
                return refetch  # stopped: they stay pending for the next run
            for link in young:
                self._settle_pending(link, self.clio.find_by_marker(link.marker), refetch)
        return refetch

    def _settle_pending(self, link: EntryLink, found: list[Activity],
                        refetch: set[str]) -> None:
        """A pending link found in Clio is recorded as created; one not found is dropped and
        its purchase read again (``refetch``)."""
        with self.sessions() as session:
            row = session.get(EntryLink, link.id)
            if row is None or row.state != LinkState.PENDING:
                return
            if found:
                row.state = LinkState.CREATED
                row.clio_activity_id = found[0].id
                row.clio_etag = found[0].etag
                log.info("recovered %s as Clio activity %s", link.marker, found[0].id)
                if len(found) > 1:
                    log.error("%s is in Clio %d times (ids %s)", link.marker, len(found),
                              [a.id for a in found])
            else:
                session.delete(row)
                refetch.add(link.purchase_id)
            session.commit()

    def _purchases_to_retry(self) -> set[str]:
        """Purchases whose last failure was ours or a service's, not their data."""
        with self.sessions() as session:
            rows = session.scalars(select(Failure.purchase_id).where(
                Failure.firm_id == self.firm_id, Failure.resolved_at.is_(None),
                Failure.kind.in_([FailureKind.TRANSIENT.value, FailureKind.CONFIG.value]),
                Failure.purchase_id != "?"))
            return set(rows)

    # -- recording --------------------------------------------------------------------------

    def _known(self, realm_id: str, purchase_ids: list[str]) -> dict[
            str, tuple[list[EntryLink], list[WaitingExpense]]]:
        """The links and open waiting expenses of these purchases, by purchase id."""
        found: dict[str, tuple[list[EntryLink], list[WaitingExpense]]] = {}
        with self.sessions() as session:
            for chunk in chunks(sorted(set(purchase_ids)), 500):
                for link in session.scalars(select(EntryLink).where(
                        EntryLink.firm_id == self.firm_id, EntryLink.realm_id == realm_id,
                        EntryLink.purchase_id.in_(chunk))):
                    found.setdefault(link.purchase_id, ([], []))[0].append(link)
                for row in session.scalars(select(WaitingExpense).where(
                        WaitingExpense.firm_id == self.firm_id,
                        WaitingExpense.realm_id == realm_id,
                        WaitingExpense.resolved_at.is_(None),
                        WaitingExpense.resolution.is_(None),
                        WaitingExpense.purchase_id.in_(chunk))):
                    found.setdefault(row.purchase_id, ([], []))[1].append(row)
        return found

    def _no_longer_awaiting_payment(self, state: _RunState) -> set[str]:
        """Bills waiting for payment when the firm now imports Bills on entry: read again."""
        if state.settings.bills != ON_ENTRY:
            return set()
        with self.sessions() as session:
            return set(session.scalars(select(WaitingExpense.purchase_id).where(
                WaitingExpense.firm_id == self.firm_id, WaitingExpense.resolved_at.is_(None),
                WaitingExpense.reason == WaitReason.PAYMENT.value)))

    def _superseded(self) -> set[str]:
        """Purchases with an entry a change made obsolete that is not removed yet (a run
        stopped between the two): read again, so their new entries are written too."""
        with self.sessions() as session:
            return set(session.scalars(select(EntryLink.purchase_id).where(
                EntryLink.firm_id == self.firm_id, EntryLink.superseded_at.is_not(None),
                EntryLink.removed_at.is_(None))))

    def _record_write_failure(self, state: _RunState, entry: PlannedEntry,
                              exc: ApiError) -> None:
        message = f"{_entry_label(entry)} could not be written to Clio: {exc.message}"
        failure = LineFailure(entry.key.purchase_id, f"clio_{exc.code or exc.status or 'error'}"
                              .lower()[:60], message, entry.key.customer_id, entry.key.line_id)
        self._record_failure(state, failure, exc.kind, False, detail=str(exc))

    def _record_failure(self, state: _RunState, failure: LineFailure, kind: FailureKind,
                        dry_run: bool, detail: str | None = None) -> None:
        summary = state.summary
        url = transaction_url(failure.purchase_id, sandbox=self.sandbox_links) \
            if failure.purchase_id != "?" else None
        state.raised.add((failure.purchase_id, failure.customer_id, failure.line_id,
                          failure.code))
        now = self.clock()
        with self.sessions() as session:
            row = session.scalars(select(Failure).where(
                Failure.firm_id == self.firm_id, Failure.resolved_at.is_(None),
                Failure.purchase_id == failure.purchase_id,
                Failure.customer_id == failure.customer_id,
                Failure.line_id == failure.line_id, Failure.code == failure.code)).first()
            if row is None:
                summary.failed += 1
                if not dry_run:
                    FAILURES.labels(kind.value).inc()
            else:
                summary.still_failing += 1
            keep(summary.failures, FailureItem(failure.purchase_id, kind.value,
                                                failure.message, url, row is None))
            if dry_run:
                return
            if row is None:
                row = Failure(firm_id=self.firm_id, realm_id=state.firm.qbo_realm_id or "",
                              purchase_id=failure.purchase_id,
                              customer_id=failure.customer_id, line_id=failure.line_id,
                              code=failure.code, first_run_id=summary.run_id, first_seen=now,
                              occurrences=0)
                session.add(row)
            row.kind = kind.value
            row.message = failure.message
            row.detail = detail
            row.occurrences += 1
            row.last_run_id = summary.run_id
            row.last_seen = now
            session.commit()

    def _close_settled_failures(self, state: _RunState, purchase_ids: list[str]) -> None:
        """Open failures of purchases read this run that did not recur are resolved."""
        if not purchase_ids:
            return
        now = self.clock()
        with self.sessions() as session:
            for chunk in chunks(sorted(set(purchase_ids)), 500):
                rows = session.scalars(select(Failure).where(
                    Failure.firm_id == self.firm_id, Failure.resolved_at.is_(None),
                    Failure.purchase_id.in_(chunk)))
                for row in rows:
                    if (row.purchase_id, row.customer_id, row.line_id, row.code) in state.raised:
                        continue
                    row.resolved_at = now
            session.commit()

    def _remember_contacts(self, state: _RunState) -> None:
        """The run's automatic contact matches, in one statement (a link another process
        stored meanwhile is kept)."""
        links = state.resolver.new_links
        if not links:
            return
        with self.sessions() as session:
            dialect = session.get_bind().dialect.name
            insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
            session.execute(insert(ContactLink).values([
                dict(firm_id=self.firm_id, qbo_type=qbo_type, qbo_id=qbo_id,
                     clio_contact_id=contact_id, source="auto", created_at=self.clock())
                for (qbo_type, qbo_id), contact_id in links.items()]).on_conflict_do_nothing())
            session.commit()

    def _save_watermark(self, value: str, start_date: date | None, *,
                        stream: str = WATERMARK_STREAM) -> None:
        with self.sessions() as session:
            mark = session.scalars(select(Watermark).where(
                Watermark.firm_id == self.firm_id,
                Watermark.stream == stream)).one_or_none()
            if mark is None:
                mark = Watermark(firm_id=self.firm_id, stream=stream, value=value)
                session.add(mark)
            mark.value = value
            mark.start_date = start_date
            session.commit()

    def _finish_run(self, summary: RunSummary, state: _RunState | None) -> None:
        with self.sessions() as session:
            run = session.get(Run, summary.run_id)
            if run is None:
                return
            run.finished_at = self.clock()
            run.status = "stopped" if summary.stopped_by_hand else \
                "failed" if summary.error else "ok"
            run.error = summary.error
            run.imported = summary.imported
            run.imported_total = summary.imported_total
            run.waiting = summary.waiting
            run.failed = summary.failed
            run.skipped = summary.skipped
            run.purchases_read = summary.purchases_read
            run.details = summary.details()
            run.quiet = not summary.did_something  # housekeeping prunes old quiet runs
            session.commit()


# -- helpers ----------------------------------------------------------------------------------

def _collect(by_id: dict[str, dict[str, Any]], unkeyed: list[dict[str, Any]],
             purchases: Iterable[Any]) -> None:
    for purchase in purchases:
        if isinstance(purchase, dict) and purchase.get("Id") is not None:
            by_id[str(purchase["Id"])] = purchase
        else:
            unkeyed.append(purchase if isinstance(purchase, dict) else {"Id": None})


def _entries_expected(state: _RunState) -> int | None:
    """The entries this run will write or ask about: known once its one page is planned; for
    a run of several pages, what is planned so far and the rest at the same entries per
    purchase (None until a page has been planned)."""
    expected, read = state.purchases_expected, state.summary.purchases_read
    if expected is None:
        return state.to_write
    if read <= 0:
        return None
    left = max(0, expected - read)
    return state.to_write + round(left * state.to_write / read)


def _plan_safely(purchase: dict[str, Any], realm_id: str, rules: ImportRules) -> PurchasePlan:
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


def _lagged(server_time: str | None, now: datetime) -> str:
    """The next watermark: QuickBooks' own clock at the first answer, less a margin."""
    return ((instant(server_time) or now) - WATERMARK_MARGIN).isoformat(timespec="seconds")


def _check_ready(firm: Firm, settings: FirmSettings, broken: dict[str, str | None]) -> None:
    missing = []
    if not firm.active:
        raise FirmNotReady("hardcost was removed from this firm's Slack workspace.")
    if not firm.qbo_realm_id:
        missing.append("connect QuickBooks (/hardcost connect quickbooks)")
    for provider, reason in broken.items():
        name = PROVIDER_NAMES.get(provider, provider)
        missing.append(f"reconnect {name}, which refused hardcost's connection ({reason}): "
                       f"/hardcost connect {provider}")
    if not settings.import_account_ids:
        missing.append("choose the import account (/hardcost set account <name>)")
    if not settings.start_date:
        missing.append("choose the start date (/hardcost set start-date YYYY-MM-DD)")
    if missing:
        raise FirmNotReady("Nothing was imported: first " + "; ".join(missing) + ".")


def _key_tuple(key: QboKey) -> tuple[str, str, str, str]:
    return (key.realm_id, key.purchase_id, key.customer_id, key.line_id)


def _answered_for_good(row: WaitingExpense, entry: PlannedEntry) -> bool:
    """Not a question any more: a person is answering it now; it went into Clio (a person's
    choice or a later run, possibly since this run read its links); or someone said "not a
    client cost" and the purchase is as it was then (an edit in QuickBooks asks again); or a
    person is undoing a choice (``sync.undo``), which reopens it when done."""
    if row.resolution in ("claimed", "linked", "imported", "undoing"):
        return True
    return row.resolution == "not_client_cost" and \
        row.entry.get("sync_token") == entry.sync_token


def _waiting_key(firm_id: int, key: QboKey) -> list[Any]:
    return [WaitingExpense.firm_id == firm_id, WaitingExpense.realm_id == key.realm_id,
            WaitingExpense.purchase_id == key.purchase_id,
            WaitingExpense.customer_id == key.customer_id,
            WaitingExpense.line_id == key.line_id]


def _bills_on(state: _RunState) -> bool:
    return (state.settings.bills or OFF) != OFF


def _entry_label(entry: PlannedEntry) -> str:
    if is_bill(entry.key.purchase_id):
        bill_id = bill_id_of(entry.key.purchase_id)
        what = f"Bill {entry.reference}" if entry.reference else f"Bill #{bill_id}"
        return f"{what} ({entry.amount} for {entry.customer_name}, {entry.date.isoformat()})"
    what = f"Check {entry.reference}" if entry.reference else f"Expense #{entry.key.purchase_id}"
    return f"{what} ({entry.amount} for {entry.customer_name}, {entry.date.isoformat()})"


def _email(customer: dict[str, Any] | None) -> str | None:
    if not customer:
        return None
    address = (customer.get("PrimaryEmailAddr") or {}).get("Address")
    return str(address) if address else None



def _audit_key(entry: PlannedEntry) -> dict[str, Any]:
    key = entry.key
    return {"realm_id": key.realm_id, "purchase_id": key.purchase_id,
            "customer_id": key.customer_id, "line_id": key.line_id,
            "client": entry.customer_name}


def _shown(row: WaitingExpense) -> tuple[Any, ...]:
    """What a prompt shows of its expense: a change means the prompt is updated."""
    entry = row.entry or {}
    return (row.amount, row.txn_date, row.customer_name, entry.get("memo"),
            entry.get("reference"), entry.get("payee"),
            [c.get("id") for c in row.candidates or []], row.suggestion)


def _choice_ids(candidates: list[dict[str, Any]] | None) -> list[tuple[Any, Any]]:
    return sorted((str(c.get("kind")), c.get("id")) for c in candidates or [])


def _edited(link: EntryLink, entry: PlannedEntry) -> bool:
    """The purchase changed in QuickBooks since this entry was written; or the entry was
    marked obsolete and the purchase calls for it again (still in Clio, or left there)."""
    if link.clio_activity_id is None:
        return False
    if link.state == LinkState.CREATED and link.removed_at is None:
        return link.sync_token != entry.sync_token or link.superseded_at is not None
    return link.state == LinkState.KEPT and link.superseded_at is not None


def _count_clio_failure(state: _RunState, exc: ApiError) -> None:
    """The circuit breaker: entries that failed every try, in a row, or a config failure,
    stop this run's writes to Clio (the rest are recorded as failures and retried)."""
    if isinstance(exc, TransientError):
        state.consecutive_transient += 1
        if state.consecutive_transient >= CIRCUIT_BREAK_AFTER:
            state.clio_blocked = exc
    elif isinstance(exc, ConfigError):
        state.clio_blocked = exc


def _revivable(link: EntryLink) -> bool:
    """An entry removed from Clio because an edit made it obsolete, called for again."""
    return link.state == LinkState.DELETED and link.superseded_at is not None


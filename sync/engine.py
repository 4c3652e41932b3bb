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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from hardcost.sync.clio import Activity, ClioClient, Contact, HardCostsDisabled
from hardcost.sync.http import (
    ApiError,
    ConfigError,
    NotFound,
    ReconnectRequired,
    RequestRejected,
    ServiceDown,
    TransientError,
)
from hardcost.sync.matching import CustomerInfo, MatterResolver, Resolution
from hardcost.sync.qbo import QboClient, instant, transaction_url
from hardcost.sync.rules import (
    ImportRules,
    LineFailure,
    PlannedEntry,
    PurchasePlan,
    QboKey,
    is_voided,
    plan_purchase,
)
from hardcost.sync.store import (
    Connection,
    ContactLink,
    EntryLink,
    Failure,
    FailureKind,
    Firm,
    FirmSettings,
    LinkState,
    PurchaseRemoval,
    Run,
    WaitingExpense,
    WaitReason,
    Watermark,
    utcnow,
)
from hardcost.sync.tokens import mark_broken
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

WATERMARK_STREAM = "purchases"
REMOVALS_STREAM = "removals"  # the last CDC sweep for deleted and voided purchases
CDC_REACH = timedelta(days=30) - timedelta(hours=1)
"""How far back CDC answers (30 days), less a margin for the two clocks."""
PROVIDER_KEYS = {"QuickBooks": "quickbooks", "Clio": "clio"}
WATERMARK_MARGIN = timedelta(seconds=60)
PENDING_GRACE = timedelta(minutes=2)
"""A pending link younger than this may be another process's write in flight (a POST waits at
most 70 s for Clio): recovery leaves it alone."""
CIRCUIT_BREAK_AFTER = 3  # consecutive transient Clio failures before the rest wait for next run
DETAIL_LIMIT = 200


@dataclass(frozen=True)
class ImportedEntry:
    marker: str
    amount: Decimal
    date: date
    customer: str
    matter: str
    clio_id: int | None


@dataclass(frozen=True)
class WaitingItem:
    marker: str
    amount: Decimal
    date: date
    customer: str
    reason: str
    choices: int
    new: bool  # False: it was already waiting for the same choice before this run


@dataclass(frozen=True)
class FailureItem:
    purchase_id: str
    kind: str
    message: str
    url: str | None
    new: bool  # False: the same failure was already open before this run


@dataclass(frozen=True)
class RemovedItem:
    """A Clio entry whose purchase was deleted or voided in QuickBooks, and what was done."""

    marker: str
    purchase_id: str
    amount: Decimal
    date: date
    kind: str  # deleted | voided (what happened in QuickBooks)
    outcome: str  # deleted | already_gone | kept_billed | kept_alert
    clio_id: int | None
    matter: str | None
    note: str


@dataclass(frozen=True)
class ReconcileNote:
    """The run compared every imported purchase with QuickBooks instead of asking CDC."""

    reason: str  # offline | saturated | refused | first
    last_swept: str | None  # the previous sweep (QuickBooks time), None when never
    checked: int  # purchases compared
    removed: int  # found deleted or voided


@dataclass
class RunSummary:
    """What one run did, for the CLI now and the Slack summary later."""

    firm_id: int
    run_id: int | None
    dry_run: bool
    started_at: datetime
    imported: int = 0
    imported_total: Decimal = Decimal("0.00")
    waiting: int = 0  # newly waiting this run
    failed: int = 0  # new failures this run
    skipped: int = 0
    unchanged: int = 0  # already in Clio
    still_waiting: int = 0  # re-checked, still waiting for the same choice
    still_failing: int = 0  # the same open failure seen again
    purchases_read: int = 0
    deleted: int = 0  # Clio entries deleted because their purchase left QuickBooks
    kept: int = 0  # Clio entries left although their purchase left QuickBooks (billed, alert)
    duration_s: float = 0.0
    error: str | None = None
    imported_entries: list[ImportedEntry] = field(default_factory=list)
    waiting_items: list[WaitingItem] = field(default_factory=list)
    failures: list[FailureItem] = field(default_factory=list)
    skips: list[str] = field(default_factory=list)
    removed_items: list[RemovedItem] = field(default_factory=list)
    reconciled: ReconcileNote | None = None
    qbo_calls: int = 0
    clio_calls: int = 0

    @property
    def did_something(self) -> bool:
        return bool(self.imported or self.waiting or self.failed or self.error or
                    self.removed_items or (self.reconciled is not None and
                                           self.reconciled.reason != "first"))

    def details(self) -> dict[str, Any]:
        return {
            "imported": [
                {"marker": e.marker, "amount": str(e.amount), "date": e.date.isoformat(),
                 "customer": e.customer, "matter": e.matter, "clio_id": e.clio_id}
                for e in self.imported_entries[:DETAIL_LIMIT]],
            "skipped": self.skips[:DETAIL_LIMIT],
            "failures": [{"purchase_id": f.purchase_id, "kind": f.kind, "message": f.message}
                         for f in self.failures[:DETAIL_LIMIT]],
            "removed": [
                {"marker": r.marker, "purchase_id": r.purchase_id, "amount": str(r.amount),
                 "date": r.date.isoformat(), "kind": r.kind, "outcome": r.outcome,
                 "clio_id": r.clio_id, "matter": r.matter, "note": r.note}
                for r in self.removed_items[:DETAIL_LIMIT]],
            "reconciled": None if self.reconciled is None else {
                "reason": self.reconciled.reason, "last_swept": self.reconciled.last_swept,
                "checked": self.reconciled.checked, "removed": self.reconciled.removed},
            "deleted": self.deleted,
            "kept": self.kept,
            "unchanged": self.unchanged,
            "still_waiting": self.still_waiting,
            "still_failing": self.still_failing,
            "qbo_calls": self.qbo_calls,
            "clio_calls": self.clio_calls,
        }


SHUTDOWN = threading.Event()
"""Set when the process is asked to stop: runs finish the entry they are writing, then stop."""


class RunStopped(Exception):
    pass


class AlreadyImported(Exception):
    """The entry's link exists: it was written (or is being written) already."""


def matter_label(display_number: str, description: str) -> str:
    return f"{display_number} {description}".strip()


class FirmNotReady(Exception):
    """The firm's settings do not allow a run yet; the message says what to set."""


@dataclass
class _RunState:
    firm: Firm
    settings: FirmSettings
    summary: RunSummary
    resolver: MatterResolver
    entry_type: str
    consecutive_transient: int = 0
    clio_blocked: ApiError | None = None
    raised: set[tuple[str, str, str, str]] = field(default_factory=set)


class ImportEngine:
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

    # -- the run --------------------------------------------------------------------------

    def run(self, *, trigger: str = "manual", dry_run: bool = False,
            purchase_ids: set[str] | None = None,
            removed: dict[str, str] | None = None) -> RunSummary:
        """One import. ``purchase_ids`` limits it to those purchases (a Retry button, a
        webhook): they are read by id, the watermark is left where it is and no CDC sweep is
        made. ``removed`` (purchase id → ``deleted``/``voided``) are purchases a webhook said
        left QuickBooks: recorded, then handled with any others still open."""
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
            stored = self._stored_contacts(session)
        summary = RunSummary(self.firm_id, run_id, dry_run, self.clock())
        state = _RunState(firm, settings, summary, MatterResolver(self.clio, stored),
                          settings.clio_entry_type or "HardCostEntry")
        try:
            if removed and not dry_run:
                note_removals(self.sessions, self.firm_id, firm.qbo_realm_id or "", removed,
                              "webhook", self.clock())
            self._run(state, dry_run, purchase_ids)
        except (ApiError, FirmNotReady, RunStopped) as exc:
            summary.error = str(exc)
            log.warning("run for firm %s stopped: %s", self.firm_id, exc)
            if isinstance(exc, ReconnectRequired) and exc.service in PROVIDER_KEYS:
                mark_broken(self.sessions, self.firm_id, PROVIDER_KEYS[exc.service],
                            exc.message, self.clock())
        finally:
            summary.duration_s = time.monotonic() - started
            summary.qbo_calls = self.qbo.calls - qbo_calls
            summary.clio_calls = self.clio.calls - clio_calls
            if not dry_run:
                self._finish_run(summary, state)
        return summary

    def _run(self, state: _RunState, dry_run: bool, purchase_ids: set[str] | None) -> None:
        realm_id = state.firm.qbo_realm_id or ""
        refetch = set() if dry_run else self._recover_pending(state)
        new_watermark: str | None = None
        new_sweep: str | None = None
        server_time: str | None = None
        if purchase_ids is not None:
            unkeyed: list[dict[str, Any]] = []
            by_id: dict[str, dict[str, Any]] = {}
            _collect(by_id, unkeyed, self.qbo.purchases_by_id(purchase_ids | refetch))
            purchases = [*by_id.values(), *unkeyed]
        else:
            refetch |= self._purchases_to_retry()
            purchases, server_time = self._read_purchases(state.settings, refetch)
            new_watermark = _lagged(server_time, self.clock())
        state.summary.purchases_read = len(purchases)
        if not dry_run:
            voided = {str(p["Id"]): "voided" for p in purchases
                      if isinstance(p, dict) and p.get("Id") is not None and is_voided(p)}
            note_removals(self.sessions, self.firm_id, realm_id, voided, "read", self.clock())
            if purchase_ids is None:
                new_sweep = self._sweep_removals(state, server_time)
            self._handle_removals(state)
        rules = self._rules(state.settings, purchases)

        plans = [_plan_safely(p, realm_id, rules) for p in purchases]
        existing = self._existing_links(realm_id, [p.purchase_id for p in plans])
        to_resolve: list[PlannedEntry] = []
        for plan in plans:
            for skip in plan.skips:
                state.summary.skipped += 1
                state.summary.skips.append(skip.reason)
            for failure in plan.failures:
                self._record_failure(state, failure, FailureKind.DATA, dry_run)
            for entry in plan.entries:
                if _key_tuple(entry.key) in existing:
                    state.summary.unchanged += 1
                    # Still the same purchase: whatever failed before for it is settled.
                    state.raised.add((entry.key.purchase_id, entry.key.customer_id,
                                      entry.key.line_id, "*"))
                else:
                    to_resolve.append(entry)

        self._resolve_and_write(state, to_resolve, dry_run)
        if not dry_run and purchase_ids is None:
            self._import_where_a_matter_appeared(state, {_key_tuple(e.key) for e in to_resolve})
        if not dry_run:
            self._close_settled_failures(state, [p.purchase_id for p in plans])
            self._remember_contacts(state)
            if new_watermark is not None:
                self._save_watermark(new_watermark, state.settings.start_date)
            if new_sweep is not None:
                self._save_watermark(new_sweep, None, stream=REMOVALS_STREAM)

    def _import_where_a_matter_appeared(self, state: _RunState,
                                        seen: set[tuple[str, str, str, str]]) -> None:
        """Expenses waiting because their client had no open matter import by themselves once
        one exists. Only the clients with such expenses are asked (once each, cached)."""
        with self.sessions() as session:
            rows = list(session.scalars(select(WaitingExpense).where(
                WaitingExpense.firm_id == self.firm_id, WaitingExpense.resolved_at.is_(None),
                WaitingExpense.resolution.is_(None),
                WaitingExpense.reason == WaitReason.NO_MATTER.value,
                WaitingExpense.contact_id.is_not(None))))
        for row in rows:
            entry = PlannedEntry.from_json(row.entry)
            if _key_tuple(entry.key) in seen or self.stopping.is_set():
                continue
            assert row.contact_id is not None
            contact = Contact(row.contact_id, row.customer_name, "", None)
            resolution = state.resolver.choose_matter(entry, contact, "stored")
            if resolution.resolved:
                self._write_entry(state, entry, resolution, dry_run=False)
            elif resolution.reason != WaitReason.NO_MATTER:
                self._wait(state, entry, resolution, dry_run=False)  # several now: ask

    # -- reading ----------------------------------------------------------------------------

    def _read_purchases(self, settings: FirmSettings, refetch: set[str]) -> tuple[
            list[dict[str, Any]], str | None]:
        """The purchases changed since the watermark (and ``refetch``), and QuickBooks' clock
        at its first answer."""
        with self.sessions() as session:
            mark = session.scalars(select(Watermark).where(
                Watermark.firm_id == self.firm_id,
                Watermark.stream == WATERMARK_STREAM)).one_or_none()
            since = mark.value if mark else None
            read_start = mark.start_date if mark else None
        by_id: dict[str, dict[str, Any]] = {}
        unkeyed: list[dict[str, Any]] = []
        server_time: str | None = None
        for page in self.qbo.purchases_changed_since(since, settings.start_date):
            server_time = server_time or page.server_time
            _collect(by_id, unkeyed, page.purchases)
        if since and read_start and settings.start_date and settings.start_date < read_start:
            # The start date moved earlier: read the newly included dates once (backfill).
            for page in self.qbo.purchases_changed_since(None, settings.start_date,
                                                         before_start=read_start):
                _collect(by_id, unkeyed, page.purchases)
        missing = refetch - by_id.keys()
        if missing:
            _collect(by_id, unkeyed, self.qbo.purchases_by_id(missing))
        return [*by_id.values(), *unkeyed], server_time

    def _rules(self, settings: FirmSettings, purchases: list[dict[str, Any]]) -> ImportRules:
        accounts = frozenset(str(a) for a in settings.import_account_ids or [])
        item_accounts: dict[str, str] = {}
        if settings.item_lines:
            item_ids = {ref["value"] for p in purchases for line in p.get("Line") or []
                        if isinstance(line, dict)
                        for ref in [(line.get("ItemBasedExpenseLineDetail") or {}).get("ItemRef")]
                        if isinstance(ref, dict) and ref.get("value")}
            if item_ids:
                for item in self.qbo.items(item_ids):
                    account = item.get("ExpenseAccountRef") or {}
                    if account.get("value"):
                        item_accounts[str(item["Id"])] = str(account["value"])
        return ImportRules(start_date=settings.start_date, import_account_ids=accounts,
                           split_lines=bool(settings.split_lines),
                           item_lines=bool(settings.item_lines),
                           item_expense_accounts=item_accounts)

    # -- resolving and writing -------------------------------------------------------------

    def _resolve_and_write(self, state: _RunState, entries: list[PlannedEntry],
                           dry_run: bool) -> None:
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
        for entry, found in resolutions:
            if self.stopping.is_set():
                # Between two entries: every write so far is complete and recorded, and the
                # watermark is not moved, so the next run carries on from here.
                raise RunStopped("The server is shutting down; the next run carries on "
                                 "where this one stopped.")
            resolution = found if found.contact is None else resolver.choose_matter(
                entry, found.contact, found.contact_source)
            if resolution.resolved:
                self._write_entry(state, entry, resolution, dry_run)
            else:
                self._wait(state, entry, resolution, dry_run)

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
                     dry_run: bool) -> None:
        assert resolution.matter is not None
        matter = resolution.matter
        summary = state.summary
        label = matter_label(matter.display_number, matter.description)
        if dry_run:
            summary.imported += 1
            summary.imported_total += entry.amount
            summary.imported_entries.append(ImportedEntry(
                entry.marker, entry.amount, entry.date, entry.customer_name, label, None))
            return
        if state.clio_blocked is not None:
            self._record_write_failure(state, entry, state.clio_blocked)
            return
        try:
            activity = self.write(state, entry, matter.id, resolution="imported")
        except AlreadyImported:
            summary.unchanged += 1  # another run recorded it first
            return
        except ApiError as exc:
            self._record_write_failure(state, entry, exc)
            if isinstance(exc, TransientError):
                state.consecutive_transient += 1
                if state.consecutive_transient >= CIRCUIT_BREAK_AFTER:
                    state.clio_blocked = exc
            elif isinstance(exc, ConfigError):
                state.clio_blocked = exc
            return
        state.consecutive_transient = 0
        summary.imported += 1
        summary.imported_total += entry.amount
        summary.imported_entries.append(ImportedEntry(
            entry.marker, entry.amount, entry.date, entry.customer_name, label, activity.id))
        state.raised.add((entry.key.purchase_id, entry.key.customer_id, entry.key.line_id, "*"))

    def write(self, state: _RunState, entry: PlannedEntry, matter_id: int, *,
              resolution: str, resolved_by: str | None = None) -> Activity:
        """Write one entry exactly once: pending link, POST, record; settle its wait if any.

        Raises :class:`AlreadyImported` when the link exists, and the client's ``ApiError``
        when Clio did not take it (the link is dropped unless the POST may have happened).
        """
        link_id = self._insert_pending(entry, matter_id, state.summary.run_id)
        if link_id is None:
            raise AlreadyImported(entry.marker)
        try:
            activity = self._post(state, entry, matter_id)
        except ApiError as exc:
            if not (isinstance(exc, ServiceDown) and exc.ambiguous):
                self._drop_link(link_id)  # nothing was created: let a later try start afresh
            raise
        now = self.clock()
        with self.sessions() as session:
            link = session.get(EntryLink, link_id)
            assert link is not None
            link.state = LinkState.CREATED
            link.clio_activity_id = activity.id
            link.clio_etag = activity.etag
            link.updated_at = now
            session.execute(update(WaitingExpense).where(
                *_waiting_key(self.firm_id, entry.key), WaitingExpense.resolved_at.is_(None)
            ).values(resolved_at=now, resolution=resolution, resolved_by=resolved_by,
                     clio_activity_id=activity.id, clio_matter_id=matter_id))
            session.commit()
        return activity

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
                         settings.clio_entry_type or "HardCostEntry")

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
            # SPEC: fall back to an expense entry when the firm has not enabled hard costs.
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
                return None
            return link.id

    def _drop_link(self, link_id: int) -> None:
        with self.sessions() as session:
            session.execute(delete(EntryLink).where(EntryLink.id == link_id,
                                                    EntryLink.firm_id == self.firm_id))
            session.commit()

    def _wait(self, state: _RunState, entry: PlannedEntry, resolution: Resolution,
              dry_run: bool) -> None:
        assert resolution.reason is not None
        summary = state.summary
        state.raised.add((entry.key.purchase_id, entry.key.customer_id, entry.key.line_id, "*"))
        with self.sessions() as session:
            row = session.scalars(select(WaitingExpense).where(
                *_waiting_key(self.firm_id, entry.key))).one_or_none()
            if row is not None and _answered_for_good(row, entry):
                summary.unchanged += 1
                return
            new = row is None or row.resolved_at is not None or \
                row.reason != resolution.reason.value or \
                row.candidates != list(resolution.candidates)
            if new:
                summary.waiting += 1
            else:
                summary.still_waiting += 1
            summary.waiting_items.append(WaitingItem(
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
            row.reason = resolution.reason.value
            row.contact_id = resolution.contact.id if resolution.contact else None
            row.candidates = list(resolution.candidates)
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
            try:
                session.commit()
            except IntegrityError:  # another process recorded the same wait a moment ago
                session.rollback()

    # -- deletions and voids (SPEC §4) ----------------------------------------------------

    def _sweep_removals(self, state: _RunState, server_time: str | None) -> str:
        """Ask CDC which purchases were deleted or voided since the last sweep and record
        them; compare every imported purchase instead when CDC can't answer for the whole
        time (the last sweep is older than CDC's 30 days, or the answer stayed saturated).
        Returns the next sweep mark: QuickBooks' clock at the run's first answer, less the
        watermark margin."""
        now = instant(server_time) or self.clock()
        next_mark = (now - WATERMARK_MARGIN).isoformat(timespec="seconds")
        realm_id = state.firm.qbo_realm_id or ""
        with self.sessions() as session:
            mark = session.scalars(select(Watermark.value).where(
                Watermark.firm_id == self.firm_id,
                Watermark.stream == REMOVALS_STREAM)).one_or_none()
        if mark is None:
            # The first sweep: entries imported before sweeps existed are compared once
            # (a new firm has none: no call).
            self._reconcile(state, "first", None)
            return next_mark
        last = instant(mark)
        if last is None or last < now - CDC_REACH:
            self._reconcile(state, "offline", mark)
            return next_mark
        try:
            sweep = self.qbo.purchase_removals_since(mark)
        except RequestRejected as exc:  # QuickBooks refused the window: its clock disagrees
            log.warning("firm %s: CDC refused %s (%s); comparing purchases instead",
                        self.firm_id, mark, exc)
            self._reconcile(state, "refused", mark)
            return next_mark
        note_removals(self.sessions, self.firm_id, realm_id, sweep.removed, "cdc", self.clock())
        if not sweep.complete:
            self._reconcile(state, "saturated", mark)
        return next_mark

    def _imported_purchase_ids(self, realm_id: str) -> list[str]:
        with self.sessions() as session:
            return sorted(set(session.scalars(select(EntryLink.purchase_id).where(
                EntryLink.firm_id == self.firm_id, EntryLink.realm_id == realm_id,
                EntryLink.state == LinkState.CREATED, EntryLink.removed_at.is_(None)))))

    def _reconcile(self, state: _RunState, reason: str, last_swept: str | None) -> None:
        """Read every imported purchase by id: the missing ones were deleted."""
        realm_id = state.firm.qbo_realm_id or ""
        ids = self._imported_purchase_ids(realm_id)
        present = {str(p["Id"]): p for p in self.qbo.purchases_by_id(ids)
                   if isinstance(p, dict) and p.get("Id") is not None}
        found = {pid: "deleted" for pid in ids if pid not in present}
        found.update({pid: "voided" for pid, p in present.items() if is_voided(p)})
        note_removals(self.sessions, self.firm_id, realm_id, found, "reconcile", self.clock())
        state.summary.reconciled = ReconcileNote(reason, last_swept, len(ids), len(found))
        log.info("firm %s: compared %d imported purchases with QuickBooks (%s): %d gone",
                 self.firm_id, len(ids), reason, len(found))

    def _handle_removals(self, state: _RunState) -> None:
        """Deal with every open removal: the unbilled Clio entries are deleted (or, with
        ``deletions alert``, kept and reported), billed ones are kept and reported, waiting
        prompts and open failures of the purchase are settled. A Clio error leaves the removal
        open (and a failure alert) for the next run."""
        with self.sessions() as session:
            removals = list(session.scalars(select(PurchaseRemoval).where(
                PurchaseRemoval.firm_id == self.firm_id,
                PurchaseRemoval.handled_at.is_(None)).order_by(PurchaseRemoval.id)))
        for removal in removals:
            if self.stopping.is_set():
                raise RunStopped("The server is shutting down; the next run carries on "
                                 "where this one stopped.")
            with self.sessions() as session:
                links = list(session.scalars(select(EntryLink).where(
                    EntryLink.firm_id == self.firm_id, EntryLink.realm_id == removal.realm_id,
                    EntryLink.purchase_id == removal.purchase_id)))
                answering = session.scalars(select(WaitingExpense.id).where(
                    WaitingExpense.firm_id == self.firm_id,
                    WaitingExpense.realm_id == removal.realm_id,
                    WaitingExpense.purchase_id == removal.purchase_id,
                    WaitingExpense.resolution == "claimed")).first()
            if answering is not None or any(link.state == LinkState.PENDING for link in links):
                continue  # a write is under way: the next run deals with what it made
            error: ApiError | None = None
            for link in links:
                if link.state != LinkState.CREATED or link.removed_at is not None:
                    continue
                try:
                    self._remove_entry(state, link, removal.kind)
                except ReconnectRequired:
                    raise
                except ApiError as exc:
                    error = exc
                    self._record_removal_failure(state, link, removal.kind, exc)
            self._settle_removal(removal, error)
            if isinstance(error, (TransientError, ConfigError)):
                # Clio is struggling or refusing us: the rest wait for the next run.
                log.warning("firm %s: removals stop for this run: %s", self.firm_id, error)
                break

    def _remove_entry(self, state: _RunState, link: EntryLink, kind: str) -> None:
        assert link.clio_activity_id is not None
        entry_id = link.clio_activity_id
        matter: str | None = None
        try:
            activity = self.clio.get_activity(entry_id)
            matter = activity.matter_number
            if activity.on_bill:
                outcome = "kept_billed"
            elif state.settings.deletions == "alert":
                outcome = "kept_alert"
            else:
                try:
                    self.clio.delete_activity(entry_id)
                    outcome = "deleted"
                except RequestRejected:  # NotFound included: removed in Clio meanwhile
                    again = _reread(self.clio, entry_id)
                    if again is None:
                        outcome = "already_gone"
                    elif again.on_bill:
                        activity, outcome = again, "kept_billed"  # put on a bill meanwhile
                    else:
                        raise
        except NotFound:
            outcome, activity = "already_gone", None
        what = "deleted" if kind == "deleted" else "voided"
        note = {
            "deleted": f"{what} in QuickBooks; Clio entry #{entry_id} was deleted",
            "already_gone": f"{what} in QuickBooks; Clio entry #{entry_id} had already been "
                            "removed in Clio",
            "kept_billed": f"{what} in QuickBooks, but Clio entry #{entry_id} is on "
                           f"{_bill_words(activity)}, so it was left as it is: credit or "
                           "adjust the bill in Clio if the client should not pay it",
            "kept_alert": f"{what} in QuickBooks; Clio entry #{entry_id} was left as it is "
                          "(deletions are set to alert): delete it in Clio if it should go",
        }[outcome]
        now = self.clock()
        with self.sessions() as session:
            row = session.get(EntryLink, link.id)
            if row is None:
                return
            row.state = LinkState.DELETED if outcome in ("deleted", "already_gone") \
                else LinkState.KEPT
            row.removed_at = now
            row.removal_note = note
            row.updated_at = now
            session.commit()
        summary = state.summary
        if outcome == "deleted":
            summary.deleted += 1
        elif outcome.startswith("kept"):
            summary.kept += 1
        summary.removed_items.append(RemovedItem(
            link.marker, link.purchase_id, link.amount, link.txn_date, kind, outcome, entry_id,
            matter, note))
        log.info("firm %s: %s (%s)", self.firm_id, note, link.marker)

    def _record_removal_failure(self, state: _RunState, link: EntryLink, kind: str,
                                exc: ApiError) -> None:
        what = "deleted" if kind == "deleted" else "voided"
        message = (f"Expense #{link.purchase_id} ({link.amount}, {link.txn_date.isoformat()}) "
                   f"was {what} in QuickBooks, but its Clio entry #{link.clio_activity_id} "
                   f"could not be removed: {exc.message}")
        failure = LineFailure(link.purchase_id, f"clio_remove_{exc.code or exc.status or 'error'}"
                              .lower()[:60], message, link.customer_id, link.line_id)
        self._record_failure(state, failure, exc.kind, False, detail=str(exc))

    def _settle_removal(self, removal: PurchaseRemoval, error: ApiError | None) -> None:
        now = self.clock()
        with self.sessions() as session:
            row = session.get(PurchaseRemoval, removal.id)
            if row is None:
                return
            if error is not None:
                row.attempts += 1
                row.last_error = str(error)
                session.commit()
                return
            row.handled_at = now
            row.last_error = None
            # Nothing left to choose or to fix for a purchase that is gone.
            session.execute(update(WaitingExpense).where(
                WaitingExpense.firm_id == self.firm_id,
                WaitingExpense.realm_id == removal.realm_id,
                WaitingExpense.purchase_id == removal.purchase_id,
                WaitingExpense.resolved_at.is_(None)).values(
                resolved_at=now, resolution=f"removed_{removal.kind}"[:40]))
            session.execute(update(Failure).where(
                Failure.firm_id == self.firm_id, Failure.purchase_id == removal.purchase_id,
                Failure.resolved_at.is_(None)).values(resolved_at=now))
            session.commit()

    # -- recovery ---------------------------------------------------------------------------

    def _recover_pending(self, state: _RunState) -> set[str]:
        """Settle links left ``pending`` by a run that stopped between POST and record.

        Found in Clio by marker → recorded as created. Not found → dropped, and the purchase
        is read again this run so it is posted once.
        """
        settled_before = self.clock() - PENDING_GRACE
        with self.sessions() as session:
            pending = list(session.scalars(select(EntryLink).where(
                EntryLink.firm_id == self.firm_id, EntryLink.state == LinkState.PENDING,
                EntryLink.updated_at < settled_before)))
        refetch: set[str] = set()
        for link in pending:
            found = self.clio.find_by_marker(link.marker)
            with self.sessions() as session:
                row = session.get(EntryLink, link.id)
                if row is None:
                    continue
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
        return refetch

    def _purchases_to_retry(self) -> set[str]:
        """Purchases whose last failure was ours or a service's, not their data."""
        with self.sessions() as session:
            rows = session.scalars(select(Failure.purchase_id).where(
                Failure.firm_id == self.firm_id, Failure.resolved_at.is_(None),
                Failure.kind.in_([FailureKind.TRANSIENT.value, FailureKind.CONFIG.value]),
                Failure.purchase_id != "?"))
            return set(rows)

    # -- recording --------------------------------------------------------------------------

    def _existing_links(self, realm_id: str, purchase_ids: list[str]) -> set[
            tuple[str, str, str, str]]:
        found: set[tuple[str, str, str, str]] = set()
        with self.sessions() as session:
            for chunk in _chunks(sorted(set(purchase_ids)), 500):
                rows = session.execute(select(
                    EntryLink.realm_id, EntryLink.purchase_id, EntryLink.customer_id,
                    EntryLink.line_id).where(EntryLink.firm_id == self.firm_id,
                                             EntryLink.realm_id == realm_id,
                                             EntryLink.purchase_id.in_(chunk)))
                found.update((r[0], r[1], r[2], r[3]) for r in rows)
        return found

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
            else:
                summary.still_failing += 1
            summary.failures.append(FailureItem(failure.purchase_id, kind.value,
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
            for chunk in _chunks(sorted(set(purchase_ids)), 500):
                rows = session.scalars(select(Failure).where(
                    Failure.firm_id == self.firm_id, Failure.resolved_at.is_(None),
                    Failure.purchase_id.in_(chunk)))
                for row in rows:
                    if (row.purchase_id, row.customer_id, row.line_id, row.code) in state.raised:
                        continue
                    row.resolved_at = now
            session.commit()

    def _remember_contacts(self, state: _RunState) -> None:
        links = state.resolver.new_links
        if not links:
            return
        with self.sessions() as session:
            for (qbo_type, qbo_id), contact_id in links.items():
                session.add(ContactLink(firm_id=self.firm_id, qbo_type=qbo_type, qbo_id=qbo_id,
                                        clio_contact_id=contact_id, source="auto"))
                try:
                    session.commit()
                except IntegrityError:
                    session.rollback()

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
            run.status = "failed" if summary.error else "ok"
            run.error = summary.error
            run.imported = summary.imported
            run.imported_total = summary.imported_total
            run.waiting = summary.waiting
            run.failed = summary.failed
            run.skipped = summary.skipped
            run.purchases_read = summary.purchases_read
            run.details = summary.details()
            session.commit()


# -- helpers ----------------------------------------------------------------------------------

def note_removals(sessions: sessionmaker[Session], firm_id: int, realm_id: str,
                  found: dict[str, str], source: str, now: datetime) -> int:
    """Record purchases deleted or voided in QuickBooks (id → ``deleted``/``voided``) that
    hardcost knows: imported, waiting for a choice, or with an open failure. Others (never
    imported) need nothing. Each purchase is recorded once, however many routes report it.
    Returns how many were new."""
    if not found:
        return 0
    added = 0
    with sessions() as session:
        for chunk in _chunks(sorted(found), 500):
            known = set(session.scalars(select(EntryLink.purchase_id).where(
                EntryLink.firm_id == firm_id, EntryLink.realm_id == realm_id,
                EntryLink.purchase_id.in_(chunk))))
            known.update(session.scalars(select(WaitingExpense.purchase_id).where(
                WaitingExpense.firm_id == firm_id, WaitingExpense.realm_id == realm_id,
                WaitingExpense.resolved_at.is_(None), WaitingExpense.purchase_id.in_(chunk))))
            known.update(session.scalars(select(Failure.purchase_id).where(
                Failure.firm_id == firm_id, Failure.resolved_at.is_(None),
                Failure.purchase_id.in_(chunk))))
            known -= set(session.scalars(select(PurchaseRemoval.purchase_id).where(
                PurchaseRemoval.firm_id == firm_id, PurchaseRemoval.realm_id == realm_id,
                PurchaseRemoval.purchase_id.in_(chunk))))
            for purchase_id in sorted(known):
                session.add(PurchaseRemoval(firm_id=firm_id, realm_id=realm_id,
                                            purchase_id=purchase_id, kind=found[purchase_id],
                                            source=source, seen_at=now, attempts=0))
                try:
                    session.commit()
                    added += 1
                except IntegrityError:  # recorded a moment ago by another route
                    session.rollback()
    return added


def _reread(clio: ClioClient, activity_id: int) -> Activity | None:
    try:
        return clio.get_activity(activity_id)
    except NotFound:
        return None


def _bill_words(activity: Activity | None) -> str:
    if activity is None or activity.bill_id is None:
        return "a bill"
    state = f" ({activity.bill_state.replace('_', ' ')})" if activity.bill_state else ""
    return f"bill #{activity.bill_id}{state}"


def _collect(by_id: dict[str, dict[str, Any]], unkeyed: list[dict[str, Any]],
             purchases: Iterable[Any]) -> None:
    for purchase in purchases:
        if isinstance(purchase, dict) and purchase.get("Id") is not None:
            by_id[str(purchase["Id"])] = purchase
        else:
            unkeyed.append(purchase if isinstance(purchase, dict) else {"Id": None})


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


def _lagged(server_time: str | None, now: datetime) -> str | None:
    """The next watermark: QuickBooks' own clock at the first answer, less a margin."""
    if server_time:
        try:
            moment = datetime.fromisoformat(server_time)
        except ValueError:
            moment = now
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    else:
        moment = now
    return (moment - WATERMARK_MARGIN).isoformat(timespec="seconds")


def _check_ready(firm: Firm, settings: FirmSettings, broken: dict[str, str | None]) -> None:
    missing = []
    if not firm.active:
        raise FirmNotReady("hardcost was removed from this firm's Slack workspace.")
    if not firm.qbo_realm_id:
        missing.append("connect QuickBooks (/hardcost connect quickbooks)")
    for provider, reason in broken.items():
        name = "QuickBooks" if provider == "quickbooks" else "Clio"
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
    client cost" and the purchase is as it was then (an edit in QuickBooks asks again)."""
    if row.resolution in ("claimed", "linked", "imported"):
        return True
    return row.resolution == "not_client_cost" and \
        row.entry.get("sync_token") == entry.sync_token


def _waiting_key(firm_id: int, key: QboKey) -> list[Any]:
    return [WaitingExpense.firm_id == firm_id, WaitingExpense.realm_id == key.realm_id,
            WaitingExpense.purchase_id == key.purchase_id,
            WaitingExpense.customer_id == key.customer_id,
            WaitingExpense.line_id == key.line_id]


def _entry_label(entry: PlannedEntry) -> str:
    what = f"Check {entry.reference}" if entry.reference else f"Expense #{entry.key.purchase_id}"
    return f"{what} ({entry.amount} for {entry.customer_name}, {entry.date.isoformat()})"


def _email(customer: dict[str, Any] | None) -> str | None:
    if not customer:
        return None
    address = (customer.get("PrimaryEmailAddr") or {}).get("Address")
    return str(address) if address else None


def _chunks(values: list[str], size: int) -> Iterable[list[str]]:
    for i in range(0, len(values), size):
        yield values[i:i + size]

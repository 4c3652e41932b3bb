"""Deleted and voided purchases (docs/purchases.md, "Deletions and voids"): which ones left
QuickBooks, and what is done with their Clio entries.

Three routes report a purchase gone: QuickBooks' change data capture (CDC), swept once per run;
a webhook ``Delete``/``Void``; and a read that shows a void. Each is recorded once as a
``PurchaseRemoval`` (``note_removals``); every run then deals with the open ones: an unbilled
Clio entry is deleted (or kept and reported with ``deletions alert``), a billed one is kept and
reported. When CDC cannot answer for the whole time since the last sweep, every imported
purchase is read by id and compared instead ("reconciliation").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync import audit
from hardcost.sync import receipts as receipt_files
from hardcost.sync.audit import Action
from hardcost.sync.batches import chunks
from hardcost.sync.bills import document_id, split_ids
from hardcost.sync.clio import Activity, ClioClient
from hardcost.sync.http import (
    ApiError,
    ConfigError,
    NotFound,
    ReconnectRequired,
    RequestRejected,
    TransientError,
)
from hardcost.sync.metrics import ENTRIES
from hardcost.sync.qbo import QboClient, instant
from hardcost.sync.rules import LineFailure, is_voided
from hardcost.sync.run_record import OpenWork
from hardcost.sync.store import (
    EntryLink,
    Failure,
    FailureKind,
    LinkState,
    PurchaseRemoval,
    WaitingExpense,
    Watermark,
)
from hardcost.sync.summary import ReconcileNote, RemovedItem, RunStopped, RunSummary

log = logging.getLogger(__name__)

REMOVALS_STREAM = "removals"  # the watermark row of the last CDC sweep
CDC_REACH = timedelta(days=30) - timedelta(hours=1)
"""How far back CDC answers (30 days), less a margin for the two clocks."""

RecordFailure = Callable[[LineFailure, FailureKind, str], None]
"""The run's own failure recorder: (failure, class, detail)."""


@dataclass
class Removals:
    """One run's dealings with deleted and voided purchases of one firm."""

    sessions: sessionmaker[Session]
    firm_id: int
    realm_id: str
    qbo: QboClient
    clio: ClioClient
    summary: RunSummary
    deletions: str  # the firm's setting: delete | alert
    record_failure: RecordFailure
    clock: Callable[[], datetime]
    stopping: threading.Event
    actor: str = "schedule"  # who the audit trail names: the run's trigger or its asker
    bills: bool = False  # the firm imports Bills: CDC reads Bills and BillPayments too
    receipts: bool = False  # the firm files receipts: CDC reads Attachables too
    paid: set[str] = field(default_factory=set)
    """``bill-<id>`` of Bills whose payments changed since the last sweep (to read again)."""
    payments_gone: bool = False
    """A BillPayment was deleted since the last sweep (or the sweep could not tell): which
    Bills it paid is not known, so the imported Bills are read again."""
    work: OpenWork = field(default_factory=OpenWork)
    """What the run found open (``run_record.start``): ``handle`` looks for removals only
    when some were open or have been recorded since (a sweep here sets ``removals``); the
    stored watermarks (``marks``; None: read here)."""
    quiet: bool = True
    """The sweep found nothing at all (no removal, no payment, nothing compared)."""

    def sweep(self, server_time: str | None) -> None:
        """Ask CDC which purchases were deleted or voided since the last sweep and record
        them; compare every imported purchase instead when CDC can't answer for the whole
        time (the last sweep is older than CDC's 30 days, or the answer stayed saturated).
        The run saves the next sweep mark (QuickBooks' clock at its first answer, less the
        watermark margin) once it is over."""
        now = instant(server_time) or self.clock()
        if self.work.marks is not None:
            known = self.work.marks.get(REMOVALS_STREAM)
            mark = known[0] if known is not None else None
        else:
            with self.sessions() as session:
                mark = session.scalars(select(Watermark.value).where(
                    Watermark.firm_id == self.firm_id,
                    Watermark.stream == REMOVALS_STREAM)).one_or_none()
        if mark is None:
            # The first sweep: entries imported before sweeps existed are compared once
            # (a new firm has none: no call).
            self.compare_all("first", None)
            return
        last = instant(mark)
        if last is None or last < now - CDC_REACH:
            self.payments_gone = True
            self._attachables_by_query(mark)
            self.compare_all("offline", mark)
            return
        try:
            sweep = self.qbo.purchase_removals_since(mark, bills=self.bills,
                                                     attachables=self.receipts)
        except RequestRejected as exc:  # QuickBooks refused the window: its clock disagrees
            log.warning("firm %s: CDC refused %s (%s); comparing purchases instead",
                        self.firm_id, mark, exc)
            self.payments_gone = True
            self._attachables_by_query(mark)
            self.compare_all("refused", mark)
            return
        if self.receipts and sweep.attachables:
            self.quiet = False
            receipt_files.note(self.sessions, self.firm_id, self.realm_id, sweep.attachables,
                          self.clock, self.actor)
            self.work.receipts = True  # the receipts step looks for what became due
        if not sweep.complete:
            self._attachables_by_query(mark)
        if sweep.removed or sweep.paid or sweep.payments_gone or not sweep.complete:
            self.quiet = False
        if sweep.removed:
            self.work.removals = True
        note_removals(self.sessions, self.firm_id, self.realm_id, sweep.removed, "cdc",
                      self.clock())
        self.paid |= sweep.paid
        self.payments_gone |= sweep.payments_gone or not sweep.complete
        if not sweep.complete:
            self.compare_all("saturated", mark)

    def _attachables_by_query(self, mark: str | None) -> None:
        """CDC did not answer for the whole time: receipts read Attachables by query."""
        if self.receipts:
            receipt_files.query_from(self.sessions, self.firm_id, mark)

    def _imported_purchase_ids(self) -> list[str]:
        with self.sessions() as session:
            return sorted(set(session.scalars(select(EntryLink.purchase_id).where(
                EntryLink.firm_id == self.firm_id, EntryLink.realm_id == self.realm_id,
                EntryLink.state == LinkState.CREATED, EntryLink.removed_at.is_(None)))))

    def compare_all(self, reason: str, last_swept: str | None) -> None:
        """Read every imported purchase by id: the missing ones were deleted."""
        self.quiet = False
        self.work.removals = True
        ids = self._imported_purchase_ids()
        purchase_ids, bill_ids, _ = split_ids(ids)
        present = {str(p["Id"]): p for p in self.qbo.purchases_by_id(purchase_ids)
                   if isinstance(p, dict) and p.get("Id") is not None}
        if bill_ids:  # read even when Bills are off now: their entries are still followed
            present.update({document_id(str(b["Id"])): b
                            for b in self.qbo.bills_by_id(bill_ids)
                            if isinstance(b, dict) and b.get("Id") is not None})
        found = {pid: "deleted" for pid in ids if pid not in present}
        found.update({pid: "voided" for pid, p in present.items() if is_voided(p)})
        note_removals(self.sessions, self.firm_id, self.realm_id, found, "reconcile",
                      self.clock())
        self.summary.reconciled = ReconcileNote(reason, last_swept, len(ids), len(found))
        log.info("firm %s: compared %d imported purchases with QuickBooks (%s): %d gone",
                 self.firm_id, len(ids), reason, len(found))

    def handle(self) -> None:
        """Deal with every open removal: the unbilled Clio entries are deleted (or, with
        ``deletions alert``, kept and reported), billed ones are kept and reported, waiting
        prompts and open failures of the purchase are settled. A Clio error leaves the removal
        open (and a failure alert) for the next run."""
        if not self.work.removals:
            return
        with self.sessions() as session:
            removals = list(session.scalars(select(PurchaseRemoval).where(
                PurchaseRemoval.firm_id == self.firm_id,
                PurchaseRemoval.handled_at.is_(None)).order_by(PurchaseRemoval.id)))
        for removal in removals:
            if self.stopping.is_set():
                raise RunStopped.by(self.stopping)
            with self.sessions() as session:
                links = list(session.scalars(select(EntryLink).where(
                    EntryLink.firm_id == self.firm_id, EntryLink.realm_id == removal.realm_id,
                    EntryLink.purchase_id == removal.purchase_id)))
                answering = session.scalars(select(WaitingExpense.id).where(
                    WaitingExpense.firm_id == self.firm_id,
                    WaitingExpense.realm_id == removal.realm_id,
                    WaitingExpense.purchase_id == removal.purchase_id,
                    WaitingExpense.resolution.in_(("claimed", "undoing")))).first()
            if answering is not None or any(link.state == LinkState.PENDING for link in links):
                continue  # a write is under way: the next run deals with what it made
            error: ApiError | None = None
            for link in links:
                if link.state != LinkState.CREATED or link.removed_at is not None:
                    continue
                try:
                    self._remove_entry(link, removal.kind)
                except ReconnectRequired:
                    raise
                except ApiError as exc:
                    error = exc
                    self._record_failure(link, removal.kind, exc)
            self._settle(removal, error)
            if isinstance(error, (TransientError, ConfigError)):
                # Clio is struggling or refusing us: the rest wait for the next run.
                log.warning("firm %s: removals stop for this run: %s", self.firm_id, error)
                break

    def handle_superseded(self) -> None:
        """Remove the entries their edited purchases no longer call for (``superseded_at``),
        as for a deleted purchase: unbilled → deleted (or kept with ``deletions alert``),
        billed → kept and reported. A Clio error leaves the mark for the next run."""
        with self.sessions() as session:
            links = list(session.scalars(select(EntryLink).where(
                EntryLink.firm_id == self.firm_id, EntryLink.realm_id == self.realm_id,
                EntryLink.superseded_at.is_not(None), EntryLink.removed_at.is_(None),
                EntryLink.state == LinkState.CREATED).order_by(EntryLink.id)))
        for link in links:
            if self.stopping.is_set():
                raise RunStopped.by(self.stopping)
            try:
                self._remove_entry(link, "changed")
            except ReconnectRequired:
                raise
            except ApiError as exc:
                self._record_failure(link, "changed", exc)
                if isinstance(exc, (TransientError, ConfigError)):
                    log.warning("firm %s: removals stop for this run: %s", self.firm_id, exc)
                    break

    def _remove_entry(self, link: EntryLink, kind: str) -> None:
        assert link.clio_activity_id is not None
        entry_id = link.clio_activity_id
        matter: str | None = None
        try:
            activity = self.clio.get_activity(entry_id)
            matter = activity.matter_number
            if activity.on_bill:
                outcome = "kept_billed"
            elif self.deletions == "alert":
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
        what = {"deleted": "deleted in QuickBooks", "voided": "voided in QuickBooks",
                "changed": "no longer called for by its purchase (its customer or lines "
                           "changed in QuickBooks)"}[kind]
        note = {
            "deleted": f"{what}; Clio entry #{entry_id} was deleted",
            "already_gone": f"{what}; Clio entry #{entry_id} had already been removed in Clio",
            "kept_billed": f"{what}, but Clio entry #{entry_id} is on "
                           f"{bill_words(activity)}, so it was left as it is: credit or "
                           "adjust the bill in Clio if the client should not pay it",
            "kept_alert": f"{what}; Clio entry #{entry_id} was left as it is "
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
            audit.record(
                session, self.firm_id,
                Action.DELETED if outcome in ("deleted", "already_gone") else Action.KEPT,
                self.actor, realm_id=link.realm_id, purchase_id=link.purchase_id,
                customer_id=link.customer_id, line_id=link.line_id, amount=link.amount,
                clio_activity_id=entry_id, clio_matter_id=link.clio_matter_id, matter=matter,
                before={"amount": link.amount, "date": link.txn_date}, detail=note,
                run_id=self.summary.run_id, at=now)
            session.commit()
        summary = self.summary
        if outcome == "deleted":
            summary.deleted += 1
            ENTRIES.labels("deleted").inc()
        elif outcome.startswith("kept"):
            summary.kept += 1
        summary.removed_items.append(RemovedItem(
            link.marker, link.purchase_id, link.amount, link.txn_date, kind, outcome, entry_id,
            matter, note))
        log.info("firm %s: %s (%s)", self.firm_id, note, link.marker)

    def _record_failure(self, link: EntryLink, kind: str, exc: ApiError) -> None:
        what = {"deleted": "was deleted", "voided": "was voided",
                "changed": "changed (customer or lines)"}.get(kind, kind)
        message = (f"Expense #{link.purchase_id} ({link.amount}, {link.txn_date.isoformat()}) "
                   f"{what} in QuickBooks, but its Clio entry #{link.clio_activity_id} "
                   f"could not be removed: {exc.message}")
        failure = LineFailure(link.purchase_id, f"clio_remove_{exc.code or exc.status or 'error'}"
                              .lower()[:60], message, link.customer_id, link.line_id)
        self.record_failure(failure, exc.kind, str(exc))

    def _settle(self, removal: PurchaseRemoval, error: ApiError | None) -> None:
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
        for chunk in chunks(sorted(found), 500):
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


def bill_words(activity: Activity | None) -> str:
    if activity is None or activity.bill_id is None:
        return "a bill"
    state = f" ({activity.bill_state.replace('_', ' ')})" if activity.bill_state else ""
    return f"bill #{activity.bill_id}{state}"


def note_voided(sessions: sessionmaker[Session], firm_id: int, realm_id: str,
                purchases: list[dict[str, Any]], now: datetime) -> bool:
    """Record the voided purchases of a page read (``note_removals``); True if there were."""
    voided = {str(p["Id"]): "voided" for p in purchases
              if isinstance(p, dict) and p.get("Id") is not None and is_voided(p)}
    if voided:
        note_removals(sessions, firm_id, realm_id, voided, "read", now)
    return bool(voided)

"""What one run did: the run summary and its items, read by the CLI, the Slack messages and
the run's record (``Run.details``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar

T = TypeVar("T")

DETAIL_LIMIT = 200
"""Items of each kind kept in a run's stored details (the counts are always complete)."""


def keep(items: list[T], item: T) -> None:
    """Add ``item`` to a run's list of items while it holds fewer than ``DETAIL_LIMIT``: the
    counts say how many there were, and a backfill of thousands holds no more than that."""
    if len(items) < DETAIL_LIMIT:
        items.append(item)


class RunStopped(Exception):
    """The run stopped between two entries (the process is shutting down, its lease was lost,
    or someone stopped it); the next run carries on where it stopped."""

    @classmethod
    def by(cls, stopping: object) -> RunStopped:
        """The exception for a run whose ``stopping`` event is set, saying why (a
        ``sync.leases.RunStop`` knows; a plain event means the process is shutting down)."""
        reason = getattr(stopping, "reason", None)
        return cls(reason if isinstance(reason, str) and reason else SHUTTING_DOWN)


SHUTTING_DOWN = "The server is shutting down; the next run carries on where this one stopped."
STOPPED_BY_HAND = "The import was stopped; the next run carries on where this one stopped."


def matter_label(display_number: str, description: str) -> str:
    return f"{display_number} {description}".strip()


@dataclass(frozen=True)
class ImportedEntry:
    marker: str
    amount: Decimal
    date: date
    customer: str
    matter: str
    clio_id: int | None
    rule: str | None = None  # "Speedy Couriers → Acme" when a matter rule chose the matter
    rule_by: str | None = None  # the Slack user who made that rule


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
    kind: str  # deleted | voided | changed (what happened in QuickBooks)
    outcome: str  # deleted | already_gone | kept_billed | kept_alert
    clio_id: int | None
    matter: str | None
    note: str


@dataclass(frozen=True)
class ChangedItem:
    """A purchase edited in QuickBooks after its Clio entry was written, and what was done."""

    marker: str
    purchase_id: str
    outcome: str  # updated | moved | billed | not_overwritten | gone | unpaid (a Bill)
    clio_id: int | None
    matter: str | None  # the entry's matter as Clio shows it
    before: dict[str, str]  # amount, date, matter: what the entry said
    after: dict[str, str]  # ... and what QuickBooks now says
    bill: str | None  # "bill #12 (awaiting payment)" when it is on one
    note: str  # what happened, in words
    url: str | None = None  # the entry's matter in Clio's web app


@dataclass(frozen=True)
class SkippedReceipt:
    """A file attached in QuickBooks that hardcost will not file (too large, gone): a person
    adds it to the matter by hand (docs/purchases.md, "Receipts")."""

    purchase_id: str  # the transaction's key (``Bill:`` before a Bill's id)
    file_name: str
    reason: str  # a sentence that says what to do


@dataclass(frozen=True)
class ReconcileNote:
    """The run compared every imported purchase with QuickBooks instead of asking CDC."""

    reason: str  # offline | saturated | refused | first
    last_swept: str | None  # the previous sweep (QuickBooks time), None when never
    checked: int  # purchases compared
    removed: int  # found deleted or voided


@dataclass(frozen=True)
class RunProgress:
    """How far a run has got, for a progress display (``hardcost sync``)."""

    stage: str  # reading | writing | done
    purchases_read: int
    to_write: int  # entries this run has to write or ask about
    handled: int  # of those: imported, waiting or failed so far
    imported: int
    waiting: int
    failed: int
    rate_limit_wait_s: float  # time spent waiting on QuickBooks' and Clio's rate limits
    run_id: int | None = None  # None for a dry run
    entries_expected: int | None = None  # this run's entries in all (estimated on long runs)
    purchases_expected: int | None = None  # a long run's count of the purchases it reads
    clio_rate_limit: int | None = None  # requests a minute Clio allows, as it last said
    receipts_filed: int = 0  # receipts filed in Clio so far (stage ``receipts``)


@dataclass
class RunSummary:
    """What one run did, for the CLI now and the Slack summary later."""

    firm_id: int
    run_id: int | None
    dry_run: bool
    started_at: datetime
    imported: int = 0
    imported_bills: int = 0  # of those, from vendor Bills
    by_rule: int = 0  # of those, put on their matter by a matter rule
    imported_total: Decimal = Decimal("0.00")
    waiting: int = 0  # newly waiting this run
    waiting_for_payment: int = 0  # of those, Bills not fully paid yet (``bills on-payment``)
    failed: int = 0  # new failures this run
    skipped: int = 0
    unchanged: int = 0  # already in Clio
    still_waiting: int = 0  # re-checked, still waiting for the same choice
    untagged_waiting: int = 0  # of waiting and still_waiting: expenses with no client
    still_failing: int = 0  # the same open failure seen again
    purchases_read: int = 0
    deleted: int = 0  # Clio entries deleted because their purchase left QuickBooks
    kept: int = 0  # Clio entries left although their purchase left QuickBooks (billed, alert)
    updated: int = 0  # Clio entries changed to follow an edit in QuickBooks
    changed_after_billing: int = 0  # edited in QuickBooks, but the entry is on a bill
    not_overwritten: int = 0  # edited in QuickBooks, but a person changed the entry in Clio
    unpaid: int = 0  # imported Bills (``bills on-payment``) no longer fully paid: entry kept
    duration_s: float = 0.0
    error: str | None = None
    imported_entries: list[ImportedEntry] = field(default_factory=list)
    waiting_items: list[WaitingItem] = field(default_factory=list)
    failures: list[FailureItem] = field(default_factory=list)
    skips: list[str] = field(default_factory=list)
    removed_items: list[RemovedItem] = field(default_factory=list)
    changed_items: list[ChangedItem] = field(default_factory=list)
    reconciled: ReconcileNote | None = None
    actor: str | None = None  # who started the run: a Slack user id, or None (its trigger)
    qbo_calls: int = 0
    clio_calls: int = 0
    handled: int = 0  # entries written, waiting or failed (the progress message's "400 of")
    entries_expected: int | None = None  # "… of 2,000" (estimated on a run of several pages)
    receipts_filed: int = 0  # files attached in QuickBooks, filed on their matters in Clio
    receipt_bytes: int = 0  # their bytes
    receipts_failed: int = 0  # receipts not filed this run (a failure says why)
    receipts_skipped: list[SkippedReceipt] = field(default_factory=list)  # filed by hand

    @property
    def stopped_by_hand(self) -> bool:
        """Someone pressed *Stop* (``sync.live``): the run is ``stopped``, not ``failed``."""
        return self.error == STOPPED_BY_HAND

    @property
    def did_something(self) -> bool:
        return bool(self.imported or self.waiting or self.failed or self.error or
                    self.receipts_filed or self.receipts_skipped or
                    self.removed_items or self.changed_items or (self.reconciled is not None and
                                           self.reconciled.reason != "first"))

    def details(self) -> dict[str, Any]:
        return {
            "imported": [
                {"marker": e.marker, "amount": str(e.amount), "date": e.date.isoformat(),
                 "customer": e.customer, "matter": e.matter, "clio_id": e.clio_id,
                 **({"rule": e.rule, "rule_by": e.rule_by} if e.rule else {})}
                for e in self.imported_entries[:DETAIL_LIMIT]],
            "skipped": self.skips[:DETAIL_LIMIT],
            "failures": [{"purchase_id": f.purchase_id, "kind": f.kind, "message": f.message}
                         for f in self.failures[:DETAIL_LIMIT]],
            "removed": [
                {"marker": r.marker, "purchase_id": r.purchase_id, "amount": str(r.amount),
                 "date": r.date.isoformat(), "kind": r.kind, "outcome": r.outcome,
                 "clio_id": r.clio_id, "matter": r.matter, "note": r.note}
                for r in self.removed_items[:DETAIL_LIMIT]],
            "changed": [
                {"marker": c.marker, "purchase_id": c.purchase_id, "outcome": c.outcome,
                 "clio_id": c.clio_id, "matter": c.matter, "before": c.before,
                 "after": c.after, "bill": c.bill, "note": c.note, "url": c.url}
                for c in self.changed_items[:DETAIL_LIMIT]],
            "updated": self.updated,
            "by_rule": self.by_rule,
            "imported_bills": self.imported_bills,
            "waiting_for_payment": self.waiting_for_payment,
            "changed_after_billing": self.changed_after_billing,
            "not_overwritten": self.not_overwritten,
            **({"unpaid": self.unpaid} if self.unpaid else {}),
            "reconciled": None if self.reconciled is None else {
                "reason": self.reconciled.reason, "last_swept": self.reconciled.last_swept,
                "checked": self.reconciled.checked, "removed": self.reconciled.removed},
            "deleted": self.deleted,
            "kept": self.kept,
            "unchanged": self.unchanged,
            "still_waiting": self.still_waiting,
            **({"untagged_waiting": self.untagged_waiting} if self.untagged_waiting else {}),
            "still_failing": self.still_failing,
            "qbo_calls": self.qbo_calls,
            "clio_calls": self.clio_calls,
            **({"receipts": {"filed": self.receipts_filed, "bytes": self.receipt_bytes,
                             "failed": self.receipts_failed,
                             **({"skipped": [{"purchase_id": s.purchase_id, "file": s.file_name,
                                              "reason": s.reason}
                                             for s in self.receipts_skipped[:DETAIL_LIMIT]]}
                                if self.receipts_skipped else {})}}
               if self.receipts_filed or self.receipts_failed or self.receipts_skipped
               else {}),
        }

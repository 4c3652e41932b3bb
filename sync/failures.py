"""A run's failures: recorded once per line and reason, counted again while they recur, and
closed once the purchase is read and the failure does not come back (docs/failures.md).

This part owns the ``failures`` table; the rest of a run tells it what failed and which lines
are settled (``RunState.raised``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync.batches import chunks
from hardcost.sync.http import ApiError
from hardcost.sync.metrics import FAILURES
from hardcost.sync.qbo import transaction_url
from hardcost.sync.rules import LineFailure, PlannedEntry
from hardcost.sync.run_state import RunState, entry_label
from hardcost.sync.store import EntryLink, Failure, FailureKind
from hardcost.sync.summary import FailureItem, keep

RECEIPT_CODES = "receipt_"
"""The code prefix of receipts' failures (``sync/receipts.py``): the receipts step retries them
and closes them once filed; reading the purchase again neither retries nor closes them."""


class Failures:
    """Records and closes one firm's failures."""

    def __init__(self, sessions: sessionmaker[Session], firm_id: int, *,
                 clock: Callable[[], datetime], sandbox_links: bool = False) -> None:
        self.sessions = sessions
        self.firm_id = firm_id
        self.clock = clock
        self.sandbox_links = sandbox_links

    def record(self, state: RunState, failure: LineFailure, kind: FailureKind,
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

    def record_write(self, state: RunState, entry: PlannedEntry, exc: ApiError) -> None:
        """Clio did not take a new entry."""
        message = f"{entry_label(entry)} could not be written to Clio: {exc.message}"
        failure = LineFailure(entry.key.purchase_id, f"clio_{exc.code or exc.status or 'error'}"
                              .lower()[:60], message, entry.key.customer_id, entry.key.line_id)
        self.record(state, failure, exc.kind, False, detail=str(exc))

    def record_edit(self, state: RunState, entry: PlannedEntry, link: EntryLink,
                    exc: ApiError) -> None:
        """Clio did not take an edit of an imported entry."""
        message = (f"{entry_label(entry)} was edited in QuickBooks, but its Clio entry "
                   f"#{link.clio_activity_id} could not be updated: {exc.message}")
        code = f"clio_update_{exc.code or exc.status or 'error'}".lower()[:60]
        failure = LineFailure(entry.key.purchase_id, code, message, entry.key.customer_id,
                              entry.key.line_id)
        self.record(state, failure, exc.kind, False, detail=str(exc))

    def close_settled(self, state: RunState, purchase_ids: list[str]) -> None:
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
                    if (row.purchase_id, row.customer_id, row.line_id, row.code) in state.raised \
                            or row.code.startswith(RECEIPT_CODES):
                        continue  # a receipt's failure closes once it is filed (receipts.py)
                    row.resolved_at = now
            session.commit()

    def to_retry(self, state: RunState | None = None) -> set[str]:
        """Purchases whose last failure was ours or a service's, not their data (not looked
        for when the run's first statement found none: ``state.open``)."""
        if state is not None and not state.open.failures:
            return set()
        with self.sessions() as session:
            rows = session.scalars(select(Failure.purchase_id).where(
                Failure.firm_id == self.firm_id, Failure.resolved_at.is_(None),
                Failure.kind.in_([FailureKind.TRANSIENT.value, FailureKind.CONFIG.value]),
                Failure.purchase_id != "?", Failure.code.not_like(RECEIPT_CODES + "%")))
            return set(rows)

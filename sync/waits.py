"""Expenses that wait: the questions a run asks (which matter, which contact, no client, a
Bill not paid yet), kept in step with QuickBooks edits, settled when their entry is written,
and imported by themselves once a client's matter appears (docs/purchases.md).

This part owns the ``waiting_expenses`` table (and the no-customer matter cache it keeps
fresh); the writer settles a question through ``settle_written`` and ``settle_one``, in its
own transaction.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync import matter_cache, suggestions
from hardcost.sync.batches import chunks
from hardcost.sync.bills import ON_ENTRY
from hardcost.sync.clio import ClioClient, Contact
from hardcost.sync.http import ApiError, ReconnectRequired
from hardcost.sync.matching import Resolution
from hardcost.sync.rules import PlannedEntry, QboKey
from hardcost.sync.run_state import Asked, Key, RunState, key_tuple
from hardcost.sync.store import WaitingExpense, WaitReason
from hardcost.sync.summary import RunSummary, WaitingItem, keep

log = logging.getLogger(__name__)

QUESTION_BATCH = 100
"""Questions recorded together, in one transaction (as ``WRITE_BATCH`` writes are)."""


class Waits:
    """One firm's questions."""

    def __init__(self, sessions: sessionmaker[Session], firm_id: int, clio: ClioClient, *,
                 clock: Callable[[], datetime], stopping: threading.Event) -> None:
        self.sessions = sessions
        self.firm_id = firm_id
        self.clio = clio
        self.clock = clock
        self.stopping = stopping

    def ask(self, state: RunState, entry: PlannedEntry, resolution: Resolution,
            dry_run: bool, *, note: str | None = None) -> None:
        """Record the question now (``queue`` and ``flush``)."""
        self.queue(state, entry, resolution, dry_run, note=note)
        self.flush(state)

    def queue(self, state: RunState, entry: PlannedEntry, resolution: Resolution,
              dry_run: bool, *, note: str | None = None) -> None:
        """A question for the run's next batch (``flush`` records it; the run flushes its
        questions with its writes, and once it holds ``QUESTION_BATCH``). A matter question
        carries the suggestion the firm's history supports (its matter first among the
        candidates) and ``note`` (why a rule did not apply)."""
        assert resolution.reason is not None
        state.raised.add((entry.key.purchase_id, entry.key.customer_id, entry.key.line_id, "*"))
        state.questions.append(Asked(entry, resolution, dry_run, note))
        if len(state.questions) >= QUESTION_BATCH:
            self.flush(state)

    def flush(self, state: RunState) -> None:
        """Record the queued questions: one read of their rows, one commit for the batch
        (as each was recorded by itself before: a key another process recorded a moment ago
        makes the batch go again one question at a time, as it did)."""
        asked, state.questions = state.questions, []
        if not asked:
            return
        with self.sessions() as session:
            counted = self._record(session, state, asked)
            if not any(a.dry_run for a in asked):
                try:
                    session.commit()
                except IntegrityError:
                    session.rollback()
                    counted = []
                    for one in asked:
                        counted += self._record(session, state, [one])
                        try:
                            session.commit()
                        except IntegrityError:  # recorded by another process meanwhile
                            session.rollback()
        for count in counted:
            count()

    def _record(self, session: Session, state: RunState, asked: list[Asked]
                ) -> list[Callable[[], None]]:
        """The questions' rows, added or updated in ``session`` (not committed); what each
        adds to the run's summary, to count once they are recorded."""
        summary = state.summary
        rows = self._rows_of(session, [a.entry.key for a in asked])
        # The history of each client asked about which matter, read before any row changes
        # (one read a client, not a question).
        histories = {contact_id: suggestions.history(session, self.firm_id, contact_id)
                     for contact_id in dict.fromkeys(
                         a.resolution.contact.id for a in asked
                         if a.resolution.reason == WaitReason.SEVERAL_MATTERS
                         and a.resolution.contact is not None
                         and len(a.resolution.candidates) >= 2)}
        counted: list[Callable[[], None]] = []
        for one in asked:
            entry, resolution = one.entry, one.resolution
            assert resolution.reason is not None
            row = rows.get(key_tuple(entry.key))
            if row is not None and answered_for_good(row, entry):
                counted.append(partial(_count_unchanged, summary))
                continue
            candidates, suggestion = list(resolution.candidates), None
            contact_id = resolution.contact.id if resolution.contact else None
            if resolution.reason == WaitReason.SEVERAL_MATTERS:
                candidates, suggestion = suggestions.suggest_from(
                    entry, contact_id, candidates, histories.get(contact_id or 0))
            hints = {**(suggestion.to_json() if suggestion else {}),
                     **({"note": one.note} if one.note else {})} or None
            # The same matters in another order (a new suggestion) are the same question.
            new = row is None or row.resolved_at is not None or \
                row.reason != resolution.reason.value or \
                _choice_ids(row.candidates) != _choice_ids(candidates)
            counted.append(partial(_count_asked, summary, entry, resolution, new))
            if one.dry_run:
                continue
            if row is None:
                row = WaitingExpense(firm_id=self.firm_id, realm_id=entry.key.realm_id,
                                     purchase_id=entry.key.purchase_id,
                                     customer_id=entry.key.customer_id,
                                     line_id=entry.key.line_id)
                session.add(row)
                rows[key_tuple(entry.key)] = row
            shown_before = _shown(row)
            row.reason = resolution.reason.value
            row.contact_id = contact_id
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
        return counted

    def _rows_of(self, session: Session, keys: list[QboKey]) -> dict[Key, WaitingExpense]:
        """The question rows (open or answered) of these keys, in one read a chunk."""
        wanted = {key_tuple(k) for k in keys}
        found: dict[Key, WaitingExpense] = {}
        for realm_id in sorted({k.realm_id for k in keys}):
            ids = sorted({k.purchase_id for k in keys if k.realm_id == realm_id})
            for chunk in chunks(ids, 500):
                for row in session.scalars(select(WaitingExpense).where(
                        WaitingExpense.firm_id == self.firm_id,
                        WaitingExpense.realm_id == realm_id,
                        WaitingExpense.purchase_id.in_(chunk))):
                    key = (row.realm_id, row.purchase_id, row.customer_id, row.line_id)
                    if key in wanted:
                        found[key] = row
        return found

    def open_of(self, session: Session, realm_id: str, purchase_ids: list[str]
                ) -> dict[str, list[WaitingExpense]]:
        """The open questions of these purchases, by purchase id (read in the caller's
        session)."""
        found: dict[str, list[WaitingExpense]] = {}
        for chunk in chunks(sorted(set(purchase_ids)), 500):
            for row in session.scalars(select(WaitingExpense).where(
                    WaitingExpense.firm_id == self.firm_id,
                    WaitingExpense.realm_id == realm_id,
                    WaitingExpense.resolved_at.is_(None),
                    WaitingExpense.resolution.is_(None),
                    WaitingExpense.purchase_id.in_(chunk))):
                found.setdefault(row.purchase_id, []).append(row)
        return found

    def where_a_matter_appeared(self, state: RunState) -> Iterator[
            tuple[PlannedEntry, Resolution]]:
        """Expenses waiting because their client had no open matter import by themselves once
        one exists: each such expense with its client's matters now (one matter: resolved;
        several: asked again). Only the clients with such expenses are asked (once each,
        cached). Those this run already asked about (its own questions, and earlier ones it
        read again) are left as they are: none is looked for when none waited for a matter
        as the run began (``state.open``)."""
        if not state.open.matter_waits:
            return
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
                    key_tuple(entry.key) in state.asked_before or self.stopping.is_set():
                continue
            assert row.contact_id is not None
            contact = Contact(row.contact_id, row.customer_name, "", None)
            resolution = state.resolver.choose_matter(entry, contact, "stored")
            if resolution.resolved or resolution.reason != WaitReason.NO_MATTER:
                yield entry, resolution

    def no_longer_awaiting_payment(self, state: RunState) -> set[str]:
        """Bills waiting for payment when the firm now imports Bills on entry: read again."""
        if state.settings.bills != ON_ENTRY or not state.open.payment_waits:
            return set()
        with self.sessions() as session:
            return set(session.scalars(select(WaitingExpense.purchase_id).where(
                WaitingExpense.firm_id == self.firm_id, WaitingExpense.resolved_at.is_(None),
                WaitingExpense.reason == WaitReason.PAYMENT.value)))

    def untagged_waiting(self) -> bool:
        with self.sessions() as session:
            return session.scalars(select(WaitingExpense.id).where(
                WaitingExpense.firm_id == self.firm_id, WaitingExpense.resolved_at.is_(None),
                WaitingExpense.reason == WaitReason.NO_CUSTOMER.value).limit(1)).first() \
                is not None

    def refresh_matter_cache(self) -> None:
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


# -- settled by the writer, in its transaction -------------------------------------------------

def settle_written(session: Session, firm_id: int, written: dict[Key, tuple[int, int]],
                   now: datetime) -> None:
    """The open questions of a batch's written entries are answered ``imported``:
    ``written`` maps each entry's key to its (Clio entry id, matter id)."""
    waiting = session.execute(select(
        WaitingExpense.id, WaitingExpense.realm_id, WaitingExpense.purchase_id,
        WaitingExpense.customer_id, WaitingExpense.line_id).where(
        WaitingExpense.firm_id == firm_id, WaitingExpense.resolved_at.is_(None),
        WaitingExpense.purchase_id.in_(sorted({key[1] for key in written})))).all()
    settled = [{"id": row_id, "resolved_at": now, "resolution": "imported",
                "resolved_by": None, "clio_activity_id": found[0],
                "clio_matter_id": found[1]}
               for row_id, *key in waiting
               if (found := written.get(tuple(key))) is not None]  # type: ignore[arg-type]
    if settled:
        session.execute(update(WaitingExpense), settled)


def settle_one(session: Session, firm_id: int, key: QboKey, now: datetime, *, resolution: str,
               resolved_by: str | None, clio_activity_id: int, clio_matter_id: int) -> None:
    """The open question of one written entry is answered (a person's choice, a rule...)."""
    session.execute(update(WaitingExpense).where(
        *waiting_key(firm_id, key), WaitingExpense.resolved_at.is_(None)
    ).values(resolved_at=now, resolution=resolution, resolved_by=resolved_by,
             clio_activity_id=clio_activity_id, clio_matter_id=clio_matter_id))


def waiting_key(firm_id: int, key: QboKey) -> list[Any]:
    return [WaitingExpense.firm_id == firm_id, WaitingExpense.realm_id == key.realm_id,
            WaitingExpense.purchase_id == key.purchase_id,
            WaitingExpense.customer_id == key.customer_id,
            WaitingExpense.line_id == key.line_id]


def answered_for_good(row: WaitingExpense, entry: PlannedEntry) -> bool:
    """Not a question any more: a person is answering it now; it went into Clio (a person's
    choice or a later run, possibly since this run read its links); or someone said "not a
    client cost" and the purchase is as it was then (an edit in QuickBooks asks again); or a
    person is undoing a choice (``sync.undo``), which reopens it when done."""
    if row.resolution in ("claimed", "linked", "imported", "undoing"):
        return True
    return row.resolution == "not_client_cost" and \
        row.entry.get("sync_token") == entry.sync_token


def _shown(row: WaitingExpense) -> tuple[Any, ...]:
    """What a prompt shows of its expense: a change means the prompt is updated."""
    entry = row.entry or {}
    return (row.amount, row.txn_date, row.customer_name, entry.get("memo"),
            entry.get("reference"), entry.get("payee"),
            [c.get("id") for c in row.candidates or []], row.suggestion)


def _count_unchanged(summary: RunSummary) -> None:
    summary.unchanged += 1


def _count_asked(summary: RunSummary, entry: PlannedEntry, resolution: Resolution,
                 new: bool) -> None:
    assert resolution.reason is not None
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


def _choice_ids(candidates: list[dict[str, Any]] | None) -> list[tuple[Any, Any]]:
    return sorted((str(c.get("kind")), c.get("id")) for c in candidates or [])

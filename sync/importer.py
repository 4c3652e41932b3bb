"""One import run for one firm: read QuickBooks, plan, resolve matters, write Clio, record.

``Importer`` conducts; each job is a part of its own (docs/design.md, "One run, in parts"):

- ``sync/reader.py`` reads pages of purchases and Bills and keeps each stream's watermark;
- ``sync/writer.py`` writes each entry to Clio exactly once (its invariant is written at its
  top): the only code that creates or settles a link;
- ``sync/placer.py`` decides where each new entry goes: a matter, a rule's matter, a question;
- ``sync/waits.py`` keeps the questions; ``sync/failures.py`` the failures;
- ``sync/changes.py`` follows edits of purchases imported before.

Delivery is at-least-once from QuickBooks and exactly-once into Clio: the watermark moves only
past what is recorded, and re-reads create nothing. One bad purchase never stops the run: it
becomes a recorded failure with a class (config, transient, data) and a sentence a bookkeeper
understands.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync import receipts, run_record
from hardcost.sync.bills import ON_PAYMENT
from hardcost.sync.changes import Changes, PageWork, sort_entries
from hardcost.sync.clio import ClioClient
from hardcost.sync.failures import Failures
from hardcost.sync.http import ApiError, ReconnectRequired
from hardcost.sync.log_context import run_context
from hardcost.sync.matching import MatterResolver, Resolution
from hardcost.sync.metrics import RUN_SECONDS, RUNS
from hardcost.sync.placer import Placer
from hardcost.sync.qbo import QboClient
from hardcost.sync.reader import BILLS_STREAM, WATERMARK_STREAM, PageReader, Reader, lagged
from hardcost.sync.removals import REMOVALS_STREAM, Removals, note_removals, note_voided
from hardcost.sync.rules import LineFailure, plan_safely
from hardcost.sync.run_record import FirmNotReady, OneConnection, check_ready, collect
from hardcost.sync.run_state import RunState, bills_on
from hardcost.sync.store import (
    PROVIDER_FOR_SERVICE,
    ContactLink,
    FailureKind,
    Firm,
    FirmSettings,
    WaitReason,
    utcnow,
)
from hardcost.sync.summary import RunProgress, RunStopped, RunSummary, keep
from hardcost.sync.tokens import broken_reason, mark_broken
from hardcost.sync.waits import Waits
from hardcost.sync.writer import LATE_WRITE, Writer

log = logging.getLogger(__name__)

SHUTDOWN = threading.Event()
"""Set when the process is asked to stop: runs finish the entry they are writing, then stop."""


@dataclass
class _Parts:
    """A run's parts, made for it with the importer's sessions, clients and stop event."""

    reader: Reader
    writer: Writer
    waits: Waits
    failures: Failures
    changes: Changes
    placer: Placer


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
        self.late_write: timedelta = LATE_WRITE
        self.on_progress: Callable[[RunProgress], None] | None = None
        """Told how far each run has got (after each page read and each entry handled)."""
        self.finish_with: Callable[[Session], object] | None = None
        """More work for the transaction that finishes the run's row (the scheduler gives
        the run's lease back in it); ``finished_with`` is True once that committed."""
        self.finished_with = False
        self.began = False  # the run got past its readiness check (``run``'s ``run_id``)

    def _parts(self) -> _Parts:
        failures = Failures(self.sessions, self.firm_id, clock=self.clock,
                            sandbox_links=self.sandbox_links)
        reader = Reader(self.sessions, self.firm_id, self.qbo, progress=self._progress,
                        counting=self.on_progress is not None)
        writer = Writer(self.sessions, self.firm_id, self.clio, clock=self.clock,
                        stopping=self.stopping, failures=failures, progress=self._progress,
                        late_write=self.late_write)
        waits = Waits(self.sessions, self.firm_id, self.clio, clock=self.clock,
                      stopping=self.stopping)
        changes = Changes(self.sessions, self.firm_id, self.clio, clock=self.clock,
                          failures=failures)
        placer = Placer(self.sessions, self.firm_id, clock=self.clock, stopping=self.stopping,
                        reader=reader, writer=writer, waits=waits, changes=changes,
                        failures=failures, progress=self._progress)
        return _Parts(reader, writer, waits, failures, changes, placer)

    def writer(self) -> Writer:
        """The writer outside a run (a choice, a group): ``writer().write(writer_state(…), …)``."""
        return self._parts().writer

    def writer_state(self, trigger: str) -> RunState:
        """What ``Writer.write`` needs outside a run."""
        with self.sessions() as session:
            firm = session.get(Firm, self.firm_id)
            settings = session.get(FirmSettings, self.firm_id)
            if firm is None or settings is None:
                raise FirmNotReady(f"There is no firm {self.firm_id}.")
            stored = self._stored_contacts(session)
        summary = RunSummary(self.firm_id, None, False, self.clock())
        return RunState(firm, settings, summary, MatterResolver(self.clio, stored),
                        settings.clio_entry_type or "HardCostEntry", actor=trigger)

    def _stored_contacts(self, session: Session) -> dict[tuple[str, str], int]:
        return {(link.qbo_type, link.qbo_id): link.clio_contact_id
                for link in session.scalars(select(ContactLink).where(
                    ContactLink.firm_id == self.firm_id))}

    # -- the run --------------------------------------------------------------------------

    def run(self, *, trigger: str = "manual", dry_run: bool = False,
            purchase_ids: set[str] | None = None,
            removed: dict[str, str] | None = None, actor: str | None = None,
            run_id: int | None = None) -> RunSummary:
        """One import. ``purchase_ids`` limits it to those purchases (a Retry button, a
        webhook): they are read by id, the watermark is left where it is and no CDC sweep is
        made. ``removed`` (purchase id → ``deleted``/``voided``) are purchases a webhook said
        left QuickBooks: recorded, then handled with any others still open. ``actor`` is the
        Slack user who asked for the run, for the audit trail (default: the trigger).
        ``run_id``: the run's row, made with its lease (``sync.leases.RunRow``)."""
        with run_context(self.firm_id):
            return self._logged_run(trigger, dry_run, purchase_ids, removed, actor, run_id)

    def _logged_run(self, trigger: str, dry_run: bool, purchase_ids: set[str] | None,
                    removed: dict[str, str] | None, actor: str | None,
                    made: int | None) -> RunSummary:
        started = time.monotonic()
        qbo_calls, clio_calls = self.qbo.calls, self.clio.calls
        with self.sessions() as session:
            begun = run_record.start(session, self.firm_id)  # one round trip
            firm, settings = begun.firm, begun.settings
            check_ready(firm, settings, begun.broken)
            self.began = True  # the run's row (its lease claim's, ``made``) is in use now
            run_id = None if dry_run else run_record.open_row(
                session, self.firm_id, trigger, self.clock(), made)
            stored = self._stored_contacts(session)
        log.debug("run %s started (%s%s)", run_id, trigger, ", dry run" if dry_run else "")
        summary = RunSummary(self.firm_id, run_id, dry_run, self.clock(), actor=actor)
        outcome = "crashed"
        state = RunState(firm, settings, summary, MatterResolver(self.clio, stored),
                         settings.clio_entry_type or "HardCostEntry", actor=actor or trigger,
                         waited_before=self.qbo.waited + self.clio.waited, open=begun.open)
        try:
            if removed and not dry_run:
                state.open.removals = True
                note_removals(self.sessions, self.firm_id, firm.qbo_realm_id or "", removed,
                              "webhook", self.clock())
            with self._one_connection():
                self._run(self._parts(), state, dry_run, purchase_ids)
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
            summary.entries_expected = state.entries_expected()
            summary.qbo_calls = self.qbo.calls - qbo_calls
            summary.clio_calls = self.clio.calls - clio_calls
            self.clio.give_back()  # the rest of its Clio block, for the next run or replica
            if not dry_run:
                self.finished_with = run_record.finish(self.sessions, summary, self.clock,
                                                       also=self.finish_with)
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
            self.sessions = OneConnection(shared, connection)
            try:
                yield
            finally:
                self.sessions = shared

    def _progress(self, state: RunState, stage: str, purchases_read: int | None = None
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
            run_id=summary.run_id, entries_expected=state.entries_expected(),
            purchases_expected=state.purchases_expected,
            clio_rate_limit=getattr(self.clio, "rate_limit", None)))

    def _run(self, parts: _Parts, state: RunState, dry_run: bool,
             purchase_ids: set[str] | None) -> None:
        """Read, plan and write a QuickBooks page at a time: only one page of purchases (and
        one batch of writes) is held, whatever the size of the backlog. The watermark moves
        after each page past what is recorded (``PageReader``), so a run that dies carries
        on from its last whole page."""
        reading, writer = parts.reader, parts.writer
        reading.marks = state.open.marks  # read with the firm (``run_record.start``)
        refetch = set() if dry_run else writer.recover_pending(state) | writer.superseded(state)
        if purchase_ids is not None:
            by_id: dict[str, dict[str, Any]] = {}
            unkeyed: list[dict[str, Any]] = []
            collect(by_id, unkeyed, reading.by_id(state, purchase_ids | refetch))
            purchases = [*by_id.values(), *unkeyed]
            del by_id, unkeyed
            if not dry_run:
                state.open.removals |= bool(note_voided(
                    self.sessions, self.firm_id, state.firm.qbo_realm_id or "", purchases,
                    self.clock()))
                self._removals(parts, state).handle()
            self._handle_page(parts, state, purchases, dry_run)
            del purchases
            self._finish_pages(parts, state, dry_run, targeted=True)
            return
        refetch |= parts.failures.to_retry(state) | parts.waits.no_longer_awaiting_payment(state)
        reader = PageReader(*reading.watermark(), state.settings.start_date, refetch)
        bill_reader = None
        if bills_on(state):
            # The same refetch set: a Bill its pages bring is not read again by id.
            bill_reader = PageReader(*reading.watermark(BILLS_STREAM),
                                     state.settings.start_date, refetch)
        swept_quiet = True  # the CDC sweep found nothing at all
        for purchases, source in reading.pages(state, reader, bill_reader):
            if not dry_run:
                voided = note_voided(self.sessions, self.firm_id, state.firm.qbo_realm_id or "",
                                     purchases, self.clock())
                state.open.removals |= bool(voided)
                if not reader.swept:
                    reader.swept = True
                    removals = self._removals(parts, state)
                    removals.sweep(reader.server_time)
                    swept_quiet = removals.quiet
                    if state.settings.bills == ON_PAYMENT:
                        # Bills whose payments changed are read again: their balance, hence
                        # whether and when they import, may have moved. A deleted payment
                        # does not say which Bills it paid: every imported Bill is read.
                        refetch |= removals.paid
                        if removals.payments_gone:
                            refetch |= writer.bills_with_entries()
                    removals.handle()
                elif voided:
                    self._removals(parts, state).handle()
            self._handle_page(parts, state, purchases, dry_run)
            del purchases
            if not dry_run and source is not None and \
                    (mark := source.progress_mark(self.clock())) is not None:
                reading.save_watermark(mark, source.progress_start,
                                       stream=WATERMARK_STREAM if source is reader
                                       else BILLS_STREAM)
        if not dry_run and not reader.swept:  # nothing read at all (no page came back)
            removals = self._removals(parts, state)
            removals.sweep(None)
            swept_quiet = removals.quiet
            removals.handle()
        self._finish_pages(parts, state, dry_run, targeted=False)
        if not dry_run:
            quiet = swept_quiet and not state.summary.purchases_read  # see save_watermark
            reading.save_watermark(reader.final_mark(self.clock()), state.settings.start_date,
                                   quiet=quiet)
            if bill_reader is not None:
                reading.save_watermark(bill_reader.final_mark(self.clock()),
                                       state.settings.start_date, stream=BILLS_STREAM,
                                       quiet=quiet)
            reading.save_watermark(lagged(reader.server_time, self.clock()), None,
                                   stream=REMOVALS_STREAM, quiet=quiet)

    def _handle_page(self, parts: _Parts, state: RunState, purchases: list[dict[str, Any]],
                     dry_run: bool) -> None:
        """Plan one page of purchases, follow edits, write or ask, and record it all."""
        realm_id = state.firm.qbo_realm_id or ""
        state.summary.purchases_read += len(purchases)
        rules = parts.reader.rules(state, purchases)
        plans = [plan_safely(p, realm_id, rules) for p in purchases]
        by_id = {str(p["Id"]): p for p in purchases
                 if isinstance(p, dict) and p.get("Id") is not None}
        page_ids = [p.purchase_id for p in plans]
        with self.sessions() as session:  # one read of the page's links and questions
            links_of = parts.writer.links_of(session, realm_id, page_ids)
            waiting_of = parts.waits.open_of(session, realm_id, page_ids)
        work = PageWork()
        superseding = False
        for plan in plans:
            for skip in plan.skips:
                state.summary.skipped += 1
                keep(state.summary.skips, skip.reason)
            for failure in plan.failures:
                parts.failures.record(state, failure, FailureKind.DATA, dry_run)
            links = links_of.get(plan.purchase_id, [])
            waiting = waiting_of.get(plan.purchase_id, [])
            sort_entries(state, plan, links, waiting, by_id.get(plan.purchase_id), work)
            if plan.billed_keys and links:
                parts.changes.billed_in_quickbooks(state, plan, links, dry_run)
            if not dry_run and (links or waiting):
                superseding = True
                parts.changes.supersede(state, plan, by_id.get(plan.purchase_id), links,
                                        waiting)
        del by_id, links_of, waiting_of

        for entry, link in work.edited:
            if self.stopping.is_set():
                raise RunStopped.by(self.stopping)
            parts.changes.follow_edit(state, entry, link, dry_run)
        for entry, link, bill in work.unpaid:
            parts.changes.no_longer_paid(state, entry, link, bill, dry_run)
        for entry in work.held:  # nobody is asked: it imports by itself once paid
            parts.waits.queue(state, entry, Resolution(reason=WaitReason.PAYMENT), dry_run)
        parts.placer.place_all(state, work.new, dry_run)
        if not dry_run and superseding:
            self._removals(parts, state).handle_superseded()
        state.obsolete.clear()
        if not dry_run:
            parts.failures.close_settled(state, page_ids)
            # What this page raised is settled in the database now; the run keeps no more.
            done = set(page_ids)
            state.raised = {r for r in state.raised if r[0] not in done}

    def _finish_pages(self, parts: _Parts, state: RunState, dry_run: bool, *,
                      targeted: bool) -> None:
        if not dry_run and not targeted:
            # Expenses waiting for a client's matter import by themselves once one exists.
            for entry, resolution in parts.waits.where_a_matter_appeared(state):
                parts.placer.place(state, entry, resolution, dry_run=False)
            parts.placer.flush(state)
        if not dry_run:
            parts.placer.remember_contacts(state)
            receipts.run_step(self, parts.failures, state)  # after the entries: never holds them
        if not dry_run and state.clio_blocked is None and (
                state.asked_untagged or (state.summary.purchases_read
                                         and parts.waits.untagged_waiting())):
            parts.waits.refresh_matter_cache()

    def _removals(self, parts: _Parts, state: RunState) -> Removals:
        def record(failure: LineFailure, kind: FailureKind, detail: str) -> None:
            parts.failures.record(state, failure, kind, False, detail=detail)

        return Removals(self.sessions, self.firm_id, state.firm.qbo_realm_id or "", self.qbo,
                        self.clio, state.summary, state.settings.deletions, record, self.clock,
                        self.stopping, state.actor, bills=bills_on(state),
                        receipts=state.settings.receipts,
                        work=state.open)

"""The exactly-once writer: the only code that creates a link between a QuickBooks line and a
Clio entry, and the only code that settles one (docs/design.md, "Exactly once").

The invariant, for every line hardcost writes to Clio (a run's batch, a person's choice, a
rule, a grouped answer, an untagged expense's answer):

1. a ``pending`` link for the line's QuickBooks key is committed *before* the Clio POST; the
   link table is unique on that key, so a second writer of the same line finds the link and
   writes nothing (``AlreadyImported``, or the batch skips it);
2. the POST carries the line's marker in its note; a POST that may have happened (a timeout,
   a 5xx with no answer) is looked up by that marker before it is sent again (``HEAL_TRIES``);
3. the result is recorded with the link (``created``, the Clio entry id) in one transaction,
   together with the audit row and the answered question; a link whose POST certainly did not
   happen is dropped, so a later try starts afresh;
4. a link left ``pending`` by a process that died is settled by the next run
   (``recover_pending``): found in Clio by its marker → ``created``; not found → dropped and
   its purchase read again. A link that may still be in flight (a person's choice, or a run
   still marked running) is left alone for ``PENDING_GRACE``; one a dead run wrote moments ago
   is looked up again once ``LATE_WRITE`` has passed.

Links change after they are settled elsewhere, each for one reason: edits of the purchase
(``sync/edits.py``), removals (``sync/removals.py``) and undo (``sync/undo.py``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync import audit, matter_rules, waits
from hardcost.sync.audit import Action
from hardcost.sync.batches import chunks
from hardcost.sync.clio import Activity, ClioClient, CostCoding
from hardcost.sync.clio_errors import HardCostsDisabled, UtbmsRefused
from hardcost.sync.coding import run_coding
from hardcost.sync.failures import Failures
from hardcost.sync.http import ApiError, ServiceDown, TransientError
from hardcost.sync.metrics import ENTRIES
from hardcost.sync.rules import BILL_PREFIX, PlannedEntry, is_bill
from hardcost.sync.run_state import Queued, RunState, count_clio_failure, key_tuple
from hardcost.sync.store import AuditEntry, EntryLink, FirmSettings, LinkState, MatterRule, Run
from hardcost.sync.summary import ImportedEntry, RunStopped, keep

log = logging.getLogger(__name__)

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
HEAL_TRIES = 6
"""Tries of one Clio write within a run: after a 5xx, a timeout or a 429 that outlasted the
client's own retries, the run waits as the retry policy does, looks the entry up by its
marker when the write may have happened, and writes again only when it is not there."""
WRITE_BATCH = 100
"""Entries whose pending links are committed together before their POSTs, and whose results
are recorded together after them. A crash leaves at most this many links for the next run to
look up by marker (one Clio call each)."""


_LINKS = cast(Table, EntryLink.__table__)
_CREATED = update(_LINKS).where(_LINKS.c.id == bindparam("link_id"))
"""A batch's links recorded as created: one row of parameters a link (the columns set)."""
_AUDIT = cast(Table, AuditEntry.__table__)
_AUDIT_INSERT = insert(_AUDIT).returning(_AUDIT.c.id)
"""A batch's audit rows: with RETURNING, SQLAlchemy sends the rows as one multi-row VALUES
("insertmanyvalues") from one cached compiled statement, whatever the batch's size."""


class AlreadyImported(Exception):
    """The entry's link exists: it was written (or is being written) already."""


Progress = Callable[[RunState, str, int | None], None]


class Writer:
    """Writes one firm's entries to Clio exactly once."""

    def __init__(self, sessions: sessionmaker[Session], firm_id: int, clio: ClioClient, *,
                 clock: Callable[[], datetime], stopping: threading.Event,
                 failures: Failures, progress: Progress,
                 late_write: timedelta = LATE_WRITE) -> None:
        self.sessions = sessions
        self.firm_id = firm_id
        self.clio = clio
        self.clock = clock
        self.stopping = stopping
        self.failures = failures
        self.progress = progress
        self.late_write = late_write

    def queue(self, state: RunState, item: Queued) -> None:
        """An entry for the run's next batch (``flush`` writes it; the batch is flushed by
        the run once it holds ``WRITE_BATCH``)."""
        state.batch.append(item)

    def links_of(self, session: Session, realm_id: str, purchase_ids: list[str]
                 ) -> dict[str, list[EntryLink]]:
        """The links of these purchases, by purchase id (read in the caller's session)."""
        found: dict[str, list[EntryLink]] = {}
        for chunk in chunks(sorted(set(purchase_ids)), 500):
            for link in session.scalars(select(EntryLink).where(
                    EntryLink.firm_id == self.firm_id, EntryLink.realm_id == realm_id,
                    EntryLink.purchase_id.in_(chunk))):
                found.setdefault(link.purchase_id, []).append(link)
        return found

    # -- batched writes (a run's entries) ---------------------------------------------------

    def flush(self, state: RunState) -> None:
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
        posted: list[tuple[Queued, int, Activity]] = []
        dropped: list[int] = []
        stopped = False
        try:
            taken: set[int] = set()  # links this batch has written (or dropped) already
            for n, item in enumerate(queued):
                entry = item.entry
                link_id = link_ids.get(key_tuple(entry.key))
                if link_id is None or link_id in taken:
                    # Another run or a person recorded it first; or the same line came twice
                    # in the batch (a page that lists a purchase twice): one link, one POST.
                    summary.unchanged += 1
                    state.handled += 1
                    continue
                if self.stopping.is_set():
                    # Never sent: nothing can be in Clio, so the links simply go.
                    dropped += [i for q in queued[n:]
                                if (i := link_ids.get(key_tuple(q.entry.key))) is not None
                                and i not in taken]
                    stopped = True
                    break
                taken.add(link_id)
                if state.clio_blocked is not None:
                    dropped.append(link_id)
                    self.failures.record_write(state, entry, state.clio_blocked)
                    state.handled += 1
                    continue
                try:
                    activity = self._post_healing(state, entry, item.matter_id)
                except ApiError as exc:
                    if not (isinstance(exc, ServiceDown) and exc.ambiguous):
                        dropped.append(link_id)  # nothing was created: start afresh later
                    self.failures.record_write(state, entry, exc)
                    count_clio_failure(state, exc)
                    state.handled += 1
                    self.progress(state, "writing", None)
                    continue
                ENTRIES.labels("created").inc()
                state.consecutive_transient = 0
                posted.append((item, link_id, activity))
                state.posting = len(posted)
                self.progress(state, "writing", None)
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
        self.progress(state, "writing", None)
        if stopped:  # the rest of the page was not written: the watermark must not pass it
            raise RunStopped.by(self.stopping)

    def _insert_pending_batch(self, queued: list[Queued],
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
            if key_tuple(q.entry.key) not in ids:
                revived = self._insert_pending(q.entry, q.matter_id, run_id)
                if revived is not None:
                    ids[key_tuple(q.entry.key)] = revived
        return ids

    def _record_results(self, state: RunState, posted: list[tuple[Queued, int, Activity]],
                        dropped: list[int]) -> None:
        """One transaction for a batch's outcome (see ``flush``)."""
        if not posted and not dropped:
            return
        now = self.clock()
        with self.sessions() as session:
            if posted:
                # Core statements on the tables (the ORM's bulk paths rebuild each row's
                # parameters, and a multi-row VALUES compiles afresh per batch): the same
                # rows, a compiled statement cached once.
                session.execute(_CREATED, [
                    {"link_id": link_id, "state": LinkState.CREATED,
                     "clio_activity_id": activity.id, "clio_etag": activity.etag,
                     "written": activity.written_fields(), "updated_at": now}
                    for _, link_id, activity in posted])
                waits.settle_written(session, self.firm_id, {
                    key_tuple(item.entry.key): (activity.id, item.matter_id)
                    for item, _, activity in posted}, now)
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
                if trail:  # one multi-row INSERT for the batch ("insertmanyvalues")
                    session.execute(_AUDIT_INSERT, trail).all()
                for rule_id, times in uses.items():
                    matter_rules.mark_used(session, rule_id, now, times=times)
            if dropped:
                session.execute(delete(EntryLink).where(EntryLink.firm_id == self.firm_id,
                                                        EntryLink.id.in_(dropped)))
            session.commit()

    def write(self, state: RunState, entry: PlannedEntry, matter_id: int, *,
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
            waits.settle_one(session, self.firm_id, entry.key, now, resolution=resolution,
                             resolved_by=resolved_by, clio_activity_id=activity.id,
                             clio_matter_id=matter_id)
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

    def _post_healing(self, state: RunState, entry: PlannedEntry, matter_id: int) -> Activity:
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


    def _post(self, state: RunState, entry: PlannedEntry, matter_id: int) -> Activity:
        resolver = state.resolver
        kwargs = dict(on=entry.date, price=entry.amount, matter_id=matter_id,
                      note=entry.note, reference=entry.reference,
                      user_id=resolver.user_for(entry, state.settings.clio_user_id),
                      vendor_id=resolver.vendor_for(entry))
        coding = self.coding(state, entry)
        try:
            return self.clio.create_entry(
                entry_type=state.entry_type, expense_category_id=coding.category_id,
                utbms_code_id=coding.utbms_code_id, non_billable=coding.non_billable,
                **kwargs)  # type: ignore[arg-type]
        except UtbmsRefused as exc:
            raise self.utbms_refused(state, entry, exc) from None
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
                                          utbms_code_id=coding.utbms_code_id,
                                          non_billable=coding.non_billable,
                                          **kwargs)  # type: ignore[arg-type]

    def coding(self, state: RunState, entry: PlannedEntry) -> CostCoding:
        """The category, UTBMS code and billable status the entry is written with: its
        account's mapping as it is now (``sync/coding.py``)."""
        return run_coding(self.sessions, self.firm_id, self.clio, state, entry)

    def utbms_refused(self, state: RunState, entry: PlannedEntry,
                      exc: UtbmsRefused) -> UtbmsRefused:
        """Clio's refusal over a UTBMS code, told as what to set, for which account."""
        mapped = (state.codings or {}).get(entry.account_id or "")
        account = (mapped.account_name if mapped is not None
                   else f"account {entry.account_id}" if entry.account_id else None)
        where = f" for {account}" if account else ""
        command = f"/hardcost set utbms <code>{where}"
        return UtbmsRefused(exc.service, f"Clio needs a UTBMS expense code on this matter "
                            f"(LEDES billing): {command} (e.g. E124), then retry",
                            status=exc.status, code="utbms_required", detail=exc.detail,
                            request_id=exc.request_id)

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


    def recover_pending(self, state: RunState) -> set[str]:
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

        Not looked for when the run's first statement found no pending link (``state.open``):
        the run holds the firm's lease, so a dead run's link was there before it began.
        """
        if not state.open.pending_links:
            return set()
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


    def bills_with_entries(self) -> set[str]:
        """``bill-<id>`` of every Bill with an entry in Clio: a BillPayment was deleted, and
        CDC does not say which Bills it paid (only its id), so they are all read again (by
        id, a thousand a query); those still paid are left as they are."""
        with self.sessions() as session:
            return set(session.scalars(select(EntryLink.purchase_id).where(
                EntryLink.firm_id == self.firm_id, EntryLink.removed_at.is_(None),
                EntryLink.state == LinkState.CREATED,
                EntryLink.purchase_id.startswith(BILL_PREFIX, autoescape=True)).distinct()))


    def superseded(self, state: RunState | None = None) -> set[str]:
        """Purchases with an entry a change made obsolete that is not removed yet (a run
        stopped between the two): read again, so their new entries are written too. Not
        looked for when the run's first statement found none (``state.open``)."""
        if state is not None and not state.open.superseded:
            return set()
        with self.sessions() as session:
            return set(session.scalars(select(EntryLink.purchase_id).where(
                EntryLink.firm_id == self.firm_id, EntryLink.superseded_at.is_not(None),
                EntryLink.removed_at.is_(None))))


def _audit_key(entry: PlannedEntry) -> dict[str, Any]:
    key = entry.key
    return {"realm_id": key.realm_id, "purchase_id": key.purchase_id,
            "customer_id": key.customer_id, "line_id": key.line_id,
            "client": entry.customer_name}

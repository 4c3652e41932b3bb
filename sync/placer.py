"""Where each new entry goes: its client's one open matter (written), the matter a rule names
(written), or a question for a person (docs/purchases.md, "Which matter").

Contacts and matters are resolved by ``sync/matching.py``; this part decides, then hands the
entry to the writer's batch, the waits or the failures. It owns the contact links the run's
automatic matches leave (``remember_contacts``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync import matter_rules
from hardcost.sync.changes import Changes
from hardcost.sync.failures import Failures
from hardcost.sync.matching import Resolution
from hardcost.sync.reader import Reader
from hardcost.sync.rules import NO_CUSTOMER, PlannedEntry, is_bill
from hardcost.sync.run_state import Queued, RunState
from hardcost.sync.store import ContactLink, MatterRule, WaitReason
from hardcost.sync.summary import ImportedEntry, RunStopped, keep, matter_label
from hardcost.sync.waits import Waits
from hardcost.sync.writer import WRITE_BATCH, Progress, Writer


class Placer:
    """Resolves, then writes or asks, one firm's new entries."""

    def __init__(self, sessions: sessionmaker[Session], firm_id: int, *,
                 clock: Callable[[], datetime], stopping: threading.Event, reader: Reader,
                 writer: Writer, waits: Waits, changes: Changes, failures: Failures,
                 progress: Progress) -> None:
        self.sessions = sessions
        self.firm_id = firm_id
        self.clock = clock
        self.stopping = stopping
        self.reader = reader
        self.writer = writer
        self.waits = waits
        self.changes = changes
        self.failures = failures
        self.progress = progress

    def place_all(self, state: RunState, entries: list[PlannedEntry], dry_run: bool) -> None:
        """A page's new entries: resolved in bulk (contacts, then matters), then each placed;
        the writes go in batches of ``WRITE_BATCH``, the questions with them. Every write
        and question the page queued (its held ones too) is recorded when this returns."""
        self._place_all(state, entries, dry_run)
        self.flush(state)

    def flush(self, state: RunState) -> None:
        """Record the queued questions, then write the queued entries."""
        self.waits.flush(state)
        self.writer.flush(state)

    def _place_all(self, state: RunState, entries: list[PlannedEntry], dry_run: bool) -> None:
        untagged = [e for e in entries if e.key.customer_id == NO_CUSTOMER]
        if untagged:
            # No customer, so no contact to match: a person picks among all the firm's matters.
            entries = [e for e in entries if e.key.customer_id != NO_CUSTOMER]
            state.to_write += len(untagged)
            for entry in untagged:
                self.waits.queue(state, entry, Resolution(reason=WaitReason.NO_CUSTOMER),
                                 dry_run)
                state.handled += 1
            state.asked_untagged = True
        if not entries:
            return
        resolver = state.resolver
        resolver.prepare(entries)
        unsure = [e for e in entries if resolver.needs_customer_info(e)]
        if unsure:
            resolver.customer_info = self.reader.customer_info(
                {e.key.customer_id for e in unsure})
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
                self.flush(state)
                raise RunStopped.by(self.stopping)
            resolution = found if found.contact is None else resolver.choose_matter(
                entry, found.contact, found.contact_source)
            queued = len(state.batch)
            self.place(state, entry, resolution, dry_run)
            if len(state.batch) == queued:  # asked, failed or moved: done already
                state.handled += 1
                self.progress(state, "writing", None)
            elif len(state.batch) >= WRITE_BATCH:
                self.flush(state)

    def place(self, state: RunState, entry: PlannedEntry, resolution: Resolution,
              dry_run: bool) -> None:
        """Write the entry where its matter is known, or where a matter rule sends it;
        otherwise ask (with a note when a rule's matter has closed)."""
        if resolution.resolved:
            self._write(state, entry, resolution, dry_run)
            return
        note = None
        if resolution.reason == WaitReason.SEVERAL_MATTERS and resolution.contact is not None:
            rule = self._rule_for(state, resolution.contact.id, entry)
            if rule is not None:
                matter = next((m for m in state.resolver.matters_of(resolution.contact.id)
                               if m.id == rule.matter_id), None)
                if matter is not None:
                    self._write(state, entry, Resolution(
                        contact=resolution.contact, matter=matter,
                        contact_source=resolution.contact_source), dry_run, rule=rule)
                    return
                note = (f"The rule {matter_rules.describe(rule)} sends these to "
                        f"{rule.matter_label}, which is no longer open or pending in Clio, "
                        "so this one is asked.")
        self.waits.queue(state, entry, resolution, dry_run, note=note)

    def _rule_for(self, state: RunState, contact_id: int,
                  entry: PlannedEntry) -> MatterRule | None:
        if entry.payee is None:
            return None
        if state.rules is None:
            with self.sessions() as session:
                state.rules = matter_rules.active(session, self.firm_id)
        return matter_rules.matching(state.rules, contact_id, entry)

    def _write(self, state: RunState, entry: PlannedEntry, resolution: Resolution,
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
            self.failures.record_write(state, entry, state.clio_blocked)
            return
        if self.changes.moved(state, entry, resolution, label):
            return
        self.writer.queue(state, Queued(entry, matter.id, label, rule))

    def remember_contacts(self, state: RunState) -> None:
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

"""Purchases edited in QuickBooks after their Clio entries were written (docs/purchases.md, "Changes
after import").

A read that returns a purchase whose ``SyncToken`` differs from the one on its links plans it
again. For each entry the purchase still calls for (same key: purchase, customer, line):

- nothing hardcost writes changed (an edit of another line, of a field hardcost does not
  copy) → the new token is stored, nothing is sent to Clio;
- the entry is on a bill (drafts included) → nothing changes in Clio; the run says what
  differs (old → new), with the bill;
- the entry no longer reads as hardcost wrote it (a person changed it in Clio) → not
  overwritten, reported;
- otherwise → one ``PATCH`` with ``If-Match`` (the etag hardcost stored); on 412 the entry is
  read again and, if still untouched by people and unbilled, patched once more.

Whatever the outcome, the answered question of that key (a person's choice) is given the new
planned entry too, so a choice made again after Undo writes the purchase as it is now.

Entries the purchase no longer calls for (its customer changed, a line was removed or left the
import account, ``split-lines`` changed its grouping) are marked ``superseded_at``: that mark
is committed before anything else happens, so a run that stops half way leaves a record the
next run finishes (the purchase is read again, its new entries written, the old ones removed as
for a deleted purchase, in ``Removals.handle_superseded``). When a later edit calls for such an
entry again (the customer changed back), a deleted one is written anew and one left in Clio
(billed, or ``deletions alert``) is followed like any edited entry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync import audit
from hardcost.sync.audit import Action
from hardcost.sync.clio import Activity, ClioClient, CostCoding, holds_marker
from hardcost.sync.clio_errors import PreconditionFailed
from hardcost.sync.http import NotFound, ServiceDown
from hardcost.sync.metrics import ENTRIES
from hardcost.sync.removals import bill_words
from hardcost.sync.rules import PlannedEntry, PurchasePlan, is_voided
from hardcost.sync.store import EntryLink, LinkState, WaitingExpense
from hardcost.sync.summary import ChangedItem, RunSummary

log = logging.getLogger(__name__)

SUPERSEDED = "superseded"  # WaitingExpense.resolution of a question the purchase no longer asks


@dataclass
class Edits:
    """One run's dealings with edited purchases of one firm."""

    sessions: sessionmaker[Session]
    firm_id: int
    clio: ClioClient
    summary: RunSummary
    actor: str
    clock: Callable[[], datetime]
    coding: Callable[[PlannedEntry], CostCoding] | None = None
    """The category, UTBMS code and billable status of an entry's account now: a re-written
    entry takes them (``sync/coding.py``)."""

    # -- same key: follow the edit ---------------------------------------------------------

    def follow(self, entry: PlannedEntry, link: EntryLink) -> str:
        """Bring the link's Clio entry in line with the edited purchase; returns what was
        done (``unchanged``, ``updated``, ``billed``, ``not_overwritten``, ``gone``). Raises
        the client's ``ApiError`` when Clio could not be asked or refused: the token is not
        stored then, so the next run tries again."""
        assert link.clio_activity_id is not None
        written = written_of(link)
        wanted = wanted_of(entry, link.clio_matter_id)
        if same_fields(written, wanted):
            self._settle(link, entry, None, None)
            self.summary.unchanged += 1
            return "unchanged"
        try:
            activity = self.clio.get_activity(link.clio_activity_id)
        except NotFound:
            self._report(link, entry, None, "gone", written, wanted)
            return "gone"
        etag = link.clio_etag or activity.etag
        for attempt in (1, 2):
            if activity.on_bill or activity.billed:
                self._report(link, entry, activity, "billed", written, wanted)
                return "billed"
            if not untouched(activity, written, link.marker):
                self._report(link, entry, activity, "not_overwritten", written, wanted)
                return "not_overwritten"
            try:
                updated = self.clio.update_entry(
                    link.clio_activity_id, etag=etag, on=entry.date, price=entry.amount,
                    note=entry.note, reference=entry.reference,
                    matter_id=int(wanted["matter_id"] or activity.matter_id or 0),
                    coding=None if self.coding is None else self.coding(entry))
            except PreconditionFailed:
                if attempt == 2:
                    raise
                log.info("%s: Clio entry %s changed since it was written; reading it again",
                         link.marker, link.clio_activity_id)
                activity = self.clio.get_activity(link.clio_activity_id)
                etag = activity.etag
                continue
            except ServiceDown as exc:
                if not exc.ambiguous:
                    raise
                again = self.clio.get_activity(link.clio_activity_id)  # did it take?
                if not same_fields(again.written_fields(), wanted):
                    raise
                updated = again
            self._updated(link, entry, activity, updated, written)
            return "updated"
        raise AssertionError("unreachable")

    def _settle(self, link: EntryLink, entry: PlannedEntry, activity: Activity | None,
                written: dict[str, Any] | None, session: Session | None = None) -> None:
        """Store the purchase's new token (and what the entry now says, if known)."""
        own = session is None
        session = session or self.sessions()
        try:
            row = session.get(EntryLink, link.id)
            if row is None:
                return
            row.sync_token = entry.sync_token
            row.superseded_at = None
            if row.state == LinkState.KEPT:  # an obsolete entry left in Clio is called for again
                row.state = LinkState.CREATED
                row.removed_at = None
                row.removal_note = None
            row.updated_at = self.clock()
            if activity is not None and written is not None:
                row.amount = entry.amount
                row.txn_date = entry.date
                row.written = written
                row.clio_etag = activity.etag
                row.clio_matter_id = activity.matter_id or row.clio_matter_id
            # The answered question of this key follows the edit too, as an open one does:
            # should its choice be undone, the expense is asked again, and written, with the
            # purchase as it is now (its amount, date, note and SyncToken).
            session.execute(update(WaitingExpense).where(
                *_waiting_of(self.firm_id, row.realm_id, row.purchase_id, row.customer_id,
                             row.line_id),
                WaitingExpense.resolved_at.is_not(None),
                WaitingExpense.resolution.in_(("linked", "imported")),
            ).values(entry=entry.to_json(), amount=entry.amount, txn_date=entry.date,
                     customer_name=entry.customer_name[:300]))
            if own:
                session.commit()
        finally:
            if own:
                session.close()

    def _updated(self, link: EntryLink, entry: PlannedEntry, before: Activity,
                 after: Activity, written: dict[str, Any]) -> None:
        now = self.clock()
        with self.sessions() as session:
            self._settle(link, entry, after, after.written_fields(), session)
            audit.record(session, self.firm_id, Action.UPDATED, self.actor,
                         **link_key(link), client=entry.customer_name, amount=entry.amount,
                         clio_activity_id=after.id, clio_matter_id=after.matter_id,
                         matter=after.matter_number or before.matter_number,
                         before=shown(before.written_fields()),
                         after=shown(after.written_fields()),
                         run_id=self.summary.run_id, at=now)
            session.commit()
        ENTRIES.labels("updated").inc()
        self.summary.updated += 1
        self.summary.changed_items.append(ChangedItem(
            link.marker, link.purchase_id, "updated", after.id, after.matter_number,
            _brief(before.written_fields(), before.matter_number),
            _brief(after.written_fields(), after.matter_number), None,
            f"updated Clio entry #{after.id} to follow the edit in QuickBooks",
            self.clio.matter_url(after.matter_id)))
        log.info("firm %s: %s updated in Clio (entry %s)", self.firm_id, link.marker, after.id)

    def _report(self, link: EntryLink, entry: PlannedEntry, activity: Activity | None,
                outcome: str, written: dict[str, Any], wanted: dict[str, Any]) -> None:
        """The edit is not applied (billed, changed by a person, gone from Clio): store the
        token so it is said once per edit, and say what differs."""
        entry_id = link.clio_activity_id
        matter = activity.matter_number if activity else None
        now_reads = activity.written_fields() if activity else written
        bill = bill_words(activity) if outcome == "billed" else None
        note = {
            "billed": f"Clio entry #{entry_id} is on {bill}, so it was left as it is: adjust "
                      "the bill in Clio if the client should pay the new figures",
            "not_overwritten": f"Clio entry #{entry_id} was changed in Clio since hardcost "
                               "wrote it, so hardcost did not overwrite it: update it in "
                               "Clio by hand if the edit should reach it",
            "gone": f"Clio entry #{entry_id} is no longer in Clio (deleted there), so the "
                    "edit was not applied",
        }[outcome]
        action = {"billed": Action.CHANGED_AFTER_BILLING,
                  "not_overwritten": Action.NOT_OVERWRITTEN,
                  "gone": Action.NOT_OVERWRITTEN}[outcome]
        now = self.clock()
        with self.sessions() as session:
            self._settle(link, entry, None, None, session)
            audit.record(session, self.firm_id, action, self.actor, **link_key(link),
                         client=entry.customer_name, amount=entry.amount,
                         clio_activity_id=entry_id,
                         clio_matter_id=activity.matter_id if activity else None,
                         matter=matter, before=shown(now_reads), after=shown(wanted),
                         detail=note, run_id=self.summary.run_id, at=now)
            session.commit()
        if outcome == "billed":
            self.summary.changed_after_billing += 1
        else:
            self.summary.not_overwritten += 1
        self.summary.changed_items.append(ChangedItem(
            link.marker, link.purchase_id, outcome, entry_id, matter,
            _brief(now_reads, matter), _brief(wanted, matter), bill, note,
            self.clio.matter_url(activity.matter_id if activity else link.clio_matter_id)))
        log.info("firm %s: edit of %s not applied: %s", self.firm_id, link.marker, note)

    # -- changed key, same client: the entry moves -------------------------------------------

    def move(self, link: EntryLink, entry: PlannedEntry, matter_id: int, label: str) -> bool:
        """Move an obsolete entry of the same client to the new key's matter and figures with
        one PATCH (``If-Match``), and take the link over for the new key. False (nothing
        changed) when the entry is on a bill, was changed by a person, or the new key has a
        link of its own: the caller removes it and writes the new one instead."""
        assert link.clio_activity_id is not None
        with self.sessions() as session:
            taken = session.scalars(select(EntryLink.id).where(
                EntryLink.firm_id == self.firm_id, EntryLink.realm_id == entry.key.realm_id,
                EntryLink.purchase_id == entry.key.purchase_id,
                EntryLink.customer_id == entry.key.customer_id,
                EntryLink.line_id == entry.key.line_id)).first()
        if taken is not None:
            return False
        written = written_of(link)
        activity = self.clio.get_activity(link.clio_activity_id)
        if activity.on_bill or activity.billed or not untouched(activity, written, link.marker):
            return False
        wanted = wanted_of(entry, matter_id)
        try:
            moved = self.clio.update_entry(
                link.clio_activity_id, etag=activity.etag, on=entry.date, price=entry.amount,
                note=entry.note, reference=entry.reference, matter_id=matter_id)
        except PreconditionFailed:
            return False
        except ServiceDown as exc:
            if not exc.ambiguous:
                raise
            moved = self.clio.get_activity(link.clio_activity_id)
            if not same_fields(moved.written_fields(), wanted):
                raise
        now = self.clock()
        key = entry.key
        with self.sessions() as session:
            row = session.get(EntryLink, link.id)
            if row is None or row.removed_at is not None:
                return True  # moved in Clio; whoever settled the row meanwhile keeps it
            old_key = link_key(link)
            row.customer_id = key.customer_id
            row.marker = key.marker
            row.sync_token = entry.sync_token
            row.amount = entry.amount
            row.txn_date = entry.date
            row.written = moved.written_fields()
            row.clio_etag = moved.etag
            row.clio_matter_id = matter_id
            row.superseded_at = None
            row.updated_at = now
            session.execute(update(WaitingExpense).where(
                *_waiting_of(self.firm_id, key.realm_id, key.purchase_id, key.customer_id,
                             key.line_id), WaitingExpense.resolved_at.is_(None),
            ).values(resolved_at=now, resolution="imported", clio_activity_id=moved.id,
                     clio_matter_id=matter_id))
            audit.record(session, self.firm_id, Action.MOVED, self.actor,
                         realm_id=key.realm_id, purchase_id=key.purchase_id,
                         customer_id=key.customer_id, line_id=key.line_id,
                         client=entry.customer_name, amount=entry.amount,
                         clio_activity_id=moved.id, clio_matter_id=matter_id, matter=label,
                         before={**shown(activity.written_fields()),
                                 "customer_id": old_key["customer_id"],
                                 "matter": activity.matter_number},
                         after={**shown(moved.written_fields()), "matter": label},
                         run_id=self.summary.run_id, at=now)
            session.commit()
        ENTRIES.labels("moved").inc()
        self.summary.updated += 1
        self.summary.changed_items.append(ChangedItem(
            key.marker, key.purchase_id, "moved", moved.id, label,
            _brief(activity.written_fields(), activity.matter_number),
            _brief(moved.written_fields(), label), None,
            f"moved Clio entry #{moved.id} to {label}", self.clio.matter_url(matter_id)))
        log.info("firm %s: %s moved to matter %s (entry %s)", self.firm_id, key.marker,
                 matter_id, moved.id)
        return True

    # -- changed key: the old entry goes --------------------------------------------------

    def supersede(self, plan: PurchasePlan, purchase: Any, links: list[EntryLink],
                  waiting: list[WaitingExpense]) -> int:
        """Mark the entries (and questions) the edited purchase no longer calls for; returns
        how many entries were marked. Nothing is marked when the purchase could not be read
        whole (a failure without a customer), is out of the start date's range, or is voided
        (the removal route handles those), nor for a customer whose lines failed."""
        if not isinstance(purchase, dict) or plan.out_of_scope or is_voided(purchase):
            return 0
        if any(not f.customer_id for f in plan.failures):
            return 0
        failing = {f.customer_id for f in plan.failures}
        # Billed in QuickBooks since: the entry is reported (``Changes.billed_in_quickbooks``),
        # never removed by itself; one skipped as not billable now stays as it was written.
        planned = ({(e.key.customer_id, e.key.line_id) for e in plan.entries}
                   | plan.billed_keys | plan.unbillable_keys)
        gone = [link for link in links
                if link.state == LinkState.CREATED and link.removed_at is None
                and link.superseded_at is None
                and (link.customer_id, link.line_id) not in planned
                and link.customer_id not in failing]
        moot = [row for row in waiting
                if (row.customer_id, row.line_id) not in planned
                and row.customer_id not in failing]
        if not gone and not moot:
            return 0
        now = self.clock()
        with self.sessions() as session:
            for link in gone:
                row = session.get(EntryLink, link.id)
                if row is not None and row.removed_at is None:
                    row.superseded_at = now
                    link.superseded_at = now
                    # A person's earlier answer for this key no longer stands: should the
                    # purchase call for the key again, it is asked again.
                    session.execute(update(WaitingExpense).where(
                        *_waiting_of(self.firm_id, link.realm_id, link.purchase_id,
                                     link.customer_id, link.line_id),
                        WaitingExpense.resolution.in_(("linked", "imported")),
                    ).values(resolution=SUPERSEDED))
            for item in moot:
                answer = session.get(WaitingExpense, item.id)
                if answer is not None and answer.resolved_at is None and \
                        answer.resolution is None:
                    answer.resolved_at = now
                    answer.resolution = SUPERSEDED
            session.commit()
        for link in gone:
            log.info("firm %s: %s is no longer called for by purchase %s (edited); its Clio "
                     "entry goes", self.firm_id, link.marker, plan.purchase_id)
        return len(gone)


def _waiting_of(firm_id: int, realm_id: str, purchase_id: str, customer_id: str,
                line_id: str) -> list[Any]:
    return [WaitingExpense.firm_id == firm_id, WaitingExpense.realm_id == realm_id,
            WaitingExpense.purchase_id == purchase_id,
            WaitingExpense.customer_id == customer_id, WaitingExpense.line_id == line_id]


def link_key(link: EntryLink) -> dict[str, Any]:
    return {"realm_id": link.realm_id, "purchase_id": link.purchase_id,
            "customer_id": link.customer_id, "line_id": link.line_id}


def wanted_of(entry: PlannedEntry, matter_id: int | None) -> dict[str, Any]:
    """The fields the entry should have now, in ``EntryLink.written``'s form."""
    return {"price": f"{entry.amount:.2f}", "date": entry.date.isoformat(),
            "note": entry.note, "reference": entry.reference or None, "matter_id": matter_id}


def written_of(link: EntryLink) -> dict[str, Any]:
    """What hardcost last wrote to the entry; for links from before this was kept, what the
    link itself remembers (amount, date, matter)."""
    if link.written:
        return dict(link.written)
    return {"price": f"{link.amount:.2f}", "date": link.txn_date.isoformat(),
            "matter_id": link.clio_matter_id}


FIELDS = ("price", "date", "note", "reference", "matter_id")


def same_fields(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal in every field both know (a link from before ``written`` knows no note)."""
    return all(_norm(name, a[name]) == _norm(name, b[name])
               for name in FIELDS if name in a and name in b)


def untouched(activity: Activity, written: dict[str, Any], marker: str) -> bool:
    """The entry still reads as hardcost wrote it: no person changed it in Clio."""
    if "note" not in written and not holds_marker(activity.note, marker):
        return False
    return same_fields(activity.written_fields(), written)


def shown(fields: dict[str, Any]) -> dict[str, Any]:
    """An entry's fields for the audit trail (the note without its marker line is enough)."""
    return {name: fields.get(name) for name in FIELDS if name in fields}


def _brief(fields: dict[str, Any], matter: str | None) -> dict[str, str]:
    brief = {"amount": str(fields.get("price") or ""), "date": str(fields.get("date") or "")}
    if matter:
        brief["matter"] = matter
    return brief


def _norm(name: str, value: Any) -> Any:
    if name == "price" and value is not None:
        try:
            return Decimal(str(value)).quantize(Decimal("0.01"))
        except ArithmeticError:
            return value
    if name in ("note", "reference"):
        return (str(value) if value is not None else "").strip() or None
    if name == "matter_id" and value is not None:
        try:
            return int(value)
        except (TypeError, ValueError):
            return value
    return value

"""What a run does with a purchase it imported before: an edit followed into Clio, an entry
moved to another matter of the same client, entries made obsolete, a paid Bill that owes
again (docs/purchases.md, "Changes"). The Clio side of each is ``sync/edits.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync import audit
from hardcost.sync.audit import Action
from hardcost.sync.bills import bill_id_of
from hardcost.sync.clio import ClioClient
from hardcost.sync.coding import run_coding
from hardcost.sync.edits import Edits
from hardcost.sync.failures import Failures
from hardcost.sync.http import ApiError, ReconnectRequired
from hardcost.sync.matching import Resolution
from hardcost.sync.rules import PlannedEntry, PurchasePlan
from hardcost.sync.run_state import RunState, count_clio_failure, key_tuple
from hardcost.sync.store import AuditEntry, EntryLink, LinkState, WaitingExpense
from hardcost.sync.summary import ChangedItem

log = logging.getLogger(__name__)

NO_LONGER_PAID = "paid Bill "
BILLED_TOO = "billed in QuickBooks too"
"""How the audit trail's note on an imported line QuickBooks has since billed starts."""
"""How the audit trail's note on a Bill that owes again starts (said once per change)."""


@dataclass
class PageWork:
    """A page's entries sorted against what hardcost already knows of them."""

    new: list[PlannedEntry] = field(default_factory=list)  # to place: write or ask
    edited: list[tuple[PlannedEntry, EntryLink]] = field(default_factory=list)
    held: list[PlannedEntry] = field(default_factory=list)  # Bills' entries waiting for payment
    unpaid: list[tuple[PlannedEntry, EntryLink, dict[str, Any] | None]] = field(
        default_factory=list)  # imported Bills that owe again


def sort_entries(state: RunState, plan: PurchasePlan, links: list[EntryLink],
                 waiting: list[WaitingExpense], bill: dict[str, Any] | None,
                 work: PageWork) -> None:
    """One purchase's planned entries: new (or called for again), edited since written,
    unchanged, held until a Bill is paid, or imported and owing again."""
    unpaid = plan.purchase_id in state.awaiting_payment
    link_of = {(link.customer_id, link.line_id): link for link in links}
    waited = {(row.customer_id, row.line_id) for row in waiting}
    for entry in plan.entries:
        link = link_of.get((entry.key.customer_id, entry.key.line_id))
        if link is None or revivable(link):
            if unpaid:
                work.held.append(entry)
                continue
            work.new.append(entry)
            if (entry.key.customer_id, entry.key.line_id) in waited:
                state.asked_before.add(key_tuple(entry.key))
            continue
        # Still the same purchase: whatever failed before for it is settled.
        state.raised.add((entry.key.purchase_id, entry.key.customer_id,
                          entry.key.line_id, "*"))
        if unpaid:  # imported before (paid then, or on entry): left until paid again
            if link.state == LinkState.CREATED and link.clio_activity_id is not None:
                work.unpaid.append((entry, link, bill))
            else:
                state.summary.unchanged += 1
        elif edited(link, entry):
            work.edited.append((entry, link))
        else:
            state.summary.unchanged += 1


class Changes:
    """Follows changes of one firm's imported purchases."""

    def __init__(self, sessions: sessionmaker[Session], firm_id: int, clio: ClioClient, *,
                 clock: Callable[[], datetime], failures: Failures) -> None:
        self.sessions = sessions
        self.firm_id = firm_id
        self.clio = clio
        self.clock = clock
        self.failures = failures

    def _edits(self, state: RunState) -> Edits:
        return Edits(self.sessions, self.firm_id, self.clio, state.summary, state.actor,
                     self.clock, coding=lambda entry: run_coding(
                         self.sessions, self.firm_id, self.clio, state, entry))

    def follow_edit(self, state: RunState, entry: PlannedEntry, link: EntryLink,
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
            self.failures.record_edit(state, entry, link, state.clio_blocked)
            return
        try:
            self._edits(state).follow(entry, link)
        except ReconnectRequired:
            raise
        except ApiError as exc:
            self.failures.record_edit(state, entry, link, exc)
            count_clio_failure(state, exc)
            return
        state.consecutive_transient = 0

    def moved(self, state: RunState, entry: PlannedEntry, resolution: Resolution,
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
            moved = self._edits(state).move(link, entry, resolution.matter.id, label)
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

    def supersede(self, state: RunState, plan: PurchasePlan, purchase: Any,
                  links: list[EntryLink], waiting: list[WaitingExpense]) -> None:
        """Entries and questions the purchase no longer calls for are marked obsolete; those
        that are not moved are removed at the end of the page (``Removals``)."""
        self._edits(state).supersede(plan, purchase, links, waiting)
        for link in links:
            if link.superseded_at is not None and link.removed_at is None and \
                    link.state == LinkState.CREATED:
                state.obsolete.setdefault((link.purchase_id, link.line_id), []).append(link)

    def billed_in_quickbooks(self, state: RunState, plan: PurchasePlan,
                             links: list[EntryLink], dry_run: bool) -> None:
        """Lines imported before that QuickBooks has since put on one of its own invoices
        (``HasBeenBilled``): the client may be billed twice. The Clio entry is kept (a person
        decides); the run and the audit trail say so, once until the key changes again."""
        for link in links:
            if (link.customer_id, link.line_id) not in plan.billed_keys or \
                    link.state != LinkState.CREATED or link.removed_at is not None or \
                    link.clio_activity_id is None:
                continue
            note = (f"{BILLED_TOO}: check Clio entry #{link.clio_activity_id} (it may be "
                    "billed to the client twice)")
            if not dry_run:
                with self.sessions() as session:
                    if _said_last(session, self.firm_id, link, BILLED_TOO):
                        state.summary.unchanged += 1
                        continue
                    audit.record(session, self.firm_id, Action.KEPT, state.actor,
                                 realm_id=link.realm_id, purchase_id=link.purchase_id,
                                 customer_id=link.customer_id, line_id=link.line_id,
                                 amount=link.amount, clio_activity_id=link.clio_activity_id,
                                 clio_matter_id=link.clio_matter_id, detail=note,
                                 run_id=state.summary.run_id, at=self.clock())
                    session.commit()
                log.info("firm %s: %s %s", self.firm_id, link.marker, note)
            figures = {"amount": f"{link.amount:.2f}", "date": link.txn_date.isoformat()}
            state.summary.changed_items.append(ChangedItem(
                link.marker, link.purchase_id, "billed_in_qbo", link.clio_activity_id, None,
                figures, figures, None, note, self.clio.matter_url(link.clio_matter_id)))

    def no_longer_paid(self, state: RunState, entry: PlannedEntry, link: EntryLink,
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


def _said_last(session: Session, firm_id: int, link: EntryLink, prefix: str) -> bool:
    """The key's latest audit row is a ``kept`` note starting with ``prefix``: said before,
    and nothing happened to the key since."""
    last = session.scalars(select(AuditEntry).where(
        AuditEntry.firm_id == firm_id, AuditEntry.purchase_id == link.purchase_id,
        AuditEntry.customer_id == link.customer_id,
        AuditEntry.line_id == link.line_id).order_by(AuditEntry.id.desc()).limit(1)).first()
    return last is not None and last.action == Action.KEPT.value and \
        (last.detail or "").startswith(prefix)


def edited(link: EntryLink, entry: PlannedEntry) -> bool:
    """The purchase changed in QuickBooks since this entry was written; or the entry was
    marked obsolete and the purchase calls for it again (still in Clio, or left there)."""
    if link.clio_activity_id is None:
        return False
    if link.state == LinkState.CREATED and link.removed_at is None:
        return link.sync_token != entry.sync_token or link.superseded_at is not None
    return link.state == LinkState.KEPT and link.superseded_at is not None


def revivable(link: EntryLink) -> bool:
    """An entry removed from Clio because an edit made it obsolete, called for again."""
    return link.state == LinkState.DELETED and link.superseded_at is not None

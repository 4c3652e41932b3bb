"""A person's answer to a waiting expense, applied once: which matter, which contact, or none.

Slack-free: the bot calls these with the clicking user's id and shows what comes back. The first
answer wins; a prompt is claimed atomically in the database before anything is written to
Clio, and released again if Clio refuses, so the prompt stays usable.

"Not a client cost" and a contact choice add their audit row (``hardcost.sync.audit``) in the
transaction that settles the prompt or stores the contact link.

A contact question, once answered, is closed even when the expense still waits (for its
matter, under the same row): a later contact click (an older copy of the question, a double
click) is told who chose which contact and when, and changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hardcost.sync import audit, matter_cache, receipts, suggestions
from hardcost.sync.clio import Contact, Matter
from hardcost.sync.http import ApiError
from hardcost.sync.importer import Importer
from hardcost.sync.rules import PlannedEntry
from hardcost.sync.store import AuditEntry, ContactLink, WaitingExpense, WaitReason, utcnow
from hardcost.sync.summary import matter_label
from hardcost.sync.writer import AlreadyImported

log = logging.getLogger(__name__)

CLAIMED = "claimed"
CONTACT_QUESTIONS = (WaitReason.SEVERAL_CONTACTS.value, WaitReason.NO_CONTACT.value)


@dataclass(frozen=True)
class ChoiceResult:
    """What happened, for the message that replaces the prompt's buttons."""

    outcome: str
    """linked | not_client_cost | contact_remembered | being_answered | already_answered |
    refused | failed"""
    message: str
    label: str | None = None
    clio_entry_id: int | None = None
    answered_by: str | None = None
    still_waiting: WaitingExpense | None = None  # a new question (e.g. which matter) to ask
    answered_at: datetime | None = None  # when it was answered (already_answered)
    answer: str | None = None  # what the earlier answer was, in words (already_answered)


class ChoiceError(Exception):
    pass


def _claim(importer: Importer, waiting_id: int, user_id: str) -> WaitingExpense | None:
    """Take the prompt for this user, or return None when someone else has it or it's done."""
    with importer.sessions() as session:
        taken = session.execute(update(WaitingExpense).where(
            WaitingExpense.id == waiting_id, WaitingExpense.firm_id == importer.firm_id,
            WaitingExpense.resolved_at.is_(None), WaitingExpense.resolution.is_(None),
        ).values(resolution=CLAIMED, resolved_by=user_id))
        session.commit()
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            return None
        return session.get(WaitingExpense, waiting_id)


def _release(importer: Importer, waiting_id: int) -> None:
    with importer.sessions() as session:
        session.execute(update(WaitingExpense).where(
            WaitingExpense.id == waiting_id, WaitingExpense.resolution == CLAIMED,
        ).values(resolution=None, resolved_by=None))
        session.commit()


def _answered(importer: Importer, waiting_id: int) -> ChoiceResult:
    with importer.sessions() as session:
        row = session.get(WaitingExpense, waiting_id)
    if row is None or row.firm_id != importer.firm_id:
        return ChoiceResult("refused", "That expense is not one of this workspace's.")
    if row.resolution == CLAIMED:
        return ChoiceResult("being_answered", "Someone is answering this one right now.",
                            answered_by=row.resolved_by)
    return ChoiceResult("already_answered", "Already answered.",
                        answered_by=row.resolved_by, clio_entry_id=row.clio_activity_id,
                        answered_at=row.resolved_at)


def _contact_answered(importer: Importer, row: WaitingExpense) -> ChoiceResult:
    """A contact click on a row that no longer asks for the contact: who chose which, when."""
    with importer.sessions() as session:
        chosen = session.scalars(select(AuditEntry).where(
            AuditEntry.firm_id == importer.firm_id,
            AuditEntry.action == audit.Action.CONTACT_CHOSEN.value,
            AuditEntry.realm_id == row.realm_id, AuditEntry.purchase_id == row.purchase_id,
            AuditEntry.customer_id == row.customer_id,
            AuditEntry.line_id == (row.line_id or None))
            .order_by(AuditEntry.id.desc()).limit(1)).first()
    if chosen is None:
        return ChoiceResult("refused", "That contact is not one of this expense's choices.")
    contact = (chosen.after or {}).get("contact") or {}
    name = str(contact.get("name") or f"contact {contact.get('id')}")
    follows = "its matter is asked in a new question" if row.resolved_at is None \
        else "the expense is answered"
    return ChoiceResult("already_answered", f"{name} was chosen as the Clio contact; {follows}.",
                        label=name, answered_by=chosen.actor, answered_at=chosen.at,
                        answer=f"Clio contact {name}; {follows}")


def _matter_choices(row: WaitingExpense) -> dict[int, dict[str, Any]]:
    return {int(c["id"]): c for c in row.candidates if c.get("kind") == "matter"}


def _matter_choice(importer: Importer, row: WaitingExpense,
                   matter_id: int) -> dict[str, Any] | None:
    """The chosen matter when it is one the prompt offers: one of its candidates, or, for an
    expense with no client, any of the firm's open and pending matters (its search menu)."""
    if row.reason == WaitReason.NO_CUSTOMER.value:
        with importer.sessions() as session:
            found = matter_cache.cached_matter(session, importer.firm_id, matter_id)
        if found is None:
            return None
        return {"kind": "matter", "id": found.id, "display_number": found.display_number,
                "description": found.description}
    return _matter_choices(row).get(matter_id)


def choose_matter(importer: Importer, waiting_id: int, matter_id: int,
                  user_id: str) -> ChoiceResult:
    """Write the waiting expense to Clio on ``matter_id`` (one of its candidates)."""
    row = _claim(importer, waiting_id, user_id)
    if row is None:
        return _answered(importer, waiting_id)
    chosen = _matter_choice(importer, row, matter_id)
    if chosen is None:
        _release(importer, waiting_id)
        return ChoiceResult("refused", "That matter is not one of this expense's choices.")
    label = matter_label(str(chosen.get("display_number") or ""),
                         str(chosen.get("description") or ""))
    entry = PlannedEntry.from_json(row.entry)
    try:
        activity = importer.writer().write(importer.writer_state("choice"), entry,
                                           matter_id, resolution="linked",
                                           resolved_by=user_id, matter=label)
    except AlreadyImported:
        _settle(importer, waiting_id, "linked", user_id)
        return ChoiceResult("already_answered", "This expense is already in Clio.",
                            label=label, answered_by=user_id)
    except ApiError as exc:
        _release(importer, waiting_id)
        log.warning("choice for waiting %s failed: %s", waiting_id, exc)
        return ChoiceResult("failed", f"Clio did not take the entry: {exc.message} "
                            "Nothing was saved; you can choose again.", label=label)
    if row.contact_id is not None:
        _remember(importer, entry, row.contact_id, user_id, only_if_missing=True)
    receipts.file_after_choice(importer, entry.key.purchase_id, user_id)
    return ChoiceResult("linked", f"Linked to {label}.", label=label,
                        clio_entry_id=activity.id, answered_by=user_id)


def choose_contact(importer: Importer, waiting_id: int, contact_id: int,
                   user_id: str) -> ChoiceResult:
    """Remember the QBO customer's Clio contact, then settle the matter if it is clear."""
    row = _claim(importer, waiting_id, user_id)
    if row is None:
        return _answered(importer, waiting_id)
    if row.reason not in CONTACT_QUESTIONS or row.contact_id is not None:
        # The contact was chosen already (the row now asks for the matter), or the question
        # never was about the contact: nothing is remembered, nothing asked anew.
        _release(importer, waiting_id)
        return _contact_answered(importer, row)
    choices = {int(c["id"]): c for c in row.candidates if c.get("kind") == "contact"}
    if choices and contact_id not in choices:
        _release(importer, waiting_id)
        return ChoiceResult("refused", "That contact is not one of this expense's choices.")
    entry = PlannedEntry.from_json(row.entry)
    name = str(choices.get(contact_id, {}).get("name") or _contact_name(importer, contact_id))
    _remember(importer, entry, contact_id, user_id, only_if_missing=False,
              chosen=(row, name))
    state = importer.writer_state("choice")
    try:
        resolution = state.resolver.choose_matter(entry, Contact(contact_id, name, "", None))
    except ApiError as exc:
        _release(importer, waiting_id)
        return ChoiceResult("failed", f"Clio could not list {name}'s matters: {exc.message}")
    if resolution.matter is not None:
        matter: Matter = resolution.matter
        label = matter_label(matter.display_number, matter.description)
        try:
            activity = importer.writer().write(state, entry, matter.id, resolution="linked",
                                               resolved_by=user_id, matter=label)
        except AlreadyImported:
            _settle(importer, waiting_id, "linked", user_id)
            return ChoiceResult("already_answered", "This expense is already in Clio.")
        except ApiError as exc:
            _release(importer, waiting_id)
            return ChoiceResult("failed", f"Clio did not take the entry: {exc.message} "
                                "Nothing was saved; you can choose again.")
        receipts.file_after_choice(importer, entry.key.purchase_id, user_id)
        return ChoiceResult("linked", f"{name} remembered; linked to {label}.", label=label,
                            clio_entry_id=activity.id, answered_by=user_id)
    # Still a question, now about the matter: the old prompt is answered, a new one is asked.
    assert resolution.reason is not None
    with importer.sessions() as session:
        current = session.get(WaitingExpense, waiting_id)
        assert current is not None
        current.reason = resolution.reason.value
        current.contact_id = contact_id
        current.candidates, suggestion = list(resolution.candidates), None
        if resolution.reason == WaitReason.SEVERAL_MATTERS:
            current.candidates, suggestion = suggestions.suggest(
                session, importer.firm_id, entry, contact_id, current.candidates)
        current.suggestion = suggestion.to_json() if suggestion else None
        current.resolution = None
        current.resolved_by = None
        current.slack_ts = None  # a new prompt will be posted
        current.slack_channel = None
        session.commit()
        session.refresh(current)
    reason = "has no open matter yet" if resolution.reason == WaitReason.NO_MATTER \
        else "has several open matters"
    return ChoiceResult("contact_remembered", f"{name} remembered; {name} {reason}.",
                        label=name, answered_by=user_id, still_waiting=current)


def _contact_name(importer: Importer, contact_id: int) -> str:
    """The name of a contact picked by search (not one of the prompt's candidates)."""
    try:
        found = importer.clio.contacts_by_id([contact_id])
    except ApiError:
        found = []
    return next((c.name for c in found if c.id == contact_id), f"contact {contact_id}")


def not_client_cost(importer: Importer, waiting_id: int, user_id: str) -> ChoiceResult:
    row = _claim(importer, waiting_id, user_id)
    if row is None:
        return _answered(importer, waiting_id)

    def record(session: Session) -> None:
        audit.record(session, importer.firm_id, audit.Action.NOT_CLIENT_COST, user_id,
                     **_about(row), at=importer.clock(),
                     detail="Marked not a client cost; it will not be imported.")

    _settle(importer, waiting_id, "not_client_cost", user_id, record=record)
    return ChoiceResult("not_client_cost", "Marked as not a client cost; it will not be "
                        "imported.", answered_by=user_id)


def _about(row: WaitingExpense) -> dict[str, Any]:
    """What an audit row says about the waiting expense it answers."""
    return {"realm_id": row.realm_id, "purchase_id": row.purchase_id,
            "customer_id": row.customer_id, "line_id": row.line_id or None,
            "client": row.customer_name, "amount": row.amount, "run_id": row.run_id}


def _settle(importer: Importer, waiting_id: int, resolution: str, user_id: str, *,
            record: Callable[[Session], None] | None = None) -> None:
    """The prompt answered; ``record`` adds its audit row to the same transaction."""
    with importer.sessions() as session:
        session.execute(update(WaitingExpense).where(
            WaitingExpense.id == waiting_id, WaitingExpense.firm_id == importer.firm_id,
        ).values(resolution=resolution, resolved_by=user_id, resolved_at=utcnow()))
        if record is not None:
            record(session)
        session.commit()


def _remember(importer: Importer, entry: PlannedEntry, contact_id: int, user_id: str, *,
              only_if_missing: bool,
              chosen: tuple[WaitingExpense, str] | None = None) -> None:
    """Store the customer's Clio contact. ``chosen`` (the prompt a person answered, and the
    contact's name) adds the ``contact_chosen`` audit row in the same transaction."""
    customer_id = entry.key.customer_id
    with importer.sessions() as session:
        link = session.scalars(select(ContactLink).where(
            ContactLink.firm_id == importer.firm_id, ContactLink.qbo_type == "Customer",
            ContactLink.qbo_id == customer_id)).one_or_none()
        if link is not None and only_if_missing:
            return
        if chosen is not None:
            row, name = chosen
            previous = link.clio_contact_id if link is not None else None
            audit.record(session, importer.firm_id, audit.Action.CONTACT_CHOSEN, user_id,
                         **_about(row), at=importer.clock(),
                         before={"contact": {"id": previous}} if previous else None,
                         after={"contact": {"id": contact_id, "name": name}},
                         detail=f"Clio contact {name} (id {contact_id}) chosen for "
                                f"QuickBooks customer {row.customer_name}.")
        if link is None:
            link = ContactLink(firm_id=importer.firm_id, qbo_type="Customer", qbo_id=customer_id,
                               clio_contact_id=contact_id, source="staff")
            session.add(link)
        link.clio_contact_id = contact_id
        link.source = "staff"
        link.chosen_by = user_id
        try:
            session.commit()
        except IntegrityError:
            session.rollback()

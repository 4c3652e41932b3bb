"""Undo of a person's matter choice while its Clio entry is unbilled (docs/purchases.md, "When staff
are asked", Undo).

Slack-free: the bot checks who may undo (the chooser, an approver, a workspace admin) and
shows what comes back. Undo is claimed atomically like a choice: the waiting expense moves
from ``linked`` to ``undoing`` and its link from ``created`` to ``undoing`` in compare-and-set
updates, so a double click deletes once, and a run that reads the link meanwhile leaves it
alone (only ``created`` links are edited, moved or removed).

Then the entry is read (``billed``/``on_bill``): on a bill, everything is put back and the
answer names the bill. Changed by a person in Clio since hardcost wrote it (``edits.untouched``,
as runs judge it before an edit): put back too, and the answer says what changed; hardcost
never overwrites or removes a person's change. Otherwise it is deleted in Clio, and one
transaction drops the link (the expense can be written again, exactly once, by a later choice
or run), reopens the waiting expense and adds the ``undone`` audit row. A process that dies
between the DELETE and that commit leaves the claim behind; after ``STALE_UNDO`` another Undo
takes it over and finds the entry already gone.

A matter rule that sends this kind of expense (its client, payee and account) to the undone
choice's matter, typically the one made from that choice with "Always do this", stays in force:
the answer names it (``UndoResult.rules``) so the bot can offer to remove it.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, delete, or_, select, update

from hardcost.sync import audit, matter_rules
from hardcost.sync.choices import _about
from hardcost.sync.clio import Activity
from hardcost.sync.edits import FIELDS, same_fields, untouched, written_of
from hardcost.sync.http import ApiError, NotFound
from hardcost.sync.importer import Importer
from hardcost.sync.removals import bill_words
from hardcost.sync.store import EntryLink, LinkState, WaitingExpense, utcnow
from hardcost.sync.summary import matter_label

log = logging.getLogger(__name__)

UNDOING = "undoing"
LINKED = "linked"
STALE_UNDO = timedelta(minutes=10)
"""An ``undoing`` claim older than this belongs to a process that died; it may be taken over."""


@dataclass(frozen=True)
class RuleInForce:
    """A matter rule still sending this kind of expense to the undone choice's matter."""

    id: int
    words: str  # "Speedy Couriers → Acme Holdings"
    matter: str


@dataclass(frozen=True)
class UndoResult:
    outcome: str
    """undone | billed | changed | being_undone | not_linked | refused | failed"""
    message: str
    entry_id: int | None = None
    matter: str | None = None
    rules: tuple[RuleInForce, ...] = ()


def undo_choice(importer: Importer, waiting_id: int, user_id: str) -> UndoResult:
    """Delete the unbilled Clio entry a person's choice made and reopen the expense."""
    row = _claim(importer, waiting_id)
    if row is None:
        return _not_claimed(importer, waiting_id)
    entry_id = row.clio_activity_id
    matter = _matter_of(row)
    with importer.sessions() as session:
        link = session.scalars(select(EntryLink).where(
            EntryLink.firm_id == importer.firm_id, EntryLink.realm_id == row.realm_id,
            EntryLink.purchase_id == row.purchase_id, EntryLink.customer_id == row.customer_id,
            EntryLink.line_id == row.line_id)).one_or_none()
        taken = 0
        if link is not None and entry_id is not None and link.clio_activity_id == entry_id \
                and link.removed_at is None and link.superseded_at is None:
            taken = session.execute(update(EntryLink).where(
                EntryLink.id == link.id,
                EntryLink.state.in_([LinkState.CREATED.value, LinkState.UNDOING.value]),
            ).values(state=LinkState.UNDOING.value)).rowcount  # type: ignore[attr-defined]
            session.commit()
    if link is None or entry_id is None or taken != 1:
        _put_back(importer, waiting_id, None)
        return UndoResult("refused", "This entry changed since the choice (edited, moved or "
                          "removed by a run), so it cannot be undone from here.",
                          entry_id=entry_id, matter=matter)
    try:
        try:
            activity = importer.clio.get_activity(entry_id)
        except NotFound:
            activity = None  # deleted in Clio meanwhile, or by an undo that died after it
        if activity is not None and (activity.on_bill or activity.billed):
            _put_back(importer, waiting_id, link.id)
            return UndoResult("billed", f"Clio entry #{entry_id} is on {bill_words(activity)}, "
                              "so the choice cannot be undone. Take it off the bill in Clio "
                              "first.", entry_id=entry_id, matter=matter)
        if activity is not None and not untouched(activity, written_of(link), link.marker):
            _put_back(importer, waiting_id, link.id)
            log.info("undo of waiting %s refused: Clio entry %s was changed by a person",
                     waiting_id, entry_id)
            return UndoResult("changed", f"Clio entry #{entry_id} was changed in Clio since "
                              f"hardcost wrote it ({_changes(activity, written_of(link))}), "
                              "so Undo did not delete it: hardcost never overwrites or removes "
                              "a person's change. Delete or correct it in Clio by hand if the "
                              "choice was wrong.", entry_id=entry_id, matter=matter)
        if activity is not None:
            with contextlib.suppress(NotFound):  # gone meanwhile: as good as deleted
                importer.clio.delete_activity(entry_id)
    except ApiError as exc:
        _put_back(importer, waiting_id, link.id)
        log.warning("undo of waiting %s failed: %s", waiting_id, exc)
        return UndoResult("failed", f"Clio did not delete the entry: {exc.message} Nothing "
                          "changed; you can try Undo again.", entry_id=entry_id, matter=matter)
    with importer.sessions() as session:
        rules = tuple(RuleInForce(r.id, matter_rules.describe(r), r.matter_label)
                      for r in matter_rules.sending(session, importer.firm_id, row))
        session.execute(delete(EntryLink).where(EntryLink.id == link.id,
                                                EntryLink.firm_id == importer.firm_id))
        session.execute(update(WaitingExpense).where(
            WaitingExpense.id == waiting_id, WaitingExpense.resolution == UNDOING,
        ).values(resolution=None, resolved_at=None, resolved_by=None, clio_activity_id=None,
                 clio_matter_id=None, reminded_at=None, group_id=None))
        audit.record(session, importer.firm_id, audit.Action.UNDONE, user_id,
                     **_about(row), clio_activity_id=entry_id,
                     clio_matter_id=row.clio_matter_id, matter=matter,
                     before={"matter": {"id": row.clio_matter_id, "name": matter},
                             "clio_entry_id": entry_id, "chosen_by": row.resolved_by},
                     after=None, at=importer.clock(),
                     detail=f"Choice undone: Clio entry #{entry_id} deleted from "
                            f"{matter or 'its matter'}; the expense waits for a choice again.")
        session.commit()
    return UndoResult("undone", f"Undone: Clio entry #{entry_id} deleted; choose again.",
                      entry_id=entry_id, matter=matter, rules=rules)


def _claim(importer: Importer, waiting_id: int) -> WaitingExpense | None:
    stale = utcnow() - STALE_UNDO
    with importer.sessions() as session:
        taken = session.execute(update(WaitingExpense).where(
            WaitingExpense.id == waiting_id, WaitingExpense.firm_id == importer.firm_id,
            WaitingExpense.resolved_at.is_not(None),
            or_(WaitingExpense.resolution == LINKED,
                and_(WaitingExpense.resolution == UNDOING, WaitingExpense.updated_at < stale)),
        ).values(resolution=UNDOING, updated_at=utcnow()))
        session.commit()
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            return None
        return session.get(WaitingExpense, waiting_id)


def _put_back(importer: Importer, waiting_id: int, link_id: int | None) -> None:
    """The undo did not happen: the choice stands as it was."""
    with importer.sessions() as session:
        if link_id is not None:
            session.execute(update(EntryLink).where(
                EntryLink.id == link_id, EntryLink.state == LinkState.UNDOING.value,
            ).values(state=LinkState.CREATED.value))
        session.execute(update(WaitingExpense).where(
            WaitingExpense.id == waiting_id, WaitingExpense.resolution == UNDOING,
        ).values(resolution=LINKED))
        session.commit()


def _not_claimed(importer: Importer, waiting_id: int) -> UndoResult:
    with importer.sessions() as session:
        row = session.get(WaitingExpense, waiting_id)
    if row is None or row.firm_id != importer.firm_id:
        return UndoResult("refused", "That expense is not one of this workspace's.")
    if row.resolution == UNDOING:
        return UndoResult("being_undone", "Someone is undoing this choice right now.")
    if row.resolution is None:
        return UndoResult("not_linked", "This choice was undone already; the expense is "
                          "waiting for a choice.")
    return UndoResult("not_linked", "Only a matter a person chose can be undone here.")


def _matter_of(row: WaitingExpense) -> str | None:
    for candidate in row.candidates:
        if candidate.get("kind") == "matter" and int(candidate["id"]) == row.clio_matter_id:
            return matter_label(str(candidate.get("display_number") or ""),
                                str(candidate.get("description") or ""))
    return None


_FIELD_WORDS = {"price": "amount", "date": "date", "note": "note", "reference": "reference",
                "matter_id": "matter"}


def _changes(activity: Activity, written: dict[str, object]) -> str:
    """What a person changed in Clio, in words: "amount 48.75 → 52.00, note"."""
    now = activity.written_fields()
    changed = []
    for field in FIELDS:
        if field not in written or same_fields({field: written[field]}, {field: now[field]}):
            continue
        if field in ("price", "date"):
            changed.append(f"{_FIELD_WORDS[field]} {written[field]} → {now[field]}")
        else:
            changed.append(_FIELD_WORDS[field])
    return ", ".join(changed) or "its note"

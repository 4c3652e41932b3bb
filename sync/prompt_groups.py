"""Grouped prompts: one answer for a client's backlog (docs/purchases.md, "When staff are asked").

Several expenses of one client waiting for the same matter choice (the same candidate
matters) share one ``PromptGroup``. Slack-free: the bot decides when to post a group and shows
what :func:`choose_for_group` returns.

A group choice answers each member through ``sync.choices.choose_matter``: the member is
claimed atomically, written by ``Writer.write`` (pending link, POST, record) and settled, as
for a single click. A click on one member at the same moment therefore either wins that member
(the group skips it and says so) or finds it answered; no entry is ever written twice. A
member Clio refuses stays open with its own prompt and is named in the group's outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from hardcost.sync.bounds import digest_key
from hardcost.sync.choices import choose_matter
from hardcost.sync.importer import Importer
from hardcost.sync.store import PromptGroup, WaitingExpense, WaitReason
from hardcost.sync.summary import matter_label

GROUP_MIN = 3
"""Expenses of one client with the same choice that get one grouped message. Two prompts read
as easily one by one as under a group message; from three on, one menu saves real work."""
GROUP_MAX_CHOICES = 100
"""Matters a group's menu offers at most (one static select); clients with more keep their
searchable per-expense prompts."""
CHOICE_KEY = 1000
"""``PromptGroup.choice_key``'s room: the sorted matter ids as they are, or their digest when
they do not fit (a hundred production-sized ids run past it)."""
CLAIMED = "claimed"
LINKED = "linked"


def choice_key(row: WaitingExpense) -> str | None:
    """What makes expenses "the same kind of choice": the same candidate matters of one client.
    None when the expense cannot be answered by a group menu."""
    if row.reason != WaitReason.SEVERAL_MATTERS.value:
        return None
    ids = choice_ids(row)
    if not 2 <= len(ids) <= GROUP_MAX_CHOICES:
        return None
    return digest_key(",".join(map(str, ids)), CHOICE_KEY)


def choice_ids(row: WaitingExpense) -> list[int]:
    """The matter ids an expense's question offers, sorted."""
    return sorted(int(c["id"]) for c in row.candidates if c.get("kind") == "matter")


def group_choices(session: Session, group: PromptGroup) -> set[int]:
    """The matters the group's menu offers: those of the expenses its message showed (its
    members, for a group made before ``shown`` was kept) that still ask the group's question
    (all of them share it: that is what made them a group). A later digest takes the expenses
    into a group of its own, so the shown ones are read by id, not by ``group_id``."""
    rows = members(session, group) if group.shown is None else _shown_rows(session, group)
    return {matter_id for row in rows if choice_key(row) == group.choice_key
            for matter_id in choice_ids(row)}


def _shown_rows(session: Session, group: PromptGroup) -> list[WaitingExpense]:
    """Every expense the group's message showed, answered or not."""
    ids = [i for i in group.shown or [] if isinstance(i, int)]
    if not ids:
        return []
    return list(session.scalars(select(WaitingExpense).where(
        WaitingExpense.firm_id == group.firm_id, WaitingExpense.id.in_(ids))))


def open_group(session: Session, firm_id: int, customer_id: str,
               key: str) -> PromptGroup | None:
    """The client's unanswered group for this choice, if one exists."""
    return session.scalars(select(PromptGroup).where(
        PromptGroup.firm_id == firm_id, PromptGroup.customer_id == customer_id,
        PromptGroup.choice_key == key, PromptGroup.resolved_at.is_(None),
        PromptGroup.resolution.is_(None)).order_by(PromptGroup.id.desc()).limit(1)).first()


def open_members(session: Session, group: PromptGroup) -> list[WaitingExpense]:
    return list(session.scalars(select(WaitingExpense).where(
        WaitingExpense.firm_id == group.firm_id, WaitingExpense.group_id == group.id,
        WaitingExpense.resolved_at.is_(None), WaitingExpense.resolution.is_(None))
        .order_by(WaitingExpense.txn_date, WaitingExpense.id)))


def shown_members(session: Session, group: PromptGroup) -> list[WaitingExpense]:
    """The open expenses the group's message showed (``PromptGroup.shown``): what its menu
    answers. One that joined later is asked anew (the next digest, its own prompt). Groups made
    before ``shown`` was kept: the open members."""
    if group.shown is None:
        return open_members(session, group)
    ids = [i for i in group.shown if isinstance(i, int)]
    if not ids:
        return []
    return list(session.scalars(select(WaitingExpense).where(
        WaitingExpense.firm_id == group.firm_id, WaitingExpense.id.in_(ids),
        WaitingExpense.resolved_at.is_(None), WaitingExpense.resolution.is_(None))
        .order_by(WaitingExpense.txn_date, WaitingExpense.id)))


def members(session: Session, group: PromptGroup) -> list[WaitingExpense]:
    """Every member, answered or not."""
    return list(session.scalars(select(WaitingExpense).where(
        WaitingExpense.firm_id == group.firm_id, WaitingExpense.group_id == group.id)
        .order_by(WaitingExpense.txn_date, WaitingExpense.id)))


@dataclass
class GroupResult:
    outcome: str
    """linked | being_answered | already_answered | refused | failed"""
    message: str
    label: str | None = None
    linked: list[int] = field(default_factory=list)  # waiting expense ids written by this choice
    linked_total: Decimal = Decimal("0.00")
    failed: list[tuple[int, str]] = field(default_factory=list)  # (waiting id, why)
    others: int = 0  # members someone else answered first
    answered_by: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"label": self.label, "linked": self.linked, "total": str(self.linked_total),
                "failed": [[i, why] for i, why in self.failed], "others": self.others}


def choose_for_group(importer: Importer, group_id: int, matter_id: int,
                     user_id: str) -> GroupResult:
    """Put every open expense the group's message showed on ``matter_id``, each exactly
    once."""
    with importer.sessions() as session:
        taken = session.execute(update(PromptGroup).where(
            PromptGroup.id == group_id, PromptGroup.firm_id == importer.firm_id,
            PromptGroup.resolved_at.is_(None), PromptGroup.resolution.is_(None),
        ).values(resolution=CLAIMED, resolved_by=user_id))
        session.commit()
        group = session.get(PromptGroup, group_id)
        if group is None or group.firm_id != importer.firm_id:
            return GroupResult("refused", "That group is not one of this workspace's.")
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            if group.resolution == CLAIMED:
                return GroupResult("being_answered", "Someone is answering this group now.",
                                   answered_by=group.resolved_by)
            return GroupResult("already_answered", "This group was answered already.",
                               answered_by=group.resolved_by)
        if matter_id not in group_choices(session, group):
            _release(importer, group_id)
            return GroupResult("refused", "That matter is not one of this group's choices.")
        pending = shown_members(session, group)
        # shown, but answered before this choice (one by one, or by another digest's menu)
        earlier = len(set(group.shown)) - len(pending) if group.shown is not None else 0
    result = GroupResult("linked", "", answered_by=user_id, others=earlier)
    for row in pending:
        answer = choose_matter(importer, row.id, matter_id, user_id)
        result.label = result.label or answer.label
        if answer.outcome == "linked":
            result.linked.append(row.id)
            result.linked_total += row.amount
        elif answer.outcome == "failed":
            result.failed.append((row.id, answer.message))
        else:
            result.others += 1
    if result.label is None:
        result.label = _label(pending, matter_id)
    if not result.linked and result.failed:
        _release(importer, group_id)  # nothing went in: the group menu stays usable
        result.outcome = "failed"
        result.message = result.failed[0][1]
        return result
    with importer.sessions() as session:
        session.execute(update(PromptGroup).where(PromptGroup.id == group_id).values(
            resolution=LINKED, resolved_at=importer.clock(), outcome=result.as_json()))
        session.commit()
    result.message = f"Linked {len(result.linked)} to {result.label}."
    return result


def _release(importer: Importer, group_id: int) -> None:
    with importer.sessions() as session:
        session.execute(update(PromptGroup).where(
            PromptGroup.id == group_id, PromptGroup.resolution == CLAIMED,
        ).values(resolution=None, resolved_by=None))
        session.commit()


def _label(rows: list[WaitingExpense], matter_id: int) -> str:
    for row in rows:
        for c in row.candidates:
            if c.get("kind") == "matter" and int(c["id"]) == matter_id:
                return matter_label(str(c.get("display_number") or ""),
                                    str(c.get("description") or ""))
    return f"matter {matter_id}"

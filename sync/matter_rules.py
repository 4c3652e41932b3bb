"""Matter rules: "Always do this for <payee> → <client>", made from a person's choice.

A rule is made by a click after a person chose a matter (``create_from_choice``) and names the
Clio client, the QuickBooks payee and, optionally, the QuickBooks account. On later runs the
importer (``Placer.place``) puts a matching expense whose client has several matters
straight on the rule's matter — only while that matter is still open or pending; otherwise the
expense is asked again with a note saying why. Rules are listed and removed with
``/hardcost rules``. Making and removing one adds its audit row in the same transaction.

Slack-free: who may make or remove a rule is the bot's check (the firm's approvers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync import audit
from hardcost.sync.bounds import NAME, clip
from hardcost.sync.rules import PlannedEntry
from hardcost.sync.store import MatterRule, WaitingExpense, WaitReason, utcnow


@dataclass(frozen=True)
class RuleOffer:
    """What the answered prompt offers: a rule for this payee and client."""

    waiting_id: int
    payee: str
    client: str
    matter: str


@dataclass(frozen=True)
class RuleResult:
    outcome: str  # created | exists | refused | removed | gone
    message: str  # plain text (escaped where it is shown)
    rule: MatterRule | None = None


def describe(rule: MatterRule) -> str:
    """"Speedy Couriers → Acme", as people read a rule."""
    return f"{rule.payee_name} → {rule.client_name}"


def offer_for(row: WaitingExpense) -> RuleOffer | None:
    """A rule can be made from a matter choice on an expense with a payee and a client."""
    if row.resolution != "linked" or row.clio_matter_id is None or row.contact_id is None:
        return None
    if row.reason != WaitReason.SEVERAL_MATTERS.value:
        return None
    entry = PlannedEntry.from_json(row.entry)
    if entry.payee is None or not entry.payee.id:
        return None
    chosen = next((c for c in row.candidates if c.get("kind") == "matter"
                   and int(c["id"]) == row.clio_matter_id), {})
    label = f"{chosen.get('display_number') or ''} {chosen.get('description') or ''}".strip()
    return RuleOffer(row.id, entry.payee.name, row.customer_name,
                     label or f"matter {row.clio_matter_id}")


def matching(rules: Sequence[MatterRule], contact_id: int,
             entry: PlannedEntry) -> MatterRule | None:
    """The rule for this client and payee; one that names the entry's account wins."""
    if entry.payee is None:
        return None
    fits = [r for r in rules if r.contact_id == contact_id and r.payee_id == entry.payee.id
            and (r.account_id is None or r.account_id == entry.account_id)]
    fits.sort(key=lambda r: (r.account_id is None, -r.id))
    return fits[0] if fits else None


def active(session: Session, firm_id: int) -> list[MatterRule]:
    return list(session.scalars(select(MatterRule).where(
        MatterRule.firm_id == firm_id, MatterRule.removed_at.is_(None))
        .order_by(MatterRule.id)))


def sending(session: Session, firm_id: int, row: WaitingExpense) -> list[MatterRule]:
    """The active rules that send an answered expense's kind (its client, payee and, when the
    rule names one, account) to the matter it was answered with: the rule made from that
    choice, or the same rule made from another. Undo names them (``sync.undo``)."""
    if row.contact_id is None or row.clio_matter_id is None:
        return []
    entry = PlannedEntry.from_json(row.entry)
    if entry.payee is None or not entry.payee.id:
        return []
    payee_id = entry.payee.id
    return [r for r in active(session, firm_id)
            if r.contact_id == row.contact_id and r.payee_id == payee_id
            and r.matter_id == row.clio_matter_id
            and (r.account_id is None or r.account_id == entry.account_id)]


def _rule_audit(rule: MatterRule) -> dict[str, Any]:
    return {"client": rule.client_name, "clio_matter_id": rule.matter_id,
            "matter": rule.matter_label,
            "after": {"rule": rule.id, "payee": rule.payee_name, "payee_id": rule.payee_id,
                      "contact_id": rule.contact_id, "account_id": rule.account_id}}


def create_from_choice(sessions: sessionmaker[Session], firm_id: int, waiting_id: int,
                       user_id: str, *, with_account: bool = False,
                       clock: Callable[[], datetime] = utcnow) -> RuleResult:
    """Make the rule a person's matter choice offers. An active rule for the same client,
    payee (and account) on another matter is replaced; on the same matter it is kept.

    The database holds at most one active rule per client, payee and account (unique partial
    indexes): of clicks at the same moment one makes the rule; the others, refused by the
    index, read again and are told the rule exists (or, for another matter, replace it)."""
    for _ in range(CREATE_ATTEMPTS - 1):
        try:
            return _create_from_choice(sessions, firm_id, waiting_id, user_id,
                                       with_account=with_account, clock=clock)
        except IntegrityError:
            continue  # another click made this rule just now: read again
    return _create_from_choice(sessions, firm_id, waiting_id, user_id,
                               with_account=with_account, clock=clock)


CREATE_ATTEMPTS = 3


def _create_from_choice(sessions: sessionmaker[Session], firm_id: int, waiting_id: int,
                        user_id: str, *, with_account: bool,
                        clock: Callable[[], datetime]) -> RuleResult:
    with sessions() as session:
        row = session.get(WaitingExpense, waiting_id)
        if row is None or row.firm_id != firm_id:
            return RuleResult("refused", "That expense is not one of this workspace's.")
        offer = offer_for(row)
        if offer is None:
            return RuleResult("refused", "A rule can be made only from a matter chosen for "
                                         "an expense with a payee.")
        entry = PlannedEntry.from_json(row.entry)
        assert entry.payee is not None and row.contact_id is not None
        assert row.clio_matter_id is not None
        account = entry.account_id if with_account else None
        now = clock()
        same = [r for r in active(session, firm_id) if r.contact_id == row.contact_id
                and r.payee_id == entry.payee.id and r.account_id == account]
        for old in same:
            if old.matter_id == row.clio_matter_id:
                return RuleResult("exists", f"A rule already sends {describe(old)} to "
                                            f"{old.matter_label}.", old)
        for old in same:
            old.removed_at = now
            old.removed_by = user_id
            audit.record(session, firm_id, audit.Action.RULE_REMOVED, user_id,
                         **_rule_audit(old), at=now,
                         detail=f"Rule {describe(old)} → {old.matter_label} replaced by a "
                                "new one.")
        rule = MatterRule(firm_id=firm_id, contact_id=row.contact_id,
                          client_name=clip(row.customer_name, NAME), payee_id=entry.payee.id,
                          payee_name=clip(entry.payee.name, NAME), account_id=account,
                          matter_id=row.clio_matter_id, matter_label=clip(offer.matter, NAME),
                          created_by=user_id, created_at=now, uses=0)
        session.add(rule)
        session.flush()
        audit.record(session, firm_id, audit.Action.RULE_CREATED, user_id, **_rule_audit(rule),
                     purchase_id=row.purchase_id, realm_id=row.realm_id, at=now,
                     detail=f"Rule made: {describe(rule)} always goes to "
                            f"{rule.matter_label}.")
        session.commit()
        return RuleResult("created", f"Rule made: {describe(rule)} always goes to "
                                     f"{rule.matter_label}.", rule)


def remove(sessions: sessionmaker[Session], firm_id: int, rule_id: int, user_id: str, *,
           clock: Callable[[], datetime] = utcnow) -> RuleResult:
    with sessions() as session:
        rule = session.get(MatterRule, rule_id)
        if rule is None or rule.firm_id != firm_id:
            return RuleResult("refused", "That rule is not one of this workspace's.")
        if rule.removed_at is not None:
            return RuleResult("gone", f"The rule {describe(rule)} was already removed.", rule)
        now = clock()
        rule.removed_at = now
        rule.removed_by = user_id
        audit.record(session, firm_id, audit.Action.RULE_REMOVED, user_id, **_rule_audit(rule),
                     at=now, detail=f"Rule removed: {describe(rule)} → {rule.matter_label}.")
        session.commit()
        return RuleResult("removed", f"Rule removed: {describe(rule)}.", rule)


def mark_used(session: Session, rule_id: int, at: datetime, *, times: int = 1) -> None:
    session.execute(update(MatterRule).where(MatterRule.id == rule_id).values(
        uses=MatterRule.uses + times, last_used_at=at))

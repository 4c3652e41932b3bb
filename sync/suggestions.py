"""Which of a waiting expense's matters the firm's own history supports (docs/purchases.md,
"Suggestions").

Evidence, strongest first: earlier choices for the same client and payee; for the same client
and QuickBooks account; words of the memo or line descriptions that earlier choices shared; and
a matter's display number or description words named in the memo. The best-supported matter
is put first and carries one short reason; with no evidence, nothing is suggested and the order
stays as Clio gave it. A suggestion never imports anything: a person still chooses.

``rank`` is pure (plain data in, plain data out); ``history`` reads the earlier choices.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hardcost.sync.matching import normalise_text
from hardcost.sync.rules import PlannedEntry
from hardcost.sync.store import WaitingExpense
from hardcost.sync.summary import matter_label

HISTORY_DEPTH = 50
"""Earlier choices of one client looked at (newest first): old habits fade."""

PAYEE_WEIGHT = 4
ACCOUNT_WEIGHT = 1
WORD_WEIGHT = 1
NAMED_WEIGHT = 2
MIN_WORD = 4  # shorter words ("the", "fee", "co") say nothing about a matter
STOP_WORDS = frozenset({"with", "from", "for", "this", "that", "costs", "cost", "fees",
                        "expense", "expenses", "invoice", "paid", "payment", "matter"})


@dataclass(frozen=True)
class PastChoice:
    """One earlier expense of the client and the matter a person put it on."""

    matter_id: int
    payee_id: str | None
    account_id: str | None
    words: frozenset[str]


@dataclass(frozen=True)
class Suggestion:
    matter_id: int
    reason: str  # one short line, plain text (escaped where it is shown)

    def to_json(self) -> dict[str, Any]:
        return {"matter_id": self.matter_id, "reason": self.reason}


def memo_words(entry: PlannedEntry) -> frozenset[str]:
    text = " ".join([entry.memo or "", *entry.descriptions])
    return frozenset(w for w in normalise_text(text).split()
                     if len(w) >= MIN_WORD and w not in STOP_WORDS and not w.isdigit())


def past_choice(entry: PlannedEntry, matter_id: int) -> PastChoice:
    return PastChoice(matter_id, entry.payee.id if entry.payee else None, entry.account_id,
                      memo_words(entry))


def history(session: Session, firm_id: int, contact_id: int) -> list[PastChoice]:
    """The client's latest expenses a person put on a matter (newest first)."""
    # Columns, not rows: a row the caller's session loaded earlier keeps the values it had then
    # (a person may have answered it since), and the query's own values are the ones wanted.
    rows = session.execute(select(WaitingExpense.entry, WaitingExpense.clio_matter_id).where(
        WaitingExpense.firm_id == firm_id, WaitingExpense.contact_id == contact_id,
        WaitingExpense.resolution == "linked", WaitingExpense.clio_matter_id.is_not(None))
        .order_by(WaitingExpense.resolved_at.desc(), WaitingExpense.id.desc())
        .limit(HISTORY_DEPTH))
    return [past_choice(PlannedEntry.from_json(entry), matter_id)
            for entry, matter_id in rows if matter_id is not None]


def _named(entry: PlannedEntry, candidate: dict[str, Any]) -> bool:
    """The memo or a description names the matter: its number, or its description's words."""
    text = normalise_text(" ".join([entry.memo or "", *entry.descriptions]))
    if not text:
        return False
    number = normalise_text(str(candidate.get("display_number") or ""))
    if number and re.search(rf"(?<!\w){re.escape(number)}(?!\w)", text):
        return True
    words = [w for w in normalise_text(str(candidate.get("description") or "")).split()
             if len(w) >= MIN_WORD and w not in STOP_WORDS]
    return len(words) >= 1 and all(re.search(rf"(?<!\w){re.escape(w)}(?!\w)", text)
                                   for w in words[:3])


def _number(candidate: dict[str, Any]) -> str:
    return str(candidate.get("display_number") or "") or matter_label(
        "", str(candidate.get("description") or "")) or f"matter {candidate.get('id')}"


def rank(entry: PlannedEntry, client: str, candidates: Sequence[dict[str, Any]],
         past: Iterable[PastChoice]) -> tuple[list[dict[str, Any]], Suggestion | None]:
    """The candidates, best-supported first, and the suggestion (None: order unchanged)."""
    by_id = {int(c["id"]): c for c in candidates if c.get("kind") == "matter"}
    if len(by_id) < 2:
        return list(candidates), None
    payee = entry.payee.id if entry.payee else None
    words = memo_words(entry)
    score: Counter[int] = Counter()
    payee_votes: Counter[int] = Counter()
    payee_total = 0
    account_votes: Counter[int] = Counter()
    account_total = 0
    shared: dict[int, Counter[str]] = defaultdict(Counter)
    for choice in past:
        if payee and choice.payee_id == payee:
            payee_total += 1
            if choice.matter_id in by_id:
                payee_votes[choice.matter_id] += 1
        if entry.account_id and choice.account_id == entry.account_id:
            account_total += 1
            if choice.matter_id in by_id:
                account_votes[choice.matter_id] += 1
        if choice.matter_id in by_id:
            for word in words & choice.words:
                shared[choice.matter_id][word] += 1
    for matter_id, n in payee_votes.items():
        score[matter_id] += PAYEE_WEIGHT * n
    for matter_id, n in account_votes.items():
        score[matter_id] += ACCOUNT_WEIGHT * n
    for matter_id, counts in shared.items():
        score[matter_id] += WORD_WEIGHT * sum(counts.values())
    named = [m for m, c in by_id.items() if _named(entry, c)]
    for matter_id in named:
        score[matter_id] += NAMED_WEIGHT * 3
    if not score:
        return list(candidates), None
    ranked = score.most_common()
    best, best_score = ranked[0]
    if len(ranked) > 1 and ranked[1][1] == best_score:
        return list(candidates), None  # a tie is no suggestion
    number = _number(by_id[best])
    payee_name = entry.payee.name if entry.payee else ""
    if payee_votes[best]:
        reason = (f"{payee_votes[best]} of the last {payee_total} {payee_name} costs for "
                  f"{client} went to {number}")
    elif account_votes[best]:
        reason = (f"{account_votes[best]} of the last {account_total} costs for {client} in "
                  f"this QuickBooks account went to {number}")
    elif best in named:
        reason = f"the memo names {number}"
    else:
        word = shared[best].most_common(1)[0][0]
        reason = f"earlier costs for {client} mentioning “{word}” went to {number}"
    ordered = [by_id[best], *(c for c in candidates if c.get("kind") != "matter"
                              or int(c["id"]) != best)]
    return ordered, Suggestion(best, reason)


def suggest(session: Session, firm_id: int, entry: PlannedEntry, contact_id: int | None,
            candidates: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]],
                                                         Suggestion | None]:
    """``rank`` over the client's history, read from ``session``."""
    if contact_id is None or len(candidates) < 2:
        return list(candidates), None
    return rank(entry, entry.customer_name, candidates, history(session, firm_id, contact_id))


def suggest_from(entry: PlannedEntry, contact_id: int | None,
                 candidates: Sequence[dict[str, Any]], past: Iterable[PastChoice] | None
                 ) -> tuple[list[dict[str, Any]], Suggestion | None]:
    """``suggest`` with the client's history read already (``past``: None when there is
    no client or fewer than two candidates, where nothing is suggested)."""
    if contact_id is None or len(candidates) < 2 or past is None:
        return list(candidates), None
    return rank(entry, entry.customer_name, candidates, past)

"""What an entry carries besides its figures: its Clio expense category, its UTBMS expense
code and whether it is billable (docs/purchases.md, "Category and UTBMS code").

Each QuickBooks import account may have its own category and code (``account_codings``); the
firm's defaults (``firm_settings.expense_category_id``/``utbms_code_id``) apply to the rest.
Where no code is mapped to the account, the entry's category's own UTBMS code applies, then
the default code. A mapping is read when an entry is written (or re-written by an edit):
a changed mapping applies from then on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync.clio import ClioClient, CostCoding
from hardcost.sync.rules import PlannedEntry
from hardcost.sync.run_state import RunState
from hardcost.sync.store import AccountCoding, FirmSettings


def codings_of(session: Session, firm_id: int) -> dict[str, AccountCoding]:
    """The firm's per-account mappings by QuickBooks account id (detached copies)."""
    rows = session.scalars(select(AccountCoding).where(AccountCoding.firm_id == firm_id)
                           .order_by(AccountCoding.account_name, AccountCoding.id))
    return {row.account_id: row for row in rows}


def coding_for(account_id: str | None, non_billable: bool, settings: FirmSettings,
               codings: Mapping[str, AccountCoding],
               category_codes: Callable[[], Mapping[int, int | None]], *,
               hard_cost: bool = True) -> CostCoding:
    """The coding of an entry of ``account_id`` (None: lines of several accounts, the
    defaults apply). ``category_codes`` (category id → its UTBMS code id) is asked only when
    no code is mapped to the account and the entry has a category."""
    mapped = codings.get(account_id) if account_id is not None else None
    category = (mapped.expense_category_id if mapped is not None
                and mapped.expense_category_id is not None else settings.expense_category_id)
    if not hard_cost:
        category = None  # an ExpenseEntry takes no hard-cost category
    code = mapped.utbms_code_id if mapped is not None else None
    if code is None and category is not None:
        code = category_codes().get(category)
    if code is None:
        code = settings.utbms_code_id
    return CostCoding(category, code, non_billable)


def run_coding(sessions: sessionmaker[Session], firm_id: int, clio: ClioClient,
               state: RunState, entry: PlannedEntry) -> CostCoding:
    """:func:`coding_for` within a run: the mappings are read once (at its first write),
    the categories' own codes asked of Clio at most once."""
    if state.codings is None:
        with sessions() as session:
            state.codings = codings_of(session, firm_id)

    def category_codes() -> dict[int, int | None]:
        if state.category_codes is None:
            state.category_codes = {c.id: c.utbms_code_id for c in clio.hard_cost_categories()}
        return state.category_codes

    return coding_for(entry.account_id, entry.non_billable, state.settings, state.codings,
                      category_codes, hard_cost=state.entry_type == "HardCostEntry")

"""What one import run carries from part to part (docs/design.md, "One run, in parts").

A run is conducted by ``sync/importer.py`` over parts with one job each: the reader
(``sync/reader.py``), the exactly-once writer (``sync/writer.py``), the questions that wait
(``sync/waits.py``), the failures (``sync/failures.py``), where each entry goes
(``sync/placer.py``) and the changes of imported purchases (``sync/changes.py``). They share
this state of the run, and nothing else: each keeps to its own tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hardcost.sync.bills import OFF, bill_id_of
from hardcost.sync.http import ApiError, ConfigError, TransientError
from hardcost.sync.matching import MatterResolver, Resolution
from hardcost.sync.rules import PlannedEntry, QboKey, is_bill
from hardcost.sync.run_record import OpenWork
from hardcost.sync.store import AccountCoding, EntryLink, Firm, FirmSettings, MatterRule
from hardcost.sync.summary import RunSummary

CIRCUIT_BREAK_AFTER = 3  # consecutive transient Clio failures before the rest wait for next run

Key = tuple[str, str, str, str]
"""A line's QuickBooks key: realm, purchase, customer, line (``key_tuple``)."""


@dataclass(frozen=True)
class Queued:
    """An entry whose matter is known, queued for the next batch of writes."""

    entry: PlannedEntry
    matter_id: int
    label: str  # the matter as the run's details and the audit trail name it
    rule: MatterRule | None  # the matter rule that chose the matter, if one did


@dataclass(frozen=True)
class Asked:
    """A question for a person, queued for the run's next batch of questions
    (``Waits.flush``)."""

    entry: PlannedEntry
    resolution: Resolution
    dry_run: bool
    note: str | None  # why a rule did not apply


@dataclass
class RunState:
    firm: Firm
    settings: FirmSettings
    summary: RunSummary
    resolver: MatterResolver
    entry_type: str
    actor: str = "schedule"  # who the audit trail names: a Slack user id, or the trigger
    consecutive_transient: int = 0
    clio_blocked: ApiError | None = None
    raised: set[tuple[str, str, str, str]] = field(default_factory=set)
    obsolete: dict[tuple[str, str], list[EntryLink]] = field(default_factory=dict)
    """(purchase id, line id) → entries an edit made obsolete, not removed yet: one whose
    client is the new entry's may be moved to the new matter instead (``Edits.move``)."""
    to_write: int = 0  # entries this run writes or asks about (for progress)
    handled: int = 0  # of those, done so far
    purchases_expected: int | None = None  # a long run's count of what it will read
    posting: int = 0  # entries of the batch being written that are in Clio, not recorded yet
    waited_before: float = 0.0  # the clients' rate-limit waits when the run started
    rules: list[MatterRule] | None = None  # the firm's active matter rules, read when needed
    batch: list[Queued] = field(default_factory=list)  # entries waiting for their POST
    questions: list[Asked] = field(default_factory=list)  # questions waiting to be recorded
    asked_before: set[tuple[str, str, str, str]] = field(default_factory=set)
    """Keys read this run that were already waiting (a question asked in an earlier run)."""
    item_accounts: dict[str, str] = field(default_factory=dict)  # item id → expense account
    items_asked: set[str] = field(default_factory=set)  # item ids QuickBooks was asked about
    awaiting_payment: set[str] = field(default_factory=set)
    """Bills read this run that are not fully paid (``bills on-payment``): new entries wait."""
    asked_untagged: bool = False  # an expense with no customer waits: the matter search needs
    # the firm's matters (``matter_cache``)
    open: OpenWork = field(default_factory=OpenWork)
    """What the run's first statement found open (``run_record.start``); all True outside a
    run: every part looks."""
    codings: dict[str, AccountCoding] | None = None
    """The firm's category and UTBMS code per import account, read at the first write."""
    category_codes: dict[int, int | None] | None = None
    """Clio category id → its own UTBMS code, asked at most once a run (``sync/coding.py``)."""

    def entries_expected(self) -> int | None:
        """The entries this run will write or ask about: known once its one page is planned;
        for a run of several pages, what is planned so far and the rest at the same entries
        per purchase (None until a page has been planned)."""
        expected, read = self.purchases_expected, self.summary.purchases_read
        if expected is None:
            return self.to_write
        if read <= 0:
            return None
        left = max(0, expected - read)
        return self.to_write + round(left * self.to_write / read)


def key_tuple(key: QboKey) -> Key:
    return (key.realm_id, key.purchase_id, key.customer_id, key.line_id)


def bills_on(state: RunState) -> bool:
    return (state.settings.bills or OFF) != OFF


def entry_label(entry: PlannedEntry) -> str:
    if is_bill(entry.key.purchase_id):
        bill_id = bill_id_of(entry.key.purchase_id)
        what = f"Bill {entry.reference}" if entry.reference else f"Bill #{bill_id}"
        return f"{what} ({entry.amount} for {entry.customer_name}, {entry.date.isoformat()})"
    what = f"Check {entry.reference}" if entry.reference else f"Expense #{entry.key.purchase_id}"
    return f"{what} ({entry.amount} for {entry.customer_name}, {entry.date.isoformat()})"


def count_clio_failure(state: RunState, exc: ApiError) -> None:
    """The circuit breaker: entries that failed every try, in a row, or a config failure,
    stop this run's writes to Clio (the rest are recorded as failures and retried)."""
    if isinstance(exc, TransientError):
        state.consecutive_transient += 1
        if state.consecutive_transient >= CIRCUIT_BREAK_AFTER:
            state.clio_blocked = exc
    elif isinstance(exc, ConfigError):
        state.clio_blocked = exc

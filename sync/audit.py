"""The firm's audit trail (docs/operations.md, "The audit trail"): who changed what, when, and what
it was before.

Every import, update, deletion, kept-because-billed entry, choice, "not a client cost", retry,
setting change, connect, disconnect, pause and resume adds one ``AuditEntry``. ``record`` only
adds the row to the caller's session: it is committed with the change it records, so the trail
never says something happened that did not, nor misses something that did.

Reading it: ``latest`` (Slack's ``/hardcost history``, App Home), ``between`` and ``write_csv``
(``/hardcost export``, ``hardcost audit --csv``).
"""

from __future__ import annotations

import csv
import enum
import io
import json
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import IO, Any, TypedDict, Unpack

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from hardcost.sync.bounds import clip_or_none
from hardcost.sync.store import AuditEntry, utcnow


class Action(enum.StrEnum):
    IMPORTED = "imported"  # a run put the entry on its matter
    CHOSEN = "chosen"  # a person picked the matter; the entry was written
    CONTACT_CHOSEN = "contact_chosen"  # a person picked the Clio contact of a customer
    NOT_CLIENT_COST = "not_client_cost"  # a person said the expense is not billable
    UNDONE = "undone"  # a person undid a matter choice: the unbilled Clio entry was deleted
    UPDATED = "updated"  # an edit in QuickBooks followed into the Clio entry
    MOVED = "moved"  # a line moved to another matter of the same client (PATCH of the matter)
    NOT_OVERWRITTEN = "not_overwritten"  # edited in QuickBooks, but a person changed it in Clio
    CHANGED_AFTER_BILLING = "changed_after_billing"  # edited in QuickBooks, entry on a bill
    DELETED = "deleted"  # the purchase left QuickBooks (or no longer calls for the entry)
    KEPT = "kept"  # ... but the entry stays: it is on a bill, or deletions are set to alert
    RETRY = "retry"  # a person pressed Retry on a failure
    STOPPED = "stopped"  # a person pressed Stop on a run's progress message
    SETTING = "setting"  # before → after of one setting
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    PAUSED = "paused"
    RESUMED = "resumed"
    RULE_CREATED = "rule_created"  # a person made a matter rule (payee → client → matter)
    RULE_REMOVED = "rule_removed"  # a person removed one (or replaced it with a new one)
    RECEIPT_FILED = "receipt_filed"  # a file attached in QuickBooks was filed on the matter
    RECEIPT_KEPT = "receipt_kept"  # ... and removed in QuickBooks since: the document stays
    RECEIPT_SKIPPED = "receipt_skipped"  # not filed (too large, gone): a person files it


DESCRIPTIONS = {
    Action.IMPORTED: "imported",
    Action.CHOSEN: "matter chosen",
    Action.CONTACT_CHOSEN: "contact chosen",
    Action.NOT_CLIENT_COST: "not a client cost",
    Action.STOPPED: "import stopped",
    Action.UNDONE: "choice undone",
    Action.UPDATED: "updated in Clio",
    Action.MOVED: "moved to another matter",
    Action.NOT_OVERWRITTEN: "changed in Clio, not overwritten",
    Action.CHANGED_AFTER_BILLING: "changed after billing",
    Action.DELETED: "deleted from Clio",
    Action.KEPT: "left in Clio",
    Action.RETRY: "retried",
    Action.SETTING: "setting changed",
    Action.CONNECTED: "connected",
    Action.DISCONNECTED: "disconnected",
    Action.PAUSED: "paused",
    Action.RESUMED: "resumed",
    Action.RULE_CREATED: "matter rule made",
    Action.RULE_REMOVED: "matter rule removed",
    Action.RECEIPT_FILED: "receipt filed in Clio",
    Action.RECEIPT_KEPT: "receipt removed in QuickBooks, kept in Clio",
    Action.RECEIPT_SKIPPED: "receipt not filed, add it by hand",
}

SYSTEM_ACTORS = frozenset({"schedule", "webhook", "manual", "slack", "retry", "demo", "cli"})
"""Actors that are not a person: the trigger of the run that made the change."""

MAX_LATEST = 50  # rows ``latest`` returns at most
CSV_COLUMNS = ("time", "actor", "action", "purchase_id", "customer_id", "line_id", "client",
               "amount", "clio_entry_id", "clio_matter_id", "matter", "before", "after",
               "detail", "run_id")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_AFTER_BREAK = re.compile(r"(?<=[\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029])(?=[=+\-@\t])")
"""Where a line inside a cell starts with what a spreadsheet runs (after any line break
``str.splitlines`` knows): it gets a ``'`` there too."""


class Fields(TypedDict, total=False):
    """What a row of the trail may say besides who did what (every one optional)."""

    realm_id: str | None
    purchase_id: str | None
    customer_id: str | None
    line_id: str | None
    client: str | None
    amount: Decimal | None
    clio_activity_id: int | None
    clio_matter_id: int | None
    matter: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    detail: str | None
    run_id: int | None
    at: datetime | None


def record(session: Session, firm_id: int, action: Action, actor: str | None,
           **fields: Unpack[Fields]) -> AuditEntry:
    """Add one row of the trail to ``session``; the caller commits it with its change."""
    row = AuditEntry(**values(firm_id, action, actor, **fields))
    session.add(row)
    return row


def values(firm_id: int, action: Action, actor: str | None,
           **fields: Unpack[Fields]) -> dict[str, Any]:
    """One row of the trail as column values, for many rows in one INSERT (a batch of
    imported entries: ``sync/writer.py`` sends them to one cached INSERT … RETURNING, which
    SQLAlchemy sends as one multi-row VALUES)."""
    return {
        "firm_id": firm_id, "at": fields.get("at") or utcnow(),
        "actor": (actor or "unknown")[:60], "action": action.value,
        "realm_id": fields.get("realm_id"), "purchase_id": fields.get("purchase_id"),
        "customer_id": fields.get("customer_id"), "line_id": fields.get("line_id"),
        "client": _clip(fields.get("client"), 300), "amount": fields.get("amount"),
        "clio_activity_id": fields.get("clio_activity_id"),
        "clio_matter_id": fields.get("clio_matter_id"),
        "matter": _clip(fields.get("matter"), 300),
        "before": _jsonable(fields.get("before")), "after": _jsonable(fields.get("after")),
        "detail": fields.get("detail"), "run_id": fields.get("run_id")}


def latest(session: Session, firm_id: int, *, limit: int = 10, purchase_id: str | None = None,
           client: str | None = None, before_id: int | None = None) -> list[AuditEntry]:
    """The newest rows first: all of them, one purchase's, or those whose client name contains
    ``client`` (case-insensitive for every letter, "öztürk" finds "ÖZTÜRK", on both databases:
    ``store`` gives SQLite PostgreSQL's ``lower()``). ``before_id`` pages back."""
    query = select(AuditEntry).where(AuditEntry.firm_id == firm_id)
    if purchase_id is not None:
        query = query.where(AuditEntry.purchase_id == purchase_id)
    if client is not None:
        pattern = "%" + client.lower().replace("\\", "\\\\").replace("%", "\\%") \
            .replace("_", "\\_") + "%"
        query = query.where(or_(func.lower(AuditEntry.client).like(pattern, escape="\\"),
                                func.lower(AuditEntry.matter).like(pattern, escape="\\")))
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    limit = max(1, min(limit, MAX_LATEST))
    return list(session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit)))


def _in_period(query: Any, start: date | None, end: date | None) -> Any:
    if start is not None:
        query = query.where(AuditEntry.at >= datetime.combine(start, time(), UTC))
    if end is not None:
        query = query.where(AuditEntry.at < datetime.combine(end + timedelta(days=1),
                                                               time(), UTC))
    return query


def count_between(session: Session, firm_id: int, start: date | None,
                  end: date | None) -> int:
    """How many rows ``between`` would give (an export is refused when they are too many)."""
    query = _in_period(select(func.count()).select_from(AuditEntry)
                       .where(AuditEntry.firm_id == firm_id), start, end)
    return int(session.scalar(query) or 0)


def between(session: Session, firm_id: int, start: date | None, end: date | None,
            *, batch: int = 1000) -> Iterator[AuditEntry]:
    """Every row from ``start`` to ``end`` (whole days, UTC, both included), oldest first,
    read in batches so a long trail is never held in memory at once."""
    last_id = 0
    while True:
        query = _in_period(select(AuditEntry).where(AuditEntry.firm_id == firm_id,
                                                    AuditEntry.id > last_id), start, end)
        rows = list(session.scalars(query.order_by(AuditEntry.id).limit(batch)))
        if not rows:
            return
        yield from rows
        last_id = rows[-1].id
        session.expunge_all()


def safe_cell(value: object) -> str:
    """``value`` as a CSV cell a spreadsheet shows as text: a leading ``=``, ``+``, ``-``,
    ``@``, tab or carriage return (and the same after a line break inside) gets an
    apostrophe first, so it is never run as a formula."""
    shown = "" if value is None else str(value)
    shown = "'" + shown if shown.startswith(_FORMULA_START) else shown
    return _FORMULA_AFTER_BREAK.sub("'", shown)


def csv_row(row: AuditEntry) -> list[str]:
    """One row as the CSV has it. Text that a spreadsheet would run as a formula (``=``,
    ``+``, ``-``, ``@``, a tab or a carriage return first) is quoted with a leading
    apostrophe, and so is every line inside a cell that starts so."""
    text = safe_cell

    def data(value: dict[str, Any] | None) -> str:
        return "" if value is None else text(json.dumps(value, sort_keys=True,
                                                        ensure_ascii=False))

    return [row.at.astimezone(UTC).isoformat(timespec="seconds"), text(row.actor),
            row.action, text(row.purchase_id), text(row.customer_id), text(row.line_id),
            text(row.client), "" if row.amount is None else f"{row.amount:.2f}",
            "" if row.clio_activity_id is None else str(row.clio_activity_id),
            "" if row.clio_matter_id is None else str(row.clio_matter_id),
            text(row.matter), data(row.before), data(row.after), text(row.detail),
            "" if row.run_id is None else str(row.run_id)]


def write_csv(rows: Iterable[AuditEntry], out: IO[str]) -> int:
    """The rows as CSV (a header first, rows ending in ``\\n``); returns how many rows were
    written. A cell holding a carriage return or a line feed is always quoted: a spreadsheet
    ends a row at a lone ``\\r`` as at ``\\n``, and ``csv.writer`` quotes only for the
    characters of its own line terminator."""
    line = io.StringIO()
    writer = csv.writer(line, lineterminator="\r\n")  # "\r" and "\n" in a cell: quoted

    def write(cells: Iterable[str]) -> None:
        line.seek(0)
        line.truncate()
        writer.writerow(cells)
        out.write(line.getvalue()[:-2] + "\n")

    write(CSV_COLUMNS)
    count = 0
    for row in rows:
        write(csv_row(row))
        count += 1
    return count


def is_person(actor: str) -> bool:
    return actor not in SYSTEM_ACTORS and actor != "unknown"


def _clip(value: str | None, size: int) -> str | None:
    return clip_or_none(value, size)


def _jsonable(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {str(k): _plain(v) for k, v in value.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value

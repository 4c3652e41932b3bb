"""A run's record and its connection: whether a firm may run, the ``runs`` row finished with
what really happened, and the run's database work held on one connection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.engine import Connection as SqlConnection
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync.log_context import set_run_id
from hardcost.sync.store import (
    PROVIDER_NAMES,
    Connection,
    EntryLink,
    Failure,
    FailureKind,
    Firm,
    FirmSettings,
    LinkState,
    PurchaseRemoval,
    ReceiptLink,
    ReceiptState,
    Run,
    WaitingExpense,
    WaitReason,
    Watermark,
)
from hardcost.sync.summary import RunSummary

STREAMS = ("purchases", "bills", "removals", "receipts")
"""The watermark rows a run reads (reader, removals, receipts)."""


@dataclass
class OpenWork:
    """What a run may have to do besides reading QuickBooks, as its first statement found it
    (``start``). A part whose flag is False has nothing to look for and skips its query; every
    flag is True (look) when unknown. Read once the run holds the firm's lease, so nothing a
    flag says is missing can appear meanwhile except from this run itself (a dead run's
    ``pending`` links, the only ones recovery settles, were there before the lease was taken;
    a person's choice written meanwhile is left alone by recovery anyway)."""

    pending_links: bool = True  # entry_links still pending (recovery)
    superseded: bool = True  # entries an edit made obsolete, not removed yet
    failures: bool = True  # open failures a run retries (transient, config)
    matter_waits: bool = True  # expenses waiting for their client's matter (it may appear)
    payment_waits: bool = True  # Bills waiting for payment (read again under on-entry)
    removals: bool = True  # deletions and voids not handled yet
    receipts: bool = True  # receipt links pending or failed (``sync/receipts.py``)
    marks: dict[str, tuple[str, date | None]] | None = None
    """Each stream's stored watermark and start date (None: not read; a missing stream: none
    stored)."""


@dataclass
class RunStart:
    """The firm, its settings, its broken connections and its open work: one round trip."""

    firm: Firm
    settings: FirmSettings
    broken: dict[str, str | None] = field(default_factory=dict)
    open: OpenWork = field(default_factory=OpenWork)


def start(session: Session, firm_id: int) -> RunStart:
    """What a run starts from, read in one statement: the firm and its settings, its
    connections (joined), whether each kind of open work exists (``EXISTS``, by index), and
    the stored watermarks. ``FirmNotReady`` when there is no such firm."""
    flags = [
        exists().where(EntryLink.firm_id == firm_id, EntryLink.state == LinkState.PENDING),
        exists().where(EntryLink.firm_id == firm_id, EntryLink.superseded_at.is_not(None),
                       EntryLink.removed_at.is_(None)),
        exists().where(Failure.firm_id == firm_id, Failure.resolved_at.is_(None),
                       Failure.kind.in_([FailureKind.TRANSIENT.value, FailureKind.CONFIG.value]),
                       Failure.purchase_id != "?", Failure.code.not_like("receipt_%")),
        exists().where(WaitingExpense.firm_id == firm_id, WaitingExpense.resolved_at.is_(None),
                       WaitingExpense.resolution.is_(None),
                       WaitingExpense.reason == WaitReason.NO_MATTER.value,
                       WaitingExpense.contact_id.is_not(None)),
        exists().where(WaitingExpense.firm_id == firm_id, WaitingExpense.resolved_at.is_(None),
                       WaitingExpense.reason == WaitReason.PAYMENT.value),
        exists().where(PurchaseRemoval.firm_id == firm_id, PurchaseRemoval.handled_at.is_(None)),
        exists().where(ReceiptLink.firm_id == firm_id, ReceiptLink.state.in_(
            [ReceiptState.PENDING.value, ReceiptState.FAILED.value])),
    ]
    marks = []
    for stream in STREAMS:
        for column in (Watermark.value, Watermark.start_date):
            marks.append(select(column).where(Watermark.firm_id == firm_id,
                                              Watermark.stream == stream).scalar_subquery())
    rows = session.execute(
        select(Firm, FirmSettings, Connection, *flags, *marks)
        .outerjoin(FirmSettings, FirmSettings.firm_id == Firm.id)
        .outerjoin(Connection, Connection.firm_id == Firm.id)
        .where(Firm.id == firm_id)).all()
    if not rows or rows[0][1] is None:
        raise FirmNotReady(f"There is no firm {firm_id}.")
    firm, settings = rows[0][0], rows[0][1]
    broken = {row[2].provider: row[2].broken_reason for row in rows
              if row[2] is not None and row[2].broken_at is not None}
    values: list[Any] = list(rows[0][3:])
    stored: dict[str, tuple[str, date | None]] = {}
    for n, stream in enumerate(STREAMS):
        value, start_date = values[len(flags) + 2 * n], values[len(flags) + 1 + 2 * n]
        if value is not None:
            stored[stream] = (str(value), start_date)
    pending, superseded, failures, matter_waits, payment_waits, removals, receipts = \
        (bool(v) for v in values[:len(flags)])
    return RunStart(firm, settings, broken, OpenWork(
        pending_links=pending, superseded=superseded, failures=failures,
        matter_waits=matter_waits, payment_waits=payment_waits, removals=removals,
        receipts=receipts, marks=stored))


class FirmNotReady(Exception):
    """The firm's settings do not allow a run yet; the message says what to set."""


def check_ready(firm: Firm, settings: FirmSettings, broken: dict[str, str | None]) -> None:
    missing = []
    if not firm.active:
        raise FirmNotReady("hardcost was removed from this firm's Slack workspace.")
    if not firm.qbo_realm_id:
        missing.append("connect QuickBooks (/hardcost connect quickbooks)")
    for provider, reason in broken.items():
        name = PROVIDER_NAMES.get(provider, provider)
        missing.append(f"reconnect {name}, which refused hardcost's connection ({reason}): "
                       f"/hardcost connect {provider}")
    if not settings.import_account_ids:
        missing.append("choose the import account (/hardcost set account <name>)")
    if not settings.start_date:
        missing.append("choose the start date (/hardcost set start-date YYYY-MM-DD)")
    if missing:
        raise FirmNotReady("Nothing was imported: first " + "; ".join(missing) + ".")


def open_row(session: Session, firm_id: int, trigger: str, started_at: datetime,
             made: int | None) -> int:
    """The run's ``runs`` row: the one its lease claim made (``made``: nothing more to write),
    else a new one, committed (``running`` until ``finish``)."""
    if made is None:
        run = Run(firm_id=firm_id, trigger=trigger, dry_run=False, started_at=started_at)
        session.add(run)
        session.commit()
        made = run.id
    set_run_id(made)
    return made


def finish(sessions: sessionmaker[Session], summary: RunSummary,
           clock: Callable[[], datetime], *,
           also: Callable[[Session], object] | None = None) -> bool:
    """The run's row says how it ended (a run that crashed is not ``ok``) and what it did:
    one ``UPDATE`` by its id. ``also(session)`` runs in the same transaction (the scheduler
    gives the run's lease back in it). True once committed."""
    with sessions() as session:
        session.execute(update(Run).where(Run.id == summary.run_id).values(
            finished_at=clock(),
            status="stopped" if summary.stopped_by_hand else
            "failed" if summary.error else "ok",
            error=summary.error, imported=summary.imported,
            imported_total=summary.imported_total, waiting=summary.waiting,
            failed=summary.failed, skipped=summary.skipped,
            purchases_read=summary.purchases_read, details=summary.details(),
            quiet=not summary.did_something))  # housekeeping prunes old quiet runs
        if also is not None:
            also(session)
        session.commit()
    return True


def collect(by_id: dict[str, dict[str, Any]], unkeyed: list[dict[str, Any]],
            purchases: Iterable[Any]) -> None:
    """Purchases read by id, once each (by their id), and those without one."""
    for purchase in purchases:
        if isinstance(purchase, dict) and purchase.get("Id") is not None:
            by_id[str(purchase["Id"])] = purchase
        else:
            unkeyed.append(purchase if isinstance(purchase, dict) else {"Id": None})


class OneConnection(sessionmaker[Session]):
    """Sessions on one connection, one at a time (see ``Importer._one_connection``)."""

    def __init__(self, shared: sessionmaker[Session], connection: SqlConnection) -> None:
        super().__init__(class_=shared.class_, **{**shared.kw, "bind": connection})
        self.shared = shared
        self.open = 0

    def __call__(self, **local_kw: Any) -> Session:
        if self.open:
            # Nested: its own transaction on its own connection, never joined to the open one.
            return self.shared(**local_kw)
        session = super().__call__(**local_kw)
        self.open += 1
        close = session.close

        def closed() -> None:
            if session.info.pop("_one_connection_open", None):
                self.open -= 1
            close()

        session.info["_one_connection_open"] = True
        session.close = closed  # type: ignore[method-assign]
        return session

"""A run's record and its connection: whether a firm may run, the ``runs`` row finished with
what really happened, and the run's database work held on one connection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection as SqlConnection
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync.store import PROVIDER_NAMES, Firm, FirmSettings, Run
from hardcost.sync.summary import RunSummary


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


def finish(sessions: sessionmaker[Session], summary: RunSummary,
           clock: Callable[[], datetime]) -> None:
    """The run's row says how it ended (a run that crashed is not ``ok``) and what it did."""
    with sessions() as session:
        run = session.get(Run, summary.run_id)
        if run is None:
            return
        run.finished_at = clock()
        run.status = "stopped" if summary.stopped_by_hand else \
            "failed" if summary.error else "ok"
        run.error = summary.error
        run.imported = summary.imported
        run.imported_total = summary.imported_total
        run.waiting = summary.waiting
        run.failed = summary.failed
        run.skipped = summary.skipped
        run.purchases_read = summary.purchases_read
        run.details = summary.details()
        run.quiet = not summary.did_something  # housekeeping prunes old quiet runs
        session.commit()


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

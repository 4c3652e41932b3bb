"""Pruning old rows so that the tables a replica reads stay small (``hardcost serve`` runs it
hourly; ``HARDCOST_RETENTION_DAYS``, 30 by default).

What goes, once older than the retention period:

* **Slack outbox rows** that were sent (or given up on) for run summaries, failures and
  notices. Rows of prompts and grouped prompts stay: their in-place updates find the message
  through them, and whether a settled prompt was updated already is read from them. A row that
  is the parent of a thread reply not yet sent stays too.
* **Quiet runs** (``runs.quiet``: nothing imported, waiting, failed, changed or removed), after
  two days already (``QUIET_RUNS_KEPT``), except each firm's latest run, which
  ``/hardcost status`` shows.
* **Processed QuickBooks webhook events.** Intuit redelivers within minutes to hours, so their
  dedupe keys are long past use.

Deletes go in batches of ``BATCH`` rows, each its own short transaction, so no replica waits
long for a lock; every replica may run it (a row deleted twice is deleted once).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, exists, func, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import aliased

from hardcost.sync.store import Run, SlackOutbox, WebhookEvent, utcnow

log = logging.getLogger(__name__)

BATCH = 2000
QUIET_RUNS_KEPT = timedelta(days=2)
"""Quiet runs say nothing a day later: at 10,000 firms on a 15-minute schedule they are about
a million rows a day, so they go after two days whatever the retention period."""
KEPT_REFS = ("prompt", "group")  # outbox rows the prompts' in-place updates read


@dataclass
class Pruned:
    outbox: int = 0
    runs: int = 0
    webhook_events: int = 0

    @property
    def total(self) -> int:
        return self.outbox + self.runs + self.webhook_events


def prune(db: Engine, retention_days: int, *, now: datetime | None = None,
          batch: int = BATCH) -> Pruned:
    """Delete what is older than ``retention_days`` (see the module); how many rows of each."""
    if retention_days < 1:
        raise ValueError("keep at least one day")
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    pruned = Pruned()

    child = aliased(SlackOutbox)
    outbox_ids = (select(SlackOutbox.id).where(
        SlackOutbox.created_at < cutoff,
        or_(SlackOutbox.sent_at.is_not(None), SlackOutbox.gave_up_at.is_not(None)),
        or_(SlackOutbox.ref_kind.is_(None), SlackOutbox.ref_kind.not_in(KEPT_REFS)),
        ~exists().where(child.parent_id == SlackOutbox.id, child.sent_at.is_(None),
                        child.gave_up_at.is_(None)))
        .order_by(SlackOutbox.created_at, SlackOutbox.id).limit(batch))  # by its index
    pruned.outbox = _in_batches(db, outbox_ids, lambda ids: delete(SlackOutbox).where(
        SlackOutbox.id.in_(ids)), batch)

    latest = aliased(Run)
    quiet_cutoff = max(cutoff, (now or utcnow()) - QUIET_RUNS_KEPT)
    run_ids = (select(Run.id).where(
        Run.quiet.is_(True), Run.status == "ok", Run.started_at < quiet_cutoff,
        exists().where(and_(latest.firm_id == Run.firm_id, latest.id > Run.id)))
        .order_by(Run.id).limit(batch))
    pruned.runs = _in_batches(db, run_ids, lambda ids: delete(Run).where(Run.id.in_(ids)),
                              batch)

    event_ids = (select(WebhookEvent.id).where(
        WebhookEvent.processed_at.is_not(None), WebhookEvent.processed_at < cutoff)
        .order_by(WebhookEvent.id).limit(batch))
    pruned.webhook_events = _in_batches(db, event_ids, lambda ids: delete(WebhookEvent).where(
        WebhookEvent.id.in_(ids)), batch)
    if pruned.total:
        log.info("housekeeping: pruned %d outbox rows, %d quiet runs and %d webhook events "
                 "older than %d days", pruned.outbox, pruned.runs, pruned.webhook_events,
                 retention_days)
    return pruned


def _in_batches(db: Engine, ids_query: Any, deleting: Callable[[list[int]], Any],
                batch: int) -> int:
    total = 0
    while True:
        with db.begin() as conn:
            ids = list(conn.scalars(ids_query))
            if not ids:
                return total
            conn.execute(deleting(ids))
        total += len(ids)
        if len(ids) < batch:  # that was the last
            return total


def table_sizes(db: Engine) -> dict[str, int]:
    """Rows in the tables housekeeping keeps small (tests, the scale benchmark)."""
    with db.connect() as conn:
        return {table.__tablename__: int(conn.scalar(select(func.count()).select_from(table))
                                         or 0)
                for table in (SlackOutbox, Run, WebhookEvent)}


__all__ = ["Pruned", "prune", "table_sizes"]

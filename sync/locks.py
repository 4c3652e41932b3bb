"""One import of a firm at a time, across every process sharing the database.

On PostgreSQL: the firm's advisory lock, taken with ``pg_try_advisory_lock`` on a connection of
its own and held for the whole run; PostgreSQL drops it if the process dies. Elsewhere (SQLite,
one process serves the database; see ``sync.scheduler``) there is nothing to take.

A run whose process died stays ``running`` in the ``runs`` table. Whoever takes the firm's lock
next knows no one is running it, and marks such rows ``abandoned`` (``mark_abandoned``); so does
``hardcost serve`` at start-up (``settle_abandoned_runs``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import Connection, select, text, update
from sqlalchemy.engine import Engine

from hardcost.sync.store import Run, utcnow

log = logging.getLogger(__name__)

LOCK_NAMESPACE = 0x68617264  # "hard": first key of pg_try_advisory_lock(int, int)


@contextmanager
def firm_run_lock(db: Engine, firm_id: int) -> Iterator[bool]:
    """Yields True when this process may run the firm's import now (and holds the lock until
    the block ends); False when another process is running it."""
    if db.dialect.name != "postgresql":
        yield True
        return
    conn = db.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        got = bool(conn.scalar(text("SELECT pg_try_advisory_lock(:ns, :firm)"),
                               {"ns": LOCK_NAMESPACE, "firm": firm_id}))
    except BaseException:
        conn.close()
        raise
    if got:
        mark_abandoned(conn, firm_id, utcnow())
    try:
        yield got
    finally:
        try:
            if got:
                conn.scalar(text("SELECT pg_advisory_unlock(:ns, :firm)"),
                            {"ns": LOCK_NAMESPACE, "firm": firm_id})
        except Exception:  # noqa: BLE001 - a dropped connection drops the lock too
            log.warning("unlocking firm %s failed; dropping the connection", firm_id,
                        exc_info=True)
            conn.invalidate()
        finally:
            conn.close()


ABANDONED = ("The process running this import stopped before it finished (it was killed or "
             "restarted). Nothing is lost: the next run carries on where it stopped.")


def mark_abandoned(conn: Connection, firm_id: int | None, now: datetime) -> int:
    """Mark the firm's (every firm's with None) ``running`` runs ``abandoned``. Only for a
    caller that knows no process runs them: it holds the firm's lock, or it is the only
    process serving the database. Returns how many rows."""
    where = [Run.status == "running"]
    if firm_id is not None:
        where.append(Run.firm_id == firm_id)
    result = conn.execute(update(Run).where(*where).values(
        status="abandoned", finished_at=now, error=ABANDONED))
    count = int(result.rowcount or 0)
    if count:
        log.warning("marked %d run(s)%s abandoned: their process stopped mid-run", count,
                    f" of firm {firm_id}" if firm_id is not None else "")
    return count


def settle_abandoned_runs(db: Engine, now: datetime | None = None) -> None:
    """At start-up: every ``running`` run no live process holds is marked ``abandoned``. On
    PostgreSQL a firm's rows are left alone while another replica holds its lock; with SQLite
    this process is the database's only server (the scheduler's lock file says so)."""
    now = now or utcnow()
    if db.dialect.name != "postgresql":
        with db.begin() as conn:
            mark_abandoned(conn, None, now)
        return
    with db.connect() as conn:
        firms = list(conn.scalars(select(Run.firm_id).where(Run.status == "running")
                                  .distinct()))
    for firm_id in firms:
        with firm_run_lock(db, firm_id):  # marks them when no replica runs the firm
            pass

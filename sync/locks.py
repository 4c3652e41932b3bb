"""One import of a firm at a time, across every process sharing the database.

On PostgreSQL: the firm's advisory lock, taken with ``pg_try_advisory_lock`` on a connection of
its own and held for the whole run; PostgreSQL drops it if the process dies. Elsewhere (SQLite,
one process serves the database; see ``sync.scheduler``) there is nothing to take.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text
from sqlalchemy.engine import Engine

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

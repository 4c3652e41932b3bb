"""What a first run's bookkeeping costs the database: committed transactions per created entry
in a backfill where some expenses wait for a matter (issue 31).

The writes go in batches of ``WRITE_BATCH`` (one commit for their pending links, one for their
results); the questions (expenses that wait) are batched the same way, so the commits of a
backfill stay at most ``MAX_COMMITS_PER_ENTRY`` per created entry. Counted with SQLAlchemy's
``commit`` event on the run's engine. On PostgreSQL the shared Clio pacing takes its grants
of tokens in transactions of their own (``rate_buckets``, ``sync/pacing.py``): they are
counted apart, not in the bound. Runs on SQLite and, with ``HARDCOST_TEST_DATABASE_URL`` set,
on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine

from bench.import_bench import connect_seeded
from hardcost.sandbox.world import SandboxWorld
from hardcost.sync.engine import make_engine, make_session_factory
from hardcost.sync.firms import build_importer
from hardcost.sync.http import RetryPolicy
from hardcost.sync.store import WaitingExpense

MAX_COMMITS_PER_ENTRY = 0.1  # issue 31's target for a backfill
PURCHASES = 800
PACING_TABLE = "rate_buckets"


@dataclass
class Commits:
    run: int = 0  # the run's own transactions
    pacing: int = 0  # the shared pacing's grants (PostgreSQL)


class CommitCounter:
    """Commits on one engine, those of a transaction that touched the pacing table apart."""

    def __init__(self, db: Engine) -> None:
        self.counted = Commits()
        self.on = False
        event.listen(db, "before_cursor_execute", self._seen)
        event.listen(db, "commit", self._committed)
        event.listen(db, "rollback", self._rolled_back)

    def _seen(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if PACING_TABLE in statement:
            conn.info["pacing"] = True

    def _committed(self, conn: Any) -> None:
        pacing = conn.info.pop("pacing", False)
        if self.on:
            if pacing:
                self.counted.pacing += 1
            else:
                self.counted.run += 1

    def _rolled_back(self, conn: Any) -> None:
        conn.info.pop("pacing", None)


@pytest.fixture
def backfill(database_url: str) -> Iterator[tuple[Any, Engine, int]]:
    with SandboxWorld.start() as world:
        world.clio.rate_limit_per_minute = 1_000_000  # the bookkeeping, not the pacing
        db = make_engine(database_url)
        sessions = make_session_factory(db)
        world.clock.advance(-300)  # the bookkeeper entered these five minutes ago
        _, firm_id = connect_seeded(world, sessions, purchases=PURCHASES, clients=40, seed=7)
        world.clock.advance(300)
        importer = build_importer(sessions, firm_id, world.settings(),
                                  retry=RetryPolicy(attempts=4, backoff=0.01, max_wait=0.2,
                                                    throttle_wait=0.05), sandbox_links=True)
        try:
            yield importer, db, firm_id
        finally:
            db.dispose()


def test_a_backfill_with_waiting_expenses_commits_at_most_one_in_ten_entries(
        backfill: tuple[Any, Engine, int]) -> None:
    importer, db, firm_id = backfill
    counter = CommitCounter(db)
    counter.on = True
    summary = importer.run(trigger="test")
    counter.on = False
    assert not summary.error and summary.failed == 0
    assert summary.imported > PURCHASES // 2
    sessions = make_session_factory(db)
    with sessions() as session:
        asked = session.scalar(select(func.count()).select_from(WaitingExpense).where(
            WaitingExpense.firm_id == firm_id, WaitingExpense.resolved_at.is_(None)))
    assert summary.waiting == asked and asked >= 20  # questions were asked, and all recorded
    per_entry = counter.counted.run / summary.imported
    assert per_entry <= MAX_COMMITS_PER_ENTRY, (
        f"{counter.counted.run} commits for {summary.imported} entries and {asked} questions "
        f"({per_entry:.3f} per entry; {counter.counted.pacing} pacing grants apart)")

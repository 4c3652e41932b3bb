"""What a quiet run costs the database: a bound on its SQL statements and committed
transactions, the lease taken and given back and the notifier included (issue 31).

A quiet run is the schedule's steady state: nothing changed in QuickBooks since the last run.
It is driven as ``hardcost serve`` drives it (``bench.quiet_bench.serve_wiring``), once by
``run_firm`` (as a tick) and once by the claim pass (``sync``), and every statement sent on the
engine is counted with an SQLAlchemy event. Runs on SQLite and, with
``HARDCOST_TEST_DATABASE_URL`` set, on PostgreSQL.

In production a firm's runs are 15 minutes apart and a block of QuickBooks tokens lives 10 s,
so every quiet run takes a pacing grant first (on PostgreSQL a transaction of its own,
``sync.pacing``): the ``grant-expired`` cases drop the process's blocks before each run, so
that grant is counted too, and the three commits are the claim (the run's row made in it), the
grant and the run's end (the lease given back in it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.engine import Engine

from bench import quiet_bench
from hardcost.sandbox.world import SandboxWorld
from hardcost.sync.engine import make_session_factory
from hardcost.sync.leases import lease_holders
from hardcost.sync.scheduler import ImportScheduler
from hardcost.sync.store import Run, RunLease, Watermark

MAX_STATEMENTS = 20  # issue 31's target, per quiet run
MAX_COMMITS = 3


@dataclass
class Counted:
    statements: list[str] = field(default_factory=list)
    commits: int = 0


class Counter:
    def __init__(self, db: Engine) -> None:
        self.db = db
        self.now: Counted | None = None
        event.listen(db, "before_cursor_execute", self._seen)
        event.listen(db, "commit", self._committed)

    def _seen(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if self.now is not None:
            self.now.statements.append(" ".join(statement.split())[:160])

    def _committed(self, conn: Any) -> None:
        if self.now is not None:
            self.now.commits += 1

    def count(self) -> Counted:
        self.now = Counted()
        return self.now

    def stop(self) -> None:
        self.now = None


@dataclass
class Quiet:
    world: SandboxWorld
    scheduler: ImportScheduler
    firms: list[int]
    counter: Counter
    db: Engine
    bills: bool


@pytest.fixture(params=[False, True], ids=["purchases", "bills"])
def quiet(request: pytest.FixtureRequest, database_url: str) -> Iterator[Quiet]:
    with quiet_bench.database(database_url) as (db, _), SandboxWorld.start() as world, \
            quiet_bench.slack_sandbox(world) as (slack, server):
        world.clio.rate_limit_per_minute = quiet_bench.RATE_LIMIT
        sessions = make_session_factory(db)
        ws = slack.add_workspace("TQUIET", name="Quiet firms")
        client = quiet_bench.make_web_client(ws.bot_token, f"{server.url}/api/")
        fleet = quiet_bench.seed_fleet(world, sessions, ws, firms=2, seed=7,
                                       bills=request.param)
        scheduler = quiet_bench.serve_wiring(world, sessions, client)
        world.clock.advance(300)
        for firm_id in fleet.ids:  # the initial import
            summary = scheduler.run_firm(firm_id)
            assert summary is not None and summary.imported and not summary.error
        world.clock.advance(quiet_bench.INTERVAL_MINUTES * 60)
        yield Quiet(world, scheduler, fleet.ids, Counter(db), db, request.param)


def _report(counted: Counted) -> str:
    return f"{len(counted.statements)} statements, {counted.commits} commits:\n" + \
        "\n".join(counted.statements)


@pytest.fixture(params=[False, True], ids=["block-valid", "grant-expired"])
def expired(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def test_a_quiet_run_stays_within_its_statements_and_commits(quiet: Quiet,
                                                             expired: bool) -> None:
    for firm_id in quiet.firms:
        if expired:
            quiet_bench.expire_pacing_blocks()
        grants = quiet_bench.pacing_grants()
        counted = quiet.counter.count()
        summary = quiet.scheduler.run_firm(firm_id)
        quiet.counter.stop()
        if expired and quiet.db.dialect.name == "postgresql":
            assert quiet_bench.pacing_grants() > grants  # the production case: counted
        assert summary is not None and summary.run_id is not None
        assert summary is not None and not summary.did_something and not summary.error
        assert summary.clio_calls == 0
        assert summary.qbo_calls <= (quiet_bench.QBO_TARGET_WITH_BILLS if quiet.bills
                                     else quiet_bench.QBO_TARGET)
        assert len(counted.statements) <= MAX_STATEMENTS, _report(counted)
        assert counted.commits <= MAX_COMMITS, _report(counted)
    assert lease_holders(quiet.db) == []  # every lease given back
    _runs_say_ok(quiet)


def _runs_say_ok(quiet: Quiet) -> None:
    """Every run row (the quiet runs' made in their lease's claim) was finished ``ok``: none
    left ``running``, none deleted (the initial imports' and at least one quiet run a firm)."""
    with make_session_factory(quiet.db)() as session:
        runs = list(session.scalars(select(Run)))
    assert len(runs) >= 2 * len(quiet.firms)
    assert all(run.status == "ok" and run.finished_at is not None for run in runs)
    assert sum(1 for run in runs if run.quiet) >= len(quiet.firms)


def test_a_quiet_run_claimed_by_the_claim_pass_stays_within_them_too(quiet: Quiet,
                                                                     expired: bool) -> None:
    """The production path: the claim pass leases the due firms in one transaction; each run
    gives its lease back, with the next due time, in the transaction that finishes its row."""
    sessions = make_session_factory(quiet.db)
    due = datetime(2020, 1, 1, tzinfo=UTC)  # long due, whichever clock the leases read
    with sessions() as session:
        for lease in session.scalars(select(RunLease)):
            lease.next_run_at = due
        session.commit()
    done: list[Any] = []
    scheduler = quiet.scheduler
    scheduler.after_run = (lambda firm_id, summary, then=scheduler.after_run:
                           (then(firm_id, summary), done.append(summary)))
    if expired:
        quiet_bench.expire_pacing_blocks()
    grants = quiet_bench.pacing_grants()
    counted = quiet.counter.count()
    scheduler.sync()
    deadline = time.monotonic() + 30
    while len(done) < len(quiet.firms) and time.monotonic() < deadline:
        time.sleep(0.02)  # the notifier runs after the run's thread is counted done
    assert scheduler.wait(30)
    quiet.counter.stop()
    if expired and quiet.db.dialect.name == "postgresql":
        assert quiet_bench.pacing_grants() >= grants + len(quiet.firms)  # one per realm
    assert len(done) == len(quiet.firms)
    assert all(s is not None and not s.did_something and not s.error for s in done)
    per_run = len(counted.statements) / len(quiet.firms)
    assert per_run <= MAX_STATEMENTS, _report(counted)
    assert counted.commits <= MAX_COMMITS * len(quiet.firms), _report(counted)
    with sessions() as session:  # given back, next due one interval on
        leases = list(session.scalars(select(RunLease)))
    assert all(lease.claim_token is None for lease in leases)
    assert all(lease.next_run_at > due for lease in leases)
    _runs_say_ok(quiet)


def test_a_quiet_run_leaves_the_watermarks_until_they_fall_six_hours_behind(
        quiet: Quiet) -> None:
    sessions = make_session_factory(quiet.db)
    firm_id = quiet.firms[0]

    def marks() -> dict[str, str]:
        with sessions() as session:
            return {m.stream: m.value for m in session.scalars(
                select(Watermark).where(Watermark.firm_id == firm_id))}

    before = marks()
    assert {"purchases", "removals"} <= set(before)
    assert quiet.scheduler.run_firm(firm_id) is not None
    assert marks() == before  # nothing moved: nothing written
    quiet.world.clock.advance(6 * 3600)
    assert quiet.scheduler.run_firm(firm_id) is not None
    after = marks()
    assert set(after) == set(before)
    # times move on; the receipts row is a state (``live``), not a time
    assert all(after[stream] > before[stream] for stream in before if stream != "receipts")


"""Scheduled imports (sync/scheduler.py): due firms claimed from the database, one run at a
time.

A "minute" of ``schedule_minutes`` lasts ``UNIT`` seconds here (``unit_seconds``); the claim
pass job is pushed far away and ``sync()`` (one claim pass) is called by hand, so each test
decides when the scheduler looks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync.engine import make_engine, make_session_factory
from hardcost.sync.importer import Importer
from hardcost.sync.leases import run_soon
from hardcost.sync.scheduler import ImportScheduler, SchedulerRefused
from hardcost.sync.store import Connection, EntryLink, Run
from hardcost.sync.store import Firm as FirmRow
from hardcost.sync.summary import RunSummary
from tests.conftest import POSTGRES_URL
from tests.firmkit import Firm, env_for, not_due

UNIT = 0.4  # seconds per schedule "minute"


def _scheduler(firm: Firm, sessions: sessionmaker[Session] | None = None, *,
               unit: float = UNIT, **kwargs: Any) -> ImportScheduler:
    sessions = sessions or firm.sessions
    return ImportScheduler(sessions, lambda firm_id: firm.world.importer(sessions, firm_id),
                           unit_seconds=unit, refresh_every=3600, clock=firm.world.clock.now,
                           **kwargs)


@pytest.fixture
def started() -> Iterator[list[ImportScheduler]]:
    """Schedulers a test starts; shut down (and their runs awaited) afterwards."""
    schedulers: list[ImportScheduler] = []
    yield schedulers
    for scheduler in schedulers:
        scheduler.shutdown()
    for scheduler in schedulers:
        scheduler.wait(10)


def _scheduled_runs(firm: Firm) -> int:
    with firm.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Run).where(
            Run.firm_id == firm.id, Run.trigger == "schedule")) or 0)


def _due_at(firm: Firm, when: datetime) -> None:
    with firm.sessions() as session:
        run_soon(session, firm.id, when)
        session.commit()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_connected_firm_is_imported_on_schedule_without_a_command(
        firm: Firm, started: list[ImportScheduler]) -> None:
    firm.client("Jane Smith", ["Smith estate"])
    firm.expense(("125.00", "Jane Smith", "Filing fee"))
    firm.update_settings(schedule_minutes=1)
    posted: list[tuple[int, RunSummary]] = []
    scheduler = _scheduler(firm, after_run=lambda firm_id, summary: posted.append(
        (firm_id, summary)))
    started.append(scheduler)
    scheduler.start()

    assert scheduler.interval(firm.id) == UNIT
    wait_for(lambda: len(firm.entries()) == 1 and bool(posted))
    assert posted[0][0] == firm.id and posted[0][1].imported == 1
    assert _scheduled_runs(firm) >= 1


def test_pause_stops_runs_and_resume_restarts_them_after_a_refresh(
        firm: Firm, started: list[ImportScheduler]) -> None:
    firm.update_settings(schedule_minutes=1)
    scheduler = _scheduler(firm)
    started.append(scheduler)
    scheduler.start()
    wait_for(lambda: _scheduled_runs(firm) >= 1)

    firm.update_settings(paused=True)
    scheduler.sync()
    assert scheduler.next_run(firm.id) is None
    scheduler.wait(5)  # a run that had started before the pause
    paused_at = _scheduled_runs(firm)
    time.sleep(4 * UNIT)
    assert _scheduled_runs(firm) == paused_at

    firm.update_settings(paused=False)
    scheduler.sync()
    assert scheduler.next_run(firm.id) is not None
    wait_for(lambda: _scheduled_runs(firm) > paused_at)


def test_a_paused_firm_is_skipped_even_before_the_next_refresh(firm: Firm) -> None:
    scheduler = _scheduler(firm)
    firm.update_settings(paused=True)
    assert scheduler.run_firm(firm.id) is None
    assert _scheduled_runs(firm) == 0


def test_a_changed_schedule_is_picked_up(firm: Firm, started: list[ImportScheduler]) -> None:
    firm.update_settings(schedule_minutes=20)
    scheduler = _scheduler(firm)
    started.append(scheduler)
    scheduler.start()
    assert scheduler.interval(firm.id) == 20 * UNIT

    firm.update_settings(schedule_minutes=1)
    scheduler.sync()
    assert scheduler.interval(firm.id) == UNIT
    upcoming = scheduler.next_run(firm.id)
    assert upcoming is not None
    assert upcoming <= datetime.now(UTC) + timedelta(seconds=UNIT + 0.5)
    wait_for(lambda: _scheduled_runs(firm) >= 1)

    firm.update_settings(schedule_minutes=0)  # never below the minimum of one
    scheduler.sync()
    assert scheduler.interval(firm.id) == UNIT


def test_only_ready_firms_get_a_job(firm: Firm, started: list[ImportScheduler]) -> None:
    scheduler = _scheduler(firm, unit=60)  # no tick during the test
    started.append(scheduler)
    scheduler.start()
    assert scheduler.next_run(firm.id) is not None

    def scheduled_when(provider: str, broken_at: datetime | None) -> bool:
        with firm.sessions() as session:
            row = session.scalars(select(Connection).where(
                Connection.firm_id == firm.id, Connection.provider == provider)).one()
            row.broken_at = broken_at
            session.commit()
        scheduler.sync()
        return scheduler.next_run(firm.id) is not None

    broken = datetime.now(UTC)
    assert not scheduled_when("quickbooks", broken)
    assert scheduled_when("quickbooks", None)
    assert not scheduled_when("clio", broken)
    assert scheduled_when("clio", None)

    with firm.sessions() as session:
        row = session.get(FirmRow, firm.id)
        assert row is not None
        row.active = False
        session.commit()
    scheduler.sync()
    assert scheduler.next_run(firm.id) is None
    with firm.sessions() as session:
        row = session.get(FirmRow, firm.id)
        assert row is not None
        row.active = True
        session.execute(delete(Connection).where(Connection.firm_id == firm.id,
                                                 Connection.provider == "clio"))
        session.commit()
    scheduler.sync()
    assert scheduler.next_run(firm.id) is None  # disconnected from Clio


def test_a_run_under_way_here_makes_the_tick_skip(firm: Firm) -> None:
    from hardcost.bot.context import BotContext
    from hardcost.sync.config import Settings

    ctx = BotContext(sessions=firm.sessions, config=Settings(),
                     importer_for=lambda firm_id: firm.world.importer(firm.sessions, firm_id))
    scheduler = _scheduler(firm, leases=ctx.run_leases())
    with ctx.claim_run(firm.id) as mine:  # as /hardcost run holds it
        assert mine
        assert scheduler.run_firm(firm.id) is None
    assert scheduler.run_firm(firm.id) is not None
    assert _scheduled_runs(firm) == 1


def test_status_shows_the_schedulers_next_run(firm: Firm,
                                              started: list[ImportScheduler]) -> None:
    from hardcost.bot.context import BotContext
    from hardcost.bot.service import status_report
    from hardcost.sync.config import Settings

    ctx = BotContext(sessions=firm.sessions, config=Settings(),
                     importer_for=lambda firm_id: firm.world.importer(firm.sessions, firm_id))
    not_due(firm, hours=1)  # a firm due now would run (and move its next run) in between
    scheduler = _scheduler(firm, unit=60)
    started.append(scheduler)
    scheduler.start()
    ctx.scheduler = scheduler
    upcoming = scheduler.next_run(firm.id)
    assert upcoming is not None
    view = status_report(ctx, None, firm.id)  # type: ignore[arg-type]
    assert view.next_run == upcoming.strftime("%Y-%m-%d %H:%M UTC")

    firm.update_settings(paused=True)
    scheduler.sync()
    assert status_report(ctx, None, firm.id).next_run is None  # type: ignore[arg-type]


def test_shutdown_stops_the_ticks_at_once(firm: Firm) -> None:
    from hardcost.sync.importer import SHUTDOWN

    _due_at(firm, datetime.now(UTC) + timedelta(hours=1))
    scheduler = _scheduler(firm, unit=60)
    scheduler.start()
    began = time.monotonic()
    scheduler.shutdown()
    assert time.monotonic() - began < 1 and scheduler.wait(1)
    assert scheduler.next_run(firm.id) is None
    scheduler.sync()  # a late refresh adds nothing back
    assert scheduler.next_run(firm.id) is None

    fresh = _scheduler(firm)
    _due_at(firm, datetime.now(UTC) - timedelta(seconds=1))
    SHUTDOWN.set()  # SIGTERM: a claim pass that comes now starts no run
    try:
        fresh.sync()
    finally:
        SHUTDOWN.clear()
    assert fresh.wait(5)
    assert _scheduled_runs(firm) == 0


@pytest.mark.skipif(bool(POSTGRES_URL), reason="SQLite only")
def test_a_second_scheduler_on_one_sqlite_file_is_refused(
        firm: Firm, started: list[ImportScheduler]) -> None:
    first = _scheduler(firm, unit=60)
    started.append(first)
    first.start()
    second = _scheduler(firm, unit=60)
    with pytest.raises(SchedulerRefused, match="already runs the scheduled imports"):
        second.start()
    first.shutdown()
    started.append(second)
    second.start()  # the lock went with the first one


@pytest.mark.skipif(bool(POSTGRES_URL), reason="SQLite only")
def test_a_second_serve_on_one_sqlite_file_refuses_to_start(
        firm: Firm, database_url: str, started: list[ImportScheduler]) -> None:
    from hardcost.sandbox.server import serve_in_thread
    from hardcost.sandbox.slack import SlackSandbox

    first = _scheduler(firm, unit=60)  # stands in for the first `hardcost serve`
    started.append(first)
    first.start()
    slack = SlackSandbox()
    server = serve_in_thread(slack)
    slack.add_workspace("T0001", bot_token="xoxb-x")
    env = {**env_for(firm.world, database_url), "SLACK_BOT_TOKEN": "xoxb-x",
           "SLACK_SIGNING_SECRET": "s", "SLACK_API_URL": f"{server.url}/api/", "PORT": "9"}
    try:
        done = subprocess.run([sys.executable, "-m", "hardcost", "serve"], env=env,
                              capture_output=True, text=True, timeout=60,
                              cwd=os.path.dirname(os.path.dirname(__file__)))
    finally:
        server.stop()
    assert done.returncode == 1
    assert "already runs the scheduled imports" in done.stderr
    assert "use PostgreSQL" in done.stderr


@pytest.mark.postgres
def test_two_schedulers_on_one_postgres_never_run_a_firm_twice_at_once(
        firm: Firm, database_url: str, started: list[ImportScheduler]) -> None:
    firm.client("Jane Smith", ["Smith estate"])
    for n in range(3):
        firm.expense((f"{n + 1}.00", "Jane Smith"))
    firm.update_settings(schedule_minutes=1)
    other_engine = make_engine(database_url)
    other_sessions = make_session_factory(other_engine)
    lock = threading.Lock()
    running = 0
    peak = 0

    def slow(sessions: sessionmaker[Session]) -> Callable[[int], Importer]:
        def importer_for(firm_id: int) -> Importer:
            engine = firm.world.importer(sessions, firm_id)
            real = engine.run

            def run(**kwargs: Any) -> RunSummary:
                nonlocal running, peak
                with lock:
                    running += 1
                    peak = max(peak, running)
                try:
                    time.sleep(UNIT)  # long enough for the other's tick to come
                    return real(**kwargs)
                finally:
                    with lock:
                        running -= 1

            engine.run = run  # type: ignore[method-assign]
            return engine
        return importer_for

    # Both look for due firms four times per interval: each finds the firm due in turn.
    a = ImportScheduler(firm.sessions, slow(firm.sessions), unit_seconds=UNIT / 2,
                        refresh_every=UNIT / 8, clock=firm.world.clock.now)
    b = ImportScheduler(other_sessions, slow(other_sessions), unit_seconds=UNIT / 2,
                        refresh_every=UNIT / 8, clock=firm.world.clock.now)
    try:
        # The lease itself: held by one, refused to the other, on separate engines.
        with a.leases.hold(firm.id, "slack") as mine:
            assert mine is not None
            with b.leases.hold(firm.id, "slack") as theirs:
                assert theirs is None
            assert b.run_firm(firm.id) is None
        started.extend([a, b])
        a.start()
        b.start()
        wait_for(lambda: _scheduled_runs(firm) >= 3, timeout=15)
        a.shutdown()
        b.shutdown()
        assert a.wait(10) and b.wait(10)
    finally:
        other_engine.dispose()
    assert peak == 1
    assert len(firm.entries()) == 3
    with firm.sessions() as session:
        links = session.scalars(select(EntryLink).where(EntryLink.firm_id == firm.id)).all()
    assert len({link.clio_activity_id for link in links}) == len(links) == 3


def test_a_firm_whose_schedule_cannot_be_set_up_stops_no_other_firm(
        firm: Firm, started: list[ImportScheduler]) -> None:
    """Issue 10 #1: a schedule APScheduler cannot compute (a row from before the bounds, or
    any other surprise) once made every pass and every start-up fail for every firm."""
    from tests.firmkit import make_firm

    other = make_firm(firm.world, firm.sessions)
    firm.update_settings(schedule_minutes=20_000)  # 20,000 "years" below: past year 9999
    other.update_settings(schedule_minutes=1)
    told: list[tuple[int, str]] = []
    year = 365 * 24 * 3600.0
    scheduler = ImportScheduler(
        firm.sessions, lambda firm_id: firm.world.importer(firm.sessions, firm_id),
        unit_seconds=year, refresh_every=3600, clock=firm.world.clock.now,
        on_problem=lambda firm_id, text: told.append((firm_id, text)))
    started.append(scheduler)

    scheduler.start()  # does not raise
    scheduler.sync()  # a second pass tells nobody twice

    assert scheduler.interval(other.id) == year
    assert scheduler.interval(firm.id) is None
    health = scheduler.health()
    assert health.ok and health.skipped == (firm.id,)
    assert health.as_json()["skipped_firms"] == [firm.id]
    assert [firm_id for firm_id, _ in told] == [firm.id]
    assert "5 to 10080 minutes" in told[0][1] and "/hardcost set schedule" in told[0][1]

    firm.update_settings(schedule_minutes=2)
    _due_at(firm, datetime.now(UTC))  # as /hardcost set schedule brings the next run forward
    scheduler.sync()

    assert scheduler.interval(firm.id) == 2 * year
    assert scheduler.health().skipped == ()


def test_a_replica_busy_with_every_thread_claims_again_as_each_run_ends(
        firm: Firm, started: list[ImportScheduler]) -> None:
    """The claim pass fills the free threads; a run that ends claims the next due firm
    itself, so how many firms a replica runs is bounded by its threads, not by one pass's
    worth per ``refresh_every`` (issue 13's scale benchmark found that ceiling)."""
    from tests.firmkit import make_firm

    firms = [firm, *(make_firm(firm.world, firm.sessions) for _ in range(3))]
    for each in firms:
        each.update_settings(schedule_minutes=60)  # one run each in this test
    scheduler = _scheduler(firm, threads=1)  # and no periodic pass (refresh_every=3600)
    started.append(scheduler)
    scheduler.start()

    wait_for(lambda: all(_scheduled_runs(each) == 1 for each in firms), timeout=30)
    assert scheduler.claimed == len(firms)

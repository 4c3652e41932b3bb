"""``/healthz`` over HTTP: the database and the import scheduler (bot/web.py, sync/scheduler.py).

The app is the real WSGI app (Bolt behind it) served by waitress on loopback, with a real
``ImportScheduler`` on the test database; nothing of ours is replaced.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import event, func, select, text
from werkzeug.test import Client

from bench.health_bench import ThreadStatements, seed_firms
from hardcost.bot.web import WebServer, make_wsgi_app, serve_in_thread
from hardcost.sync.scheduler import IMPORT_THREADS, ImportScheduler, SchedulerRefused
from hardcost.sync.store import Run
from tests.conftest import POSTGRES_URL
from tests.firmkit import Firm


def _scheduler(firm: Firm, **kwargs: Any) -> ImportScheduler:
    options: dict[str, Any] = {"unit_seconds": 60, "refresh_every": 3600,
                               "clock": firm.world.clock.now, **kwargs}
    options.setdefault("figures_every", options["refresh_every"])  # the firms count's period
    return ImportScheduler(firm.sessions, lambda firm_id: firm.world.importer(firm.sessions,
                                                                            firm_id), **options)


@pytest.fixture
def schedulers() -> Iterator[list[ImportScheduler]]:
    started: list[ImportScheduler] = []
    yield started
    for scheduler in started:
        scheduler.shutdown()
        scheduler.wait(10)


@pytest.fixture
def serve(rig: Any) -> Iterator[Callable[[ImportScheduler | None], str]]:
    """Serves the rig's Bolt app with ``make_wsgi_app`` and the given scheduler; the URL."""
    servers: list[WebServer] = []

    def start(scheduler: ImportScheduler | None) -> str:
        server = serve_in_thread(make_wsgi_app(rig.app, rig.firm.sessions, scheduler=scheduler))
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.stop()


def _health(url: str) -> tuple[int, dict[str, Any]]:
    answer = requests.get(f"{url}/healthz", timeout=10)
    assert answer.headers["Content-Type"].startswith("application/json")
    return answer.status_code, answer.json()


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_without_a_scheduler_health_is_the_database(
        rig: Any, serve: Callable[[ImportScheduler | None], str]) -> None:
    status, body = _health(serve(None))
    assert (status, body) == (200, {"ok": True, "database": "ok"})


def test_a_running_scheduler_is_healthy_and_says_what_it_schedules(
        rig: Any, serve: Callable[[ImportScheduler | None], str],
        schedulers: list[ImportScheduler]) -> None:
    scheduler = _scheduler(rig.firm, refresh_every=0.2)
    schedulers.append(scheduler)
    scheduler.start()
    url = serve(scheduler)

    status, body = _health(url)
    assert status == 200 and body["ok"] is True and body["database"] == "ok"
    report = body["scheduler"]
    assert report["running"] is True and report["firms"] == 1
    assert report["refresh_every"] == 0.2
    assert report["last_refresh"] is not None and "reason" not in report
    first = report["last_refresh"]
    # The refresh job keeps reading the firms table: its time moves on.
    _wait_for(lambda: _health(url)[1]["scheduler"]["last_refresh"] != first)

    rig.firm.update_settings(paused=True)
    _wait_for(lambda: _health(url)[1]["scheduler"]["firms"] == 0)
    assert _health(url)[0] == 200  # nothing to schedule is not a fault


def test_a_stopped_scheduler_makes_health_fail(
        rig: Any, serve: Callable[[ImportScheduler | None], str]) -> None:
    scheduler = _scheduler(rig.firm)
    url = serve(scheduler)
    status, body = _health(url)
    assert status == 503 and body["ok"] is False
    assert body["reason"] == "the scheduler has not started"
    assert body["database"] == "ok"

    scheduler.start()
    assert _health(url)[0] == 200
    scheduler.shutdown()
    status, body = _health(url)
    assert status == 503 and body["ok"] is False
    assert body["reason"] == "the scheduler has stopped"
    assert body["scheduler"]["running"] is False


def test_a_refresh_that_keeps_failing_makes_health_fail_until_it_recovers(
        rig: Any, serve: Callable[[ImportScheduler | None], str],
        schedulers: list[ImportScheduler]) -> None:
    firm = rig.firm
    scheduler = _scheduler(firm, refresh_every=0.1, stale_after=0.6)
    schedulers.append(scheduler)
    scheduler.start()
    url = serve(scheduler)
    assert _health(url)[0] == 200

    # The firms' settings table disappears from under the scheduler: every refresh fails
    # while the database itself still answers.
    engine = firm.sessions.kw["bind"]
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE firm_settings RENAME TO firm_settings_away"))
    try:
        _wait_for(lambda: _health(url)[0] == 503)
        status, body = _health(url)
        assert body["ok"] is False and body["database"] == "ok"
        assert body["scheduler"]["running"] is True
        assert body["scheduler"]["seconds_since_refresh"] >= 0.6  # rounded to 0.1 s
        assert "has not read the firms table" in body["reason"]
        assert "every 0.1 s" in body["reason"]
        assert body["reason"].endswith("the last attempt failed: ProgrammingError") or \
            body["reason"].endswith("the last attempt failed: OperationalError")
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE firm_settings_away RENAME TO firm_settings"))
    _wait_for(lambda: _health(url)[0] == 200)
    assert _health(url)[1]["scheduler"]["firms"] == 1


@pytest.mark.skipif(bool(POSTGRES_URL), reason="SQLite only: PostgreSQL allows several")
def test_a_refused_scheduler_makes_health_fail_with_the_reason(
        rig: Any, serve: Callable[[ImportScheduler | None], str],
        schedulers: list[ImportScheduler]) -> None:
    first = _scheduler(rig.firm)
    schedulers.append(first)
    first.start()
    second = _scheduler(rig.firm)
    with pytest.raises(SchedulerRefused):
        second.start()

    status, body = _health(serve(second))
    assert status == 503 and body["ok"] is False
    assert body["reason"].startswith("the scheduler was refused: another `hardcost serve`")
    assert body["scheduler"]["running"] is False


def test_health_stays_ok_while_every_import_thread_is_busy(
        rig: Any, serve: Callable[[ImportScheduler | None], str],
        schedulers: list[ImportScheduler]) -> None:
    """Long imports (a first import paced by Clio takes minutes) must not starve the
    refresh: a replica that is busy importing is healthy, and still sees schedule changes."""
    from tests.firmkit import make_firm

    firm = rig.firm
    firms = [firm, *(make_firm(firm.world, firm.sessions) for _ in range(IMPORT_THREADS))]
    for each in firms:
        each.client("Jane Smith", ["Smith estate"])
        each.expense(("10.00", "Jane Smith"))
        each.update_settings(schedule_minutes=1)
    # Every firm's one Clio POST takes 2.5 s: all import threads are taken for that long.
    firm.world.clio.faults.add(path=r"/api/v4/activities\.json$", method="POST",
                               passthrough=True, delay=2.5, times=len(firms))
    scheduler = _scheduler(firm, unit_seconds=0.1, refresh_every=0.1, stale_after=1.0)
    schedulers.append(scheduler)
    scheduler.start()
    url = serve(scheduler)

    def under_way() -> int:
        with firm.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(Run).where(
                Run.finished_at.is_(None))) or 0)

    _wait_for(lambda: under_way() == IMPORT_THREADS, timeout=2)
    deadline = time.monotonic() + 1.5  # longer than stale_after, all threads still taken
    while time.monotonic() < deadline:
        status, body = _health(url)
        assert status == 200, body
        time.sleep(0.1)
    firms[-1].update_settings(paused=True)  # and the refresh still sees changes
    _wait_for(lambda: _health(url)[1]["scheduler"]["firms"] == len(firms) - 1, timeout=0.8)
    assert under_way() == IMPORT_THREADS  # the imports were all under way meanwhile


def test_the_schedulers_own_default_is_the_settings_default() -> None:
    """An ``ImportScheduler`` made without a thread count (benchmarks, tests, embedders) runs
    as many imports at once as ``hardcost serve`` does by default."""
    from hardcost.sync.config import Settings

    assert Settings.model_fields["scheduler_threads"].default == IMPORT_THREADS


def test_a_probe_reads_as_much_for_200_firms_as_for_10(
        rig: Any, schedulers: list[ImportScheduler]) -> None:
    """``/healthz`` is probed every few seconds on every replica: it sends the database check
    and nothing else, whatever the number of firms (it read every ready firm before, once its
    cache of one claim period had run out: 33,000 rows a probe at 10,000 firms)."""
    engine = rig.firm.sessions.kw["bind"]
    scheduler = _scheduler(rig.firm, refresh_every=0.05, figures_every=3600)
    schedulers.append(scheduler)
    scheduler.start()
    client = Client(make_wsgi_app(rig.app, rig.firm.sessions, scheduler=scheduler))
    counter = ThreadStatements(engine)  # the statements this thread (the probe's) sends

    def probes() -> list[list[tuple[str, int | None]]]:
        seen = []
        for _ in range(3):
            time.sleep(0.1)  # more than a claim period: no probe leans on an earlier one's
            mark = counter.mark()
            assert client.get("/healthz").status_code == 200
            seen.append(counter.since(mark))
        return seen

    try:
        seed_firms(engine, 1, 9)  # 10 firms with the rig's
        few = probes()
        seed_firms(engine, 10, 190)  # 200
        many = probes()
    finally:
        event.remove(engine, "after_cursor_execute", counter._seen)
    assert [len(p) for p in few] == [len(p) for p in many] == [1, 1, 1]
    assert few == many  # the same statements, and (PostgreSQL says) the same rows returned
    assert {statement for probe in many for statement, _ in probe} == {"SELECT 1"}

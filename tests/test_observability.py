"""Is every firm syncing? ``/metrics`` from start-up (every labelled series at 0, the build, the
process, no ``_created``) and the fleet's gauges (sync/metrics.py, sync/scheduler.py); logs that
say something once (hardcost/logs.py, sync/tokens.py)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event, update
from werkzeug.test import Client

from bench.health_bench import ThreadStatements, bolt_app
from hardcost import __version__
from hardcost.bot.web import make_wsgi_app
from hardcost.logs import QUIET_LOGGERS, configure
from hardcost.sync.metrics import OUTCOMES, TRIGGERS
from hardcost.sync.run_record import FirmNotReady
from hardcost.sync.scheduler import ImportScheduler
from hardcost.sync.store import Failure, RunLease, WaitingExpense
from hardcost.sync.tokens import mark_broken
from tests.firmkit import Firm

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

FRESH_SCRAPE = textwrap.dedent("""
    import sys, tempfile
    from slack_bolt import App
    from werkzeug.test import Client
    from hardcost.bot.web import make_wsgi_app
    from hardcost.sync.db import upgrade
    from hardcost.sync.engine import make_engine, make_session_factory

    db = make_engine(f"sqlite:///{tempfile.mkdtemp()}/fresh.sqlite")
    upgrade(db)
    app = make_wsgi_app(App(token="xoxb-fresh", signing_secret="fresh",
                            token_verification_enabled=False), make_session_factory(db))
    answer = Client(app).get("/metrics")
    assert answer.status_code == 200, answer.status_code
    sys.stdout.write(answer.get_data(as_text=True))
""")


def _samples(body: str) -> Samples:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body) for sample in family.samples}


def test_a_fresh_process_shows_every_series_at_zero_with_its_build_and_no_created() -> None:
    """``increase(hardcost_runs_total{outcome="crashed"}[1h]) > 0`` must work before the first
    crash: a series that appears with its first event has no 0 to increase from."""
    body = subprocess.run([sys.executable, "-c", FRESH_SCRAPE], capture_output=True,
                          text=True, timeout=120, check=True).stdout
    samples = _samples(body)

    expected: list[tuple[str, dict[str, str]]] = []
    for trigger in TRIGGERS:
        expected.append(("hardcost_run_duration_seconds_count", {"trigger": trigger}))
        expected += [("hardcost_runs_total", {"trigger": trigger, "outcome": outcome})
                     for outcome in OUTCOMES]
    expected += [("hardcost_entries_total", {"action": action})
                 for action in ("created", "updated", "moved", "deleted")]
    expected += [("hardcost_failures_total", {"kind": kind})
                 for kind in ("config", "transient", "data")]
    expected += [("hardcost_api_requests_total", {"service": s}) for s in ("quickbooks", "clio")]
    expected += [("hardcost_api_rate_limited_total", {"service": s})
                 for s in ("quickbooks", "clio", "slack")]
    expected += [(name, {}) for name in (
        "hardcost_digest_failures_total", "hardcost_scheduler_lateness_seconds_count",
        "hardcost_outbox_depth", "hardcost_webhook_queue_depth", "hardcost_firms_overdue",
        "hardcost_connections_broken", "hardcost_expenses_waiting",
        "hardcost_expenses_waiting_oldest_age_seconds", "hardcost_failures_open")]
    missing = [(name, labels) for name, labels in expected
               if (name, tuple(sorted(labels.items()))) not in samples]
    assert not missing, missing
    assert all(samples[(name, tuple(sorted(labels.items())))] == 0 for name, labels in expected)
    assert samples[("hardcost_build_info", (("version", __version__),))] == 1
    assert ("process_cpu_seconds_total", ()) in samples
    assert ("process_resident_memory_bytes", ()) in samples
    assert "_created" not in body


def _waiting(firm: Firm, created: datetime) -> WaitingExpense:
    return WaitingExpense(firm_id=firm.id, realm_id=firm.qbo.realm_id, purchase_id="77",
                          customer_id="5", reason="matter", entry={}, amount=Decimal("12.50"),
                          txn_date=date(2026, 3, 1), customer_name="Jane Smith",
                          created_at=created)


def test_the_fleet_gauges_show_what_needs_a_person_and_what_is_not_syncing(firm: Firm) -> None:
    """A broken connection, an expense waiting for two hours, an open failure and a firm whose
    run is an hour overdue show in the gauges once the figures job has read them; a scrape
    itself reads none of those tables."""
    scheduler = ImportScheduler(firm.sessions, lambda firm_id: firm.world.importer(
        firm.sessions, firm_id), refresh_every=3600, figures_every=3600)
    client = Client(make_wsgi_app(bolt_app(), firm.sessions, scheduler=scheduler))

    def scrape() -> Samples:
        answer = client.get("/metrics")
        assert answer.status_code == 200
        return _samples(answer.get_data(as_text=True))

    scheduler.refresh_figures()
    first = scrape()
    assert first[("hardcost_firms_scheduled", ())] == 1
    for name in ("hardcost_firms_overdue", "hardcost_connections_broken",
                 "hardcost_expenses_waiting", "hardcost_failures_open",
                 "hardcost_expenses_waiting_oldest_age_seconds"):
        assert first[(name, ())] == 0, name

    now = datetime.now(UTC)
    mark_broken(firm.sessions, firm.id, "quickbooks", "invalid_grant", now)
    with firm.sessions() as session:
        session.add(_waiting(firm, now - timedelta(hours=2)))
        session.add(Failure(firm_id=firm.id, realm_id=firm.qbo.realm_id, purchase_id="78",
                            kind="data", code="bad", message="a line Clio refused"))
        session.execute(update(RunLease).where(RunLease.firm_id == firm.id).values(
            next_run_at=now - timedelta(hours=1), claim_token=None))
        session.commit()

    engine = firm.sessions.kw["bind"]
    counter = ThreadStatements(engine)
    try:
        stale = scrape()
    finally:
        event.remove(engine, "after_cursor_execute", counter._seen)
    assert stale[("hardcost_connections_broken", ())] == 0  # read by the job, not the scrape
    read = " ".join(statement for statement, _ in counter.seen)
    assert all(table not in read for table in ("connections", "waiting_expenses", "failures",
                                               "run_leases")), read

    scheduler.refresh_figures()
    after = scrape()
    assert after[("hardcost_firms_overdue", ())] == 1
    assert after[("hardcost_connections_broken", ())] == 1
    assert after[("hardcost_expenses_waiting", ())] == 1
    assert 2 * 3600 <= after[("hardcost_expenses_waiting_oldest_age_seconds", ())] < 3 * 3600
    assert after[("hardcost_failures_open", ())] == 1
    assert after[("hardcost_firms_scheduled", ())] == 0  # a broken connection: not ready
    assert after[("hardcost_fleet_figures_age_seconds", ())] < 60


def test_without_a_scheduler_a_scrape_reads_the_fleet_at_most_every_30_seconds(
        firm: Firm) -> None:
    client = Client(make_wsgi_app(bolt_app(), firm.sessions))
    mark_broken(firm.sessions, firm.id, "clio", "invalid_grant", datetime.now(UTC))
    engine = firm.sessions.kw["bind"]
    counter = ThreadStatements(engine)
    try:
        first = _samples(client.get("/metrics").get_data(as_text=True))
        mark = counter.mark()
        second = _samples(client.get("/metrics").get_data(as_text=True))
        again = counter.since(mark)
    finally:
        event.remove(engine, "after_cursor_execute", counter._seen)
    assert first[("hardcost_connections_broken", ())] == 1
    assert second[("hardcost_connections_broken", ())] == 1
    assert not any("connections" in statement for statement, _ in again)


# -- logs --------------------------------------------------------------------------------------

@pytest.fixture
def root_logging() -> Iterator[None]:
    """``configure`` sets up the process's root logger: put back what pytest had."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name, was in quiet.items():
        logging.getLogger(name).setLevel(was)


def _apscheduler_lines(level: str) -> str:
    out = io.StringIO()
    configure(level, "text", default_level="INFO", stream=out)
    ran = threading.Event()
    runs: list[float] = []

    def job() -> None:
        runs.append(time.monotonic())
        if len(runs) >= 3:
            ran.set()

    scheduler = BackgroundScheduler(timezone=UTC)
    scheduler.add_job(job, "interval", seconds=0.05, id="pass")
    scheduler.start()
    try:
        assert ran.wait(10)
    finally:
        scheduler.shutdown(wait=True)
    logging.getLogger("apscheduler.scheduler").warning("a warning still shows")
    return out.getvalue()


def test_apschedulers_line_per_job_run_is_gone_unless_debug(root_logging: None) -> None:
    """A claim pass every 10 s was two INFO lines every 10 s per replica ("Running job …",
    "… executed successfully"): 17,000 lines a day that say nothing."""
    info = _apscheduler_lines("INFO")
    assert "executed successfully" not in info and "Running job" not in info, info
    assert "a warning still shows" in info
    debug = _apscheduler_lines("DEBUG")
    assert "executed successfully" in debug


def test_json_log_lines_carry_milliseconds(root_logging: None) -> None:
    out = io.StringIO()
    configure("INFO", "json", default_level="INFO", stream=out)
    logging.getLogger("hardcost.test").info("one line")
    record = json.loads(out.getvalue().splitlines()[-1])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4}", record["time"]), record
    assert record["message"] == "one line" and record["level"] == "INFO"


def test_a_broken_connection_is_logged_once_when_it_breaks(
        firm: Firm, caplog: pytest.LogCaptureFixture) -> None:
    """The token refresh that meets ``invalid_grant`` records the break, and the run that
    stopped on it records it again (a no-op): one line, not one per caller, and none for the
    runs after."""
    from hardcost.sandbox.faults import Fault

    firm.world.qbo.refresh_grace_seconds = 0
    firm.world.qbo.expire_access_tokens()
    firm.world.qbo.faults.add(Fault(path=r"/tokens/bearer$", method="POST", status=400,
                                    body='{"error": "invalid_grant"}', times=1))
    caplog.set_level(logging.WARNING, logger="hardcost.sync.tokens")

    first = firm.run()
    with contextlib.suppress(FirmNotReady):  # the next run refuses to start: reconnect first
        firm.run()
    mark_broken(firm.sessions, firm.id, "quickbooks", "invalid_grant", datetime.now(UTC))

    assert first.error is not None and "reconnect QuickBooks" in first.error
    broken = [r.getMessage() for r in caplog.records if "is broken" in r.getMessage()]
    assert broken == [f"quickbooks connection of firm {firm.id} is broken: invalid_grant"]

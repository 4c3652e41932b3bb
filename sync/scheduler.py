"""Scheduled imports: each process claims the firms whose run is due from the database.

Every firm has a ``run_leases`` row (``sync.leases``) whose ``next_run_at`` says when its next
scheduled import is due. Every ``refresh_every`` seconds (``HARDCOST_SCHEDULER_REFRESH_SECONDS``)
each ``hardcost serve`` process claims as many due firms as it has free import threads
(``claim_due``: the earliest due first, ``FOR UPDATE SKIP LOCKED`` on PostgreSQL), runs them
on its thread pool and, when a run ends, gives the lease back with the next due time: one
interval (``schedule_minutes`` × ``unit_seconds``) after the last one was due. A firm that is
due but not ready (paused, not connected, no import account or start date) is put off by its
interval; ``/hardcost set schedule``, ``resume`` and connects bring its next run forward
(``sync.leases.run_soon``). No job per firm, and nothing read for firms that are not due.

APScheduler keeps the periodic work: the claim pass (a thread of its own, so imports that take
every import thread for minutes never stop it), the daily digest and the housekeeping that
prunes old rows (``sync.housekeeping``).

One run of a firm at a time, in every process: the run holds the firm's lease, as Slack's
``/hardcost run``, the webhook worker and ``hardcost run`` do. On SQLite there are no
replicas: ``start`` takes an exclusive ``flock`` on ``<database>.scheduler.lock`` beside the
database file and raises ``SchedulerRefused`` when another process (another ``hardcost serve``)
holds it.

``health()`` says whether the scheduler is doing its job, for ``/healthz``: started, not
stopped, and its claim pass has read the table recently (``stale_after`` seconds). It reads
nothing from the database: ``/healthz`` is probed every few seconds on every replica, so what it
reports is kept by the scheduler itself (the claim passes' times, and the figures job's count of
the scheduled firms every ``figures_every`` seconds): a probe costs the same for 10 firms and
for 10,000.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor as Pool
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync.importer import SHUTDOWN, FirmNotReady, Importer
from hardcost.sync.leases import (
    Lease,
    Leases,
    RunRow,
    RunStop,
    next_due,
    schedule_interval,
    settle_abandoned_runs,
)
from hardcost.sync.metrics import FIGURES_EVERY, SCHEDULER_LATENESS, Fleet, read_fleet
from hardcost.sync.store import PROVIDER_NAMES, Connection, Firm, FirmSettings, RunLease, utcnow
from hardcost.sync.summary import RunSummary

log = logging.getLogger(__name__)

REFRESH_EVERY = 10.0  # seconds between two claim passes
REFRESH_JOB = "refresh"
DAILY_JOB = "daily"
DAILY_EVERY = 60.0  # seconds between two looks for daily work due (the digest)
HOUSEKEEPING_JOB = "housekeeping"
HOUSEKEEPING_EVERY = 3600.0  # seconds between two prunings of old rows
FIGURES_JOB = "figures"  # the scheduled firms (/healthz's "firms") and the fleet's gauges
IMPORT_THREADS = 8  # scheduled imports at once in one process (HARDCOST_IMPORT_THREADS's default)
STALE_PERIODS = 3  # claim passes missed in a row before health says the scheduler is stuck
STALE_SLACK = 5.0  # seconds on top: a busy machine or a slow database delays a pass


class SchedulerRefused(RuntimeError):
    """Another process schedules this (SQLite) database's imports already."""


@dataclass(frozen=True)
class SchedulerHealth:
    """What ``/healthz`` reports about the scheduler; ``reason`` says why it is not ``ok``."""

    ok: bool
    running: bool
    firms: int
    last_refresh: datetime | None
    seconds_since_refresh: float | None
    refresh_every: float
    last_tick: datetime | None
    reason: str | None = None
    skipped: tuple[int, ...] = ()  # firms whose schedule could not be set up (see the log)

    def as_json(self) -> dict[str, Any]:
        def iso(when: datetime | None) -> str | None:
            return when.isoformat(timespec="seconds") if when is not None else None

        since = self.seconds_since_refresh
        body: dict[str, Any] = {
            "running": self.running, "firms": self.firms,
            "last_refresh": iso(self.last_refresh),
            "seconds_since_refresh": round(since, 1) if since is not None else None,
            "refresh_every": self.refresh_every, "last_tick": iso(self.last_tick)}
        if self.skipped:
            body["skipped_firms"] = list(self.skipped)
        if self.reason:
            body["reason"] = self.reason
        return body


class ImportScheduler:
    """Claims and runs the scheduled imports of due firms.

    ``unit_seconds`` is the length of one schedule minute (60; tests use less).
    ``after_run(firm_id, summary)`` posts the summary (serve: the notifier, as for
    Slack-triggered runs). ``leases``: the process's leases (``hardcost serve`` shares one
    with Slack and the webhook worker); one of its own otherwise. ``stale_after``: seconds
    without a successful claim pass after which ``health`` reports the scheduler stuck
    (default: three periods and ``STALE_SLACK``). ``on_problem(firm_id, text)`` is told, once
    per problem, when a firm's schedule cannot be computed (that firm is looked at again a day
    later; every other firm keeps its schedule). ``daily(now)``: work due once a day per firm
    (the digest). ``housekeeping()``: pruning of old rows, every ``housekeeping_every``.
    ``figures_every``: seconds between two counts of the scheduled firms (``health``'s
    ``firms``; one read of every ready firm, in a job of its own, never in a probe) and two
    readings of the fleet's figures for ``/metrics`` (``fleet``, ``sync.metrics.read_fleet``).
    """

    def __init__(self, sessions: sessionmaker[Session], importer_for: Callable[[int], Importer],
                 *, after_run: Callable[[int, RunSummary], object] | None = None,
                 leases: Leases | None = None, unit_seconds: float = 60.0,
                 refresh_every: float = REFRESH_EVERY,
                 clock: Callable[[], datetime] = utcnow,
                 stale_after: float | None = None,
                 on_problem: Callable[[int, str], object] | None = None,
                 daily: Callable[[datetime], object] | None = None,
                 daily_every: float = DAILY_EVERY,
                 housekeeping: Callable[[], object] | None = None,
                 housekeeping_every: float = HOUSEKEEPING_EVERY,
                 figures_every: float = FIGURES_EVERY,
                 threads: int = IMPORT_THREADS) -> None:
        bind = sessions.kw.get("bind")
        if not isinstance(bind, Engine):
            raise RuntimeError("the scheduler needs the database engine of its sessions")
        self.sessions = sessions
        self.db = bind
        self.leases = leases or Leases(bind)
        self._own_leases = leases is None
        self.importer_for = importer_for
        self.after_run = after_run
        self.on_problem = on_problem
        self.daily = daily
        self.daily_every = daily_every
        self.housekeeping = housekeeping
        self.housekeeping_every = housekeeping_every
        self.figures_every = figures_every
        self.threads = max(int(threads), 1)
        self._skipped: dict[int, str] = {}  # firm id → why its schedule cannot be computed
        self.unit_seconds = unit_seconds
        self.refresh_every = refresh_every
        self.clock = clock
        self._scheduler = BackgroundScheduler(timezone=UTC, executors={
            "default": ThreadPoolExecutor(1), REFRESH_JOB: ThreadPoolExecutor(1),
            DAILY_JOB: ThreadPoolExecutor(1), HOUSEKEEPING_JOB: ThreadPoolExecutor(1),
            FIGURES_JOB: ThreadPoolExecutor(1)})
        self._pool = Pool(max_workers=self.threads, thread_name_prefix="hardcost-schedule")
        self._state_lock = threading.Lock()
        self._active = 0  # scheduled runs claimed and not yet over
        self._idle = threading.Condition()
        self._lock_file: IO[str] | None = None
        self._stopped = False
        self.stale_after = (stale_after if stale_after is not None
                            else STALE_PERIODS * refresh_every + STALE_SLACK)
        self._started = False
        self._refused: str | None = None
        self._refreshed: tuple[float, datetime] | None = None  # monotonic, wall clock
        self._refresh_error: str | None = None
        self._last_tick: datetime | None = None
        self.claimed = 0  # scheduled runs this process has claimed since it started
        self._saturated = False  # the last claim pass filled every free thread
        self._scheduled: int | None = None  # the figures job's count of scheduled firms
        self._fleet: Fleet | None = None  # and its reading of the fleet's figures

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Take the SQLite lock (``SchedulerRefused`` when held), mark the runs of a process
        that died ``abandoned``, claim once, start."""
        try:
            self._lock_sqlite()
        except SchedulerRefused as exc:
            self._refused = str(exc)
            raise
        try:
            settle_abandoned_runs(self.db)  # a dead predecessor's runs, before any claim
            self.sync()
            self.refresh_figures()
            self._scheduler.add_job(self.refresh_figures, "interval",
                                    seconds=self.figures_every, id=FIGURES_JOB,
                                    executor=FIGURES_JOB, max_instances=1, coalesce=True,
                                    misfire_grace_time=max(1, int(self.figures_every)))
            self._scheduler.add_job(self._refresh, "interval", seconds=self.refresh_every,
                                    id=REFRESH_JOB, executor=REFRESH_JOB,
                                    max_instances=1, coalesce=True,
                                    misfire_grace_time=max(1, int(self.refresh_every)))
            if self.daily is not None:
                self._scheduler.add_job(self.run_daily, "interval", seconds=self.daily_every,
                                        id=DAILY_JOB, executor=DAILY_JOB, max_instances=1,
                                        coalesce=True,
                                        misfire_grace_time=max(1, int(self.daily_every)))
            if self.housekeeping is not None:
                self._scheduler.add_job(
                    self.run_housekeeping, "interval", seconds=self.housekeeping_every,
                    id=HOUSEKEEPING_JOB, executor=HOUSEKEEPING_JOB, max_instances=1,
                    coalesce=True, misfire_grace_time=max(1, int(self.housekeeping_every)),
                    next_run_time=datetime.now(UTC) + timedelta(seconds=5))
            self._scheduler.start()
        except BaseException:
            self._unlock_sqlite()
            raise
        self._started = True
        log.info("scheduler: started (%d import threads, a claim pass every %g s)",
                 self.threads, self.refresh_every)

    def shutdown(self) -> None:
        """No new claims from now on (runs under way stop between entries once
        ``sync.importer.SHUTDOWN`` is set); does not wait for them: see ``wait``."""
        with self._state_lock:
            self._stopped = True
            if self._scheduler.running:
                self._scheduler.shutdown(wait=False)
        self._pool.shutdown(wait=False)
        self._unlock_sqlite()

    def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for scheduled runs under way; True when none is left."""
        deadline = time.monotonic() + seconds
        with self._idle:
            while self._active:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        if self._own_leases:
            self.leases.close()
        return True

    def next_run(self, firm_id: int) -> datetime | None:
        """When the firm's next scheduled run is due (UTC); None when it has none (not
        ready, paused, or this scheduler has stopped)."""
        if self._stopped or self.interval(firm_id) is None:
            return None
        with self.sessions() as session:
            return session.scalar(select(RunLease.next_run_at).where(
                RunLease.firm_id == firm_id))

    def health(self) -> SchedulerHealth:
        """Started, not stopped, and a claim pass made within ``stale_after`` seconds. Reads
        nothing from the database (``firms`` is the figures job's latest count)."""
        with self._state_lock:
            skipped = set(self._skipped)
            refreshed = self._refreshed
            running = self._started and not self._stopped and self._scheduler.running
        since = time.monotonic() - refreshed[0] if refreshed is not None else None
        reason = None
        if self._refused is not None:
            reason = f"the scheduler was refused: {self._refused}"
        elif not self._started:
            reason = "the scheduler has not started"
        elif not running:
            reason = "the scheduler has stopped"
        elif since is None or since > self.stale_after:
            reason = (f"the scheduler has not read the firms table for {since or 0:.0f} s (it "
                      f"should every {self.refresh_every:g} s)")
            if self._refresh_error:
                reason += f"; the last attempt failed: {self._refresh_error}"
        firms = (self._scheduled or 0) if running else 0
        return SchedulerHealth(
            ok=reason is None, running=running, firms=firms, skipped=tuple(sorted(skipped)),
            last_refresh=refreshed[1] if refreshed is not None else None,
            seconds_since_refresh=since, refresh_every=self.refresh_every,
            last_tick=self._last_tick, reason=reason)

    def interval(self, firm_id: int) -> float | None:
        """The firm's interval in seconds while it is scheduled (ready to import, its
        schedule computable); None otherwise."""
        return self._ready(firm_id)

    # -- readiness --------------------------------------------------------------------------

    def _ready_query(self) -> Any:
        return ready_query()

    def _ready(self, firm_id: int) -> float | None:
        with self.sessions() as session:
            row = session.execute(self._ready_query().where(Firm.id == firm_id).add_columns(
                FirmSettings.import_account_ids)).first()
        if row is None or not row[2]:
            return None
        try:
            interval = schedule_interval(row[1], self.unit_seconds)
            (utcnow() + interval).isoformat()
        except (OverflowError, ValueError):
            return None  # cannot be scheduled: see ``_problem``
        return interval.total_seconds()

    def scheduled_firms(self) -> int:
        """How many firms have scheduled imports (one read of every ready firm: the figures
        job's, never ``/healthz``'s)."""
        with self.sessions() as session:
            rows = session.execute(self._ready_query().add_columns(
                FirmSettings.import_account_ids)).all()
        return sum(1 for row in rows if row[2] and row[0] not in self._skipped)

    # -- the claim pass -------------------------------------------------------------------

    def sync(self) -> None:
        """One claim pass: lease the due firms this process has threads for, run them."""
        with self._state_lock:
            if self._stopped or SHUTDOWN.is_set():
                return
            free = self.threads - self._active
        # Each run's row is made in the claim's transaction (``RunRow``): no commit of its own.
        claimed = self.leases.claim_due(free, self.unit_seconds, run_started=self.clock)
        # Every free thread got a firm: more may be due. Each run that ends claims again
        # (``_run_claimed``), so a replica's throughput is its threads' and not one pass's
        # worth of firms per ``refresh_every``.
        self._saturated = free > 0 and len(claimed.leases) >= free
        now = utcnow()
        with self._state_lock:
            self._refreshed = (time.monotonic(), datetime.now(UTC))
            self._refresh_error = None
        for firm_id, minutes in claimed.problems:
            self._problem(firm_id, minutes)
        for lease in claimed.leases:
            if self._skipped.pop(lease.firm_id, None) is not None:
                log.info("scheduler: firm %s has a schedule again", lease.firm_id)
            self._last_tick = now
            if lease.due is not None:  # late by busy threads, a slow database, a paused process
                SCHEDULER_LATENESS.observe(max((now - lease.due).total_seconds(), 0.0))
            if not self._submit(lease):
                self.leases.release(lease)

    def _submit(self, lease: Lease) -> bool:
        with self._state_lock:
            if self._stopped:
                return False
            with self._idle:
                self._active += 1
            self.claimed += 1
        try:
            self._pool.submit(self._run_claimed, lease)
        except RuntimeError:  # the pool was shut down meanwhile
            self._done()
            return False
        return True

    def _done(self) -> None:
        with self._idle:
            self._active -= 1
            self._idle.notify_all()

    def _run_claimed(self, lease: Lease) -> None:
        summary = None
        try:
            summary = self._run(lease)
        except Exception:  # noqa: BLE001 - a scheduled run must not kill the scheduler
            log.exception("scheduler: import for firm %s failed", lease.firm_id)
        finally:
            try:
                self.leases.release(lease, next_run_at=self._next(lease))
            finally:
                self._done()
        if summary is not None and self.after_run is not None:
            try:
                self.after_run(lease.firm_id, summary)
            except Exception:  # noqa: BLE001 - posting is retried by the outbox
                log.exception("scheduler: after the import for firm %s", lease.firm_id)
        if self._saturated:  # firms may be waiting for this thread: look now, not next pass
            self._refresh()

    def _next(self, lease: Lease) -> datetime:
        return next_due(lease.due, lease.interval, utcnow())

    def _run(self, lease: Lease, *, scheduled: bool = True) -> RunSummary | None:
        """The firm's run under ``lease``, given back in the transaction that finishes the
        run's row (with the next due time when ``scheduled``); ``release`` afterwards only
        forgets it then, or gives it back when the run never got so far."""
        if SHUTDOWN.is_set() or self._stopped:
            return None
        importer = self.importer_for(lease.firm_id)
        importer.stopping = RunStop(lease, SHUTDOWN)
        importer.finish_with = lambda session: self.leases.give_back_in(
            session, lease, next_run_at=self._next(lease) if scheduled else None)
        try:
            return importer.run(trigger="schedule", run_id=lease.run_id)
        except FirmNotReady as exc:
            log.info("scheduler: firm %s not ready: %s", lease.firm_id, exc)
            return None
        finally:
            lease.given_back = importer.finished_with
            lease.run_began = importer.began  # else ``release`` deletes the claim's run row

    def run_firm(self, firm_id: int) -> RunSummary | None:
        """One scheduled run of the firm now, unless its import is under way (here or in
        another process); the summary, or None when skipped or not ready."""
        if self._ready(firm_id) is None:
            log.debug("scheduler: firm %s is not ready (paused?); skipped", firm_id)
            return None
        lease = self.leases.acquire(firm_id, "schedule", run=RunRow("schedule", self.clock()))
        if lease is None:
            log.debug("scheduler: firm %s is running already; skipped", firm_id)
            return None
        with self._idle:
            self._active += 1
        try:
            summary = self._run(lease, scheduled=False)
        finally:
            self.leases.release(lease)
            self._done()
        if summary is not None and self.after_run is not None:
            self.after_run(firm_id, summary)
        return summary

    def _problem(self, firm_id: int, minutes: int) -> None:
        problem = (f"Scheduled imports are off: a schedule of {minutes:,} minutes cannot be "
                   "set up. Choose one from 5 to 10080 minutes with /hardcost set schedule.")
        if self._skipped.get(firm_id) == problem:
            return
        self._skipped[firm_id] = problem
        log.error("scheduler: firm %s skipped: %s", firm_id, problem)
        if self.on_problem is not None:
            try:
                self.on_problem(firm_id, problem)
            except Exception:  # noqa: BLE001 - telling the firm must not stop the others
                log.exception("scheduler: could not tell firm %s", firm_id)

    # -- periodic work ------------------------------------------------------------------

    def run_daily(self) -> None:
        """The daily job's tick: hand the time to ``daily``; a failure waits for the next."""
        if self.daily is None or SHUTDOWN.is_set() or self._stopped:
            return
        try:
            self.daily(self.clock())
        except Exception:  # noqa: BLE001 - the next tick tries again
            log.exception("scheduler: daily work failed")

    def run_housekeeping(self) -> None:
        if self.housekeeping is None or SHUTDOWN.is_set() or self._stopped:
            return
        try:
            self.housekeeping()
        except Exception:  # noqa: BLE001 - the next pass tries again
            log.exception("scheduler: housekeeping failed")

    def refresh_figures(self) -> None:
        """The figures job: count the scheduled firms for ``health`` and read the fleet's
        figures for ``/metrics``. A failure keeps the last ones (the claim pass fails too, and
        ``health`` says so; ``hardcost_fleet_figures_age_seconds`` grows)."""
        if self._stopped or SHUTDOWN.is_set():
            return
        try:
            scheduled = self.scheduled_firms()
            with self.sessions() as session:
                fleet = read_fleet(session, utcnow())
        except Exception as exc:  # noqa: BLE001 - the next pass tries again
            log.warning("scheduler: reading the figures failed (%s)", type(exc).__name__)
            return
        self._scheduled = scheduled
        self._fleet = replace(fleet, firms_scheduled=scheduled)

    def fleet(self) -> Fleet | None:
        """The figures job's latest reading (None before the first)."""
        return self._fleet

    def _refresh(self) -> None:
        try:
            self.sync()
        except Exception as exc:  # noqa: BLE001 - the next pass tries again
            self._refresh_error = type(exc).__name__  # /healthz is public: no details
            log.exception("scheduler: claiming due firms failed")

    # -- SQLite: one scheduler per database file --------------------------------------------

    def lock_path(self) -> Path | None:
        if self.db.dialect.name != "sqlite":
            return None
        database = self.db.url.database
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        return Path(database).resolve().with_name(Path(database).name + ".scheduler.lock")

    def _lock_sqlite(self) -> None:
        path = self.lock_path()
        if path is None:
            return
        handle = open(path, "a+")  # noqa: SIM115 - held for the scheduler's life
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise SchedulerRefused(
                f"another `hardcost serve` ({holder}) already runs the scheduled imports of "
                f"this SQLite database (it holds {path}). SQLite allows one `hardcost serve`; "
                "stop the other one, or use PostgreSQL (DATABASE_URL) to run several."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(_holder())
        handle.flush()
        self._lock_file = handle

    def _unlock_sqlite(self) -> None:
        handle, self._lock_file = self._lock_file, None
        if handle is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            handle.close()


def ready_query() -> Any:
    """(firm id, schedule minutes) of the firms ready to be scheduled, but for their import
    accounts (a JSON list: add ``FirmSettings.import_account_ids`` and check it is not empty):
    active, not paused, a QuickBooks company, a start date, both services connected and not
    refused."""
    connected = (select(func.count()).select_from(Connection).where(
        Connection.firm_id == Firm.id, Connection.provider.in_(list(PROVIDER_NAMES)),
        Connection.broken_at.is_(None)).scalar_subquery())
    return (select(Firm.id, FirmSettings.schedule_minutes)
            .join(FirmSettings, FirmSettings.firm_id == Firm.id)
            .where(Firm.active.is_(True), FirmSettings.paused.is_(False),
                   Firm.qbo_realm_id.is_not(None), Firm.qbo_realm_id != "",
                   FirmSettings.start_date.is_not(None),
                   connected == len(PROVIDER_NAMES)))


def _holder() -> str:
    import os
    import socket

    return f"pid {os.getpid()} on {socket.gethostname()}"


__all__ = ["ImportScheduler", "SchedulerHealth", "SchedulerRefused"]

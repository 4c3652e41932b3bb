"""Scheduled imports: one APScheduler interval job per firm that is ready to import.

A firm gets a job when it is active, not paused, has QuickBooks and Clio connections that are
not broken, an import account and a start date. Its interval is ``schedule_minutes`` (at least
one). A refresh job (``sync``, every ``refresh_every`` seconds) re-reads the firms table and
adds, removes and reschedules jobs, so ``/hardcost set schedule``, ``pause``/``resume``,
connects and disconnects take effect without a restart.

One run of a firm at a time:

* within the process, through ``guard`` (``BotContext.claim_run`` in ``hardcost serve``, the
  same per-firm claim as Slack's ``/hardcost run``; a private one otherwise);
* across processes on PostgreSQL, with ``pg_try_advisory_lock`` taken on a connection of its
  own held for the whole run (unlocked in ``finally``; PostgreSQL drops it if the process
  dies). A tick that does not get the lock is skipped. A tick that gets it but finds that a
  scheduled run started less than half an interval ago (another replica's) is skipped too, so
  replicas do not double the firm's runs;
* on SQLite there are no replicas: ``start`` takes an exclusive ``flock`` on
  ``<database>.scheduler.lock`` beside the database file and raises ``SchedulerRefused`` when
  another process (another ``hardcost serve``) holds it.

``health()`` says whether the scheduler is doing its job, for ``/healthz``: started, not
stopped, and its refresh has read the firms table recently (``stale_after`` seconds).
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from apscheduler.events import EVENT_JOB_SUBMITTED, JobSubmissionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync.importer import SHUTDOWN, FirmNotReady, Importer
from hardcost.sync.locks import firm_run_lock
from hardcost.sync.metrics import SCHEDULER_LATENESS
from hardcost.sync.store import PROVIDER_NAMES, Connection, Firm, FirmSettings, Run, utcnow
from hardcost.sync.summary import RunSummary

log = logging.getLogger(__name__)

REFRESH_EVERY = 30.0  # seconds between two reads of the firms table
REFRESH_JOB = "refresh"
DAILY_JOB = "daily"
DAILY_EVERY = 60.0  # seconds between two looks for daily work due (the digest)
IMPORT_THREADS = 10  # scheduled imports at once in one process (APScheduler's default pool)
STALE_PERIODS = 3  # refreshes missed in a row before health says the scheduler is stuck
STALE_SLACK = 5.0  # seconds on top: a busy thread pool or a slow database delays a refresh

RunGuard = Callable[[int], AbstractContextManager[bool]]


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


def job_id(firm_id: int) -> str:
    return f"firm:{firm_id}"


class ImportScheduler:
    """Runs each ready firm's import every ``schedule_minutes``.

    ``unit_seconds`` is the length of one schedule minute (60; tests use less), so the shortest
    interval is one unit. ``after_run(firm_id, summary)`` posts the summary (serve: the
    notifier, as for Slack-triggered runs). ``stale_after``: seconds without a successful
    refresh after which ``health`` reports the scheduler stuck (default: three periods and
    ``STALE_SLACK``). ``on_problem(firm_id, text)`` is told, once per problem, when a firm's
    schedule cannot be set up (that firm is skipped; every other firm keeps its schedule).
    """

    def __init__(self, sessions: sessionmaker[Session], importer_for: Callable[[int], Importer],
                 *, after_run: Callable[[int, RunSummary], object] | None = None,
                 guard: RunGuard | None = None, unit_seconds: float = 60.0,
                 refresh_every: float = REFRESH_EVERY,
                 clock: Callable[[], datetime] = utcnow,
                 stale_after: float | None = None,
                 on_problem: Callable[[int, str], object] | None = None,
                 daily: Callable[[datetime], object] | None = None,
                 daily_every: float = DAILY_EVERY) -> None:
        bind = sessions.kw.get("bind")
        if not isinstance(bind, Engine):
            raise RuntimeError("the scheduler needs the database engine of its sessions")
        self.sessions = sessions
        self.db = bind
        self.importer_for = importer_for
        self.after_run = after_run
        self.on_problem = on_problem
        self.daily = daily
        """Work due once a day per firm at a local hour (``bot.digest.send_due_digests``),
        given the time; it records what it sent, so calling it often is harmless."""
        self.daily_every = daily_every
        self._skipped: dict[int, str] = {}  # firm id → why its job could not be set up
        self.guard: RunGuard = guard or self._own_guard
        self.unit_seconds = unit_seconds
        self.refresh_every = refresh_every
        self.clock = clock
        # The refresh has a thread of its own: imports that take every import thread for
        # minutes (a first import paced by Clio) must not stop schedule changes or health.
        self._scheduler = BackgroundScheduler(timezone=UTC, executors={
            "default": ThreadPoolExecutor(IMPORT_THREADS),
            REFRESH_JOB: ThreadPoolExecutor(1), DAILY_JOB: ThreadPoolExecutor(1)})
        self._intervals: dict[int, float] = {}
        self._jobs_lock = threading.Lock()
        self._running: set[int] = set()
        self._running_lock = threading.Lock()
        self._active = 0
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
        self._due_at: dict[str, datetime] = {}  # job id → the time its pending tick was due
        self._scheduler.add_listener(self._submitted, EVENT_JOB_SUBMITTED)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Take the SQLite lock (``SchedulerRefused`` when held), create the jobs, start."""
        try:
            self._lock_sqlite()
        except SchedulerRefused as exc:
            self._refused = str(exc)
            raise
        try:
            self.sync()
            self._scheduler.add_job(self._refresh, "interval", seconds=self.refresh_every,
                                    id=REFRESH_JOB, executor=REFRESH_JOB,
                                    max_instances=1, coalesce=True,
                                    misfire_grace_time=max(1, int(self.refresh_every)))
            if self.daily is not None:
                self._scheduler.add_job(self.run_daily, "interval", seconds=self.daily_every,
                                        id=DAILY_JOB, executor=DAILY_JOB, max_instances=1,
                                        coalesce=True,
                                        misfire_grace_time=max(1, int(self.daily_every)))
            self._scheduler.start()
        except BaseException:
            self._unlock_sqlite()
            raise
        self._started = True
        log.info("scheduler: started with %d firm(s)", len(self._intervals))

    def shutdown(self) -> None:
        """No new ticks from now on (runs under way stop between entries once
        ``sync.importer.SHUTDOWN`` is set); does not wait for them: see ``wait``."""
        with self._jobs_lock:
            self._stopped = True
            if self._scheduler.running:
                self._scheduler.shutdown(wait=False)
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
        return True

    def next_run(self, firm_id: int) -> datetime | None:
        """When this process next runs the firm's import (UTC); None when it has no job."""
        if self._stopped:
            return None
        job = self._scheduler.get_job(job_id(firm_id))
        when = getattr(job, "next_run_time", None) if job is not None else None
        return when.astimezone(UTC) if isinstance(when, datetime) else None

    def health(self) -> SchedulerHealth:
        """Started, not stopped, and the firms table read within ``stale_after`` seconds."""
        with self._jobs_lock:
            firms = len(self._intervals)
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
        return SchedulerHealth(
            ok=reason is None, running=running, firms=firms, skipped=tuple(sorted(skipped)),
            last_refresh=refreshed[1] if refreshed is not None else None,
            seconds_since_refresh=since, refresh_every=self.refresh_every,
            last_tick=self._last_tick, reason=reason)

    def interval(self, firm_id: int) -> float | None:
        """The firm's job interval in seconds; None when it has no job."""
        with self._jobs_lock:
            return self._intervals.get(firm_id)

    # -- refresh ------------------------------------------------------------------------

    def ready_firms(self) -> dict[int, float]:
        """firm id → interval in seconds, for every firm that should have a job."""
        with self.sessions() as session:
            rows = session.execute(
                select(Firm.id, Firm.qbo_realm_id, FirmSettings.schedule_minutes,
                       FirmSettings.import_account_ids, FirmSettings.start_date)
                .join(FirmSettings, FirmSettings.firm_id == Firm.id)
                .where(Firm.active.is_(True), FirmSettings.paused.is_(False))).all()
            connected: dict[int, set[str]] = {}
            for firm_id, provider in session.execute(
                    select(Connection.firm_id, Connection.provider)
                    .where(Connection.broken_at.is_(None))):
                connected.setdefault(firm_id, set()).add(provider)
        return {firm_id: max(int(minutes or 1), 1) * self.unit_seconds
                for firm_id, realm, minutes, accounts, start in rows
                if realm and accounts and start
                and connected.get(firm_id, set()) >= PROVIDER_NAMES.keys()}

    def sync(self) -> None:
        """Make the jobs match the firms table."""
        wanted = self.ready_firms()
        problems: list[tuple[int, str]] = []
        with self._jobs_lock:
            if self._stopped:
                return
            for firm_id in list(self._intervals):
                if firm_id not in wanted:
                    self._scheduler.remove_job(job_id(firm_id))
                    del self._intervals[firm_id]
                    log.info("scheduler: firm %s unscheduled", firm_id)
            for firm_id, seconds in wanted.items():
                try:
                    self._schedule(firm_id, seconds)
                except Exception as exc:  # noqa: BLE001 - one firm's bad row stops no other
                    problem = self._skip(firm_id, seconds, exc)
                    if problem is not None:
                        problems.append((firm_id, problem))
                else:
                    self._skipped.pop(firm_id, None)
            for firm_id in set(self._skipped) - wanted.keys():
                del self._skipped[firm_id]  # paused or disconnected since: nothing to report
            self._refreshed = (time.monotonic(), datetime.now(UTC))
            self._refresh_error = None
        for firm_id, problem in problems:  # outside the lock: telling may take a while
            if self.on_problem is not None:
                try:
                    self.on_problem(firm_id, problem)
                except Exception:  # noqa: BLE001 - telling the firm must not stop the others
                    log.exception("scheduler: could not tell firm %s", firm_id)

    def _schedule(self, firm_id: int, seconds: float) -> None:
        grace = max(1, int(seconds / 2))
        if firm_id not in self._intervals:
            trigger = IntervalTrigger(seconds=seconds, timezone=UTC)
            self._scheduler.add_job(
                self._tick, trigger, args=[firm_id], id=job_id(firm_id), max_instances=1,
                coalesce=True, misfire_grace_time=grace, replace_existing=True)
            log.info("scheduler: firm %s every %.0f s", firm_id, seconds)
        elif self._intervals[firm_id] != seconds:
            trigger = IntervalTrigger(seconds=seconds, timezone=UTC)
            self._scheduler.modify_job(job_id(firm_id), misfire_grace_time=grace)
            self._scheduler.reschedule_job(job_id(firm_id), trigger=trigger)
            log.info("scheduler: firm %s now every %.0f s", firm_id, seconds)
        self._intervals[firm_id] = seconds

    def _skip(self, firm_id: int, seconds: float, exc: Exception) -> str | None:
        """Leave the firm unscheduled (its old job too: it no longer matches its settings);
        the problem to tell the firm, or None when it was told already."""
        if firm_id in self._intervals:
            del self._intervals[firm_id]
            try:
                self._scheduler.remove_job(job_id(firm_id))
            except Exception:  # noqa: BLE001 - already gone
                log.debug("scheduler: firm %s had no job to remove", firm_id)
        minutes = seconds / self.unit_seconds
        problem = (f"Scheduled imports are off: a schedule of {minutes:,.0f} minutes cannot be "
                   "set up. Choose one from 5 to 10080 minutes with /hardcost set schedule.")
        if self._skipped.get(firm_id) == problem:
            return None
        self._skipped[firm_id] = problem
        log.error("scheduler: firm %s skipped: %s (%s: %s)", firm_id, problem,
                  type(exc).__name__, exc)
        return problem

    def run_daily(self) -> None:
        """The daily job's tick: hand the time to ``daily``; a failure waits for the next."""
        if self.daily is None or SHUTDOWN.is_set() or self._stopped:
            return
        try:
            self.daily(self.clock())
        except Exception:  # noqa: BLE001 - the next tick tries again
            log.exception("scheduler: daily work failed")

    def _refresh(self) -> None:
        try:
            self.sync()
        except Exception as exc:  # noqa: BLE001 - the next refresh tries again
            self._refresh_error = type(exc).__name__  # /healthz is public: no details
            log.exception("scheduler: refreshing the jobs failed")

    # -- one tick -------------------------------------------------------------------------

    def _submitted(self, event: JobSubmissionEvent) -> None:
        if event.scheduled_run_times:
            self._due_at[event.job_id] = event.scheduled_run_times[-1]

    def _tick(self, firm_id: int) -> None:
        if SHUTDOWN.is_set() or self._stopped:
            return
        self._last_tick = datetime.now(UTC)
        due = self._due_at.pop(job_id(firm_id), None)
        if due is not None:  # late by a busy thread pool, a slow database, a paused process
            SCHEDULER_LATENESS.observe(max((self._last_tick - due).total_seconds(), 0.0))
        try:
            self.run_firm(firm_id)
        except Exception:  # noqa: BLE001 - a scheduled run must not kill the scheduler
            log.exception("scheduler: import for firm %s failed", firm_id)

    def run_firm(self, firm_id: int) -> RunSummary | None:
        """One scheduled run of the firm unless it is running (here or, on PostgreSQL,
        elsewhere) or was just run by another replica; the summary, or None when skipped."""
        with self._idle:
            self._active += 1
        try:
            return self._run_firm(firm_id)
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def _run_firm(self, firm_id: int) -> RunSummary | None:
        with self.guard(firm_id) as mine:
            if not mine:
                log.debug("scheduler: firm %s is running here already; tick skipped", firm_id)
                return None
            with self.firm_lock(firm_id) as locked:
                if not locked:
                    log.debug("scheduler: firm %s is running in another process; tick "
                              "skipped", firm_id)
                    return None
                if not self._due(firm_id):
                    return None
                try:
                    summary = self.importer_for(firm_id).run(trigger="schedule")
                except FirmNotReady as exc:
                    log.info("scheduler: firm %s not ready: %s", firm_id, exc)
                    return None
                if self.after_run is not None:
                    self.after_run(firm_id, summary)
                return summary

    def _due(self, firm_id: int) -> bool:
        """Still ready (not paused since the last refresh), and no scheduled run started
        within half an interval (another replica's tick just before this one)."""
        seconds = self.ready_firms().get(firm_id)
        if seconds is None:
            log.debug("scheduler: firm %s is no longer scheduled; tick skipped", firm_id)
            return False
        with self.sessions() as session:
            last = session.scalar(select(Run.started_at).where(
                Run.firm_id == firm_id, Run.trigger == "schedule", Run.dry_run.is_(False))
                .order_by(Run.id.desc()).limit(1))
        if last is not None and self.clock() - last < timedelta(seconds=seconds / 2):
            log.debug("scheduler: firm %s ran at %s; tick skipped", firm_id, last)
            return False
        return True

    @contextmanager
    def _own_guard(self, firm_id: int) -> Iterator[bool]:
        with self._running_lock:
            if firm_id in self._running:
                mine = False
            else:
                self._running.add(firm_id)
                mine = True
        try:
            yield mine
        finally:
            if mine:
                with self._running_lock:
                    self._running.discard(firm_id)

    @contextmanager
    def firm_lock(self, firm_id: int) -> Iterator[bool]:
        """The cross-process lock (``sync.locks``), unless the guard already holds it."""
        if self.guard != self._own_guard:
            yield True  # BotContext.claim_run takes it together with the in-process slot
            return
        with firm_run_lock(self.db, firm_id) as locked:
            yield locked

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


def _holder() -> str:
    import os
    import socket

    return f"pid {os.getpid()} on {socket.gethostname()}"


__all__ = ["ImportScheduler", "SchedulerHealth", "SchedulerRefused", "job_id"]

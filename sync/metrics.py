"""Prometheus metrics of this process (``/metrics``, text format).

Counters and histograms are kept in memory by the code that does the work: each replica
reports its own, and Prometheus adds them up. Every series of a known label value is there from
start-up, at 0, so that ``increase(...[1h])`` alerts work before the first event. What lives in
the database is read two ways:

- the Slack outbox and the webhook queue at each scrape (``StoreCollector``): two aggregates on
  indexed columns, as cheap as the queue is short;
- the fleet's figures (``FleetCollector``: firms overdue, connections broken, expenses waiting
  and the oldest wait, open failures) every ``FIGURES_EVERY`` seconds by the scheduler's
  figures job, never per scrape: they scan ``connections``, ``waiting_expenses`` and
  ``failures`` (no index answers "open, every firm"), so a scrape every few seconds on every
  replica would read those tables each time. A scrape reads the figures the job kept.

No ``_created`` series (``disable_created_metrics``): they double the series and no alert uses
them. The process's own metrics (``process_*``: CPU, memory, open files) are in the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync.store import (
    Connection,
    Failure,
    Firm,
    RunLease,
    SlackOutbox,
    WaitingExpense,
    WebhookEvent,
    utcnow,
)

disable_created_metrics()

FIGURES_EVERY = 30.0
"""Seconds between two readings of the fleet's figures (the scheduler's figures job)."""
OVERDUE_AFTER = timedelta(minutes=5)
"""A firm is overdue once its scheduled run is due for longer than this and no run holds it."""
TRIGGERS = ("schedule", "slack", "webhook", "retry", "manual", "demo")
OUTCOMES = ("ok", "failed", "crashed")

REGISTRY = CollectorRegistry(auto_describe=True)
"""hardcost's own registry: nothing from other libraries but the process collector."""
ProcessCollector(registry=REGISTRY)

try:
    VERSION = version("hardcost")
except PackageNotFoundError:  # a source tree that was never installed
    VERSION = "0+unknown"
BUILD_INFO = Gauge("hardcost_build_info", "Always 1; the version label says which hardcost "
                   "this process runs.", ["version"], registry=REGISTRY)
BUILD_INFO.labels(VERSION).set(1)

RUNS = Counter("hardcost_runs", "Import runs finished, by what started them and how they ended "
               "(ok, failed: stopped with an error; crashed: an unexpected exception).",
               ["trigger", "outcome"], registry=REGISTRY)
RUN_SECONDS = Histogram("hardcost_run_duration_seconds", "How long import runs took.",
                        ["trigger"], registry=REGISTRY,
                        buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600))
ENTRIES = Counter("hardcost_entries", "Clio hard-cost entries written, by action "
                  "(created, updated, moved, deleted).", ["action"], registry=REGISTRY)
FAILURES = Counter("hardcost_failures", "New sync failures recorded, by class "
                   "(config: a person must act; transient: retried; data: the expense).",
                   ["kind"], registry=REGISTRY)
RECEIPTS = Counter("hardcost_receipts", "Receipts (files attached in QuickBooks) filed in the "
                   "documents of their matters in Clio.", registry=REGISTRY)
RECEIPT_BYTES = Counter("hardcost_receipt_bytes", "Bytes of the receipts filed in Clio.",
                        registry=REGISTRY)
API_REQUESTS = Counter("hardcost_api_requests", "Requests sent to QuickBooks and Clio.",
                       ["service"], registry=REGISTRY)
API_RATE_LIMITED = Counter("hardcost_api_rate_limited", "Answers that said the rate limit was "
                           "reached (HTTP 429 or QuickBooks' throttle fault), by service "
                           "(quickbooks, clio, slack).",
                           ["service"], registry=REGISTRY)
DIGEST_FAILURES = Counter("hardcost_digest_failures", "Firms whose daily digest failed with an "
                          "error (logged with the firm's id); the other firms' went on.",
                          registry=REGISTRY)
SCHEDULER_LATENESS = Histogram("hardcost_scheduler_lateness_seconds", "How late scheduled runs "
                               "started after their due time.", registry=REGISTRY,
                               buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900))

for _trigger in TRIGGERS:
    RUN_SECONDS.labels(_trigger)
    for _outcome in OUTCOMES:
        RUNS.labels(_trigger, _outcome)
for _action in ("created", "updated", "moved", "deleted"):
    ENTRIES.labels(_action)
for _kind in ("config", "transient", "data"):
    FAILURES.labels(_kind)
for _service in ("quickbooks", "clio"):
    API_REQUESTS.labels(_service)
for _service in ("quickbooks", "clio", "slack"):
    API_RATE_LIMITED.labels(_service)


def service_label(service: str) -> str:
    """``ApiError.service`` ("QuickBooks") as a label value ("quickbooks")."""
    return service.lower()


class StoreCollector(Collector):
    """The outbox and webhook queue, read from the database at each scrape."""

    def __init__(self, sessions: sessionmaker[Session],
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.sessions = sessions
        self.clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self.sessions() as session:
            depth, oldest = session.execute(select(
                func.count(SlackOutbox.id), func.min(SlackOutbox.created_at)).where(
                SlackOutbox.sent_at.is_(None), SlackOutbox.gave_up_at.is_(None))).one()
            webhooks = session.scalar(select(func.count(WebhookEvent.id)).where(
                WebhookEvent.processed_at.is_(None)))
        yield GaugeMetricFamily("hardcost_outbox_depth", "Slack messages waiting to be sent.",
                                value=depth or 0)
        age = 0.0
        if oldest is not None:
            if oldest.tzinfo is None:  # SQLite hands back naive UTC
                oldest = oldest.replace(tzinfo=self.clock().tzinfo)
            age = max((self.clock() - oldest).total_seconds(), 0.0)
        yield GaugeMetricFamily("hardcost_outbox_oldest_age_seconds", "Age of the oldest Slack "
                                "message waiting to be sent (0 when none waits).", value=age)
        yield GaugeMetricFamily("hardcost_webhook_queue_depth", "QuickBooks webhook events "
                                "stored and not yet imported.", value=webhooks or 0)


@dataclass(frozen=True)
class Fleet:
    """The fleet's figures as read at ``read_at`` (``read_fleet``): active firms only."""

    read_at: datetime
    firms_overdue: int
    connections_broken: int
    expenses_waiting: int
    oldest_wait: datetime | None
    failures_open: int
    firms_scheduled: int | None = None  # the scheduler's count (None without a scheduler)


def _aware(when: datetime | None, like: datetime) -> datetime | None:
    if when is not None and when.tzinfo is None:  # SQLite hands back naive UTC
        return when.replace(tzinfo=like.tzinfo)
    return when


def read_fleet(session: Session, now: datetime,
               overdue_after: timedelta = OVERDUE_AFTER) -> Fleet:
    """Four aggregate statements over the firms' tables (each reads its table whole: the
    figures job's, every ``FIGURES_EVERY`` seconds, never a scrape's)."""
    active = select(Firm.id).where(Firm.active.is_(True))
    overdue = session.scalar(select(func.count()).select_from(RunLease).where(
        RunLease.firm_id.in_(active), RunLease.next_run_at < now - overdue_after,
        or_(RunLease.claim_token.is_(None), RunLease.lease_until < now)))
    broken = session.scalar(select(func.count()).select_from(Connection).where(
        Connection.firm_id.in_(active), Connection.broken_at.is_not(None)))
    waiting, oldest = session.execute(select(
        func.count(WaitingExpense.id), func.min(WaitingExpense.created_at)).where(
        WaitingExpense.firm_id.in_(active), WaitingExpense.resolved_at.is_(None))).one()
    failures = session.scalar(select(func.count()).select_from(Failure).where(
        Failure.firm_id.in_(active), Failure.resolved_at.is_(None)))
    return Fleet(now, int(overdue or 0), int(broken or 0), int(waiting or 0),
                 _aware(oldest, now), int(failures or 0))


class FleetCollector(Collector):
    """The fleet's gauges from the latest figures ``figures()`` hands (None: not read yet, and
    the gauges say 0); ages are computed at the scrape."""

    def __init__(self, figures: Callable[[], Fleet | None],
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.figures = figures
        self.clock = clock

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # registering must not read the figures (``FleetReader`` would, at once)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        fleet = self.figures()
        now = self.clock()

        def gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, text, value=value)

        yield gauge("hardcost_firms_overdue", "Active firms whose scheduled run is due for more "
                    "than 5 minutes with no run under way (no replica is claiming them).",
                    fleet.firms_overdue if fleet else 0)
        yield gauge("hardcost_connections_broken", "QuickBooks and Clio connections of active "
                    "firms that the service refused for good (a person must reconnect).",
                    fleet.connections_broken if fleet else 0)
        yield gauge("hardcost_expenses_waiting", "Expenses of active firms waiting for a "
                    "person's choice (a contact or a matter).",
                    fleet.expenses_waiting if fleet else 0)
        oldest = fleet.oldest_wait if fleet else None
        yield gauge("hardcost_expenses_waiting_oldest_age_seconds", "Age of the oldest expense "
                    "waiting for a person's choice (0 when none waits).",
                    max((now - oldest).total_seconds(), 0.0) if oldest else 0.0)
        yield gauge("hardcost_failures_open", "Sync failures of active firms not resolved yet.",
                    fleet.failures_open if fleet else 0)
        scheduled = fleet.firms_scheduled if fleet else None
        if scheduled is not None:  # a process with a scheduler (hardcost serve)
            yield gauge("hardcost_firms_scheduled", "Firms with scheduled imports (ready: "
                        "active, not paused, both services connected, an import account and "
                        "a start date); every replica counts the same.", scheduled)
        yield gauge("hardcost_fleet_figures_age_seconds", "Seconds since the figures above "
                    "were read (every 30 s; growing: the figures job fails, see the log).",
                    max((now - fleet.read_at).total_seconds(), 0.0) if fleet else 0.0)


class FleetReader:
    """The fleet's figures read at most every ``every`` seconds, for a process without a
    scheduler (``make_wsgi_app`` without one): the read happens at a scrape, at most once per
    ``every`` seconds whatever the scrape rate."""

    def __init__(self, sessions: sessionmaker[Session], every: float = FIGURES_EVERY,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.sessions = sessions
        self.every = every
        self.clock = clock
        self._last: Fleet | None = None

    def latest(self) -> Fleet | None:
        now = self.clock()
        last = self._last
        if last is None or (now - last.read_at).total_seconds() >= self.every:
            with self.sessions() as session:
                self._last = last = read_fleet(session, now)
        return last

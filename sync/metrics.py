"""Prometheus metrics of this process (``/metrics``, text format).

Counters and histograms are kept in memory by the code that does the work: each replica
reports its own, and Prometheus adds them up. What lives in the database (the Slack outbox, the
webhook queue) is read when ``/metrics`` is scraped (``StoreCollector``), so every replica
reports the same figures for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync.store import SlackOutbox, WebhookEvent, utcnow

REGISTRY = CollectorRegistry(auto_describe=True)
"""hardcost's own registry: nothing from other libraries, no process metrics of the client's
default registry."""

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

for _action in ("created", "updated", "deleted"):
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

"""What every listener shares: ``BotContext`` (the store, the importers, the run slots) and
the Slack Web API client factory. Listeners, the web routes and the webhook worker import it;
it imports nothing of theirs."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from hardcost.bot.live import attach
from hardcost.bot.notify import Notifier
from hardcost.bot.outbox import ClientFor, deliver
from hardcost.sync.config import Settings
from hardcost.sync.http import ApiError
from hardcost.sync.importer import SHUTDOWN, FirmNotReady, Importer
from hardcost.sync.leases import Lease, Leases, RunStop
from hardcost.sync.metrics import API_RATE_LIMITED
from hardcost.sync.store import Firm, FirmSettings, utcnow
from hardcost.sync.summary import RunSummary

if TYPE_CHECKING:
    from hardcost.sync.scheduler import ImportScheduler

log = logging.getLogger(__name__)

ImporterFactory = Callable[[int], Importer]


class CountedRateLimitHandler(RateLimitErrorRetryHandler):
    """Retries Slack's 429s like slack-sdk's own handler, and counts them for ``/metrics``."""

    def _can_retry(self, *, state: RetryState, request: HttpRequest,
                   response: HttpResponse | None = None,
                   error: Exception | None = None) -> bool:
        limited = super()._can_retry(state=state, request=request, response=response,
                                     error=error)
        if limited:
            API_RATE_LIMITED.labels("slack").inc()
        return limited


def make_web_client(token: str | None, base_url: str, *, max_retry_wait: int = 30) -> WebClient:
    """A WebClient that retries 429s (honouring Retry-After), 5xx and connection errors."""
    client = WebClient(token=token, base_url=base_url)
    client.retry_handlers.extend([
        CountedRateLimitHandler(max_retry_count=2),
        ServerErrorRetryHandler(max_retry_count=2),
    ])
    if not any(isinstance(h, ConnectionErrorRetryHandler) for h in client.retry_handlers):
        client.retry_handlers.append(ConnectionErrorRetryHandler())
    return client


@dataclass
class BotContext:
    """What every listener needs: the store, the engines, the notifier."""

    sessions: sessionmaker[Session]
    config: Settings
    importer_for: ImporterFactory
    sandbox_links: bool = False
    clock: Callable[[], datetime] = field(default=utcnow)

    def firm_id_for_team(self, team_id: str | None) -> int | None:
        if not team_id:
            return None
        with self.sessions() as session:
            return session.scalars(select(Firm.id).where(
                Firm.slack_team_id == team_id, Firm.active.is_(True))).first()

    def firm_id_for_interaction(self, body: dict[str, Any]) -> int | None:
        """The firm of a click or a form submitted in Slack, only when the person belongs to
        the workspace it came from: in a channel shared with another organisation (Slack
        Connect) ``team`` is the channel's workspace and ``user.team_id`` the person's own,
        and only the firm's own people may act for it."""
        team, user = body.get("team"), body.get("user")
        team_id = team.get("id") if isinstance(team, dict) else None
        user_team = user.get("team_id") if isinstance(user, dict) else None
        if not isinstance(team_id, str) or user_team != team_id:
            if team_id is not None:
                log.warning("interaction from team %r by a user of team %r refused",
                            team_id, user_team)
            return None
        return self.firm_id_for_team(team_id)

    def settings(self, firm_id: int) -> FirmSettings:
        with self.sessions() as session:
            settings = session.get(FirmSettings, firm_id)
            assert settings is not None
            return settings

    def notifier(self, client: ClientFor) -> Notifier:
        return Notifier(self.sessions, client, sandbox_links=self.sandbox_links,
                        clock=self.clock)

    listener_executor: ThreadPoolExecutor | None = None
    _runs: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(
        max_workers=RUN_WORKERS, thread_name_prefix="hardcost-run"))
    _running: set[int] = field(default_factory=set)
    _running_lock: threading.Lock = field(default_factory=threading.Lock)
    scheduler: ImportScheduler | None = None
    """``hardcost serve``'s scheduled imports (``sync.scheduler``); None elsewhere."""

    leases: Leases | None = None
    """The process's run leases (``sync.leases``), made from the sessions' engine when first
    needed; ``hardcost serve`` shares one with the scheduler."""

    def run_leases(self) -> Leases:
        if self.leases is None:
            db = self.sessions.kw.get("bind")
            if not isinstance(db, Engine):
                raise RuntimeError("run leases need the database engine of the sessions")
            self.leases = Leases(db)
        return self.leases

    @contextmanager
    def claim_run(self, firm_id: int, kind: str = "slack") -> Iterator[Lease | None]:
        """Hold the firm's run slot for the block: this process's (the one ``start_run``
        takes) and the firm's lease, so no two imports of a firm run at once in any process.
        Yields None when the firm's import is under way somewhere."""
        with self._running_lock:
            mine = firm_id not in self._running
            self._running.add(firm_id)
        try:
            if not mine:
                yield None
                return
            with self.run_leases().hold(firm_id, kind) as lease:
                yield lease
        finally:
            if mine:
                with self._running_lock:
                    self._running.discard(firm_id)

    slack_clients: ClientFor | None = None
    """The Slack client(s) a long run's progress message goes out with (``bot.live``); None:
    runs show no progress in Slack."""
    _deliveries: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="hardcost-deliver"))
    _delivering: set[int] = field(default_factory=set)

    def importer(self, firm_id: int, *, watch: Callable[[str], None] | None = None
                 ) -> Importer:
        """The firm's importer, whose long runs show their progress in the firm's channel
        (``watch(link)`` is told where, once the message is posted)."""
        importer = self.importer_for(firm_id)
        if self.slack_clients is not None:
            attach(importer, self.sessions, firm_id, self.slack_clients,
                   deliver_soon=self.deliver_soon, clock=self.clock,
                   after=self.config.progress_after_seconds,
                   every=self.config.progress_every_seconds, watch=watch)
        return importer

    def deliver_soon(self, firm_id: int, clients: ClientFor,
                     then: Callable[[], None] | None = None) -> None:
        """Send the firm's queued Slack messages on a background thread (once per firm at a
        time): the caller, an import, never waits for Slack."""
        with self._running_lock:
            if firm_id in self._delivering:
                return
            self._delivering.add(firm_id)

        def job() -> None:
            with self._running_lock:
                self._delivering.discard(firm_id)
            try:
                deliver(self.sessions, clients, firm_id=firm_id, clock=self.clock)
                if then is not None:
                    then()
            except Exception:  # noqa: BLE001 - the outbox keeps what was not sent
                log.exception("sending firm %s's Slack messages failed", firm_id)

        try:
            self._deliveries.submit(job)
        except RuntimeError:  # shutting down: the outbox keeps it for the next process
            with self._running_lock:
                self._delivering.discard(firm_id)

    def start_run(self, firm_id: int, *, trigger: str,
                  then: Callable[[RunSummary], None],
                  failed: Callable[[str], None] | None = None,
                  actor: str | None = None, watch: Callable[[str], None] | None = None
                  ) -> bool:
        """Start an import on the run pool (a long import must not hold a listener worker);
        False when this firm's import is already under way (here or in another replica).

        ``then(summary)`` follows a run; ``failed(sentence)`` is called instead when the run
        could not start (the firm is not ready, a connection is missing) or crashed, so the
        person who asked is always told something. ``actor`` (the Slack user who asked) is
        who the audit trail names for what the run changes; ``watch(link)`` is told where the
        run's progress message is, when the run is long enough to have one."""
        claim = self.claim_run(firm_id)
        lease = claim.__enter__()
        if lease is None:
            claim.__exit__(None, None, None)
            return False

        def job() -> None:
            try:
                importer = self.importer(firm_id, watch=watch)
                importer.stopping = RunStop(lease, SHUTDOWN)
                summary = importer.run(trigger=trigger, actor=actor)
            except (FirmNotReady, ApiError) as exc:
                log.info("import for firm %s did not start: %s", firm_id, exc)
                self._tell_failed(failed, str(exc))
                return
            except Exception as exc:  # noqa: BLE001 - recorded as failed by the importer
                log.exception("import for firm %s failed", firm_id)
                self._tell_failed(failed, f"The import stopped on an unexpected error "
                                  f"({type(exc).__name__}); the details are in the server "
                                  "log, and the next run tries again.")
                return
            finally:
                claim.__exit__(None, None, None)  # the import is over: the next may start
            try:
                then(summary)
            except Exception:  # noqa: BLE001 - posting is retried by the outbox
                log.exception("after the import for firm %s", firm_id)

        self._runs.submit(job)
        return True

    @staticmethod
    def _tell_failed(failed: Callable[[str], None] | None, sentence: str) -> None:
        if failed is None:
            return
        try:
            failed(sentence)
        except Exception:  # noqa: BLE001 - Slack may be down; the log has it
            log.exception("could not tell that the import failed")

    def drain(self, seconds: float) -> bool:
        """Stop taking work and wait up to ``seconds`` for what is running; True when done.

        Runs stop between two entries once ``sync.importer.SHUTDOWN`` is set; a choice being
        written finishes its one entry.
        """
        pools = [p for p in (self.listener_executor, self._runs, self._deliveries)
                 if p is not None]
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + seconds
        threads = [t for pool in pools for t in list(getattr(pool, "_threads", ()))]
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0))
        return not any(t.is_alive() for t in threads)


RUN_WORKERS = 2  # imports started from Slack; a firm's second request waits for its first

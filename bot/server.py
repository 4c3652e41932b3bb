"""``hardcost serve``: the Slack app over HTTP (waitress) or Socket Mode, plus the outbox pump.

In Socket Mode (``SLACK_APP_TOKEN``) Slack comes over a WebSocket (``bot.socket_mode``) and
the HTTP server still serves everything but the Slack paths: the QuickBooks and Clio OAuth
callbacks, ``/webhooks/quickbooks``, ``/healthz`` (with the socket's state) and ``/metrics``.

What it serves over HTTP: ``/slack/events`` (commands, interactivity, options, events),
``/slack/install`` and ``/slack/oauth_redirect`` (multi-workspace mode),
``/oauth/quickbooks/callback``, ``/oauth/clio/callback`` and ``/healthz`` (the database and the
scheduler), and runs the import scheduler (``sync.scheduler``). On SQLite a second
``hardcost serve`` on the same database refuses to start (the scheduler's lock file is held).
``/webhooks/quickbooks`` stores QuickBooks' change notifications and a webhook worker
(``bot.webhooks``) imports them.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from types import FrameType

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from hardcost.bot.app import build_app
from hardcost.bot.context import BotContext
from hardcost.bot.digest import send_due_digests
from hardcost.bot.exposure import METRICS_HOST, metrics_gate, metrics_only, serve_in_background
from hardcost.bot.install import INSTALL_PATH, multi_workspace, slack_clients
from hardcost.bot.month_report import send_due_reports
from hardcost.bot.oauth_routes import oauth_routes
from hardcost.bot.outbox import deliver
from hardcost.bot.socket_mode import SocketModeLink
from hardcost.bot.ui.notices import notice
from hardcost.bot.web import PortUnavailable, WSGIApp, listen_socket, make_wsgi_app, serve_forever
from hardcost.bot.webhooks import WebhookWorker, webhook_routes
from hardcost.sync.config import Settings
from hardcost.sync.db import alembic_config
from hardcost.sync.engine import make_engine, make_session_factory
from hardcost.sync.firms import build_importer
from hardcost.sync.housekeeping import prune
from hardcost.sync.importer import SHUTDOWN
from hardcost.sync.leases import Leases
from hardcost.sync.scheduler import ImportScheduler

log = logging.getLogger(__name__)

OUTBOX_EVERY = 30.0


class SchemaOutOfDate(RuntimeError):
    pass


def check_schema(engine: Engine) -> None:
    """Refuse to serve on a database the migrations have not brought up to date."""
    head = ScriptDirectory.from_config(alembic_config(str(engine.url))).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current != head:
        raise SchemaOutOfDate(f"The database schema is at {current or 'nothing'}, not {head}: "
                              "run `hardcost db upgrade` first.")


class OutboxPump(threading.Thread):
    """Sends queued Slack messages every ``every`` seconds until stopped."""

    def __init__(self, deliver_once: object, every: float = OUTBOX_EVERY) -> None:
        super().__init__(name="outbox", daemon=True)
        self._deliver = deliver_once
        self.every = every
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                self._deliver()  # type: ignore[operator]
            except Exception:  # noqa: BLE001 - the pump must outlive any one failure
                log.exception("outbox delivery failed; will try again")


SHUTDOWN_GRACE = 25.0  # seconds; container platforms usually allow 30 after SIGTERM


def serve(config: Settings, *, sandbox_links: bool = False) -> int:
    """Serve until SIGTERM or SIGINT. ``sandbox_links``: QuickBooks links in Slack point to
    Intuit's sandbox company app instead of the production one."""
    engine = make_engine(config.resolved_database_url())
    check_schema(engine)
    if config.metrics_port is not None and config.metrics_port == config.port:
        raise PortUnavailable(f"HARDCOST_METRICS_PORT is PORT's port ({config.port}): give "
                              "/metrics a port of its own, or unset HARDCOST_METRICS_PORT")
    # PortUnavailable before anything starts
    listener = listen_socket(config.host, config.port)
    metrics_listener = None
    try:
        if config.metrics_port is not None:
            metrics_listener = listen_socket(METRICS_HOST, config.metrics_port,
                                             variable="HARDCOST_METRICS_PORT")
        return _serve(config, engine, listener, metrics_listener,
                      sandbox_links=sandbox_links)
    finally:
        listener.close()
        if metrics_listener is not None:
            metrics_listener.close()


def shown_address(host: str, port: int) -> str:
    """``host:port`` as in a URL: an IPv6 address in brackets."""
    bare = host.strip().strip("[]")
    return f"[{bare}]:{port}" if ":" in bare else f"{bare}:{port}"


def _exposed(config: Settings, app: WSGIApp, metrics_listener: socket.socket | None) -> WSGIApp:
    """``app`` as ``PORT`` serves it: ``/metrics`` behind ``HARDCOST_METRICS_TOKEN``, or only
    on ``HARDCOST_METRICS_PORT`` (then served from here, in a thread of its own)."""
    token = config.metrics_token.get_secret_value().strip() if config.metrics_token else None
    if metrics_listener is not None:
        serve_in_background(metrics_only(app, token=token or None), metrics_listener,
                            name="metrics")
        log.info("serving /metrics on http://%s only%s",
                 shown_address(METRICS_HOST, config.metrics_port or 0),
                 " (bearer token required)" if token else "")
    return metrics_gate(app, token=token or None, serve_metrics=metrics_listener is None)


def _serve(config: Settings, engine: Engine, listener: socket.socket,
           metrics_listener: socket.socket | None, *, sandbox_links: bool) -> int:
    sessions = make_session_factory(engine)
    ctx = BotContext(sessions=sessions, config=config,
                     importer_for=lambda firm_id: build_importer(
                         sessions, firm_id, config, sandbox_links=sandbox_links))
    ctx.sandbox_links = sandbox_links
    ctx.leases = Leases(engine, ttl=config.lease_seconds)  # every import's, in every replica
    app = build_app(ctx, engine=engine)
    clients = slack_clients(ctx, app)  # the one client, or each firm's workspace client
    ctx.slack_clients = clients  # long runs show their progress in the firm's channel
    # -- scheduled imports (sync/scheduler.py) ------------------------------------------
    ctx.scheduler = ImportScheduler(
        sessions, ctx.importer, leases=ctx.leases,
        after_run=lambda firm_id, summary: ctx.notifier(clients).after_run(firm_id, summary),
        unit_seconds=config.schedule_unit_seconds,
        refresh_every=config.scheduler_refresh_seconds,
        threads=config.scheduler_threads,
        on_problem=lambda firm_id, problem: ctx.notifier(clients).tell(
            firm_id, notice(problem)),
        daily=lambda now: (send_due_digests(ctx.notifier(clients), now),
                           send_due_reports(sessions, ctx.importer_for, clients, now)),
        housekeeping=lambda: prune(engine, config.retention_days))
    # SQLite: SchedulerRefused when another serve runs on this file. Then the runs of a
    # process that died are marked abandoned (``settle_abandoned_runs``), before any claim.
    ctx.scheduler.start()
    # -- end scheduled imports ----------------------------------------------------------
    pump = OutboxPump(lambda: deliver(sessions, clients))
    pump.start()
    # -- QuickBooks webhooks: the route stores events, this worker imports them -------------
    webhook_worker = WebhookWorker(
        ctx, clients, guard=lambda firm_id: ctx.claim_run(firm_id, "webhook"))
    webhook_worker.start()
    # ---------------------------------------------------------------------------------------

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        routes = {**oauth_routes(ctx, clients), **webhook_routes(ctx)}
        if config.slack_app_token:
            log.info("Slack over Socket Mode; serving http://%s for the OAuth "
                     "callbacks, /webhooks/quickbooks, /healthz and /metrics",
                     shown_address(config.host, config.port))
            if multi_workspace(config):
                log.warning("%s is served over HTTP only: install workspaces while "
                            "serving over HTTP (without SLACK_APP_TOKEN)", INSTALL_PATH)
            socket_mode = SocketModeLink(app, config.slack_app_token)
            socket_mode.connect()
            try:
                serve_forever(_exposed(config, make_wsgi_app(
                    app, sessions, routes=routes, scheduler=ctx.scheduler,
                    socket_mode=socket_mode), metrics_listener), listener)
            finally:
                socket_mode.close()
            return 0
        log.info("serving http://%s/slack/events", shown_address(config.host, config.port))
        if multi_workspace(config):
            log.info("multi-workspace mode, install at %s%s",
                     config.public_url.rstrip("/"), INSTALL_PATH)
        serve_forever(_exposed(config, make_wsgi_app(
            app, sessions, routes=routes, scheduler=ctx.scheduler,
            signing_secret=config.slack_signing_secret), metrics_listener), listener)
        return 0
    finally:
        webhook_worker.stopped.set()  # QuickBooks webhooks: no new pass; a run under way
        shut_down(ctx, pump)          # stops between two entries like any other


def shut_down(ctx: BotContext, pump: OutboxPump) -> None:
    """Stop taking work, let imports stop between two entries and choices finish their one
    write, then leave. Anything cut short is safe: entries are written ahead (a pending link
    the next run looks up in Clio) and the watermark only moves after a complete run."""
    SHUTDOWN.set()
    pump.stopped.set()
    deadline = time.monotonic() + SHUTDOWN_GRACE
    if ctx.scheduler is not None:  # scheduled imports: no new ticks from now on
        ctx.scheduler.shutdown()
    log.info("shutting down; waiting up to %.0f s for work under way", SHUTDOWN_GRACE)
    if not (ctx.drain(SHUTDOWN_GRACE) and (  # then what the scheduler runs, same deadline
            ctx.scheduler is None or ctx.scheduler.wait(deadline - time.monotonic()))):
        log.warning("work still running after %.0f s; leaving it to the write-ahead "
                    "records (the next run recovers it)", SHUTDOWN_GRACE)
        logging.shutdown()
        os._exit(0)  # the executors' threads would otherwise keep the process alive
    log.info("stopped cleanly")

"""``hardcost serve``: the Slack app over HTTP (waitress) or Socket Mode, plus the outbox pump.

What it serves today: ``/slack/events`` (commands, interactivity, options, events),
``/slack/install`` and ``/slack/oauth_redirect`` (multi-workspace mode),
``/oauth/quickbooks/callback``, ``/oauth/clio/callback`` and ``/healthz``. QuickBooks webhooks
and the import scheduler come with later work (see the README).
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from bot.app import BotContext, build_app
from bot.install import INSTALL_PATH, multi_workspace, slack_clients
from bot.oauth_routes import oauth_routes
from bot.outbox import deliver
from bot.web import make_wsgi_app, serve_forever
from sync.config import Settings
from sync.db import alembic_config
from sync.firms import build_engine
from sync.store import make_engine, make_session_factory

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


def serve(config: Settings) -> int:
    engine = make_engine(config.resolved_database_url())
    check_schema(engine)
    sessions = make_session_factory(engine)
    ctx = BotContext(sessions=sessions, config=config,
                     engine_for=lambda firm_id: build_engine(sessions, firm_id, config))
    app = build_app(ctx, engine=engine)
    clients = slack_clients(ctx, app)  # the one client, or each firm's workspace client
    pump = OutboxPump(lambda: deliver(sessions, clients))
    pump.start()

    def stop(signum: int, frame: FrameType | None) -> None:
        pump.stopped.set()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    if config.slack_app_token:
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        log.info("hardcost: Slack over Socket Mode")
        if multi_workspace(config):
            log.warning("hardcost: %s is served over HTTP only: install workspaces while "
                        "serving over HTTP (without SLACK_APP_TOKEN)", INSTALL_PATH)
        SocketModeHandler(app, config.slack_app_token).start()
        return 0
    log.info("hardcost: serving http://0.0.0.0:%s/slack/events", config.port)
    if multi_workspace(config):
        log.info("hardcost: multi-workspace mode, install at %s%s",
                 config.public_url.rstrip("/"), INSTALL_PATH)
    serve_forever(make_wsgi_app(app, sessions, routes=oauth_routes(ctx, clients)), "0.0.0.0",
                  config.port)
    return 0

"""The Slack app: one factory that builds the Bolt ``App`` and wires the listeners.

Single-workspace mode (``SLACK_BOT_TOKEN``) or multi-workspace mode (``SLACK_CLIENT_ID`` and
``SLACK_CLIENT_SECRET``: installs through ``/slack/install``, see ``bot.install``).

Listeners ack at once and do slow work in Bolt's lazy listeners (after the ack). They read and
act on the store through ``sync`` and post what ``bot.ui`` builds, through the outbox.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.error import URLError

from slack_bolt import App
from slack_bolt.error import BoltError
from slack_bolt.logger import get_bolt_logger
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_sdk import WebClient
from sqlalchemy.engine import Engine

from hardcost.bot import install
from hardcost.bot.context import BotContext, make_web_client
from hardcost.bot.listeners import actions, commands, events, matter_rules, modals
from hardcost.bot.respond import fallback_respond
from hardcost.sync.config import unset_empty_variables

LAZY_WORKERS = 4  # clicks and commands: seconds at most; more threads only slow the acks


class _NotOurTokenWarning(logging.Filter):
    """Bolt reads ``SLACK_BOT_TOKEN`` from the environment even when it is given a client, and
    then warns at every start that the token is unused. The client we give it holds that very
    token (with our retry handlers), so the warning only alarms operators."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != warning_client_prioritized_and_token_skipped()


_BOLT_LOG = get_bolt_logger(App)
if not any(isinstance(f, _NotOurTokenWarning) for f in _BOLT_LOG.filters):
    _BOLT_LOG.addFilter(_NotOurTokenWarning())


def _dispatch_options(ctx: BotContext) -> dict[str, Any]:
    """Acks run in the request's own thread (``process_before_response``), so they never queue
    behind slow work; the slow work (lazy listeners) runs on its own pool."""
    ctx.listener_executor = ThreadPoolExecutor(max_workers=LAZY_WORKERS,
                                               thread_name_prefix="hardcost-work")
    return {"process_before_response": True, "listener_executor": ctx.listener_executor}


def build_app(ctx: BotContext, *, client: WebClient | None = None,
              signing_secret: str | None = None, engine: Engine | None = None) -> App:
    """The Bolt app.

    Single-workspace mode (``SLACK_BOT_TOKEN``): one bot token for every request. Multi-workspace
    mode (``SLACK_CLIENT_ID`` + ``SLACK_CLIENT_SECRET``, see ``bot.install``): ``/slack/install``
    and ``/slack/oauth_redirect``, each request authorized with its workspace's token from the
    installation store on ``engine`` (default: the database of ``ctx.sessions``). ``client``
    (a tokenless one in multi-workspace mode) sets the Web API base URL and retries.
    """
    config = ctx.config
    # Bolt reads SLACK_CLIENT_ID/SLACK_CLIENT_SECRET from the environment itself and takes
    # them, even empty, for OAuth (ignoring the bot token): empty ones must be unset first.
    unset_empty_variables()
    secret = signing_secret or config.slack_signing_secret
    if not secret:
        raise RuntimeError("SLACK_SIGNING_SECRET is not set: Slack requests cannot be "
                           "verified, so the app will not start.")
    if install.multi_workspace(config):
        if client is None:
            client = make_web_client(None, config.slack_api_url)
        bind = engine if engine is not None else ctx.sessions.kw.get("bind")
        if not isinstance(bind, Engine):
            raise RuntimeError("multi-workspace mode needs the database engine")
        settings = install.oauth_settings(ctx, bind)
        app = App(client=client, signing_secret=secret, oauth_settings=settings,
                  **_dispatch_options(ctx))
        install.register(app, ctx, settings.installation_store)
    else:
        if client is None:
            if not config.slack_bot_token:
                raise RuntimeError("Set SLACK_BOT_TOKEN (single workspace) or SLACK_CLIENT_ID "
                                   "and SLACK_CLIENT_SECRET (install into any workspace).")
            client = make_web_client(config.slack_bot_token, config.slack_api_url)
        try:  # Bolt checks the token with auth.test here
            app = App(client=client, signing_secret=secret, **_dispatch_options(ctx))
        except (URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RuntimeError(
                f"Slack did not answer at SLACK_API_URL ({config.slack_api_url}): {reason}. "
                "Check the network (and SLACK_API_URL if set), then start again.") from None
        except BoltError as exc:
            raise RuntimeError(f"Slack refused SLACK_BOT_TOKEN: {exc}") from None
    app.use(fallback_respond)  # a forged click without response_url is still answered
    commands.register(app, ctx)
    actions.register(app, ctx)
    matter_rules.register(app, ctx)
    modals.register(app, ctx)
    events.register(app, ctx)
    return app

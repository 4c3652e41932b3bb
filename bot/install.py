"""Multi-workspace mode: installing hardcost into any Slack workspace through ``/slack/install``.

With ``SLACK_CLIENT_ID`` and ``SLACK_CLIENT_SECRET`` set, Bolt runs Slack's OAuth v2 flow
(``/slack/install`` → Slack's consent screen → ``/slack/oauth_redirect``) and keeps each
workspace's bot token in slack-sdk's SQLAlchemy installation store; every request is then
authorized with the token of the workspace it came from. Each workspace is one firm: a
successful install creates the firm (or re-activates it after an uninstall), and
``app_uninstalled`` / ``tokens_revoked`` deactivate it and forget its Slack, QuickBooks and Clio
tokens while keeping its links and history.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from slack_bolt import App, BoltContext
from slack_bolt.oauth.callback_options import CallbackOptions, FailureArgs, SuccessArgs
from slack_bolt.oauth.oauth_settings import OAuthSettings
from slack_bolt.response import BoltResponse
from slack_sdk import WebClient
from slack_sdk.oauth.installation_store import Installation, InstallationStore
from slack_sdk.oauth.state_store.sqlalchemy import SQLAlchemyOAuthStateStore
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hardcost.bot.context import BotContext
from hardcost.bot.outbox import ClientFor
from hardcost.bot.ui.pages import oauth_page
from hardcost.sync import oauth
from hardcost.sync.config import Settings
from hardcost.sync.slack_tables import EncryptedInstallationStore
from hardcost.sync.store import PROVIDER_NAMES, Firm, FirmSettings

log = logging.getLogger(__name__)

SCOPES = ("commands", "chat:write", "chat:write.public", "channels:read", "groups:read",
          "users:read", "files:write")
"""The manifest's bot scopes; ``groups:read`` lets hardcost check a private channel it is in,
``files:write`` upload ``/hardcost export``'s CSV file."""
INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"
STATE_SECONDS = 600
DEFAULT_SLACK_API_URL = "https://slack.com/api/"

_FAILURES: dict[str, tuple[str, str]] = {
    "access_denied": ("hardcost was not installed",
                      "The install was cancelled in Slack. Nothing was changed."),
    "invalid_browser": ("This install link is not valid here",
                        "The install was started in another browser, its link was changed, or "
                        "this browser blocks cookies. Nothing was installed."),
    "invalid_state": ("This install link has expired or was already used",
                      "Install links work once, for ten minutes. Nothing was installed."),
    "missing_code": ("Slack did not confirm the install",
                     "The answer from Slack had no approval in it. Nothing was installed."),
    "invalid_code": ("Slack did not confirm the install",
                     "Slack refused the approval (already used or expired). Nothing was "
                     "installed."),
    "storage_error": ("The install could not be saved",
                      "hardcost could not store the installation. Please try again shortly."),
}


def multi_workspace(config: Settings) -> bool:
    """True when ``SLACK_CLIENT_ID`` and ``SLACK_CLIENT_SECRET`` are both set."""
    return bool(config.slack_client_id and config.slack_client_secret)


def authorization_url(api_url: str) -> str | None:
    """Slack's consent page on the host of ``SLACK_API_URL`` (a sandbox); None for Slack's own
    (Bolt's default, ``https://slack.com/oauth/v2/authorize``)."""
    if api_url.rstrip("/") == DEFAULT_SLACK_API_URL.rstrip("/"):
        return None
    parts = urlsplit(api_url)
    return f"{parts.scheme}://{parts.netloc}/oauth/v2/authorize"


def install_url(config: Settings) -> str:
    return config.public_url.rstrip("/") + INSTALL_PATH


def oauth_settings(ctx: BotContext, engine: Engine) -> OAuthSettings:
    """Bolt's OAuth settings: SQLAlchemy stores on the app's database, hardcost's own pages."""
    config = ctx.config
    assert config.slack_client_id and config.slack_client_secret
    installations = EncryptedInstallationStore(client_id=config.slack_client_id, engine=engine)
    states = SQLAlchemyOAuthStateStore(expiration_seconds=STATE_SECONDS, engine=engine)
    settings = OAuthSettings(
        client_id=config.slack_client_id, client_secret=config.slack_client_secret,
        scopes=list(SCOPES), user_scopes=[],
        redirect_uri=config.public_url.rstrip("/") + REDIRECT_PATH,
        install_path=INSTALL_PATH, redirect_uri_path=REDIRECT_PATH,
        install_page_rendering_enabled=False,  # /slack/install goes straight to Slack
        authorization_url=authorization_url(config.slack_api_url),
        installation_store=installations, installation_store_bot_only=True,
        state_store=states, state_expiration_seconds=STATE_SECONDS,
    )
    settings.callback_options = CallbackOptions(
        success=lambda args: _on_success(ctx, args),
        failure=lambda args: _on_failure(ctx, args))
    return settings


# --- the redirect's answer ------------------------------------------------------------------


def _page(args: SuccessArgs | FailureArgs, title: str, message: str, *, ok: bool,
          status: int) -> BoltResponse:
    return BoltResponse(status=status, body=oauth_page(title, message, ok=ok), headers={
        "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "Set-Cookie": args.settings.state_utils.build_set_cookie_for_deletion()})


def _on_success(ctx: BotContext, args: SuccessArgs) -> BoltResponse:
    installation = args.installation
    if not installation.team_id:  # an org-wide (Enterprise Grid) install: not supported
        args.settings.installation_store.delete_installation(
            enterprise_id=installation.enterprise_id, team_id=None)
        args.settings.installation_store.delete_bot(
            enterprise_id=installation.enterprise_id, team_id=None)
        return _page(args, "hardcost was not installed",
                     "hardcost is installed one workspace at a time, not for a whole "
                     "organization. Install it from the workspace of the firm.",
                     ok=False, status=400)
    try:
        firm_id, again = workspace_installed(ctx.sessions, installation)
    except Exception:  # noqa: BLE001 - the browser gets a page, the log the trace
        log.exception("could not set up the firm for Slack team %s", installation.team_id)
        return _page(args, "The install could not be completed",
                     "Slack approved the install but hardcost could not set up the firm. "
                     "Please try again shortly.", ok=False, status=500)
    name = installation.team_name or installation.team_id
    next_steps = ("In Slack: /hardcost connect quickbooks, /hardcost connect clio, then "
                  "/hardcost set channel #channel and /hardcost check.")
    if again:
        message = (f"hardcost is installed again in {name}. QuickBooks and Clio were "
                   f"disconnected when it was removed, so connect them again. {next_steps}")
    else:
        message = f"hardcost is installed in {name}. {next_steps}"
    log.info("Slack team %s installed hardcost (firm %s%s)", installation.team_id, firm_id,
             ", re-activated" if again else "")
    return _page(args, "hardcost is installed", message, ok=True, status=200)


def _on_failure(ctx: BotContext, args: FailureArgs) -> BoltResponse:
    title, message = _FAILURES.get(args.reason, (
        "hardcost was not installed", f"Slack answered “{args.reason}”. Nothing was installed."))
    log.warning("Slack install refused: %s", args.reason)
    return _page(args, title, f"{message} To try again, open {install_url(ctx.config)}.",
                 ok=False, status=args.suggested_status_code)


def workspace_installed(sessions: sessionmaker[Session],
                        installation: Installation) -> tuple[int, bool]:
    """Create the workspace's firm, or re-activate it: (firm id, whether it existed)."""
    team_id = str(installation.team_id)
    for _attempt in range(2):
        with sessions() as session:
            firm = session.scalars(select(Firm).where(Firm.slack_team_id == team_id)).first()
            if firm is not None:
                existed = True
                firm.active = True
            else:
                existed = False
                firm = Firm(name=installation.team_name or team_id, slack_team_id=team_id,
                            active=True)
                session.add(firm)
                session.flush()
                session.add(FirmSettings(firm_id=firm.id))
            try:
                session.commit()
            except IntegrityError:  # the same workspace installed twice at once
                session.rollback()
                continue
            return firm.id, existed
    raise RuntimeError(f"could not create the firm of Slack team {team_id}")


# --- uninstalls ------------------------------------------------------------------------------


def forget_workspace(ctx: BotContext, store: InstallationStore, *, team_id: str,
                     enterprise_id: str | None = None) -> int | None:
    """The app left the workspace: deactivate its firm and forget its Slack, QuickBooks and
    Clio tokens (revoked where the provider allows). Links, runs and history stay."""
    with ctx.sessions() as session:
        firm = session.scalars(select(Firm).where(Firm.slack_team_id == team_id)).first()
        firm_id = firm.id if firm is not None else None
        if firm is not None:
            firm.active = False
            session.commit()
    store.delete_installation(enterprise_id=enterprise_id, team_id=team_id)
    store.delete_bot(enterprise_id=enterprise_id, team_id=team_id)
    if firm_id is not None:
        for provider in PROVIDER_NAMES:
            oauth.disconnect(ctx.sessions, ctx.config, firm_id, provider)
    log.info("Slack team %s removed hardcost: firm %s deactivated, tokens deleted", team_id,
             firm_id)
    return firm_id


def register(app: App, ctx: BotContext, store: InstallationStore) -> None:
    """``app_uninstalled`` and ``tokens_revoked`` (Bolt acks events itself; this runs after)."""

    def on_app_uninstalled(context: BoltContext) -> None:
        if context.team_id:
            forget_workspace(ctx, store, team_id=context.team_id,
                             enterprise_id=context.enterprise_id)

    def on_tokens_revoked(event: dict[str, Any], context: BoltContext) -> None:
        if not context.team_id:
            return
        tokens = event.get("tokens") or {}
        for user_id in tokens.get("oauth") or []:  # user tokens: hardcost asks for none
            store.delete_installation(enterprise_id=context.enterprise_id,
                                      team_id=context.team_id, user_id=user_id)
        if tokens.get("bot"):
            forget_workspace(ctx, store, team_id=context.team_id,
                             enterprise_id=context.enterprise_id)

    def just_ack(ack: Any) -> None:
        ack()

    # Revoking at QuickBooks and Clio takes HTTP calls: after the ack.
    app.event("app_uninstalled")(ack=just_ack, lazy=[on_app_uninstalled])
    app.event("tokens_revoked")(ack=just_ack, lazy=[on_tokens_revoked])


# --- clients for sending outside a request ---------------------------------------------------


class WorkspaceClients:
    """firm id → a ``WebClient`` with its workspace's bot token; None when not installed."""

    def __init__(self, sessions: sessionmaker[Session], store: InstallationStore,
                 template: WebClient) -> None:
        self.sessions = sessions
        self.store = store
        self.template = template

    def __call__(self, firm_id: int) -> WebClient | None:
        with self.sessions() as session:
            firm = session.get(Firm, firm_id)
            team_id = firm.slack_team_id if firm is not None and firm.active else None
        if not team_id:
            return None
        bot = self.store.find_bot(enterprise_id=None, team_id=team_id)
        if bot is None or not bot.bot_token:
            return None
        t = self.template
        return WebClient(token=bot.bot_token, base_url=t.base_url, timeout=t.timeout,
                         ssl=t.ssl, proxy=t.proxy, headers=dict(t.headers), logger=t.logger,
                         retry_handlers=list(t.retry_handlers))


def slack_clients(ctx: BotContext, app: App) -> ClientFor:
    """What sends a firm's messages outside a Slack request (outbox pump, OAuth pages): the
    app's one client in single-workspace mode, the firm's workspace client otherwise."""
    store = app.installation_store
    if store is None:
        return app.client
    return WorkspaceClients(ctx.sessions, store, app.client)


__all__ = ["ClientFor", "WorkspaceClients", "forget_workspace", "multi_workspace",
           "oauth_settings", "register", "slack_clients", "workspace_installed"]

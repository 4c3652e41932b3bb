"""``hardcost doctor``: is this installation able to work? One line per check, ``ok`` or
``FAIL: <what to do>``; exit status 1 when anything failed.

Checks, in order: the configuration loads; the database answers and its schema is the newest;
Slack accepts ``SLACK_BOT_TOKEN`` (``auth.test``; skipped in multi-workspace mode, where each
workspace's token comes from its install); each active firm's QuickBooks and Clio connections
answer a cheap call (the company's preferences; Clio's users) through the same clients as
imports; the QuickBooks webhook verifier is set when webhooks are used; a public path of
``PUBLIC_URL`` reaches hardcost when it is set. No line shows a token or a password."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

import requests
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from hardcost.bot.install import multi_workspace
from hardcost.sync.config import Settings, SettingsError, get_settings
from hardcost.sync.crypto import SecretDecryptError, SecretKeyError
from hardcost.sync.db import schema_state
from hardcost.sync.engine import DatabaseUrlError, make_engine, make_session_factory
from hardcost.sync.firms import build_importer
from hardcost.sync.http import ApiError, ReconnectRequired, RetryPolicy
from hardcost.sync.store import PROVIDER_NAMES, Connection, Firm

TIMEOUT = 10.0  # seconds for each HTTP check
RETRY = RetryPolicy(attempts=2, backoff=0.5, max_wait=5.0, throttle_wait=5.0)
"""A check answers within seconds: one retry, short waits (an import's policy waits minutes)."""


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    note: str = ""  # ok: what was seen; failed: what to do
    skipped: bool = False

    def line(self) -> str:
        if self.skipped:
            return f"{self.name}: skipped ({self.note})"
        if self.ok:
            return f"{self.name}: ok" + (f" ({self.note})" if self.note else "")
        return f"{self.name}: FAIL: {self.note}"


def _one_line(text: object, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


def run(out: TextIO) -> int:
    """Print every check's line on ``out``; 1 when any failed, else 0."""
    failed = False

    def report(check: Check) -> None:
        nonlocal failed
        failed = failed or not (check.ok or check.skipped)
        print(check.line(), file=out, flush=True)

    # Each check says in its own line what failed; the Slack SDK's own error lines about the
    # same failure would only repeat it (with a traceback-like noise) on stderr.
    logging.getLogger("slack_sdk").setLevel(logging.CRITICAL)

    try:
        get_settings.cache_clear()
        config = get_settings()
    except SettingsError as exc:
        report(Check("configuration", False, _one_line(exc) + " Fix it in the environment "
                     "file (see .env.example)."))
        return 1
    report(Check("configuration", True))

    sessions = _database(config, report)
    _slack(config, report)
    if sessions is not None:
        _firms(config, sessions, report)
        sessions.kw["bind"].dispose()
    _webhooks(config, report)
    _public_url(config, report)
    return 1 if failed else 0


def _database(config: Settings, report: Callable[[Check], None]
              ) -> sessionmaker[Session] | None:
    """The sessions of a reachable, up-to-date database; None (and a FAIL) otherwise."""
    try:
        engine = make_engine(config.resolved_database_url())
    except (DatabaseUrlError, SecretKeyError) as exc:
        report(Check("database", False, _one_line(exc)))
        return None
    shown = engine.url.render_as_string(hide_password=True)
    try:
        state = schema_state(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        cause = getattr(exc, "orig", None) or exc
        report(Check("database", False, f"{shown} cannot be used ({_one_line(cause, 200)}): "
                     "check that it is running and that DATABASE_URL is right."))
        return None
    if not state.at_head:
        engine.dispose()
        report(Check("database", False, f"the schema of {shown} is at "
                     f"{state.current or 'nothing'}, not {state.head}: run "
                     "`hardcost db upgrade`."))
        return None
    report(Check("database", True, f"{shown}, schema {state.current}"))
    return make_session_factory(engine)


def _slack(config: Settings, report: Callable[[Check], None]) -> None:
    name = "Slack"
    if multi_workspace(config):
        report(Check(name, True, "multi-workspace (OAuth) mode: each workspace's token comes "
                     "from its install; SLACK_BOT_TOKEN is not used", skipped=True))
        return
    if not config.slack_bot_token:
        report(Check(name, False, "set SLACK_BOT_TOKEN (one workspace) or SLACK_CLIENT_ID and "
                     "SLACK_CLIENT_SECRET (several)."))
        return
    client = WebClient(token=config.slack_bot_token, base_url=config.slack_api_url,
                       timeout=int(TIMEOUT))
    try:
        answer = client.auth_test()
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response is not None else None
        report(Check(name, False, f"Slack refused SLACK_BOT_TOKEN ({_one_line(error, 60)}): "
                     "copy the Bot User OAuth Token (xoxb-…) from the app's OAuth & "
                     "Permissions page again, or reinstall the app."))
        return
    except Exception as exc:  # noqa: BLE001 - network trouble of any kind: say it
        report(Check(name, False, f"Slack could not be reached at {config.slack_api_url} "
                     f"({_one_line(type(exc).__name__)}): check the network and "
                     "SLACK_API_URL."))
        return
    report(Check(name, True, f"workspace {_one_line(answer.get('team') or '?', 80)}, bot "
                 f"{_one_line(answer.get('user') or '?', 80)}"))


def _firms(config: Settings, sessions: sessionmaker[Session],
           report: Callable[[Check], None]) -> None:
    with sessions() as session:
        firms = list(session.execute(select(Firm.id, Firm.name).where(
            Firm.active.is_(True)).order_by(Firm.id)))
        connections = {(c.firm_id, c.provider): c.broken_at is not None
                       for c in session.scalars(select(Connection))}
    if not firms:
        report(Check("firms", True, "no firm yet: the first /hardcost connect in Slack makes "
                     "one", skipped=True))
        return
    for firm_id, _name in firms:
        for provider, service in PROVIDER_NAMES.items():
            name = f"firm {firm_id} {service}"
            broken = connections.get((firm_id, provider))
            if broken is None:
                report(Check(name, False, f"not connected: connect it in Slack "
                             f"(/hardcost connect {provider})."))
                continue
            if broken:
                report(Check(name, False, f"{service} refused the stored tokens: reconnect "
                             f"it in Slack (/hardcost connect {provider})."))
                continue
            report(_connection(config, sessions, firm_id, provider, name))


def _connection(config: Settings, sessions: sessionmaker[Session], firm_id: int,
                provider: str, name: str) -> Check:
    """One cheap call through the import's own client (it refreshes tokens as imports do)."""
    service = PROVIDER_NAMES[provider]
    try:
        importer = build_importer(sessions, firm_id, config, retry=RETRY)
        if provider == "quickbooks":
            importer.qbo.preferences()
        else:
            importer.clio.users()
    except ReconnectRequired as exc:
        return Check(name, False, f"{_one_line(exc)} In Slack: /hardcost "
                     f"connect {provider}.")
    except ApiError as exc:
        return Check(name, False, f"{_one_line(exc)} (if this lasts, see "
                     "docs/troubleshooting.md)")
    except (SecretDecryptError, SecretKeyError) as exc:
        return Check(name, False, _one_line(exc))
    except requests.RequestException as exc:
        return Check(name, False, f"{service} could not be reached "
                     f"({type(exc).__name__}): check the network.")
    except Exception as exc:  # noqa: BLE001 - one firm's trouble must not hide the others'
        return Check(name, False, f"the check broke off ({type(exc).__name__}: "
                     f"{_one_line(exc, 200)}); run `hardcost -v doctor` for the log.")
    return Check(name, True)


def _webhooks(config: Settings, report: Callable[[Check], None]) -> None:
    name = "QuickBooks webhooks"
    if config.qbo_webhook_verifier:
        report(Check(name, True, "QBO_WEBHOOK_VERIFIER is set"))
    else:
        report(Check(name, True, "QBO_WEBHOOK_VERIFIER is not set: webhooks are off and "
                     "changes come with scheduled runs", skipped=True))


PUBLIC_PROBE = "/oauth/clio/callback"
"""A path Clio's browser redirect must reach through the proxy (docs/operations.md, "Behind a
TLS reverse proxy"), so it is forwarded; ``/healthz`` is not public. Without parameters
hardcost answers it with its own page (a 4xx saying the link is not valid): any such page
shows that the public URL reaches this service."""


def _public_url(config: Settings, report: Callable[[Check], None]) -> None:
    name = "public URL"
    if "public_url" not in config.model_fields_set:
        report(Check(name, True, "PUBLIC_URL is not set", skipped=True))
        return
    url = config.public_url.rstrip("/") + PUBLIC_PROBE
    try:
        answer = requests.get(url, timeout=TIMEOUT, allow_redirects=False)
    except requests.RequestException as exc:
        report(Check(name, False, f"{url} did not answer ({type(exc).__name__}): check that "
                     "hardcost serve is running and that the proxy forwards PUBLIC_URL to it."))
        return
    if "<title>hardcost" not in answer.text[:2000]:
        report(Check(name, False, f"{url} answered {answer.status_code} but not with "
                     "hardcost's page: the proxy must forward the public paths to hardcost "
                     "serve (docs/operations.md, \"Behind a TLS reverse proxy\")."))
        return
    report(Check(name, True, f"{url} reaches hardcost"))

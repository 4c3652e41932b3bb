"""The real Bolt app served over HTTP, a sandbox Slack, and signed requests like Slack sends.

Used by the tests, the Slack benchmark and the demo: every request is signed with the signing
secret exactly as Slack signs it, and goes over loopback HTTP into the production WSGI stack.

``make_rig(..., transport="socket")`` is the same app in Socket Mode (``bot.socket_mode``,
as ``hardcost serve`` runs it with ``SLACK_APP_TOKEN``): commands, interactions and events go
to it as envelopes over the sandbox Slack's WebSocket (``sandbox/slack_socket.py``), and
:meth:`SlackRig.command` and the others answer the app's ack as a :class:`SocketAck` that reads
like the HTTP response (``status_code``, ``text``, ``json()``). The HTTP server still runs,
without the Slack paths, as in production.

:func:`make_rig` is single-workspace mode (one firm, one bot token); :func:`make_install_rig`
is multi-workspace mode, where workspaces install the app through ``/slack/install`` in a
browser-like :class:`requests.Session` and each becomes a firm.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import requests
from slack_bolt import App
from slack_sdk.http_retry.builtin_interval_calculators import (
    FixedValueRetryIntervalCalculator,
)
from slack_sdk.signature import SignatureVerifier

from hardcost.bot.app import build_app
from hardcost.bot.context import BotContext, make_web_client
from hardcost.bot.install import slack_clients
from hardcost.bot.oauth_routes import oauth_routes
from hardcost.bot.outbox import ClientFor
from hardcost.bot.socket_mode import SocketModeLink
from hardcost.bot.web import WebServer, WSGIApp, make_wsgi_app, serve_in_thread
from hardcost.bot.webhooks import webhook_routes
from hardcost.sandbox.server import RunningServer
from hardcost.sandbox.slack import SlackSandbox, SlackWorkspace
from hardcost.sync.engine import make_session_factory
from hardcost.sync.store import Firm as FirmRow
from hardcost.sync.store import FirmSettings

if TYPE_CHECKING:  # websockets, under the sandbox's Socket Mode, is a dev dependency only:
    # ``hardcost demo`` (HTTP) runs on a plain install
    from hardcost.sandbox.slack_socket import Ack, SocketModeSandbox

SIGNING_SECRET = "sandbox-signing-secret"
TEAM = "T0001"
TRANSPORTS = ("http", "socket")
SOCKET_PING_INTERVAL = 0.5
"""The app's pings in the rig: a dropped socket is noticed within about 2.5 s (four intervals
without a pong), not the 40 s of the production setting."""

SLACK_TOKEN = re.compile(r"<(?:[@#!]|https?://)[^<>]*>")
"""Slack's own tokens in a command's text (``<@U…>``, ``<#C…|…>``, ``<!here>``,
``<https://…|…>``): their ``<`` and ``>`` reach the app as they are."""


def slack_escape(text: str) -> str:
    """A slash command's text as Slack sends it: every ``&`` as ``&amp;``, and ``<``, ``>`` as
    ``&lt;``, ``&gt;`` except where they delimit one of Slack's tokens
    (https://api.slack.com/interactivity/slash-commands)."""
    parts: list[str] = []
    start = 0
    for token in SLACK_TOKEN.finditer(text):
        parts.append(_escape_typed(text[start:token.start()]))
        parts.append(token.group().replace("&", "&amp;"))
        start = token.end()
    parts.append(_escape_typed(text[start:]))
    return "".join(parts)


def _escape_typed(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True)
class SocketAck:
    """The app's ack of an envelope, read like the HTTP response to the same request: 200 and
    the ack's payload as the body; 408 when no ack came (Slack shows the person an error)."""

    ack: Ack | None

    @property
    def status_code(self) -> int:
        return 200 if self.ack is not None else 408

    @property
    def text(self) -> str:
        payload = self.ack.payload if self.ack is not None else None
        if not payload:
            return ""
        if set(payload) == {"text"}:
            return str(payload["text"])
        return json.dumps(payload, ensure_ascii=False)

    def json(self) -> Any:
        return self.ack.payload if self.ack is not None else None


@dataclass
class SlackRig:
    firm: Any  # tests.firmkit.Firm or anything with .world/.sessions/.id
    slack: SlackSandbox
    ws: SlackWorkspace
    slack_server: RunningServer
    app: App
    ctx: BotContext
    web: WebServer
    channel: str
    admin: str
    staff: str
    _timestamp: Callable[[], float] = field(default=time.time)
    socket: SocketModeSandbox | None = None
    """Socket Mode: the sandbox Slack's WebSocket side; None over HTTP."""
    link: SocketModeLink | None = None
    """Socket Mode: the app's connection."""

    @property
    def transport(self) -> str:
        return "socket" if self.socket is not None else "http"

    def stop(self) -> None:
        # What the app still does (a run, its summary, a delivery) ends before the test's
        # database goes: the next test empties the same PostgreSQL tables.
        self.ctx.drain(60)
        if self.link is not None:
            self.link.close()
        if self.socket is not None:
            self.socket.stop()
        self.web.stop()

    # -- requests as Slack sends them ----------------------------------------------------------

    def post(self, body: str, content_type: str, *, secret: str = SIGNING_SECRET,
             timestamp: float | None = None, signature: str | None = None) -> requests.Response:
        ts = str(int(timestamp if timestamp is not None else self._timestamp()))
        sig = signature or SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
        return requests.post(f"{self.web.url}/slack/events", data=body.encode(), timeout=10,
                             headers={"Content-Type": content_type,
                                      "X-Slack-Request-Timestamp": ts,
                                      "X-Slack-Signature": sig})

    def _deliver(self, kind: str, payload: dict[str, Any], body: str,
                 content_type: str) -> requests.Response | SocketAck:
        """Over HTTP ``body`` signed; in Socket Mode ``payload`` in a ``kind`` envelope."""
        if self.socket is None:
            return self.post(body, content_type)
        return SocketAck(self.socket.deliver(kind, payload))

    def command_body(self, text: str, user: str | None = None, team: str | None = None) -> str:
        return urlencode(self.command_fields(text, user, team))

    def command_fields(self, text: str, user: str | None = None,
                       team: str | None = None) -> dict[str, str]:
        """A slash command's fields: the form Slack posts, or a ``slash_commands`` payload.
        ``text`` is as the person typed it; it is sent escaped as Slack sends it
        (:func:`slack_escape`)."""
        user = user or self.admin
        team = team or self.ws.team_id
        return {
            "token": "legacy", "team_id": team, "team_domain": "sandbox",
            "channel_id": self.channel, "channel_name": "costs", "user_id": user,
            "user_name": user, "command": "/hardcost", "text": slack_escape(text),
            "api_app_id": "A0APP",
            "response_url": self.slack.response_url(team, user_id=user,
                                                    channel_id=self.channel),
            "trigger_id": self.ws.trigger_id()}

    def command(self, text: str, user: str | None = None,
                team: str | None = None) -> Any:
        fields = self.command_fields(text, user, team)
        return self._deliver("slash_commands", fields, urlencode(fields),
                             "application/x-www-form-urlencoded")

    def interaction(self, payload: dict[str, Any], **kwargs: Any) -> Any:
        """An interaction; ``kwargs`` (a wrong secret, an old timestamp) sign it over HTTP."""
        body = urlencode({"payload": json.dumps(payload)})
        if kwargs or self.socket is None:
            return self.post(body, "application/x-www-form-urlencoded", **kwargs)
        return self._deliver("interactive", payload, body, "application/x-www-form-urlencoded")

    def click(self, message: dict[str, Any], action_id: str, *, value: str | None = None,
              selected: str | None = None, user: str | None = None, team: str | None = None,
              block_id: str = "b", user_team: str | None = None) -> Any:
        """A click as Slack sends it; ``user_team``: the clicker's own workspace, when it is
        not the channel's (a channel shared with another organisation)."""
        return self.interaction(self.click_payload(
            message, action_id, value=value, selected=selected, user=user, team=team,
            block_id=block_id, user_team=user_team))

    def click_payload(self, message: dict[str, Any], action_id: str, *,
                      value: str | None = None, selected: str | None = None,
                      user: str | None = None, team: str | None = None, block_id: str = "b",
                      user_team: str | None = None) -> dict[str, Any]:
        """The ``block_actions`` payload of a click (see :meth:`click`)."""
        user = user or self.staff
        team = team or self.ws.team_id
        action: dict[str, Any] = {"action_id": action_id, "block_id": block_id,
                                  "type": "static_select" if selected else "button",
                                  "action_ts": str(time.time())}
        if selected is not None:
            action["selected_option"] = {"value": selected,
                                         "text": {"type": "plain_text", "text": selected}}
        else:
            action["value"] = value
        return {
            "type": "block_actions", "team": {"id": team, "domain": "sandbox"},
            "user": {"id": user, "team_id": user_team or team}, "api_app_id": "A0APP",
            "trigger_id": self.ws.trigger_id(),
            "container": {"type": "message", "message_ts": message["ts"],
                          "channel_id": message["channel"],
                          "is_ephemeral": message.get("ephemeral_user") is not None},
            "channel": {"id": message["channel"]}, "message": {
                "ts": message["ts"], "text": message["text"], "blocks": message["blocks"]},
            "response_url": self.slack.response_url(team, user_id=user,
                                                    channel_id=message["channel"],
                                                    message_ts=message["ts"]),
            "actions": [action]}

    def options(self, block_id: str, action_id: str, value: str,
                user: str | None = None) -> Any:
        return self.interaction({
            "type": "block_suggestion", "team": {"id": self.ws.team_id},
            "user": {"id": user or self.staff, "team_id": self.ws.team_id}, "api_app_id": "A0APP",
            "action_id": action_id,
            "block_id": block_id, "value": value,
            "container": {"type": "message", "channel_id": self.channel}})

    def submit_view(self, view: dict[str, Any], values: dict[str, Any],
                    user: str | None = None) -> Any:
        return self.interaction({
            "type": "view_submission", "team": {"id": self.ws.team_id},
            "user": {"id": user or self.admin, "team_id": self.ws.team_id},
            "api_app_id": "A0APP", "trigger_id": self.ws.trigger_id(),
            "view": {**view, "id": view.get("id", "V1"), "state": {"values": values}}})

    def event(self, event: dict[str, Any]) -> Any:
        callback = {"type": "event_callback", "team_id": self.ws.team_id,
                    "api_app_id": "A0APP", "event": event, "event_id": f"Ev{time.time_ns()}",
                    "event_time": int(time.time())}
        return self._deliver("events_api", callback, json.dumps(callback), "application/json")

    # -- what Slack shows ----------------------------------------------------------------------

    def channel_messages(self) -> list[dict[str, Any]]:
        return self.ws.channel_messages(self.channel)

    def replies_to(self, user: str) -> list[dict[str, Any]]:
        return [m for m in self.ws.messages if m.get("ephemeral_user") == user]

    def settings_form(self) -> dict[str, Any]:
        """The settings modal once filled in (``/hardcost settings`` first opens a "Reading
        your QuickBooks accounts…" placeholder, then updates it with the form)."""
        return wait_for(lambda: next((v for v in self.ws.views.values()
                                      if '"block_id": "accounts"' in json.dumps(v)), None),
                        what="the filled settings modal")

    def prompts(self) -> list[dict[str, Any]]:
        return [m for m in self.channel_messages() if _has_action(m, "hc_not_client_cost")]


def _has_action(message: dict[str, Any], action_id: str) -> bool:
    return action_id in json.dumps(message.get("blocks") or [])


def button_value(message: dict[str, Any], label: str) -> str:
    """The value of the button for ``label`` in a message: a section's accessory (its text
    names the choice) or an actions element whose text starts with ``label``."""
    for block in message["blocks"]:
        accessory = block.get("accessory") or {}
        if "value" in accessory and label in json.dumps(block.get("text") or ""):
            return str(accessory["value"])
        for element in block.get("elements", []):
            text = element.get("text")
            if isinstance(text, dict) and str(text.get("text", "")).startswith(label) \
                    and "value" in element:
                return str(element["value"])
    raise AssertionError(f"no button {label!r}")


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    """Poll until ``predicate()`` is truthy: lazy listeners finish after the ack."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.02)


def make_rig(firm: Any, slack: SlackSandbox, slack_server: RunningServer,
             transport: str = "http") -> SlackRig:
    """The app for ``firm`` over ``transport``: ``"http"`` (signed requests to
    ``/slack/events``) or ``"socket"`` (Socket Mode, the sandbox Slack's WebSocket)."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport is one of {TRANSPORTS}, not {transport!r}")
    ws = slack.add_workspace(TEAM)
    channel = ws.add_channel("costs")["id"]
    admin = ws.add_user("Ada Admin", is_admin=True)["id"]
    staff = ws.add_user("Sam Staff")["id"]
    with firm.sessions() as session:
        row = session.get(FirmRow, firm.id)
        settings = session.get(FirmSettings, firm.id)
        assert row is not None and settings is not None
        row.slack_team_id = TEAM
        settings.slack_channel_id = channel
        session.commit()
    world = firm.world
    ctx = BotContext(sessions=firm.sessions, config=world.settings(),
                     importer_for=lambda firm_id: world.importer(firm.sessions, firm_id),
                     sandbox_links=True, clock=world.clock.now)
    client = make_web_client(ws.bot_token, f"{slack_server.url}/api/")
    for handler in client.retry_handlers:
        handler.interval_calculator = FixedValueRetryIntervalCalculator(0.01)
    app = build_app(ctx, client=client, signing_secret=SIGNING_SECRET)
    ctx.slack_clients = client  # long runs post their progress, as under ``hardcost serve``
    routes = {**oauth_routes(ctx, client), **webhook_routes(ctx)}
    socket: SocketModeSandbox | None = None
    link: SocketModeLink | None = None
    if transport == "socket":
        from hardcost.sandbox.slack_socket import SocketModeSandbox  # see TYPE_CHECKING above

        socket = slack.socket_mode = slack.socket_mode or SocketModeSandbox()
        link = SocketModeLink(app, slack.app_token, ping_interval=SOCKET_PING_INTERVAL)
        link.connect()
        socket.wait_connected()
        wait_for(lambda: link.health().last_message_at, what="the app reading Slack's hello")
    web = serve_in_thread(make_wsgi_app(app, firm.sessions, routes=routes,
                                        signing_secret=SIGNING_SECRET, socket_mode=link))
    # OAuth redirects come back to this server: it is the app's PUBLIC_URL.
    ctx.config = ctx.config.model_copy(update={"public_url": web.url})
    return SlackRig(firm, slack, ws, slack_server, app, ctx, web, channel, admin, staff,
                    socket=socket, link=link)


# --- multi-workspace mode ---------------------------------------------------------------------


_LOOPBACK_POLICY = DefaultCookiePolicy(secure_protocols=("https", "wss", "http"))


class _Browser(requests.Session):
    """Keeps cookies across redirects and, like browsers on loopback (a secure context), sends
    ``Secure`` cookies over plain http (requests alone would not)."""

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        prepared = super().prepare_request(request)
        jar = prepared._cookies  # type: ignore[attr-defined]  # copied along redirects
        jar.set_policy(_LOOPBACK_POLICY)
        prepared.headers.pop("Cookie", None)
        prepared.prepare_cookies(jar)
        return prepared


def browser() -> requests.Session:
    """A browser for the install flow (see :class:`_Browser`)."""
    return _Browser()


@dataclass
class InstallRig:
    """The app in multi-workspace mode over HTTP, with the sandbox Slack as its Slack."""

    world: Any  # sandbox.world.SandboxWorld
    sessions: Any  # sessionmaker[Session]
    slack: SlackSandbox
    slack_server: RunningServer
    app: App
    ctx: BotContext
    web: WebServer
    clients: ClientFor

    def add_workspace(self, team_id: str, name: str) -> SlackRig:
        """A Slack workspace (a #costs channel, an admin, a staff member), not installed yet;
        the returned rig sends that workspace's signed requests."""
        ws = self.slack.add_workspace(team_id, name=name)
        channel = ws.add_channel("costs")["id"]
        admin = ws.add_user(f"{name} Admin", is_admin=True)["id"]
        staff = ws.add_user(f"{name} Staff")["id"]
        return SlackRig(None, self.slack, ws, self.slack_server, self.app, self.ctx, self.web,
                        channel, admin, staff)

    def install(self, team_id: str, client: requests.Session | None = None) -> requests.Response:
        """Open ``/slack/install`` in a browser and follow Slack's consent screen back."""
        return (client or browser()).get(f"{self.web.url}/slack/install",
                                         params={"team": team_id}, timeout=10)


class _Late:
    """A WSGI app set after the server is up (the app's redirect URL needs the server's port)."""

    app: WSGIApp | None = None

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        assert self.app is not None
        return self.app(environ, start_response)


def make_install_rig(world: Any, engine: Any, slack: SlackSandbox,
                     slack_server: RunningServer) -> InstallRig:
    """The real app in multi-workspace mode (``SLACK_CLIENT_ID``/``SECRET`` set, the sandbox
    Slack as ``SLACK_API_URL``) on ``engine``'s database."""
    sessions = make_session_factory(engine)
    late = _Late()
    web = serve_in_thread(late)
    config = world.settings().model_copy(update={
        "public_url": web.url, "slack_client_id": slack.client_id,
        "slack_client_secret": slack.client_secret, "slack_signing_secret": SIGNING_SECRET,
        "slack_api_url": f"{slack_server.url}/api/"})
    ctx = BotContext(sessions=sessions, config=config,
                     importer_for=lambda firm_id: world.importer(sessions, firm_id),
                     sandbox_links=True, clock=world.clock.now)
    client = make_web_client(None, config.slack_api_url)
    for handler in client.retry_handlers:
        handler.interval_calculator = FixedValueRetryIntervalCalculator(0.01)
    app = build_app(ctx, client=client, signing_secret=SIGNING_SECRET, engine=engine)
    clients = slack_clients(ctx, app)
    ctx.slack_clients = clients
    late.app = make_wsgi_app(app, sessions,
                             routes={**oauth_routes(ctx, clients), **webhook_routes(ctx)},
                             signing_secret=SIGNING_SECRET)
    return InstallRig(world, sessions, slack, slack_server, app, ctx, web, clients)

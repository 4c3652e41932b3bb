"""A fake Slack Web API serving real HTTP.

``slack_sdk.WebClient(token=ws.bot_token, base_url=f"{url}/api/")`` talks to it unchanged: every
method is ``POST /api/<method>`` (GET with query parameters works too), with the token in
``Authorization: Bearer`` (or a ``token`` parameter), the arguments form-encoded (``blocks`` /
``view`` then being JSON strings) or a JSON body. Answers are HTTP 200 with ``{"ok": true, ...}``
or ``{"ok": false, "error": "..."}`` like Slack (as Slack's Web API documentation says).

Tests seed workspaces, users and channels through :class:`SlackSandbox` / :class:`SlackWorkspace`
and read back what the app posted (``messages``, ``views_opened``, ``home_views``). A workspace's
bot token sees only that workspace. Rate limits and outages happen only when a test arms a fault
(:func:`rate_limited_fault`, :func:`server_error_fault`).

Where the sandbox follows Slack rather than the obvious guess:

- a private channel the bot is not in is invisible to it: ``channel_not_found`` (as Slack
  answers), not ``not_in_channel``; ``not_in_channel`` is what a *public* channel the bot is not
  in gives when the token lacks ``chat:write.public`` (see ``SlackWorkspace.scopes``);
- a trigger id is single-use and lives 3 s: unknown → ``invalid_trigger_id``, reused →
  ``exchanged_trigger_id``, older than 3 s (sandbox clock) → ``expired_trigger_id``;
- ``blocks`` that are not JSON or not an array → ``invalid_blocks_format``; an array breaking
  Block Kit rules (no ``type``, > 50 blocks, a limit Slack documents) → ``invalid_blocks``
  with ``response_metadata.messages`` naming the JSON pointer;
- a ``thread_ts`` naming no message → ``invalid_thread_ts`` (unconfirmed); naming a reply → the
  reply joins the reply's parent thread;
- a user id as ``channel`` posts to the bot's DM with that user (a ``D...`` channel).

Files (``files_upload_v2``: three steps, each checked like Slack, with ``files:write``):
``files.getUploadURLExternal`` (``filename``, ``length`` in bytes) answers an ``upload_url`` on
the sandbox itself (``POST /upload/v1/<key>``, raw bytes or a multipart ``file``; an unknown URL
is a 404, a body whose size is not ``length`` a 400 ``length_mismatch``, a second upload a 400)
and a ``file_id``; ``files.completeUploadExternal`` (``files`` = a JSON array of ``{id,
title}``, ``channel_id`` and/or ``channels`` = channel or user ids, ``initial_comment``,
``thread_ts``) shares the files: each target gets a message carrying them (``files``), the
workspace keeps their bytes (``SlackWorkspace.files``). A file id never issued to the workspace,
not uploaded yet or already completed → ``file_not_found``; a channel as for
``chat.postMessage`` (``channel_not_found``, ``not_in_channel``, ``is_archived``). Error names
for a size mismatch and an unfinished upload are unconfirmed.

Socket Mode: ``apps.connections.open`` takes the app-level token (``SlackSandbox.app_token``;
a bot token → ``not_allowed_token_type``, another → ``invalid_auth``) and answers a WebSocket
URL of ``SlackSandbox.socket_mode`` (``sandbox/slack_socket.py``), which a test sets.

Installing the app (OAuth v2, multi-workspace mode): ``GET /oauth/v2/authorize`` is Slack's
consent screen, approved at once for the workspace named by the ``team`` query parameter (else
``SlackSandbox.install_team``, else the only workspace) unless ``install_decision`` is
``"deny"``; it redirects to ``redirect_uri`` with a ``code`` (single-use, 10 minutes) and the
``state``. ``oauth.v2.access`` checks the client id and secret (HTTP Basic or form) and, when
the consent had a ``redirect_uri``, that the same one is sent again; it answers with the
workspace's bot token (re-enabled if it had been revoked by an uninstall), granting exactly the
bot scopes asked for.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import mimetypes
import re
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import urlencode

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from hardcost.sandbox.clock import SandboxClock
from hardcost.sandbox.faults import CallLog, Fault, FaultPlan, with_faults

__all__ = [
    "DEFAULT_SCOPES",
    "SlackSandbox",
    "SlackWorkspace",
    "rate_limited_fault",
    "server_error_fault",
]

JSON_TYPE = "application/json; charset=utf-8"
TRIGGER_SECONDS = 3.0
MAX_TEXT = 40_000
MAX_BLOCK_TEXT = 13_000
MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100

DEFAULT_SCOPES = frozenset({
    "commands", "chat:write", "chat:write.public", "channels:read", "channels:join",
    "files:write", "groups:read", "im:read", "im:write", "mpim:read", "users:read",
})
"""What a workspace's bot token is granted unless the test narrows ``SlackWorkspace.scopes``."""

_URLS = Map([Rule("/api/<method>", endpoint="api", methods=["GET", "POST"]),
             Rule("/response/<key>", endpoint="response", methods=["POST"]),
             Rule("/upload/v1/<key>", endpoint="upload", methods=["POST"]),
             Rule("/oauth/v2/authorize", endpoint="authorize", methods=["GET"])])

CODE_SECONDS = 600.0
SANDBOX_CLIENT_ID = "sandbox-slack-client"
SANDBOX_CLIENT_SECRET = "sandbox-slack-secret"
SANDBOX_APP_TOKEN = "xapp-1-A0HARDCOST-1-sandbox"
"""The app-level token (``connections:write``) that ``apps.connections.open`` takes."""

_METHOD_SCOPE = {
    "chat.postMessage": "chat:write", "chat.postEphemeral": "chat:write",
    "chat.update": "chat:write", "users.info": "users:read",
    "conversations.join": "channels:join",
    "files.getUploadURLExternal": "files:write", "files.completeUploadExternal": "files:write",
}
MAX_FILE_BYTES = 1024 ** 3  # Slack takes files up to 1 GB
_TYPE_SCOPE = {"public_channel": "channels:read", "private_channel": "groups:read",
               "im": "im:read", "mpim": "mpim:read"}


# --- faults tests arm ---------------------------------------------------------------------------


def _method_path(method: str | None) -> str:
    return r"^/api/" + (re.escape(method) + "$" if method else "")


def rate_limited_fault(retry_after: int = 1, times: int = 1, method: str | None = None) -> Fault:
    """HTTP 429 ``ratelimited`` with ``Retry-After`` (seconds) for ``method`` (None = any)."""
    return Fault(path=_method_path(method), status=429,
                 body=json.dumps({"ok": False, "error": "ratelimited"}),
                 headers={"Retry-After": str(retry_after)}, content_type=JSON_TYPE, times=times)


def server_error_fault(status: int = 503, times: int = 1, method: str | None = None) -> Fault:
    """An HTTP 5xx (``ServerErrorRetryHandler`` retries 500 and 503) for ``method``."""
    return Fault(path=_method_path(method), status=status,
                 body=json.dumps({"ok": False, "error": "fatal_error"}),
                 content_type=JSON_TYPE, times=times)


# --- helpers ------------------------------------------------------------------------------------


class _Refusal(Exception):
    """``{"ok": false, "error": error, **extra}``."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type=JSON_TYPE)


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true")


def _decoded(value: Any) -> Any:
    """A JSON-valued argument: form bodies carry it as a string, JSON bodies usually not."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return _Undecodable(value)
    return value


@dataclass(frozen=True)
class _Undecodable:
    raw: str


def _text_of(obj: Any) -> str | None:
    """The text of a text object (or a bare string)."""
    if isinstance(obj, dict):
        text = obj.get("text")
        return text if isinstance(text, str) else None
    return obj if isinstance(obj, str) else None


def _block_text_total(value: Any) -> int:
    """Total length of every string under a ``text`` key (how ``msg_blocks_too_long`` counts)."""
    if isinstance(value, list):
        return sum(_block_text_total(item) for item in value)
    if isinstance(value, dict):
        total = 0
        for key, item in value.items():
            if key == "text" and isinstance(item, str):
                total += len(item)
            else:
                total += _block_text_total(item)
        return total
    return 0


def _limit_errors(value: Any, pointer: str) -> Iterable[str]:
    """Block Kit limits (Slack's documentation) broken anywhere inside ``value``."""

    def too_long(text: Any, limit: int, where: str) -> Iterable[str]:
        if isinstance(text, str) and len(text) > limit:
            yield f"[ERROR] must be less than {limit + 1} characters [json-pointer:{where}]"

    def too_many(items: Any, limit: int, where: str) -> Iterable[str]:
        if isinstance(items, list) and len(items) > limit:
            yield f"[ERROR] no more than {limit} items allowed [json-pointer:{where}]"

    if isinstance(value, list):
        for index, item in enumerate(value):
            yield from _limit_errors(item, f"{pointer}/{index}")
        return
    if not isinstance(value, dict):
        return
    kind = value.get("type")
    yield from too_long(value.get("block_id"), 255, f"{pointer}/block_id")
    yield from too_long(value.get("action_id"), 255, f"{pointer}/action_id")
    if kind == "section":
        yield from too_long(_text_of(value.get("text")), 3000, f"{pointer}/text/text")
        yield from too_many(value.get("fields"), 10, f"{pointer}/fields")
        for index, item in enumerate(value.get("fields") or []):
            yield from too_long(_text_of(item), 2000, f"{pointer}/fields/{index}/text")
    elif kind == "header":
        yield from too_long(_text_of(value.get("text")), 150, f"{pointer}/text/text")
    elif kind == "actions":
        yield from too_many(value.get("elements"), 25, f"{pointer}/elements")
    elif kind == "context":
        yield from too_many(value.get("elements"), 10, f"{pointer}/elements")
    elif kind == "button":
        yield from too_long(_text_of(value.get("text")), 75, f"{pointer}/text/text")
        yield from too_long(value.get("value"), 2000, f"{pointer}/value")
    elif kind == "overflow":
        yield from too_many(value.get("options"), 5, f"{pointer}/options")
    elif kind in ("static_select", "multi_static_select", "radio_buttons", "checkboxes"):
        yield from too_many(value.get("options"), 100, f"{pointer}/options")
    if "value" in value and "text" in value and kind is None:  # an option object
        yield from too_long(_text_of(value.get("text")), 75, f"{pointer}/text/text")
        yield from too_long(value.get("value"), 150, f"{pointer}/value")
    if kind is None and "confirm" in value and "deny" in value:  # a confirmation dialog
        yield from too_long(_text_of(value.get("title")), 100, f"{pointer}/title/text")
        yield from too_long(_text_of(value.get("text")), 300, f"{pointer}/text/text")
    for key, item in value.items():
        if isinstance(item, dict | list):
            yield from _limit_errors(item, f"{pointer}/{key}")


def _block_errors(blocks: list[Any], limit: int, pointer: str) -> list[str]:
    errors = [f"[ERROR] no more than {limit} items allowed [json-pointer:{pointer}]"] \
        if len(blocks) > limit else []
    for index, block in enumerate(blocks):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            errors.append(f"[ERROR] missing required field: type [json-pointer:{pointer}/{index}]")
    return errors or list(_limit_errors(blocks, pointer))


# --- a workspace --------------------------------------------------------------------------------


class SlackWorkspace:
    """One Slack team the app is installed in: its users, channels, and what the bot did."""

    def __init__(self, sandbox: SlackSandbox, team_id: str, name: str, bot_token: str) -> None:
        self._sandbox = sandbox
        self._lock = sandbox._lock
        self.team_id = team_id
        self.name = name
        self.domain = re.sub(r"[^a-z0-9]+", "", name.lower()) or team_id.lower()
        self.bot_token = bot_token
        suffix = team_id[1:] if team_id[:1] == "T" else team_id
        self._suffix = suffix
        self.bot_user_id = f"U0BOT{suffix}"
        self.bot_id = f"B0BOT{suffix}"
        self.app_id = "A0HARDCOST"
        self.bot_name = "hardcost"
        self.scopes: set[str] = set(DEFAULT_SCOPES)
        self.token_revoked = False
        self.users: dict[str, dict[str, Any]] = {}
        self.channels: dict[str, dict[str, Any]] = {}
        self.messages: list[dict[str, Any]] = []
        self.views_opened: list[dict[str, Any]] = []
        self.home_views: dict[str, dict[str, Any]] = {}
        self.views: dict[str, dict[str, Any]] = {}
        """Every view by id, current version (modals opened, Home tabs published)."""
        self.files: dict[str, dict[str, Any]] = {}
        """Every file shared (``files.completeUploadExternal``) by id: its ``data`` (bytes),
        ``name``, ``title``, ``channels`` it was shared in, ``initial_comment``…"""
        self._edited: dict[tuple[str, str], str] = {}
        self.edits: list[dict[str, Any]] = []  # every chat.update, in order (what it made)
        self._user_numbers = itertools.count(1)
        self._channel_numbers = itertools.count(1)
        self._user(self.bot_user_id, self.bot_name, is_bot=True)

    # --- seeding ------------------------------------------------------------------------------

    def add_user(self, name: str, *, is_admin: bool = False, is_owner: bool = False,
                 user_id: str | None = None, deleted: bool = False,
                 email: str | None = None) -> dict[str, Any]:
        """A member; returns the ``users.info`` ``user`` object (a copy)."""
        with self._lock:
            user_id = user_id or f"U{self._suffix}{next(self._user_numbers):04d}"
            if user_id in self.users:
                raise ValueError(f"user {user_id} already exists")
            return dict(self._user(user_id, name, is_admin=is_admin, is_owner=is_owner,
                                   deleted=deleted, email=email))

    def _user(self, user_id: str, name: str, *, is_admin: bool = False, is_owner: bool = False,
              deleted: bool = False, is_bot: bool = False,
              email: str | None = None) -> dict[str, Any]:
        handle = re.sub(r"[^a-z0-9._-]+", ".", name.lower()).strip(".") or user_id.lower()
        profile: dict[str, Any] = {"real_name": name, "display_name": handle,
                                   "real_name_normalized": name, "display_name_normalized": handle}
        if email:
            profile["email"] = email
        if is_bot:
            profile["bot_id"] = self.bot_id
        user = {"id": user_id, "team_id": self.team_id, "name": handle, "real_name": name,
                "deleted": deleted, "is_admin": is_admin or is_owner, "is_owner": is_owner,
                "is_primary_owner": False, "is_bot": is_bot, "is_app_user": False,
                "tz": "America/New_York", "profile": profile}
        self.users[user_id] = user
        return user

    def add_channel(self, name: str, *, channel_id: str | None = None, is_private: bool = False,
                    bot_is_member: bool = True, is_archived: bool = False) -> dict[str, Any]:
        """A channel; returns its ``conversations.info`` ``channel`` object (a copy)."""
        with self._lock:
            channel_id = channel_id or f"C{self._suffix}{next(self._channel_numbers):04d}"
            if channel_id in self.channels:
                raise ValueError(f"channel {channel_id} already exists")
            if any(c["name"] == name for c in self.channels.values() if not c["is_im"]):
                raise ValueError(f"channel #{name} already exists")
            self.channels[channel_id] = {
                "id": channel_id, "name": name, "is_private": is_private, "is_im": False,
                "is_archived": is_archived, "is_member": bot_is_member, "user": None,
                "created": int(self._sandbox.clock.timestamp())}
            return self._conversation(self.channels[channel_id])

    def archive(self, channel: str) -> None:
        with self._lock:
            self._resolve(channel)["is_archived"] = True

    def revoke_token(self) -> None:
        """The app was uninstalled: its token now gets ``token_revoked``."""
        with self._lock:
            self.token_revoked = True

    def trigger_id(self) -> str:
        """A fresh trigger id, as Slack puts in a slash command or an interaction payload."""
        return self._sandbox._issue_trigger(self.team_id)

    # --- reading back -------------------------------------------------------------------------

    def message(self, channel: str, ts: str) -> dict[str, Any] | None:
        """The message ``ts`` in ``channel`` as it is now (after any ``chat.update``)."""
        with self._lock:
            channel_id = self._channel_id(channel)
            return next((m for m in self.messages
                         if m["channel"] == channel_id and m["ts"] == ts), None)

    def channel_messages(self, channel: str, *, top_level_only: bool = True,
                         include_ephemeral: bool = False) -> list[dict[str, Any]]:
        """The channel's history, oldest first; ephemeral messages only if asked for."""
        with self._lock:
            channel_id = self._channel_id(channel)
            return [m for m in self.messages if m["channel"] == channel_id
                    and (include_ephemeral or m["ephemeral_user"] is None)
                    and not (top_level_only and m["thread_ts"] not in (None, m["ts"]))]

    def thread(self, channel: str, ts: str) -> list[dict[str, Any]]:
        """Like ``conversations.replies``: the parent first, then its replies, oldest first."""
        with self._lock:
            channel_id = self._channel_id(channel)
            return [m for m in self.messages if m["channel"] == channel_id
                    and m["ephemeral_user"] is None and (m["ts"] == ts or m["thread_ts"] == ts)]

    def ephemeral_messages(self, user: str | None = None) -> list[dict[str, Any]]:
        """Ephemeral messages (to ``user``, or to anyone), oldest first."""
        with self._lock:
            return [m for m in self.messages if m["ephemeral_user"] is not None
                    and (user is None or m["ephemeral_user"] == user)]

    def view(self, view_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self.views.get(view_id)

    def files_in(self, channel: str) -> list[dict[str, Any]]:
        """The files shared in ``channel`` (an id, ``#name``, or a user's DM), oldest first."""
        with self._lock:
            channel_id = self._channel_id(channel)
            return [f for f in self.files.values() if channel_id in f["channels"]]

    # --- lookups the API uses -----------------------------------------------------------------

    def _channel_id(self, channel: str) -> str:
        """Best effort for the test helpers: an id, ``#name``, ``name`` or a user's DM."""
        try:
            return str(self._resolve(channel, visible_only=False)["id"])
        except _Refusal:
            return channel

    def _resolve(self, channel: Any, *, visible_only: bool = True,
                 open_dm: bool = False) -> dict[str, Any]:
        """The channel record ``channel`` (id, ``#name``, ``name``, user id) names, as the bot
        sees it: private channels it is not in do not exist for it."""
        if not isinstance(channel, str) or not channel:
            raise _Refusal("channel_not_found")
        record = self.channels.get(channel)
        if record is None:
            name = channel[1:] if channel.startswith("#") else channel
            record = next((c for c in self.channels.values()
                           if not c["is_im"] and c["name"] == name), None)
        if record is None and channel in self.users and not self.users[channel]["deleted"] \
                and channel != self.bot_user_id:
            record = self._dm(channel, create=open_dm)
        if record is None or (visible_only and record["is_private"] and not record["is_member"]):
            raise _Refusal("channel_not_found")
        return record

    def _dm(self, user_id: str, *, create: bool) -> dict[str, Any] | None:
        dm_id = f"D{user_id[1:]}"
        if dm_id not in self.channels and create:
            self.channels[dm_id] = {
                "id": dm_id, "name": dm_id, "is_private": True, "is_im": True,
                "is_archived": False, "is_member": True, "user": user_id,
                "created": int(self._sandbox.clock.timestamp())}
        return self.channels.get(dm_id)

    def _conversation(self, record: dict[str, Any]) -> dict[str, Any]:
        """The Slack conversation object of a channel record."""
        if record["is_im"]:
            return {"id": record["id"], "created": record["created"], "is_im": True,
                    "is_org_shared": False, "user": record["user"], "is_user_deleted": False,
                    "context_team_id": self.team_id}
        return {"id": record["id"], "name": record["name"], "name_normalized": record["name"],
                "is_channel": True, "is_group": False, "is_im": False, "is_mpim": False,
                "is_private": record["is_private"], "is_archived": record["is_archived"],
                "is_general": False, "is_shared": False, "is_org_shared": False,
                "is_ext_shared": False, "is_member": record["is_member"],
                "created": record["created"], "context_team_id": self.team_id}


# --- the service --------------------------------------------------------------------------------


@dataclass
class _Trigger:
    team_id: str
    issued: float
    exchanged: bool = False


@dataclass
class _Upload:
    team_id: str
    file_id: str
    filename: str
    length: int
    alt_txt: str | None
    snippet_type: str | None
    data: bytes | None = None


@dataclass
class _InstallCode:
    team_id: str
    scopes: tuple[str, ...]
    redirect_uri: str | None
    installer: str
    issued: float
    used: bool = False


class SlackSandbox:
    """A WSGI app faking the Slack Web API for any number of workspaces."""

    def __init__(self, *, clock: SandboxClock | None = None) -> None:
        self.clock = clock or SandboxClock()
        self.faults = FaultPlan()
        self.calls = CallLog()
        self._lock = threading.RLock()
        self._workspaces: dict[str, SlackWorkspace] = {}
        self._by_token: dict[str, SlackWorkspace] = {}
        self._triggers: dict[str, _Trigger] = {}
        self._trigger_numbers = itertools.count(1)
        self._view_numbers = itertools.count(1)
        self._last_ts_us = 0
        self._responses: dict[str, dict[str, Any]] = {}
        self.base_url = ""  # set by whoever serves it; response URLs are built on it
        # the Slack app's OAuth credentials and its consent screen (multi-workspace installs)
        self.client_id = SANDBOX_CLIENT_ID
        self.client_secret = SANDBOX_CLIENT_SECRET
        self.redirect_urls: list[str] = []
        """The app's configured redirect URLs; empty = any ``redirect_uri`` is accepted."""
        self.install_team: str | None = None
        """The workspace the consent screen installs into when the URL names none."""
        self.install_decision = "allow"
        """``"deny"``: the installer presses Cancel (``error=access_denied``)."""
        self.installs: list[dict[str, Any]] = []
        """Every completed ``oauth.v2.access``: team id, scopes, installer."""
        self._codes: dict[str, _InstallCode] = {}
        self._uploads: dict[str, _Upload] = {}  # by upload URL key
        self._answering_at = ""  # the base URL the call being answered came to
        self._file_numbers = itertools.count(1)
        # Socket Mode: the app-level token and the WebSocket side (sandbox/slack_socket.py)
        self.app_token = SANDBOX_APP_TOKEN
        self.socket_mode: Any = None
        """A ``SocketModeSandbox`` once a test turns Socket Mode on; None: the app has it off."""
        self._dispatch = with_faults(self.faults, self.calls, self._handle)
        self._methods: dict[str, Callable[[SlackWorkspace, dict[str, Any]], dict[str, Any]]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.postEphemeral": self._post_ephemeral,
            "chat.update": self._update,
            "chat.getPermalink": self._get_permalink,
            "views.open": self._views_open,
            "views.update": self._views_update,
            "views.publish": self._views_publish,
            "users.info": self._users_info,
            "conversations.info": self._conversations_info,
            "conversations.list": self._conversations_list,
            "conversations.join": self._conversations_join,
            "files.getUploadURLExternal": self._get_upload_url,
            "files.completeUploadExternal": self._complete_upload,
        }

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        return self._dispatch(Request(environ))(environ, start_response)

    # --- seeding ------------------------------------------------------------------------------

    def add_workspace(self, team_id: str = "T0001", *, name: str = "Sandbox Law",
                      bot_token: str | None = None) -> SlackWorkspace:
        with self._lock:
            if team_id in self._workspaces:
                raise ValueError(f"workspace {team_id} already exists")
            token = bot_token or f"xoxb-{team_id}-sandbox"
            if token in self._by_token:
                raise ValueError("bot token already in use")
            workspace = SlackWorkspace(self, team_id, name, token)
            self._workspaces[team_id] = workspace
            self._by_token[token] = workspace
            return workspace

    def workspace(self, team_id: str) -> SlackWorkspace:
        return self._workspaces[team_id]

    def response_url(self, team_id: str, *, user_id: str, channel_id: str,
                     message_ts: str | None = None) -> str:
        """A response_url as Slack puts in a slash command or an interaction payload.

        A POST to it with ``replace_original`` edits ``message_ts``; otherwise it adds an
        ephemeral message for ``user_id`` (or an in-channel one for ``in_channel``)."""
        with self._lock:
            key = secrets.token_hex(12)
            self._responses[key] = {"team_id": team_id, "user_id": user_id,
                                    "channel_id": channel_id, "message_ts": message_ts,
                                    "uses": 0}
            return f"{self.base_url}/response/{key}"

    def _respond(self, request: Request, key: str) -> Response:
        target = self._responses.get(key)
        if target is None or target["uses"] >= 5:  # Slack allows five uses in 30 minutes
            return Response("used_url", status=404)
        try:
            body = json.loads(request.get_data(as_text=True) or "{}")
        except ValueError:
            return Response("invalid_payload", status=400)
        target["uses"] += 1
        ws = self._workspaces[target["team_id"]]
        text, blocks = body.get("text"), body.get("blocks")
        if body.get("replace_original") and target["message_ts"]:
            for message in ws.messages:
                if message["channel"] == target["channel_id"] and \
                        message["ts"] == target["message_ts"]:
                    message["text"], message["blocks"] = text or "", blocks
                    message["updated"] = True
                    return Response("ok")
        user = None if body.get("response_type") == "in_channel" else target["user_id"]
        self._record(ws, target["channel_id"], text, blocks, None, user)
        ws.messages[-1]["response_url"] = True
        return Response("ok")

    def _issue_trigger(self, team_id: str) -> str:
        with self._lock:
            now = self.clock.timestamp()
            trigger_id = f"{int(now)}.{next(self._trigger_numbers)}.{secrets.token_hex(16)}"
            self._triggers[trigger_id] = _Trigger(team_id, now)
            return trigger_id

    def _next_ts(self) -> str:
        """A message ts: unique and increasing across the sandbox, near the sandbox clock."""
        micros = max(int(self.clock.timestamp() * 1_000_000), self._last_ts_us + 1)
        self._last_ts_us = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    # --- dispatch -----------------------------------------------------------------------------

    def _handle(self, request: Request) -> Response:
        try:
            _endpoint, matched = _URLS.bind_to_environ(request.environ).match()
        except HTTPException as error:
            return _json({"ok": False, "error": "not_found"}, error.code or 404)
        if _endpoint == "response":
            with self._lock:
                return self._respond(request, str(matched["key"]))
        if _endpoint == "authorize":
            with self._lock:
                return self._authorize(request)
        if _endpoint == "upload":
            with self._lock:
                return self._receive_upload(request, str(matched["key"]))
        method = str(matched["method"])
        with self._lock:
            self._answering_at = request.host_url.rstrip("/")
            try:
                args = _arguments(request)
                if method == "oauth.v2.access":
                    return _json({"ok": True, **self._oauth_access(request, args)})
                if method == "apps.connections.open":
                    return _json({"ok": True, **self._connections_open(request, args)})
                workspace = self._authenticate(request, args)
                handler = self._methods.get(method)
                if handler is None:
                    raise _Refusal("unknown_method", req_method=method)
                needed = _METHOD_SCOPE.get(method)
                if needed and needed not in workspace.scopes:
                    raise _Refusal("missing_scope", needed=needed,
                                   provided=",".join(sorted(workspace.scopes)))
                return _json({"ok": True, **handler(workspace, args)})
            except _Refusal as refusal:
                return _json({"ok": False, "error": refusal.error, **refusal.extra})

    def _authenticate(self, request: Request, args: dict[str, Any]) -> SlackWorkspace:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        token = token or str(args.pop("token", "") or "")
        if not token:
            raise _Refusal("not_authed")
        workspace = self._by_token.get(token)
        if workspace is None:
            raise _Refusal("invalid_auth")
        if workspace.token_revoked:
            raise _Refusal("token_revoked")
        return workspace

    def _connections_open(self, request: Request, args: dict[str, Any]) -> dict[str, Any]:
        """A Socket Mode URL, for the app-level token only (a bot token is refused as
        Slack refuses it)."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = (token.strip() if scheme.lower() == "bearer" else "") or \
            str(args.get("token") or "")
        if not token:
            raise _Refusal("not_authed")
        if token != self.app_token:
            raise _Refusal("not_allowed_token_type" if token in self._by_token
                           else "invalid_auth")
        if self.socket_mode is None:
            raise _Refusal("socket_mode_not_enabled")  # unconfirmed name
        return {"url": self.socket_mode.open_url()}

    # --- installing the app (OAuth v2) ---------------------------------------------------------

    def _authorize(self, request: Request) -> Response:
        """Slack's consent screen, answered at once (see the module docstring)."""
        args = request.args
        if args.get("client_id") != self.client_id:
            return _page("invalid_client_id", "This app is not known to Slack.", 400)
        redirect_uri = args.get("redirect_uri") or None
        target = redirect_uri or (self.redirect_urls[0] if self.redirect_urls else None)
        if target is None or (self.redirect_urls and not any(
                target.startswith(url) for url in self.redirect_urls)):
            return _page("bad_redirect_uri", "The redirect URL does not match the app's "
                         "configuration.", 400)
        state = args.get("state")
        extra = {"state": state} if state is not None else {}
        if self.install_decision == "deny":
            return _redirect(target, {"error": "access_denied", **extra})
        team_id = args.get("team") or self.install_team or (
            next(iter(self._workspaces)) if len(self._workspaces) == 1 else None)
        ws = self._workspaces.get(team_id or "")
        if ws is None:
            return _page("team_not_found", "Choose a workspace to install the app into.", 400)
        scopes = tuple(s for s in (args.get("scope") or "").split(",") if s)
        installer = next((u["id"] for u in ws.users.values()
                          if (u["is_admin"] or u["is_owner"]) and not u["is_bot"]
                          and not u["deleted"]), f"U{ws._suffix}INSTALL")
        code = f"{ws._suffix}.{secrets.token_hex(16)}"
        self._codes[code] = _InstallCode(ws.team_id, scopes, redirect_uri, installer,
                                         self.clock.timestamp())
        return _redirect(target, {"code": code, **extra})

    def _oauth_access(self, request: Request, args: dict[str, Any]) -> dict[str, Any]:
        client_id, client_secret = args.get("client_id"), args.get("client_secret")
        if request.authorization is not None and request.authorization.type == "basic":
            client_id = request.authorization.username
            client_secret = request.authorization.password
        if client_id != self.client_id:
            raise _Refusal("invalid_client_id")
        if client_secret != self.client_secret:
            raise _Refusal("bad_client_secret")
        grant = self._codes.get(str(args.get("code") or ""))
        if grant is None or grant.used or \
                self.clock.timestamp() - grant.issued > CODE_SECONDS:
            raise _Refusal("invalid_code")
        if grant.redirect_uri is not None and args.get("redirect_uri") != grant.redirect_uri:
            raise _Refusal("bad_redirect_uri")
        grant.used = True
        ws = self._workspaces[grant.team_id]
        ws.scopes = set(grant.scopes)
        ws.token_revoked = False
        self.installs.append({"team_id": ws.team_id, "scopes": grant.scopes,
                              "installer": grant.installer})
        return {"access_token": ws.bot_token, "token_type": "bot",
                "scope": ",".join(grant.scopes), "bot_user_id": ws.bot_user_id,
                "app_id": ws.app_id, "team": {"id": ws.team_id, "name": ws.name},
                "enterprise": None, "authed_user": {"id": grant.installer},
                "is_enterprise_install": False}

    # --- auth ---------------------------------------------------------------------------------

    def _auth_test(self, ws: SlackWorkspace, args: dict[str, Any]) -> dict[str, Any]:
        return {"url": f"https://{ws.domain}.slack.com/", "team": ws.name, "user": ws.bot_name,
                "team_id": ws.team_id, "user_id": ws.bot_user_id, "bot_id": ws.bot_id,
                "is_enterprise_install": False}

    # --- chat ---------------------------------------------------------------------------------

    def _postable(self, ws: SlackWorkspace, channel: Any) -> dict[str, Any]:
        record = ws._resolve(channel, open_dm=True)
        if record["is_archived"]:
            raise _Refusal("is_archived")
        if not record["is_member"] and "chat:write.public" not in ws.scopes:
            raise _Refusal("not_in_channel")
        return record

    def _content(self, args: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]] | None]:
        """``text`` and ``blocks`` checked like Slack; ``None`` = not given."""
        text = args.get("text")
        text = None if text is None else str(text)
        blocks = _decoded(args["blocks"]) if "blocks" in args else None
        attachments = args.get("attachments")
        if not text and not blocks and not attachments:
            raise _Refusal("no_text")
        if text is not None and len(text) > MAX_TEXT:
            raise _Refusal("msg_too_long")
        if blocks is None:
            return text, None
        if not isinstance(blocks, list):
            raise _Refusal("invalid_blocks_format")
        errors = _block_errors(blocks, MAX_MESSAGE_BLOCKS, "/blocks")
        if errors:
            raise _Refusal("invalid_blocks", response_metadata={"messages": errors})
        if _block_text_total(blocks) > MAX_BLOCK_TEXT:
            raise _Refusal("msg_blocks_too_long")
        return text, blocks

    def _thread_root(self, ws: SlackWorkspace, channel_id: str, thread_ts: Any) -> str | None:
        if thread_ts in (None, ""):
            return None
        parent = next((m for m in ws.messages if m["channel"] == channel_id
                       and m["ts"] == str(thread_ts) and m["ephemeral_user"] is None), None)
        if parent is None:
            raise _Refusal("invalid_thread_ts")
        return str(parent["thread_ts"] or parent["ts"])

    def _api_message(self, ws: SlackWorkspace, message: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {"type": "message", "subtype": "bot_message",
                                "text": message["text"], "user": ws.bot_user_id,
                                "bot_id": ws.bot_id, "app_id": ws.app_id, "team": ws.team_id,
                                "ts": message["ts"]}
        if message["blocks"] is not None:
            body["blocks"] = message["blocks"]
        if message["thread_ts"] is not None:
            body["thread_ts"] = message["thread_ts"]
        edited_ts = ws._edited.get((message["channel"], message["ts"]))
        if edited_ts is not None:
            body["edited"] = {"user": ws.bot_user_id, "ts": edited_ts}
        return body

    def _record(self, ws: SlackWorkspace, channel_id: str, text: str | None,
                blocks: list[dict[str, Any]] | None, thread_ts: str | None,
                ephemeral_user: str | None) -> dict[str, Any]:
        message = {"channel": channel_id, "ts": self._next_ts(), "thread_ts": thread_ts,
                   "text": text or "", "blocks": blocks, "user": ws.bot_user_id,
                   "updated": False, "ephemeral_user": ephemeral_user}
        ws.messages.append(message)
        return message

    def _post_message(self, ws: SlackWorkspace, args: dict[str, Any]) -> dict[str, Any]:
        record = self._postable(ws, args.get("channel"))
        text, blocks = self._content(args)
        thread_ts = self._thread_root(ws, record["id"], args.get("thread_ts"))
        message = self._record(ws, record["id"], text, blocks, thread_ts, None)
        return {"channel": record["id"], "ts": message["ts"],
                "message": self._api_message(ws, message)}

    def _post_ephemeral(self, ws: SlackWorkspace, args: dict[str, Any]) -> dict[str, Any]:
        record = self._postable(ws, args.get("channel"))
        user = ws.users.get(str(args.get("user", "")))
        if user is None or user["deleted"]:
            raise _Refusal("user_not_found")
        text, blocks = self._content(args)
        thread_ts = self._thread_root(ws, record["id"], args.get("thread_ts"))
        message = self._record(ws, record["id"], text, blocks, thread_ts, user["id"])
        return {"message_ts": message["ts"]}

    def _update(self, ws: SlackWorkspace, args: dict[str, Any]) -> dict[str, Any]:
        record = ws._resolve(args.get("channel"))
        ts = str(args.get("ts", ""))
        message = next((m for m in ws.messages
                        if m["channel"] == record["id"] and m["ts"] == ts), None)
        if message is None:
            raise _Refusal("message_not_found")
        if message["ephemeral_user"] is not None:
            raise _Refusal("cant_update_message")
        if record["is_archived"]:
            raise _Refusal("is_archived")
        text, blocks = self._content(args)
        if text is not None:
            message["text"] = text
        if blocks is not None:  # omitted keeps the old blocks; [] removes them
            message["blocks"] = blocks or None
        message["updated"] = True
        ws._edited[(message["channel"], ts)] = self._next_ts()
        ws.edits.append({"channel": record["id"], "ts": ts, "text": message["text"],
                         "blocks": message["blocks"]})
        return {"channel": record["id"], "ts": ts, "text": message["text"],
                "message": self._api_message(ws, message)}

    def _get_permalink(self, ws: SlackWorkspace, args: dict[str, Any]) -> dict[str, Any]:
        """A message's link, as Slack gives it (no scope needed)."""
        record = ws._resolve(args.get("channel"))
        ts = str(args.get("message_ts", ""))
        if not any(m["channel"] == record["id"] and m["ts"] == ts for m in ws.messages):
            raise _Refusal("message_not_found")
        return {"channel": record["id"],
                "permalink": f"https://{ws.domain}.slack.com/archives/{record['id']}"
                             f"/p{ts.replace('.', '')}"}

    # --- views --------------------------------------------------------------------------------

    def _checked_view(self, args: dict[str, Any], *types: str) -> dict[str, Any]:
        view = _decoded(args.get("view"))
        if not isinstance(view, dict):
            raise _Refusal("invalid_arguments",
                           response_metadata={"messages": ["[ERROR] missing required field: "
                                                           "view"]})
        errors: list[str] = []
        kind = view.get("type")
        if kind not in types:
            errors.append(f"[ERROR] must be one of {list(types)} [json-pointer:/view/type]")
        blocks = view.get("blocks", [])
        if not isinstance(blocks, list):
            errors.append("[ERROR] must provide an array [json-pointer:/view/blocks]")
        else:
            errors += _block_errors(blocks, MAX_VIEW_BLOCKS, "/view/blocks")
        if kind == "modal":
            if _text_of(view.get("title")) is None:
                errors.append("[ERROR] missing required field: title [json-pointer:/view]")
            for key in ("title", "submit", "close"):
                text = _text_of(view.get(key))
                if text is not None and len(text) > 24:
                    errors.append("[ERROR] must be less than 25 characters "
                                  f"[json-pointer:/view/{key}/text]")
        for key, limit in (("private_metadata", 3000), ("callback_id", 255),
                           ("external_id", 255)):
            value = view.get(key)
            if isinstance(value, str) and len(value) > limit:
                errors.append(f"[ERROR] must be less than {limit + 1} characters "
                              f"[json-pointer:/view/{key}]")
        if errors:
            raise _Refusal("invalid_arguments", response_metadata={"messages": errors})
        return view

    def _stored_view(self, ws: SlackWorkspace, view: dict[str, Any], view_id: str,
                     root_view_id: str | None = None) -> dict[str, Any]:
        stored = {"type": view["type"], "blocks": [], "private_metadata": "",
                  "callback_id": "", "external_id": "", "state": {"values": {}},
                  "clear_on_close": False, "notify_on_close": False, "close": None,
                  "submit": None, "previous_view_id": None,
                  **view,
                  "id": view_id, "team_id": ws.team_id,
                  "hash": f"{int(self.clock.timestamp())}.{secrets.token_hex(4)}",
                  "root_view_id": root_view_id or view_id, "app_id": ws.app_id,
                  "bot_id": ws.bot_id}
        ws.views[view_id] = stored
        return stored

    def _new_view_id(self) -> str:
        return f"V{next(self._view_numbers):010d}"

    def _views_open(self, ws: SlackWorkspace, args: dict[str, Any]) -> dict[str, Any]:
        trigger_id = str(args.get("trigger_id") or "")
        if not trigger_id:
            raise _Refusal("invalid_arguments", response_metadata={
                "messages": ["[ERROR] missing required field: trigger_id"]})
        view = self._checked_view(args, "modal")
        trigger = self._triggers.get(trigger_id)
        if trigger is None or trigger.team_id != ws.team_id:
            raise _Refusal("invalid_trigger_id")
        if trigger.exchanged:
            raise _Refusal("exchanged_trigger_id")
        if self.clock.timestamp() - trigger.issued > TRIGGER_SECONDS:
            raise _Refusal("expired_trigger_id")
        external_id = view.get("external_id")
        if external_id and any(v.get("external_id") == external_id for v in ws.views.values()):
            raise _Refusal("duplicate_external_id")
        trigger.exchanged = True
        stored = self._stored_view(ws, view, self._new_view_id())
        ws.views_opened.append({"trigger_id": trigger_id, "view": stored, "id": stored["id"]})
        return {"view": stored}

    def _views_update(self, ws: SlackWorkspace, args: dict[str, Any]) -> dict[str, Any]:
        view = self._checked_view(args, "modal", "home")
        view_id, external_id = args.get("view_id"), args.get("external_id")
        current = ws.views.get(str(view_id)) if view_id else next(
            (v for v in ws.views.values() if external_id and v["external_id"] == external_id),
            None)
        if current is None:
            raise _Refusal("not_found")
        given_hash = args.get("hash")
        if given_hash and given_hash != current["hash"]:
            raise _Refusal("hash_conflict")
        if current["external_id"] and "external_id" not in view:
            view = {**view, "external_id": current["external_id"]}
        stored = self._stored_view(ws, view, current["id"], current["root_view_id"])
        for user_id, home in ws.home_views.items():
            if home["id"] == stored["id"]:
                ws.home_views[user_id] = stored
        for opened in ws.views_opened:
            if opened["id"] == stored["id"]:
                opened["view"] = stored
        return {"view": stored}

    def _views_publish(self, ws: SlackWorkspace, args: dict[str, Any]) -> dict[str, Any]:
        user = ws.users.get(str(args.get("user_id", "")))
        if user is None or user["deleted"]:
            raise _Refusal("user_not_found")
        view = self._checked_view(args, "home")
        current = ws.home_views.get(user["id"])
        given_hash = args.get("hash")
        if given_hash and current is not None and given_hash != current["hash"]:
            raise _Refusal("hash_conflict")
        view_id = current["id"] if current is not None else self._new_view_id()
        stored = self._stored_view(ws, view, view_id)
        ws.home_views[user["id"]] = stored
        return {"view": stored}

    # --- files (files_upload_v2) ------------------------------------------------------------

    def _get_upload_url(self, ws: SlackWorkspace, args: dict[str, Any]) -> dict[str, Any]:
        filename = args.get("filename")
        if not isinstance(filename, str) or not filename.strip():
            raise _Refusal("invalid_arguments", response_metadata={
                "messages": ["[ERROR] missing required field: filename"]})
        length = str(args.get("length") or "")
        if not (length.isascii() and length.isdigit()) or not 1 <= int(length) <= MAX_FILE_BYTES:
            raise _Refusal("invalid_arguments", response_metadata={
                "messages": ["[ERROR] missing required field: length"
                             if not length else "[ERROR] invalid length [json-pointer:/length]"]})
        file_id = f"F{ws._suffix}{next(self._file_numbers):06d}"
        key = secrets.token_urlsafe(24)
        self._uploads[key] = _Upload(ws.team_id, file_id, filename, int(length),
                                     args.get("alt_txt"), args.get("snippet_type"))
        base = self.base_url or self._answering_at  # the sandbox itself, on loopback
        return {"upload_url": f"{base}/upload/v1/{key}", "file_id": file_id}

    def _receive_upload(self, request: Request, key: str) -> Response:
        """The upload URL: the file's bytes, raw or as a multipart ``file``."""
        upload = self._uploads.get(key)
        if upload is None:
            return Response("not_found", status=404, content_type="text/plain")
        if request.mimetype == "multipart/form-data":
            sent = request.files.get("file")
            data = sent.read() if sent is not None else b""
        else:
            data = request.get_data()
        if upload.data is not None:
            return Response("already_uploaded", status=400, content_type="text/plain")
        if len(data) != upload.length:
            return Response("length_mismatch", status=400, content_type="text/plain")
        upload.data = data
        return Response(f"OK - {len(data)}", status=200, content_type="text/plain")

    def _share_targets(self, ws: SlackWorkspace, args: dict[str, Any]) -> list[dict[str, Any]]:
        """The channels of ``channel_id`` and ``channels`` (ids, or user ids for the bot's DM
        with them), checked as ``chat.postMessage`` checks its channel."""
        names: list[str] = []
        if args.get("channel_id"):
            channel_id = str(args["channel_id"])
            if channel_id not in ws.channels:  # an id, like Slack's own channel_id
                raise _Refusal("channel_not_found")
            names.append(channel_id)
        names += [c.strip() for c in str(args.get("channels") or "").split(",") if c.strip()]
        targets: list[dict[str, Any]] = []
        for name in names:
            if name not in ws.channels and name not in ws.users:
                raise _Refusal("channel_not_found")
            record = self._postable(ws, name)
            if record not in targets:
                targets.append(record)
        return targets

    def _complete_upload(self, ws: SlackWorkspace, args: dict[str, Any]) -> dict[str, Any]:
        files = _decoded(args.get("files"))
        if not isinstance(files, list) or not files or not all(
                isinstance(f, dict) and isinstance(f.get("id"), str) for f in files):
            raise _Refusal("invalid_arguments", response_metadata={
                "messages": ["[ERROR] missing required field: files"]})
        by_id = {u.file_id: (key, u) for key, u in self._uploads.items()
                 if u.team_id == ws.team_id}
        chosen = [by_id.get(f["id"]) for f in files]
        if any(c is None or c[1].data is None for c in chosen):
            raise _Refusal("file_not_found")
        targets = self._share_targets(ws, args)
        if args.get("thread_ts") and len(targets) != 1:
            raise _Refusal("invalid_arguments", response_metadata={
                "messages": ["[ERROR] thread_ts needs exactly one channel"]})
        thread_ts = self._thread_root(ws, targets[0]["id"], args.get("thread_ts")) \
            if targets else None
        comment = args.get("initial_comment")
        shared: list[dict[str, Any]] = []
        for wanted, found in zip(files, chosen, strict=True):
            assert found is not None
            key, upload = found
            data = upload.data
            assert data is not None
            del self._uploads[key]  # completed once; the URL and the id are spent
            title = str(wanted.get("title") or upload.filename)
            mimetype = mimetypes.guess_type(upload.filename)[0] or "application/octet-stream"
            record = {
                "id": upload.file_id, "created": int(self.clock.timestamp()),
                "timestamp": int(self.clock.timestamp()), "name": upload.filename,
                "title": title, "mimetype": mimetype,
                "filetype": upload.filename.rpartition(".")[2].lower()
                if "." in upload.filename else "binary",
                "user": ws.bot_user_id, "size": len(data), "mode": "hosted",
                "is_external": False, "is_public": any(
                    not t["is_private"] for t in targets),
                "url_private": f"{self.base_url or self._answering_at}/files-pri/"
                               f"{ws.team_id}-{upload.file_id}/"
                               f"{upload.filename}",
                "channels": [t["id"] for t in targets], "alt_txt": upload.alt_txt,
                "initial_comment": comment, "thread_ts": thread_ts}
            ws.files[upload.file_id] = {**record, "data": data}
            shared.append(record)
        for target in targets:
            message = self._record(ws, target["id"], None if comment is None else str(comment),
                                   None, thread_ts, None)
            message["files"] = [dict(f) for f in shared]
        return {"files": [{k: v for k, v in f.items() if k not in ("initial_comment",
                                                                   "thread_ts")}
                          for f in shared]}

    # --- users and conversations --------------------------------------------------------------

    def _users_info(self, ws: SlackWorkspace, args: dict[str, Any]) -> dict[str, Any]:
        user = ws.users.get(str(args.get("user", "")))
        if user is None:
            raise _Refusal("user_not_found")
        return {"user": user}

    def _require_type_scope(self, ws: SlackWorkspace, kind: str) -> None:
        needed = _TYPE_SCOPE[kind]
        if needed not in ws.scopes:
            raise _Refusal("missing_scope", needed=needed, provided=",".join(sorted(ws.scopes)))

    def _conversations_info(self, ws: SlackWorkspace, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel")
        if not isinstance(channel, str) or channel not in ws.channels:  # ids only, like Slack
            raise _Refusal("channel_not_found")
        record = ws._resolve(channel)
        self._require_type_scope(ws, "im" if record["is_im"] else
                                 "private_channel" if record["is_private"] else "public_channel")
        return {"channel": ws._conversation(record)}

    def _conversations_list(self, ws: SlackWorkspace, args: dict[str, Any]) -> dict[str, Any]:
        types = [t.strip() for t in str(args.get("types") or "public_channel").split(",")
                 if t.strip()]
        if any(t not in _TYPE_SCOPE for t in types):
            raise _Refusal("invalid_types")
        for kind in types:
            self._require_type_scope(ws, kind)
        exclude_archived = _truthy(args.get("exclude_archived"))
        try:
            limit = int(args.get("limit") or 100)
        except ValueError:
            limit = 100
        limit = max(1, min(limit, 1000))
        rows = [c for c in ws.channels.values()
                if ((c["is_im"] and "im" in types)
                    or (not c["is_im"] and c["is_private"] and c["is_member"]
                        and "private_channel" in types)
                    or (not c["is_im"] and not c["is_private"] and "public_channel" in types))
                and not (exclude_archived and c["is_archived"])]
        start = 0
        cursor = str(args.get("cursor") or "")
        if cursor:
            try:
                after = base64.b64decode(cursor, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise _Refusal("invalid_cursor") from None
            ids = [c["id"] for c in rows]
            if not after.startswith("team:") or after[5:] not in ids:
                raise _Refusal("invalid_cursor")
            start = ids.index(after[5:])
        page = rows[start:start + limit]
        rest = rows[start + limit:]
        next_cursor = base64.b64encode(f"team:{rest[0]['id']}".encode()).decode() if rest else ""
        return {"channels": [ws._conversation(c) for c in page],
                "response_metadata": {"next_cursor": next_cursor}}

    def _conversations_join(self, ws: SlackWorkspace, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel")
        if not isinstance(channel, str) or channel not in ws.channels:
            raise _Refusal("channel_not_found")
        record = ws._resolve(channel)
        if record["is_im"] or record["is_private"]:
            raise _Refusal("method_not_supported_for_channel_type")
        if record["is_archived"]:
            raise _Refusal("is_archived")
        if record["is_member"]:
            return {"channel": ws._conversation(record), "warning": "already_in_channel",
                    "response_metadata": {"warnings": ["already_in_channel"]}}
        record["is_member"] = True
        return {"channel": ws._conversation(record)}


def _redirect(target: str, params: dict[str, str]) -> Response:
    joiner = "&" if "?" in target else "?"
    return Response("", status=302, headers={"Location": target + joiner + urlencode(params)})


def _page(error: str, message: str, status: int) -> Response:
    body = (f"<!doctype html><title>Slack</title><h1>{escape(error)}</h1>"
            f"<p>{escape(message)}</p>")
    return Response(body, status=status, content_type="text/html; charset=utf-8")


def _arguments(request: Request) -> dict[str, Any]:
    """The call's arguments: query string, then the form or JSON body."""
    args: dict[str, Any] = dict(request.args.items())
    if request.method == "POST" and request.content_length != 0:
        if request.mimetype == "application/json":
            body = request.get_json(silent=True)
            if not isinstance(body, dict):
                raise _Refusal("invalid_json")
            args.update(body)
        else:
            args.update(request.form.items())
    return args

"""Slack over Socket Mode: slack-bolt's ``SocketModeHandler`` on slack-sdk's built-in client,
with what ``/healthz`` reports about the connection.

The client opens its WebSocket with ``apps.connections.open`` (the ``xapp-`` token), answers
Slack's pings, pings Slack every ``ping_interval`` seconds, and reconnects by itself: at once
on a ``disconnect`` envelope (``warning`` or ``refresh_requested``) or a close frame, and on a
socket that died without one once no pong has come back for four ping intervals (``PING_INTERVAL``:
within 15 s).

What this module adds:

- **Nothing runs twice.** An envelope whose ack Slack did not get is sent again, maybe on
  another connection. A payload already handled (same envelope id, or the same trigger id or
  event id) is acked again with the first answer and not handed to Bolt a second time; one
  still running is waited for. Per process: across replicas the store's claims (first click
  wins, the outbox) are what keep a choice from being written twice.
- **Bad payloads are acked, not run** (``bot.payloads.envelope_problem``): Bolt would raise on
  them, and an envelope never acked is redelivered.
- **Health** (:class:`SocketHealth`): connected or not, since when, the last message, how many
  reconnects and ``disconnect`` envelopes; not ok once the connection has been down longer
  than ``grace`` seconds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_bolt.adapter.socket_mode.internals import run_bolt_app, send_response
from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from hardcost.bot.payloads import envelope_problem

log = logging.getLogger(__name__)

PING_INTERVAL = 2.0
"""Seconds between the client's pings. slack-sdk's client gives a socket up once no pong has
come back for more than four intervals, checking once an interval: a socket that died
silently (no close frame, as after a NAT timeout) is noticed 8 to 10 s after its last pong
and replaced at once, within 15 s. (Bolt's default, 10 s, took 50 s and more.) The pings are a
few bytes each."""
DOWN_GRACE = 60.0
"""Seconds the connection may be down (reconnecting) before ``/healthz`` says 503."""
REMEMBERED = 5000
"""Payloads remembered for redeliveries; Slack redelivers within minutes, not thousands."""


@dataclass(frozen=True)
class SocketHealth:
    connected: bool
    connected_since: datetime | None
    last_message_at: datetime | None
    seconds_since_message: float | None
    reconnects: int
    disconnects_requested: int
    redeliveries_skipped: int
    down_seconds: float | None
    ok: bool
    reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        body: dict[str, Any] = {
            "connected": self.connected, "connected_since": iso(self.connected_since),
            "last_message": iso(self.last_message_at),
            "seconds_since_message": None if self.seconds_since_message is None
            else round(self.seconds_since_message, 1),
            "reconnects": self.reconnects,
            "disconnects_requested": self.disconnects_requested,
            "redeliveries_skipped": self.redeliveries_skipped}
        if self.down_seconds is not None:
            body["down_seconds"] = round(self.down_seconds, 1)
        return body


class _Answer:
    """One payload's ack: set once Bolt has answered it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.payload: dict[str, Any] | None = None


def _payload_keys(req: SocketModeRequest) -> list[str]:
    """What names one delivery of one payload: its envelope, and its trigger or event id."""
    keys = [f"envelope:{req.envelope_id}"]
    payload = req.payload if isinstance(req.payload, dict) else {}
    for field in ("trigger_id", "event_id"):
        value = payload.get(field)
        if isinstance(value, str) and value:
            keys.append(f"{field}:{value}")
    return keys


class _OnceHandler(SocketModeHandler):
    """Bolt's handler, running each payload once (see the module docstring)."""

    def __init__(self, app: App, app_token: str, *, ping_interval: float,
                 on_skip: Callable[[], None]) -> None:
        super().__init__(app, app_token, ping_interval=ping_interval)
        self._answers: OrderedDict[str, _Answer] = OrderedDict()
        self._lock = threading.Lock()
        self._on_skip = on_skip

    def handle(self, client: SocketModeClient,  # type: ignore[override]
               req: SocketModeRequest) -> None:
        keys = _payload_keys(req)
        with self._lock:
            earlier = next((self._answers[k] for k in keys if k in self._answers), None)
            answer = earlier or _Answer()
            for key in keys:
                self._answers[key] = answer
                self._answers.move_to_end(key)
            while len(self._answers) > REMEMBERED:
                self._answers.popitem(last=False)
        if earlier is not None:
            self._on_skip()
            log.info("Slack sent a %s envelope again; acked with the first answer, not run "
                     "twice", req.type)
            earlier.done.wait(2.5)  # still running: its ack, within Slack's 3 s
            client.send_socket_mode_response(SocketModeResponse(
                envelope_id=req.envelope_id, payload=earlier.payload))
            return
        try:
            problem = envelope_problem(req.type, req.payload)
            if problem is not None:
                log.warning("a Socket Mode %s envelope refused: %s", req.type, problem)
                client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
                return
            start = time.time()
            response = run_bolt_app(self.app, req)
            if response.status == 200 and response.body:
                content_type = response.headers.get("content-type", [""])[0]
                answer.payload = json.loads(response.body) \
                    if content_type.startswith("application/json") else {"text": response.body}
            send_response(client, req, response, start)
        finally:
            answer.done.set()


class SocketModeLink:
    """The app's Socket Mode connection: ``connect``, ``health``, ``close``."""

    def __init__(self, app: App, app_token: str, *, ping_interval: float = PING_INTERVAL,
                 grace: float = DOWN_GRACE, clock: Callable[[], datetime] | None = None) -> None:
        self.grace = grace
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._hellos = 0
        self._disconnects = 0
        self._skipped = 0
        self._connected_since: datetime | None = None
        self._last_message: datetime | None = None
        self._down_since: float | None = None
        self.handler = _OnceHandler(app, app_token, ping_interval=ping_interval,
                                    on_skip=self._count_skip)
        client = self.handler.client
        client.on_message_listeners.append(self._on_message)
        client.on_close_listeners.append(lambda code, reason: self._went_down())
        client.on_error_listeners.append(lambda error: self._went_down())

    @property
    def client(self) -> SocketModeClient:
        return self.handler.client

    def connect(self) -> None:
        """Open the connection (``apps.connections.open`` first; a refused token raises)."""
        self.handler.connect()

    def close(self) -> None:
        """Leave for good (no reconnect). The socket is shut first: the client's receiving
        thread would otherwise hold its lock until its 3 s receive timeout, the message processor
        wait for its 1 s queue timeout."""
        self.client.auto_reconnect_enabled = False
        self.client.closed = True
        self.client.message_queue.put(None)  # wakes the message processor to see it
        session = self.client.current_session
        if session is not None and session.sock is not None:
            with contextlib.suppress(OSError):
                session.sock.shutdown(socket.SHUT_RDWR)
        self.handler.close()

    def _count_skip(self) -> None:
        with self._lock:
            self._skipped += 1

    def _on_message(self, raw: str) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            message = {}
        kind = message.get("type") if isinstance(message, dict) else None
        now = self._clock()
        with self._lock:
            self._last_message = now
            if kind == "hello":
                self._hellos += 1
                self._connected_since = now
                self._down_since = None
            elif kind == "disconnect":
                self._disconnects += 1
                log.info("Slack asked for a new Socket Mode connection (%s)",
                         message.get("reason"))

    def _went_down(self) -> None:
        with self._lock:
            if self._down_since is None:
                self._down_since = time.monotonic()

    def health(self) -> SocketHealth:
        connected = self.client.is_connected()
        now = self._clock()
        with self._lock:
            if connected:
                down = None
            else:
                if self._down_since is None:
                    self._down_since = time.monotonic()
                down = time.monotonic() - self._down_since
            ok = down is None or down <= self.grace
            return SocketHealth(
                connected=connected,
                connected_since=self._connected_since if connected else None,
                last_message_at=self._last_message,
                seconds_since_message=None if self._last_message is None
                else (now - self._last_message).total_seconds(),
                reconnects=max(self._hellos - 1, 0),
                disconnects_requested=self._disconnects,
                redeliveries_skipped=self._skipped,
                down_seconds=down, ok=ok,
                reason=None if ok else
                f"the Slack Socket Mode connection has been down for {down:.0f} s")

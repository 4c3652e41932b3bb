"""Slack's Socket Mode side, on loopback: WebSocket URLs handed out by ``apps.connections.open``,
envelopes sent over them, acks recorded.

What Slack does, and the sandbox with it (Slack's Socket Mode
documentation; slack-sdk's ``SocketModeClient``, which reads what is sent here unchanged):

- ``apps.connections.open``, called with the app-level ``xapp-`` token, answers a URL; the
  sandbox's is ``ws://127.0.0.1:<port>/link/?ticket=…&app_id=…``. A ticket opens one connection
  (a second handshake with it gets HTTP 401; unconfirmed what Slack answers).
- Each new connection gets ``{"type": "hello", "num_connections": n, "connection_info":
  {"app_id": …}, "debug_info": {…}}`` first.
- Envelopes: ``{"type": "slash_commands" | "interactive" | "events_api", "envelope_id": …,
  "payload": {…}, "accepts_response_payload": bool}``; ``events_api`` ones carry
  ``retry_attempt`` and ``retry_reason`` (0 and ``""`` the first time). Slash commands and
  interactions accept a response payload (the ack may carry the reply, the view or the
  options), events do not. The app acks with ``{"envelope_id": …, "payload": {…}}``; Slack waits
  3 s. The sandbox records every ack with the seconds it took (:class:`Ack`).
- Only connections that said hello and were not told to go get new envelopes.
- ``disconnect``: ``{"type": "disconnect", "reason": "warning"}`` about 10 s before
  ``{"type": "disconnect", "reason": "refresh_requested"}`` (``close_after``); a connection
  the app does not close itself is closed by Slack soon after. slack-sdk's built-in client
  reconnects on the warning and closes the old connection within its 3 s receive timeout, so
  ``refresh_requested`` rarely reaches it; when it does (a gap under 3 s), the client
  reconnects a second time and drops the connection it had just opened, with any envelope
  sent to it meanwhile unacked.
- A network failure drops the socket without a close frame (:meth:`SocketModeSandbox.drop`).
- Redelivery: when an ack is lost (:meth:`SocketModeSandbox.deliver` with ``lose_ack``),
  the same envelope is sent again on the next connection (same ``envelope_id``; the
  ``retry_attempt`` of an event goes up). Whether Slack keeps the envelope id on a redelivery
  is unconfirmed; the app must not run the same payload twice either way.

WebSocket framing, pings and pongs are the ``websockets`` library's (its synchronous server).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

ACK_SECONDS = 3.0
"""Slack's limit for an ack; a later one is recorded as late."""

ENVELOPE_TYPES = frozenset({"slash_commands", "interactive", "events_api"})


@dataclass(frozen=True)
class Ack:
    """One envelope acknowledged by the app."""

    envelope_id: str
    type: str
    payload: dict[str, Any] | None
    seconds: float
    connection: int
    lost: bool = False

    @property
    def late(self) -> bool:
        return self.seconds > ACK_SECONDS


@dataclass
class _Link:
    """One open WebSocket connection from the app."""

    number: int
    ws: ServerConnection
    ready: bool = False  # said hello, not told to go
    closed: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Waiter:
    sent_at: float
    connection: int
    done: threading.Event = field(default_factory=threading.Event)
    reply: dict[str, Any] | None = None
    seconds: float = 0.0


class SocketModeSandbox:
    """The WebSocket side of the sandbox Slack. ``SlackSandbox.socket_mode`` points here so
    that ``apps.connections.open`` can hand out its URLs."""

    def __init__(self, *, app_id: str = "A0HARDCOST", host: str = "127.0.0.1",
                 close_after: float = 10.0) -> None:
        self.app_id = app_id
        self.close_after = close_after
        self._lock = threading.Condition()
        self._tickets: set[str] = set()
        self._links: list[_Link] = []
        self._numbers = itertools.count(1)
        self._waiters: dict[str, _Waiter] = {}
        self.acks: list[Ack] = []
        """Every ack received, in order (a lost one too, with ``lost=True``)."""
        self.log: list[tuple[float, str, int]] = []
        """What happened to connections: (monotonic time, what, connection number) with what in
        ``opened``, ``hello``, ``warning``, ``refresh_requested``, ``dropped``, ``closed``
        (either side), ``closed by slack``."""
        self.unmatched: list[str] = []
        """Text frames from the app that acked no envelope sent (bad JSON, unknown ids)."""
        self.refusing = False
        """True: handshakes are refused (HTTP 503), as when Slack cannot be reached."""
        self._server: Server = serve(self._session, host, 0, compression=None,
                                     process_request=self._check_ticket,
                                     ping_interval=20, ping_timeout=20)
        port = self._server.socket.getsockname()[1]
        self.base_url = f"ws://{host}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name=f"sandbox-socket:{port}", daemon=True)
        self._thread.start()

    # --- apps.connections.open ----------------------------------------------------------------

    def open_url(self) -> str:
        """A new connection URL (one ticket, one connection)."""
        ticket = str(uuid.uuid4())
        with self._lock:
            self._tickets.add(ticket)
        return f"{self.base_url}/link/?ticket={ticket}&app_id={self.app_id}"

    def _check_ticket(self, connection: ServerConnection, request: Request) -> Response | None:
        query = parse_qs(urlsplit(request.path).query)
        ticket = (query.get("ticket") or [""])[0]
        with self._lock:
            if self.refusing:
                return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "unavailable\n")
            if ticket not in self._tickets:
                return connection.respond(HTTPStatus.UNAUTHORIZED, "invalid ticket\n")
            self._tickets.discard(ticket)
        return None

    # --- one connection -----------------------------------------------------------------------

    def _session(self, ws: ServerConnection) -> None:
        with self._lock:
            link = _Link(next(self._numbers), ws)
            self._links.append(link)
            self._note("opened", link)
            count = sum(not other.closed.is_set() for other in self._links)
        try:
            ws.send(json.dumps({
                "type": "hello", "num_connections": count,
                "debug_info": {"host": "sandbox-socket", "build_number": 1,
                               "approximate_connection_time": 18060},
                "connection_info": {"app_id": self.app_id}}))
            with self._lock:
                link.ready = True
                self._note("hello", link)
                self._lock.notify_all()
            for frame in ws:
                self._received(link, frame)
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                link.ready = False
                link.closed.set()
                self._note("closed", link)
                self._lock.notify_all()

    def _received(self, link: _Link, frame: str | bytes) -> None:
        now = time.monotonic()
        try:
            message = json.loads(frame)
        except ValueError:
            message = None
        envelope_id = message.get("envelope_id") if isinstance(message, dict) else None
        with self._lock:
            waiter = self._waiters.get(str(envelope_id)) if envelope_id else None
            if waiter is None or waiter.done.is_set():
                self.unmatched.append(frame if isinstance(frame, str) else frame.decode())
                return
            assert isinstance(message, dict)
            payload = message.get("payload")
            waiter.reply = payload if isinstance(payload, dict) else None
            waiter.seconds = now - waiter.sent_at
            waiter.done.set()

    def _note(self, what: str, link: _Link) -> None:
        self.log.append((time.monotonic(), what, link.number))

    # --- what tests do ------------------------------------------------------------------------

    @property
    def connections(self) -> int:
        """How many connections the app has opened so far."""
        with self._lock:
            return len(self._links)

    def open_connections(self) -> int:
        with self._lock:
            return sum(link.ready for link in self._links)

    def wait_connected(self, timeout: float = 15.0, *, after: int = 0) -> int:
        """Wait for a connection numbered above ``after`` to have said hello; its number."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                ready = [link for link in self._links if link.ready and link.number > after]
                if ready:
                    return ready[-1].number
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the app did not connect over Socket Mode")
                self._lock.wait(left)

    def _current(self, timeout: float) -> _Link:
        number = self.wait_connected(timeout)
        with self._lock:
            return next(link for link in self._links if link.number == number)

    def deliver(self, kind: str, payload: dict[str, Any], *, envelope_id: str | None = None,
                lose_ack: bool = False, new_envelope: bool = False,
                timeout: float = 15.0) -> Ack | None:
        """Send one envelope on the newest connection and wait for its ack (None: no ack
        within ``timeout``). ``lose_ack``: the ack is received and thrown away, the socket
        dropped, and the envelope sent again once the app has reconnected (under a new
        envelope id with ``new_envelope``); the answer is then the second ack."""
        if kind not in ENVELOPE_TYPES:
            raise ValueError(f"not an envelope type: {kind}")
        envelope_id = envelope_id or str(uuid.uuid4())
        envelope: dict[str, Any] = {"type": kind, "envelope_id": envelope_id,
                                    "payload": payload,
                                    "accepts_response_payload": kind != "events_api"}
        if kind == "events_api":
            envelope.update(retry_attempt=0, retry_reason="")
        first = self._send(envelope, timeout)
        if not lose_ack or first is None:
            return first
        with self._lock:
            self.acks[-1] = Ack(first.envelope_id, first.type, first.payload, first.seconds,
                                first.connection, lost=True)
            before = max(link.number for link in self._links)
        self.drop()
        self.wait_connected(timeout, after=before)
        if kind == "events_api":
            envelope.update(retry_attempt=1, retry_reason="timeout")
        if new_envelope:
            envelope["envelope_id"] = str(uuid.uuid4())
        return self._send(envelope, timeout)

    def _send(self, envelope: dict[str, Any], timeout: float) -> Ack | None:
        link = self._current(timeout)
        envelope_id = envelope["envelope_id"]
        with self._lock:
            waiter = _Waiter(time.monotonic(), link.number)
            self._waiters[envelope_id] = waiter
        try:
            link.ws.send(json.dumps(envelope))
            if not waiter.done.wait(timeout):
                return None
        except ConnectionClosed:
            return None
        finally:
            with self._lock:
                self._waiters.pop(envelope_id, None)
        ack = Ack(envelope_id, envelope["type"], waiter.reply, waiter.seconds, link.number)
        with self._lock:
            self.acks.append(ack)
        return ack

    def refresh(self, *, warning: bool = True) -> None:
        """What Slack does every few hours: ``warning`` on every open connection, then,
        ``close_after`` seconds later on one still open, ``refresh_requested``; one still open
        ``close_after`` seconds after that is closed by Slack (``closed by slack`` in ``log``)."""
        with self._lock:
            links = [link for link in self._links if link.ready]
            for link in links:
                link.ready = False  # no new envelopes for a connection told to go
        for link in links:
            for reason in (("warning", "refresh_requested") if warning
                           else ("refresh_requested",)):
                if link.closed.is_set():
                    break
                try:
                    link.ws.send(json.dumps({"type": "disconnect", "reason": reason,
                                             "debug_info": {"host": "sandbox-socket"}}))
                except ConnectionClosed:
                    break
                with self._lock:
                    self._note(reason, link)
                link.closed.wait(self.close_after)
            if not link.closed.is_set():
                with self._lock:
                    self._note("closed by slack", link)
                link.ws.close(1001, "refresh")

    def drop(self) -> None:
        """Every open connection dies without a close frame (the network failed)."""
        with self._lock:
            links = [link for link in self._links if not link.closed.is_set()]
            for link in links:
                link.ready = False
                self._note("dropped", link)
        for link in links:
            with contextlib.suppress(OSError):  # already gone
                link.ws.socket.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)


"""The HTTP side: a WSGI app routing ``/slack/events`` (and, in multi-workspace mode,
``/slack/install`` and ``/slack/oauth_redirect``) to Bolt, served by waitress.

``hardcost serve`` runs this; tests run the very same app on a loopback port.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import re
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk.signature import SignatureVerifier
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from waitress.server import BaseWSGIServer, create_server
from werkzeug.wrappers import Request, Response

from hardcost.bot.payloads import payload_problem
from hardcost.sync.metrics import REGISTRY, FleetCollector, FleetReader, StoreCollector

if TYPE_CHECKING:
    from hardcost.bot.socket_mode import SocketModeLink
    from hardcost.sync.scheduler import ImportScheduler

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
SLACK_PATHS = frozenset({"/slack/events", "/slack/install", "/slack/oauth_redirect"})
"""Bolt's: the install paths answer only in multi-workspace mode (404 otherwise)."""
SLACK_TIMESTAMP = re.compile(r"[0-9]{1,12}")
MAX_SLACK_BODY = 4 * 1024 * 1024  # Slack's payloads are far smaller; a view is at most ~250 KB


WSGIApp = Callable[..., Iterable[bytes]]


def _refuse_before_bolt(environ: dict[str, Any], signing_secret: str) -> Response | None:
    """401 for a bad signature, 400 for a signed body Bolt would choke on (``bot.payloads``);
    None to hand the request to Bolt (which verifies the signature again)."""
    try:
        length = min(int(environ.get("CONTENT_LENGTH") or 0), MAX_SLACK_BODY)
    except ValueError:
        return Response("invalid request", status=400)
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    environ["wsgi.input"] = io.BytesIO(body)  # Bolt reads the body again
    environ["CONTENT_LENGTH"] = str(len(body))
    headers = {"x-slack-request-timestamp": environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP", ""),
               "x-slack-signature": environ.get("HTTP_X_SLACK_SIGNATURE", "")}
    try:
        valid = SLACK_TIMESTAMP.fullmatch(headers["x-slack-request-timestamp"]) is not None \
            and SignatureVerifier(signing_secret).is_valid_request(body, headers)
    except ValueError:  # the verifier parses the timestamp itself
        valid = False
    if not valid:
        return Response("invalid request", status=401)
    problem = payload_problem(body, environ.get("CONTENT_TYPE"))
    if problem is not None:
        log.warning("a signed Slack request refused: %s", problem)
        return Response(f"malformed request: {problem}", status=400)
    return None


def make_wsgi_app(bolt_app: App, sessions: sessionmaker[Session], *,
                  routes: dict[str, WSGIApp] | None = None,
                  scheduler: ImportScheduler | None = None,
                  signing_secret: str | None = None,
                  socket_mode: SocketModeLink | None = None) -> WSGIApp:
    """``/slack/events``, ``/slack/install``, ``/slack/oauth_redirect`` (Bolt), ``/healthz``,
    ``/metrics`` (Prometheus text format, ``hardcost.sync.metrics``) and any extra ``routes``
    by exact path (OAuth callbacks, ``/webhooks/quickbooks``).

    With ``socket_mode`` (Slack comes over a WebSocket, ``bot.socket_mode``) the Slack paths
    answer 404: everything else is served as over HTTP.

    ``/healthz`` answers 200 ``{"ok": true, "database": "ok", "scheduler": {...}}`` (plus
    ``"socket_mode": {...}`` in Socket Mode), or 503 with ``"ok": false`` and a ``reason`` when
    the database does not answer, ``scheduler`` (``hardcost serve``'s) is not running its jobs
    (see ``ImportScheduler.health``) or the Socket Mode connection has been down too long
    (``SocketModeLink.health``)."""
    slack = SlackRequestHandler(bolt_app, path="/slack/events")
    extra = routes or {}
    from_store = CollectorRegistry(auto_describe=True)
    from_store.register(StoreCollector(sessions))
    # The fleet's gauges: the scheduler's figures job reads them every 30 s; without a
    # scheduler a scrape reads them, at most every 30 s. Never a table scan per scrape.
    from_store.register(FleetCollector(scheduler.fleet if scheduler is not None
                                       else FleetReader(sessions).latest))

    def metrics(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """This process's counters, then what the database holds (the outbox, the webhook
        queue; the fleet's figures as last read), in Prometheus' text format."""
        try:
            body = generate_latest(REGISTRY) + generate_latest(from_store)
        except Exception as exc:  # noqa: BLE001 - a scrape must not take the process down
            log.warning("metrics: %s", type(exc).__name__)
            return Response(f"metrics unavailable ({type(exc).__name__})\n", status=503,
                            content_type="text/plain")(environ, start_response)
        return Response(body, content_type=CONTENT_TYPE_LATEST)(environ, start_response)

    def health(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        body: dict[str, Any] = {"ok": True, "database": "ok"}
        reasons: list[str] = []
        try:
            with sessions() as session:
                session.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - health reports, it does not raise
            body["database"] = type(exc).__name__
            reasons.append(f"the database does not answer ({type(exc).__name__})")
        if scheduler is not None:
            try:
                state = scheduler.health()
            except Exception as exc:  # noqa: BLE001
                body["scheduler"] = {"running": False}
                reasons.append(f"the scheduler's state is unknown ({type(exc).__name__})")
            else:
                body["scheduler"] = state.as_json()
                if not state.ok:
                    reasons.append(state.reason or "the scheduler is not running")
        if socket_mode is not None:
            link = socket_mode.health()
            body["socket_mode"] = link.as_json()
            if not link.ok:
                reasons.append(link.reason or "the Slack Socket Mode connection is down")
        if reasons:
            body["ok"] = False
            body["reason"] = "; ".join(reasons)
        return Response(json.dumps(body), status=503 if reasons else 200,
                        content_type="application/json")(environ, start_response)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = Request(environ).path
        if path in SLACK_PATHS and socket_mode is None:
            stamp = environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP")
            if stamp is not None and not SLACK_TIMESTAMP.fullmatch(stamp):
                # Bolt's verifier raises on a timestamp that is not a number: a 500 for what
                # is only a bad signature.
                return Response("invalid request", status=401)(environ, start_response)
            if signing_secret and path == "/slack/events":
                refused = _refuse_before_bolt(environ, signing_secret)
                if refused is not None:
                    return refused(environ, start_response)
            return slack(environ, start_response)
        if path == "/healthz":
            return health(environ, start_response)
        if path == "/metrics":
            return metrics(environ, start_response)
        if path in extra:
            return extra[path](environ, start_response)
        return Response("Not found", status=404)(environ, start_response)

    return app


@dataclass
class WebServer:
    """waitress serving the app on a port; ``stop`` shuts it down."""

    url: str
    _server: Any = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    _stopping: threading.Event = field(default_factory=threading.Event, repr=False)

    def stop(self) -> None:
        self._stopping.set()
        self._server.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> WebServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_in_thread(app: Callable[..., Iterable[bytes]], host: str = "127.0.0.1",
                    port: int = 0, threads: int = 32) -> WebServer:
    # The loop's select wakes every 0.1 s (waitress: 1 s) so that ``stop`` returns at once.
    server = create_server(app, host=host, port=port, threads=threads, ident="hardcost",
                           asyncore_loop_timeout=0.1)
    # One host and port: one listening socket, never waitress's MultiSocketServer (which
    # create_server returns for several `listen` addresses)
    if not isinstance(server, BaseWSGIServer):
        server.close()
        raise RuntimeError(f"waitress opened several sockets for {host}:{port}")
    actual = int(server.getsockname()[1])
    stopping = threading.Event()

    def run() -> None:
        try:
            server.run()
        except OSError:
            if not stopping.is_set():  # closing the socket under the loop ends it this way
                raise

    thread = threading.Thread(target=run, name=f"web:{actual}", daemon=True)
    thread.start()
    return WebServer(f"http://{host}:{actual}", server, thread, stopping)


class PortUnavailable(RuntimeError):
    """``hardcost serve`` cannot listen on its port (``PORT``): another program holds it, or
    the port needs privileges the process lacks."""


def listen_socket(host: str, port: int, variable: str = "PORT",
                  host_variable: str = "HARDCOST_HOST") -> socket.socket:
    """A socket bound to ``host:port`` for :func:`serve_forever`; taken before anything else
    starts, so that a port in use ends ``hardcost serve`` with one line naming ``variable``
    (:class:`PortUnavailable`) instead of a traceback after the scheduler has started.

    ``host`` is an IPv4 or IPv6 address (``0.0.0.0``, ``127.0.0.1``, ``::``, ``::1``; brackets
    allowed) or a name resolving to one; ``::`` also takes IPv4 where the system allows it."""
    address = host.strip()
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(
            address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError, ValueError):
        raise PortUnavailable(f"{host_variable}={host[:60]!r} is not an address to listen on: "
                              "use an address of this machine such as 0.0.0.0, 127.0.0.1, "
                              ":: or ::1") from None
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError:  # IPv6 turned off on this machine
        raise PortUnavailable(f"{host_variable}={host[:60]!r}: this machine cannot listen on "
                              "that kind of address (IPv6 turned off?)") from None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as waitress does
    if family == socket.AF_INET6 and sockaddr[0] == "::":
        # "::" means every address: IPv4 ones too (dual stack), where the system allows it
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    try:
        sock.bind(sockaddr)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortUnavailable(
                f"port {port} is already in use (another program, or another hardcost serve, "
                f"listens on it): stop it, or set {variable} to a free port") from None
        if exc.errno == errno.EACCES:
            raise PortUnavailable(
                f"port {port} needs privileges this process does not have: set {variable} "
                "to a port above 1023") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise PortUnavailable(
                f"{host_variable}={host[:60]!r} is not an address of this machine: use one it "
                "has, such as 0.0.0.0, 127.0.0.1, :: or ::1") from None
        raise
    return sock


def serve_forever(app: Callable[..., Iterable[bytes]], listener: socket.socket,
                  threads: int = 32) -> None:
    """Serve ``app`` on ``listener`` (:func:`listen_socket`) until the process is stopped."""
    create_server(app, sockets=[listener], threads=threads, ident="hardcost").run()

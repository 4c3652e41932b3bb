"""Who may read ``/metrics`` (issue 27, "Running it for months"): gates around the WSGI app of
``bot.web``, which they leave as it is.

- ``HARDCOST_METRICS_PORT``: ``/metrics`` is served on that port of 127.0.0.1 only
  (:func:`metrics_only`), and ``PORT`` answers it 404 (:func:`metrics_gate`).
- ``HARDCOST_METRICS_TOKEN``: ``/metrics`` answers 401 unless the request carries
  ``Authorization: Bearer <token>`` (compared in constant time), wherever it is served.

The token is a secret: nothing here logs it, nor what a request sent instead.
"""

from __future__ import annotations

import hmac
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

from waitress.server import create_server
from werkzeug.wrappers import Request, Response

WSGIApp = Callable[..., Iterable[bytes]]
METRICS_PATH = "/metrics"
METRICS_HOST = "127.0.0.1"
"""Where ``HARDCOST_METRICS_PORT`` listens: this machine only."""
MAX_AUTHORIZATION = 4096  # a longer header is no token of ours


def _is_metrics(environ: dict[str, Any]) -> bool:
    return Request(environ).path.rstrip("/") == METRICS_PATH


def bearer_matches(environ: dict[str, Any], token: str) -> bool:
    """Whether ``Authorization: Bearer <token>`` is in the request, compared in constant time.
    WSGI gives header values as latin-1 text: encoded back they are the bytes sent."""
    header = str(environ.get("HTTP_AUTHORIZATION") or "")[:MAX_AUTHORIZATION]
    scheme, _, given = header.strip().partition(" ")
    try:
        sent = given.strip().encode("latin-1") if scheme.lower() == "bearer" else b""
    except UnicodeEncodeError:
        sent = b""
    return hmac.compare_digest(sent, token.encode("utf-8")) and bool(sent)


def _unauthorized(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    response = Response("unauthorized: /metrics needs Authorization: Bearer <token>\n",
                        status=401, content_type="text/plain")
    response.headers["WWW-Authenticate"] = 'Bearer realm="hardcost metrics"'
    return response(environ, start_response)


def metrics_gate(app: WSGIApp, *, token: str | None, serve_metrics: bool = True) -> WSGIApp:
    """``app`` with ``/metrics`` answering 404 when it is not ``serve_metrics`` here (it has a
    port of its own), or 401 without the bearer ``token`` (when one is set)."""
    if serve_metrics and not token:
        return app

    def gated(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if _is_metrics(environ):
            if not serve_metrics:
                return Response("Not found", status=404)(environ, start_response)
            if token and not bearer_matches(environ, token):
                return _unauthorized(environ, start_response)
        return app(environ, start_response)

    return gated


def metrics_only(app: WSGIApp, *, token: str | None) -> WSGIApp:
    """What ``HARDCOST_METRICS_PORT`` serves: ``app``'s ``/metrics`` (behind the ``token`` when
    one is set), and 404 for every other path."""
    gated = metrics_gate(app, token=token)

    def only(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not _is_metrics(environ):
            return Response("Not found", status=404)(environ, start_response)
        return gated(environ, start_response)

    return only


def serve_in_background(app: WSGIApp, listener: socket.socket, name: str,
                        threads: int = 2) -> threading.Thread:
    """Serve ``app`` on ``listener`` (``bot.web.listen_socket``) from a daemon thread: it ends
    with the process."""
    server = create_server(app, sockets=[listener], threads=threads, ident="hardcost")
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    return thread

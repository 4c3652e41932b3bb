"""Serve a WSGI app on a loopback port in a background thread.

Every sandbox service (QuickBooks, Clio, later Slack) is a plain WSGI application; this module
runs one on ``127.0.0.1`` on a free port so clients talk to it over real HTTP.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

WSGIApp = Callable[..., Any]


@dataclass
class RunningServer:
    """A WSGI app listening on loopback; ``url`` has no trailing slash."""

    url: str
    _server: BaseWSGIServer = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr: the sandboxes keep their own call log."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


def serve_in_thread(app: WSGIApp, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Start ``app`` on ``host:port`` (0 = any free port) and return once it accepts."""
    server = make_server(host, port, app, threaded=True, request_handler=_QuietHandler)
    # A short poll interval: stop() waits for the serve loop to notice, once per test.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              name=f"sandbox:{server.port}", daemon=True)
    thread.start()
    return RunningServer(url=f"http://{host}:{server.port}", _server=server, _thread=thread)

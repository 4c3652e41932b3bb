"""One HTTP session per service (issue 14): connections are kept alive between calls, and the
proxy settings are read from the environment once per host, still honouring ``HTTPS_PROXY``,
``HTTP_PROXY`` and ``NO_PROXY``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from hardcost.sync.http import (
    ApiError,
    ApiSession,
    RatePacer,
    RetryPolicy,
    ServiceDown,
    StaticTokens,
)


class Recorder(ThreadingHTTPServer):
    """A loopback HTTP/1.1 server that answers ``{}`` and notes each request line and the
    client port it came from (a new port is a new TCP connection)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[tuple[str, int]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Recorder

    def _answer(self) -> None:
        self.server.seen.append((self.requestline, self.client_address[1]))
        if self.command == "CONNECT":  # a proxy that will not tunnel: enough to be seen
            self.send_response(502)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_CONNECT = _answer

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def recorders() -> Iterator[tuple[Recorder, Recorder]]:
    """(the service, a proxy) on loopback."""
    started = [Recorder(), Recorder()]
    threads = [threading.Thread(target=r.serve_forever, kwargs={"poll_interval": 0.02},
                                daemon=True) for r in started]
    for thread in threads:
        thread.start()
    yield started[0], started[1]
    for recorder in started:
        recorder.shutdown()
        recorder.server_close()


@pytest.fixture(autouse=True)
def no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy",
                 "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


def _session() -> ApiSession:
    return ApiSession("Test", tokens=StaticTokens("t"), pacer=RatePacer(10_000, 10),
                      decode_error=lambda r: ApiError("Test", f"error {r.status_code}"),
                      retry=RetryPolicy(attempts=1, sleep=lambda _: None),
                      timeout=(2.0, 5.0))


def test_calls_of_one_session_share_one_kept_alive_connection(
        recorders: tuple[Recorder, Recorder]) -> None:
    service, _ = recorders
    api = _session()
    for n in range(5):
        api.request("GET", f"{service.url}/things/{n}")
    assert [line for line, _ in service.seen] == [
        f"GET /things/{n} HTTP/1.1" for n in range(5)]
    assert len({port for _, port in service.seen}) == 1


def test_http_proxy_from_the_environment_is_used(
        recorders: tuple[Recorder, Recorder], monkeypatch: pytest.MonkeyPatch) -> None:
    service, proxy = recorders
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    _session().request("GET", f"{service.url}/things/1")
    assert [line for line, _ in proxy.seen] == [f"GET {service.url}/things/1 HTTP/1.1"]
    assert service.seen == []


def test_no_proxy_sends_that_host_direct(
        recorders: tuple[Recorder, Recorder], monkeypatch: pytest.MonkeyPatch) -> None:
    service, proxy = recorders
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    _session().request("GET", f"{service.url}/things/1")
    assert [line for line, _ in service.seen] == ["GET /things/1 HTTP/1.1"]
    assert proxy.seen == []


def test_https_proxy_from_the_environment_is_asked_to_tunnel(
        recorders: tuple[Recorder, Recorder], monkeypatch: pytest.MonkeyPatch) -> None:
    _, proxy = recorders
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    with pytest.raises(ServiceDown):
        _session().request("GET", "https://api.service.example/things/1")
    assert [line for line, _ in proxy.seen] == [
        "CONNECT api.service.example:443 HTTP/1.0"]  # how urllib3 asks a proxy to tunnel


def test_proxy_settings_are_read_once_per_session_and_host(
        recorders: tuple[Recorder, Recorder], monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment is read at a session's first call to a host: a change afterwards
    applies to the next session (a new run), not in the middle of this one."""
    service, proxy = recorders
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    api = _session()
    api.request("GET", f"{service.url}/things/1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    api.request("GET", f"{service.url}/things/2")
    assert [line for line, _ in proxy.seen] == [
        f"GET {service.url}/things/{n} HTTP/1.1" for n in (1, 2)]
    _session().request("GET", f"{service.url}/things/3")
    assert [line for line, _ in service.seen] == ["GET /things/3 HTTP/1.1"]


def test_a_session_passed_in_is_used_as_the_service_session(
        recorders: tuple[Recorder, Recorder]) -> None:
    service, _ = recorders
    own = requests.Session()
    api = ApiSession("Test", tokens=StaticTokens("t"), pacer=RatePacer(10_000, 10),
                     decode_error=lambda r: ApiError("Test", "error"), session=own)
    api.request("GET", f"{service.url}/things/1")
    assert api.http is own and own.trust_env is False
    assert [line for line, _ in service.seen] == ["GET /things/1 HTTP/1.1"]

"""What ``hardcost serve`` exposes, and where (issue 27, "Running it for months"): the bind
address (``HARDCOST_HOST``, IPv4 or IPv6), ``/metrics`` on a port of its own bound to
127.0.0.1 (``HARDCOST_METRICS_PORT``) or behind a bearer token (``HARDCOST_METRICS_TOKEN``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from typing import Any

import pytest
import requests
from werkzeug.test import Client
from werkzeug.wrappers import Response

from hardcost.bot.exposure import metrics_gate, metrics_only
from hardcost.bot.server import shown_address
from hardcost.bot.web import PortUnavailable, listen_socket, serve_forever
from hardcost.sync.config import Settings
from tests.firmkit import free_port, serve_env, wait_answering

TOKEN = "metrics-token-9f3b1c7e5a"


def _inner(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """Stands for ``bot.web``'s app: says which path it was asked for."""
    return Response(f"inner {environ['PATH_INFO']}")(environ, start_response)


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


# -- the gates, on their own -------------------------------------------------------------------

@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Bearer wrong-token",
                                    f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}",
                                    "Bearer " + "x" * 10_000, "Bearer é"])
def test_metrics_without_the_token_answers_401(header: str | None) -> None:
    client = Client(metrics_gate(_inner, token=TOKEN))
    headers = {} if header is None else {"Authorization": header}
    for path in ("/metrics", "/metrics/"):
        response = client.get(path, headers=headers)
        assert response.status_code == 401, (header, path)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert TOKEN not in response.get_data(as_text=True)


@pytest.mark.parametrize("header", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"  Bearer  {TOKEN} "])
def test_metrics_with_the_token_reaches_the_app(header: str) -> None:
    response = Client(metrics_gate(_inner, token=TOKEN)).get(
        "/metrics", headers={"Authorization": header})
    assert response.status_code == 200 and response.get_data(as_text=True) == "inner /metrics"


def test_the_token_gates_only_metrics() -> None:
    client = Client(metrics_gate(_inner, token=TOKEN))
    for path in ("/healthz", "/slack/events", "/webhooks/quickbooks", "/oauth/clio/callback"):
        assert client.get(path).get_data(as_text=True) == f"inner {path}"


def test_a_non_ascii_token_is_compared_as_the_bytes_sent() -> None:
    token = "jeton-été"
    client = Client(metrics_gate(_inner, token=token))
    sent = "Bearer " + token.encode("utf-8").decode("latin-1")  # as WSGI hands the header over
    assert client.get("/metrics", headers={"Authorization": sent}).status_code == 200
    assert client.get("/metrics", headers={"Authorization": "Bearer jeton-ete"}).status_code == 401


def test_without_a_token_or_a_port_metrics_is_served_as_before() -> None:
    assert metrics_gate(_inner, token=None) is _inner


def test_with_a_port_of_its_own_metrics_leaves_the_main_port() -> None:
    main = Client(metrics_gate(_inner, token=None, serve_metrics=False))
    assert main.get("/metrics").status_code == 404
    assert main.get("/healthz").get_data(as_text=True) == "inner /healthz"
    own = Client(metrics_only(_inner, token=None))
    assert own.get("/metrics").get_data(as_text=True) == "inner /metrics"
    for path in ("/healthz", "/slack/events", "/", "/webhooks/quickbooks"):
        assert own.get(path).status_code == 404, path
    guarded = Client(metrics_only(_inner, token=TOKEN))
    assert guarded.get("/metrics").status_code == 401
    assert guarded.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


# -- the bind address --------------------------------------------------------------------------

def test_the_default_address_is_every_ipv4_one_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HARDCOST_HOST", "HARDCOST_METRICS_PORT", "HARDCOST_METRICS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.host == "0.0.0.0"
    assert settings.metrics_port is None and settings.metrics_token is None
    monkeypatch.setenv("HARDCOST_METRICS_TOKEN", TOKEN)
    assert TOKEN not in repr(Settings())  # a secret: not in any repr or log of the settings


def _answers_on(host: str, listener: socket.socket) -> str:
    import threading

    thread = threading.Thread(target=serve_forever, args=(_inner, listener), daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    deadline = time.monotonic() + 10
    while True:
        try:
            return requests.get(f"http://{shown_address(host, port)}/healthz", timeout=2).text
        except requests.ConnectionError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_an_ipv4_address_binds_that_address() -> None:
    listener = listen_socket("127.0.0.1", 0)
    assert listener.family == socket.AF_INET
    assert listener.getsockname()[0] == "127.0.0.1"
    assert _answers_on("127.0.0.1", listener) == "inner /healthz"


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback")
@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_an_ipv6_address_binds_and_serves(host: str) -> None:
    listener = listen_socket(host, 0)
    assert listener.family == socket.AF_INET6
    assert listener.getsockname()[0] == "::1"
    assert _answers_on("::1", listener) == "inner /healthz"


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_every_ipv6_address_binds() -> None:
    listener = listen_socket("::", 0)
    assert listener.family == socket.AF_INET6 and listener.getsockname()[0] == "::"
    assert _answers_on("::1", listener) == "inner /healthz"


@pytest.mark.parametrize("host", ["not an address", "999.1.1.1", "203.0.113.7"])
def test_an_address_that_is_not_this_machines_is_named(host: str) -> None:
    with pytest.raises(PortUnavailable) as raised:
        listen_socket(host, free_port())
    assert "HARDCOST_HOST" in str(raised.value)
    assert "\n" not in str(raised.value)


# -- hardcost serve itself ---------------------------------------------------------------------

def _serve(env: dict[str, str], url: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "hardcost", "serve"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_answering(url, proc, "hardcost serve")
    return proc


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    return err


def test_serve_with_a_metrics_port_and_a_token(
        world: Any, database_url: str, serve_slack: tuple[str, str]) -> None:
    """``HARDCOST_METRICS_PORT``: ``/metrics`` on 127.0.0.1 at that port only (``PORT`` answers
    404), and with ``HARDCOST_METRICS_TOKEN`` only to its bearer; the token is in no log."""
    bot_token, slack_url = serve_slack
    port, metrics_port = free_port(), free_port()
    env = {**serve_env(world, database_url, bot_token=bot_token, slack_url=slack_url,
                       port=port),
           "HARDCOST_HOST": "127.0.0.1", "HARDCOST_METRICS_PORT": str(metrics_port),
           "HARDCOST_METRICS_TOKEN": TOKEN, "HARDCOST_LOG_LEVEL": "DEBUG"}
    proc = _serve(env, f"http://127.0.0.1:{port}/healthz")
    try:
        main = f"http://127.0.0.1:{port}"
        assert requests.get(f"{main}/healthz", timeout=10).status_code == 200
        assert requests.get(f"{main}/metrics", timeout=10, headers={
            "Authorization": f"Bearer {TOKEN}"}).status_code == 404
        own = f"http://127.0.0.1:{metrics_port}"
        wait_answering(f"{own}/metrics", proc, "hardcost serve")
        assert requests.get(f"{own}/metrics", timeout=10).status_code == 401
        assert requests.get(f"{own}/metrics", timeout=10, headers={
            "Authorization": "Bearer not-the-token"}).status_code == 401
        good = requests.get(f"{own}/metrics", timeout=10,
                            headers={"Authorization": f"Bearer {TOKEN}"})
        assert good.status_code == 200 and "hardcost_runs_total" in good.text
        assert requests.get(f"{own}/healthz", timeout=10).status_code == 404
        # the metrics port is this machine's only; PORT is on HARDCOST_HOST
        listening = _listening(proc.pid)
        assert {a for a, p in listening if p == metrics_port} == {"127.0.0.1"}, listening
        assert {a for a, p in listening if p == port} == {"127.0.0.1"}, listening
    finally:
        err = _stop(proc)
    assert TOKEN not in err
    assert "not-the-token" not in err
    assert f"serving /metrics on http://127.0.0.1:{metrics_port} only" in err, err[-3000:]


def _listening(pid: int) -> list[tuple[str, int]]:
    """The (address, port) pairs ``pid`` listens on over TCP, from /proc."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            with open(table) as file:
                lines = file.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            raw, port = fields[1].split(":")
            if width == 8:
                address = socket.inet_ntop(socket.AF_INET, bytes.fromhex(raw)[::-1])
            else:
                words = [bytes.fromhex(raw[i:i + 8])[::-1] for i in range(0, 32, 8)]
                address = socket.inet_ntop(socket.AF_INET6, b"".join(words))
            found.append((address, int(port, 16)))
    return found


def test_serve_with_a_token_keeps_metrics_on_the_main_port(
        world: Any, database_url: str, serve_slack: tuple[str, str]) -> None:
    bot_token, slack_url = serve_slack
    port = free_port()
    host = "::1" if _ipv6_loopback() else "127.0.0.1"
    env = {**serve_env(world, database_url, bot_token=bot_token, slack_url=slack_url,
                       port=port),
           "HARDCOST_HOST": host, "HARDCOST_METRICS_TOKEN": TOKEN}
    main = f"http://{shown_address(host, port)}"
    proc = _serve(env, f"{main}/healthz")
    try:
        assert requests.get(f"{main}/metrics", timeout=10).status_code == 401
        assert requests.get(f"{main}/metrics", timeout=10, headers={
            "Authorization": "Bearer nope"}).status_code == 401
        good = requests.get(f"{main}/metrics", timeout=10,
                            headers={"Authorization": f"Bearer {TOKEN}"})
        assert good.status_code == 200 and "hardcost_runs_total" in good.text
        assert requests.get(f"{main}/healthz", timeout=10).status_code == 200
        assert {address for address, p in _listening(proc.pid) if p == port} == {host}
    finally:
        err = _stop(proc)
    assert TOKEN not in err
    assert f"serving http://{shown_address(host, port)}/slack/events" in err, err[-3000:]


def test_serve_names_a_metrics_port_equal_to_port(tmp_path: Any) -> None:
    from tests.test_first_install import _mistake_env

    env = _mistake_env(tmp_path, SLACK_API_URL="http://127.0.0.1:9/api/")
    upgraded = subprocess.run([sys.executable, "-m", "hardcost", "db", "upgrade"], env=env,
                              capture_output=True, text=True, timeout=120)
    assert upgraded.returncode == 0, upgraded.stderr
    env["HARDCOST_METRICS_PORT"] = env["PORT"]
    result = subprocess.run([sys.executable, "-m", "hardcost", "serve"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"hardcost serve: HARDCOST_METRICS_PORT is PORT's port ({env['PORT']}): give /metrics "
        "a port of its own, or unset HARDCOST_METRICS_PORT"]

"""The first install, as the README and docs/setup.md describe it (issue 27, "The first install
fails"): the shipped ``.env.example`` works once its required values are filled in."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests
from slack_sdk.signature import SignatureVerifier

from hardcost.sandbox.server import serve_in_thread
from hardcost.sandbox.slack import SlackSandbox, SlackWorkspace
from hardcost.sandbox.world import SandboxWorld
from tests.firmkit import free_port, start_serve

REPO = Path(__file__).resolve().parent.parent
SECRET = "first-install-secret"


def systemd_environment_file(path: Path) -> dict[str, str]:
    """``path`` read as systemd's ``EnvironmentFile=`` reads it: ``KEY=VALUE`` lines, lines
    starting with # or ; are comments, blank lines skipped, an empty value kept as ""."""
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {raw!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


@pytest.fixture
def slack() -> Iterator[tuple[SlackSandbox, SlackWorkspace, str]]:
    sandbox = SlackSandbox()
    server = serve_in_thread(sandbox)
    sandbox.base_url = server.url
    workspace = sandbox.add_workspace("T0001")
    yield sandbox, workspace, server.url
    server.stop()


def test_env_example_as_shipped_serves_a_single_workspace(
        world: SandboxWorld, tmp_path: Path,
        slack: tuple[SlackSandbox, SlackWorkspace, str]) -> None:
    """Every uncommented line of ``.env.example`` as it ships (empty ones too: systemd sets
    them as empty strings), only the required values filled in, ``SLACK_CLIENT_ID=`` and
    ``SLACK_CLIENT_SECRET=`` empty: ``/hardcost status`` is answered with the bot token, not
    with Bolt's "your installation with this app is no longer available"."""
    sandbox, workspace, slack_url = slack
    shipped = systemd_environment_file(REPO / ".env.example")
    port = free_port()
    # The process's own environment (PATH, the venv) less anything hardcost reads, then the
    # file, then the required values and the sandbox hosts (as the tests' serve_env does).
    sandbox_env = world.environment(f"sqlite:///{tmp_path / 'hardcost.sqlite'}")
    base = {k: v for k, v in sandbox_env.items()
            if not k.startswith(("SLACK_", "QBO_", "CLIO_", "HARDCOST_", "PUBLIC_"))
            and k not in ("DATABASE_URL", "PORT")}
    env = {**base, **shipped}
    env.update({
        "DATABASE_URL": f"sqlite:///{tmp_path / 'hardcost.sqlite'}",
        "PUBLIC_URL": f"http://127.0.0.1:{port}", "PORT": str(port),
        "SLACK_BOT_TOKEN": workspace.bot_token, "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": f"{slack_url}/api/",
        **{k: v for k, v in sandbox_env.items() if k.startswith(("QBO_", "CLIO_"))},
    })
    # Multi-workspace mode's lines uncommented but left empty, as older .env.example files
    # shipped them (and as anyone may leave them): still single-workspace mode.
    env.setdefault("SLACK_CLIENT_ID", "")
    env.setdefault("SLACK_CLIENT_SECRET", "")
    upgraded = subprocess.run([sys.executable, "-m", "hardcost", "db", "upgrade"], env=env,
                              capture_output=True, text=True, timeout=120)
    assert upgraded.returncode == 0, upgraded.stderr
    proc = start_serve(env, port)
    try:
        body = urlencode({
            "team_id": "T0001", "user_id": "U1", "command": "/hardcost", "text": "status",
            "channel_id": "C1", "response_url": sandbox.response_url(
                "T0001", user_id="U1", channel_id="C1")})
        ts = str(int(time.time()))
        response = requests.post(f"http://127.0.0.1:{port}/slack/events", data=body,
                                 timeout=10, headers={
            "X-Slack-Request-Timestamp": ts,
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Signature": SignatureVerifier(SECRET).generate_signature(
                timestamp=ts, body=body)})
        assert response.status_code == 200, response.text
        assert "no longer available" not in response.text, response.text
        deadline = time.monotonic() + 20
        while not workspace.messages:
            assert time.monotonic() < deadline, "/hardcost status was never answered"
            time.sleep(0.1)
        answer = json.dumps(workspace.messages[-1])
        # hardcost's own answer for a workspace without a firm yet, through the bot token
        assert "not set up with hardcost yet" in answer, answer
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


BLOCK_JSONSCHEMA = """
import importlib.abc, sys

class NoJsonschema(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "jsonschema" or name.startswith("jsonschema."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoJsonschema())
from hardcost.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_demo_runs_without_jsonschema(tmp_path: Path) -> None:
    """A plain install (no dev extra: no jsonschema): the README's first command,
    ``hardcost demo``, runs; the sandbox Clio, which would check every request against the
    committed extract of Clio's OpenAPI document, says in one line that it skips the check."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLACK_", "QBO_", "CLIO_", "HARDCOST_"))}
    result = subprocess.run([sys.executable, "-c", BLOCK_JSONSCHEMA, "demo"], env=env,
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "Run 1: imported 5" in result.stdout
    said = [line for line in result.stderr.splitlines() if "jsonschema" in line]
    assert len(said) == 1 and "OpenAPI" in said[0], result.stderr


def _mistake_env(tmp_path: Path, **values: str) -> dict[str, str]:
    """A working single-workspace environment (SQLite in ``tmp_path``), then ``values``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLACK_", "QBO_", "CLIO_", "HARDCOST_"))
           and k not in ("DATABASE_URL", "PORT", "PUBLIC_URL")}
    env.update({"DATABASE_URL": f"sqlite:///{tmp_path / 'hardcost.sqlite'}",
                "SLACK_BOT_TOKEN": "xoxb-test", "SLACK_SIGNING_SECRET": SECRET,
                "PORT": str(free_port()), "HARDCOST_LOG_LEVEL": "WARNING"})
    env.update(values)
    return env


MISTAKES = {
    # (command, the variables set wrong, a word the answer must hold)
    "database_url_garbage": ("db", {"DATABASE_URL": "garbage"}, "DATABASE_URL"),
    "database_url_mysql": ("db", {"DATABASE_URL": "mysql://user:pw@127.0.0.1/hardcost"},
                           "DATABASE_URL"),
    "database_url_unknown_scheme": ("serve", {"DATABASE_URL": "postgres2://h/x"},
                                    "DATABASE_URL"),
    "postgresql_unreachable": ("db", {"DATABASE_URL": "postgresql://hardcost@127.0.0.1:9/x",
                                      "HARDCOST_SECRET_KEY": "UNSET"}, "DATABASE_URL"),
    "postgresql_unreachable_serve": (
        "serve", {"DATABASE_URL": "postgresql://hardcost@127.0.0.1:9/x",
                  "HARDCOST_SECRET_KEY": "UNSET"}, "DATABASE_URL"),
    "port_not_a_number": ("serve", {"PORT": "abc"}, "PORT"),
    "import_threads_zero": ("serve", {"HARDCOST_IMPORT_THREADS": "0"},
                            "HARDCOST_IMPORT_THREADS"),
    "slack_unreachable": ("serve", {"SLACK_API_URL": "http://127.0.0.1:9/api/"},
                          "SLACK_API_URL"),
}


@pytest.mark.parametrize("case", sorted(MISTAKES))
def test_a_common_mistake_is_named_in_a_line_not_a_traceback(case: str, tmp_path: Path) -> None:
    """Each mistake of a first install ends the command with a short answer naming the
    variable (or the service) to fix, status non-zero, and no traceback."""
    command, values, name = MISTAKES[case]
    if values.get("HARDCOST_SECRET_KEY") == "UNSET":
        from hardcost.sync.crypto import generate_key
        values = {**values, "HARDCOST_SECRET_KEY": generate_key()}
    env = _mistake_env(tmp_path, **values)
    if command == "serve" and "DATABASE_URL" not in values:
        upgraded = subprocess.run([sys.executable, "-m", "hardcost", "db", "upgrade"],
                                  env=_mistake_env(tmp_path), capture_output=True, text=True,
                                  timeout=120)
        assert upgraded.returncode == 0, upgraded.stderr
    argv = ["db", "upgrade"] if command == "db" else ["serve"]
    result = subprocess.run([sys.executable, "-m", "hardcost", *argv], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 3, result.stderr[-3000:]
    assert name in result.stderr, result.stderr
    assert "pw@" not in result.stderr  # a password in the URL is never shown


def test_a_port_in_use_is_named_in_a_line_not_a_traceback(tmp_path: Path) -> None:
    """``hardcost serve`` on a port another program listens on ends with one line naming the
    port and PORT, status non-zero, no traceback, before it starts anything else (nor calls
    Slack)."""
    upgraded = subprocess.run([sys.executable, "-m", "hardcost", "db", "upgrade"],
                              env=_mistake_env(tmp_path), capture_output=True, text=True,
                              timeout=120)
    assert upgraded.returncode == 0, upgraded.stderr
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "hardcost", "serve"], capture_output=True, text=True,
            env=_mistake_env(tmp_path, PORT=str(port), SLACK_API_URL="http://127.0.0.1:9/api/"),
            timeout=120)

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [
        f"hardcost serve: port {port} is already in use (another program, or another hardcost "
        "serve, listens on it): stop it, or set PORT to a free port"]


def test_an_empty_variable_is_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """``PORT=`` and ``HARDCOST_IMPORT_THREADS=`` (an env file's empty lines) are unset ones:
    their defaults, not a validation error."""
    from hardcost.sync.config import Settings

    monkeypatch.setenv("PORT", "")
    monkeypatch.setenv("HARDCOST_IMPORT_THREADS", "")
    monkeypatch.setenv("SLACK_CLIENT_ID", "")
    settings = Settings()
    assert settings.port == 3000 and settings.scheduler_threads == 8
    assert settings.slack_client_id is None

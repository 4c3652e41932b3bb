"""``hardcost doctor``: one line per check, ``ok`` or ``FAIL: <what to do>``, exit 1 when any
check fails (issue 27). Against the sandbox QuickBooks, Clio and Slack, and a stand-in for the
public URL (as the shipped proxy serves it)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from hardcost import cli
from hardcost.bot.ui.pages import oauth_page
from hardcost.sandbox.server import serve_in_thread
from hardcost.sync.config import get_settings
from hardcost.sync.store import Connection
from tests.firmkit import Firm, env_for

Doctor = Callable[..., tuple[int, list[str]]]


def _proxy(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """A stand-in for the public URL as deploy/Caddyfile serves it: Clio's OAuth redirect
    comes back with hardcost's own page (no parameters: the link is not valid); anything
    else, ``/healthz`` included, is 404."""
    if environ.get("PATH_INFO") == "/oauth/clio/callback":
        start_response("400 Bad Request", [("Content-Type", "text/html; charset=utf-8")])
        return [oauth_page("This link is not valid", "Start again from Slack.",
                           ok=False).encode()]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]


def _not_forwarded(environ: dict[str, Any],
                   start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]


@pytest.fixture
def doctor(firm: Firm, database_url: str, serve_slack: tuple[str, str],
           monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
           ) -> Iterator[Doctor]:
    """``hardcost doctor`` in this process, with a sandbox world's environment: the conftest
    firm, the sandbox Slack's bot token and a public URL that reaches hardcost."""
    bot_token, slack_url = serve_slack
    public = serve_in_thread(_proxy)
    base = {**env_for(firm.world, database_url), "SLACK_BOT_TOKEN": bot_token,
            "SLACK_API_URL": f"{slack_url}/api/", "SLACK_SIGNING_SECRET": "s3cret",
            "PUBLIC_URL": public.url}

    def run(**overrides: str | None) -> tuple[int, list[str]]:
        env = {**base, **overrides}
        for name in list(os.environ):
            if name.startswith(("SLACK_", "QBO_", "CLIO_")) or name in (
                    "DATABASE_URL", "PUBLIC_URL"):
                monkeypatch.delenv(name)
        for name, value in env.items():
            if value is not None:
                monkeypatch.setenv(name, value)
        status = cli.main(["doctor"])
        out = capsys.readouterr().out
        return status, out.splitlines()

    yield run
    get_settings.cache_clear()
    public.stop()


def _fails(lines: list[str]) -> list[str]:
    return [line for line in lines if ": FAIL: " in line]


def test_all_ok_against_the_sandbox_world(doctor: Doctor, firm: Firm) -> None:
    status, lines = doctor()

    assert _fails(lines) == [] and status == 0, lines
    names = [line.split(": ", 1)[0] for line in lines]
    assert names == ["configuration", "database", "Slack", f"firm {firm.id} QuickBooks",
                     f"firm {firm.id} Clio", "QuickBooks webhooks", "public URL"]
    assert all(": ok" in line for line in lines), lines
    assert any(line.startswith("Slack: ok (workspace ") for line in lines)
    assert any(line.startswith("public URL: ok (") and "/oauth/clio/callback reaches hardcost"
               in line for line in lines)


def test_a_database_that_is_not_migrated_fails_its_line(doctor: Doctor, tmp_path: Path) -> None:
    status, lines = doctor(DATABASE_URL=f"sqlite:///{tmp_path / 'empty.sqlite'}")

    assert status == 1
    assert _fails(lines) == [
        f"database: FAIL: the schema of sqlite:///{tmp_path / 'empty.sqlite'} is at nothing, "
        f"not {_head()}: run `hardcost db upgrade`."], lines
    assert not any(line.startswith("firm ") for line in lines)  # nothing to read them from
    assert "Slack: ok" in "\n".join(lines)


def test_a_slack_token_slack_rejects_fails_its_line_without_showing_it(
        doctor: Doctor) -> None:
    status, lines = doctor(SLACK_BOT_TOKEN="xoxb-not-a-real-token-12345")

    assert status == 1
    fails = _fails(lines)
    assert len(fails) == 1 and fails[0].startswith(
        "Slack: FAIL: Slack refused SLACK_BOT_TOKEN (invalid_auth): "), lines
    assert not any("not-a-real-token" in line for line in lines)


def test_multi_workspace_mode_skips_the_token_check_and_says_so(doctor: Doctor) -> None:
    status, lines = doctor(SLACK_BOT_TOKEN=None, SLACK_CLIENT_ID="1.2",
                           SLACK_CLIENT_SECRET="shh")

    assert status == 0, lines
    assert any(line.startswith("Slack: skipped (multi-workspace (OAuth) mode") for line in lines)


def test_a_clio_token_clio_rejects_fails_that_firms_clio_line(
        doctor: Doctor, firm: Firm) -> None:
    with firm.sessions() as session:
        token = session.scalar(select(Connection.access_token).where(
            Connection.firm_id == firm.id, Connection.provider == "clio"))
    refused = requests.post(f"{firm.world.clio_server.url}/oauth/deauthorize",
                            headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert refused.status_code == 200

    status, lines = doctor()

    assert status == 1
    fails = _fails(lines)
    assert len(fails) == 1 and fails[0].startswith(f"firm {firm.id} Clio: FAIL: "), lines
    assert fails[0].endswith("In Slack: /hardcost connect clio."), fails
    assert f"firm {firm.id} QuickBooks: ok" in lines
    assert not any(str(token) in line for line in lines)


def _head() -> str:
    from hardcost.sync.db import head_revision

    head = head_revision()
    assert head is not None
    return head


def test_a_proxy_that_does_not_forward_the_public_paths_fails(doctor: Doctor) -> None:
    elsewhere = serve_in_thread(_not_forwarded)
    try:
        status, lines = doctor(PUBLIC_URL=elsewhere.url)
    finally:
        elsewhere.stop()
    assert status == 1
    [line] = _fails(lines)
    assert line.startswith("public URL: FAIL: ") and "answered 404 but not with hardcost's page" \
        in line, line

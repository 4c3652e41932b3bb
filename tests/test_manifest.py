"""manifest.yml creates the app in one step and names every route the app serves."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlalchemy.orm import Session, sessionmaker

from bot.ui.views import (
    ACTION_SEARCH_MATTER,
)

MANIFEST = Path(__file__).resolve().parents[1] / "manifest.yml"


def _manifest() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(MANIFEST.read_text())


def test_manifest_parses_with_the_required_sections() -> None:
    manifest = _manifest()

    assert {"display_information", "features", "oauth_config", "settings"} <= set(manifest)
    assert manifest["display_information"]["name"] == "hardcost"


def test_slash_command_points_at_the_events_route() -> None:
    [command] = _manifest()["features"]["slash_commands"]

    assert command["command"] == "/hardcost" and len(command["command"]) <= 32
    assert command["url"] == "https://YOUR-HOST/slack/events"
    assert "settings" in command["usage_hint"]


def test_interactivity_events_and_options_load_use_the_served_route() -> None:
    settings = _manifest()["settings"]

    assert settings["interactivity"]["is_enabled"] is True
    assert settings["interactivity"]["request_url"] == "https://YOUR-HOST/slack/events"
    # the external select (ACTION_SEARCH_MATTER) loads its options here
    assert ACTION_SEARCH_MATTER and \
        settings["interactivity"]["message_menu_options_url"] == "https://YOUR-HOST/slack/events"
    assert settings["event_subscriptions"]["request_url"] == "https://YOUR-HOST/slack/events"
    assert "app_home_opened" in settings["event_subscriptions"]["bot_events"]


def test_app_home_and_scopes() -> None:
    manifest = _manifest()

    assert manifest["features"]["app_home"]["home_tab_enabled"] is True
    assert {"commands", "chat:write", "chat:write.public", "channels:read", "users:read"} <= \
        set(manifest["oauth_config"]["scopes"]["bot"])


def test_every_manifest_url_is_a_route_the_app_serves(rig_app: object) -> None:
    from werkzeug.test import Client

    text = MANIFEST.read_text()
    paths = {line.split("https://YOUR-HOST", 1)[1].split()[0].strip('"')
             for line in text.splitlines()
             if "https://YOUR-HOST" in line and not line.lstrip().startswith("#")}
    client = Client(rig_app)  # type: ignore[arg-type]

    assert paths == {"/slack/events"}
    for path in paths:
        # unsigned: Bolt refuses it, which shows the route is Bolt's and not a 404
        assert client.post(path, data="x").status_code == 401
    assert client.post("/not-a-route").status_code == 404


@pytest.fixture
def rig_app(sessions: sessionmaker[Session]) -> object:
    from slack_bolt import App
    from slack_sdk import WebClient

    from bot.web import make_wsgi_app

    app = App(client=WebClient(token="xoxb-test"), signing_secret="s",
              token_verification_enabled=False)
    return make_wsgi_app(app, sessions)

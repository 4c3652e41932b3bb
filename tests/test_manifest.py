"""manifest.yml creates the app in one step and names every route the app serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.orm import Session, sessionmaker

from hardcost.bot.ui.content import (
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
    assert {"commands", "chat:write", "chat:write.public", "channels:read", "users:read",
            "files:write"} <= set(manifest["oauth_config"]["scopes"]["bot"])


def test_the_install_flow_asks_for_exactly_the_manifests_scopes() -> None:
    from hardcost.bot.install import SCOPES

    assert set(SCOPES) == set(_manifest()["oauth_config"]["scopes"]["bot"])


def test_a_private_channel_works_with_only_the_manifests_scopes(rig: Any) -> None:
    """Issue 10 #14: ``conversations.info`` on a private channel needs ``groups:read``, which
    the manifest did not ask for, so ``set channel`` to a private channel always failed."""
    import time

    rig.ws.scopes = set(_manifest()["oauth_config"]["scopes"]["bot"])
    private = rig.ws.add_channel("partners-only", is_private=True, bot_is_member=True)

    rig.command(f"set channel <#{private['id']}|partners-only>")

    deadline = time.monotonic() + 10
    while not any("post in #partners-only" in str(m.get("blocks"))
                  for m in rig.replies_to(rig.admin)):
        assert time.monotonic() < deadline, [m.get("text") for m in rig.replies_to(rig.admin)]
        time.sleep(0.05)


def test_redirect_url_is_the_install_flows_route() -> None:
    assert _manifest()["oauth_config"]["redirect_urls"] == [
        "https://YOUR-HOST/slack/oauth_redirect"]


def test_every_manifest_url_is_a_route_the_app_serves(rig_app: object) -> None:
    from werkzeug.test import Client

    text = MANIFEST.read_text()
    paths = {line.split("https://YOUR-HOST", 1)[1].split()[0].strip('"')
             for line in text.splitlines()
             if "https://YOUR-HOST" in line and not line.lstrip().startswith("#")}
    client = Client(rig_app)  # type: ignore[arg-type]

    assert paths == {"/slack/events", "/slack/oauth_redirect"}
    # unsigned: Bolt refuses it, which shows the route is Bolt's and not a 404
    assert client.post("/slack/events", data="x").status_code == 401
    # the browser comes back here from Slack; without the install's state it is refused
    redirect = client.get("/slack/oauth_redirect?code=c&state=s")
    assert redirect.status_code == 400 and "hardcost" in redirect.get_data(as_text=True)
    install = client.get("/slack/install")  # off to Slack's own consent page
    assert install.status_code == 302
    location = install.headers["Location"]
    assert location.startswith("https://slack.com/oauth/v2/authorize?")
    assert "redirect_uri=https://hardcost.example/slack/oauth_redirect" in location
    assert client.post("/not-a-route").status_code == 404


@pytest.fixture
def rig_app(sessions: sessionmaker[Session]) -> object:
    """The app in multi-workspace mode: it serves every route the manifest names."""
    from hardcost.bot.app import build_app
    from hardcost.bot.context import BotContext
    from hardcost.bot.web import make_wsgi_app
    from hardcost.sync.config import Settings

    config = Settings(SLACK_CLIENT_ID="cid", SLACK_CLIENT_SECRET="secret",
                      SLACK_SIGNING_SECRET="s", PUBLIC_URL="https://hardcost.example")
    ctx = BotContext(sessions=sessions, config=config, importer_for=lambda firm_id: None)
    return make_wsgi_app(build_app(ctx), sessions)

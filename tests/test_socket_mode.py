"""Socket Mode end to end: the real Bolt app connected to the sandbox Slack's WebSocket
(``sandbox/slack_socket.py``) the way ``hardcost serve`` connects with ``SLACK_APP_TOKEN``.

The behaviour tests of commands, clicks, selects, the settings modal and App Home run over
both transports in ``tests/test_slack_app.py`` (``both_transports``); this file is about the
connection itself: the HTTP routes served beside it, reconnects, redeliveries, ``/healthz``.
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest
import requests
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from hardcost.bot.socket_mode import SocketModeLink
from hardcost.sandbox.slack_rig import SlackRig, button_value, wait_for
from hardcost.sandbox.slack_socket import SocketModeSandbox

pytestmark = pytest.mark.parametrize("transport", ["socket"], indirect=True)


def _blocks_text(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks") or []) + message.get("text", "")


def _socket(rig: SlackRig) -> SocketModeSandbox:
    assert rig.socket is not None
    return rig.socket


def _health(rig: SlackRig) -> tuple[int, dict[str, Any]]:
    response = requests.get(f"{rig.web.url}/healthz", timeout=10)
    return response.status_code, response.json()


def _acme_prompt(rig: SlackRig) -> dict[str, Any]:
    rig.firm.client("Acme Holdings", ["Lease", "Employment", "Litigation"])
    rig.firm.expense(("48.75", "Acme Holdings", "Courier"), doc_number="2001")
    assert rig.command("run").status_code == 200
    return wait_for(lambda: rig.prompts()[0] if rig.prompts() else None, what="the prompt")


# -- the sandbox's Socket Mode endpoint --------------------------------------------------------

def test_apps_connections_open_takes_the_app_level_token_only(rig: SlackRig) -> None:
    api = f"{rig.slack_server.url}/api/"

    url = WebClient(base_url=api).apps_connections_open(app_token=rig.slack.app_token)["url"]

    assert url.startswith("ws://127.0.0.1:") and "ticket=" in url
    for token, error in ((rig.ws.bot_token, "not_allowed_token_type"),
                         ("xapp-1-A0HARDCOST-1-forged", "invalid_auth")):
        with pytest.raises(SlackApiError) as refused:
            WebClient(base_url=api).apps_connections_open(app_token=token)
        assert refused.value.response["error"] == error
    with connect(url) as first:  # a ticket opens one connection
        assert json.loads(first.recv(timeout=5))["type"] == "hello"
        with pytest.raises(InvalidStatus) as again:
            connect(url)
        assert again.value.response.status_code == 401


def test_a_wrong_app_token_stops_the_app_from_starting(rig: SlackRig) -> None:
    link = SocketModeLink(rig.app, "xapp-1-A0HARDCOST-1-wrong", ping_interval=0.5)
    try:
        with pytest.raises(SlackApiError, match="invalid_auth"):
            link.connect()
    finally:
        link.close()


def test_envelopes_are_acked_with_their_payloads(rig: SlackRig) -> None:
    socket = _socket(rig)

    rig.command("help")
    rig.event({"type": "app_home_opened", "user": rig.staff, "tab": "home", "channel": "D0"})
    wait_for(lambda: rig.ws.home_views.get(rig.staff), what="App Home")

    command, event = socket.acks[-2:]
    assert command.type == "slash_commands" and "/hardcost help" in json.dumps(command.payload)
    assert event.type == "events_api" and not event.payload  # events take no response payload
    assert socket.unmatched == []


# -- HTTP beside the socket --------------------------------------------------------------------

def test_in_socket_mode_http_serves_everything_but_the_slack_paths(rig: SlackRig) -> None:
    signed = rig.post(rig.command_body("pause"), "application/x-www-form-urlencoded")
    status, health = _health(rig)
    callback = requests.get(f"{rig.web.url}/oauth/quickbooks/callback",
                            params={"state": "nope", "code": "x"}, timeout=10)
    webhook = requests.post(f"{rig.web.url}/webhooks/quickbooks", data=b"{}", timeout=10,
                            headers={"Content-Type": "application/json"})
    metrics = requests.get(f"{rig.web.url}/metrics", timeout=10)

    assert signed.status_code == 404  # Slack comes over the socket, not to /slack/events
    assert requests.get(f"{rig.web.url}/slack/install", timeout=10).status_code == 404
    assert status == 200 and health["ok"] is True
    assert health["socket_mode"]["connected"] is True
    assert health["socket_mode"]["last_message"] is not None
    assert callback.status_code == 400 and "not valid" in callback.text.lower()
    assert webhook.status_code in (401, 503)  # the route is there: unsigned, refused
    assert metrics.status_code == 200
    time.sleep(0.2)
    with rig.firm.sessions() as session:
        from hardcost.sync.store import FirmSettings

        settings = session.get(FirmSettings, rig.firm.id)
        assert settings is not None and settings.paused is False


def test_without_webhooks_status_says_changes_come_with_scheduled_runs_only(
        rig: SlackRig) -> None:
    """A firm whose server has no public address sets no ``QBO_WEBHOOK_VERIFIER``: QuickBooks
    cannot reach it, and ``/hardcost status`` says how changes come in instead."""
    rig.command("status")
    with_webhooks = wait_for(lambda: next((m for m in rig.replies_to(rig.admin)
                                           if "QuickBooks" in _blocks_text(m)), None))
    rig.ctx.config = rig.ctx.config.model_copy(update={"qbo_webhook_verifier": None})

    rig.command("status")

    without = wait_for(lambda: next((m for m in rig.replies_to(rig.admin)
                                     if "scheduled runs only" in _blocks_text(m)), None),
                       what="status naming scheduled runs only")
    assert "every 15 minutes" in _blocks_text(without)
    assert "scheduled runs only" not in _blocks_text(with_webhooks)


# -- reconnects --------------------------------------------------------------------------------

def test_after_a_disconnect_envelope_the_app_reconnects_by_itself(rig: SlackRig) -> None:
    socket = _socket(rig)
    first = socket.wait_connected()

    socket.refresh()  # warning, then refresh_requested if the app is still there

    socket.wait_connected(after=first)
    assert (first, "closed") in [(n, what) for _, what, n in socket.log]
    assert (first, "closed by slack") not in [(n, what) for _, what, n in socket.log]
    answer = rig.command("help")
    assert answer.status_code == 200 and "status" in answer.text
    assert socket.acks[-1].connection > first
    status, health = _health(rig)
    assert status == 200 and health["socket_mode"]["connected"] is True
    assert health["socket_mode"]["reconnects"] >= 1
    assert health["socket_mode"]["disconnects_requested"] >= 1


def test_after_a_dropped_socket_the_app_reconnects_by_itself(rig: SlackRig) -> None:
    socket = _socket(rig)
    first = socket.wait_connected()

    socket.drop()  # no close frame: the app notices the pongs stop

    socket.wait_connected(after=first, timeout=30)
    prompt = _acme_prompt(rig)
    lease = rig.firm.clio.matters[rig.firm.matters["Lease"]]
    rig.click(prompt, "hc_choose_matter", value=button_value(prompt, lease["display_number"]))
    assert wait_for(lambda: rig.firm.entries())[0]["matter"]["id"] == lease["id"]
    assert _health(rig)[1]["socket_mode"]["reconnects"] >= 1


def test_healthz_is_503_while_the_socket_stays_down_and_200_once_back(rig: SlackRig) -> None:
    socket = _socket(rig)
    link = rig.link
    assert link is not None
    first = socket.wait_connected()
    link.grace = 0.0  # production waits DOWN_GRACE seconds before it says so

    socket.refusing = True
    socket.drop()
    status, health = wait_for(lambda: (answer := _health(rig))[0] == 503 and answer,
                              timeout=30, what="/healthz saying the socket is down")

    assert health["ok"] is False and "Socket Mode" in health["reason"]
    assert health["socket_mode"]["connected"] is False
    socket.refusing = False
    socket.wait_connected(after=first, timeout=30)
    status, health = wait_for(lambda: (answer := _health(rig))[0] == 200
                              and answer[1]["socket_mode"]["reconnects"] >= 1 and answer,
                              what="/healthz back to 200, counting the reconnect")
    assert health["ok"] is True and health["socket_mode"]["connected"] is True


# -- redeliveries ------------------------------------------------------------------------------

@pytest.mark.parametrize("new_envelope", [False, True], ids=["same-envelope", "new-envelope"])
def test_a_click_whose_ack_was_lost_is_not_run_twice(rig: SlackRig, new_envelope: bool) -> None:
    """Slack did not get the ack (the socket died on the way) and sends the click again on
    the new connection: the app acks it with the first answer and does not run it again."""
    socket = _socket(rig)
    prompt = _acme_prompt(rig)
    lease = rig.firm.clio.matters[rig.firm.matters["Lease"]]
    value = button_value(prompt, lease["display_number"])

    ack = socket.deliver("interactive",
                         rig.click_payload(prompt, "hc_choose_matter", value=value),
                         lose_ack=True, new_envelope=new_envelope, timeout=30)

    assert ack is not None
    lost = [a for a in socket.acks if a.lost]
    assert len(lost) == 1 and lost[0].connection < ack.connection
    assert (ack.envelope_id == lost[0].envelope_id) is not new_envelope
    entry = wait_for(lambda: rig.firm.entries(), what="the entry")[0]
    assert entry["matter"]["id"] == lease["id"]
    # The first click still wins: a later one, by someone else, is told who answered.
    late = rig.ws.add_user("Lou Late")["id"]
    rig.click(prompt, "hc_choose_matter", value=value, user=late)
    reply = wait_for(lambda: next((m for m in rig.replies_to(late)
                                   if "Already answered" in _blocks_text(m)), None),
                     what="the late clicker is told")
    assert rig.staff in _blocks_text(reply)
    assert len(rig.firm.entries()) == 1
    assert not any("Already answered" in _blocks_text(m) for m in rig.replies_to(rig.staff))
    assert _health(rig)[1]["socket_mode"]["redeliveries_skipped"] == 1


def test_a_command_whose_ack_was_lost_starts_one_run(rig: SlackRig) -> None:
    socket = _socket(rig)
    rig.firm.client("Jane Smith", ["Smith estate"])
    rig.firm.expense(("435.00", "Jane Smith", "Filing fee"))

    ack = socket.deliver("slash_commands", rig.command_fields("run"), lose_ack=True,
                         timeout=30)

    assert ack is not None and "Starting an import" in json.dumps(ack.payload)
    wait_for(lambda: any("$435.00" in _blocks_text(m) for m in rig.channel_messages()),
             what="the summary")
    with rig.firm.sessions() as session:
        from sqlalchemy import func, select

        from hardcost.sync.store import Run

        runs = session.scalar(select(func.count()).select_from(Run).where(
            Run.firm_id == rig.firm.id))
    assert runs == 1
    assert len(rig.firm.entries()) == 1
    time.sleep(0.5)  # a second run would have answered by now: "Nothing new" or "under way"
    assert not any(("Nothing new" in _blocks_text(m) or "under way" in _blocks_text(m))
                   for m in rig.replies_to(rig.admin))
    assert _health(rig)[1]["socket_mode"]["redeliveries_skipped"] == 1


# -- hardcost serve ----------------------------------------------------------------------------

def test_hardcost_serve_in_socket_mode_answers_over_the_socket_and_serves_http(
        rig: SlackRig, database_url: str) -> None:
    """The command line as a firm runs it: ``SLACK_APP_TOKEN`` set, Slack over the socket,
    ``/healthz`` and the rest over HTTP on ``PORT``."""
    from tests.firmkit import free_port, serve_env, start_serve

    socket = _socket(rig)
    rig.link.close()  # type: ignore[union-attr]  # the process below is the app now
    port = free_port()
    env = {**serve_env(rig.firm.world, database_url, bot_token=rig.ws.bot_token,
                       slack_url=rig.slack_server.url, port=port,
                       signing_secret="s3cret-signing"),
           "SLACK_APP_TOKEN": rig.slack.app_token}
    before = socket.connections
    proc = start_serve(env, port)
    try:
        socket.wait_connected(after=before, timeout=30)
        health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()
        answer = rig.command("help")
        events = requests.post(f"http://127.0.0.1:{port}/slack/events", timeout=10, data=b"")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert health["socket_mode"]["connected"] is True
    assert answer.status_code == 200 and "status" in answer.text
    assert events.status_code == 404


def test_a_dropped_socket_is_noticed_and_replaced_within_15_seconds(rig: SlackRig) -> None:
    """Issue 21: with the production ping settings (not the rig's quick ones), a socket that
    dies without a close frame (as a NAT timeout leaves it) is replaced within 15 s."""
    socket = _socket(rig)
    assert rig.link is not None
    rig.link.close()
    rig.link = SocketModeLink(rig.app, rig.slack.app_token)  # PING_INTERVAL, as in production
    rig.link.connect()
    first = socket.wait_connected(after=socket.connections - 1)
    time.sleep(1.0)  # a ping or two answered: the connection is an established one

    socket.drop()  # no close frame

    socket.wait_connected(after=first, timeout=15)  # polls; raises after 15 s
    assert rig.command("help").status_code == 200
    assert rig.link.health().reconnects >= 1

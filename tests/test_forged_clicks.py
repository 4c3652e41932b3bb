"""Forged clicks (issue 19): values Slack never sends and payloads without ``response_url``.

Every listener answers the clicker or drops the click with a log line: none raises in the lazy
work after the ack (Bolt logs that as "Failed to run an internal function", and the clicker
hears nothing).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest

from hardcost.sandbox.slack_rig import SlackRig, wait_for


def _crashes(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.ERROR and
            (r.exc_info or "Failed to run an internal function" in r.getMessage())]


def _payload(rig: SlackRig, action: dict[str, Any], *,
             response_url: bool = True, channel: bool = True) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "type": "block_actions", "team": {"id": rig.ws.team_id},
        "user": {"id": rig.staff, "team_id": rig.ws.team_id}, "api_app_id": "A0APP",
        "actions": [{"block_id": "hc_prompt:1", "action_ts": "1.2", **action}],
        "trigger_id": rig.ws.trigger_id()}
    if channel:
        payload["container"] = {"type": "message", "message_ts": "1.1",
                                "channel_id": rig.channel}
        payload["channel"] = {"id": rig.channel}
    if response_url:
        payload["response_url"] = rig.slack.response_url(rig.ws.team_id, user_id=rig.staff,
                                                         channel_id=rig.channel)
    return payload


@pytest.mark.parametrize("value", [
    '{"n":10,"c":"\\u0000"}', '{"n":10,"p":"\\u0000"}', '{"n":10,"b":99999999999999999999}',
    '{"n":10,"b":9223372036854775808}', '{"n":10,"b":2147483648}'])
def test_forged_older_buttons_are_answered_without_an_exception(
        rig: SlackRig, value: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    before = len(rig.replies_to(rig.staff))

    response = rig.interaction(_payload(rig, {"action_id": "hc_history_older",
                                              "type": "button", "value": value}))

    assert response.status_code < 500
    if response.status_code == 200:  # a NUL is refused before Bolt reads the payload (400)
        wait_for(lambda: len(rig.replies_to(rig.staff)) > before, what="an answer")
    time.sleep(0.3)
    assert not _crashes(caplog), _crashes(caplog)


NO_RESPONSE_URL = [
    ("hc_undo_choice", {"value": "1"}),
    ("hc_make_rule", {"value": "1"}),
    ("hc_remove_rule", {"value": "1"}),
    ("hc_group_matter", {"selected_option": {"value": "1:2"}}),
    ("hc_stop_run", {"value": "1"}),
    ("hc_history_older", {"value": json.dumps({"n": 10})}),
    ("hc_search_matter", {"selected_option": {"value": "1:2"}}),
    ("hc_choose_contact", {"value": "1:2"}),
    ("hc_select_contact", {"selected_option": {"value": "1:2"}}),
    ("hc_choose_matter", {"value": "1:2"}),
    ("hc_not_client_cost", {"value": "1"}),
    ("hc_retry_failure", {"value": "1"}),
    ("hc_remove_undone_rule", {"value": "1"}),
    ("hc_rules_page", {"value": "x"}),
]


@pytest.mark.parametrize(("action_id", "action"), NO_RESPONSE_URL,
                         ids=[a for a, _ in NO_RESPONSE_URL])
def test_a_click_without_response_url_is_answered_in_the_channel(
        rig: SlackRig, action_id: str, action: dict[str, Any],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    before = len(rig.replies_to(rig.staff))

    response = rig.interaction(_payload(rig, {"action_id": action_id, "type": "button",
                                              **action}, response_url=False))

    assert response.status_code < 500
    answers = wait_for(lambda: rig.replies_to(rig.staff)[before:], what="an ephemeral answer")
    assert answers[0]["channel"] == rig.channel
    time.sleep(0.3)
    assert not _crashes(caplog), _crashes(caplog)


@pytest.mark.parametrize(("action_id", "action"), NO_RESPONSE_URL[:8],
                         ids=[a for a, _ in NO_RESPONSE_URL[:8]])
def test_a_click_without_response_url_or_channel_is_dropped_with_a_log_line(
        rig: SlackRig, action_id: str, action: dict[str, Any],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    response = rig.interaction(_payload(rig, {"action_id": action_id, "type": "button",
                                              **action}, response_url=False, channel=False))

    assert response.status_code < 500
    wait_for(lambda: any("no response_url and no channel" in r.getMessage()
                         for r in caplog.records), what="the refusal's log line")
    time.sleep(0.3)
    assert not _crashes(caplog), _crashes(caplog)
    assert rig.replies_to(rig.staff) == []

"""Settings that reach the firm from more than one place get the same checks everywhere
(issue 24 #16, #17): the approvers of the settings form as ``set approvers`` checks them, and
only real IANA time zone names for ``set timezone`` (and ``check_value``, the forms' check),
whether the names come from the system's zone files or from the ``tzdata`` package."""

from __future__ import annotations

import json
import zoneinfo
from collections.abc import Iterator
from typing import Any

import pytest

from hardcost.sandbox.slack_rig import SlackRig, wait_for
from hardcost.sync import firm_settings
from hardcost.sync.firm_settings import SettingError, check_value, zone_name
from hardcost.sync.store import FirmSettings

NOT_ZONES = ["localtime", "posixrules", "Factory", "right/UTC", "posix/Europe/Paris"]


def _text(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks") or [], ensure_ascii=False) + message.get("text", "")


def _settings(rig: SlackRig) -> FirmSettings:
    with rig.firm.sessions() as session:
        settings = session.get(FirmSettings, rig.firm.id)
        assert settings is not None
        return settings


def _answer(rig: SlackRig, text: str) -> str:
    before = len(rig.replies_to(rig.admin))
    rig.command(text)
    return _text(wait_for(lambda: rig.replies_to(rig.admin)[before:] and
                          rig.replies_to(rig.admin)[-1], what=f"the answer to {text!r}"))


# --- time zones (#17) -------------------------------------------------------------------------


def test_set_timezone_takes_iana_zone_names_only(rig: SlackRig) -> None:
    for name in NOT_ZONES:
        answer = _answer(rig, f"set timezone {name}")
        assert "not a time zone name" in answer and "/hardcost set timezone" in answer, name
        assert _settings(rig).timezone == "UTC"

    assert "time zone is now Europe/Paris" in _answer(rig, "set timezone Europe/Paris")
    assert "time zone is now US/Eastern" in _answer(rig, "set timezone US/Eastern")
    assert _settings(rig).timezone == "US/Eastern"


@pytest.fixture
def tzdata_package_only() -> Iterator[None]:
    """Time zones from the ``tzdata`` package alone, as where the system has no zone files."""
    pytest.importorskip("tzdata")
    zoneinfo.reset_tzpath(to=[])
    zoneinfo.ZoneInfo.clear_cache()
    firm_settings.zone_names.cache_clear()
    yield
    zoneinfo.reset_tzpath()
    zoneinfo.ZoneInfo.clear_cache()
    firm_settings.zone_names.cache_clear()


@pytest.mark.usefixtures("tzdata_package_only")
def test_zone_names_from_the_tzdata_package_are_checked_the_same_way() -> None:
    assert zone_name("America/New_York") == "America/New_York"
    assert zone_name(" UTC ") == "UTC"
    for name in [*NOT_ZONES, "Mars/Olympus_Mons", "america/new_york"]:
        with pytest.raises(SettingError):
            check_value("timezone", name)


# --- approvers in the settings form (#16) -----------------------------------------------------


def _form_values(rig: SlackRig, approvers: list[str]) -> dict[str, Any]:
    return {
        "accounts": {"accounts": {"type": "multi_static_select", "selected_options": [
            {"value": rig.firm.import_account}]}},
        "schedule": {"schedule": {"type": "plain_text_input", "value": "30"}},
        "approvers": {"approvers": {"type": "multi_users_select",
                                    "selected_users": approvers}},
    }


@pytest.mark.parametrize("approvers", [
    [f"U{n:08d}" for n in range(60)],  # more than set approvers takes (50)
    ["<!channel>"], ["C0123ABCD"], ["U" + "A" * 499], ["u0abc"], ["U0BOSS", "W0OK", "#general"],
])
def test_the_settings_form_refuses_approvers_set_would_refuse(rig: SlackRig,
                                                              approvers: list[str]) -> None:
    response = rig.submit_view({"callback_id": "hc_settings", "type": "modal"},
                               _form_values(rig, approvers))

    body = response.json()
    assert response.status_code == 200 and body["response_action"] == "errors"
    assert set(body["errors"]) == {"approvers"}
    assert "approvers" in body["errors"]["approvers"] or \
        "not a Slack user" in body["errors"]["approvers"]
    assert len(body["errors"]["approvers"]) <= 150
    settings = _settings(rig)
    assert settings.approvers in (None, []) and settings.schedule_minutes == 15


def test_the_settings_form_saves_fifty_approvers(rig: SlackRig) -> None:
    approvers = [f"U{n:08d}" for n in range(49)] + [rig.admin]
    rig.command("settings")
    view = rig.settings_form()
    assert '"max_selected_items": 50' in json.dumps(view)

    response = rig.submit_view(view, _form_values(rig, approvers))

    assert response.json()["response_action"] == "update"
    wait_for(lambda: "Settings saved" in json.dumps(rig.ws.views.get(view["id"])),
             what="the settings saved")
    assert _settings(rig).approvers == sorted(approvers)

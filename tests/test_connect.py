"""Connecting QuickBooks and Clio from Slack, driven like a browser over real HTTP."""

from __future__ import annotations

import json
from typing import Any

import requests
from sqlalchemy import select, text

from hardcost.sandbox.slack_rig import SlackRig, wait_for
from hardcost.sync.store import Connection, Firm, OAuthState


def _text(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks") or []) + message.get("text", "")


def _reply(rig: SlackRig, contains: str, user: str | None = None) -> dict[str, Any]:
    user = user or rig.admin
    return wait_for(lambda: next((m for m in rig.replies_to(user) if contains in _text(m)),
                                 None), what=f"a reply containing {contains!r}")


def _connections(rig: SlackRig, provider: str) -> list[Connection]:
    with rig.firm.sessions() as session:
        return list(session.scalars(select(Connection).where(
            Connection.provider == provider)))


def _link(rig: SlackRig, provider: str, *extra: str) -> str:
    before = len(rig.replies_to(rig.admin))
    rig.command(" ".join(["connect", provider, *extra]))
    reply = wait_for(lambda: rig.replies_to(rig.admin)[before:] and
                     rig.replies_to(rig.admin)[-1])
    for block in reply["blocks"]:
        for element in block.get("elements", []):
            if element.get("url"):
                return str(element["url"])
    raise AssertionError(f"no link in {reply}")


def _disconnect(rig: SlackRig, provider: str) -> None:
    rig.command(f"disconnect {provider}")
    _reply(rig, "is disconnected")
    wait_for(lambda: not _connections(rig, provider))


def test_connect_quickbooks_end_to_end_then_the_first_import_works(rig: SlackRig) -> None:
    _disconnect(rig, "quickbooks")
    assert rig.firm.world.qbo.calls.count("POST", r"/revoke") == 1

    link = _link(rig, "quickbooks")
    page = requests.get(link, timeout=10)  # follows the consent screen's redirect back

    assert page.status_code == 200 and "QuickBooks is connected" in page.text
    assert page.url.startswith(rig.web.url + "/oauth/quickbooks/callback")
    [connection] = _connections(rig, "quickbooks")
    assert connection.refresh_token
    with rig.firm.sessions() as session:  # the raw database holds no token text
        raw = session.execute(text("SELECT access_token, refresh_token FROM connections "
                                   "WHERE provider = 'quickbooks'")).one()
    assert connection.access_token not in raw[0] and connection.refresh_token not in raw[1]
    wait_for(lambda: any("QuickBooks connected by" in _text(m)
                         for m in rig.channel_messages()))
    rig.firm.client("Jane Smith", ["Smith estate"])
    rig.firm.expense(("10.00", "Jane Smith"))
    assert rig.firm.run().imported == 1


def test_connect_clio_in_a_region(rig: SlackRig) -> None:
    _disconnect(rig, "clio")

    link = _link(rig, "clio", "eu")
    page = requests.get(link, timeout=10)

    assert page.status_code == 200 and "Clio is connected" in page.text
    assert len(_connections(rig, "clio")) == 1
    with rig.firm.sessions() as session:
        firm = session.get(Firm, rig.firm.id)
        assert firm is not None and firm.clio_region == "eu"


def test_unknown_clio_region_is_a_usage_reply(rig: SlackRig) -> None:
    rig.command("connect clio mars")

    _reply(rig, "not a Clio region")


def test_tampered_state_is_refused_and_stores_nothing(rig: SlackRig) -> None:
    _disconnect(rig, "quickbooks")
    rig.firm.world.qbo.authorize_mode = "wrong_state"

    page = requests.get(_link(rig, "quickbooks"), timeout=10)

    assert page.status_code == 400 and "not valid" in page.text
    assert _connections(rig, "quickbooks") == []


def test_replayed_callback_is_refused(rig: SlackRig) -> None:
    _disconnect(rig, "quickbooks")
    first = requests.get(_link(rig, "quickbooks"), timeout=10)
    assert first.status_code == 200
    _disconnect(rig, "quickbooks")

    replay = requests.get(first.url, timeout=10)

    assert replay.status_code == 400 and "already used" in replay.text
    assert _connections(rig, "quickbooks") == []


def test_expired_link_is_refused(rig: SlackRig) -> None:
    _disconnect(rig, "quickbooks")
    link = _link(rig, "quickbooks")

    rig.firm.world.clock.advance(11 * 60)
    page = requests.get(link, timeout=10)

    assert page.status_code == 400 and "expired" in page.text
    assert _connections(rig, "quickbooks") == []


def test_declined_consent_changes_nothing(rig: SlackRig) -> None:
    _disconnect(rig, "clio")
    rig.firm.world.clio.authorize_mode = "decline"

    page = requests.get(_link(rig, "clio"), timeout=10)

    assert "was not connected" in page.text and "access denied" in page.text
    assert _connections(rig, "clio") == []


def test_quickbooks_company_of_another_workspace_is_refused(rig: SlackRig) -> None:
    with rig.firm.sessions() as session:
        session.add(Firm(name="Other firm", slack_team_id="T0OTHER",
                         qbo_realm_id="9999"))
        session.commit()
    other_company = rig.firm.world.qbo.add_company("9999")
    _disconnect(rig, "quickbooks")
    rig.firm.world.qbo.authorize_realm = other_company.realm_id

    page = requests.get(_link(rig, "quickbooks"), timeout=10)

    assert page.status_code == 409 and "another Slack workspace" in page.text
    assert _connections(rig, "quickbooks") == []


def test_callback_without_state_or_with_garbage(rig: SlackRig) -> None:
    for query in ("", "?state=nonsense&code=x&realmId=1", "?code=x"):
        page = requests.get(f"{rig.web.url}/oauth/quickbooks/callback{query}", timeout=10)
        assert page.status_code == 400
        assert "<script" not in page.text


def test_connect_is_for_admins(rig: SlackRig) -> None:
    rig.command("connect quickbooks", user=rig.staff)

    _reply(rig, "Only workspace admins", user=rig.staff)
    with rig.firm.sessions() as session:
        assert session.scalars(select(OAuthState)).all() == []


def test_first_connect_in_a_new_workspace_creates_its_firm(rig: SlackRig) -> None:
    with rig.firm.sessions() as session:
        firm = session.get(Firm, rig.firm.id)
        assert firm is not None
        firm.slack_team_id = None  # as if this workspace had never used hardcost
        session.commit()

    link = _link(rig, "quickbooks")

    with rig.firm.sessions() as session:
        created = session.scalars(select(Firm).where(Firm.slack_team_id == "T0001")).one()
    assert created.id != rig.firm.id
    rig.firm.world.qbo.authorize_realm = rig.firm.world.qbo.add_company().realm_id
    page = requests.get(link, timeout=10)
    assert page.status_code == 200, page.text

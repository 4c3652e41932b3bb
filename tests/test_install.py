"""Multi-workspace mode: workspaces install hardcost through /slack/install, driven like a
browser over real HTTP (cookies kept), and each workspace is one firm that sees only its own
data."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine

from hardcost.bot.outbox import deliver, enqueue
from hardcost.sandbox.server import serve_in_thread
from hardcost.sandbox.slack import SlackSandbox
from hardcost.sandbox.slack_rig import (
    InstallRig,
    SlackRig,
    browser,
    button_value,
    make_install_rig,
    wait_for,
)
from hardcost.sandbox.world import SandboxWorld, _grant
from hardcost.sync.store import (
    Connection,
    Failure,
    Firm,
    FirmSettings,
    Run,
    SlackOutbox,
)
from hardcost.sync.tokens import store_grant
from tests.firmkit import START, free_port, start_serve
from tests.firmkit import Firm as KitFirm

ALPHA, BETA = "T0A01", "T0B02"


@pytest.fixture
def rig(world: SandboxWorld, db_engine: Engine) -> Iterator[InstallRig]:
    slack = SlackSandbox(clock=world.clock)
    server = serve_in_thread(slack)
    slack.base_url = server.url
    rig = make_install_rig(world, db_engine, slack, server)
    yield rig
    rig.web.stop()
    server.stop()


@pytest.fixture
def alpha(rig: InstallRig) -> SlackRig:
    return rig.add_workspace(ALPHA, "Alpha Law")


@pytest.fixture
def beta(rig: InstallRig) -> SlackRig:
    return rig.add_workspace(BETA, "Beta Legal")


def _text(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks") or []) + message.get("text", "")


def _reply(ws: SlackRig, contains: str, user: str | None = None) -> dict[str, Any]:
    user = user or ws.admin
    return wait_for(lambda: next((m for m in ws.replies_to(user) if contains in _text(m)),
                                 None), what=f"a reply containing {contains!r}")


def _firm(rig: InstallRig, team_id: str) -> Firm | None:
    with rig.sessions() as session:
        return session.scalars(select(Firm).where(Firm.slack_team_id == team_id)).first()


def _count(rig: InstallRig, table: str, team_id: str | None = None) -> int:
    where = " WHERE team_id = :team" if team_id else ""
    with rig.sessions() as session:
        return int(session.execute(text(f"SELECT count(*) FROM {table}{where}"),
                                   {"team": team_id}).scalar_one())


def _installed(rig: InstallRig, ws: SlackRig) -> Firm:
    page = rig.install(ws.ws.team_id)
    assert page.status_code == 200, page.text
    assert "hardcost is installed" in page.text
    firm = _firm(rig, ws.ws.team_id)
    assert firm is not None
    return firm


def _connect_sandbox(rig: InstallRig, ws: SlackRig) -> KitFirm:
    """Give an installed workspace's firm sandbox QuickBooks and Clio, settings and a channel
    (what /hardcost connect and set would do; tests/test_connect.py covers those)."""
    firm = _firm(rig, ws.ws.team_id)
    assert firm is not None
    world = rig.world
    books = world.open_books()
    qbo, clio = books.company, books.account
    with rig.sessions() as session:
        row = session.get(Firm, firm.id)
        settings = session.get(FirmSettings, firm.id)
        assert row is not None and settings is not None
        row.qbo_realm_id = qbo.realm_id
        settings.start_date = START
        settings.import_account_ids = [books.import_account_id]
        settings.expense_category_id = books.category_id
        settings.slack_channel_id = ws.channel
        store_grant(session, firm.id, "quickbooks", _grant(world.qbo.issue_tokens(qbo.realm_id)))
        store_grant(session, firm.id, "clio", _grant(world.clio.issue_tokens(clio)))
        session.commit()
    return KitFirm(world, rig.sessions, firm.id, qbo, clio, books.import_account_id,
                   books.other_account_id, books.category_id)


def _prompts(ws: SlackRig) -> list[dict[str, Any]]:
    return ws.prompts()


# -- installing ----------------------------------------------------------------------------------

def test_two_workspaces_install_and_become_two_firms(rig: InstallRig, alpha: SlackRig,
                                                      beta: SlackRig) -> None:
    page = rig.install(ALPHA)

    assert page.status_code == 200 and "hardcost is installed in Alpha Law" in page.text
    assert page.url.startswith(rig.web.url + "/slack/oauth_redirect?")
    first = _firm(rig, ALPHA)
    assert first is not None and first.name == "Alpha Law" and first.active
    second = _installed(rig, beta)
    assert second.name == "Beta Legal" and second.id != first.id
    with rig.sessions() as session:
        assert session.get(FirmSettings, first.id) is not None
        assert session.get(FirmSettings, second.id) is not None
    assert _count(rig, "slack_bots", ALPHA) == 1 and _count(rig, "slack_bots", BETA) == 1
    assert _count(rig, "slack_oauth_states") == 0  # both states were used up
    # the bot got exactly the scopes the app asks for
    assert set(rig.slack.installs[0]["scopes"]) == {
        "commands", "chat:write", "chat:write.public", "channels:read", "groups:read",
        "users:read", "files:write"}


def test_each_workspace_status_answers_with_its_own_firm(rig: InstallRig, alpha: SlackRig,
                                                         beta: SlackRig) -> None:
    _installed(rig, alpha)
    _installed(rig, beta)

    assert alpha.command("status").status_code == 200
    assert beta.command("status").status_code == 200

    assert "status for Alpha Law" in _text(_reply(alpha, "hardcost status"))
    assert "status for Beta Legal" in _text(_reply(beta, "hardcost status"))
    assert not any("Beta Legal" in _text(m) for m in alpha.ws.messages)
    assert not any("Alpha Law" in _text(m) for m in beta.ws.messages)


def test_set_channel_works_with_the_installed_scopes(rig: InstallRig, alpha: SlackRig) -> None:
    firm = _installed(rig, alpha)

    alpha.command(f"set channel <#{alpha.channel}|costs>")

    _reply(alpha, "will post in #costs")
    with rig.sessions() as session:
        settings = session.get(FirmSettings, firm.id)
        assert settings is not None and settings.slack_channel_id == alpha.channel


def test_a_workspace_cannot_answer_or_see_another_workspaces_prompt(
        rig: InstallRig, alpha: SlackRig, beta: SlackRig) -> None:
    _installed(rig, alpha)
    _installed(rig, beta)
    firm_a = _connect_sandbox(rig, alpha)
    firm_a.client("Acme Holdings", ["Lease", "Employment", "Litigation"])
    firm_a.expense(("48.75", "Acme Holdings", "Courier"), doc_number="2001")
    alpha.command("run")
    prompt = wait_for(lambda: _prompts(alpha)[0] if _prompts(alpha) else None, what="prompt")
    lease = firm_a.clio.matters[firm_a.matters["Lease"]]
    value = button_value(prompt, lease["display_number"])

    # a signed click from workspace B carrying A's prompt value
    response = beta.click(prompt, "hc_choose_matter", value=value, user=beta.staff)

    assert response.status_code == 200
    _reply(beta, "not one this workspace can answer", user=beta.staff)
    time.sleep(0.3)
    assert firm_a.entries() == []
    assert len(firm_a.waiting()) == 1
    assert alpha.ws.message(alpha.channel, prompt["ts"])["updated"] is False  # type: ignore[index]
    assert beta.prompts() == []

    # B's lists never show A's data
    with rig.sessions() as session:
        session.add(Failure(firm_id=firm_a.id, realm_id=firm_a.qbo.realm_id, purchase_id="77",
                            kind="data", code="x", message="Acme courier receipt unreadable"))
        session.commit()
    beta.command("pending")
    beta.command("failures")
    _reply(beta, "Nothing is waiting.")
    _reply(beta, "No open failures.")
    alpha.command("failures")
    _reply(alpha, "Acme courier receipt unreadable")  # A does see it
    leaked = [m for m in beta.ws.messages if "Acme" in _text(m) or "48.75" in _text(m)]
    assert leaked == []


def test_each_firms_messages_go_out_with_its_own_workspace_token(
        rig: InstallRig, alpha: SlackRig, beta: SlackRig) -> None:
    firm_a, firm_b = _installed(rig, alpha), _installed(rig, beta)
    with rig.sessions() as session:
        enqueue(session, firm_a.id, "chat.postMessage", {"channel": alpha.channel,
                                                         "text": "for alpha"})
        enqueue(session, firm_b.id, "chat.postMessage", {"channel": beta.channel,
                                                         "text": "for beta"})
        session.commit()

    assert deliver(rig.sessions, rig.clients) == 2

    assert [m["text"] for m in alpha.channel_messages()] == ["for alpha"]
    assert [m["text"] for m in beta.channel_messages()] == ["for beta"]


# -- leaving and coming back ---------------------------------------------------------------------

def _uninstalled(rig: InstallRig, ws: SlackRig, event: dict[str, Any]) -> Firm:
    ws.ws.revoke_token()
    assert ws.event(event).status_code == 200
    firm = wait_for(lambda: (f := _firm(rig, ws.ws.team_id)) is not None and not f.active and f,
                    what="the firm deactivated")
    wait_for(lambda: not _connections(rig, firm.id), what="the tokens deleted")
    return firm


def _connections(rig: InstallRig, firm_id: int) -> list[Connection]:
    with rig.sessions() as session:
        return list(session.scalars(select(Connection).where(Connection.firm_id == firm_id)))


def test_app_uninstalled_deactivates_the_firm_and_forgets_its_tokens(
        rig: InstallRig, alpha: SlackRig, beta: SlackRig) -> None:
    _installed(rig, alpha)
    _installed(rig, beta)
    firm_a, firm_b = _connect_sandbox(rig, alpha), _connect_sandbox(rig, beta)
    firm_a.client("Jane Smith", ["Smith estate"])
    firm_a.expense(("435.00", "Jane Smith", "Filing fee"))
    assert firm_a.run().imported == 1

    _uninstalled(rig, alpha, {"type": "app_uninstalled"})

    assert rig.world.qbo.calls.count("POST", r"/revoke") == 1  # revoked where possible
    assert _count(rig, "slack_bots", ALPHA) == 0
    assert _count(rig, "slack_installations", ALPHA) == 0
    assert len(firm_a.links()) == 1  # history stays
    with rig.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Run).where(
            Run.firm_id == firm_a.id)) == 1
    # the other workspace is untouched
    assert len(_connections(rig, firm_b.id)) == 2 and _count(rig, "slack_bots", BETA) == 1
    assert rig.clients(firm_a.id) is None  # type: ignore[operator]


def test_tokens_revoked_for_the_bot_deactivates_too(rig: InstallRig, alpha: SlackRig) -> None:
    _installed(rig, alpha)
    _connect_sandbox(rig, alpha)

    _uninstalled(rig, alpha, {"type": "tokens_revoked",
                              "tokens": {"oauth": [], "bot": [alpha.ws.bot_user_id]}})

    assert _count(rig, "slack_bots", ALPHA) == 0


def test_messages_of_an_uninstalled_workspace_wait_instead_of_failing_elsewhere(
        rig: InstallRig, alpha: SlackRig) -> None:
    firm = _installed(rig, alpha)
    _uninstalled(rig, alpha, {"type": "app_uninstalled"})
    with rig.sessions() as session:
        enqueue(session, firm.id, "chat.postMessage", {"channel": alpha.channel, "text": "hi"})
        session.commit()

    assert deliver(rig.sessions, rig.clients) == 0

    with rig.sessions() as session:
        row = session.scalars(select(SlackOutbox)).one()
        assert row.last_error == "not_installed" and row.gave_up_at is None


def test_reinstall_reactivates_the_same_firm_without_its_old_tokens(
        rig: InstallRig, alpha: SlackRig) -> None:
    first = _installed(rig, alpha)
    _connect_sandbox(rig, alpha)
    _uninstalled(rig, alpha, {"type": "app_uninstalled"})

    page = rig.install(ALPHA)

    assert page.status_code == 200 and "installed again" in page.text
    again = _firm(rig, ALPHA)
    assert again is not None and again.id == first.id and again.active
    assert _connections(rig, first.id) == []  # QuickBooks and Clio must be connected again
    alpha.command("status")
    status = _text(_reply(alpha, "hardcost status"))
    assert "Alpha Law" in status and "not connected" in status


# -- refusals ------------------------------------------------------------------------------------

def test_forged_and_stale_signatures_still_get_401(rig: InstallRig, alpha: SlackRig) -> None:
    firm = _installed(rig, alpha)
    body = alpha.command_body("pause")

    assert alpha.post(body, "application/x-www-form-urlencoded",
                      secret="not-the-secret").status_code == 401
    assert alpha.post(body, "application/x-www-form-urlencoded",
                      timestamp=time.time() - 6 * 60).status_code == 401
    event = json.dumps({"type": "event_callback", "team_id": ALPHA,
                        "event": {"type": "app_uninstalled"}})
    assert alpha.post(event, "application/json", secret="forged").status_code == 401
    time.sleep(0.2)
    with rig.sessions() as session:
        settings = session.get(FirmSettings, firm.id)
        assert settings is not None and settings.paused is False
        row = session.get(Firm, firm.id)
        assert row is not None and row.active


def _consent_redirect(rig: InstallRig, client: Any, team_id: str) -> str:
    """/slack/install → Slack's consent → the redirect URL, without following it."""
    start = client.get(f"{rig.web.url}/slack/install", params={"team": team_id},
                       allow_redirects=False, timeout=10)
    assert start.status_code == 302 and "slack-app-oauth-state" in client.cookies
    consent = client.get(start.headers["Location"], allow_redirects=False, timeout=10)
    assert consent.status_code == 302
    return str(consent.headers["Location"])


def _with_state(url: str, state: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query["state"] = state
    return f"{parts.scheme}://{parts.netloc}{parts.path}?{urlencode(query)}"


def _nothing_stored(rig: InstallRig) -> None:
    assert _firm(rig, ALPHA) is None
    assert _count(rig, "slack_installations") == 0 and _count(rig, "slack_bots") == 0
    assert rig.slack.installs == []


def test_tampered_state_is_refused_with_a_page_and_stores_nothing(
        rig: InstallRig, alpha: SlackRig) -> None:
    client = browser()
    redirect = _consent_redirect(rig, client, ALPHA)

    page = client.get(_with_state(redirect, "forged-state"), timeout=10)

    assert page.status_code == 400
    assert "text/html" in page.headers["Content-Type"]
    assert "not valid here" in page.text and "/slack/install" in page.text
    _nothing_stored(rig)


def test_reused_state_is_refused_and_stores_nothing_more(rig: InstallRig,
                                                         alpha: SlackRig) -> None:
    client = browser()
    redirect = _consent_redirect(rig, client, ALPHA)
    state = parse_qs(urlsplit(redirect).query)["state"][0]
    assert client.get(redirect, timeout=10).status_code == 200
    assert "slack-app-oauth-state" not in client.cookies  # the page cleared it
    bots = _count(rig, "slack_bots")

    replay = client.get(redirect, timeout=10)  # the browser's back button
    client.cookies.set("slack-app-oauth-state", state)  # even with the cookie put back
    forced = client.get(redirect, timeout=10)

    assert replay.status_code == 400 and "not valid here" in replay.text
    assert forced.status_code == 401 and "expired or was already used" in forced.text
    assert _count(rig, "slack_bots") == bots == 1 and len(rig.slack.installs) == 1


def test_state_from_another_browser_is_refused(rig: InstallRig, alpha: SlackRig) -> None:
    redirect = _consent_redirect(rig, browser(), ALPHA)

    page = browser().get(redirect, timeout=10)  # the link opened elsewhere: no cookie

    assert page.status_code == 400 and "not valid here" in page.text
    _nothing_stored(rig)


def test_cancelled_consent_installs_nothing(rig: InstallRig, alpha: SlackRig) -> None:
    rig.slack.install_decision = "deny"

    page = rig.install(ALPHA)

    assert page.status_code == 200 and "cancelled in Slack" in page.text
    _nothing_stored(rig)



# -- the real server process ---------------------------------------------------------------------

def test_hardcost_serve_installs_workspaces_and_answers_them(world: SandboxWorld,
                                                            database_url: str) -> None:
    import signal

    import requests
    from slack_sdk.signature import SignatureVerifier

    from hardcost.sync.engine import make_engine, make_session_factory
    from tests.firmkit import env_for

    slack = SlackSandbox(clock=world.clock)
    slack_server = serve_in_thread(slack)
    slack.base_url = slack_server.url
    ws = slack.add_workspace(ALPHA, name="Alpha Law")
    admin = ws.add_user("Ada Admin", is_admin=True)["id"]
    channel = ws.add_channel("costs")["id"]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**env_for(world, database_url), "SLACK_CLIENT_ID": slack.client_id,
           "SLACK_CLIENT_SECRET": slack.client_secret, "SLACK_SIGNING_SECRET": "s3cret",
           "SLACK_API_URL": f"{slack_server.url}/api/", "PUBLIC_URL": base, "PORT": str(port)}
    env.pop("SLACK_BOT_TOKEN", None)
    env.pop("SLACK_APP_TOKEN", None)
    proc = start_serve(env, port)
    engine = make_engine(database_url)
    try:
        page = browser().get(f"{base}/slack/install", params={"team": ALPHA}, timeout=10)

        assert page.status_code == 200 and "hardcost is installed in Alpha Law" in page.text
        with make_session_factory(engine)() as session:
            firm = session.scalars(select(Firm).where(Firm.slack_team_id == ALPHA)).one()
            assert firm.active and firm.name == "Alpha Law"
        body = urlencode({"team_id": ALPHA, "user_id": admin, "command": "/hardcost",
                          "text": "status", "channel_id": channel,
                          "response_url": slack.response_url(ALPHA, user_id=admin,
                                                             channel_id=channel)})
        ts = str(int(time.time()))
        signature = SignatureVerifier("s3cret").generate_signature(timestamp=ts, body=body)
        answer = requests.post(f"{base}/slack/events", data=body, timeout=5, headers={
            "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded"})

        assert answer.status_code == 200
        wait_for(lambda: any("status for Alpha Law" in _text(m)
                             for m in ws.ephemeral_messages(admin)), what="the status reply")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        engine.dispose()
        slack_server.stop()
    assert proc.returncode == 0

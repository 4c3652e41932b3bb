"""The Slack sandbox behaves like the Slack Web API (as Slack documents it), over real HTTP, to
slack_sdk."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator

from hardcost.sandbox.server import RunningServer, serve_in_thread
from hardcost.sandbox.slack import (
    SlackSandbox,
    SlackWorkspace,
    rate_limited_fault,
    server_error_fault,
)


@dataclass
class Slack:
    sandbox: SlackSandbox
    ws: SlackWorkspace
    server: RunningServer
    client: WebClient
    general: str
    private: str
    admin: str
    member: str

    def client_for(self, token: str | None, **kwargs: Any) -> WebClient:
        return WebClient(token=token, base_url=f"{self.server.url}/api/", **kwargs)


@pytest.fixture
def slack() -> Iterator[Slack]:
    sandbox = SlackSandbox()
    ws = sandbox.add_workspace()
    general = ws.add_channel("general")["id"]
    private = ws.add_channel("costs-private", is_private=True)["id"]
    admin = ws.add_user("Ada Admin", is_admin=True)["id"]
    member = ws.add_user("Max Member")["id"]
    with serve_in_thread(sandbox) as server:
        client = WebClient(token=ws.bot_token, base_url=f"{server.url}/api/")
        yield Slack(sandbox, ws, server, client, general, private, admin, member)


def error_of(call: Any, **kwargs: Any) -> str:
    with pytest.raises(SlackApiError) as raised:
        call(**kwargs)
    return str(raised.value.response["error"])


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def modal(title: str = "Import costs", blocks: int = 1) -> dict[str, Any]:
    return {"type": "modal", "title": {"type": "plain_text", "text": title},
            "blocks": [section(f"line {n}") for n in range(blocks)]}


# --- auth and transport -----------------------------------------------------------------------


def test_auth_test_names_the_bot_and_team(slack: Slack) -> None:
    response = slack.client.auth_test()
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response["team_id"] == "T0001" and response["team"] == "Sandbox Law"
    assert response["user_id"] == slack.ws.bot_user_id and response["bot_id"] == slack.ws.bot_id
    assert response["url"].startswith("https://")


def test_unknown_token_missing_token_and_unknown_method(slack: Slack) -> None:
    assert error_of(slack.client_for("xoxb-nope").auth_test) == "invalid_auth"
    assert error_of(slack.client_for(None).auth_test) == "not_authed"
    assert error_of(slack.client.api_call, api_method="files.upload") == "unknown_method"


def test_token_as_form_parameter_and_content_type_on_every_answer(slack: Slack) -> None:
    url = f"{slack.server.url}/api/auth.test"
    ok = requests.post(url, data={"token": slack.ws.bot_token})
    assert ok.json()["ok"] is True
    slack.sandbox.faults.add(rate_limited_fault(retry_after=7))
    limited = requests.post(url, data={"token": slack.ws.bot_token})
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "7"
    assert limited.json() == {"ok": False, "error": "ratelimited"}
    for response in (ok, limited, requests.post(f"{slack.server.url}/api/nope.nope")):
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"


def test_revoked_token_and_missing_scope(slack: Slack) -> None:
    slack.ws.scopes.discard("channels:join")
    with pytest.raises(SlackApiError) as raised:
        slack.client.conversations_join(channel=slack.general)
    assert raised.value.response["error"] == "missing_scope"
    assert raised.value.response["needed"] == "channels:join"
    slack.ws.revoke_token()
    assert error_of(slack.client.auth_test) == "token_revoked"


# --- chat -------------------------------------------------------------------------------------


def test_post_message_records_it_with_increasing_ts(slack: Slack) -> None:
    blocks = [section("*3 costs* imported")]
    first = slack.client.chat_postMessage(channel=slack.general, text="3 imported",
                                          blocks=blocks, unfurl_links=False)
    second = slack.client.chat_postMessage(channel="#general", text="again")
    assert first["channel"] == second["channel"] == slack.general
    assert first["message"]["blocks"] == blocks and first["message"]["bot_id"] == slack.ws.bot_id
    assert float(first["ts"]) < float(second["ts"])
    assert [m["ts"] for m in slack.ws.messages] == [first["ts"], second["ts"]]
    assert slack.ws.messages[0] == {
        "channel": slack.general, "ts": first["ts"], "thread_ts": None, "text": "3 imported",
        "blocks": blocks, "user": slack.ws.bot_user_id, "updated": False,
        "ephemeral_user": None}


def test_form_encoded_blocks_are_json_strings(slack: Slack) -> None:
    blocks = [section("from a form")]
    response = slack.client.api_call("chat.postMessage", params={
        "channel": slack.general, "text": "form", "blocks": json.dumps(blocks)})
    assert response["ok"] is True
    assert slack.ws.message(slack.general, response["ts"])["blocks"] == blocks  # type: ignore[index]
    bad = slack.client.api_call  # the same string, not JSON
    assert error_of(bad, api_method="chat.postMessage",
                    params={"channel": slack.general, "blocks": "[{nope"}) == \
        "invalid_blocks_format"


def test_threads_and_history(slack: Slack) -> None:
    parent = slack.client.chat_postMessage(channel=slack.general, text="summary")["ts"]
    reply = slack.client.chat_postMessage(channel=slack.general, text="detail 1",
                                          thread_ts=parent)
    assert reply["message"]["thread_ts"] == parent
    # a reply's ts as thread_ts lands in the parent's thread
    slack.client.chat_postMessage(channel=slack.general, text="detail 2", thread_ts=reply["ts"])
    assert [m["text"] for m in slack.ws.thread(slack.general, parent)] == \
        ["summary", "detail 1", "detail 2"]
    assert [m["text"] for m in slack.ws.channel_messages(slack.general)] == ["summary"]
    assert len(slack.ws.channel_messages("#general", top_level_only=False)) == 3
    assert error_of(slack.client.chat_postMessage, channel=slack.general, text="x",
                    thread_ts="1.000001") == "invalid_thread_ts"


def test_update_changes_the_stored_message(slack: Slack) -> None:
    ts = slack.client.chat_postMessage(channel=slack.general, text="importing…",
                                       blocks=[section("importing…")])["ts"]
    updated = slack.client.chat_update(channel=slack.general, ts=ts, text="done")
    assert updated["ts"] == ts and updated["text"] == "done"
    message = slack.ws.message(slack.general, ts)
    assert message is not None and message["updated"] is True
    assert message["text"] == "done" and message["blocks"] == [section("importing…")]
    slack.client.chat_update(channel=slack.general, ts=ts, text="done", blocks=[])
    assert slack.ws.message(slack.general, ts)["blocks"] is None  # type: ignore[index]
    assert len(slack.ws.messages) == 1
    assert error_of(slack.client.chat_update, channel=slack.general, ts="1.000001",
                    text="x") == "message_not_found"


def test_ephemeral_messages(slack: Slack) -> None:
    response = slack.client.chat_postEphemeral(channel=slack.general, user=slack.member,
                                               text="only admins may import")
    ts = response["message_ts"]
    assert slack.ws.messages[-1]["ephemeral_user"] == slack.member
    assert slack.ws.channel_messages(slack.general) == []
    assert slack.ws.channel_messages(slack.general, include_ephemeral=True)[0]["ts"] == ts
    assert [m["ts"] for m in slack.ws.ephemeral_messages(slack.member)] == [ts]
    assert error_of(slack.client.chat_update, channel=slack.general, ts=ts,
                    text="x") == "cant_update_message"
    assert error_of(slack.client.chat_postEphemeral, channel=slack.general, user="U404",
                    text="x") == "user_not_found"


def test_dm_by_user_id(slack: Slack) -> None:
    response = slack.client.chat_postMessage(channel=slack.admin, text="import failed")
    assert response["channel"].startswith("D")
    assert [m["text"] for m in slack.ws.channel_messages(slack.admin)] == ["import failed"]


def test_channel_errors(slack: Slack) -> None:
    post = slack.client.chat_postMessage
    assert error_of(post, channel="C404", text="x") == "channel_not_found"
    assert error_of(post, channel="#nope", text="x") == "channel_not_found"
    hidden = slack.ws.add_channel("partners", is_private=True, bot_is_member=False)["id"]
    assert error_of(post, channel=hidden, text="x") == "channel_not_found"
    assert post(channel=slack.private, text="member of a private channel")["ok"]
    public = slack.ws.add_channel("random", bot_is_member=False)["id"]
    assert post(channel=public, text="chat:write.public")["ok"]
    slack.ws.scopes.discard("chat:write.public")
    assert error_of(post, channel=public, text="x") == "not_in_channel"
    archived = slack.ws.add_channel("old", is_archived=True)["id"]
    assert error_of(post, channel=archived, text="x") == "is_archived"


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
def test_content_errors(slack: Slack) -> None:
    post = slack.client.chat_postMessage
    channel = slack.general
    assert error_of(post, channel=channel) == "no_text"
    assert error_of(post, channel=channel, text="x" * 40_001) == "msg_too_long"
    assert post(channel=channel, text="x" * 40_000)["ok"]
    assert error_of(post, channel=channel, text="x", blocks=[{"text": "no type"}]) == \
        "invalid_blocks"
    assert error_of(post, channel=channel, text="x", blocks=[section("a")] * 51) == \
        "invalid_blocks"
    assert post(channel=channel, text="x", blocks=[section("a")] * 50)["ok"]
    with pytest.raises(SlackApiError) as raised:
        post(channel=channel, text="x", blocks=[section("y" * 3001)])
    assert raised.value.response["error"] == "invalid_blocks"
    assert raised.value.response["response_metadata"]["messages"] == [
        "[ERROR] must be less than 3001 characters [json-pointer:/blocks/0/text/text]"]
    assert error_of(post, channel=channel, text="x", blocks=[section("y" * 2700)] * 5) == \
        "msg_blocks_too_long"
    assert post(channel=channel, text="x", blocks=[section("y" * 2600)] * 5)["ok"]


# --- views ------------------------------------------------------------------------------------


def test_views_open_exchanges_a_trigger_once_within_3_seconds(slack: Slack) -> None:
    trigger = slack.ws.trigger_id()
    opened = slack.client.views_open(trigger_id=trigger, view=modal())
    view = opened["view"]
    assert view["id"].startswith("V") and view["hash"] and view["type"] == "modal"
    assert slack.ws.views_opened == [{"trigger_id": trigger, "view": view, "id": view["id"]}]
    assert error_of(slack.client.views_open, trigger_id=trigger, view=modal()) == \
        "exchanged_trigger_id"
    assert error_of(slack.client.views_open, trigger_id="1.2.unknown", view=modal()) == \
        "invalid_trigger_id"
    stale = slack.ws.trigger_id()
    slack.sandbox.clock.advance(4)
    assert error_of(slack.client.views_open, trigger_id=stale, view=modal()) == \
        "expired_trigger_id"
    assert len(slack.ws.views_opened) == 1


def test_views_are_validated(slack: Slack) -> None:
    def open_(view: dict[str, Any]) -> str:
        return error_of(slack.client.views_open, trigger_id=slack.ws.trigger_id(), view=view)

    assert open_({"type": "modal", "blocks": []}) == "invalid_arguments"  # no title
    assert open_(modal(blocks=101)) == "invalid_arguments"
    assert open_(modal(title="t" * 25)) == "invalid_arguments"
    assert open_({"type": "home", "blocks": []}) == "invalid_arguments"
    assert slack.client.views_open(trigger_id=slack.ws.trigger_id(), view=modal(blocks=100))["ok"]


def test_views_update_checks_id_and_hash(slack: Slack) -> None:
    view = slack.client.views_open(trigger_id=slack.ws.trigger_id(), view=modal())["view"]
    updated = slack.client.views_update(view_id=view["id"], hash=view["hash"],
                                        view=modal(title="Imported", blocks=2))["view"]
    assert updated["id"] == view["id"] and updated["title"]["text"] == "Imported"
    assert slack.ws.view(view["id"]) == updated
    assert error_of(slack.client.views_update, view_id=view["id"], hash="0.stale",
                    view=modal()) == "hash_conflict"
    assert error_of(slack.client.views_update, view_id="V404", view=modal()) == "not_found"


def test_views_publish_stores_the_home_tab(slack: Slack) -> None:
    home = {"type": "home", "blocks": [section("Last import: 3 costs")]}
    published = slack.client.views_publish(user_id=slack.admin, view=home)["view"]
    assert slack.ws.home_views[slack.admin] == published
    assert published["blocks"] == home["blocks"]
    again = slack.client.views_publish(user_id=slack.admin, view=home)["view"]
    assert again["id"] == published["id"]
    assert error_of(slack.client.views_publish, user_id=slack.admin, view=modal()) == \
        "invalid_arguments"
    assert error_of(slack.client.views_publish, user_id="U404", view=home) == "user_not_found"


# --- files (files_upload_v2) ------------------------------------------------------------------


def test_files_upload_v2_shares_the_bytes_in_the_channel(slack: Slack) -> None:
    data = b"time,actor\n2026-03-09,U1\n"

    response = slack.client.files_upload_v2(channel=slack.general, content=data,
                                            filename="trail.csv", title="The trail",
                                            initial_comment="Here it is")

    assert response["ok"] and response["file"]["title"] == "The trail"
    [shared] = slack.ws.files_in(slack.general)
    assert shared["data"] == data and shared["name"] == "trail.csv"
    assert shared["mimetype"] == "text/csv" and shared["size"] == len(data)
    assert shared["channels"] == [slack.general] and shared["id"] == response["file"]["id"]
    [message] = slack.ws.channel_messages(slack.general)
    assert message["text"] == "Here it is"
    assert [f["id"] for f in message["files"]] == [shared["id"]]
    # the three steps slack-sdk took, in order, each answered 200
    steps = [(c.method, c.path.split("/v1/")[0], c.status)
             for c in slack.sandbox.calls.all()[-3:]]
    assert steps == [("POST", "/api/files.getUploadURLExternal", 200),
                     ("POST", "/upload", 200),
                     ("POST", "/api/files.completeUploadExternal", 200)]


def test_files_upload_v2_to_a_user_goes_to_the_bots_dm_and_in_a_thread(slack: Slack) -> None:
    slack.client.files_upload_v2(channels=[slack.admin], content=b"a,b\n", filename="x.csv")
    [dm] = slack.ws.files_in(slack.admin)
    assert dm["channels"][0].startswith("D") and dm["data"] == b"a,b\n"

    parent = slack.client.chat_postMessage(channel=slack.general, text="parent")["ts"]
    slack.client.files_upload_v2(channel=slack.general, content=b"1", filename="r.txt",
                                 thread_ts=parent)
    [reply] = [m for m in slack.ws.messages if m.get("files") and m["thread_ts"] == parent]
    assert reply["channel"] == slack.general


def _url_and_id(slack: Slack, length: int, filename: str = "t.csv") -> tuple[str, str]:
    got = slack.client.files_getUploadURLExternal(filename=filename, length=length)
    assert got["upload_url"].startswith(slack.server.url + "/upload/v1/")
    return str(got["upload_url"]), str(got["file_id"])


def test_upload_url_refuses_unknown_urls_wrong_lengths_and_second_uploads(slack: Slack) -> None:
    url, _ = _url_and_id(slack, 5)

    assert requests.post(slack.server.url + "/upload/v1/forged", data=b"12345").status_code \
        == 404
    short = requests.post(url, data=b"1234")
    assert short.status_code == 400 and short.text == "length_mismatch"
    ok = requests.post(url, data=b"12345")
    assert ok.status_code == 200 and ok.text == "OK - 5"
    assert requests.post(url, data=b"12345").status_code == 400  # uploaded already
    multipart_url, _ = _url_and_id(slack, 3)
    sent = requests.post(multipart_url, files={"file": ("t.csv", b"abc")})
    assert sent.status_code == 200


def test_get_upload_url_needs_a_filename_and_a_length(slack: Slack) -> None:
    get = slack.client.files_getUploadURLExternal
    assert error_of(get, filename="", length=3) == "invalid_arguments"
    assert error_of(get, filename="t.csv", length=0) == "invalid_arguments"
    assert error_of(slack.client.api_call, api_method="files.getUploadURLExternal",
                    params={"filename": "t.csv", "length": "ten"}) == "invalid_arguments"


def test_complete_refuses_unknown_unfinished_or_spent_files(slack: Slack) -> None:
    complete = slack.client.files_completeUploadExternal
    assert error_of(complete, files=[{"id": "F404"}], channel_id=slack.general) \
        == "file_not_found"
    url, file_id = _url_and_id(slack, 2)
    assert error_of(complete, files=[{"id": file_id}], channel_id=slack.general) \
        == "file_not_found"  # never uploaded
    requests.post(url, data=b"ok")
    assert complete(files=[{"id": file_id, "title": "t"}], channel_id=slack.general)["ok"]
    assert error_of(complete, files=[{"id": file_id}], channel_id=slack.general) \
        == "file_not_found"  # completed once
    assert error_of(slack.client.api_call, api_method="files.completeUploadExternal",
                    params={"files": "not json"}) == "invalid_arguments"


def test_complete_checks_the_channel_like_post_message(slack: Slack) -> None:
    def upload_to(**target: Any) -> str:
        url, file_id = _url_and_id(slack, 1)
        requests.post(url, data=b"x")
        return error_of(slack.client.files_completeUploadExternal,
                        files=[{"id": file_id}], **target)

    hidden = slack.ws.add_channel("partners", is_private=True, bot_is_member=False)["id"]
    archived = slack.ws.add_channel("old", is_archived=True)["id"]
    public = slack.ws.add_channel("random", bot_is_member=False)["id"]
    assert upload_to(channel_id="C404") == "channel_not_found"
    assert upload_to(channel_id=hidden) == "channel_not_found"
    assert upload_to(channels=["U404"]) == "channel_not_found"
    assert upload_to(channel_id=archived) == "is_archived"
    slack.ws.scopes.discard("chat:write.public")
    assert upload_to(channel_id=public) == "not_in_channel"
    assert slack.ws.files == {}  # nothing was shared by a refused call


def test_files_need_the_files_write_scope(slack: Slack) -> None:
    slack.ws.scopes.discard("files:write")

    with pytest.raises(SlackApiError) as raised:
        slack.client.files_upload_v2(channel=slack.general, content=b"x", filename="x.csv")

    assert raised.value.response["error"] == "missing_scope"
    assert raised.value.response["needed"] == "files:write"
    assert slack.ws.files == {}


def test_files_of_one_workspace_cannot_be_completed_by_another(slack: Slack) -> None:
    other = slack.sandbox.add_workspace("T0002", name="Other Firm")
    url, file_id = _url_and_id(slack, 1)
    requests.post(url, data=b"x")
    channel = other.add_channel("costs")["id"]

    assert error_of(slack.client_for(other.bot_token).files_completeUploadExternal,
                    files=[{"id": file_id}], channel_id=channel) == "file_not_found"


# --- users and conversations -----------------------------------------------------------------


def test_users_info_admin_flags(slack: Slack) -> None:
    owner = slack.ws.add_user("Olive Owner", is_owner=True)["id"]
    gone = slack.ws.add_user("Gus Gone", deleted=True)["id"]
    users = {u: slack.client.users_info(user=u)["user"]
             for u in (slack.admin, slack.member, owner, gone)}
    assert users[slack.admin]["is_admin"] is True and users[slack.admin]["is_owner"] is False
    assert users[slack.member]["is_admin"] is False
    assert users[owner]["is_owner"] is True
    assert users[gone]["deleted"] is True
    assert users[slack.admin]["profile"]["real_name"] == "Ada Admin"
    assert users[slack.admin]["team_id"] == "T0001"
    assert error_of(slack.client.users_info, user="U404") == "user_not_found"


def test_conversations_info(slack: Slack) -> None:
    info = slack.client.conversations_info(channel=slack.general)["channel"]
    assert info["name"] == "general" and info["is_channel"] is True
    assert info["is_private"] is False and info["is_member"] is True
    assert slack.client.conversations_info(channel=slack.private)["channel"]["is_private"]
    hidden = slack.ws.add_channel("partners", is_private=True, bot_is_member=False)["id"]
    assert error_of(slack.client.conversations_info, channel=hidden) == "channel_not_found"
    assert error_of(slack.client.conversations_info, channel="C404") == "channel_not_found"


def test_conversations_list_pages(slack: Slack) -> None:
    for n in range(5):
        slack.ws.add_channel(f"matter-{n}", is_archived=n == 4)
    slack.ws.add_channel("partners", is_private=True, bot_is_member=False)
    names: list[str] = []
    cursor = None
    pages = 0
    while True:
        response = slack.client.conversations_list(limit=2, cursor=cursor,
                                                   types="public_channel,private_channel")
        names += [c["name"] for c in response["channels"]]
        pages += 1
        cursor = response["response_metadata"]["next_cursor"]
        if not cursor:
            break
    assert pages == 4
    assert names == ["general", "costs-private"] + [f"matter-{n}" for n in range(5)]
    public = slack.client.conversations_list(exclude_archived=True)["channels"]
    assert [c["name"] for c in public] == ["general"] + [f"matter-{n}" for n in range(4)]
    assert error_of(slack.client.conversations_list, cursor="bm9wZQ==") == "invalid_cursor"


def test_conversations_join(slack: Slack) -> None:
    public = slack.ws.add_channel("random", bot_is_member=False)["id"]
    assert slack.client.conversations_info(channel=public)["channel"]["is_member"] is False
    joined = slack.client.conversations_join(channel=public)
    assert joined["channel"]["is_member"] is True
    assert slack.client.conversations_join(channel=public)["warning"] == "already_in_channel"
    assert error_of(slack.client.conversations_join, channel=slack.private) == \
        "method_not_supported_for_channel_type"


def test_workspaces_are_isolated(slack: Slack) -> None:
    other = slack.sandbox.add_workspace("T0002", name="Other Firm")
    theirs = other.add_channel("general")["id"]
    client = slack.client_for(other.bot_token)
    assert client.auth_test()["team_id"] == "T0002"
    assert theirs != slack.general
    assert error_of(client.conversations_info, channel=slack.general) == "channel_not_found"
    assert error_of(client.chat_postMessage, channel=slack.general, text="x") == \
        "channel_not_found"
    assert error_of(client.users_info, user=slack.admin) == "user_not_found"
    assert error_of(client.views_open, trigger_id=slack.ws.trigger_id(), view=modal()) == \
        "invalid_trigger_id"
    assert [c["id"] for c in client.conversations_list()["channels"]] == [theirs]
    client.chat_postMessage(channel="#general", text="theirs")
    slack.client.chat_postMessage(channel="#general", text="ours")
    assert [m["text"] for m in other.messages] == ["theirs"]
    assert [m["text"] for m in slack.ws.messages] == ["ours"]


# --- faults and slack_sdk retries -------------------------------------------------------------


def test_rate_limit_is_retried_by_the_handler(slack: Slack) -> None:
    slack.sandbox.faults.add(rate_limited_fault(retry_after=0, method="chat.postMessage"))
    client = slack.client_for(slack.ws.bot_token,
                              retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)])
    assert client.auth_test()["ok"]  # the fault targets chat.postMessage only
    assert client.chat_postMessage(channel=slack.general, text="after a 429")["ok"]
    assert slack.sandbox.calls.count("POST", r"/api/chat\.postMessage$") == 2
    assert len(slack.ws.messages) == 1


def test_rate_limit_without_a_handler_raises(slack: Slack) -> None:
    slack.sandbox.faults.add(rate_limited_fault(retry_after=3))
    with pytest.raises(SlackApiError) as raised:
        slack.client.chat_postMessage(channel=slack.general, text="x")
    assert raised.value.response.status_code == 429
    assert raised.value.response["error"] == "ratelimited"
    assert raised.value.response.headers["Retry-After"] == "3"


def test_server_error_is_retried_by_the_handler(slack: Slack) -> None:
    slack.sandbox.faults.add(server_error_fault(503, method="users.info"))
    fast = FixedValueRetryIntervalCalculator(fixed_internal=0.01)
    client = slack.client_for(slack.ws.bot_token, retry_handlers=[
        ServerErrorRetryHandler(max_retry_count=1, interval_calculator=fast)])
    assert client.users_info(user=slack.admin)["user"]["id"] == slack.admin
    assert [c.status for c in slack.sandbox.calls.all()] == [503, 200]
    slack.sandbox.faults.add(server_error_fault(500, times=2))
    with pytest.raises(SlackApiError) as raised:
        client.auth_test()
    assert raised.value.response.status_code == 500


# -- installing (OAuth v2) -----------------------------------------------------------------------

def _consent(slack: Slack, **params: str) -> requests.Response:
    query = {"client_id": slack.sandbox.client_id, "scope": "commands,chat:write",
             "state": "st", "redirect_uri": "https://app.example/slack/oauth_redirect",
             **params}
    return requests.get(f"{slack.server.url}/oauth/v2/authorize", params=query,
                        allow_redirects=False, timeout=5)


def _code(response: requests.Response) -> str:
    from urllib.parse import parse_qs, urlsplit

    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith("https://app.example/slack/oauth_redirect?")
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == ["st"]
    return query["code"][0]


def test_install_consent_then_token_exchange_gives_the_workspace_bot_token(
        slack: Slack) -> None:
    slack.ws.revoke_token()  # uninstalled earlier
    code = _code(_consent(slack, team=slack.ws.team_id))
    anonymous = slack.client_for(None)

    grant = anonymous.oauth_v2_access(client_id=slack.sandbox.client_id,
                                      client_secret=slack.sandbox.client_secret, code=code,
                                      redirect_uri="https://app.example/slack/oauth_redirect")

    assert grant["access_token"] == slack.ws.bot_token and grant["token_type"] == "bot"
    assert grant["team"] == {"id": slack.ws.team_id, "name": slack.ws.name}
    assert grant["authed_user"]["id"] == slack.admin and grant["is_enterprise_install"] is False
    assert grant["scope"] == "commands,chat:write"
    assert slack.client_for(grant["access_token"]).auth_test()["team_id"] == slack.ws.team_id
    assert slack.ws.scopes == {"commands", "chat:write"}
    # the code is single-use
    assert error_of(anonymous.oauth_v2_access, client_id=slack.sandbox.client_id,
                    client_secret=slack.sandbox.client_secret, code=code,
                    redirect_uri="https://app.example/slack/oauth_redirect") == "invalid_code"


def test_token_exchange_checks_the_client_and_the_redirect(slack: Slack) -> None:
    anonymous = slack.client_for(None)
    code = _code(_consent(slack))  # the only workspace when none is named
    exchange = anonymous.oauth_v2_access
    ids = {"client_id": slack.sandbox.client_id, "code": code}

    assert error_of(exchange, client_id="other", client_secret="x",
                    code=code) == "invalid_client_id"
    assert error_of(exchange, **ids, client_secret="wrong") == "bad_client_secret"
    assert error_of(exchange, **ids, client_secret=slack.sandbox.client_secret,
                    redirect_uri="https://evil.example/") == "bad_redirect_uri"


def test_consent_refusals(slack: Slack) -> None:
    assert _consent(slack, client_id="unknown").status_code == 400
    assert _consent(slack, team="T9999").status_code == 400
    slack.sandbox.redirect_urls = ["https://app.example/"]
    assert _consent(slack, redirect_uri="https://evil.example/cb").status_code == 400
    slack.sandbox.install_decision = "deny"
    denied = _consent(slack)
    assert denied.status_code == 302 and "error=access_denied" in denied.headers["Location"]

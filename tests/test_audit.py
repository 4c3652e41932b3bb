"""The audit trail (docs/operations.md "The audit trail"; docs/commands.md "history", "export",
"hardcost audit"): who changed what and when, written with the change; read back in Slack, as a CSV
file uploaded to Slack, and on the command line.

Everything a person does goes in as Slack sends it (signed requests over loopback HTTP into the
real app, the sandbox QuickBooks, Clio and Slack behind it); the trail is read from the store.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import requests
from slack_sdk import WebClient
from sqlalchemy import insert, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from hardcost.bot.export import MAX_ROWS
from hardcost.bot.ui.content import ACTION_HISTORY_OLDER
from hardcost.sandbox.slack_rig import SlackRig, button_value, wait_for
from hardcost.sync import audit
from hardcost.sync.audit import Action
from hardcost.sync.store import AuditEntry, Connection, FirmSettings
from tests.firmkit import Firm, env_for

HOSTILE = "<!channel> *x* &lt;"


# --- helpers ----------------------------------------------------------------------------------


def _text(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks") or [], ensure_ascii=False) + message.get("text", "")


def _reply(rig: SlackRig, contains: str, user: str | None = None) -> dict[str, Any]:
    user = user or rig.admin
    return wait_for(lambda: next((m for m in reversed(rig.replies_to(user))
                                  if contains in _text(m)), None),
                    what=f"a reply containing {contains!r}")


def _trail(sessions: sessionmaker[Session], firm_id: int,
           action: Action | None = None) -> list[AuditEntry]:
    """The firm's trail, oldest first (of one action when given)."""
    with sessions() as session:
        query = select(AuditEntry).where(AuditEntry.firm_id == firm_id)
        if action is not None:
            query = query.where(AuditEntry.action == action.value)
        return list(session.scalars(query.order_by(AuditEntry.id)))


def _rows(rig: SlackRig, action: Action | None = None) -> list[AuditEntry]:
    return _trail(rig.firm.sessions, rig.firm.id, action)


def _settings(rig: SlackRig) -> FirmSettings:
    with rig.firm.sessions() as session:
        settings = session.get(FirmSettings, rig.firm.id)
        assert settings is not None
        return settings


def _seed(sessions: sessionmaker[Session], firm_id: int, *rows: dict[str, Any]) -> None:
    """Trail rows as the importer writes them (through ``audit.record``), committed."""
    with sessions() as session:
        for row in rows:
            values = dict(row)
            action = values.pop("action", Action.IMPORTED)
            actor = values.pop("actor", "schedule")
            audit.record(session, firm_id, action, actor, **values)
        session.commit()


def _csv(data: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data)))


# --- written with the change ------------------------------------------------------------------


def test_a_setting_change_records_who_and_the_value_before_and_after(rig: SlackRig) -> None:
    before = _settings(rig).schedule_minutes

    rig.command("set schedule 45")

    _reply(rig, "every 45 minutes")
    [row] = _rows(rig, Action.SETTING)
    assert row.actor == rig.admin
    assert row.before == {"schedule": before} and row.after == {"schedule": 45}
    assert row.detail == "Imports run every 45 minutes."


def test_a_setting_names_what_its_ids_stand_for(rig: SlackRig) -> None:
    old_category = rig.firm.category_id
    old_name = next(c["name"] for c in rig.firm.clio.expense_categories.values()
                    if c["id"] == old_category)
    new = rig.firm.clio.add_expense_category("Filing fees")

    rig.command("set category Filing fees")

    _reply(rig, "Expense category is now Filing fees")
    [row] = _rows(rig, Action.SETTING)
    assert row.before == {"category": {"id": old_category, "name": old_name}}
    assert row.after == {"category": {"id": new["id"], "name": "Filing fees"}}


def test_the_same_value_again_and_a_refused_value_record_nothing(rig: SlackRig) -> None:
    rig.command("set schedule 45")
    _reply(rig, "every 45 minutes")
    rig.command("set schedule 45")
    rig.command("set schedule 3")  # refused: under five minutes

    _reply(rig, "not a number of minutes")
    wait_for(lambda: len([m for m in rig.replies_to(rig.admin)
                          if "every 45 minutes" in _text(m)]) == 2)
    assert len(_rows(rig, Action.SETTING)) == 1


def test_the_channel_setting_is_recorded_with_the_channels_name(rig: SlackRig) -> None:
    room = rig.ws.add_channel("audit-room")["id"]

    rig.command("set channel #audit-room")

    _reply(rig, "post in #audit-room")
    [row] = _rows(rig, Action.SETTING)
    assert row.actor == rig.admin
    assert row.before == {"channel": {"id": rig.channel}}
    assert row.after == {"channel": {"id": room, "name": "audit-room"}}


def test_the_settings_form_records_one_row_per_changed_setting(rig: SlackRig) -> None:
    start = _settings(rig)
    rig.command("settings")
    view = rig.settings_form()
    values = {
        "channel": {"channel": {"type": "conversations_select",
                                "selected_conversation": rig.channel}},
        "start_date": {"start_date": {"type": "datepicker", "selected_date": "2025-09-01"}},
        "accounts": {"accounts": {"type": "multi_static_select", "selected_options": [
            {"value": rig.firm.import_account}]}},
        "category": {"category": {"type": "static_select", "selected_option": {
            "value": str(rig.firm.category_id)}}},
        "user": {"user": {"type": "static_select", "selected_option": {"value": "owner"}}},
        "schedule": {"schedule": {"type": "plain_text_input",
                                  "value": str(start.schedule_minutes)}},
        "options": {"options": {"type": "checkboxes", "selected_options": [
            {"value": "split_lines"}, {"value": "receipts"}]}},  # receipts: ticked, kept
        "deletions": {"deletions": {"type": "radio_buttons", "selected_option": {
            "value": "alert"}}},
        "approvers": {"approvers": {"type": "multi_users_select",
                                    "selected_users": [rig.staff]}},
    }

    rig.submit_view(view, values)

    wait_for(lambda: "Settings saved" in json.dumps(rig.ws.views.get(view["id"])))
    rows = _rows(rig, Action.SETTING)
    by_key = {next(iter(r.after or {})): r for r in rows}
    assert set(by_key) == {"start-date", "split-lines", "deletions", "approvers"}
    assert all(r.actor == rig.admin for r in rows)
    assert by_key["start-date"].before == {"start-date": start.start_date.isoformat()}
    assert by_key["start-date"].after == {"start-date": "2025-09-01"}
    assert by_key["start-date"].detail == "Start date is now 2025-09-01."
    assert by_key["split-lines"].after == {"split-lines": True}
    assert by_key["approvers"].after == {"approvers": [rig.staff]}
    assert by_key["deletions"].before == {"deletions": start.deletions}


def test_pause_and_resume_are_recorded_once_each(rig: SlackRig) -> None:
    rig.command("pause")
    _reply(rig, "paused")
    rig.command("pause")
    wait_for(lambda: len([m for m in rig.replies_to(rig.admin) if "are paused" in _text(m)])
             == 2)
    rig.command("resume")
    _reply(rig, "running again")

    rows = [r for r in _rows(rig) if r.action in (Action.PAUSED, Action.RESUMED)]
    assert [(r.action, r.actor) for r in rows] == [(Action.PAUSED, rig.admin),
                                                   (Action.RESUMED, rig.admin)]


def _link(rig: SlackRig, provider: str) -> str:
    before = len(rig.replies_to(rig.admin))
    rig.command(f"connect {provider}")
    reply = wait_for(lambda: rig.replies_to(rig.admin)[before:] and
                     rig.replies_to(rig.admin)[-1])
    return next(str(e["url"]) for b in reply["blocks"] for e in b.get("elements", [])
                if e.get("url"))


def test_disconnect_and_connect_name_the_service_and_the_person_never_a_token(
        rig: SlackRig) -> None:
    with rig.firm.sessions() as session:
        old = session.scalars(select(Connection).where(
            Connection.provider == "quickbooks")).one()
        tokens = {old.access_token, old.refresh_token}

    rig.command("disconnect quickbooks")
    _reply(rig, "is disconnected")
    wait_for(lambda: _rows(rig, Action.DISCONNECTED))
    page = requests.get(_link(rig, "quickbooks"), timeout=10)
    assert page.status_code == 200

    [gone] = _rows(rig, Action.DISCONNECTED)
    [made] = _rows(rig, Action.CONNECTED)
    assert gone.actor == rig.admin and "QuickBooks disconnected" in (gone.detail or "")
    assert made.actor == rig.admin and made.realm_id == rig.firm.qbo.realm_id
    assert made.detail == f"QuickBooks connected (company {rig.firm.qbo.realm_id})."
    with rig.firm.sessions() as session:
        new = session.scalars(select(Connection).where(
            Connection.provider == "quickbooks")).one()
        tokens |= {new.access_token, new.refresh_token}
        raw = json.dumps([list(r) for r in session.execute(text("SELECT * FROM audit_log"))],
                         default=str)
    assert not any(token and token in raw for token in tokens)


def test_a_clio_connection_is_recorded_with_its_region(rig: SlackRig) -> None:
    rig.command("disconnect clio")
    _reply(rig, "is disconnected")
    wait_for(lambda: _rows(rig, Action.DISCONNECTED))
    before = len(rig.replies_to(rig.admin))
    rig.command("connect clio eu")
    reply = wait_for(lambda: rig.replies_to(rig.admin)[before:] and
                     rig.replies_to(rig.admin)[-1])
    link = next(str(e["url"]) for b in reply["blocks"] for e in b.get("elements", [])
                if e.get("url"))

    assert requests.get(link, timeout=10).status_code == 200

    [made] = _rows(rig, Action.CONNECTED)
    assert made.actor == rig.admin and made.detail == "Clio connected (region EU)."
    assert made.after == {"service": "clio", "where": "region EU"}


def _acme_waiting(rig: SlackRig) -> dict[str, Any]:
    rig.firm.client("Acme Holdings", ["Lease", "Employment", "Litigation"])
    rig.firm.expense(("48.75", "Acme Holdings", "Courier"), doc_number="2001")
    rig.command("run")
    return wait_for(lambda: rig.prompts()[0] if rig.prompts() else None, what="the prompt")


def test_not_a_client_cost_is_recorded_with_the_expense(rig: SlackRig) -> None:
    prompt = _acme_waiting(rig)
    [waiting] = rig.firm.waiting()

    rig.click(prompt, "hc_not_client_cost", value=button_value(prompt, "Not a client cost"))

    wait_for(lambda: rig.firm.waiting() == [])
    [row] = _rows(rig, Action.NOT_CLIENT_COST)
    assert row.actor == rig.staff
    assert (row.purchase_id, row.customer_id, row.client, row.amount) == (
        waiting.purchase_id, waiting.customer_id, "Acme Holdings", Decimal("48.75"))
    assert row.realm_id == rig.firm.qbo.realm_id


def test_a_contact_choice_is_recorded_with_the_contact(rig: SlackRig) -> None:
    rig.firm.client("J. Lee", contact=False)
    first = rig.firm.clio.add_contact("John Lee")
    rig.firm.clio.add_contact("Joan Lee")
    rig.firm.expense(("12.00", "J. Lee"))
    rig.command("run")
    prompt = wait_for(lambda: rig.prompts()[0] if rig.prompts() else None)
    [waiting] = rig.firm.waiting()

    rig.click(prompt, "hc_choose_contact", value=f"{waiting.id}:{first['id']}")

    row = wait_for(lambda: next(iter(_rows(rig, Action.CONTACT_CHOSEN)), None))
    assert row.actor == rig.staff and row.client == "J. Lee"
    assert row.purchase_id == waiting.purchase_id and row.amount == Decimal("12.00")
    assert row.after == {"contact": {"id": first["id"], "name": "John Lee"}}
    assert "John Lee" in (row.detail or "")


def test_retry_is_recorded_with_the_purchase_and_what_came_of_it(rig: SlackRig) -> None:
    rig.firm.client("Jane Smith", ["Smith estate"])
    purchase = rig.firm.expense(("10.00", "Jane Smith"))
    purchase["Line"][0]["Amount"] = "ten"
    rig.firm.qbo.put_purchase_raw(purchase)
    rig.command("run")
    alert = wait_for(lambda: next((m for m in rig.channel_messages()
                                   if "hc_retry_failure" in _text(m)), None))
    purchase["Line"][0]["Amount"] = Decimal("10.00")
    rig.firm.qbo.put_purchase_raw(purchase)

    rig.click(alert, "hc_retry_failure", value=button_value(alert, "Retry"))

    row = wait_for(lambda: next(iter(_rows(rig, Action.RETRY)), None))
    assert row.actor == rig.staff and row.purchase_id == purchase["Id"]
    assert row.detail == "Retried: fixed, imported 1"


# --- /hardcost history ------------------------------------------------------------------------


def _history_trail(rig: SlackRig) -> None:
    """Fourteen entries: purchases 100–111 (Smith, Jones and a hostile name), then two
    setting changes."""
    clients = ["Smith, John", "Jones LLC", HOSTILE]
    _seed(rig.firm.sessions, rig.firm.id, *[
        {"purchase_id": str(100 + n), "client": clients[n % 3], "amount": Decimal("10.00") + n,
         "matter": f"{n:05d} Matter {n}", "clio_activity_id": 900 + n} for n in range(12)])
    _seed(rig.firm.sessions, rig.firm.id,
          {"action": Action.SETTING, "actor": rig.admin, "before": {"schedule": 15},
           "after": {"schedule": 30}, "detail": "Imports run every 30 minutes."},
          {"action": Action.NOT_CLIENT_COST, "actor": rig.staff, "purchase_id": "105",
           "client": "Smith, John", "amount": Decimal("15.00")})


def test_history_shows_the_latest_ten_newest_first_and_pages_back(rig: SlackRig) -> None:
    _history_trail(rig)

    rig.command("history")

    first = _reply(rig, "Audit trail")
    body = _text(first)
    assert "10 entries" in body and "not a client cost" in body
    assert f"<@{rig.staff}>" in body and f"<@{rig.admin}>" in body and "by schedule" in body
    assert "schedule: 15 → 30" in body
    assert "purchase 111" in body and "purchase 104" in body and "purchase 103" not in body
    assert body.index("not a client cost") < body.index("purchase 111")  # newest first
    older = button_value(first, "Older")

    rig.click(first, ACTION_HISTORY_OLDER, value=older, user=rig.admin)

    page = wait_for(lambda: (m := rig.ws.message(first["channel"], first["ts"]))
                    and m.get("updated") and m)
    body = _text(page)
    assert "4 older entries" in body
    assert all(f"purchase {n}" in body for n in (100, 101, 102, 103))
    assert "purchase 104" not in body and "hc_history_older" not in body
    assert "all the trail holds" in body


def test_history_last_n(rig: SlackRig) -> None:
    _history_trail(rig)

    rig.command("history last 3")

    body = _text(_reply(rig, "Audit trail"))
    assert "3 entries" in body and "purchase 111" in body and "purchase 110" not in body


@pytest.mark.parametrize("args", ["last 0", "last 51", "last x", "last", "last 1 2",
                                  "last " + "9" * 5000, "x" * 101, "a\x00b",
                                  "\u202eevil"])
def test_history_last_out_of_bounds_gets_a_usage_reply(rig: SlackRig, args: str) -> None:
    rig.command(f"history {args}")

    reply = _reply(rig, "Usage")
    assert "/hardcost history [purchase id | client name | last N]" in _text(reply)
    assert _rows(rig) == []


@pytest.mark.parametrize("args", ["105", "#105"])
def test_history_of_one_purchase(rig: SlackRig, args: str) -> None:
    _history_trail(rig)

    rig.command(f"history {args}")

    body = _text(_reply(rig, "Audit trail for purchase 105"))
    assert "2 entries" in body and "imported" in body and "not a client cost" in body
    assert "purchase 104" not in body and "purchase 106" not in body


def test_history_of_a_client_by_part_of_its_name_in_any_case(rig: SlackRig) -> None:
    _history_trail(rig)

    rig.command("history JONES")

    body = _text(_reply(rig, "matching"))
    assert "Jones LLC" in body and "Smith" not in body
    assert "4 entries" in body  # purchases 101, 104, 107, 110


def test_history_escapes_outside_text(rig: SlackRig) -> None:
    _history_trail(rig)

    rig.command("history channel")

    reply = _reply(rig, "matching")
    body = _text(reply)
    assert "<!channel>" not in body
    assert "&lt;!channel&gt; *x* &amp;lt;" in body
    assert "4 entries" in body


def test_history_with_nothing_recorded_says_so(rig: SlackRig) -> None:
    rig.command("history")
    _reply(rig, "The audit trail has nothing yet.")
    rig.command("history 4242")
    _reply(rig, "The audit trail has nothing for purchase 4242 yet.")


def test_history_stays_within_slacks_limits_with_fifty_long_entries(rig: SlackRig) -> None:
    _seed(rig.firm.sessions, rig.firm.id, *[
        {"purchase_id": str(n), "client": "Ünïcode & <Partners> " * 20, "amount": Decimal(n),
         "matter": "00001 " + "very long matter name " * 20, "detail": "x" * 1000}
        for n in range(1, 61)])

    rig.command("history last 50")

    reply = _reply(rig, "Audit trail")
    blocks = reply["blocks"]
    assert len(blocks) <= 50
    assert all(len(b.get("text", {}).get("text", "")) <= 3000 for b in blocks)
    assert "hc_history_older" in _text(reply)  # what did not fit is one click away


# --- /hardcost export -------------------------------------------------------------------------


def _period_trail(rig: SlackRig) -> list[AuditEntry]:
    """Rows on 28 Feb, 1 and 31 Mar and 1 Apr 2026 (UTC); returns the two in March."""
    days = [datetime(2026, 2, 28, 23, 59, tzinfo=UTC), datetime(2026, 3, 1, 0, 0, tzinfo=UTC),
            datetime(2026, 3, 31, 23, 59, tzinfo=UTC), datetime(2026, 4, 1, 0, 0, tzinfo=UTC)]
    _seed(rig.firm.sessions, rig.firm.id, *[
        {"at": at, "purchase_id": str(n), "client": "=HYPERLINK(\"http://evil\")" if n == 1
         else "Müller & Söhne", "amount": Decimal("12.50"), "detail": "-2+3"}
        for n, at in enumerate(days)])
    return [r for r in _rows(rig) if r.at.month == 3]


def _file(rig: SlackRig, where: str) -> dict[str, Any]:
    return wait_for(lambda: next(iter(rig.ws.files_in(where)), None), what="the CSV file")


def test_export_by_an_approver_shares_the_periods_csv_in_the_channel(rig: SlackRig) -> None:
    march = _period_trail(rig)

    rig.command("export 2026-03-01 2026-03-31")

    shared = _file(rig, rig.channel)
    assert shared["name"] == "hardcost-audit-2026-03-01-to-2026-03-31.csv"
    assert shared["data"].startswith(b"\xef\xbb\xbf")  # a BOM: spreadsheets read UTF-8
    rows = _csv(shared["data"].decode("utf-8-sig"))
    assert rows[0] == list(audit.CSV_COLUMNS)
    assert rows[1:] == [audit.csv_row(r) for r in march]
    assert rows[1][audit.CSV_COLUMNS.index("client")] == "'=HYPERLINK(\"http://evil\")"
    assert rows[2][audit.CSV_COLUMNS.index("client")] == "Müller & Söhne"
    assert rows[1][audit.CSV_COLUMNS.index("detail")] == "'-2+3"
    assert f"exported by <@{rig.admin}>" in shared["initial_comment"]
    [message] = [m for m in rig.channel_messages() if m.get("files")]
    assert message["files"][0]["id"] == shared["id"]
    assert "2 entries" in _text(_reply(rig, "is in"))
    assert rig.ws.files_in(rig.admin) == []


def test_export_by_someone_else_goes_to_them_alone(rig: SlackRig) -> None:
    march = _period_trail(rig)

    rig.command("export 2026-03-01 2026-03-31", user=rig.staff)

    shared = _file(rig, rig.staff)
    assert _csv(shared["data"].decode("utf-8-sig"))[1:] == [audit.csv_row(r) for r in march]
    assert shared["channels"][0].startswith("D")
    assert "direct messages" in _text(_reply(rig, "audit trail", user=rig.staff))
    assert rig.ws.files_in(rig.channel) == []


def test_export_without_dates_is_this_month_so_far(rig: SlackRig) -> None:
    now = rig.firm.world.clock.now()
    last_month = now.replace(day=1) - timedelta(days=1)
    _seed(rig.firm.sessions, rig.firm.id, {"at": last_month, "purchase_id": "1"},
          {"at": now, "purchase_id": "2"})

    rig.command("export")

    shared = _file(rig, rig.channel)
    month = now.date().replace(day=1)
    assert shared["name"] == f"hardcost-audit-{month}-to-{now.date()}.csv"
    rows = _csv(shared["data"].decode("utf-8-sig"))
    assert [r[audit.CSV_COLUMNS.index("purchase_id")] for r in rows[1:]] == ["2"]


@pytest.mark.parametrize(("args", "problem"), [
    ("2026-02-30", "not a date"),
    ("03/01/2026", "not a date"),
    ("2026-03-05 2026-03-01", "runs backwards"),
    ("1900-01-01 2026-01-01", "outside 2000 to 2099"),
    ("2000-01-01 2099-12-31", "more than five years"),
    ("2026-01-01 2026-02-01 2026-03-01", "at most two dates"),
])
def test_bad_export_dates_get_a_usage_reply_and_no_file(rig: SlackRig, args: str,
                                                        problem: str) -> None:
    _period_trail(rig)

    rig.command(f"export {args}")

    reply = _reply(rig, problem)
    assert "/hardcost export [from YYYY-MM-DD] [to YYYY-MM-DD]" in _text(reply)
    assert rig.ws.files == {}


def test_export_refused_by_slack_says_why(rig: SlackRig) -> None:
    _period_trail(rig)
    rig.ws.scopes.discard("files:write")  # installed before hardcost asked for it

    rig.command("export 2026-03-01 2026-03-31")

    assert "missing_scope" in _text(_reply(rig, "Slack did not take the export"))
    assert rig.ws.files == {}


def _bulk_trail(rig: SlackRig, count: int, at: datetime) -> None:
    """``count`` trail rows on one day, in one INSERT (cheap even at 100,000)."""
    row = audit.values(rig.firm.id, Action.IMPORTED, "schedule", at=at, purchase_id="1",
                       client="Jane Smith", amount=Decimal("1.00"))
    with rig.firm.sessions() as session:
        session.execute(insert(AuditEntry), [row] * count)
        session.commit()


def test_an_export_of_too_many_entries_asks_for_narrower_dates(rig: SlackRig) -> None:
    _bulk_trail(rig, MAX_ROWS + 1, datetime(2026, 3, 10, 12, 0, tzinfo=UTC))

    rig.command("export 2026-03-01 2026-03-31")

    reply = _reply(rig, "narrow the dates")
    assert f"That is {MAX_ROWS + 1:,} entries" in _text(reply)
    assert f"export at most {MAX_ROWS:,} at a time" in _text(reply)
    assert rig.ws.files == {}


def test_an_export_is_written_to_a_temporary_file_and_removed(
        rig: SlackRig, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CSV goes to disk row by row and is uploaded from its path, not built in memory."""
    _bulk_trail(rig, 2500, datetime(2026, 3, 10, 12, 0, tzinfo=UTC))  # three batches
    tmp_path = tmp_path / "exports"
    tmp_path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    uploads: list[dict[str, Any]] = []
    upload = WebClient.files_upload_v2

    def spy(client: WebClient, **kwargs: Any) -> Any:
        uploads.append(kwargs)
        assert "content" not in kwargs
        return upload(client, **kwargs)

    monkeypatch.setattr(WebClient, "files_upload_v2", spy)

    rig.command("export 2026-03-01 2026-03-31")

    shared = _file(rig, rig.channel)
    rows = _csv(shared["data"].decode("utf-8-sig"))
    assert len(rows) == 2501 and rows[0] == list(audit.CSV_COLUMNS)
    assert rows[1:] == [audit.csv_row(r) for r in _rows(rig)]
    assert [u["file"].startswith(str(tmp_path)) for u in uploads] == [True]
    wait_for(lambda: list(tmp_path.iterdir()) == [], what="the temporary file removed")


# --- App Home ---------------------------------------------------------------------------------


def test_app_home_shows_the_last_ten_entries(rig: SlackRig) -> None:
    _history_trail(rig)

    rig.event({"type": "app_home_opened", "user": rig.staff, "tab": "home", "channel": "D0"})

    view = wait_for(lambda: rig.ws.home_views.get(rig.staff))
    body = json.dumps(view)
    assert "Latest changes" in body
    assert "purchase 111" in body and "purchase 104" in body and "purchase 103" not in body
    assert "<!channel>" not in body and "&lt;!channel&gt;" in body
    assert len(view["blocks"]) <= 100


# --- the store --------------------------------------------------------------------------------


def _one_row(sessions: sessionmaker[Session], firm: Firm) -> int:
    _seed(sessions, firm.id, {"purchase_id": "1", "client": "Jane"})
    return _trail(sessions, firm.id)[0].id


def test_the_trail_refuses_an_update(firm: Firm) -> None:
    row_id = _one_row(firm.sessions, firm)

    with firm.sessions() as session, pytest.raises(DBAPIError, match="append-only"):
        session.execute(update(AuditEntry).where(AuditEntry.id == row_id)
                        .values(actor="someone else"))
        session.commit()

    [row] = _trail(firm.sessions, firm.id)
    assert row.actor == "schedule"


@pytest.mark.postgres
def test_the_trail_refuses_an_update_on_postgresql(firm: Firm) -> None:
    row_id = _one_row(firm.sessions, firm)

    with firm.sessions() as session:
        assert session.get_bind().dialect.name == "postgresql"
        with pytest.raises(DBAPIError, match="append-only"):
            session.execute(text("UPDATE audit_log SET detail = 'rewritten' WHERE id = :id"),
                            {"id": row_id})
            session.commit()

    assert _trail(firm.sessions, firm.id)[0].detail is None


def test_a_cell_a_spreadsheet_would_run_is_quoted(firm: Firm) -> None:
    _seed(firm.sessions, firm.id,
          {"client": "=cmd|' /C calc'!A0", "matter": "+1", "detail": "@SUM(1)",
           "purchase_id": "-1", "amount": Decimal("-5.00")})

    out = io.StringIO()
    with firm.sessions() as session:
        assert audit.write_csv(audit.between(session, firm.id, None, None), out) == 1
    [header, row] = _csv(out.getvalue())

    cell = dict(zip(header, row, strict=True))
    assert cell["client"] == "'=cmd|' /C calc'!A0"
    assert cell["matter"] == "'+1" and cell["detail"] == "'@SUM(1)"
    assert cell["purchase_id"] == "'-1"
    assert cell["amount"] == "-5.00"  # a number stays a number


_RUNNABLE = ("=", "+", "-", "@", "\t")


def _spreadsheet_rows(data: str) -> list[list[str]]:
    """Rows as a spreadsheet reads CSV: a row ends at \\r\\n, \\r or \\n outside quotes."""
    rows: list[list[str]] = []
    row: list[str] = []
    cell, quoted, i = "", False, 0
    while i < len(data):
        c = data[i]
        if quoted:
            if c == '"' and data[i + 1:i + 2] == '"':
                cell += '"'
                i += 1
            elif c == '"':
                quoted = False
            else:
                cell += c
        elif c == '"':
            quoted = True
        elif c == ",":
            row.append(cell)
            cell = ""
        elif c in "\r\n":
            rows.append([*row, cell])
            row, cell = [], ""
            if c == "\r" and data[i + 1:i + 2] == "\n":
                i += 1
        else:
            cell += c
        i += 1
    if row or cell:
        rows.append([*row, cell])
    return rows


@pytest.mark.parametrize("name", ["\r=1+1", "Smith\r=1+1", "Smith\n+1", "a\r\n@SUM(1)",
                                  "\r\r-2", "x\u2028=3", "Jo\n\tTab"])
def test_a_line_break_in_a_cell_never_starts_a_row_or_a_formula(firm: Firm, name: str) -> None:
    """Issue 24 #13: a lone CR was written unquoted; a spreadsheet split the row there and ran
    the rest as a formula. Every cell holding a line break is quoted, and no line in it starts
    with what a spreadsheet runs."""
    _seed(firm.sessions, firm.id, *[{"purchase_id": str(n), "client": name, "matter": name,
                                     "amount": Decimal("1.00")} for n in range(3)])
    out = io.StringIO(newline="")
    with firm.sessions() as session:
        assert audit.write_csv(audit.between(session, firm.id, None, None), out) == 3
    data = out.getvalue()

    rows = _spreadsheet_rows(data)
    assert len(rows) == 4 and all(len(row) == len(audit.CSV_COLUMNS) for row in rows)
    assert not [cell for row in rows for cell in row if cell.startswith(_RUNNABLE)]
    assert [line for line in data.splitlines() if line.startswith(_RUNNABLE)] == []
    assert list(csv.reader(io.StringIO(data, newline=""))) == _spreadsheet_rows(data)
    cell = dict(zip(audit.CSV_COLUMNS, rows[1], strict=True))
    assert cell["client"].replace("'", "") == name == cell["matter"].replace("'", "")


# --- hardcost audit ---------------------------------------------------------------------------


def _hardcost(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hardcost", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_hardcost_audit_prints_the_periods_csv(firm: Firm, database_url: str) -> None:
    days = [datetime(2026, 3, d, 12, tzinfo=UTC) for d in (1, 15, 31)]
    _seed(firm.sessions, firm.id, *[
        {"at": at, "purchase_id": str(n), "client": "Jane, \"JJ\" Smith\nJr.",
         "amount": Decimal("1.10")} for n, at in enumerate(days)])
    env = env_for(firm.world, database_url)

    some = _hardcost("audit", "--firm", str(firm.id), "--from", "2026-03-02", "--to",
                     "2026-03-31", "--csv", env=env)
    every = _hardcost("audit", "--firm", str(firm.id), "--csv", env=env)

    assert some.returncode == 0, some.stderr
    rows = _trail(firm.sessions, firm.id)
    assert _csv(some.stdout) == [list(audit.CSV_COLUMNS)] + [audit.csv_row(r)
                                                             for r in rows[1:]]
    assert _csv(every.stdout)[1:] == [audit.csv_row(r) for r in rows]


def test_hardcost_audit_quotes_a_lone_carriage_return(firm: Firm, database_url: str) -> None:
    """Issue 24 #13, as ``hardcost audit --csv`` prints it (stdout read as bytes: no newline
    translation hides a lone CR)."""
    _seed(firm.sessions, firm.id, *[{"purchase_id": str(n), "client": "\r=1+1",
                                     "matter": "Estate\r@SUM(1)"} for n in range(3)])
    result = subprocess.run([sys.executable, "-m", "hardcost", "audit", "--firm",
                             str(firm.id), "--csv"], env=env_for(firm.world, database_url),
                            capture_output=True, timeout=120)

    assert result.returncode == 0, result.stderr
    data = result.stdout.decode("utf-8")
    rows = _spreadsheet_rows(data)
    assert len(rows) == 4 and all(len(row) == len(audit.CSV_COLUMNS) for row in rows)
    assert [line for line in data.splitlines() if line.startswith(_RUNNABLE)] == []


@pytest.mark.parametrize(("args", "says"), [
    (["--from", "2026-02-30"], "not a date"),
    (["--to", "tomorrow"], "not a date"),
    (["--from", "2026-03-02", "--to", "2026-03-01"], "runs backwards"),
])
def test_hardcost_audit_with_bad_dates_exits_2(firm: Firm, database_url: str,
                                               args: list[str], says: str) -> None:
    result = _hardcost("audit", "--firm", str(firm.id), "--csv", *args,
                       env=env_for(firm.world, database_url))

    assert result.returncode == 2 and says in result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr


@pytest.mark.parametrize("number", ["99999999999999999999", "2147483648", "0",
                                    "9" * 5000])
@pytest.mark.parametrize("command", [["audit", "--csv"], ["sync"]])
def test_a_firm_number_no_firm_can_have_exits_2(firm: Firm, database_url: str, number: str,
                                                command: list[str]) -> None:
    """Issue 24 #20: a number past what the database holds made SQLite raise OverflowError (a
    traceback). It is bounded where the command line reads it."""
    result = _hardcost(command[0], "--firm", number, *command[1:],
                       env=env_for(firm.world, database_url))

    assert result.returncode == 2, result.stderr
    assert "There is no firm" in result.stderr and len(result.stderr) < 500
    assert result.stdout == "" and "Traceback" not in result.stderr


def test_hardcost_audit_of_an_unknown_firm_says_so(firm: Firm, database_url: str) -> None:
    result = _hardcost("audit", "--firm", "999", "--csv",
                       env=env_for(firm.world, database_url))

    assert result.returncode == 1 and "no firm 999" in result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr


def test_history_finds_a_name_with_an_ampersand_as_slack_sends_it(rig: SlackRig) -> None:
    """Slack escapes ``&``, ``<`` and ``>`` in a slash command's text: ``Quill & Ink``
    arrives as ``Quill &amp; Ink``, and is searched for as typed (unescaped once only)."""
    _seed(rig.firm.sessions, rig.firm.id,
          {"purchase_id": "200", "client": "Quill & Ink", "amount": Decimal("12.00"),
           "matter": "00200 Supplies", "clio_activity_id": 990},
          {"purchase_id": "201", "client": "A &lt; B", "amount": Decimal("13.00"),
           "matter": "00201 Other", "clio_activity_id": 991})

    rig.command("history Quill & Ink")  # sent as "Quill &amp; Ink"
    body = _text(_reply(rig, "matching"))
    assert "purchase 200" in body and "purchase 201" not in body

    rig.command("history A &lt; B")  # sent as "A &amp;lt; B": unescaped once, not twice
    body = _text(_reply(rig, "purchase 201"))
    assert "purchase 200" not in body

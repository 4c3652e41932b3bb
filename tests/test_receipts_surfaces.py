"""Receipts in Slack (issue 28): ``/hardcost set receipts on|off``, the settings form, status,
``/hardcost check`` on a Clio connection without the documents permission, and
``/hardcost history <purchase>`` naming each receipt filed with its Clio document.

Through the real Slack app with signed requests (``sandbox/slack_rig.py``), against the
sandbox QuickBooks and Clio over loopback HTTP.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from hardcost.sandbox.slack_rig import SlackRig, wait_for
from hardcost.sync.store import AuditEntry, FirmSettings, RunLease


def _text(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks") or []) + message.get("text", "")


def _reply(rig: SlackRig, user: str, contains: str, after: int = 0) -> dict[str, Any]:
    return wait_for(lambda: next((m for m in rig.replies_to(user)[after:]
                                  if contains in _text(m)), None),
                    what=f"a reply containing {contains!r}")


def _receipts(rig: SlackRig) -> bool:
    with rig.firm.sessions() as session:
        settings = session.get(FirmSettings, rig.firm.id)
        assert settings is not None
        return settings.receipts


def _setting_rows(rig: SlackRig) -> list[AuditEntry]:
    with rig.firm.sessions() as session:
        return [r for r in session.scalars(select(AuditEntry).where(
            AuditEntry.firm_id == rig.firm.id, AuditEntry.action == "setting")
            .order_by(AuditEntry.id)) if "receipts" in (r.after or {})]


@pytest.mark.both_transports
def test_set_receipts_off_then_on_says_what_follows_and_is_in_the_trail(rig: SlackRig) -> None:
    assert _receipts(rig)  # on by default

    rig.command("set receipts off")
    _reply(rig, rig.admin, "no longer filed")
    assert not _receipts(rig)

    far = datetime(2030, 1, 1, tzinfo=UTC)
    with rig.firm.sessions() as session:  # the next run far away: turning on brings it near
        lease = session.get(RunLease, rig.firm.id)
        assert lease is not None
        lease.next_run_at = far
        session.commit()
    asked = len(rig.replies_to(rig.admin))
    rig.command("set receipts on")
    reply = _reply(rig, rig.admin, "filed by the next runs", after=asked)
    assert "already imported since" in _text(reply)
    assert _receipts(rig)
    with rig.firm.sessions() as session:
        lease = session.get(RunLease, rig.firm.id)
        assert lease is not None and lease.next_run_at is not None
        assert lease.next_run_at.astimezone(UTC) < far

    rows = _setting_rows(rig)
    assert [(r.before, r.after) for r in rows] == [
        ({"receipts": True}, {"receipts": False}), ({"receipts": False}, {"receipts": True})]
    assert all(r.actor == rig.admin for r in rows)


def test_set_receipts_with_a_bad_value_answers_the_usage_and_changes_nothing(
        rig: SlackRig) -> None:
    rig.command("set receipts maybe")

    reply = _reply(rig, rig.admin, "neither on nor off")
    assert "/hardcost set receipts on|off" in _text(reply)
    assert _receipts(rig) and not _setting_rows(rig)


def test_set_receipts_is_for_admins_and_approvers(rig: SlackRig) -> None:
    rig.command("set receipts off", user=rig.staff)

    _reply(rig, rig.staff, "Only workspace admins")
    assert _receipts(rig)


def test_status_shows_whether_receipts_are_filed(rig: SlackRig) -> None:
    rig.command("status")
    on = _reply(rig, rig.admin, "*Receipts*")
    assert "filed on each entry's matter in Clio" in _text(on)

    rig.firm.update_settings(receipts=False)
    asked = len(rig.replies_to(rig.admin))
    rig.command("status")
    off = _reply(rig, rig.admin, "*Receipts*", after=asked)
    assert "/hardcost set receipts on" in _text(off)


def _form_values(rig: SlackRig, options: list[str]) -> dict[str, Any]:
    return {
        "channel": {"channel": {"type": "conversations_select",
                                "selected_conversation": rig.channel}},
        "start_date": {"start_date": {"type": "datepicker", "selected_date": "2026-01-01"}},
        "accounts": {"accounts": {"type": "multi_static_select", "selected_options": [
            {"value": rig.firm.import_account}]}},
        "user": {"user": {"type": "static_select", "selected_option": {"value": "owner"}}},
        "schedule": {"schedule": {"type": "plain_text_input", "value": "15"}},
        "options": {"options": {"type": "checkboxes", "selected_options": [
            {"value": o} for o in options]}},
        "deletions": {"deletions": {"type": "radio_buttons", "selected_option": {
            "value": "delete"}}},
        "approvers": {"approvers": {"type": "multi_users_select", "selected_users": []}},
    }


def test_the_settings_form_shows_and_saves_the_receipts_option(rig: SlackRig) -> None:
    rig.command("settings")
    view = rig.settings_form()
    options = next(b for b in view["blocks"] if b.get("block_id") == "options")["element"]
    assert "receipts" in [o["value"] for o in options["options"]]
    assert "receipts" in [o["value"] for o in options.get("initial_options") or []]

    rig.submit_view(view, _form_values(rig, []))  # unticked
    wait_for(lambda: "Settings saved" in json.dumps(rig.ws.views.get(view["id"])),
             what="the view saying the settings were saved")
    assert not _receipts(rig)
    assert [r.after for r in _setting_rows(rig)] == [{"receipts": False}]

    rig.command("settings")
    again = rig.settings_form()
    rig.submit_view(again, _form_values(rig, ["receipts"]))
    wait_for(lambda: _receipts(rig), what="receipts on again")


# -- /hardcost check ----------------------------------------------------------------------------

def test_check_reports_a_clio_connection_without_documents_and_what_to_do(
        rig: SlackRig) -> None:
    rig.command("check")
    allowed = _reply(rig, rig.admin, "Clio connection works")
    assert "✅ Clio lets hardcost file receipts on matters (documents)" in _text(allowed)

    rig.firm.clio.refuse_documents()
    asked = len(rig.replies_to(rig.admin))
    rig.command("check")
    refused = _text(_reply(rig, rig.admin, "Clio connection works", after=asked))
    assert "❌ Clio does not let hardcost file documents" in refused
    assert "/hardcost connect clio" in refused and "/hardcost set receipts off" in refused

    rig.firm.update_settings(receipts=False)  # not filing receipts: documents are no concern
    asked = len(rig.replies_to(rig.admin))
    rig.command("check")
    off = _text(_reply(rig, rig.admin, "Clio connection works", after=asked))
    assert "documents" not in off


# -- /hardcost history <purchase> ---------------------------------------------------------------

HOSTILE = "<!channel> <https://evil.example|open me> & rcpt.pdf"


@pytest.mark.both_transports
def test_history_of_a_purchase_names_its_filed_receipt_and_links_its_matter(
        rig: SlackRig) -> None:
    firm = rig.firm
    firm.client("Jane Smith", ["Estate"])
    purchase = firm.expense(("88.40", "Jane Smith", "Courier"))
    data = b"%PDF-1.4 receipt\n" * 64
    firm.qbo.attach("Purchase", purchase["Id"], HOSTILE, data=data,
                    content_type="application/pdf")

    assert rig.command("run").status_code == 200
    summary = wait_for(lambda: next((m for m in rig.channel_messages()
                                     if "Receipts filed in Clio" in _text(m)), None),
                       what="the run summary counting the receipt")
    assert "*Receipts filed in Clio*\\n1" in _text(summary)
    [document] = firm.clio.documents_of(firm.matters["Estate"])
    assert document["fully_uploaded"] and document["size"] == len(data)

    rig.command(f"history {purchase['Id']}")
    reply = _text(_reply(rig, rig.admin, "receipt filed in Clio"))
    assert f"Clio document #{document['id']}" in reply
    assert f"/nc/#/matters/{firm.matters['Estate']}|its matter in Clio>" in reply
    assert "&lt;!channel&gt; &lt;https://evil.example|open me&gt; &amp; rcpt.pdf" in reply
    assert "<!channel>" not in reply and "<https://evil.example" not in reply


def test_a_receipt_too_large_to_file_is_shown_in_the_summary_thread_and_history(
        rig: SlackRig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file hardcost will not file (over the size limit) is not only a reason on its
    record: the run summary counts it, the thread names it with what to do, and the
    purchase's history has it, each with the outside file name escaped."""
    from hardcost.sync import receipts

    monkeypatch.setattr(receipts, "MAX_BYTES", 1000)
    firm = rig.firm
    firm.client("Jane Smith", ["Estate"])
    purchase = firm.expense(("88.40", "Jane Smith", "Courier"))
    firm.qbo.attach("Purchase", purchase["Id"], HOSTILE, size=5000)

    assert rig.command("run").status_code == 200
    summary = wait_for(lambda: next((m for m in rig.channel_messages()
                                     if "Receipts to add by hand" in _text(m)), None),
                       what="the run summary counting the receipt not filed")
    assert "*Receipts to add by hand*\\n1 (see the thread)" in _text(summary)
    thread = _text(wait_for(lambda: next(
        (m for m in rig.ws.channel_messages(rig.channel, top_level_only=False)
         if m.get("thread_ts") == summary["ts"]
         and "add them to the matter by hand" in _text(m)), None),
        what="the run's thread naming the receipt not filed"))
    assert f"purchase {purchase['Id']}" in thread
    assert "&lt;!channel&gt; &lt;https://evil.example|open me&gt; &amp; rcpt.pdf is 0 MB, " \
           "over the 0 MB hardcost files" in thread
    assert "<!channel>" not in thread and "<https://evil.example" not in thread
    assert firm.clio.documents_of(firm.matters["Estate"]) == []

    rig.command(f"history {purchase['Id']}")
    reply = _text(_reply(rig, rig.admin, "receipt not filed, add it by hand"))
    assert "add it to the matter in Clio by hand" in reply and "<!channel>" not in reply

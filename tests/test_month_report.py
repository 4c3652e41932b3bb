"""The monthly hard-cost report (docs/reports.md), over real HTTP on the sandboxes: figures read
from the sandbox Clio after entries were put on draft and issued bills there."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from slack_sdk import WebClient

from hardcost.bot.context import make_web_client
from hardcost.bot.month_report import CLAIM_LEASE, claim, send_due_reports
from hardcost.sandbox.slack_rig import SlackRig, wait_for
from hardcost.sync import month_report
from hardcost.sync.month_report import Month, first_working_day
from hardcost.sync.store import FirmSettings
from tests.firmkit import Firm, env_for
from tests.reportkit import march_firm

D = Decimal
TODAY = date(2026, 4, 6)  # the report's "now": days unbilled count to here


MARCH = Month(2026, 3)


def _build(firm: Firm, month: Month = MARCH) -> month_report.MonthReport:
    return month_report.build(firm.sessions, firm.id, month, clio=firm.engine.clio,
                              qbo=firm.engine.qbo, today=TODAY)


def test_the_months_totals_to_the_cent_as_clio_has_them_now(firm: Firm) -> None:
    march_firm(firm)

    report = _build(firm)

    assert firm.world.clio.schema_errors == []
    assert report.split.count == 5
    assert report.split.total == D("485.74")
    assert report.split["billed"] == D("100.00")
    assert report.split["draft"] == D("250.50")
    assert report.split["unbilled"] == D("95.24")
    assert report.split["non_billable"] == D("40.00")
    assert report.money(report.split.total) == "$485.74"
    [bravo, acme] = report.matters
    assert (bravo.client, bravo.split["unbilled"]) == ("Bravo LLC", D("95.24"))
    assert (acme.client, acme.split["billed"], acme.split["draft"]) == (
        "Acme Holdings", D("100.00"), D("250.50"))


def test_ageing_of_everything_unbilled_and_the_oldest_matters(firm: Firm) -> None:
    march_firm(firm)

    report = _build(firm)

    # as of 6 April: 03-10 is 27 days, 03-20 17 days, 02-03 62 days
    assert [(b.label, b.amount, b.count) for b in report.ageing] == [
        ("0–30 days", D("95.24"), 2), ("31–60 days", D("0.00"), 0),
        ("61–90 days", D("300.00"), 1), ("over 90 days", D("0.00"), 0)]
    assert report.oldest[0].client == "Acme Holdings" and report.oldest[0].days == 62


def test_waiting_failed_and_the_reconciliation_with_quickbooks(firm: Firm) -> None:
    march_firm(firm)

    report = _build(firm)

    out = report.outstanding
    assert (out.waiting, out.waiting_total) == (1, D("55.00"))
    assert (out.failures, out.failures_total, out.failures_unknown) == (1, D("12.34"), 0)
    assert (out.payment, out.payment_total) == (0, D("0.00"))
    rec = report.reconciliation
    assert rec is not None
    assert rec.qbo_total == D("553.08")
    assert rec.reached == D("485.74")
    assert (rec.waiting, rec.failed, rec.not_yet, rec.skipped) == (
        D("55.00"), D("12.34"), D("0.00"), ())
    assert rec.difference == D("67.34")


def test_the_six_months_history(firm: Firm) -> None:
    march_firm(firm)

    report = _build(firm)

    assert [h.month.slug for h in report.history] == [
        "2025-10", "2025-11", "2025-12", "2026-01", "2026-02", "2026-03"]
    assert report.history[2].billed == D("20.00")
    assert report.history[4].unbilled == D("300.00")
    march = report.history[5]
    assert (march.billed, march.draft, march.unbilled, march.waiting) == (
        D("100.00"), D("250.50"), D("95.24"), D("55.00"))


# --- in Slack: /hardcost report and the monthly post ----------------------------------------


def _text(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks") or [], ensure_ascii=False) + message.get("text", "")


def _reply(rig: SlackRig, contains: str, user: str | None = None) -> dict[str, Any]:
    user = user or rig.admin
    return wait_for(lambda: next((m for m in reversed(rig.replies_to(user))
                                  if contains in _text(m)), None),
                    what=f"a reply containing {contains!r}")


def _report_in(rig: SlackRig, where: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The report's message in ``where`` and its thread's replies, once both files are in."""
    wait_for(lambda: len(rig.ws.files_in(where)) == 2, what="the chart and the CSV")
    [top] = [m for m in rig.ws.channel_messages(where) if "Hard costs for" in m.get("text", "")]
    return top, rig.ws.thread(where, top["ts"])[1:]


def _check_files(rig: SlackRig, where: str, top: dict[str, Any]) -> None:
    png, data = sorted(rig.ws.files_in(where), key=lambda f: f["name"])[::-1]
    assert png["name"] == "hardcost-report-2026-03.png" and png["thread_ts"] == top["ts"]
    image = Image.open(io.BytesIO(png["data"]))
    image.verify()
    assert image.format == "PNG" and image.size[0] >= 1200
    assert "$100.00 billed" in png["title"] and "unbilled" in png["alt_txt"]
    assert data["name"] == "hardcost-report-2026-03.csv" and data["thread_ts"] == top["ts"]
    rows = list(csv.reader(io.StringIO(data["data"].decode("utf-8-sig"))))
    assert rows[0] == list(month_report.CSV_COLUMNS)
    assert [(r[0], r[1], r[4], r[5], r[6]) for r in rows[1:]] == [
        ("2026-03-02", "Acme Holdings", "100.00", "billed", "A-1"),
        ("2026-03-05", "Acme Holdings", "250.50", "draft", "A-2"),
        ("2026-03-10", "Bravo LLC", "75.25", "unbilled", ""),
        ("2026-03-15", "Bravo LLC", "40.00", "non_billable", ""),
        ("2026-03-20", "Bravo LLC", "19.99", "unbilled", "")]
    assert rows[3][7] != "" and rows[1][7] == ""  # days unbilled: for unbilled entries only


def test_report_by_an_approver_goes_to_the_channel_with_chart_and_csv(rig: SlackRig) -> None:
    march_firm(rig.firm)

    rig.command("report 2026-03")

    top, thread = _report_in(rig, rig.channel)
    text = _text(top)
    assert "Hard costs for March 2026: 5 entries imported, $485.74" in text
    for said in ("$100.00", "$250.50", "$95.24", "$40.00",
                 "1 expense waiting for someone's answer ($55.00)",
                 "1 open failure ($12.34)",
                 "$553.08 in the import accounts in March 2026, $485.74 reached Clio",
                 "the $67.34 difference: $55.00 waiting, $12.34 failed"):
        assert said in text, said
    assert text.index("Bravo LLC") < text.index("Acme Holdings")  # most unbilled first
    details = "".join(_text(m) for m in thread)
    assert "*Unbilled, all months* ($395.24)" in text  # March's and February's
    assert "Unbilled by age" in details and "Oldest unbilled matters" in details
    _check_files(rig, rig.channel, top)
    assert "in <#" in _text(_reply(rig, "the report is"))
    assert rig.firm.world.clio.schema_errors == []


def test_report_by_someone_else_goes_to_them_alone(rig: SlackRig) -> None:
    march_firm(rig.firm)

    rig.command("report 2026-03", user=rig.staff)

    top, _ = _report_in(rig, rig.staff)
    assert "$485.74" in _text(top)
    assert "direct messages" in _text(_reply(rig, "the report is", user=rig.staff))
    assert rig.ws.files_in(rig.channel) == []


@pytest.mark.parametrize(("args", "problem"), [
    ("2026-13", "not a month"), ("March", "not a month"), ("2031-01", "outside 2000"),
    ("2026-01 2026-02", "at most one month")])
def test_a_bad_month_gets_a_usage_reply(rig: SlackRig, args: str, problem: str) -> None:
    rig.command(f"report {args}")

    assert "/hardcost report [YYYY-MM]" in _text(_reply(rig, problem))
    assert rig.ws.files == {}


def _client(rig: SlackRig) -> WebClient:
    return make_web_client(rig.ws.bot_token, f"{rig.slack_server.url}/api/")


def _due(rig: SlackRig, now: datetime) -> int:
    """One replica's daily tick: its own sessions, importer and Slack client."""
    return send_due_reports(rig.firm.sessions, lambda firm_id: rig.firm.world.importer(
        rig.firm.sessions, firm_id), _client(rig), now)


def test_the_monthly_report_is_posted_once_per_month_across_replicas(rig: SlackRig) -> None:
    march_firm(rig.firm)
    rig.firm.update_settings(timezone="America/New_York", digest_hour=8)

    # April 2026: Wednesday the 1st is its first working day; 07:30 in New York: not yet
    assert _due(rig, datetime(2026, 4, 1, 11, 30, tzinfo=UTC)) == 0
    # 08:05 in New York: two replicas tick at once; one posts
    now = datetime(2026, 4, 1, 12, 5, tzinfo=UTC)
    with ThreadPoolExecutor(2) as pool:
        posted = list(pool.map(lambda _: _due(rig, now), range(2)))
    assert sorted(posted) == [0, 1]
    top, _ = _report_in(rig, rig.channel)
    assert "Hard costs for March 2026" in top["text"]
    # later that day, the next day, after a restart: nothing more
    for later in (datetime(2026, 4, 1, 20, 0, tzinfo=UTC), datetime(2026, 4, 2, 12, 5,
                                                                     tzinfo=UTC)):
        assert _due(rig, later) == 0
    assert len([m for m in rig.channel_messages() if "Hard costs for" in m["text"]]) == 1
    with rig.firm.sessions() as session:
        settings = session.get(FirmSettings, rig.firm.id)
        assert settings is not None
        assert (settings.report_month, settings.report_claimed_at) == ("2026-03", None)


def test_a_report_whose_files_fail_is_not_posted_again(rig: SlackRig) -> None:
    """Slack took the report's message, then refused its files: the report is not posted a
    second time when the claim lapses (never a duplicate; the failure is in the log)."""
    from hardcost.sandbox.faults import Fault

    march_firm(rig.firm)
    rig.slack.faults.add(Fault(path=r"^/api/files\.getUploadURLExternal$", status=500,
                               times=10))
    now = datetime(2026, 4, 1, 12, 5, tzinfo=UTC)
    assert _due(rig, now) == 0  # not posted whole
    assert _due(rig, now + CLAIM_LEASE + timedelta(minutes=1)) == 0
    assert len([m for m in rig.channel_messages() if "Hard costs for" in m["text"]]) == 1


def test_a_claim_whose_process_died_is_taken_over_later(rig: SlackRig) -> None:
    march_firm(rig.firm)
    now = datetime(2026, 4, 1, 12, 5, tzinfo=UTC)
    assert claim(rig.firm.sessions, rig.firm.id, MARCH, now)  # a replica claims, then dies

    assert _due(rig, now + timedelta(minutes=30)) == 0
    assert _due(rig, now + CLAIM_LEASE + timedelta(minutes=1)) == 1
    _report_in(rig, rig.channel)


def test_report_off_posts_nothing_and_first_working_day_skips_the_weekend(
        rig: SlackRig) -> None:
    march_firm(rig.firm)
    rig.command("set report off")
    _reply(rig, "No monthly report is posted")
    assert _due(rig, datetime(2026, 4, 1, 12, 0, tzinfo=UTC)) == 0
    rig.command("set report monthly")
    _reply(rig, "first working day")
    # August 2026 starts on a Saturday: its report is due on Monday the 3rd
    assert first_working_day(Month(2026, 8)) == date(2026, 8, 3)
    assert _due(rig, datetime(2026, 8, 1, 12, 0, tzinfo=UTC)) == 0
    assert _due(rig, datetime(2026, 8, 3, 12, 0, tzinfo=UTC)) == 1


def test_hardcost_report_on_the_server_prints_and_writes_the_files(
        firm: Firm, database_url: str, tmp_path: Path) -> None:
    march_firm(firm)
    png, data = tmp_path / "march.png", tmp_path / "march.csv"

    result = subprocess.run(
        [sys.executable, "-m", "hardcost", "report", "--firm", str(firm.id), "--month",
         "2026-03", "--png", str(png), "--csv", str(data)],
        env=env_for(firm.world, database_url), capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    assert "imported: 5 entries, $485.74" in result.stdout
    assert "billed: $100.00 (1)" in result.stdout and "on a draft bill: $250.50 (1)" in \
        result.stdout and "unbilled: $95.24 (2)" in result.stdout
    assert Image.open(png).size[0] >= 1200
    assert len(data.read_text(encoding="utf-8-sig").splitlines()) == 6
    bad = subprocess.run([sys.executable, "-m", "hardcost", "report", "--firm", str(firm.id),
                          "--month", "2026-3"], env=env_for(firm.world, database_url),
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not a month like 2026-03" in bad.stderr


# -- the job reads the firms due, by index (issue 31) -------------------------------------------

def _report_due_at(rig: SlackRig) -> datetime | None:
    with rig.firm.sessions() as session:
        settings = session.get(FirmSettings, rig.firm.id)
        assert settings is not None
        return settings.report_due_at


def test_the_report_job_reads_only_the_firms_whose_report_time_has_come(
        rig: SlackRig) -> None:
    """Each tick (every minute, every replica) used to read every monthly firm's settings;
    now a firm is read when its ``report_due_at`` has come: one statement, no firm loaded,
    between two reports — and the report still goes out at its time."""
    from sqlalchemy import event

    march_firm(rig.firm)
    rig.firm.update_settings(timezone="America/New_York", digest_hour=8)
    assert _report_due_at(rig) is None  # not looked at yet: the next tick looks
    # 07:30 in New York on Wednesday 1 April: not yet; looked at again at 08:00 (EDT)
    assert _due(rig, datetime(2026, 4, 1, 11, 30, tzinfo=UTC)) == 0
    assert _report_due_at(rig) == datetime(2026, 4, 1, 12, 0, tzinfo=UTC)

    engine = rig.firm.sessions.kw["bind"]
    seen: list[str] = []
    loaded: list[object] = []

    def statement(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        if "firm_settings" in sql:  # the app's own threads (outbox, leases) run meanwhile
            seen.append(sql)

    def rows(session: Any, instance: Any) -> None:
        loaded.append(instance)

    event.listen(engine, "before_cursor_execute", statement)
    event.listen(FirmSettings, "load", rows)
    try:
        for minute in (31, 45, 59):  # later ticks before 08:00 New York: nothing due
            assert _due(rig, datetime(2026, 4, 1, 11, minute, tzinfo=UTC)) == 0
    finally:
        event.remove(engine, "before_cursor_execute", statement)
        event.remove(FirmSettings, "load", rows)
    assert len(seen) == 3 and loaded == []  # one query a tick, no firm read

    assert _due(rig, datetime(2026, 4, 1, 12, 0, tzinfo=UTC)) == 1
    _report_in(rig, rig.channel)
    # posted: next looked at on May's first working day (Friday 1 May), 08:00 New York
    assert _report_due_at(rig) == datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    event.listen(FirmSettings, "load", rows)
    try:
        assert _due(rig, datetime(2026, 4, 20, 12, 0, tzinfo=UTC)) == 0
    finally:
        event.remove(FirmSettings, "load", rows)
    assert loaded == []


def test_a_changed_report_hour_is_taken_at_the_next_tick(
        rig: SlackRig) -> None:
    march_firm(rig.firm)
    assert _due(rig, datetime(2026, 4, 1, 6, 0, tzinfo=UTC)) == 0  # 06:00 UTC: before 09:00
    assert _report_due_at(rig) == datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
    rig.command("set digest-hour 6")
    _reply(rig, "goes out at 06:00")
    assert _report_due_at(rig) is None
    assert _due(rig, datetime(2026, 4, 1, 6, 1, tzinfo=UTC)) == 1
    _report_in(rig, rig.channel)

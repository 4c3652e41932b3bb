"""Digest mode (``/hardcost set prompts digest``): no prompt per expense; one message a day at
the firm's hour in its time zone, listing what waits by client. The scheduler's daily job
(``bot.digest.send_due_digests``) is driven here with chosen times."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import select

from hardcost.bot.context import make_web_client
from hardcost.bot.digest import send_due_digests
from hardcost.bot.notify import Notifier
from hardcost.sandbox.slack_rig import SlackRig, wait_for
from hardcost.sync.store import FirmSettings, WaitingExpense


def _text(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks") or []) + message.get("text", "")


def _notifier(rig: SlackRig) -> Notifier:
    return rig.ctx.notifier(make_web_client(rig.ws.bot_token, f"{rig.slack_server.url}/api/"))


def _digests(rig: SlackRig) -> list[dict[str, Any]]:
    return [m for m in rig.channel_messages() if "Daily digest" in m.get("text", "")]


def _reply(rig: SlackRig, contains: str) -> dict[str, Any]:
    return wait_for(lambda: next((m for m in rig.replies_to(rig.admin)
                                  if contains in _text(m)), None), what=contains)


def _digest_firm(rig: SlackRig) -> None:
    """Digest mode at 08:00 New York time; three Acme expenses and one Bravo expense wait."""
    for text, said in (("set prompts digest", "one digest a day"),
                       ("set timezone America/New_York", "time zone is now"),
                       ("set digest-hour 8", "goes out at 08:00")):
        rig.command(text)
        _reply(rig, said)
    settings = _settings(rig)
    assert (settings.prompts, settings.timezone, settings.digest_hour) == \
        ("digest", "America/New_York", 8)
    rig.firm.client("Acme Holdings", ["Lease", "Employment"])
    rig.firm.client("Bravo LLC", ["Tax", "Estate"])
    for n in range(3):
        rig.firm.expense((f"2{n}.00", "Acme Holdings", f"Filing {n}"), doc_number=f"50{n}")
    rig.firm.expense(("99.00", "Bravo LLC"), doc_number="600")
    rig.command("run")
    wait_for(lambda: len(rig.firm.waiting()) == 4, what="four waiting")


def _settings(rig: SlackRig) -> FirmSettings:
    with rig.firm.sessions() as session:
        settings = session.get(FirmSettings, rig.firm.id)
        assert settings is not None
        return settings


def test_digest_mode_posts_no_prompt_per_expense(rig: SlackRig) -> None:
    _digest_firm(rig)
    wait_for(lambda: any("Import" in m.get("text", "") or "waiting" in _text(m).lower()
                         for m in rig.channel_messages()), what="the run summary")

    assert rig.prompts() == []
    assert not any("hc_group_matter" in _text(m) for m in rig.channel_messages())


def test_one_digest_a_day_at_the_firms_hour_in_its_time_zone(rig: SlackRig) -> None:
    _digest_firm(rig)
    notifier = _notifier(rig)

    # 07:30 in New York (EST, UTC-5): not yet
    assert send_due_digests(notifier, datetime(2026, 2, 10, 12, 30, tzinfo=UTC)) == 0
    assert _digests(rig) == []
    # 08:05 in New York
    assert send_due_digests(notifier, datetime(2026, 2, 10, 13, 5, tzinfo=UTC)) == 1
    [digest] = wait_for(lambda: _digests(rig), what="the digest")
    text = _text(digest)
    assert "4 expenses for 2 clients" in text and "Acme Holdings" in text \
        and "Bravo LLC" in text and "$162.00" in text
    assert "hc_group_matter" in text and "hc_show_pending" in text
    assert _settings(rig).digest_sent_on == date(2026, 2, 10)
    # later the same day, and a fresh notifier as after a restart: nothing more
    assert send_due_digests(notifier, datetime(2026, 2, 10, 22, 0, tzinfo=UTC)) == 0
    assert send_due_digests(_notifier(rig), datetime(2026, 2, 11, 4, 0, tzinfo=UTC)) == 0
    assert len(_digests(rig)) == 1
    # the next local day, at the hour
    assert send_due_digests(notifier, datetime(2026, 2, 11, 13, 0, tzinfo=UTC)) == 1
    wait_for(lambda: len(_digests(rig)) == 2, what="the next day's digest")


def test_a_client_menu_in_the_digest_answers_its_expenses(rig: SlackRig) -> None:
    _digest_firm(rig)
    send_due_digests(_notifier(rig), datetime(2026, 2, 10, 14, 0, tzinfo=UTC))
    [digest] = wait_for(lambda: _digests(rig), what="the digest")
    lease = rig.firm.matters["Lease"]
    value = next(o["value"] for b in digest["blocks"] for e in b.get("elements", [])
                 for o in e.get("options", []) if "Lease" in o["text"]["text"])

    rig.click(digest, "hc_group_matter", selected=value)

    entries = wait_for(lambda: len(rig.firm.entries()) == 3 and rig.firm.entries(),
                       what="three entries")
    assert {e["matter"]["id"] for e in entries} == {lease}
    updated = wait_for(lambda: (m := rig.ws.message(rig.channel, digest["ts"]))
                       and "Linked 3 expenses" in _text(m) and m, what="the digest updated")
    assert "Bravo LLC" in _text(updated)
    assert [w.customer_name for w in rig.firm.waiting()] == ["Bravo LLC"]


@pytest.mark.parametrize(("text", "problem"), [
    ("set timezone Mars/Olympus_Mons", "not a time zone name"),
    ("set timezone ../../etc/passwd", "not a time zone name"),
    ("set digest-hour 24", "not an hour from 0 to 23"),
    ("set digest-hour nine", "not an hour from 0 to 23"),
    ("set prompts weekly", "neither each nor digest"),
])
def test_bad_digest_settings_get_a_usage_reply(rig: SlackRig, text: str, problem: str) -> None:
    rig.command(text)

    reply = _reply(rig, problem)
    assert "/hardcost set" in _text(reply)
    settings = _settings(rig)
    assert (settings.prompts, settings.timezone, settings.digest_hour) == ("each", "UTC", 9)


def test_one_firms_failing_digest_does_not_stop_the_next_firms(
        rig: SlackRig, caplog: pytest.LogCaptureFixture) -> None:
    """Two firms' digests are due; the first firm's waiting expenses hold choices of a shape
    hardcost cannot read (its own bad data), which fails its digest. The second firm still
    gets its digest, and the failure is logged with the first firm's id and counted (issue
    #11)."""
    from hardcost.bot.outbox import undelivered
    from hardcost.sync.metrics import DIGEST_FAILURES
    from tests.firmkit import make_firm

    _digest_firm(rig)
    second = make_firm(rig.firm.world, rig.firm.sessions)
    assert second.id > rig.firm.id  # the firms are taken in id order: the failing one first
    second.client("Jane Smith", ["Smith estate", "Smith trust"])
    second.expense(("31.00", "Jane Smith", "Probate filing"), doc_number="700")
    second.run()
    assert [w.customer_name for w in second.waiting()] == ["Jane Smith"]
    second.update_settings(prompts="digest", timezone="America/New_York", digest_hour=8,
                           slack_channel_id=rig.channel)

    def sent_all(firm_id: int) -> bool:
        with rig.firm.sessions() as session:
            return undelivered(session, firm_id)[0] == 0

    wait_for(lambda: sent_all(rig.firm.id) or None, what="the first firm's run summary sent")
    with rig.firm.sessions() as session:  # choices no code wrote: ids without their kind
        rows = session.scalars(select(WaitingExpense).where(
            WaitingExpense.firm_id == rig.firm.id)).all()
        assert rows
        for row in rows:
            row.candidates = [1, 2]
        session.commit()
    failures = DIGEST_FAILURES._value.get()

    send_due_digests(_notifier(rig), datetime(2026, 2, 10, 13, 5, tzinfo=UTC))

    [digest] = wait_for(lambda: _digests(rig), what="the second firm's digest")
    assert "Jane Smith" in _text(digest) and "$31.00" in _text(digest)
    assert "Acme Holdings" not in _text(digest)
    assert DIGEST_FAILURES._value.get() == failures + 1
    assert any(f"firm {rig.firm.id}: the daily digest failed" in record.getMessage()
               for record in caplog.records)


# -- the job reads the firms due, by index (issue 31) -------------------------------------------

def test_the_digest_job_reads_only_the_firms_whose_digest_time_has_come(rig: SlackRig) -> None:
    """Each tick (every minute, every replica) used to read every digest firm's settings; now
    a firm is read when its ``digest_due_at`` (its next digest hour) has come: one statement,
    no firm loaded, between two digests."""
    import threading

    from sqlalchemy import event

    _digest_firm(rig)
    notifier = _notifier(rig)
    assert _settings(rig).digest_due_at is None  # set by the commands: looked at next tick
    assert send_due_digests(notifier, datetime(2026, 2, 10, 13, 5, tzinfo=UTC)) == 1
    # the next one: 08:00 in New York tomorrow, 13:00 UTC (EST)
    assert _settings(rig).digest_due_at == datetime(2026, 2, 11, 13, 0, tzinfo=UTC)

    engine = rig.firm.sessions.kw["bind"]
    seen: list[str] = []
    loaded: list[object] = []

    def statement(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        if "firm_settings" in sql:  # the app's own threads (outbox, leases) run meanwhile
            seen.append(sql)

    here = threading.get_ident()

    def rows(session: Any, instance: Any) -> None:
        if threading.get_ident() == here:  # the app's own threads load settings meanwhile
            loaded.append(instance)

    event.listen(engine, "before_cursor_execute", statement)
    event.listen(FirmSettings, "load", rows)
    try:
        for minute in range(3):  # later ticks the same day: nothing due
            assert send_due_digests(notifier, datetime(2026, 2, 10, 14, minute,
                                                       tzinfo=UTC)) == 0
    finally:
        event.remove(engine, "before_cursor_execute", statement)
        event.remove(FirmSettings, "load", rows)
    assert len(seen) == 3 and loaded == []  # one query a tick, no firm read
    assert send_due_digests(notifier, datetime(2026, 2, 11, 13, 0, tzinfo=UTC)) == 1


def test_a_changed_digest_hour_is_taken_at_the_next_tick(rig: SlackRig) -> None:
    _digest_firm(rig)
    notifier = _notifier(rig)
    # 06:00 in New York: not yet; looked at again at 08:00
    assert send_due_digests(notifier, datetime(2026, 2, 10, 11, 0, tzinfo=UTC)) == 0
    assert _settings(rig).digest_due_at == datetime(2026, 2, 10, 13, 0, tzinfo=UTC)
    rig.command("set digest-hour 6")
    _reply(rig, "goes out at 06:00")
    assert _settings(rig).digest_due_at is None
    assert send_due_digests(notifier, datetime(2026, 2, 10, 11, 1, tzinfo=UTC)) == 1


def test_the_next_digest_keeps_the_firms_wall_clock_hour_across_daylight_saving() -> None:
    from zoneinfo import ZoneInfo

    from hardcost.bot.digest import next_digest_at

    settings = FirmSettings(firm_id=1, digest_hour=9, timezone="America/New_York")
    zone = ZoneInfo("America/New_York")
    # Saturday 10:00 EST: next is Sunday 09:00, after clocks went forward (EDT, UTC-4)
    assert next_digest_at(settings, datetime(2026, 3, 7, 10, 0, tzinfo=zone)) == \
        datetime(2026, 3, 8, 13, 0, tzinfo=UTC)
    # 08:59 the same day: today at 09:00
    assert next_digest_at(settings, datetime(2026, 3, 7, 8, 59, tzinfo=zone)) == \
        datetime(2026, 3, 7, 14, 0, tzinfo=UTC)

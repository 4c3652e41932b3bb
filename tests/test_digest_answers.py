"""A digest's menu answers the expenses that digest showed, and no other (issue 24 #4): a
$700 expense that arrives the day after is asked anew, not sent to the matter chosen on
yesterday's message. The expenses a digest's menu links have no message of their own, so
each gets one in the digest's thread, with Undo, as a grouped message's members have.
Over real HTTP with signed Slack requests, on both databases."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hardcost.bot.context import make_web_client
from hardcost.bot.digest import send_due_digests
from hardcost.bot.notify import Notifier
from hardcost.sandbox.slack_rig import SlackRig, button_value, wait_for


def _text(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks") or [], ensure_ascii=False) + message.get("text", "")


def _notifier(rig: SlackRig) -> Notifier:
    return rig.ctx.notifier(make_web_client(rig.ws.bot_token, f"{rig.slack_server.url}/api/"))


def _digests(rig: SlackRig) -> list[dict[str, Any]]:
    return [m for m in rig.channel_messages() if "Daily digest" in m.get("text", "")]


def _run_until_waiting(rig: SlackRig, count: int) -> None:
    rig.firm.run()
    assert len(rig.firm.waiting()) == count


def _menu_value(digest: dict[str, Any], matter: str) -> str:
    return next(o["value"] for b in digest["blocks"] for e in b.get("elements", [])
                for o in e.get("options", []) if matter in o["text"]["text"])


def test_yesterdays_digest_menu_answers_only_what_it_showed_each_with_undo(
        rig: SlackRig) -> None:
    firm = rig.firm
    rig.command("set prompts digest")
    wait_for(lambda: any("one digest a day" in _text(m) for m in rig.replies_to(rig.admin)),
             what="digest mode")
    firm.client("Acme Holdings", ["Lease", "Employment"])
    firm.expense(("20.00", "Acme Holdings", "Filing"), doc_number="501")
    firm.expense(("21.00", "Acme Holdings", "Courier"), doc_number="502")
    _run_until_waiting(rig, 2)
    # Monday's digest: the two Acme expenses, one menu for both
    assert send_due_digests(_notifier(rig), datetime(2026, 2, 9, 10, 0, tzinfo=UTC)) == 1
    [monday] = wait_for(lambda: _digests(rig), what="Monday's digest")
    assert "2 expenses" in _text(monday) and "$41.00" in _text(monday)

    # Tuesday: a $700 Acme expense arrives and Tuesday's digest lists all three; then
    # someone answers Monday's message
    firm.later()
    firm.expense(("700.00", "Acme Holdings", "Expert report"), doc_number="503")
    _run_until_waiting(rig, 3)
    assert send_due_digests(_notifier(rig), datetime(2026, 2, 10, 10, 0, tzinfo=UTC)) == 1
    tuesday = wait_for(lambda: len(_digests(rig)) == 2 and _digests(rig)[-1],
                       what="Tuesday's digest")
    assert "3 expenses" in _text(tuesday) and "$741.00" in _text(tuesday)
    rig.click(monday, "hc_group_matter", selected=_menu_value(monday, "Lease"))

    updated = wait_for(lambda: (m := rig.ws.message(rig.channel, monday["ts"]))
                       and "Linked" in _text(m) and m, what="Monday's digest answered")
    assert "Linked 2 expenses" in _text(updated) and "$41.00" in _text(updated)
    entries = rig.firm.entries()
    assert sorted(Decimal(str(e["price"])) for e in entries) == [Decimal("20.00"),
                                                                Decimal("21.00")]
    assert {e["matter"]["id"] for e in entries} == {firm.matters["Lease"]}
    [left] = firm.waiting()
    assert left.amount == Decimal("700.00") and left.resolution is None

    # each expense linked is in the digest's thread, with Undo
    thread = wait_for(lambda: len(rig.ws.thread(rig.channel, monday["ts"])) == 3
                      and rig.ws.thread(rig.channel, monday["ts"])[1:], what="the thread")
    assert all("hc_undo_choice" in _text(m) and "Lease" in _text(m) for m in thread)
    assert {("20.00" in _text(m), "21.00" in _text(m)) for m in thread} == \
        {(True, False), (False, True)}
    courier = next(m for m in thread if "21.00" in _text(m))
    rig.click(courier, "hc_undo_choice", value=button_value(courier, "Undo"), user=rig.staff)

    wait_for(lambda: sorted(w.amount for w in firm.waiting())
             == [Decimal("21.00"), Decimal("700.00")], what="the expense waiting again")
    assert [Decimal(str(e["price"])) for e in rig.firm.entries()] == [Decimal("20.00")]
    reopened = wait_for(lambda: (m := rig.ws.message(rig.channel, courier["ts"]))
                        and "hc_undo_choice" not in _text(m) and m, what="the prompt reopened")
    assert "Lease" in _text(reopened)  # its choices again

    # Tuesday's menu answers what it showed and still waits: the $700 and the undone $21
    rig.click(tuesday, "hc_group_matter", selected=_menu_value(tuesday, "Employment"))
    answered = wait_for(lambda: (m := rig.ws.message(rig.channel, tuesday["ts"]))
                        and "Linked" in _text(m) and m, what="Tuesday's digest answered")
    assert "Linked 2 expenses" in _text(answered) and "$721.00" in _text(answered)
    assert "1 expense was answered one by one first" in _text(answered)
    assert firm.waiting() == []
    by_amount = {Decimal(str(e["price"])): e["matter"]["id"] for e in rig.firm.entries()}
    assert by_amount == {Decimal("20.00"): firm.matters["Lease"],
                         Decimal("21.00"): firm.matters["Employment"],
                         Decimal("700.00"): firm.matters["Employment"]}

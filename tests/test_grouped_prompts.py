"""Grouped prompts (docs/purchases.md, "When staff are asked"): several expenses of one client
waiting for the same matter choice share one message with one menu; each keeps its own prompt in the
thread. End to end over signed requests into the real app, with the sandbox Slack, QuickBooks and
Clio."""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Any

from sqlalchemy import select

from hardcost.sandbox.slack_rig import SlackRig, button_value, wait_for
from hardcost.sync.prompt_groups import GROUP_MIN
from hardcost.sync.store import PromptGroup


def _text(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks") or []) + message.get("text", "")


def _backlog(rig: SlackRig, count: int = 4) -> dict[str, Any]:
    """``count`` Acme expenses waiting for one of three matters; returns the group message."""
    rig.firm.client("Acme Holdings", ["Lease", "Employment", "Litigation"])
    for n in range(count):
        rig.firm.expense((f"{10 + n}.25", "Acme Holdings", f"Courier {n}"),
                         doc_number=f"30{n}")
    assert rig.command("run").status_code == 200
    group = wait_for(lambda: next((m for m in rig.channel_messages()
                                   if "hc_group_matter" in _text(m)), None),
                     what="the grouped message")
    wait_for(lambda: len(_thread_prompts(rig, group)) == count, what="the prompts in its thread")
    return group


def _thread_prompts(rig: SlackRig, group: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in rig.ws.thread(rig.channel, group["ts"]) if m["ts"] != group["ts"]]


def _option(message: dict[str, Any], label: str) -> str:
    for block in message["blocks"]:
        for element in block.get("elements", []):
            for option in element.get("options", []):
                if label in option["text"]["text"]:
                    return str(option["value"])
    raise AssertionError(f"no option {label!r}")


def test_a_backlog_gets_one_message_with_one_menu_and_its_prompts_in_the_thread(
        rig: SlackRig) -> None:
    group = _backlog(rig)

    text = _text(group)
    assert "4 expenses for Acme Holdings wait for a matter, $47.00" in text
    assert rig.prompts() == []  # no prompt of its own in the channel
    assert all("hc_choose_matter" in _text(m) for m in _thread_prompts(rig, group))


def test_fewer_than_the_group_size_are_asked_one_by_one(rig: SlackRig) -> None:
    rig.firm.client("Acme Holdings", ["Lease", "Employment"])
    for n in range(GROUP_MIN - 1):
        rig.firm.expense((f"{10 + n}.00", "Acme Holdings"), doc_number=f"40{n}")
    rig.command("run")

    wait_for(lambda: len(rig.prompts()) == GROUP_MIN - 1, what="single prompts")
    assert not any("hc_group_matter" in _text(m) for m in rig.channel_messages())


def test_a_group_choice_writes_every_entry_once_and_updates_every_prompt(rig: SlackRig) -> None:
    group = _backlog(rig)
    lease = rig.firm.matters["Lease"]

    rig.click(group, "hc_group_matter", selected=_option(group, "Lease"))

    entries = wait_for(lambda: len(rig.firm.entries()) == 4 and rig.firm.entries(),
                       what="four entries")
    assert {e["matter"]["id"] for e in entries} == {lease}
    assert len({e["note"] for e in entries}) == 4 and len(rig.firm.links()) == 4
    updated = wait_for(lambda: (m := rig.ws.message(rig.channel, group["ts"]))
                       and "Linked 4 expenses" in _text(m) and m, what="the group updated")
    assert rig.staff in _text(updated) and "hc_group_matter" not in _text(updated)
    prompts = wait_for(lambda: all("Linked to" in _text(m) for m in _thread_prompts(rig, group))
                       and _thread_prompts(rig, group), what="every prompt updated")
    assert all("hc_undo_choice" in _text(m) for m in prompts)
    assert rig.firm.waiting() == []
    rig.firm.later()
    rig.firm.run()
    assert len(rig.firm.entries()) == 4


def test_a_single_click_and_a_group_choice_at_once_double_nothing(rig: SlackRig) -> None:
    group = _backlog(rig)
    first = _thread_prompts(rig, group)[0]
    employment = rig.firm.clio.matters[rig.firm.matters["Employment"]]
    other = rig.ws.add_user("Gil Group")["id"]
    clicks = [
        threading.Thread(target=rig.click, args=(first, "hc_choose_matter"), kwargs={
            "value": button_value(first, employment["display_number"])}),
        threading.Thread(target=rig.click, args=(group, "hc_group_matter"), kwargs={
            "selected": _option(group, "Lease"), "user": other}),
    ]
    for t in clicks:
        t.start()
    for t in clicks:
        t.join()

    wait_for(lambda: len(rig.firm.entries()) == 4 and rig.firm.waiting() == [],
             what="all four answered")
    wait_for(lambda: (m := rig.ws.message(rig.channel, group["ts"]))
             and "Linked" in _text(m), what="the group updated")
    entries = rig.firm.entries()
    assert Counter(e["note"] for e in entries).most_common(1)[0][1] == 1
    assert len(rig.firm.links()) == 4
    assert {e["matter"]["id"] for e in entries} <= {employment["id"], rig.firm.matters["Lease"]}


def test_a_group_choice_by_someone_who_is_not_an_approver_is_refused(rig: SlackRig) -> None:
    group = _backlog(rig, 3)
    rig.firm.update_settings(approvers=[rig.admin])

    rig.click(group, "hc_group_matter", selected=_option(group, "Lease"))

    wait_for(lambda: any("approvers" in _text(m) for m in rig.replies_to(rig.staff)),
             what="the refusal")
    assert rig.firm.entries() == [] and len(rig.firm.waiting()) == 3


def test_answering_one_by_one_updates_the_group_count(rig: SlackRig) -> None:
    group = _backlog(rig, 3)
    first = _thread_prompts(rig, group)[0]
    lease = rig.firm.clio.matters[rig.firm.matters["Lease"]]

    rig.click(first, "hc_choose_matter", value=button_value(first, lease["display_number"]))

    wait_for(lambda: (m := rig.ws.message(rig.channel, group["ts"]))
             and "2 expenses for Acme Holdings wait" in _text(m), what="the group's count")


def test_a_client_with_a_hundred_matters_of_production_sized_ids_gets_its_group(
        rig: SlackRig) -> None:
    """Issue 24 #8: 92-100 matters with ten-digit ids made a choice key of 1,044 characters
    for a ``String(1000)`` column; on PostgreSQL the insert failed inside the notifier on
    every run (no summary, no prompts). The key fits now, and the menu still answers."""
    rig.firm.clio.ids_from(1_500_000_000)  # ten digits, as production Clio's are
    matters = [f"Matter {n:03d}" for n in range(95)]
    rig.firm.client("Acme Holdings", matters)
    for n in range(GROUP_MIN):
        rig.firm.expense((f"{10 + n}.00", "Acme Holdings"), doc_number=f"50{n}")

    assert rig.command("run").status_code == 200
    group = wait_for(lambda: next((m for m in rig.channel_messages()
                                   if "hc_group_matter" in _text(m)), None),
                     what="the grouped message")
    with rig.firm.sessions() as session:
        [row] = session.scalars(select(PromptGroup)).all()
    assert len(row.choice_key) <= PromptGroup.__table__.c.choice_key.type.length

    rig.click(group, "hc_group_matter", selected=_option(group, "Matter 094"))
    entries = wait_for(lambda: len(rig.firm.entries()) == GROUP_MIN and rig.firm.entries(),
                       what="the group's entries")
    assert {e["matter"]["id"] for e in entries} == {rig.firm.matters["Matter 094"]}

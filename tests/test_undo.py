"""Undo of a matter choice (SPEC §5 "Undo"), end to end: signed clicks into the real app,
the sandbox Slack and Clio, the store in between."""

from __future__ import annotations

import json
import threading
from typing import Any

from sqlalchemy import select

from hardcost.sandbox.slack_rig import SlackRig, button_value, wait_for
from hardcost.sync.audit import Action
from hardcost.sync.store import AuditEntry, WaitingExpense


def _text(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks") or []) + message.get("text", "")


def _linked(rig: SlackRig, user: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """An Acme expense chosen onto Lease; returns (its updated message, the Clio entry)."""
    rig.firm.client("Acme Holdings", ["Lease", "Employment", "Litigation"])
    rig.firm.expense(("48.75", "Acme Holdings", "Courier"), doc_number="2001")
    assert rig.command("run").status_code == 200
    prompt = wait_for(lambda: rig.prompts()[0] if rig.prompts() else None, what="the prompt")
    lease = rig.firm.clio.matters[rig.firm.matters["Lease"]]
    rig.click(prompt, "hc_choose_matter", value=button_value(prompt, lease["display_number"]),
              user=user)
    entry = wait_for(lambda: rig.firm.entries(), what="the Clio entry")[0]
    updated = wait_for(lambda: (m := rig.ws.message(rig.channel, prompt["ts"]))
                       and "hc_undo_choice" in _text(m) and m, what="the Undo button")
    return updated, entry


def _reply(rig: SlackRig, user: str, contains: str) -> dict[str, Any]:
    return wait_for(lambda: next((m for m in rig.replies_to(user) if contains in _text(m)),
                                 None), what=f"a reply containing {contains!r}")


def _undone_rows(rig: SlackRig) -> list[AuditEntry]:
    with rig.firm.sessions() as session:
        return list(session.scalars(select(AuditEntry).where(
            AuditEntry.firm_id == rig.firm.id, AuditEntry.action == Action.UNDONE.value)))


def test_undo_deletes_the_unbilled_entry_and_reopens_the_prompt_in_place(rig: SlackRig) -> None:
    message, entry = _linked(rig)

    rig.click(message, "hc_undo_choice", value=button_value(message, "Undo"))

    wait_for(lambda: rig.firm.entries() == [], what="the Clio entry deleted")
    reopened = wait_for(lambda: (m := rig.ws.message(rig.channel, message["ts"]))
                        and "hc_choose_matter" in _text(m) and m, what="the buttons back")
    assert "hc_undo_choice" not in _text(reopened)
    assert [w.id for w in rig.firm.waiting()] != []
    assert rig.firm.links() == []
    [row] = _undone_rows(rig)
    assert row.actor == rig.staff and row.clio_activity_id == entry["id"]
    assert row.matter is not None and "Lease" in row.matter


def test_an_undone_expense_can_be_chosen_again_and_lands_once(rig: SlackRig) -> None:
    message, _ = _linked(rig)
    rig.click(message, "hc_undo_choice", value=button_value(message, "Undo"))
    reopened = wait_for(lambda: (m := rig.ws.message(rig.channel, message["ts"]))
                        and "hc_choose_matter" in _text(m) and m, what="the buttons back")
    employment = rig.firm.clio.matters[rig.firm.matters["Employment"]]

    rig.click(reopened, "hc_choose_matter",
              value=button_value(reopened, employment["display_number"]))
    [entry] = wait_for(lambda: rig.firm.entries(), what="the new entry")
    assert entry["matter"]["id"] == employment["id"]
    rig.firm.later()
    rig.firm.run()  # a later run neither asks again nor writes it twice
    assert len(rig.firm.entries()) == 1 and len(rig.firm.links()) == 1
    assert rig.firm.waiting() == []


def test_undo_of_a_billed_entry_is_refused_with_the_bill(rig: SlackRig) -> None:
    message, entry = _linked(rig)
    rig.firm.clio.mark_billed(entry["id"])

    rig.click(message, "hc_undo_choice", value=button_value(message, "Undo"))

    reply = _reply(rig, rig.staff, "on bill")
    assert "cannot be undone" in _text(reply)
    assert len(rig.firm.entries()) == 1 and len(rig.firm.links()) == 1
    assert rig.firm.waiting() == [] and _undone_rows(rig) == []
    # the choice stands and can still be undone once it is off the bill
    with rig.firm.sessions() as session:
        assert session.scalars(select(WaitingExpense.resolution)).one() == "linked"


def test_undo_by_someone_who_neither_chose_nor_approves_is_refused(rig: SlackRig) -> None:
    message, _ = _linked(rig)
    rig.firm.update_settings(approvers=[rig.staff])
    other = rig.ws.add_user("Olly Other")["id"]

    rig.click(message, "hc_undo_choice", value=button_value(message, "Undo"), user=other)

    reply = _reply(rig, other, "can undo")
    assert rig.staff in _text(reply)
    assert len(rig.firm.entries()) == 1 and _undone_rows(rig) == []


def test_an_admin_may_undo_someone_elses_choice(rig: SlackRig) -> None:
    message, _ = _linked(rig)

    rig.click(message, "hc_undo_choice", value=button_value(message, "Undo"), user=rig.admin)

    wait_for(lambda: _undone_rows(rig), what="the undo recorded")
    assert rig.firm.entries() == []
    assert [r.actor for r in _undone_rows(rig)] == [rig.admin]


def test_double_undo_at_once_deletes_once(rig: SlackRig) -> None:
    message, _ = _linked(rig)
    value = button_value(message, "Undo")
    threads = [threading.Thread(target=rig.click, args=(message, "hc_undo_choice"),
                                kwargs={"value": value, "user": user})
               for user in (rig.staff, rig.admin)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    wait_for(lambda: _undone_rows(rig), what="the undo recorded")
    assert rig.firm.entries() == []
    wait_for(lambda: any(("undo" in _text(m).lower())
                         for u in (rig.staff, rig.admin) for m in rig.replies_to(u)
                         if "Undone" not in _text(m)), what="the second clicker is told")
    assert len(_undone_rows(rig)) == 1
    assert len(rig.firm.waiting()) == 1

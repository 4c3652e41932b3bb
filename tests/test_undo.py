"""Undo of a matter choice (docs/purchases.md, "When staff are asked", Undo), end to end: signed
clicks into the real app, the sandbox Slack and Clio, the store in between."""

from __future__ import annotations

import json
import threading
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from hardcost.sandbox.qbo import account_line
from hardcost.sandbox.slack_rig import SlackRig, button_value, wait_for
from hardcost.sync.audit import Action
from hardcost.sync.store import AuditEntry, LinkState, MatterRule, WaitingExpense
from tests.firmkit import price


def _text(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks") or [], ensure_ascii=False) + message.get("text", "")


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


# -- issue 24: Undo after an edit in QuickBooks, a person's change in Clio, a rule in force ---

def test_undo_after_a_quickbooks_edit_writes_the_purchase_as_it_is_now(rig: SlackRig) -> None:
    """Issue 24, item 2: chosen at $48.75, edited to $60.00 in QuickBooks (a run patched
    Clio), undone, chosen again: the new entry says $60.00, with the current SyncToken."""
    message, first = _linked(rig)
    [link] = rig.firm.links()
    edited = rig.firm.qbo.update_purchase(link.purchase_id, lines=[account_line(
        "60.00", rig.firm.import_account, customer_id=rig.firm.customers["Acme Holdings"],
        description="Courier")])
    rig.firm.later()
    assert rig.firm.run().updated == 1
    assert price(rig.firm.clio.activities[first["id"]]) == Decimal("60.00")

    rig.click(message, "hc_undo_choice", value=button_value(message, "Undo"))
    reopened = wait_for(lambda: (m := rig.ws.message(rig.channel, message["ts"]))
                        and "hc_choose_matter" in _text(m) and m, what="the buttons back")
    assert "60.00" in _text(reopened)  # the question asks about the purchase as it is now
    employment = rig.firm.clio.matters[rig.firm.matters["Employment"]]
    rig.click(reopened, "hc_choose_matter",
              value=button_value(reopened, employment["display_number"]))

    [entry] = wait_for(lambda: [e for e in rig.firm.entries() if e["id"] != first["id"]],
                       what="the new entry")
    assert entry["matter"]["id"] == employment["id"]
    assert price(entry) == Decimal("60.00")
    [link] = rig.firm.links()
    assert link.amount == Decimal("60.00") and link.sync_token == edited["SyncToken"]
    rig.firm.later()
    rig.firm.run()  # nothing left to follow: still one entry, at $60.00
    assert [price(e) for e in rig.firm.entries()] == [Decimal("60.00")]


def test_undo_of_an_entry_a_person_changed_in_clio_is_refused_with_the_reason(
        rig: SlackRig) -> None:
    """Issue 24, item 5: runs never overwrite a person's change in Clio; Undo does not
    delete one either, and says why."""
    message, entry = _linked(rig)
    rig.firm.clio.edit_activity(entry["id"], price="52.00")  # a person's correction in Clio

    rig.click(message, "hc_undo_choice", value=button_value(message, "Undo"))

    reply = _reply(rig, rig.staff, "changed in Clio")
    assert "48.75" in _text(reply) and "52.00" in _text(reply) and "did not delete" in \
        _text(reply)
    assert [e["id"] for e in rig.firm.entries()] == [entry["id"]]
    assert price(rig.firm.clio.activities[entry["id"]]) == Decimal("52.00")
    [link] = rig.firm.links()
    assert link.state == LinkState.CREATED.value
    assert rig.firm.waiting() == [] and _undone_rows(rig) == []
    with rig.firm.sessions() as session:
        assert session.scalars(select(WaitingExpense.resolution)).one() == "linked"


def _linked_with_rule(rig: SlackRig) -> tuple[dict[str, Any], MatterRule]:
    """A Speedy Couriers expense for Acme chosen onto Lease by staff, and "Always do this"
    clicked: (the answered message, the rule)."""
    rig.firm.client("Acme Holdings", ["Lease", "Employment", "Litigation"])
    vendor = rig.firm.qbo.add_vendor("Speedy Couriers")
    rig.firm.expense(("48.75", "Acme Holdings", "Courier"), doc_number="2001",
                     entity=(vendor["Id"], "Vendor"))
    assert rig.command("run").status_code == 200
    prompt = wait_for(lambda: rig.prompts()[0] if rig.prompts() else None, what="the prompt")
    lease = rig.firm.clio.matters[rig.firm.matters["Lease"]]
    rig.click(prompt, "hc_choose_matter", value=button_value(prompt, lease["display_number"]))
    offer = wait_for(lambda: (m := rig.ws.message(rig.channel, prompt["ts"]))
                     and "Always do this for" in _text(m) and m, what="the rule offer")
    rig.click(offer, "hc_make_rule", value=button_value(offer, "Always do this for"))
    [rule] = wait_for(lambda: _rules(rig), what="the rule")
    updated = wait_for(lambda: (m := rig.ws.message(rig.channel, prompt["ts"]))
                       and "Always do this for" not in _text(m)
                       and "hc_undo_choice" in _text(m) and m, what="the rule shown")
    return updated, rule


def _rules(rig: SlackRig) -> list[MatterRule]:
    with rig.firm.sessions() as session:
        return list(session.scalars(select(MatterRule).where(
            MatterRule.firm_id == rig.firm.id, MatterRule.removed_at.is_(None))))


def test_undo_names_the_rule_made_from_the_choice_and_offers_to_remove_it(
        rig: SlackRig) -> None:
    """Issue 24, item 6: the rule made from the undone choice would send the next Speedy
    Couriers cost for Acme to Lease again; Undo says so, and its button removes it
    (audited)."""
    message, rule = _linked_with_rule(rig)

    rig.click(message, "hc_undo_choice", value=button_value(message, "Undo"))

    reply = _reply(rig, rig.staff, "Undone")
    assert "Speedy Couriers → Acme Holdings" in _text(reply) and "still in force" in \
        _text(reply)
    assert _rules(rig) != []  # not removed behind the clicker's back

    rig.click(reply, "hc_remove_undone_rule", value=button_value(reply, "Remove rule"))

    wait_for(lambda: _rules(rig) == [], what="the rule removed")
    answered = wait_for(lambda: (m := rig.ws.message(reply["channel"], reply["ts"]))
                        and "removed by" in _text(m) and m, what="the answer updated")
    assert "hc_remove_undone_rule" not in _text(answered)
    with rig.firm.sessions() as session:
        removed = session.scalars(select(AuditEntry).where(
            AuditEntry.firm_id == rig.firm.id,
            AuditEntry.action == Action.RULE_REMOVED.value)).all()
    assert [r.actor for r in removed] == [rig.staff]
    # the next Speedy Couriers cost for Acme is asked about, not sent to Lease
    vendor_id = rule.payee_id
    rig.firm.expense(("20.00", "Acme Holdings", "Courier"), doc_number="2002",
                     entity=(vendor_id, "Vendor"))
    rig.firm.later()
    rig.firm.run()
    assert rig.firm.entries() == [] and len(rig.firm.waiting()) == 2


def test_undo_without_a_rule_says_nothing_of_rules(rig: SlackRig) -> None:
    message, _ = _linked(rig)

    rig.click(message, "hc_undo_choice", value=button_value(message, "Undo"))

    reply = _reply(rig, rig.staff, "Undone")
    assert "rule" not in _text(reply).lower()


def test_remove_rule_from_an_undo_answer_slack_sent_without_its_blocks(rig: SlackRig) -> None:
    """Slack may leave an ephemeral message's blocks out of the click: the rule still goes,
    and the answer is replaced by the removal."""
    message, _ = _linked_with_rule(rig)
    rig.click(message, "hc_undo_choice", value=button_value(message, "Undo"))
    reply = _reply(rig, rig.staff, "still in force")
    payload = rig.click_payload(reply, "hc_remove_undone_rule",
                                value=button_value(reply, "Remove rule"))
    del payload["message"]

    rig.interaction(payload)

    wait_for(lambda: _rules(rig) == [], what="the rule removed")
    answered = wait_for(lambda: (m := rig.ws.message(reply["channel"], reply["ts"]))
                        and "removed by" in _text(m) and m, what="the answer replaced")
    assert "hc_remove_undone_rule" not in _text(answered)

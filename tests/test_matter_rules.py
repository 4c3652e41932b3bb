"""Matter rules (docs/purchases.md, "Matter rules"), over real HTTP with signed Slack requests:
made from the button on an answered prompt, applied by later runs exactly once, listed and
removed with ``/hardcost rules``, refused to non-approvers, and stopped by a closed matter."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from hardcost.sandbox.slack_rig import SlackRig, button_value, wait_for
from hardcost.sync.store import AuditEntry, MatterRule

OFFER = "Always do this for"


def _text(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks") or [], ensure_ascii=False) + message.get("text", "")


def _rules(rig: SlackRig, *, active: bool = True) -> list[MatterRule]:
    with rig.firm.sessions() as session:
        query = select(MatterRule).where(MatterRule.firm_id == rig.firm.id)
        if active:
            query = query.where(MatterRule.removed_at.is_(None))
        return list(session.scalars(query))


def _actions(rig: SlackRig) -> list[str]:
    with rig.firm.sessions() as session:
        return list(session.scalars(select(AuditEntry.action).where(
            AuditEntry.firm_id == rig.firm.id).order_by(AuditEntry.id)))


def _setup(rig: SlackRig, payee: str = "Speedy Couriers",
           client: str = "Acme Holdings") -> tuple[str, str]:
    firm = rig.firm
    firm.client(client, ["Lease", "Employment", "Litigation"])
    vendor = firm.qbo.add_vendor(payee)
    return vendor["Id"], client


def _expense(rig: SlackRig, vendor_id: str, client: str, amount: str, doc: str) -> None:
    rig.firm.expense((amount, client, "Courier"), doc_number=doc, entity=(vendor_id, "Vendor"))


def _asked(rig: SlackRig) -> list[dict[str, Any]]:
    """Every matter prompt posted, answered or not."""
    return [m for m in rig.channel_messages() if "Which matter" in m.get("text", "")
            or "Linked to" in m.get("text", "")]


def _run_and_prompt(rig: SlackRig, count: int) -> dict[str, Any]:
    """Start a run; the ``count``-th prompt ever posted (it must be open)."""
    assert rig.command("run").status_code == 200
    asked = wait_for(lambda: len(_asked(rig)) >= count and _asked(rig), what=f"prompt {count}")
    return asked[count - 1]


def _choose_and_make_rule(rig: SlackRig, prompt: dict[str, Any], matter: str,
                          user: str | None = None) -> dict[str, Any]:
    """Choose ``matter`` on the prompt, then click the rule offer on the updated message."""
    number = rig.firm.clio.matters[rig.firm.matters[matter]]["display_number"]
    rig.click(prompt, "hc_choose_matter", value=button_value(prompt, number), user=user)
    updated = wait_for(lambda: (m := rig.ws.message(rig.channel, prompt["ts"]))
                       and OFFER in _text(m) and m, what="the rule offer")
    rig.click(updated, "hc_make_rule", value=button_value(updated, OFFER), user=user)
    return updated


def _run(rig: SlackRig) -> None:
    before = len([m for m in rig.channel_messages() if "Imported" in _text(m)
                  or "imported" in _text(m)])
    assert rig.command("run").status_code == 200
    wait_for(lambda: len([m for m in rig.channel_messages() if "Imported" in _text(m)
                          or "imported" in _text(m)]) > before or None, what="a run summary")


def test_a_rule_made_from_the_button_imports_the_next_matching_expense_without_a_prompt(
        rig: SlackRig) -> None:
    vendor, client = _setup(rig)
    _expense(rig, vendor, client, "48.75", "2001")
    prompt = _run_and_prompt(rig, 1)
    _choose_and_make_rule(rig, prompt, "Employment")

    rule = wait_for(lambda: _rules(rig), what="the rule")[0]
    assert (rule.payee_name, rule.client_name, rule.created_by) == \
        ("Speedy Couriers", client, rig.staff)
    assert rule.matter_id == rig.firm.matters["Employment"]
    made = wait_for(lambda: "Rule made by" in _text(rig.ws.message(rig.channel, prompt["ts"])
                                                   or {}), what="the rule shown")
    assert made and "rule_created" in _actions(rig)

    rig.firm.later()
    _expense(rig, vendor, client, "12.00", "2002")
    _run(rig)
    rig.firm.later()
    again = rig.firm.run(purchase_ids=set(rig.firm.qbo.purchases))  # read again
    assert again.imported == 0 and again.waiting == 0

    entries = [e for e in rig.firm.entries() if "2002" in str(e.get("reference"))]
    assert len(entries) == 1
    assert entries[0]["matter"]["id"] == rig.firm.matters["Employment"]
    assert len(_asked(rig)) == 1  # only the first expense was ever asked about
    assert _rules(rig)[0].uses == 1
    summary = next(m for m in rig.channel_messages() if "12.00" in _text(m)
                   or "1 entr" in _text(m))
    thread = wait_for(lambda: rig.ws.thread(rig.channel, summary["ts"])[1:], what="details")
    details = " ".join(_text(m) for m in thread)
    assert "by the rule Speedy Couriers → Acme Holdings" in details
    assert f"<@{rig.staff}>" in details


def test_rules_are_listed_and_removed_with_hardcost_rules(rig: SlackRig) -> None:
    vendor, client = _setup(rig)
    _expense(rig, vendor, client, "48.75", "2001")
    _choose_and_make_rule(rig, _run_and_prompt(rig, 1), "Lease")
    wait_for(lambda: _rules(rig), what="the rule")

    rig.command("rules", user=rig.staff)
    listed = wait_for(lambda: next((m for m in rig.replies_to(rig.staff)
                                    if "hc_remove_rule" in _text(m)), None), what="the list")
    assert "Speedy Couriers" in _text(listed) and "not used yet" in _text(listed)
    assert f"<@{rig.staff}>" in _text(listed)

    rig.click(listed, "hc_remove_rule", value=button_value(listed, "Speedy Couriers"),
              user=rig.staff)
    wait_for(lambda: not _rules(rig), what="the rule removed")
    assert _actions(rig).count("rule_removed") == 1
    assert _rules(rig, active=False)[0].removed_by == rig.staff

    rig.firm.later()
    _expense(rig, vendor, client, "12.00", "2002")
    _run_and_prompt(rig, 2)  # asked again


def test_a_non_approver_cannot_make_or_remove_a_rule(rig: SlackRig) -> None:
    vendor, client = _setup(rig)
    _expense(rig, vendor, client, "48.75", "2001")
    prompt = _run_and_prompt(rig, 1)
    rig.firm.update_settings(approvers=[rig.admin])
    outsider = rig.ws.add_user("Nora Nobody")["id"]
    _choose_and_make_rule(rig, prompt, "Lease", user=rig.admin)
    wait_for(lambda: _rules(rig), what="the approver's rule")

    updated = rig.ws.message(rig.channel, prompt["ts"])
    assert updated is not None
    rig.command("rules", user=outsider)
    listed = wait_for(lambda: next((m for m in rig.replies_to(outsider)
                                    if "hc_remove_rule" in _text(m)), None), what="the list")
    rig.click(listed, "hc_remove_rule", value=button_value(listed, "Speedy Couriers"),
              user=outsider)
    wait_for(lambda: any("approvers" in _text(m) for m in rig.replies_to(outsider)),
             what="the refusal")
    assert len(_rules(rig)) == 1

    # A second expense, answered by the approver; the outsider clicks its rule offer.
    rig.firm.later()
    other = rig.firm.qbo.add_vendor("Rapid Runners")
    _expense(rig, other["Id"], client, "9.00", "2003")
    second = _run_and_prompt(rig, 2)
    number = rig.firm.clio.matters[rig.firm.matters["Litigation"]]["display_number"]
    rig.click(second, "hc_choose_matter", value=button_value(second, number), user=rig.admin)
    offered = wait_for(lambda: (m := rig.ws.message(rig.channel, second["ts"]))
                       and OFFER in _text(m) and m, what="the offer")
    replies = len(rig.replies_to(outsider))
    rig.click(offered, "hc_make_rule", value=button_value(offered, OFFER), user=outsider)
    wait_for(lambda: len(rig.replies_to(outsider)) > replies, what="the refusal")
    assert "approvers" in _text(rig.replies_to(outsider)[-1])
    assert [r.payee_name for r in _rules(rig)] == ["Speedy Couriers"]


def test_a_rule_whose_matter_closed_stops_and_the_expense_is_asked_with_a_note(
        rig: SlackRig) -> None:
    vendor, client = _setup(rig)
    _expense(rig, vendor, client, "48.75", "2001")
    _choose_and_make_rule(rig, _run_and_prompt(rig, 1), "Employment")
    wait_for(lambda: _rules(rig), what="the rule")
    rig.firm.clio.matters[rig.firm.matters["Employment"]]["status"] = "Closed"

    rig.firm.later()
    _expense(rig, vendor, client, "12.00", "2002")
    prompt = _run_and_prompt(rig, 2)

    assert "no longer open" in _text(prompt) and "Speedy Couriers" in _text(prompt)
    assert not [e for e in rig.firm.entries() if "2002" in str(e.get("reference"))]
    assert _rules(rig)[0].uses == 0


def test_hostile_payee_and_client_names_are_escaped_in_the_offer_and_the_list(
        rig: SlackRig) -> None:
    vendor, client = _setup(rig, payee="<!channel> *Fast* & <@U0BOSS>",
                            client="Acme <!here> Holdings")
    _expense(rig, vendor, client, "48.75", "2001")
    updated = _choose_and_make_rule(rig, _run_and_prompt(rig, 1), "Lease")
    wait_for(lambda: _rules(rig), what="the rule")
    made = wait_for(lambda: (m := rig.ws.message(rig.channel, updated["ts"]))
                    and "Rule made by" in _text(m) and m, what="the rule shown")
    rig.command("rules", user=rig.staff)
    listed = wait_for(lambda: next((m for m in rig.replies_to(rig.staff)
                                    if "hc_remove_rule" in _text(m)), None), what="the list")
    for message in (updated, made, listed):
        text = json.dumps([b.get("text") for b in message["blocks"]]
                          + [e.get("text") for b in message["blocks"]
                             for e in b.get("elements", []) if e.get("type") == "mrkdwn"])
        assert "<!channel>" not in text and "<!here>" not in text and "<@U0BOSS>" not in text
        assert "&lt;!channel&gt;" in text or "&lt;!here&gt;" in text

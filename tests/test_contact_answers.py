"""A contact question answered once stays answered (issue 24, item 1), end to end: signed
clicks into the real Bolt app, the sandbox Slack, QuickBooks and Clio, the store in between.

"Jane Smith" in QuickBooks matches two Clio contacts of that name: A (two open matters, so
choosing A asks for the matter next) and B (one open matter, so a second answer choosing B
would write the expense to B's matter at once)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from hardcost.sandbox.slack_rig import SlackRig, wait_for
from hardcost.sync.audit import Action
from hardcost.sync.store import AuditEntry, ContactLink, WaitingExpense


def _text(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks") or []) + message.get("text", "")


def _reply(rig: SlackRig, user: str, contains: str) -> dict[str, Any]:
    return wait_for(lambda: next((m for m in rig.replies_to(user) if contains in _text(m)),
                                 None), what=f"a reply containing {contains!r}")


def _contact_answered(rig: SlackRig) -> tuple[dict[str, Any], int, int, int]:
    """The contact question answered with contact A by staff, and its matter question posted:
    (the contact question as first posted, its waiting id, A's id, B's id)."""
    rig.firm.client("Jane Smith", contact=False)
    first = rig.firm.clio.add_contact("Jane Smith", email="jane.a@example.com")
    second = rig.firm.clio.add_contact("Jane Smith", email="jane.b@example.com")
    rig.firm.clio.add_matter(first["id"], description="Smith v. City")
    rig.firm.clio.add_matter(first["id"], description="Smith estate")
    rig.firm.clio.add_matter(second["id"], description="Smith lease")
    rig.firm.expense(("12.00", "Jane Smith"))
    rig.command("run")
    question = wait_for(lambda: rig.prompts()[0] if rig.prompts() else None,
                        what="the contact question")
    assert "hc_choose_contact" in _text(question)
    waiting_id = rig.firm.waiting()[0].id

    rig.click(question, "hc_choose_contact", value=f"{waiting_id}:{first['id']}")

    follow_up = wait_for(lambda: next((m for m in rig.prompts()
                                       if "hc_choose_matter" in _text(m)), None),
                         what="the matter question")
    wait_for(lambda: _state(rig)[2].slack_ts == follow_up["ts"], what="its ts recorded")
    return question, waiting_id, first["id"], second["id"]


def _state(rig: SlackRig) -> tuple[list[int], list[AuditEntry], WaitingExpense]:
    with rig.firm.sessions() as session:
        links = list(session.scalars(select(ContactLink.clio_contact_id).where(
            ContactLink.firm_id == rig.firm.id, ContactLink.qbo_type == "Customer")))
        chosen = list(session.scalars(select(AuditEntry).where(
            AuditEntry.firm_id == rig.firm.id,
            AuditEntry.action == Action.CONTACT_CHOSEN.value)))
        [row] = session.scalars(select(WaitingExpense).where(
            WaitingExpense.firm_id == rig.firm.id)).all()
    return links, chosen, row


def test_an_older_copy_of_an_answered_contact_question_changes_nothing(rig: SlackRig) -> None:
    question, waiting_id, first, second = _contact_answered(rig)
    _, _, before = _state(rig)
    posted = len(rig.channel_messages())

    # An admin answers the same question on an older copy (as /hardcost pending showed it).
    rig.click(question, "hc_choose_contact", value=f"{waiting_id}:{second}", user=rig.admin)

    reply = _reply(rig, rig.admin, "Already answered")
    assert f"<@{rig.staff}>" in _text(reply) and "Jane Smith" in _text(reply)
    assert "<!date^" in _text(reply)  # when, in the reader's time zone
    links, chosen, row = _state(rig)
    assert links == [first]  # the first answer's contact link stands
    assert len(chosen) == 1 and chosen[0].actor == rig.staff
    assert rig.firm.entries() == []  # nothing written to B's only matter
    assert row.contact_id == first and row.reason == "several_matters"
    assert row.resolution is None and row.slack_ts == before.slack_ts  # its question stays
    assert len(rig.channel_messages()) == posted  # no new question


def test_a_double_click_on_a_contact_is_one_answer(rig: SlackRig) -> None:
    question, waiting_id, first, _ = _contact_answered(rig)
    _, _, before = _state(rig)
    posted = len(rig.channel_messages())

    rig.click(question, "hc_choose_contact", value=f"{waiting_id}:{first}")

    _reply(rig, rig.staff, "Already answered")
    links, chosen, row = _state(rig)
    assert links == [first] and len(chosen) == 1
    assert row.slack_ts == before.slack_ts and row.candidates == before.candidates
    assert len(rig.channel_messages()) == posted

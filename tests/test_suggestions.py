"""Suggestions in the matter prompt (docs/purchases.md, "Suggestions"): the matter the firm's
own earlier choices support comes first, marked *Suggested* with its reason; no evidence, no
suggestion; a suggestion never imports anything. The ranking itself is a pure function, tested
with tables of cases; the prompt is tested over real HTTP with signed Slack requests."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from hardcost.sandbox.slack_rig import SlackRig, button_value, wait_for
from hardcost.sync.rules import Payee, PlannedEntry, QboKey
from hardcost.sync.suggestions import PastChoice, rank

# -- the ranking (pure) ----------------------------------------------------------------------


def _entry(payee: str | None = "V1", memo: str | None = None, account: str | None = "80",
           descriptions: tuple[str, ...] = ()) -> PlannedEntry:
    return PlannedEntry(
        key=QboKey("9130", "345", "58", ""), sync_token="0", date=date(2026, 3, 2),
        amount=Decimal("10.00"), reference=None, note="", customer_name="Acme",
        payee=Payee(payee, "Speedy Couriers", "Vendor") if payee else None, memo=memo,
        descriptions=descriptions, payment_type="Check", account_id=account)


MATTERS = [{"kind": "matter", "id": i, "display_number": f"0000{i}",
            "description": d, "status": "Open", "client_id": 1}
           for i, d in [(1, "Lease dispute"), (2, "Employment claim"), (3, "Harbour litigation")]]


def _past(matter: int, payee: str | None = "V1", account: str | None = "80",
          words: tuple[str, ...] = ()) -> PastChoice:
    return PastChoice(matter, payee, account, frozenset(words))


@pytest.mark.parametrize(("entry", "past", "first", "reason"), [
    (_entry(), [_past(2), _past(2), _past(2), _past(2), _past(1)], 2,
     "4 of the last 5 Speedy Couriers costs for Acme went to 00002"),
    (_entry(payee="V9"), [_past(3, payee="V1"), _past(3, payee="V2")], 3,
     "2 of the last 2 costs for Acme in this QuickBooks account went to 00003"),
    (_entry(payee=None, account=None, memo="Deposition transcript"),
     [_past(1, None, None, ("deposition",)), _past(2, None, None, ("filing",))], 1,
     "earlier costs for Acme mentioning “deposition” went to 00001"),
    (_entry(payee=None, account=None, memo="Courier for 00003"), [], 3,
     "the memo names 00003"),
    (_entry(payee=None, account=None, memo="Harbour litigation courier"), [], 3,
     "the memo names 00003"),
], ids=["same-payee", "same-account", "shared-memo-words", "memo-names-number",
        "memo-names-description"])
def test_the_best_supported_matter_comes_first_with_its_reason(
        entry: PlannedEntry, past: list[PastChoice], first: int, reason: str) -> None:
    ordered, suggestion = rank(entry, "Acme", MATTERS, past)

    assert suggestion is not None and suggestion.matter_id == first
    assert suggestion.reason == reason
    assert ordered[0]["id"] == first
    assert sorted(c["id"] for c in ordered) == [1, 2, 3]


@pytest.mark.parametrize("past", [
    [],  # no history at all
    [_past(1, payee="V7", account="99")],  # another payee, another account
    [_past(9), _past(9)],  # earlier choices went to a matter no longer offered
    [_past(1), _past(2)],  # a tie is no suggestion
], ids=["no-history", "unrelated", "matter-gone", "tie"])
def test_no_evidence_no_suggestion_and_the_order_stays(past: list[PastChoice]) -> None:
    ordered, suggestion = rank(_entry(memo="Courier"), "Acme", MATTERS, past)

    assert suggestion is None
    assert ordered == MATTERS


# -- the prompt, over real HTTP --------------------------------------------------------------


def _text(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks") or [], ensure_ascii=False) + message.get("text", "")


def _asked(rig: SlackRig) -> list[dict[str, Any]]:
    return [m for m in rig.channel_messages() if "Which matter" in m.get("text", "")
            or "Linked to" in m.get("text", "")]


def _prompt(rig: SlackRig, count: int) -> dict[str, Any]:
    rig.firm.later()
    assert rig.command("run").status_code == 200
    return wait_for(lambda: len(_asked(rig)) >= count and _asked(rig), what=f"prompt {count}"
                    )[count - 1]


def _choose(rig: SlackRig, prompt: dict[str, Any], matter: str) -> None:
    number = rig.firm.clio.matters[rig.firm.matters[matter]]["display_number"]
    rig.click(prompt, "hc_choose_matter", value=button_value(prompt, number))
    wait_for(lambda: (m := rig.ws.message(rig.channel, prompt["ts"])) and m["updated"],
             what="the answer")


def _choice_sections(prompt: dict[str, Any]) -> list[str]:
    return [b["text"]["text"] for b in prompt["blocks"]
            if (b.get("accessory") or {}).get("action_id") == "hc_choose_matter"]


def test_a_payees_earlier_choices_put_their_matter_first_marked_suggested(
        rig: SlackRig) -> None:
    firm = rig.firm
    firm.client("Acme Holdings", ["Lease", "Employment", "Litigation"])
    vendor = firm.qbo.add_vendor("Speedy Couriers")["Id"]
    litigation = firm.clio.matters[firm.matters["Litigation"]]["display_number"]
    for n in range(2):
        firm.expense((f"1{n}.00", "Acme Holdings", "Courier"), doc_number=f"20{n}",
                     entity=(vendor, "Vendor"))
        first = _prompt(rig, n + 1)
        if n == 0:  # no history yet: no suggestion, Clio's order
            assert "Suggested" not in _text(first)
            assert "Lease" in _choice_sections(first)[0]
        _choose(rig, first, "Litigation")

    firm.expense(("30.00", "Acme Holdings", "Courier"), doc_number="209",
                 entity=(vendor, "Vendor"))
    third = _prompt(rig, 3)

    sections = _choice_sections(third)
    assert sections[0].startswith("*Suggested:*") and "Litigation" in sections[0]
    assert f"2 of the last 2 Speedy Couriers costs for Acme Holdings went to {litigation}" \
        in _text(third)
    # A suggestion imports nothing: the expense still waits for a person.
    assert not [e for e in firm.entries() if e.get("reference") == "209"]
    assert len(firm.waiting()) == 1


def test_the_suggestion_reason_escapes_a_hostile_payee_name(rig: SlackRig) -> None:
    firm = rig.firm
    firm.client("Acme <!here>", ["Lease", "Employment"])
    vendor = firm.qbo.add_vendor("<!channel> *Fast* <@U0BOSS>")["Id"]
    firm.expense(("10.00", "Acme <!here>", "Courier"), doc_number="301",
                 entity=(vendor, "Vendor"))
    _choose(rig, _prompt(rig, 1), "Employment")
    firm.expense(("11.00", "Acme <!here>", "Courier"), doc_number="302",
                 entity=(vendor, "Vendor"))

    second = _prompt(rig, 2)

    text = _text(second)
    assert "Suggested" in text and "&lt;!channel&gt;" in text
    assert "<!channel>" not in text and "<!here>" not in text and "<@U0BOSS>" not in text


def test_history_reads_an_answer_given_after_the_session_loaded_the_row(firm: Any) -> None:
    """A run's question batch loads its rows, then reads the client's history in the same
    session; a person who answered one of those rows meanwhile made the history query return
    it while the session still held it unanswered (an assertion failed and the run crashed,
    found by the Slack benchmark). The history takes the query's own values."""
    from datetime import UTC, datetime

    from sqlalchemy import select, update

    from hardcost.sync.store import WaitingExpense
    from hardcost.sync.suggestions import history

    entry = _entry(payee="V9", memo="courier").to_json()
    with firm.sessions() as session:
        row = WaitingExpense(firm_id=firm.id, realm_id=firm.qbo.realm_id, purchase_id="77",
                             customer_id="5", reason="matter", contact_id=41, entry=entry,
                             amount=Decimal("10.00"), txn_date=date(2026, 3, 2),
                             customer_name="Acme")
        session.add(row)
        session.commit()
        row_id = row.id
    with firm.sessions() as run_session:
        loaded = run_session.scalars(select(WaitingExpense).where(
            WaitingExpense.id == row_id)).one()
        assert loaded.clio_matter_id is None
        with firm.sessions() as person:  # the answer, committed by another session
            person.execute(update(WaitingExpense).where(WaitingExpense.id == row_id).values(
                resolution="linked", clio_matter_id=2,
                resolved_at=datetime(2026, 3, 3, tzinfo=UTC)))
            person.commit()
        past = history(run_session, firm.id, 41)
    assert [(p.matter_id, p.payee_id) for p in past] == [(2, "V9")]

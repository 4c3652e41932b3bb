"""docs/purchases.md "Lines with no customer" with ``no-customer ask`` (the default): an
import-account line with no customer waits, and Slack asks which matter, with a search over all the
firm's open and pending matters. End to end: signed HTTP into the real Bolt app (the search menu's
``block_suggestion`` options request, then the pick), the sandbox QuickBooks and Clio behind
it, and the store in between."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from hardcost.sandbox.qbo import account_line
from hardcost.sandbox.slack_rig import SlackRig, button_value, wait_for
from hardcost.sync import matter_cache
from hardcost.sync.audit import Action
from hardcost.sync.clio import Matter
from hardcost.sync.rules import NO_CUSTOMER
from hardcost.sync.store import AuditEntry, CachedMatter, FirmSettings, WaitReason
from hardcost.sync.summary import RunSummary
from tests.firmkit import Firm, make_firm, price


def _text(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks") or [], ensure_ascii=False) + message.get("text", "")


def _reply(rig: SlackRig, user: str, contains: str) -> dict[str, Any]:
    return wait_for(lambda: next((m for m in rig.replies_to(user) if contains in _text(m)),
                                 None), what=f"a reply containing {contains!r}")


def _clients(firm: Firm) -> None:
    firm.client("Acme Holdings", ["Lease", "Employment"])
    firm.client("Jane Smith", ["Smith estate"])


def _untagged(firm: Firm, *amounts: str, doc_number: str = "3001",
              tagged: tuple[str, str] | None = None) -> dict[str, Any]:
    """A check whose import-account lines carry no customer (``tagged``: one more line, for
    that customer)."""
    lines = [account_line(amount, firm.import_account, description=f"Courier {n}")
             for n, amount in enumerate(amounts, start=1)]
    if tagged is not None:
        lines.append(account_line(tagged[0], firm.import_account,
                                  customer_id=firm.customers[tagged[1]]))
    return firm.qbo.add_purchase(payment_type="Check", txn_date="2026-02-03", lines=lines,
                                 doc_number=doc_number)


def _prompt(rig: SlackRig) -> dict[str, Any]:
    return wait_for(lambda: rig.prompts()[0] if rig.prompts() else None, what="the prompt")


def _options(rig: SlackRig, waiting_id: int, query: str,
             user: str | None = None) -> list[dict[str, Any]]:
    response = rig.options(f"hc_prompt:{waiting_id}", "hc_search_matter", query, user=user)
    assert response.status_code == 200, response.text
    options = response.json()["options"]
    assert isinstance(options, list)
    return options


def _pick(rig: SlackRig, prompt: dict[str, Any], waiting_id: int, value: str,
          user: str | None = None) -> None:
    rig.click(prompt, "hc_search_matter", selected=value, block_id=f"hc_prompt:{waiting_id}",
              user=user)


# -- asked, chosen through the search menu, written once ----------------------------------------

def test_untagged_expense_is_asked_chosen_through_the_search_and_written_once(
        rig: SlackRig) -> None:
    firm = rig.firm
    _clients(firm)
    purchase = _untagged(firm, "77.10")

    assert rig.command("run").status_code == 200
    prompt = _prompt(rig)
    text = _text(prompt)
    assert "No client on this expense: which matter?" in text
    assert "external_select" in text and "$77.10" in text
    [row] = firm.waiting()
    assert row.reason == WaitReason.NO_CUSTOMER.value and row.customer_id == NO_CUSTOMER

    options = _options(rig, row.id, "smith")
    assert [o["text"]["text"] for o in options] == [
        f"{firm.clio.matters[firm.matters['Smith estate']]['display_number']} Smith estate"]
    assert options[0]["description"]["text"] == "Jane Smith"  # the client, to tell them apart
    _pick(rig, prompt, row.id, options[0]["value"])

    [entry] = wait_for(lambda: firm.entries(), what="the Clio entry")
    assert entry["matter"]["id"] == firm.matters["Smith estate"]
    assert price(entry) == Decimal("77.10")
    marker = f"[qbo {firm.qbo.realm_id}/{purchase['Id']}/-]"
    assert marker in entry["note"]
    updated = wait_for(lambda: (m := rig.ws.message(rig.channel, prompt["ts"]))
                       and m["updated"] and m, what="the prompt updated in place")
    assert "Smith estate" in _text(updated) and rig.staff in _text(updated)
    assert firm.waiting() == []
    [link] = firm.links()
    assert link.customer_id == NO_CUSTOMER and link.clio_activity_id == entry["id"]

    late = rig.ws.add_user("Lou Late")["id"]
    _pick(rig, prompt, row.id, options[0]["value"], user=late)
    assert rig.staff in _text(_reply(rig, late, "Already answered"))

    firm.later()
    summary = firm.run()
    assert summary.unchanged == 1 and summary.waiting == 0
    # The marker with its "-" finds the entry again (how an interrupted write is recovered).
    assert [a.id for a in firm.engine.clio.find_by_marker(marker)] == [entry["id"]]
    assert len(firm.entries()) == 1


def test_not_a_client_cost_settles_an_untagged_expense_with_nothing_written(
        rig: SlackRig) -> None:
    firm = rig.firm
    _clients(firm)
    _untagged(firm, "12.00")
    rig.command("run")
    prompt = _prompt(rig)

    rig.click(prompt, "hc_not_client_cost", value=button_value(prompt, "Not a client cost"))

    wait_for(lambda: firm.waiting() == [], what="the prompt settled")
    firm.later()
    summary = firm.run()
    assert firm.entries() == [] and summary.waiting == 0


def test_only_approvers_may_choose_the_matter_of_an_untagged_expense(rig: SlackRig) -> None:
    firm = rig.firm
    _clients(firm)
    firm.update_settings(approvers=[rig.admin])
    _untagged(firm, "30.00")
    rig.command("run")
    prompt = _prompt(rig)
    [row] = firm.waiting()
    [option] = _options(rig, row.id, "Lease")

    _pick(rig, prompt, row.id, option["value"], user=rig.staff)

    _reply(rig, rig.staff, "Only the firm's approvers")
    assert firm.entries() == [] and len(firm.waiting()) == 1
    _pick(rig, prompt, row.id, option["value"], user=rig.admin)
    assert wait_for(lambda: firm.entries())[0]["matter"]["id"] == firm.matters["Lease"]


def test_a_matter_the_search_did_not_offer_is_refused(rig: SlackRig) -> None:
    firm = rig.firm
    _clients(firm)
    closed = firm.clio.add_matter(firm.contacts["Jane Smith"], description="Old probate",
                                  status="Closed")
    _untagged(firm, "30.00")
    rig.command("run")
    prompt = _prompt(rig)
    [row] = firm.waiting()
    assert _options(rig, row.id, "probate") == []

    _pick(rig, prompt, row.id, f"{row.id}:{closed['id']}")

    _reply(rig, rig.staff, "not one of this expense")
    assert firm.entries() == [] and len(firm.waiting()) == 1


# -- aggregation --------------------------------------------------------------------------------

def test_a_purchases_untagged_lines_wait_together_as_one(firm: Firm) -> None:
    _clients(firm)
    _untagged(firm, "10.00", "5.25", tagged=("20.00", "Jane Smith"))

    summary = firm.run()

    [entry] = firm.entries()  # Jane's line: her only matter, at once
    assert entry["matter"]["id"] == firm.matters["Smith estate"]
    [row] = firm.waiting()
    assert row.amount == Decimal("15.25") and row.line_id == "" and row.customer_id == "-"
    assert summary.waiting == 1 and summary.untagged_waiting == 1


def test_with_split_lines_each_untagged_line_waits_by_itself(firm: Firm) -> None:
    _clients(firm)
    firm.update_settings(split_lines=True)
    _untagged(firm, "10.00", "5.25")

    firm.run()

    assert sorted(w.amount for w in firm.waiting()) == [Decimal("5.25"), Decimal("10.00")]
    assert all(w.line_id for w in firm.waiting())


def test_an_untagged_line_given_a_customer_in_quickbooks_imports_by_itself(firm: Firm) -> None:
    _clients(firm)
    purchase = _untagged(firm, "40.00")
    firm.run()
    assert len(firm.waiting()) == 1

    firm.later()
    firm.qbo.update_purchase(purchase["Id"], lines=[account_line(
        "40.00", firm.import_account, customer_id=firm.customers["Jane Smith"])])
    firm.run()

    [entry] = firm.entries()
    assert entry["matter"]["id"] == firm.matters["Smith estate"]
    assert firm.waiting() == []


# -- skip ------------------------------------------------------------------------------------------

def test_skip_keeps_the_skip_with_its_reason(firm: Firm) -> None:
    _clients(firm)
    firm.update_settings(no_customer="skip")
    _untagged(firm, "10.00")

    summary = firm.run()

    assert summary.skipped == 1 and "no customer" in summary.skips[0]
    assert firm.waiting() == [] and firm.entries() == []


def test_set_no_customer_is_saved_and_audited(rig: SlackRig) -> None:
    rig.command("set no-customer skip")
    _reply(rig, rig.admin, "skipped")
    rig.command("set no-customer sometimes")
    _reply(rig, rig.admin, "neither ask nor skip")

    with rig.firm.sessions() as session:
        settings = session.get(FirmSettings, rig.firm.id)
        assert settings is not None and settings.no_customer == "skip"
        [audit] = session.scalars(select(AuditEntry).where(
            AuditEntry.firm_id == rig.firm.id, AuditEntry.action == Action.SETTING.value))
        assert audit.before == {"no-customer": "ask"} and audit.after == {"no-customer": "skip"}


# -- the search ----------------------------------------------------------------------------------

def test_hostile_search_text_gets_sane_options(rig: SlackRig) -> None:
    firm = rig.firm
    _clients(firm)
    odd = firm.clio.add_matter(firm.contacts["Acme Holdings"],
                               description="100% _literal_ <!channel> *bold* & co")
    for n in range(120):
        firm.clio.add_matter(firm.contacts["Acme Holdings"], description=f"Matter {n:03d}")
    _untagged(firm, "9.99")
    rig.command("run")
    _prompt(rig)
    [row] = firm.waiting()
    value = f"{row.id}:{odd['id']}"

    assert [o["value"] for o in _options(rig, row.id, "%")] == [value]  # no wildcard
    assert [o["value"] for o in _options(rig, row.id, "_")] == [value]
    assert [o["value"] for o in _options(rig, row.id, "<!channel>")] == [value]
    assert _options(rig, row.id, "\\") == []
    assert len(_options(rig, row.id, "matter")) == 100  # Slack's most
    for query in ("x" * 100_000, "\u0000\u202e\u200b", "' OR 1=1 --", "%%%%", ""):
        options = _options(rig, row.id, query)
        assert len(options) <= 100
        for option in options:
            assert option["text"]["type"] == "plain_text"  # shown as written, never live
            assert len(option["text"]["text"]) <= 75
            assert option["value"].startswith(f"{row.id}:")
    [odd_option] = _options(rig, row.id, "literal")
    assert odd_option["text"]["text"].endswith("100% _literal_ <!channel> *bold* & co")


def test_display_numbers_starting_with_the_search_come_first(sessions: Any, world: Any) -> None:
    firm = make_firm(world, sessions)
    matters = [Matter(1, "10042", "Refers to 00042 in its description", "Open", 7, "Acme"),
               Matter(2, "00042", "Smith v. Jones", "Open", 8, "Jane Smith"),
               Matter(3, "00420", "Lee lease", "Pending", 9, "J. Lee")]
    with sessions() as session:
        matter_cache.store(session, firm.id, matters, firm.world.clock.now())
        session.commit()
    with sessions() as session:
        found = matter_cache.search(session, firm.id, "0042")
        assert [m.id for m in found] == [3, 2, 1]  # number prefix first, then by number
        found = matter_cache.search(session, firm.id, "00042")
        assert [m.id for m in found] == [2, 1]
        assert [m.id for m in matter_cache.search(session, firm.id, "jane JONES")] == [2]
        assert matter_cache.search(session, firm.id + 1, "00042") == []  # another firm's


def test_the_matter_copy_is_refreshed_only_when_stale(firm: Firm) -> None:
    _clients(firm)
    _untagged(firm, "10.00", doc_number="1")
    firm.run()
    with firm.sessions() as session:
        assert matter_cache.count(session, firm.id) == 3
    firm.clio.add_matter(firm.contacts["Jane Smith"], description="New matter")
    firm.later()
    _untagged(firm, "11.00", doc_number="2")
    calls = firm.engine.clio.calls
    firm.run()
    with firm.sessions() as session:
        assert matter_cache.count(session, firm.id) == 3  # a quarter of an hour: still fresh
    assert firm.engine.clio.calls == calls  # nothing asked of Clio for the copy
    firm.later(61)
    _untagged(firm, "12.00", doc_number="3")
    firm.run()
    with firm.sessions() as session:
        assert matter_cache.count(session, firm.id) == 4
        assert all(r.firm_id == firm.id for r in session.scalars(select(CachedMatter)))


# -- counts and check -----------------------------------------------------------------------------

def test_summary_and_status_count_untagged_expenses_separately(rig: SlackRig) -> None:
    firm = rig.firm
    _clients(firm)
    _untagged(firm, "10.00", doc_number="1")
    firm.expense(("25.00", "Acme Holdings"), doc_number="2")  # two matters: asked too

    rig.command("run")
    summary = wait_for(lambda: next((m for m in rig.channel_messages()
                                     if "Waiting for a choice" in _text(m)), None))
    assert "2 new (1 with no client)" in _text(summary)
    rig.command("status")
    assert "2 (1 with no client)" in _text(_reply(rig, rig.admin, "Waiting for a choice"))


def test_check_reports_whether_quickbooks_tags_customers_on_expenses(rig: SlackRig) -> None:
    rig.command("check")
    on = _reply(rig, rig.admin, "Track expenses")
    assert "is on" in _text(on)

    rig.firm.qbo.set_preferences(tracking_by_customer=False)
    rig.command("check")
    off = wait_for(lambda: next((m for m in rig.replies_to(rig.admin)
                                 if "is off" in _text(m)), None), what="the second check")
    assert "every expense arrives with no customer" in _text(off)
    assert "asked" in _text(off)


def test_dry_run_counts_untagged_waits_and_writes_nothing(firm: Firm) -> None:
    _clients(firm)
    _untagged(firm, "10.00")

    summary: RunSummary = firm.run(dry_run=True)

    assert summary.waiting == 1 and summary.untagged_waiting == 1
    assert firm.waiting() == [] and firm.entries() == []


def test_reminders_digests_and_run_details_say_there_is_no_client() -> None:
    from datetime import UTC, date, datetime

    from hardcost.bot.ui.content import DigestClient, Prompt
    from hardcost.bot.ui.groups import digest
    from hardcost.bot.ui.prompts import prompt_reminder
    from hardcost.bot.ui.runs import run_details
    from hardcost.sync.summary import WaitingItem

    untagged = Prompt(id=9, kind="matter", reason="no_customer", amount=Decimal("19.99"),
                      txn_date=date(2026, 2, 3), client="", payee="Copy Center", memo=None,
                      reference="1044", qbo_url="https://qbo.example/1",
                      waiting_since=datetime(2026, 2, 4, tzinfo=UTC))
    reminder = prompt_reminder(untagged, now=datetime(2026, 2, 6, tzinfo=UTC))
    assert "for _none in QuickBooks_" in _text({"blocks": reminder.blocks})
    [page] = digest([DigestClient(client="", prompts=(untagged,))], on=date(2026, 2, 6))
    assert "_none in QuickBooks_ — 1 expense, $19.99" in _text({"blocks": page.blocks})
    summary = RunSummary(firm_id=1, run_id=2, dry_run=False,
                         started_at=datetime(2026, 2, 6, tzinfo=UTC), waiting=1,
                         untagged_waiting=1, waiting_items=[WaitingItem(
                             "[qbo 1/2/-]", Decimal("19.99"), date(2026, 2, 3), "",
                             "no_customer", 0, True)])
    details = json.dumps([m.blocks for m in run_details(summary)], ensure_ascii=False)
    assert "_none in QuickBooks_ — the expense has no customer in QuickBooks" in details


def test_a_choice_for_an_untagged_expense_can_be_undone_and_asked_again(rig: SlackRig) -> None:
    firm = rig.firm
    _clients(firm)
    _untagged(firm, "45.00")
    rig.command("run")
    prompt = _prompt(rig)
    [row] = firm.waiting()
    [option] = _options(rig, row.id, "lease")
    _pick(rig, prompt, row.id, option["value"])
    answered = wait_for(lambda: (m := rig.ws.message(rig.channel, prompt["ts"]))
                        and "hc_undo_choice" in _text(m) and m, what="the Undo button")

    rig.click(answered, "hc_undo_choice", value=str(row.id))

    wait_for(lambda: firm.entries() == [], what="the entry deleted from Clio")
    reopened = wait_for(lambda: (m := rig.ws.message(rig.channel, prompt["ts"]))
                        and "No client on this expense" in _text(m)
                        and "hc_search_matter" in _text(m) and m, what="the question again")
    [again] = firm.waiting()
    assert again.id == row.id
    [other] = _options(rig, row.id, "employment")
    _pick(rig, reopened, row.id, other["value"])
    assert wait_for(lambda: firm.entries())[0]["matter"]["id"] == firm.matters["Employment"]


def test_an_untagged_entry_follows_edits_and_voids_in_quickbooks(rig: SlackRig) -> None:
    firm = rig.firm
    _clients(firm)
    purchase = _untagged(firm, "45.00")
    rig.command("run")
    prompt = _prompt(rig)
    [row] = firm.waiting()
    [option] = _options(rig, row.id, "estate")
    _pick(rig, prompt, row.id, option["value"])
    [entry] = wait_for(lambda: firm.entries(), what="the entry")

    firm.later()
    [line] = firm.qbo.purchases[purchase["Id"]]["Line"]
    firm.qbo.update_purchase(purchase["Id"], lines=[{**line, "Amount": Decimal("54.00")}])
    edited = firm.run()

    assert edited.updated == 1 and edited.waiting == 0
    [same] = firm.entries()
    assert same["id"] == entry["id"] and price(same) == Decimal("54.00")
    assert same["matter"]["id"] == firm.matters["Smith estate"]  # the person's choice stays

    firm.later()
    firm.qbo.void_purchase(purchase["Id"])
    voided = firm.run()

    assert voided.deleted == 1 and firm.entries() == [] and firm.waiting() == []


def test_an_open_question_keeps_the_matter_copy_fresh_on_runs_that_read_purchases(
        firm: Firm) -> None:
    _clients(firm)
    _untagged(firm, "10.00")
    firm.run()
    firm.clio.add_matter(firm.contacts["Acme Holdings"], description="Opened later")
    firm.later(61)
    firm.expense(("5.00", "Jane Smith"), doc_number="77")  # a client's expense, no question

    firm.run()

    with firm.sessions() as session:
        assert [m.description for m in matter_cache.search(session, firm.id, "later")] == [
            "Opened later"]

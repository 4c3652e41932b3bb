"""The Slack builders (``bot.ui``): golden JSON for representative inputs, plus properties that
hold for any input (Block Kit limits, action ids, escaping, chunking, the settings round trip).

Golden files live in ``tests/golden/``; running with ``HARDCOST_UPDATE_GOLDEN=1`` rewrites
them. Pure functions only: no database, no HTTP, no clock.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from hardcost.bot.ui import content
from hardcost.bot.ui.content import (
    ACTION_CHOOSE_CONTACT,
    ACTION_CHOOSE_MATTER,
    ACTION_NOT_CLIENT_COST,
    ACTION_OPEN_QBO,
    ACTION_OPEN_SETTINGS,
    ACTION_RETRY_FAILURE,
    ACTION_RUN_NOW,
    ACTION_SEARCH_MATTER,
    ACTION_SELECT_CONTACT,
    ACTION_SELECT_MATTER,
    ACTION_SHOW_PENDING,
    PROMPT_BLOCK_PREFIX,
    SETTINGS_CALLBACK,
    Choice,
    FailureNotice,
    GroupAnswer,
    HistoryQuery,
    Message,
    Prompt,
    PromptAnswer,
    PromptGroupView,
    RuleView,
    SettingsForm,
    StatusReport,
    TrailEntry,
)
from hardcost.bot.ui.failures import failure_alert, failure_retried, failures_list
from hardcost.bot.ui.groups import prompt_group, prompt_group_answered
from hardcost.bot.ui.home import home_view
from hardcost.bot.ui.lists import pending_list, rules_list
from hardcost.bot.ui.modals import settings_modal, settings_values
from hardcost.bot.ui.notices import notice
from hardcost.bot.ui.prompts import (
    matter_options,
    matter_search_options,
    prompt,
    prompt_answered,
    prompt_reminder,
)
from hardcost.bot.ui.runs import run_details, run_summary
from hardcost.bot.ui.status import (
    check_coding_lines,
    help_message,
    status_blocks,
    usage_error,
)
from hardcost.bot.ui.text import Mrkdwn, channel, md, mention
from hardcost.bot.ui.trail import history
from hardcost.sync.firm_settings import USAGE
from hardcost.sync.summary import (
    ChangedItem,
    FailureItem,
    ImportedEntry,
    ReconcileNote,
    RemovedItem,
    RunSummary,
    WaitingItem,
)

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("HARDCOST_UPDATE_GOLDEN") == "1"
ACTION_IDS = {v for k, v in vars(content).items() if k.startswith("ACTION_")}
# the settings modal's inputs: action_id = block_id
SETTINGS_IDS = {"channel", "start_date", "accounts", "category", "user", "schedule", "options",
                "deletions", "bills", "no_customer", "approvers"}
QBO = "https://app.qbo.intuit.com/app/expense?txnId=345"
NOW = datetime(2026, 3, 9, 14, 30, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------
# inputs


def matters(n: int) -> tuple[Choice, ...]:
    return tuple(Choice(900 + i, f"{42 + i:05d} Smith v. Jones ({i})") for i in range(n))


def a_prompt(**changes: Any) -> Prompt:
    base = Prompt(
        id=7, kind="matter", reason="several_matters", amount=D("1197.10"),
        txn_date=date(2026, 3, 2), client="Smith, John", payee="Acme Couriers",
        memo="Courier to the county court", reference="1042", qbo_url=QBO,
        choices=matters(3), waiting_since=datetime(2026, 3, 6, 9, 0))
    return replace(base, **changes)


def a_group(count: int = 3) -> PromptGroupView:
    return PromptGroupView(id=5, client="Smith, John", choices=matters(3), members=tuple(
        a_prompt(id=10 + i, amount=D(f"{100 + i}.50"), txn_date=date(2026, 3, 1 + i % 28))
        for i in range(count)))


def a_failure(**changes: Any) -> FailureNotice:
    base = FailureNotice(
        id=31, kind="data",
        message="Item details are not supported — re-enter this line under Category details "
                "in QuickBooks (Check 1042 to Acme Couriers).",
        qbo_url=QBO, occurrences=1, first_seen=datetime(2026, 3, 5, 8, 0))
    return replace(base, **changes)


def a_summary(**changes: Any) -> RunSummary:
    summary = RunSummary(
        firm_id=1, run_id=17, dry_run=False, started_at=datetime(2026, 3, 9, 14, 0),
        imported=2, imported_total=D("1309.60"), waiting=1, failed=1, skipped=3, unchanged=0,
        still_waiting=2, still_failing=0, purchases_read=11, duration_s=4.26,
        imported_entries=[
            ImportedEntry("[qbo 9130/345/58]", D("1197.10"), date(2026, 3, 2), "Smith, John",
                          "00042 Smith v. Jones", 981),
            ImportedEntry("[qbo 9130/346/59]", D("112.50"), date(2026, 3, 3), "Doe & Sons",
                          "00051 Doe & Sons <Lease>", 982),
        ],
        waiting_items=[
            WaitingItem("[qbo 9130/347/60]", D("75.00"), date(2026, 3, 4), "Brown, Amy",
                        "several_matters", 3, True),
            WaitingItem("[qbo 9130/340/61]", D("20.00"), date(2026, 2, 20), "Lee Holdings",
                        "no_matter", 0, False),
        ],
        failures=[FailureItem("348", "data", "Item details are not supported — re-enter this "
                              "line under Category details in QuickBooks.",
                              "https://app.qbo.intuit.com/app/check?txnId=348&x=1", True)],
        skips=["Card refund (credit card credit): not imported",
               "Card refund (credit card credit): not imported",
               "Line 2 of Check 1050 has no customer"],
    )
    for key, value in changes.items():
        setattr(summary, key, value)
    return summary


def a_status(**changes: Any) -> StatusReport:
    base = StatusReport(
        firm_name="Smith & Partners LLP", quickbooks="connected (realm 9130)",
        clio="connected (us)", channel_id="C0HARDCOST", paused=False, schedule_minutes=15,
        last_run="today 09:15 — imported 4 ($812.50)", next_run="today 09:30", waiting=2,
        open_failures=1, problems=("choose the import account",))
    return replace(base, **changes)


def a_trail() -> list[TrailEntry]:
    """Newest first, as ``/hardcost history`` reads them."""
    at = datetime(2026, 3, 9, 14, 30, tzinfo=UTC)
    return [
        TrailEntry(6, at, "U0JANE", "setting",
                   before={"category": {"id": 5, "name": "Court costs"}},
                   after={"category": {"id": 6, "name": "Couriers"}},
                   detail="Expense category is now Couriers."),
        TrailEntry(5, at, "U0JANE", "chosen", purchase_id="347", client="Brown, Amy",
                   amount=D("75.00"), matter="00044 Brown <Estate>", clio_entry_id=983),
        TrailEntry(4, at, "schedule", "imported", purchase_id="345", client="Smith, John",
                   amount=D("1197.10"), matter="00042 Smith v. Jones", clio_entry_id=981),
        TrailEntry(3, at, "U0BOB", "not_client_cost", purchase_id="340",
                   client="<!channel> *x* &lt;", amount=D("20.00"),
                   detail="Marked not a client cost; it will not be imported."),
        TrailEntry(2, at, "U0JANE", "setting", before={"approvers": []},
                   after={"approvers": ["U0JANE", "U0BOB"]}, detail="Approvers: 2 people."),
        TrailEntry(1, at, "U0JANE", "connected", after={"service": "clio", "where": "region US"},
                   detail="Clio connected (region US)."),
    ]


HOSTILE_FILE = "<!channel> *rcpt* <https://evil.example|x> & co.pdf"


def a_receipt_trail() -> list[TrailEntry]:
    """One purchase's trail: imported, then its receipt filed on the matter (a hostile file
    name, as QuickBooks may send one)."""
    at = datetime(2026, 3, 9, 14, 30, tzinfo=UTC)
    return [
        TrailEntry(9, at, "schedule", "receipt_filed", purchase_id="345", client="Smith, John",
                   amount=D("1197.10"), matter="00042 Smith v. Jones",
                   after={"document_id": 5501,
                          "name": f"2026-03-02 Acme Couriers 1197.10 – {HOSTILE_FILE}"},
                   url="https://app.clio.com/nc/#/matters/77"),
        TrailEntry(4, at, "schedule", "imported", purchase_id="345", client="Smith, John",
                   amount=D("1197.10"), matter="00042 Smith v. Jones", clio_entry_id=981),
    ]


def a_settings(**changes: Any) -> SettingsForm:
    accounts = (Choice(80, "Reimbursable Expenses"), Choice(81, "Court Fees"),
                Choice(60, "Office Supplies"))
    base = SettingsForm(
        channel_id="C0HARDCOST", start_date=date(2026, 1, 1),
        import_accounts=accounts[:2], account_options=accounts,
        category=Choice(5, "Court costs"),
        category_options=(Choice(5, "Court costs"), Choice(6, "Couriers")),
        user=Choice(344, "Jane Partner"),
        user_options=(Choice(343, "Owen Owner"), Choice(344, "Jane Partner")),
        schedule_minutes=15, split_lines=True, item_lines=False, deletions="alert",
        approvers=("U0JANE", "U0BOB"))
    return replace(base, **changes)


# ---------------------------------------------------------------------------------------------
# helpers


def as_json(obj: Any) -> Any:
    if isinstance(obj, Message):
        obj = asdict(obj)
    elif isinstance(obj, list) and obj and isinstance(obj[0], Message):
        obj = [asdict(m) for m in obj]
    return json.loads(json.dumps(obj))


def check_golden(name: str, obj: Any) -> None:
    path = GOLDEN / f"{name}.json"
    data = as_json(obj)
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(data, indent=1, ensure_ascii=False, sort_keys=True) + "\n",
                        encoding="utf-8")
        return
    assert path.exists(), f"{path} is missing: run with HARDCOST_UPDATE_GOLDEN=1 once"
    assert data == json.loads(path.read_text(encoding="utf-8")), f"{name} differs from golden"


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def check_blocks(blocks: list[dict[str, Any]], *, limit: int, surface: str = "message") -> None:
    """Slack's limits, and hardcost's action ids, on every block and element."""
    assert 0 < len(blocks) <= limit
    block_ids = [b["block_id"] for b in blocks if "block_id" in b]
    assert len(block_ids) == len(set(block_ids)), "block_id repeated in one message/view"
    for block in blocks:
        kind = block["type"]
        if kind == "section":
            if "text" in block:
                assert len(block["text"]["text"]) <= 3000
            assert len(block.get("fields", [])) <= 10
            for f in block.get("fields", []):
                assert len(f["text"]) <= 2000
        if kind == "header":
            assert len(block["text"]["text"]) <= 150
        if kind == "actions":
            assert len(block["elements"]) <= 25
        # action ids unique within a block
        ids = [e["action_id"] for e in walk(block.get("elements", []) + [block.get("accessory")])
               if isinstance(e, dict) and "action_id" in e]
        ids += [block["element"]["action_id"]] if kind == "input" else []
        assert len(ids) == len(set(ids)), f"action_id repeated in a {kind} block"
        for element in walk(block):
            if element.get("type") == "button":
                assert len(element["text"]["text"]) <= 75
                assert len(element.get("value", "")) <= 2000
                assert element["action_id"] in ACTION_IDS
            elif "action_id" in element:
                allowed = ACTION_IDS | (SETTINGS_IDS if surface == "modal" else set())
                assert element["action_id"] in allowed
            if "options" in element and element.get("type") != "overflow":
                assert len(element["options"]) <= 100
                for option in element["options"]:
                    assert len(option["text"]["text"]) <= 75
                    assert len(option["value"]) <= 75
            if "confirm" in element and "action_id" in element:
                assert len(element["confirm"]["text"]["text"]) <= 300


def check_message(message: Message) -> None:
    assert isinstance(message, Message)
    assert message.text.strip()
    check_blocks(message.blocks, limit=50)


def elements(message: Message) -> list[dict[str, Any]]:
    return [e for e in walk(message.blocks) if "action_id" in e]


def all_text(obj: Any) -> str:
    return json.dumps(as_json(obj), ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# golden JSON


GOLDEN_CASES: dict[str, Any] = {
    "run_summary": lambda: run_summary(a_summary(), firm_name="Smith & Partners LLP"),
    "run_summary_dry_run_stopped": lambda: run_summary(
        a_summary(dry_run=True, run_id=None, unchanged=4, still_failing=1,
                  error="Clio refused the token: reconnect Clio."), firm_name="Smith LLP"),
    "run_details": lambda: run_details(a_summary()),
    "status_codings": lambda: status_blocks(a_status(
        codings=(("Court Costs", "Filing fees", "E112"), ("Copies & Prints", None, "E101")),
        default_code="E124", not_billable="skip")),
    "check_codings": lambda: notice(Mrkdwn(check_coding_lines([
        (True, "Copies & Prints: Copying · UTBMS E101"),
        (False, "Court Costs: the Clio category Filing fees was deleted or is no longer a "
                "hard-cost category: /hardcost set category <category> for Court Costs"),
        (True, "default UTBMS code E124")]))),
    "setting_account_category": lambda: notice(
        "Entries of Court Costs now go under Filing fees."),
    "setting_utbms_disabled": lambda: usage_error(
        "E199 is in the UTBMS set “Old codes”, which is not enabled in Clio: enable the set in "
        "Clio (Settings → Billing → UTBMS) or choose a code of an enabled set.",
        USAGE["utbms"]),
    "run_details_billed_in_qbo": lambda: run_details(a_summary(changed_items=[ChangedItem(
        "[qbo 9130/1042/58]", "1042", "billed_in_qbo", 9001, None,
        {"amount": "80.00", "date": "2026-02-03"}, {"amount": "80.00", "date": "2026-02-03"},
        None, "billed in QuickBooks too: check Clio entry #9001 (it may be billed to the "
        "client twice)", "https://app.clio.com/nc/#/matters/77")])),
    "failure_alert": lambda: failure_alert(a_failure()),
    "failure_alert_config_repeated": lambda: failure_alert(a_failure(
        kind="config", message="QuickBooks is disconnected: reconnect it.", qbo_url=None,
        occurrences=4)),
    "failure_retried_fixed": lambda: failure_retried(a_failure(), by_user="U0JANE",
                                                     outcome="fixed, imported 1"),
    "failure_retried_still": lambda: failure_retried(
        a_failure(), by_user="U0JANE", outcome="still failing: Item details are not supported"),
    "prompt_matter_buttons": lambda: prompt(a_prompt()),
    "prompt_matter_static": lambda: prompt(a_prompt(choices=matters(6))),
    "prompt_matter_search": lambda: prompt(a_prompt(choices=matters(101))),
    "prompt_no_customer": lambda: prompt(a_prompt(reason="no_customer", choices=(), client="")),
    "prompt_no_matter": lambda: prompt(a_prompt(reason="no_matter", choices=(), memo=None,
                                                payee=None, reference=None)),
    "prompt_contact_several": lambda: prompt(a_prompt(
        kind="contact", reason="several_contacts",
        choices=(Choice(11, "John Smith <john@example.com>"), Choice(12, "John Smith Jr.")))),
    "prompt_no_contact": lambda: prompt(a_prompt(kind="contact", reason="no_contact",
                                                 choices=())),
    "prompt_answered_linked": lambda: prompt_answered(a_prompt(), PromptAnswer(
        by_user="U123", outcome="linked", label="00042 Smith v. Jones", clio_entry_id=981,
        undoable=True)),
    "prompt_answered_not_client_cost": lambda: prompt_answered(
        a_prompt(), PromptAnswer(by_user="U123", outcome="not_client_cost")),
    "prompt_answered_contact": lambda: prompt_answered(
        a_prompt(kind="contact", reason="no_contact"),
        PromptAnswer(by_user="U123", outcome="contact_remembered", label="Jane Smith")),
    "prompt_reminder": lambda: prompt_reminder(a_prompt(), now=NOW),
    "prompt_group": lambda: prompt_group(a_group()),
    "prompt_group_answered": lambda: prompt_group_answered(a_group(), GroupAnswer(
        by_user="U123", label="00042 Smith v. Jones", linked=2, linked_total=D("201.50"),
        failed=((a_prompt(id=12), "Clio said the matter is closed."),), others=1)),
    "prompt_matter_suggested": lambda: prompt(a_prompt(
        choices=(matters(3)[1], matters(3)[0], matters(3)[2]), suggested=matters(3)[1].id,
        suggestion="4 of the last 5 Acme Couriers costs for Smith, John went to 00043")),
    "prompt_matter_static_suggested": lambda: prompt(a_prompt(
        choices=matters(6), suggested=matters(6)[0].id,
        suggestion="the memo names 00042",
        note="The rule <Acme> → Smith sends these to 00049 Old, which is no longer open")),
    "prompt_answered_rule_offer": lambda: prompt_answered(a_prompt(), PromptAnswer(
        by_user="U123", outcome="linked", label="00042 Smith v. Jones", clio_entry_id=981,
        rule_offer=True)),
    "prompt_answered_rule_made": lambda: prompt_answered(a_prompt(), PromptAnswer(
        by_user="U123", outcome="linked", label="00042 Smith v. Jones", clio_entry_id=981,
        rule="Acme Couriers → Smith, John", rule_by="U0JANE")),
    "rules_list": lambda: rules_list([
        RuleView(3, "Acme Couriers", "Smith, John", "00042 Smith v. Jones", "U0JANE",
                 datetime(2026, 3, 2, 9, 0, tzinfo=UTC), 4,
                 datetime(2026, 3, 9, 14, 0, tzinfo=UTC)),
        RuleView(5, "<!channel> *Fed*Ex*", "Doe & Sons", "00051 Doe & Sons <Lease>", "U0BOB",
                 datetime(2026, 3, 5, 9, 0, tzinfo=UTC), 0, account=True)]),
    "rules_list_empty": lambda: rules_list([]),
    "run_details_by_rule": lambda: run_details(a_summary(imported_entries=[
        ImportedEntry("[qbo 9130/345/58]", D("1197.10"), date(2026, 3, 2), "Smith, John",
                      "00042 Smith v. Jones", 981, "Acme Couriers → Smith, John", "U0JANE")],
        waiting_items=[], failures=[], skips=[])),
    "matter_options": lambda: matter_options(7, matters(12), "(1"),
    "matter_search_options": lambda: matter_search_options(7, [
        (Choice(42, "00042 Smith v. Jones"), "Smith, John"),
        (Choice(43, "00043 " + "A very long description " * 5), "Acme\nHoldings\u202e"),
        (Choice(44, ""), "")]),
    "status_untagged": lambda: status_blocks(a_status(waiting=3, untagged_waiting=1)),
    "status_receipts_off": lambda: status_blocks(a_status(receipts=False)),
    "run_summary_receipts": lambda: run_summary(a_summary(receipts_filed=3,
                                                          receipt_bytes=1_250_000),
                                                firm_name="Smith & Partners LLP"),
    "run_summary_receipts_only": lambda: run_summary(a_summary(
        imported=0, imported_total=D("0.00"), waiting=0, failed=0, skipped=0, still_waiting=0,
        imported_entries=[], waiting_items=[], failures=[], skips=[], receipts_filed=1,
        receipt_bytes=48_200), firm_name="Smith & Partners LLP"),
    "run_details_receipts": lambda: run_details(a_summary(receipts_filed=3,
                                                          receipt_bytes=1_250_000)),
    "history_receipt_filed": lambda: history(a_receipt_trail(), HistoryQuery(purchase_id="345"),
                                             more=False),
    "help": help_message,
    "usage_error": lambda: usage_error("“soon” is not a date.",
                                       "/hardcost set start-date YYYY-MM-DD"),
    "status": lambda: status_blocks(a_status()),
    "status_paused_unset": lambda: status_blocks(a_status(
        paused=True, channel_id=None, last_run=None, next_run=None, problems=())),
    "home": lambda: home_view(a_status()),
    "home_trail": lambda: home_view(a_status(), a_trail()),
    "history": lambda: history(a_trail(), HistoryQuery(limit=6), more=True),
    "history_client_end": lambda: history(a_trail()[3:4], HistoryQuery(client="<!channel>"),
                                          more=False),
    "history_empty": lambda: history([], HistoryQuery(purchase_id="999"), more=False),
    "pending_list": lambda: pending_list([a_prompt(), a_prompt(id=8, choices=matters(7))]),
    "pending_list_empty": lambda: pending_list([]),
    "pending_list_bill_waiting_for_payment": lambda: pending_list([
        a_prompt(), a_prompt(id=9, reason="payment", choices=(), memo=None, bill=True,
                             payee="Court Reporters Inc", reference="CR-2210",
                             qbo_url="https://app.qbo.intuit.com/app/bill?txnId=77")]),
    "run_summary_bills": lambda: run_summary(a_summary(
        imported=3, imported_bills=1, waiting=2, waiting_for_payment=1, waiting_items=[
            WaitingItem("[qbo 9130/bill-78/60]", D("640.00"), date(2026, 3, 4), "Brown, Amy",
                        "payment", 0, True),
            WaitingItem("[qbo 9130/347/60]", D("75.00"), date(2026, 3, 4), "Brown, Amy",
                        "several_matters", 3, True)]), firm_name="Smith & Partners LLP"),
    "status_bills": lambda: status_blocks(a_status(bills="on-payment", waiting=3,
                                                   waiting_for_payment=1)),
    "failures_list": lambda: failures_list([a_failure(), a_failure(id=32, kind="transient")]),
    "failures_list_empty": lambda: failures_list([]),
    "settings_modal": lambda: settings_modal(a_settings()),
    "settings_modal_typed": lambda: settings_modal(a_settings(
        account_options=(), category_options=(), category=None, user=None, user_options=(),
        approvers=(), split_lines=False, deletions="delete", start_date=None, channel_id=None)),
    "settings_modal_codings": lambda: settings_modal(a_settings(
        codings=(("Court Fees", "Filing fees", "E112"), ("Copies & Printing", None, "E101")),
        default_code="E124")),
    "notice": lambda: notice(md("QuickBooks connected. ", mention("U0JANE"),
                                " can now run `/hardcost check`.")),
}


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_golden(name: str) -> None:
    check_golden(name, GOLDEN_CASES[name]())


def test_every_golden_case_is_within_limits() -> None:
    for name, build in GOLDEN_CASES.items():
        out = build()
        if name in ("matter_options", "matter_search_options"):
            continue
        if isinstance(out, dict):
            check_blocks(out["blocks"], limit=100, surface="modal" if out["type"] == "modal"
                         else "home")
        else:
            for message in out if isinstance(out, list) else [out]:
                check_message(message)


def test_no_unused_golden_files() -> None:
    if UPDATE:
        return
    on_disk = {p.stem for p in GOLDEN.glob("*.json")}
    assert on_disk == set(GOLDEN_CASES)


# ---------------------------------------------------------------------------------------------
# prompts: which control for how many choices


@pytest.mark.parametrize(("n", "control"), [
    (1, "buttons"), (5, "buttons"), (6, "static"), (100, "static"), (101, "external"),
    (250, "external")])
def test_matter_prompt_control_by_choice_count(n: int, control: str) -> None:
    message = prompt(a_prompt(choices=matters(n)))
    check_message(message)
    found = elements(message)
    choose = [e for e in found if e["action_id"] == ACTION_CHOOSE_MATTER]
    select = [e for e in found if e["action_id"] == ACTION_SELECT_MATTER]
    search = [e for e in found if e["action_id"] == ACTION_SEARCH_MATTER]
    if control == "buttons":
        assert [b["value"] for b in choose] == [f"7:{900 + i}" for i in range(n)]
        assert not select and not search
    elif control == "static":
        assert not choose and not search and len(select) == 1
        assert [o["value"] for o in select[0]["options"]] == [f"7:{900 + i}" for i in range(n)]
        assert select[0]["type"] == "static_select"
    else:
        assert not choose and not select and len(search) == 1
        assert search[0]["type"] == "external_select"
        assert search[0]["min_query_length"] == 1
        holder = next(b for b in message.blocks if search[0] in b.get("elements", []))
        assert holder["type"] == "actions" and holder["block_id"] == f"{PROMPT_BLOCK_PREFIX}7"
    not_cost = [e for e in found if e["action_id"] == ACTION_NOT_CLIENT_COST]
    assert len(not_cost) == 1 and not_cost[0]["value"] == "7" and "confirm" in not_cost[0]


@pytest.mark.parametrize(("n", "control"), [
    (1, "buttons"), (5, "buttons"), (6, "static"), (100, "static"), (101, "static"),
    (250, "static")])
def test_contact_prompt_control_by_choice_count(n: int, control: str) -> None:
    choices = tuple(Choice(i, f"Contact {i}") for i in range(n))
    message = prompt(a_prompt(kind="contact", reason="several_contacts", choices=choices))
    check_message(message)
    found = elements(message)
    choose = [e for e in found if e["action_id"] == ACTION_CHOOSE_CONTACT]
    select = [e for e in found if e["action_id"] == ACTION_SELECT_CONTACT]
    assert not any(e["action_id"] in (ACTION_SEARCH_MATTER, ACTION_CHOOSE_MATTER,
                                      ACTION_SELECT_MATTER) for e in found)
    if control == "buttons":
        assert [b["value"] for b in choose] == [f"7:{i}" for i in range(n)]
        assert not select
    else:
        assert not choose and len(select) == 1
        assert len(select[0]["options"]) == min(n, 100)
        assert select[0]["options"][0]["value"] == "7:0"
    assert ("first 100 of" in all_text(message)) == (n > 100)


def test_no_matter_and_no_contact_prompts_offer_only_not_a_client_cost() -> None:
    for kind, reason, words in (("matter", "no_matter", "imports by itself once one exists"),
                                ("contact", "no_contact", "next run picks it up")):
        message = prompt(a_prompt(kind=kind, reason=reason, choices=()))
        assert [e["action_id"] for e in elements(message)] == [ACTION_NOT_CLIENT_COST]
        assert words in message.blocks[0]["text"]["text"]
        assert "Smith, John" in message.blocks[0]["text"]["text"]


def test_prompt_shows_the_expense_and_links_to_quickbooks() -> None:
    text = all_text(prompt(a_prompt()))
    for part in ("$1,197.10", "Mar 2, 2026", "Smith, John", "Acme Couriers",
                 "Courier to the county court", "1042",
                 "the client has several open matters", f"<{QBO}|Open in QuickBooks>"):
        assert part in text


def test_answered_prompt_has_no_buttons_and_says_who() -> None:
    linked = prompt_answered(a_prompt(), PromptAnswer(
        by_user="U123", outcome="linked", label="00042 Smith v. Jones", clio_entry_id=981))
    assert not elements(linked)
    assert linked.text == "Linked to 00042 Smith v. Jones by <@U123> — Clio entry #981"
    skipped = prompt_answered(a_prompt(), PromptAnswer(by_user="U9", outcome="not_client_cost"))
    assert skipped.text == "Marked not a client cost by <@U9>"
    contact = prompt_answered(a_prompt(kind="contact"), PromptAnswer(
        by_user="U9", outcome="contact_remembered", label="Jane Smith"))
    assert contact.text == "Contact remembered: Jane Smith (chosen by <@U9>)"


def test_reminder_counts_days_from_waiting_since() -> None:
    message = prompt_reminder(a_prompt(waiting_since=datetime(2026, 3, 6, 9, 0)), now=NOW)
    assert "since Mar 6, 2026 (3 days)" in message.text
    assert "(3 days)" in message.blocks[0]["text"]["text"]
    fresh = prompt_reminder(a_prompt(waiting_since=NOW - timedelta(hours=2)), now=NOW)
    assert "less than a day" in fresh.text
    check_message(fresh)


def test_matter_options_filter_and_cap() -> None:
    choices = matters(250)
    found = matter_options(7, choices, "  SMITH v.  ")
    assert len(found) == 100
    assert found[0] == {"text": {"type": "plain_text", "text": "00042 Smith v. Jones (0)",
                                 "emoji": True}, "value": "7:900"}
    one = matter_options(7, choices, "(249)")
    assert [o["value"] for o in one] == ["7:1149"]
    assert matter_options(7, choices, "no such matter") == []
    long = matter_options(7, (Choice(1, "x" * 200),), "X")
    assert len(long[0]["text"]["text"]) <= 75 and long[0]["text"]["text"].endswith("…")


# ---------------------------------------------------------------------------------------------
# escaping and truncation


def test_long_memo_and_hostile_names_are_clipped_and_escaped() -> None:
    memo = "<!channel> Tom & Jerry <b>" + "m" * 5000
    client = "Smith & <Jones>"
    message = prompt(a_prompt(memo=memo, client=client, payee="A<B>&C",
                              choices=(Choice(1, "0001 " + "<&>" * 60),) + matters(2)))
    check_message(message)
    text = all_text(message)
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text
    assert "Smith &amp; &lt;Jones&gt;" in text and "<Jones>" not in text
    assert "A&lt;B&gt;&amp;C" in text
    memo_field = next(f["text"] for b in message.blocks for f in b.get("fields", [])
                      if f["text"].startswith("*Memo*"))
    assert len(memo_field) < 400 and memo_field.endswith("…")
    assert not re.search(r"&[a-z]*…", memo_field)  # no entity cut in half
    assert "<Jones>" not in message.text and "&lt;Jones&gt;" in message.text


def test_choice_labels_are_clipped_in_selects_and_full_in_sections() -> None:
    label = "00042 " + "Very long matter description " * 10
    static = prompt(a_prompt(choices=(Choice(1, label),) + matters(6)))
    option = next(e for e in elements(static) if e["action_id"] == ACTION_SELECT_MATTER)
    assert 70 <= len(option["options"][0]["text"]["text"]) <= 75
    assert option["options"][0]["text"]["text"].endswith("…")
    buttons = prompt(a_prompt(choices=(Choice(1, label),)))
    check_message(buttons)
    assert label.strip() in all_text(buttons)  # the section beside the button shows it all


def test_failure_and_status_text_is_escaped() -> None:
    failure = failure_alert(a_failure(message="Clio said <html>&nbsp;</html>"))
    assert "&lt;html&gt;&amp;nbsp;&lt;/html&gt;" in failure.blocks[0]["text"]["text"]
    status = status_blocks(a_status(firm_name="A & <B>", last_run="<!here> yesterday"))
    assert "<!here>" not in all_text(status)
    assert "A &amp; &lt;B&gt;" in status.text


def test_notice_shows_outside_text_as_written_and_keeps_only_the_codes_own_mentions() -> None:
    outside = "<#C0HARDCOST> <@U0JANE> <!here> & <x> <https://evil.example|click here>"
    plain = notice(f"The import stopped: {outside}").blocks[0]["text"]["text"]
    composed = notice(md("Posting in ", channel("C0HARDCOST") or "", "; ", mention("U0JANE"),
                         " asked: ", outside)).blocks[0]["text"]["text"]

    escaped = ("&lt;#C0HARDCOST&gt; &lt;@U0JANE&gt; &lt;!here&gt; &amp; &lt;x&gt; "
               "&lt;https://evil.example|click here&gt;")
    assert plain == f"The import stopped: {escaped}"
    assert composed == f"Posting in <#C0HARDCOST>; <@U0JANE> asked: {escaped}"
    assert len(notice("x" * 5000).blocks[0]["text"]["text"]) <= 3000


# ---------------------------------------------------------------------------------------------
# run summary and details


def test_run_summary_is_compact_and_shows_what_it_should() -> None:
    summary = a_summary()
    message = run_summary(summary, firm_name="Smith LLP")
    check_message(message)
    assert len(message.blocks) <= 6
    text = all_text(message)
    assert "imported *2 expenses* into Clio, *$1,309.60*" in text
    assert "1 new, 2 from earlier runs" in text
    assert "took 4.3 s" in text
    assert "updated" not in text.lower() and "deleted" not in text.lower()
    assert "Already in Clio" not in text
    summary.unchanged = 5
    assert "*Already in Clio*\\n5" in all_text(run_summary(summary, firm_name="Smith LLP"))


def test_run_details_lists_each_kind() -> None:
    text = all_text(run_details(a_summary()))
    assert "Smith, John → 00042 Smith v. Jones · Clio #981" in text
    assert "Doe &amp; Sons → 00051 Doe &amp; Sons &lt;Lease&gt;" in text
    assert "the client has several open matters (3 to choose from)" in text
    assert "still waiting from an earlier run" in text
    assert "<https://app.qbo.intuit.com/app/check?txnId=348&amp;x=1|Open in QuickBooks>" in text
    assert "Card refund (credit card credit): not imported (×2)" in text
    quiet = a_summary(imported_entries=[], waiting_items=[], failures=[], skips=[])
    assert run_details(quiet) == []


def test_deletions_and_kept_entries_are_in_the_summary_and_its_thread() -> None:
    removed = [
        RemovedItem("[qbo 1/7/3]", "7", D("20.00"), date(2026, 3, 2), "deleted", "deleted", 981,
                    "00042", "deleted in QuickBooks; Clio entry #981 was deleted"),
        RemovedItem("[qbo 1/8/3]", "8", D("35.10"), date(2026, 3, 3), "voided", "kept_billed", 982,
                    "00051", "voided in QuickBooks, but Clio entry #982 is on bill #7"),
    ]
    summary = a_summary(deleted=1, kept=1, removed_items=removed)
    message = run_summary(summary, firm_name="Smith LLP")
    check_message(message)
    text = all_text(message)
    assert "*Deleted from Clio*\\n1 (gone from QuickBooks)" in text
    assert "*Left in Clio, check them*\\n1" in text
    assert "1 deleted, 1 left in Clio" in message.text
    details = all_text(run_details(summary))
    assert "*Gone from QuickBooks* — 2" in details
    assert details.index("expense #8") < details.index("expense #7")  # kept ones first
    assert "Voided in QuickBooks (expense #8) → Clio #982 (00051): left in Clio: it is on a " \
           "bill — credit or adjust the bill" in details
    assert "Deleted in QuickBooks (expense #7) → Clio #981 (00042): deleted from Clio" in details


def test_an_offline_reconciliation_is_explained_in_the_summary() -> None:
    summary = a_summary(reconciled=ReconcileNote("offline", "2026-01-05T09:00:00-08:00", 120, 3))
    text = all_text(run_summary(summary, firm_name="Smith LLP"))
    assert "had not checked QuickBooks for deletions since" in text
    assert "longer than the 30 days QuickBooks keeps them" in text
    assert "compared all 120 imported expenses with QuickBooks; 3 had been deleted or voided" \
        in text
    first = a_summary(reconciled=ReconcileNote("first", None, 10, 0))
    assert "compared" not in all_text(run_summary(first, firm_name="Smith LLP"))


def test_run_details_of_a_thousand_imports_stay_within_limits() -> None:
    entries = [ImportedEntry(f"m{i}", D("12.34") + i, date(2026, 3, 1), f"Client {i} & Co",
                             f"{i:05d} Matter with a long name " + "x" * 60, 1000 + i)
               for i in range(1000)]
    summary = a_summary(imported=1000, imported_entries=entries)
    messages = run_details(summary)
    assert len(messages) > 1
    rows = 0
    for index, message in enumerate(messages, start=1):
        check_message(message)
        assert len(message.blocks) <= 45
        assert f"(part {index} of {len(messages)})" in message.text
        for block in message.blocks:
            text = block["text"]["text"]
            assert len(text) <= 2500 and text.count("\n") + 1 <= 40
            rows += sum(1 for line in text.split("\n") if line.startswith("• "))
        assert sum(len(b["text"]["text"]) for b in message.blocks) <= 12_000
    assert rows == 200
    text = all_text(messages)
    # problems come first in the row budget: the failure and skips survive 1,000 imports
    assert "Open in QuickBooks" in text and "(×2)" in text
    shown_imports = 200 - 1 - 2 - 2  # one failure, two waiting, two skip reasons
    assert f"…and {1000 - shown_imports:,} more" in text
    assert "(continued)" in text


# ---------------------------------------------------------------------------------------------
# failures


@pytest.mark.parametrize(("kind", "hint"), [
    ("config", "Someone with access must fix this setting or connection"),
    ("transient", "hardcost will retry by itself"),
    ("data", "Fix it in QuickBooks, then press Retry")])
def test_failure_alert_hint_and_buttons(kind: str, hint: str) -> None:
    message = failure_alert(a_failure(kind=kind))
    check_message(message)
    assert hint in all_text(message)
    found = {e["action_id"]: e for e in elements(message)}
    assert found[ACTION_RETRY_FAILURE]["value"] == "31"
    assert found[ACTION_OPEN_QBO]["url"] == QBO
    without_link = failure_alert(a_failure(kind=kind, qbo_url=None))
    assert [e["action_id"] for e in elements(without_link)] == [ACTION_RETRY_FAILURE]


def test_failure_retried() -> None:
    fixed = failure_retried(a_failure(), by_user="U0JANE", outcome="imported")
    assert fixed.text == "Retried by <@U0JANE>: imported"
    assert not elements(fixed)
    still = failure_retried(a_failure(), by_user="U0JANE", outcome="still failing: no customer")
    assert "Retried by <@U0JANE>: still failing: no customer" in all_text(still)
    assert ACTION_RETRY_FAILURE in {e["action_id"] for e in elements(still)}


# ---------------------------------------------------------------------------------------------
# lists


def test_pending_list_chunks_and_caps() -> None:
    prompts = [a_prompt(id=i, choices=matters(3 if i % 2 else 8)) for i in range(1, 61)]
    messages = pending_list(prompts)
    assert len(messages) > 1
    block_ids: list[str] = []
    for message in messages:
        check_message(message)
        assert len(message.blocks) <= 45
        block_ids += [b["block_id"] for b in message.blocks
                      if b.get("block_id", "").startswith(PROMPT_BLOCK_PREFIX)]
    assert block_ids == [f"{PROMPT_BLOCK_PREFIX}{i}" for i in range(1, 51)]
    assert "…and 10 more" in all_text(messages[-1])
    assert pending_list([])[0].text == "Nothing is waiting."


def test_failures_list_chunks() -> None:
    messages = failures_list([a_failure(id=i) for i in range(1, 31)])
    retry_values = [e["value"] for m in messages for e in elements(m)
                    if e["action_id"] == ACTION_RETRY_FAILURE]
    assert retry_values == [str(i) for i in range(1, 31)]
    for message in messages:
        check_message(message)
        assert len(message.blocks) <= 45
    assert failures_list([])[0].text == "No open failures."


# ---------------------------------------------------------------------------------------------
# commands, status, home


def test_help_lists_every_subcommand_and_set_key() -> None:
    message = help_message()
    check_message(message)
    text = "\n".join(b["text"]["text"] for b in message.blocks if b["type"] == "section")
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    for sub in ("help", "status", "run", "pending", "failures",
                "connect quickbooks|clio [us|ca|eu|au]", "disconnect quickbooks|clio",
                "settings", "set <key> <value>", "pause", "resume", "check"):
        assert f"`/hardcost {sub}`" in text
    for key in ("channel #name", "start-date YYYY-MM-DD", "account <QBO account name or id>",
                "`account +name`", "`account -name`", "category <Clio category name or id>",
                "user <Clio user name or id | owner>", "schedule <minutes>",
                "split-lines on|off", "item-lines on|off", "deletions delete|alert",
                "approvers @a @b | anyone", "receipts on|off"):
        assert key in text
    assert "<QBO" not in all_text(message)  # escaped in the real JSON


def test_a_filed_receipt_in_the_history_names_its_document_shown_not_live() -> None:
    """``/hardcost history <purchase>``: the receipt's line names the Clio document and links
    the matter holding it; a file name from QuickBooks never becomes a link or a ping."""
    message = history(a_receipt_trail(), HistoryQuery(purchase_id="345"), more=False)
    check_message(message)
    line = message.blocks[1]["text"]["text"].splitlines()[0]
    assert "*receipt filed in Clio*" in line and "Clio document #5501" in line
    assert "<https://app.clio.com/nc/#/matters/77|its matter in Clio>" in line
    assert "&lt;!channel&gt;" in line and "&lt;https://evil.example|x&gt; &amp; co.pdf" in line
    assert "<!channel>" not in all_text(message) and "<https://evil" not in all_text(message)


def test_receipts_in_status_and_its_setting_in_help() -> None:
    on, off = status_blocks(a_status()), status_blocks(a_status(receipts=False))
    assert "*Receipts*\\nfiled on each entry's matter in Clio" in all_text(on)
    assert "`/hardcost set receipts on`" in all_text(off)
    for message in (on, off):
        check_message(message)
        assert all(len(b.get("fields", [])) <= 10 for b in message.blocks)
    full = status_blocks(a_status(bills="on-payment", waiting_for_payment=1))
    assert all(len(b.get("fields", [])) <= 10 for b in full.blocks)


def test_usage_error() -> None:
    message = usage_error("There is no /hardcost <frobnicate>.", "/hardcost help")
    assert message.blocks[0]["text"]["text"] == (
        ":warning: There is no /hardcost &lt;frobnicate&gt;.\nUsage: `/hardcost help`")


def test_status_and_home() -> None:
    status = status_blocks(a_status())
    text = all_text(status)
    for part in ("connected (realm 9130)", "<#C0HARDCOST>", "every 15 minutes",
                 "today 09:30", "choose the import account"):
        assert part in text
    home = home_view(a_status())
    assert home["type"] == "home"
    check_blocks(home["blocks"], limit=100, surface="home")
    ids = [e["action_id"] for e in walk(home["blocks"]) if "action_id" in e]
    assert ids == [ACTION_OPEN_SETTINGS, ACTION_RUN_NOW, ACTION_SHOW_PENDING]
    assert home["blocks"][: len(status.blocks)] == status.blocks
    assert "paused" in all_text(status_blocks(a_status(paused=True)))


# ---------------------------------------------------------------------------------------------
# settings modal


def state_from_view(view: dict[str, Any]) -> dict[str, Any]:
    """What Slack would send back for an untouched modal: each input's initial value."""
    values: dict[str, Any] = {}
    for block in view["blocks"]:
        if block["type"] != "input":
            continue
        el = block["element"]
        state: dict[str, Any] = {"type": el["type"]}
        if el["type"] == "conversations_select":
            state["selected_conversation"] = el.get("initial_conversation")
        elif el["type"] == "datepicker":
            state["selected_date"] = el.get("initial_date")
        elif el["type"] in ("multi_static_select", "checkboxes"):
            state["selected_options"] = el.get("initial_options", [])
        elif el["type"] in ("static_select", "radio_buttons"):
            state["selected_option"] = el.get("initial_option")
        elif el["type"] == "plain_text_input":
            state["value"] = el.get("initial_value")
        elif el["type"] == "multi_users_select":
            state["selected_users"] = el.get("initial_users", [])
        values[block["block_id"]] = {el["action_id"]: state}
    return {"values": values}


def test_settings_modal_shape() -> None:
    view = settings_modal(a_settings())
    assert view["type"] == "modal" and view["callback_id"] == SETTINGS_CALLBACK
    check_blocks(view["blocks"], limit=100, surface="modal")
    inputs = [b for b in view["blocks"] if b["type"] == "input"]
    assert [b["block_id"] for b in inputs] == ["channel", "start_date", "accounts", "category",
                                               "user", "schedule", "options", "deletions",
                                               "bills", "no_customer", "approvers"]
    assert all(b["element"]["action_id"] == b["block_id"] for b in inputs)
    types = {b["block_id"]: b["element"]["type"] for b in inputs}
    assert types == {"channel": "conversations_select", "start_date": "datepicker",
                     "accounts": "multi_static_select", "category": "static_select",
                     "user": "static_select", "schedule": "plain_text_input",
                     "options": "checkboxes", "deletions": "radio_buttons",
                     "bills": "radio_buttons", "no_customer": "radio_buttons",
                     "approvers": "multi_users_select"}
    optional = {b["block_id"] for b in inputs if b.get("optional")}
    assert {"category", "approvers", "options"} <= optional
    assert "private_metadata" not in view or not view["private_metadata"]
    user = next(b for b in inputs if b["block_id"] == "user")["element"]
    assert user["options"][0]["value"] == "owner"
    typed = settings_modal(a_settings(account_options=()))
    accounts = next(b for b in typed["blocks"] if b.get("block_id") == "accounts")
    assert accounts["element"]["type"] == "plain_text_input"
    assert accounts["element"]["initial_value"] == "Reimbursable Expenses, Court Fees"


def test_settings_round_trip() -> None:
    settings = a_settings()
    values = settings_values(state_from_view(settings_modal(settings)))
    assert values == {
        "channel": "C0HARDCOST", "start_date": "2026-01-01", "accounts": ["80", "81"],
        "category": "5", "user": "344", "schedule": "15", "split_lines": True,
        "item_lines": False, "receipts": True, "deletions": "alert", "bills": "off",
        "no_customer": "ask", "approvers": ["U0JANE", "U0BOB"]}
    # the whole view, or view["state"], are accepted too
    view = {"state": state_from_view(settings_modal(settings))}
    assert settings_values(view) == values
    bare = a_settings(account_options=(), category_options=(), category=None, user=None,
                      approvers=(), split_lines=False, item_lines=True, deletions="delete",
                      bills="on-payment", channel_id=None, start_date=None, schedule_minutes=60,
                      no_customer="skip", receipts=False)
    assert settings_values(state_from_view(settings_modal(bare))) == {
        "channel": None, "start_date": None,
        "accounts": ["Reimbursable Expenses", "Court Fees"], "category": None,
        "user": "owner", "schedule": "60", "split_lines": False, "item_lines": True,
        "receipts": False, "deletions": "delete", "bills": "on-payment", "no_customer": "skip",
        "approvers": []}


def test_settings_modal_keeps_chosen_options_among_many() -> None:
    many = tuple(Choice(i, f"Account {i}") for i in range(300))
    chosen = (Choice(250, "Account 250"), Choice(999, "Gone account"))
    view = settings_modal(a_settings(account_options=many, import_accounts=chosen))
    check_blocks(view["blocks"], limit=100, surface="modal")
    element = next(b for b in view["blocks"] if b.get("block_id") == "accounts")["element"]
    values = [o["value"] for o in element["options"]]
    assert len(values) == 100 and len(set(values)) == 100
    assert [o["value"] for o in element["initial_options"]] == ["250", "999"]
    assert all(o in element["options"] for o in element["initial_options"])
    assert "not listed" in all_text(view)


def test_a_failure_clio_refused_points_at_clio_not_quickbooks() -> None:
    alert = json.dumps(failure_alert(a_failure(
        message="Check 1042 could not be written to Clio: the matter is closed.",
        refused_by_clio=True)).blocks)

    assert "Clio refused the entry" in alert and "Fix it in QuickBooks" not in alert
    assert "QuickBooks transaction needs a fix" not in alert
    plain = json.dumps(failure_alert(a_failure()).blocks)
    assert "Fix it in QuickBooks" in plain


def test_a_large_group_stays_within_slack_limits() -> None:
    message = prompt_group(a_group(400))
    assert len(message.blocks) <= 50
    assert "400 expenses for Smith, John wait for a matter" in message.text
    assert "and 390 more" in json.dumps(message.blocks)


def test_a_run_filing_receipts_says_how_many_in_its_progress_line() -> None:
    """The receipts step of a long run (turning receipts on files a backlog) shows its count;
    figures stored before receipts existed read back with none."""
    from hardcost.bot.ui.runs import live_line, run_progress
    from hardcost.sync.live import LiveFigures

    figures = LiveFigures(7, "receipts", 400, 400, 400, 400, 380, 15, 5, 2.5, 300.0, None, 50,
                          receipts_filed=12)
    assert "12 receipts filed" in live_line(figures)
    check_message(run_progress(figures, firm_name="Smith & Partners LLP"))
    older = figures.to_json()
    del older["receipts_filed"]
    read = LiveFigures.from_json(older)
    assert read is not None and read.receipts_filed == 0
    assert "receipt" not in live_line(replace(read, stage="writing"))

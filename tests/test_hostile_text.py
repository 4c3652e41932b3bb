"""Text from QuickBooks, Clio or a person never becomes a live link, mention or broadcast in
Slack (issue 10 #9): every message builder is fed content whose every string is hostile, and
no mrkdwn it produces may contain the hostile markup unescaped."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest

from hardcost.bot.ui.content import (
    Choice,
    FailureNotice,
    Message,
    Prompt,
    PromptAnswer,
    SettingsForm,
)
from hardcost.bot.ui.content import StatusReport as Status
from hardcost.bot.ui.failures import failure_alert, failure_retried, failures_list
from hardcost.bot.ui.home import home_view
from hardcost.bot.ui.lists import pending_list
from hardcost.bot.ui.modals import saved_modal, settings_modal
from hardcost.bot.ui.notices import connect_link, expiry_warning, notice, reconnect_notice
from hardcost.bot.ui.prompts import prompt, prompt_answered, prompt_reminder
from hardcost.bot.ui.runs import run_details, run_summary
from hardcost.bot.ui.status import status_blocks, usage_error
from hardcost.sync.summary import (
    FailureItem,
    ImportedEntry,
    ReconcileNote,
    RemovedItem,
    RunSummary,
    WaitingItem,
)

LIVE = ("<https://evil.example|click here>", "<@U999>", "<#C999>", "<!here>", "<!channel>",
        "<!subteam^S1>", "<!date^1^{date}|x>")
HOSTILE = " ".join(LIVE) + " & *bold* `code`"
HOSTILE_URL = "https://evil.example/a?b=<!here>|<@U999>"
KEEP = {"kind", "reason", "outcome", "deletions"}  # closed vocabularies the builders branch on


def poison(value: Any, name: str = "") -> Any:
    """``value`` with every free-text string replaced by hostile text, recursively."""
    if isinstance(value, str):
        if name in KEEP:
            return value
        return HOSTILE_URL if "url" in name else HOSTILE
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: poison(getattr(value, f.name), f.name)
                   for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **changes)
    if isinstance(value, tuple):
        return tuple(poison(v, name) for v in value)
    if isinstance(value, list):
        return [poison(v, name) for v in value]
    return value


def mrkdwn_texts(node: Any, inside_mrkdwn: bool = False) -> list[str]:
    """Every string Slack reads as mrkdwn: ``mrkdwn`` text objects and message fallbacks."""
    found: list[str] = []
    if isinstance(node, dict):
        is_mrkdwn = node.get("type") == "mrkdwn"
        for key, child in node.items():
            if key == "text" and isinstance(child, str) and (is_mrkdwn or inside_mrkdwn):
                found.append(child)
            else:
                found += mrkdwn_texts(child)
    elif isinstance(node, list):
        for child in node:
            found += mrkdwn_texts(child)
    return found


def rendered(out: Any) -> list[str]:
    """The mrkdwn of a builder's output (a Message, a list of them, or a view)."""
    outs = out if isinstance(out, list) else [out]
    texts: list[str] = []
    for one in outs:
        if isinstance(one, Message):
            texts.append(one.text)  # the notification fallback is mrkdwn too
            texts += mrkdwn_texts(one.blocks)
        else:
            texts += mrkdwn_texts(one)
    return texts


PROMPT = Prompt(id=7, kind="matter", reason="several_matters", amount=Decimal("12.50"),
                txn_date=date(2026, 3, 1), client="c", payee="p", memo="m", reference="r",
                qbo_url="https://app.qbo.intuit.com/app/expense?txnId=1",
                choices=(Choice(1, "a"), Choice(2, "b")), waiting_since=datetime(2026, 3, 1))
FAILURE = FailureNotice(id=3, kind="data", message="m", qbo_url="https://x.example",
                        occurrences=2, first_seen=datetime(2026, 3, 1))
STATUS = Status(firm_name="f", quickbooks="q", clio="c", channel_id="C0HARDCOST", paused=False,
                schedule_minutes=15, last_run="l", next_run="n", waiting=1, open_failures=1,
                problems=("p",))
SETTINGS = SettingsForm(channel_id="C0HARDCOST", start_date=date(2026, 1, 1),
                        import_accounts=(Choice(1, "a"),), account_options=(Choice(1, "a"),),
                        category=Choice(5, "c"), category_options=(Choice(5, "c"),),
                        user=Choice(3, "u"), user_options=(Choice(3, "u"),),
                        schedule_minutes=15, split_lines=False, item_lines=False,
                        deletions="delete", approvers=("U0JANE",),
                        codings=(("a", "c", "E1"),), default_code="E2")
SUMMARY = RunSummary(
    firm_id=1, run_id=2, dry_run=False, started_at=datetime(2026, 3, 1), imported=1,
    imported_total=Decimal("1.00"), waiting=1, failed=1, skipped=1, deleted=1, kept=1,
    imported_entries=[ImportedEntry("k", Decimal("1.00"), date(2026, 3, 1), "c", "m", 9)],
    waiting_items=[WaitingItem("k", Decimal("1.00"), date(2026, 3, 1), "c", "several_matters",
                               2, True)],
    failures=[FailureItem("1", "data", "m", "https://x.example", True)],
    skips=["s"],
    removed_items=[RemovedItem("k", "1", Decimal("1.00"), date(2026, 3, 1), "deleted",
                               "kept_billed", 9, "m", "n")],
    reconciled=ReconcileNote("offline", "2026-01-01T00:00:00", 3, 1))

BUILDERS: dict[str, Callable[[], Any]] = {
    "run_summary": lambda: run_summary(poison(SUMMARY), firm_name=HOSTILE),
    "run_details": lambda: run_details(poison(SUMMARY)),
    "failure_alert": lambda: failure_alert(poison(FAILURE)),
    "failure_retried": lambda: failure_retried(poison(FAILURE), by_user=HOSTILE,
                                               outcome=HOSTILE),
    "failures_list": lambda: failures_list([poison(FAILURE)]),
    "prompt": lambda: prompt(poison(PROMPT)),
    "prompt_contact": lambda: prompt(poison(dataclasses.replace(
        PROMPT, kind="contact", reason="several_contacts"))),
    "prompt_answered": lambda: prompt_answered(
        poison(PROMPT), poison(PromptAnswer(by_user="U1", outcome="linked", label="l",
                                            clio_entry_id=4))),
    "prompt_reminder": lambda: prompt_reminder(poison(PROMPT),
                                               now=datetime(2026, 3, 3)),
    "pending_list": lambda: pending_list([poison(PROMPT)]),
    "usage_error": lambda: usage_error(HOSTILE, HOSTILE),
    "status": lambda: status_blocks(poison(STATUS)),
    "notice": lambda: notice(HOSTILE),
    "connect_link": lambda: connect_link(HOSTILE, HOSTILE_URL),
    "reconnect_notice": lambda: reconnect_notice(HOSTILE, "clio", HOSTILE),
    "expiry_warning": lambda: expiry_warning(HOSTILE, "quickbooks",
                                             datetime(2026, 4, 1)),
    "home": lambda: home_view(poison(STATUS)),
    "prompt_no_customer": lambda: prompt(poison(dataclasses.replace(
        PROMPT, reason="no_customer", choices=()))),
    "settings_modal": lambda: settings_modal(poison(SETTINGS)),
    "settings_modal_refused": lambda: settings_modal(poison(SETTINGS), problems={
        "category": HOSTILE, HOSTILE: HOSTILE}),
    "saved_modal": lambda: saved_modal(HOSTILE),
}


def test_the_poisoning_reaches_the_content() -> None:
    # The checks below mean something only if the builders really got the hostile text.
    poisoned = poison(PROMPT)
    assert poisoned.client == HOSTILE and poisoned.choices[0].label == HOSTILE
    assert poisoned.kind == "matter" and poisoned.qbo_url == HOSTILE_URL
    assert any("&lt;!here&gt;" in text for text in rendered(prompt(poisoned)))


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_no_builder_lets_outside_markup_through(name: str) -> None:
    texts = rendered(BUILDERS[name]())

    assert texts, f"{name} produced no mrkdwn to check"
    for text in texts:
        for live in LIVE:
            assert live not in text, f"{name} let {live!r} through: {text!r}"
        assert "<!" not in text.replace("<!date^", ""), f"{name} broadcasts: {text!r}"

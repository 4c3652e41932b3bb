"""``/hardcost check``: the prerequisites, each with a plain verdict."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slack_sdk import WebClient

from hardcost.bot import service
from hardcost.bot.context import BotContext
from hardcost.bot.ui.status import check_coding_lines
from hardcost.bot.ui.text import Mrkdwn, channel, md
from hardcost.sync.clio_errors import DocumentsForbidden
from hardcost.sync.coding import codings_of
from hardcost.sync.firm_settings import SettingError
from hardcost.sync.http import ApiError
from hardcost.sync.receipts import EXTERNAL_NAME


def run_checks(ctx: BotContext, client: WebClient, firm_id: int) -> Mrkdwn:
    """One line per prerequisite; names from QuickBooks and Clio are escaped."""
    settings = ctx.settings(firm_id)
    importer = ctx.importer_for(firm_id)
    lines: list[Mrkdwn] = []

    def verdict(ok: bool, *text: str) -> None:
        lines.append(md("✅ " if ok else "❌ ", *text))

    try:
        tracking = importer.qbo.tracks_expenses_by_customer()
        if tracking:
            verdict(True, "QuickBooks “Track expenses and items by customer” is on: expenses "
                    "can be tagged with a customer")
        else:
            then = ("each is asked about in Slack (which matter?)"
                    if settings.no_customer != "skip"
                    else "each is skipped (no-customer is set to skip)")
            verdict(False, "QuickBooks “Track expenses and items by customer” is off, so "
                    f"every expense arrives with no customer and {then}. Turn it on in "
                    "QuickBooks under Account and settings → Expenses (plans below Plus "
                    "do not have it)")
        accounts = {str(a["Id"]): a for a in importer.qbo.accounts()}
        chosen = settings.import_account_ids or []
        missing = [i for i in chosen if i not in accounts]
        verdict(bool(chosen) and not missing,
                "import account: " + (", ".join(str(accounts[i].get("FullyQualifiedName"))
                                                for i in chosen if i in accounts)
                                      if chosen and not missing
                                      else "not chosen or no longer in QuickBooks"))
        verdict(True, "QuickBooks connection works")
    except ApiError as exc:
        verdict(False, f"QuickBooks: {exc.message}")
    try:
        categories = importer.clio.hard_cost_categories()
        hard_costs_on = settings.clio_entry_type == "HardCostEntry"
        verdict(hard_costs_on, "Clio hard costs are " + (
            "enabled" if hard_costs_on else "off: entries go in as expenses; enable “soft "
            "and hard costs” in Clio's billing settings"))
        category = next((c for c in categories if c.id == settings.expense_category_id), None)
        verdict(category is not None, "Clio category: " + (
            category.name if category else "not chosen, or not a hard-cost category"))
        verdict(True, "Clio connection works")
        if settings.receipts:
            documents_check(importer, verdict)
    except ApiError as exc:
        verdict(False, f"Clio: {exc.message}")
    coding = coding_problems(ctx, importer, firm_id)
    if coding:
        lines.append(Mrkdwn(check_coding_lines(coding)))
    if settings.slack_channel_id:
        try:
            service.resolve_channel(client, f"<#{settings.slack_channel_id}>")
            verdict(True, "hardcost can post in ",
                    channel(settings.slack_channel_id) or Mrkdwn(""))
        except SettingError as exc:
            verdict(False, exc.problem)
    else:
        verdict(False, "no channel chosen: /hardcost set channel #channel")
    return Mrkdwn("\n".join(lines))


DOCUMENTS_OK = "Clio lets hardcost file receipts on matters (documents)"
DOCUMENTS_REFUSED = (
    "Clio does not let hardcost file documents, so the receipts attached in QuickBooks cannot "
    "be filed on the matters (entries are still imported). Add documents to the Clio "
    "application's permissions and reconnect Clio with /hardcost connect clio, granting "
    "documents; or turn filing off with /hardcost set receipts off")


def documents_check(importer: Any, verdict: Callable[..., None]) -> None:
    """Only with ``receipts on``: one cheap documents call (a look-up by an external property
    no document has) tells whether the Clio connection may read and file documents."""
    try:
        importer.clio.find_documents(name=EXTERNAL_NAME, value="hardcost-check")
    except DocumentsForbidden:
        verdict(False, DOCUMENTS_REFUSED)
    except ApiError as exc:
        verdict(False, f"Clio documents could not be checked: {exc.message}")
    else:
        verdict(True, DOCUMENTS_OK)


def coding_problems(ctx: BotContext, importer: Any, firm_id: int) -> list[tuple[bool, str]]:
    """Each category and UTBMS code mapping checked again in Clio: the category still exists
    and is a hard-cost category, the code is still in an enabled set; what to fix if not."""
    settings = ctx.settings(firm_id)
    with ctx.sessions() as session:
        rows = list(codings_of(session, firm_id).values())
    mapped = [r for r in rows if r.expense_category_id is not None or r.utbms_code_id is not None]
    if not mapped and settings.utbms_code_id is None:
        return []
    try:
        categories = {c.id: c for c in importer.clio.hard_cost_categories()}
        codes = {c.id: c for c in importer.clio.utbms_expense_codes()}
        enabled = {s.id for s in importer.clio.utbms_sets() if s.enabled}
    except ApiError as exc:
        return [(False, f"Clio: the category and UTBMS code mappings could not be checked: "
                 f"{exc.message}")]

    def code_problem(code_id: int | None, code: str | None) -> str | None:
        if code_id is None:
            return None
        found = codes.get(code_id)
        if found is None:
            return f"UTBMS code {code or code_id} is no longer in Clio"
        if found.set_id not in enabled:
            return f"UTBMS code {found.code} is in a set no longer enabled in Clio"
        return None

    out: list[tuple[bool, str]] = []
    for row in mapped:
        wrong = []
        if row.expense_category_id is not None and row.expense_category_id not in categories:
            wrong.append((f"the Clio category {row.category_name or row.expense_category_id} "
                          "was deleted or is no longer a hard-cost category",
                          f"/hardcost set category <category> for {row.account_name}"))
        problem = code_problem(row.utbms_code_id, row.utbms_code)
        if problem:
            wrong.append((problem, f"/hardcost set utbms <code> for {row.account_name}"))
        if wrong:
            out += [(False, f"{row.account_name}: {why}: {fix}") for why, fix in wrong]
        else:
            shown = [categories[row.expense_category_id].name
                     if row.expense_category_id is not None else "default category",
                     f"UTBMS {row.utbms_code}" if row.utbms_code else "no code of its own"]
            out.append((True, f"{row.account_name}: {' · '.join(shown)}"))
    problem = code_problem(settings.utbms_code_id, settings.utbms_code)
    if problem:
        out.append((False, f"default: {problem}: /hardcost set utbms <code>"))
    elif settings.utbms_code:
        out.append((True, f"default UTBMS code {settings.utbms_code}"))
    return out

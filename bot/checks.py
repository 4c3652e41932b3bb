"""``/hardcost check``: the prerequisites, each with a plain verdict."""

from __future__ import annotations

from slack_sdk import WebClient

from hardcost.bot import service
from hardcost.bot.context import BotContext
from hardcost.bot.ui.text import Mrkdwn, channel, md
from hardcost.sync.firm_settings import SettingError
from hardcost.sync.http import ApiError


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
    except ApiError as exc:
        verdict(False, f"Clio: {exc.message}")
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

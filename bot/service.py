"""What listeners share: who may do what, the firm's status, settings lookups, the channel check."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import timedelta

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy import func, select

from hardcost.bot.context import BotContext
from hardcost.bot.notify import to_failure_notice, to_prompt
from hardcost.bot.outbox import undelivered
from hardcost.bot.ui.content import (
    Choice,
    FailureNotice,
    HistoryQuery,
    Prompt,
    RuleView,
    SettingsForm,
    StatusReport,
    TrailEntry,
)
from hardcost.bot.ui.runs import live_line
from hardcost.sync import audit, matter_rules
from hardcost.sync.bounds import ID, fits
from hardcost.sync.coding import codings_of
from hardcost.sync.firm_settings import Lookups, SettingError
from hardcost.sync.http import ApiError
from hardcost.sync.importer import Importer
from hardcost.sync.live import live_figures
from hardcost.sync.store import (
    AuditEntry,
    Connection,
    Failure,
    Firm,
    FirmSettings,
    PurchaseRemoval,
    Run,
    WaitingExpense,
    WaitReason,
)

log = logging.getLogger(__name__)

CHANNEL = re.compile(r"^<#([CG][A-Z0-9]+)(?:\|[^>]*)?>$|^#?([a-z0-9_\-]+)$")


def is_settings_admin(client: WebClient, settings: FirmSettings, user_id: str) -> bool:
    """Workspace admins and owners, and the firm's listed approvers."""
    if user_id in (settings.approvers or []):
        return True
    try:
        user = client.users_info(user=user_id)["user"]
    except SlackApiError as exc:
        log.warning("users.info for %s failed: %s", user_id, exc.response.get("error"))
        return False
    return bool(user.get("is_admin") or user.get("is_owner"))


def may_choose(settings: FirmSettings, user_id: str) -> bool:
    """With an approvers list, only they answer prompts; without one, anyone may."""
    approvers = settings.approvers or []
    return not approvers or user_id in approvers


def rule_views(ctx: BotContext, firm_id: int) -> list[RuleView]:
    """The firm's matter rules, oldest first, as ``/hardcost rules`` lists them."""
    with ctx.sessions() as session:
        return [RuleView(id=r.id, payee=r.payee_name, client=r.client_name,
                         matter=r.matter_label, created_by=r.created_by,
                         created_at=r.created_at, uses=r.uses, last_used_at=r.last_used_at,
                         account=r.account_id is not None)
                for r in matter_rules.active(session, firm_id)]


def lookups(importer: Importer) -> Lookups:
    """Where setting values are checked; each list is read at most once per lookups."""
    return Lookups(qbo_accounts=importer.qbo.accounts,
                   clio_categories=importer.clio.hard_cost_categories,
                   clio_users=importer.clio.users,
                   clio_utbms_codes=importer.clio.utbms_expense_codes,
                   clio_utbms_sets=importer.clio.utbms_sets).cached()


def resolve_channel(client: WebClient, raw: str) -> tuple[str, str]:
    """(channel id, name) of a channel the bot can post in; SettingError otherwise."""
    match = CHANNEL.match(raw.strip())
    if not match:
        raise SettingError(f"“{raw}” is not a channel.", "channel")
    channel_id, name = match.group(1), match.group(2)
    try:
        if channel_id is None:
            channel_id = _channel_id_by_name(client, name)
        info = client.conversations_info(channel=channel_id)["channel"]
    except SlackApiError as exc:
        raise SettingError(f"Slack does not know the channel {raw} "
                           f"({exc.response.get('error')}).", "channel") from None
    if info.get("is_archived"):
        raise SettingError(f"#{info.get('name')} is archived.", "channel")
    if info.get("is_private") and not info.get("is_member"):
        raise SettingError(f"#{info.get('name')} is private and hardcost is not in it: "
                           f"invite @hardcost there first.", "channel")
    found = str(info.get("id"))
    if not fits(found, ID):  # not a Slack channel id: never kept
        raise SettingError(f"Slack does not know the channel {raw} as one.", "channel")
    return found, str(info.get("name") or channel_id)


def _channel_id_by_name(client: WebClient, name: str) -> str:
    cursor = None
    while True:
        # Public channels only: listing private ones needs a scope hardcost does not ask for;
        # a private channel is named as a link (#channel, which Slack turns into <#C…>).
        page = client.conversations_list(types="public_channel", exclude_archived=True,
                                         limit=200, cursor=cursor)
        for channel in page["channels"]:
            if channel.get("name") == name:
                return str(channel["id"])
        cursor = (page.get("response_metadata") or {}).get("next_cursor")
        if not cursor:
            raise SettingError(f"There is no public channel #{name}. For a private channel, "
                               "invite @hardcost there and pick it with # so Slack links it.",
                               "channel")


def status_report(ctx: BotContext, client: WebClient, firm_id: int) -> StatusReport:
    with ctx.sessions() as session:
        firm = session.get(Firm, firm_id)
        settings = session.get(FirmSettings, firm_id)
        assert firm is not None and settings is not None
        providers = set(session.scalars(select(Connection.provider).where(
            Connection.firm_id == firm_id)))
        last = session.scalars(select(Run).where(Run.firm_id == firm_id, Run.dry_run.is_(False))
                               .order_by(Run.id.desc()).limit(1)).first()
        waiting = session.scalar(select(func.count()).select_from(WaitingExpense).where(
            WaitingExpense.firm_id == firm_id, WaitingExpense.resolved_at.is_(None))) or 0
        for_payment = session.scalar(select(func.count()).select_from(WaitingExpense).where(
            WaitingExpense.firm_id == firm_id, WaitingExpense.resolved_at.is_(None),
            WaitingExpense.reason == WaitReason.PAYMENT.value)) or 0
        untagged = session.scalar(select(func.count()).select_from(WaitingExpense).where(
            WaitingExpense.firm_id == firm_id, WaitingExpense.resolved_at.is_(None),
            WaitingExpense.reason == WaitReason.NO_CUSTOMER.value)) or 0
        failures = session.scalar(select(func.count()).select_from(Failure).where(
            Failure.firm_id == firm_id, Failure.resolved_at.is_(None))) or 0
        unsent, given_up = undelivered(session, firm_id)
        live = live_figures(session, firm_id) if last is not None and \
            last.status == "running" else None
        stuck_removals = session.scalar(select(func.count()).select_from(PurchaseRemoval).where(
            PurchaseRemoval.firm_id == firm_id, PurchaseRemoval.handled_at.is_(None),
            PurchaseRemoval.attempts > 0)) or 0
        codings = [c for c in codings_of(session, firm_id).values()
                   if c.expense_category_id is not None or c.utbms_code_id is not None]
    problems = []
    if not settings.slack_channel_id:
        problems.append("choose the channel: /hardcost set channel #channel")
    if not settings.import_account_ids:
        problems.append("choose the import account: /hardcost set account <name>")
    if not settings.start_date:
        problems.append("choose the start date: /hardcost set start-date YYYY-MM-DD")
    if unsent:
        problems.append(f"{unsent} Slack message(s) not delivered yet; hardcost keeps trying")
    problems += [f"a Slack message could not be posted: {reason}" for reason in given_up]
    if stuck_removals:
        problems.append(f"{stuck_removals} expense(s) deleted or voided in QuickBooks still have "
                        "an entry in Clio that could not be removed yet; hardcost keeps trying "
                        "(see /hardcost failures)")
    last_line = None
    if last is not None:
        when = last.started_at.strftime("%Y-%m-%d %H:%M UTC")
        if last.status == "failed":
            last_line = f"{when} — stopped: {last.error}"
        elif last.status == "abandoned":
            last_line = f"{when} — cut short: the server stopped during the run; the next run " \
                        "carries on"
        elif last.status == "running":
            last_line = f"{when} — under way"
        elif last.status == "stopped":
            last_line = (f"{when} — stopped from Slack after importing {last.imported} "
                         f"(${last.imported_total:,.2f}); the next run carries on")
        else:
            details = last.details or {}
            bills = f", {details['imported_bills']} from Bills" \
                if details.get("imported_bills") else ""
            last_line = (f"{when} — imported {last.imported} (${last.imported_total:,.2f}"
                         f"{bills}), waiting {last.waiting}, failed {last.failed}")
            filed = (details.get("receipts") or {}).get("filed") \
                if isinstance(details.get("receipts"), dict) else None
            if filed:
                last_line += f", {filed} receipt{'' if filed == 1 else 's'} filed"
            if details.get("deleted") or details.get("kept"):
                last_line += (f", {details.get('deleted', 0)} deleted from Clio, "
                              f"{details.get('kept', 0)} left in Clio")
    next_line = None
    if ctx.scheduler is not None:  # this process schedules imports: its real next run
        upcoming_at = ctx.scheduler.next_run(firm_id)
        if upcoming_at is not None:
            next_line = upcoming_at.strftime("%Y-%m-%d %H:%M UTC")
    elif not settings.paused and last is not None:
        upcoming = last.started_at + timedelta(minutes=settings.schedule_minutes)
        next_line = f"about {upcoming.strftime('%Y-%m-%d %H:%M UTC')} " \
                    "(scheduled runs need `hardcost serve`)"
    return StatusReport(
        firm_name=firm.name,
        quickbooks=(f"connected (company {firm.qbo_realm_id})" if "quickbooks" in providers
                    else "not connected"),
        clio=f"connected ({firm.clio_region.upper()})" if "clio" in providers
        else "not connected",
        channel_id=settings.slack_channel_id, paused=settings.paused,
        schedule_minutes=settings.schedule_minutes, last_run=last_line, next_run=next_line,
        waiting=int(waiting), untagged_waiting=int(untagged), open_failures=int(failures),
        problems=tuple(problems),
        webhooks=bool(ctx.config.qbo_webhook_verifier), bills=settings.bills or "off",
        waiting_for_payment=int(for_payment),
        codings=tuple((c.account_name, c.category_name if c.expense_category_id else None,
                       c.utbms_code) for c in codings),
        default_code=settings.utbms_code, not_billable=settings.not_billable or "import",
        receipts=bool(settings.receipts),
        live=live_line(live) if live is not None else None,
        stopping_by=live.stop_requested_by if live is not None else None)


def open_prompts(ctx: BotContext, firm_id: int, limit: int = 50) -> list[Prompt]:
    with ctx.sessions() as session:
        rows = session.scalars(select(WaitingExpense).where(
            WaitingExpense.firm_id == firm_id, WaitingExpense.resolved_at.is_(None))
            .order_by(WaitingExpense.txn_date, WaitingExpense.id).limit(limit))
        return [to_prompt(r, sandbox_links=ctx.sandbox_links) for r in rows]


def open_failures(ctx: BotContext, firm_id: int, limit: int = 50) -> list[FailureNotice]:
    with ctx.sessions() as session:
        rows = session.scalars(select(Failure).where(
            Failure.firm_id == firm_id, Failure.resolved_at.is_(None))
            .order_by(Failure.id).limit(limit))
        return [to_failure_notice(r, sandbox_links=ctx.sandbox_links) for r in rows]


def settings_form(ctx: BotContext, firm_id: int) -> SettingsForm:
    """The modal's current values, with the choices read from QuickBooks and Clio.

    A service that cannot be reached leaves its options empty (typed names then) rather than
    keeping the modal from opening.
    """
    settings = ctx.settings(firm_id)
    importer = ctx.importer_for(firm_id)
    accounts: list[Choice] = []
    categories: list[Choice] = []
    users: list[Choice] = []
    try:
        accounts = [Choice(int(a["Id"]), str(a.get("FullyQualifiedName") or a.get("Name")))
                    for a in importer.qbo.accounts()
                    if a.get("AccountType") in {"Expense", "Other Expense",
                                                "Cost of Goods Sold"}]
    except ApiError as exc:
        log.warning("settings: QuickBooks accounts unavailable: %s", exc)
    try:
        categories = [Choice(c.id, c.name) for c in importer.clio.hard_cost_categories()]
        users = [Choice(u.id, u.name) for u in importer.clio.users() if u.enabled]
    except ApiError as exc:
        log.warning("settings: Clio lists unavailable: %s", exc)
    chosen = set(settings.import_account_ids or [])
    with ctx.sessions() as session:
        codings = [c for c in codings_of(session, firm_id).values()
                   if c.expense_category_id is not None or c.utbms_code_id is not None]
    return SettingsForm(
        channel_id=settings.slack_channel_id, start_date=settings.start_date,
        import_accounts=tuple(a for a in accounts if str(a.id) in chosen),
        account_options=tuple(accounts),
        category=next((c for c in categories if c.id == settings.expense_category_id), None),
        category_options=tuple(categories),
        user=next((u for u in users if u.id == settings.clio_user_id), None),
        user_options=tuple(users), schedule_minutes=settings.schedule_minutes,
        split_lines=settings.split_lines, item_lines=settings.item_lines,
        deletions=settings.deletions, approvers=tuple(settings.approvers or []),
        bills=settings.bills or "off", no_customer=settings.no_customer,
        codings=tuple((c.account_name, c.category_name if c.expense_category_id else None,
                       c.utbms_code) for c in codings),
        default_code=settings.utbms_code, receipts=bool(settings.receipts))


LINKED_ACTIONS = frozenset({audit.Action.RECEIPT_FILED.value})
"""Trail rows shown with a link to their Clio matter (a filed receipt: the matter's documents
hold it)."""


def to_trail_entry(row: AuditEntry,
                   matter_url: Callable[[int | None], str | None] | None = None) -> TrailEntry:
    url = (matter_url(row.clio_matter_id) if matter_url is not None
           and row.action in LINKED_ACTIONS and row.clio_matter_id is not None else None)
    return TrailEntry(id=row.id, at=row.at, actor=row.actor, action=row.action,
                      purchase_id=row.purchase_id, client=row.client, amount=row.amount,
                      matter=row.matter, clio_entry_id=row.clio_activity_id,
                      before=row.before, after=row.after, detail=row.detail, url=url)


def clio_matter_links(ctx: BotContext, firm_id: int) -> Callable[[int | None], str | None]:
    """Matter id → its page in the firm's Clio (its region's host); no links when the firm's
    connections are not there to say which host (nothing is asked of Clio)."""
    try:
        return ctx.importer_for(firm_id).clio.matter_url
    except ApiError:
        return lambda matter_id: None


def history_page(ctx: BotContext, firm_id: int,
                 query: HistoryQuery) -> tuple[list[TrailEntry], bool]:
    """The entries ``query`` asks for, newest first, and whether older ones match too."""
    with ctx.sessions() as session:
        rows = audit.latest(session, firm_id, limit=query.limit, purchase_id=query.purchase_id,
                            client=query.client, before_id=query.before_id)
        more = bool(rows) and bool(audit.latest(
            session, firm_id, limit=1, purchase_id=query.purchase_id, client=query.client,
            before_id=rows[-1].id))
        links = clio_matter_links(ctx, firm_id) \
            if any(r.action in LINKED_ACTIONS for r in rows) else None
        return [to_trail_entry(r, links) for r in rows], more


def latest_trail(ctx: BotContext, firm_id: int, limit: int = 10) -> list[TrailEntry]:
    with ctx.sessions() as session:
        return [to_trail_entry(r) for r in audit.latest(session, firm_id, limit=limit)]

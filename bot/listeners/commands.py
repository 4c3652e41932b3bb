"""``/hardcost`` and its subcommands (docs/commands.md). Ack at once; slow work after the ack."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from hardcost.bot import service
from hardcost.bot.checks import run_checks
from hardcost.bot.context import BotContext
from hardcost.bot.digest import local_now
from hardcost.bot.export import upload_trail
from hardcost.bot.month_report import on_demand
from hardcost.bot.outbox import enqueue
from hardcost.bot.surfaces import open_settings_modal
from hardcost.bot.ui.content import HISTORY_CLIENT_CHARS, HISTORY_MAX, HistoryQuery, Message
from hardcost.bot.ui.failures import failures_list
from hardcost.bot.ui.lists import pending_list, rules_list
from hardcost.bot.ui.notices import connect_link, notice
from hardcost.bot.ui.status import help_message, status_blocks, usage_error
from hardcost.bot.ui.text import Mrkdwn, link, md, mention, mrkdwn
from hardcost.bot.ui.trail import history
from hardcost.sync import audit, oauth
from hardcost.sync.audit_period import PeriodError, parse_period
from hardcost.sync.firm_settings import (
    USAGE,
    SettingError,
    apply_setting,
    record_setting_changes,
    stored_values,
)
from hardcost.sync.http import ApiError
from hardcost.sync.importer import FirmNotReady
from hardcost.sync.leases import run_soon
from hardcost.sync.month_report import MonthError, parse_month
from hardcost.sync.store import PROVIDER_NAMES, Firm, FirmSettings
from hardcost.sync.summary import RunSummary

log = logging.getLogger(__name__)

SUBCOMMANDS = {"help", "status", "run", "pending", "failures", "connect", "disconnect",
               "settings", "set", "pause", "resume", "check", "history", "export", "rules",
               "report"}
ADMIN_ONLY = {"set", "settings", "pause", "resume", "connect", "disconnect"}
NOT_SET_UP = ("This workspace is not set up with hardcost yet. The person who installed "
              "hardcost connects QuickBooks and Clio first.")
HISTORY_USAGE = "/hardcost history [purchase id | client name | last N]"
EXPORT_USAGE = "/hardcost export [from YYYY-MM-DD] [to YYYY-MM-DD]"
RULES_USAGE = "/hardcost rules [page N]"
REPORT_USAGE = "/hardcost report [YYYY-MM]"
USAGES = {"history": HISTORY_USAGE, "export": EXPORT_USAGE, "rules": RULES_USAGE,
          "report": REPORT_USAGE}
_PURCHASE_ID = re.compile(r"#?((?:bill-)?[0-9]{1,40})", re.IGNORECASE)  # a Bill: bill-<id>


SLACK_ESCAPES = re.compile(r"&(amp|lt|gt);")
"""Slack escapes ``&``, ``<`` and ``>`` in a slash command's text, whatever the app's
``should_escape``: ``Quill & Ink`` arrives as ``Quill &amp; Ink``. Its own tokens (``<@U…>``,
``<#C…|…>``, ``<url|…>``) arrive unescaped."""


def unescape(text: str) -> str:
    """The text as typed: Slack's three entities undone, in one pass (``&amp;lt;`` is
    ``&lt;``)."""
    return SLACK_ESCAPES.sub(lambda m: {"amp": "&", "lt": "<", "gt": ">"}[m.group(1)], text)


def _parse(text: str | None) -> tuple[str, list[str]]:
    words = unescape(text or "").split()
    return (words[0].lower(), words[1:]) if words else ("help", [])


def _reply(respond: Respond, message: Message) -> None:
    respond(text=message.text, blocks=message.blocks, response_type="ephemeral",
            replace_original=False)


def register(app: App, ctx: BotContext) -> None:
    def ack_command(ack: Ack, command: dict[str, Any], respond: Respond,
                    client: WebClient) -> None:
        sub, args = _parse(command.get("text"))
        if sub == "help":
            listing = help_message()
            ack(text=listing.text, blocks=listing.blocks)
        elif sub not in SUBCOMMANDS:
            usage = usage_error(f"There is no /hardcost {sub}.", "/hardcost help")
            ack(text=usage.text, blocks=usage.blocks)
        elif sub == "run":
            # Decided here, so the person hears one thing: started, or already under way.
            ack(text=_start_run(ctx, command, respond, client))
        else:
            ack()

    def run_command(command: dict[str, Any], respond: Respond, client: WebClient) -> None:
        sub, args = _parse(command.get("text"))
        if sub in ("help", "run") or sub not in SUBCOMMANDS:
            return  # answered in the ack
        firm_id = ctx.firm_id_for_team(command.get("team_id"))
        user_id = str(command.get("user_id"))
        if firm_id is None and sub == "connect" and _is_workspace_admin(client, user_id):
            firm_id = _create_firm(ctx, command)
        if firm_id is None:
            _reply(respond, notice(NOT_SET_UP))
            return
        settings = ctx.settings(firm_id)
        if sub in ADMIN_ONLY and not service.is_settings_admin(client, settings, user_id):
            _reply(respond, notice(
                "Only workspace admins and hardcost's approvers can change hardcost's "
                "settings. Ask one of them."))
            return
        if any("\x00" in arg for arg in args):  # no name or value holds one; no database keeps it
            _reply(respond, usage_error(
                "A command cannot hold a NUL character.", USAGES.get(sub, "/hardcost help")))
            return
        try:
            HANDLERS[sub](ctx, firm_id, args, command, respond, client)
        except SettingError as exc:
            _reply(respond, usage_error(exc.problem, exc.usage))
        except (ApiError, FirmNotReady) as exc:
            _reply(respond, notice(str(exc)))

    app.command("/hardcost")(ack=ack_command, lazy=[run_command])


Handler = Any


def _status(ctx: BotContext, firm_id: int, args: list[str], command: dict[str, Any],
            respond: Respond, client: WebClient) -> None:
    _reply(respond, status_blocks(service.status_report(ctx, client, firm_id)))


def _start_run(ctx: BotContext, command: dict[str, Any], respond: Respond,
               client: WebClient) -> str:
    """``/hardcost run``, in the ack: start the import (or not) and say which."""
    firm_id = ctx.firm_id_for_team(command.get("team_id"))
    if firm_id is None:
        return NOT_SET_UP

    def then(summary: RunSummary) -> None:
        ctx.notifier(client).after_run(firm_id, summary)
        if summary.error:
            _reply(respond, notice(f"The import stopped: {summary.error}"))
        elif not summary.did_something:
            _reply(respond, notice("Nothing new to import."))

    def failed(sentence: str) -> None:
        _reply(respond, notice(sentence))

    def watch(url: str) -> None:  # a long run: where its progress shows
        _reply(respond, notice(md(
            "This import will take a while: ", Mrkdwn(link(url, "follow its progress here")),
            ". It says how far it has got and when it will be done, and approvers can stop "
            "it there.")))

    if not ctx.start_run(firm_id, trigger="slack", then=then, failed=failed,
                         actor=str(command.get("user_id") or "") or None, watch=watch):
        return _under_way(ctx, firm_id)
    return "Starting an import now; the summary follows in the channel."


UNDER_WAY = "An import is already under way; its summary follows in the channel."


def _under_way(ctx: BotContext, firm_id: int) -> str:
    """Why ``/hardcost run`` starts nothing, as the firm's lease says: an import here, or one
    another process (a replica, a process that may have died) holds, with when it started,
    where, and, when it has gone quiet, since when and when it will be taken over."""
    try:
        held = ctx.run_leases().held_by(firm_id)
        settings = ctx.settings(firm_id)
    except (SQLAlchemyError, RuntimeError):
        log.warning("firm %s: could not read who runs its import", firm_id, exc_info=True)
        return UNDER_WAY
    if held is None or held.mine:
        return UNDER_WAY

    def at(when: datetime, *, round_up: bool = False) -> str:
        local = local_now(settings, when)
        if round_up and (local.second or local.microsecond):
            local = local.replace(second=0, microsecond=0) + timedelta(minutes=1)
        return local.strftime("%H:%M")

    where = mrkdwn(held.host or held.holder, 80)
    started = (f"An import started at {at(held.claimed_at)} on {where}"
               if held.claimed_at is not None else f"An import on {where}")
    if not held.quiet:
        return Mrkdwn(f"{started} is under way; its summary follows in the channel.")
    return Mrkdwn(f"{started} has not reported for {_span(held.silent)}; unless it does, it "
                  f"will be taken over by {at(held.lease_until, round_up=True)} and the "
                  "import carried on then.")


def _span(span: timedelta) -> str:
    """A short while in words: "40 s", "3 min" (at most a day, as a lease never lasts longer
    without renewal)."""
    seconds = int(min(max(span.total_seconds(), 0), 86_400))
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min"


def _pending(ctx: BotContext, firm_id: int, args: list[str], command: dict[str, Any],
             respond: Respond, client: WebClient) -> None:
    for message in pending_list(service.open_prompts(ctx, firm_id)):
        _reply(respond, message)


def _failures(ctx: BotContext, firm_id: int, args: list[str], command: dict[str, Any],
              respond: Respond, client: WebClient) -> None:
    for message in failures_list(service.open_failures(ctx, firm_id)):
        _reply(respond, message)


def _settings(ctx: BotContext, firm_id: int, args: list[str], command: dict[str, Any],
              respond: Respond, client: WebClient) -> None:
    open_settings_modal(ctx, client, firm_id, str(command.get("trigger_id")))


def _set(ctx: BotContext, firm_id: int, args: list[str], command: dict[str, Any],
         respond: Respond, client: WebClient) -> None:
    if len(args) < 2:
        key = args[0].lower() if args else ""
        raise SettingError("Say which setting and its new value.", key if key in USAGE else None)
    key, raw = args[0].lower(), " ".join(args[1:])
    if key not in USAGE:
        raise SettingError(f"There is no setting called “{key}”. Settings: "
                           + ", ".join(USAGE) + ".")
    user_id = str(command.get("user_id"))
    if key == "channel":
        channel_id, name = service.resolve_channel(client, raw)
        done = f"hardcost will post in #{name}."
        with ctx.sessions() as session:
            settings = session.get(FirmSettings, firm_id)
            assert settings is not None
            before = stored_values(settings)
            settings.slack_channel_id = channel_id
            settings.report_due_at = None  # the report job looks at its next tick
            record_setting_changes(session, firm_id, before, settings, user_id,
                                   names={channel_id: name}, details={key: done},
                                   at=ctx.clock())
            session.commit()
    else:
        engine = ctx.importer_for(firm_id)
        with ctx.sessions() as session:
            done = apply_setting(session, firm_id, key, raw, service.lookups(engine),
                                 actor=user_id, at=ctx.clock())
            session.commit()
    log.info("firm %s: %s set %s", firm_id, user_id, key)
    if key == "approvers" and ctx.settings(firm_id).approvers:
        people = [part for u in ctx.settings(firm_id).approvers for part in (mention(u), " ")]
        _reply(respond, notice(md("Approvers: ", *people[:-1], ".")))
        return
    _reply(respond, notice(done))


def _pause(ctx: BotContext, firm_id: int, args: list[str], command: dict[str, Any],
           respond: Respond, client: WebClient) -> None:
    _set_paused(ctx, firm_id, True, str(command.get("user_id")))
    _reply(respond, notice("Scheduled imports are paused. `/hardcost resume` "
                           "restarts them; `/hardcost run` still works."))


def _resume(ctx: BotContext, firm_id: int, args: list[str], command: dict[str, Any],
            respond: Respond, client: WebClient) -> None:
    _set_paused(ctx, firm_id, False, str(command.get("user_id")))
    _reply(respond, notice("Scheduled imports are running again."))


def _set_paused(ctx: BotContext, firm_id: int, paused: bool, user_id: str) -> None:
    """Pause or resume, with its audit row; asking for what is already so records nothing."""
    with ctx.sessions() as session:
        settings = session.get(FirmSettings, firm_id)
        assert settings is not None
        if settings.paused != paused:
            settings.paused = paused
            if not paused:
                run_soon(session, firm_id)  # the first scheduled run comes at once
            audit.record(session, firm_id, audit.Action.PAUSED if paused
                         else audit.Action.RESUMED, user_id, at=ctx.clock(),
                         detail="Scheduled imports paused." if paused
                         else "Scheduled imports resumed.")
        session.commit()


def _is_workspace_admin(client: WebClient, user_id: str) -> bool:
    try:
        user = client.users_info(user=user_id)["user"]
    except SlackApiError:
        return False
    return bool(user.get("is_admin") or user.get("is_owner"))


def _create_firm(ctx: BotContext, command: dict[str, Any]) -> int:
    """The workspace's firm, created by its first ``connect`` (single-workspace mode)."""
    team_id = str(command.get("team_id"))
    with ctx.sessions() as session:
        firm = Firm(name=str(command.get("team_domain") or team_id), slack_team_id=team_id)
        session.add(firm)
        session.flush()
        session.add(FirmSettings(firm_id=firm.id, slack_channel_id=command.get("channel_id")))
        try:
            session.commit()
        except IntegrityError:  # created by a simultaneous command
            session.rollback()
            existing = ctx.firm_id_for_team(team_id)
            assert existing is not None
            return existing
        log.info("created firm %s for Slack team %s", firm.id, team_id)
        return firm.id


def _provider(args: list[str], usage: str) -> str:
    wanted = args[0].lower() if args else ""
    if wanted in ("quickbooks", "qbo"):
        return "quickbooks"
    if wanted == "clio":
        return "clio"
    raise SettingError(f"Connect what? “{wanted or 'nothing'}” is neither quickbooks nor clio.",
                       None, usage=usage)


def _connect(ctx: BotContext, firm_id: int, args: list[str], command: dict[str, Any],
             respond: Respond, client: WebClient) -> None:
    provider = _provider(args, "/hardcost connect quickbooks | /hardcost connect clio "
                         "[us|ca|eu|au]")
    region = args[1].lower() if provider == "clio" and len(args) > 1 else "us"
    link = oauth.start(ctx.sessions, ctx.config, firm_id, provider,
                       slack_team_id=command.get("team_id"),
                       slack_user_id=command.get("user_id"), region=region, now=ctx.clock())
    _reply(respond, connect_link(PROVIDER_NAMES[provider], link))


def _disconnect(ctx: BotContext, firm_id: int, args: list[str], command: dict[str, Any],
                respond: Respond, client: WebClient) -> None:
    provider = _provider(args, "/hardcost disconnect quickbooks|clio")
    done = oauth.disconnect(ctx.sessions, ctx.config, firm_id, provider,
                            actor=str(command.get("user_id")), now=ctx.clock())
    _reply(respond, notice(done))
    notifier = ctx.notifier(client)
    with ctx.sessions() as session:
        settings = session.get(FirmSettings, firm_id)
        if settings is not None and settings.slack_channel_id:
            told = notice(md(
                f"{PROVIDER_NAMES[provider]} was disconnected by ",
                mention(str(command.get("user_id"))),
                ": imports stop until it is connected again."))
            enqueue(session, firm_id, "chat.postMessage",
                    {"channel": settings.slack_channel_id, "text": told.text,
                     "blocks": told.blocks})
            session.commit()
    notifier.send(firm_id)


def _check(ctx: BotContext, firm_id: int, args: list[str], command: dict[str, Any],
           respond: Respond, client: WebClient) -> None:
    _reply(respond, notice(run_checks(ctx, client, firm_id)))


def history_query(args: list[str]) -> HistoryQuery:
    """``history`` (the latest), ``history last N`` (1–50), ``history 345`` or ``#345`` (a
    purchase), ``history bill-77`` (a Bill), ``history <client name>`` (contains, any
    case)."""
    if not args:
        return HistoryQuery()
    if args[0].lower() == "last":
        count = args[1] if len(args) == 2 else ""
        if not (count.isascii() and count.isdigit() and len(count) <= 3
                and 1 <= int(count) <= HISTORY_MAX):
            raise SettingError(f"“last” takes one number from 1 to {HISTORY_MAX}.",
                               usage=HISTORY_USAGE)
        return HistoryQuery(limit=int(count))
    purchase = _PURCHASE_ID.fullmatch(args[0]) if len(args) == 1 else None
    if purchase is not None:
        return HistoryQuery(purchase_id=purchase.group(1).lower())
    client = " ".join(args)
    if len(client) > HISTORY_CLIENT_CHARS:
        raise SettingError(f"Search for at most {HISTORY_CLIENT_CHARS} characters of a "
                           "client's name.", usage=HISTORY_USAGE)
    # Control characters are in no name, and PostgreSQL refuses a NUL in a query.
    if not client.isprintable():
        raise SettingError("That is not a client's name.", usage=HISTORY_USAGE)
    return HistoryQuery(client=client)


def _history(ctx: BotContext, firm_id: int, args: list[str], command: dict[str, Any],
             respond: Respond, client: WebClient) -> None:
    query = history_query(args)
    entries, more = service.history_page(ctx, firm_id, query)
    _reply(respond, history(entries, query, more=more))


def _export(ctx: BotContext, firm_id: int, args: list[str], command: dict[str, Any],
            respond: Respond, client: WebClient) -> None:
    """The period's trail as a CSV file: in the firm's channel when an approver asks, to the
    person alone otherwise."""
    try:
        period = parse_period(args, ctx.clock().date())
    except PeriodError as exc:
        raise SettingError(str(exc), usage=EXPORT_USAGE) from None
    user_id = str(command.get("user_id"))
    settings = ctx.settings(firm_id)
    channel_id = settings.slack_channel_id \
        if service.is_settings_admin(client, settings, user_id) else None
    _reply(respond, notice(upload_trail(ctx, client, firm_id, user_id, period,
                                        channel_id=channel_id)))


def _report(ctx: BotContext, firm_id: int, args: list[str], command: dict[str, Any],
            respond: Respond, client: WebClient) -> None:
    """The month's hard-cost report (last month by default): in the firm's channel when an
    approver or a workspace admin asks, to the person alone otherwise."""
    settings = ctx.settings(firm_id)
    today = local_now(settings, ctx.clock()).date()
    if len(args) > 1:
        raise SettingError("Name at most one month.", usage=REPORT_USAGE)
    try:
        month = parse_month(args[0] if args else None, today)
    except MonthError as exc:
        raise SettingError(str(exc), usage=REPORT_USAGE) from None
    user_id = str(command.get("user_id"))
    channel_id = settings.slack_channel_id \
        if service.is_settings_admin(client, settings, user_id) else None
    _reply(respond, notice(f"Making the hard-cost report for {month}: reading Clio…"))
    sentence = on_demand(ctx.importer_for(firm_id), ctx.sessions, client, firm_id, user_id,
                         month, today, channel_id=channel_id,
                         tell=lambda text: _reply(respond, notice(text)))
    _reply(respond, notice(sentence))


def _rules(ctx: BotContext, firm_id: int, args: list[str], command: dict[str, Any],
           respond: Respond, client: WebClient) -> None:
    for message in rules_list(service.rule_views(ctx, firm_id),
                              page=rules_page(args)):
        _reply(respond, message)


def rules_page(args: list[str]) -> int:
    """``rules`` (the first page) or ``rules page N``; SettingError otherwise. A page past
    the last shows the last."""
    if not args:
        return 1
    number = args[1] if len(args) == 2 and args[0].lower() == "page" else ""
    if not (number.isascii() and number.isdigit() and len(number) <= 6 and int(number) >= 1):
        raise SettingError("Say which page, like “rules page 2”.", usage=RULES_USAGE)
    return int(number)


HANDLERS: dict[str, Handler] = {
    "status": _status, "pending": _pending, "failures": _failures,
    "settings": _settings, "set": _set, "pause": _pause, "resume": _resume,
    "connect": _connect, "disconnect": _disconnect, "check": _check,
    "history": _history, "export": _export, "rules": _rules, "report": _report,
}

"""Matter rule buttons: *Always do this for <payee> → <client>* on an answered prompt, and
*Remove* and *More* (the next page) in ``/hardcost rules``.

Anyone in a channel can click, so every click is checked here: the prompt or rule must belong
to the clicking workspace's firm, and when the firm lists approvers only they may make or
remove rules (as only they may answer prompts).
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

from hardcost.bot import service
from hardcost.bot.context import BotContext
from hardcost.bot.notify import to_prompt
from hardcost.bot.payloads import row_id
from hardcost.bot.ui import undo as undo_answer
from hardcost.bot.ui.blocks import LIST_ITEMS
from hardcost.bot.ui.content import (
    ACTION_MAKE_RULE,
    ACTION_REMOVE_RULE,
    ACTION_REMOVE_UNDONE_RULE,
    ACTION_RULES_PAGE,
    Message,
    PromptAnswer,
)
from hardcost.bot.ui.lists import rules_list
from hardcost.bot.ui.notices import notice
from hardcost.bot.ui.prompts import prompt_answered
from hardcost.bot.ui.text import md, mention
from hardcost.sync import matter_rules
from hardcost.sync.store import WaitingExpense

log = logging.getLogger(__name__)


def _ephemeral(respond: Respond, text: str) -> None:
    message = notice(text)
    respond(text=message.text, blocks=message.blocks, response_type="ephemeral",
            replace_original=False)


def _refusal(ctx: BotContext, firm_id: int) -> str:
    approvers = [part for u in ctx.settings(firm_id).approvers for part in (mention(u), " ")]
    return md("Only the firm's approvers can make or remove matter rules: ", *approvers[:-1],
              ".")


def register(app: App, ctx: BotContext) -> None:
    def just_ack(ack: Ack) -> None:
        ack()

    def on_make_rule(body: dict[str, Any], action: dict[str, Any], respond: Respond,
                     client: WebClient) -> None:
        value = str(action.get("value") or "")
        user_id = str((body.get("user") or {}).get("id"))
        firm_id = ctx.firm_id_for_interaction(body)
        waiting_id = row_id(value)
        with ctx.sessions() as session:
            row = session.get(WaitingExpense, waiting_id) if waiting_id else None
            mine = row is not None and firm_id is not None and row.firm_id == firm_id
        if firm_id is None or not mine:
            _ephemeral(respond, "That expense is not one this workspace can make a rule from.")
            return
        if not service.may_choose(ctx.settings(firm_id), user_id):
            _ephemeral(respond, _refusal(ctx, firm_id))
            return
        result = matter_rules.create_from_choice(ctx.sessions, firm_id, waiting_id, user_id,
                                                 clock=ctx.clock)
        if result.rule is None:
            _ephemeral(respond, result.message)
            return
        if result.outcome == "exists":
            _ephemeral(respond, result.message)
        notifier = ctx.notifier(client)
        with ctx.sessions() as session:
            row = session.get(WaitingExpense, waiting_id)
            assert row is not None
            answer = PromptAnswer(by_user=str(row.resolved_by), outcome="linked",
                                  label=result.rule.matter_label,
                                  clio_entry_id=row.clio_activity_id,
                                  undoable=row.resolution == "linked",  # Undo stays
                                  rule=matter_rules.describe(result.rule),
                                  rule_by=result.rule.created_by)
            answered = prompt_answered(
                to_prompt(row, sandbox_links=ctx.sandbox_links), answer)
            notifier.update_message(session, firm_id, "prompt", waiting_id, answered)
            session.commit()
        notifier.send(firm_id)
        if (body.get("container") or {}).get("is_ephemeral"):
            respond(text=answered.text, blocks=answered.blocks, replace_original=True)

    def on_remove_rule(body: dict[str, Any], action: dict[str, Any], respond: Respond) -> None:
        value = str(action.get("value") or "")
        user_id = str((body.get("user") or {}).get("id"))
        firm_id = ctx.firm_id_for_interaction(body)
        if firm_id is None or not row_id(value):
            _ephemeral(respond, "That rule is not one this workspace can remove.")
            return
        if not service.may_choose(ctx.settings(firm_id), user_id):
            _ephemeral(respond, _refusal(ctx, firm_id))
            return
        result = matter_rules.remove(ctx.sessions, firm_id, row_id(value), user_id,
                                     clock=ctx.clock)
        if result.outcome == "refused":
            _ephemeral(respond, result.message)
            return
        log.info("firm %s: %s removed matter rule %s", firm_id, user_id, value)
        rules = service.rule_views(ctx, firm_id)
        # the page the rule was on (rules are listed oldest first)
        number = sum(1 for r in rules if r.id < row_id(value)) // LIST_ITEMS + 1
        page = rules_list(rules, page=number)[0]
        respond(text=page.text, blocks=page.blocks, response_type="ephemeral",
                replace_original=True)
        _ephemeral(respond, result.message)

    def on_remove_undone_rule(body: dict[str, Any], action: dict[str, Any],
                              respond: Respond) -> None:
        """*Remove rule* in Undo's answer: the rule made from the undone choice goes (audited,
        as from ``/hardcost rules``); the answer shows it in place of the button."""
        value = str(action.get("value") or "")
        user_id = str((body.get("user") or {}).get("id"))
        firm_id = ctx.firm_id_for_interaction(body)
        if firm_id is None or not row_id(value):
            _ephemeral(respond, "That rule is not one this workspace can remove.")
            return
        if not service.may_choose(ctx.settings(firm_id), user_id):
            _ephemeral(respond, _refusal(ctx, firm_id))
            return
        result = matter_rules.remove(ctx.sessions, firm_id, row_id(value), user_id,
                                     clock=ctx.clock)
        if result.outcome != "removed" or result.rule is None:
            _ephemeral(respond, result.message)
            return
        log.info("firm %s: %s removed matter rule %s after an undo", firm_id, user_id, value)
        # Slack sends the clicked message's blocks only for some ephemeral messages: without
        # them the answer is replaced by the removal alone.
        message = body.get("message") or {}
        words = matter_rules.describe(result.rule)
        blocks = undo_answer.rule_removed(list(message.get("blocks") or []), row_id(value),
                                          user_id, words)
        shown = Message(text=str(message.get("text") or result.message), blocks=blocks) \
            if blocks else undo_answer.rule_removed_alone(user_id, words)
        respond(text=shown.text, blocks=shown.blocks, response_type="ephemeral",
                replace_original=True)

    def on_rules_page(body: dict[str, Any], action: dict[str, Any], respond: Respond) -> None:
        """*More* under ``/hardcost rules``: the next page, as ``rules page N`` shows it."""
        firm_id = ctx.firm_id_for_interaction(body)
        number = row_id(action.get("value"))
        if firm_id is None or not number:
            _ephemeral(respond, "That list is not one this workspace can page.")
            return
        for message in rules_list(service.rule_views(ctx, firm_id), page=number):
            respond(text=message.text, blocks=message.blocks, response_type="ephemeral",
                    replace_original=False)

    app.action(ACTION_MAKE_RULE)(ack=just_ack, lazy=[on_make_rule])
    app.action(ACTION_REMOVE_UNDONE_RULE)(ack=just_ack, lazy=[on_remove_undone_rule])
    app.action(ACTION_REMOVE_RULE)(ack=just_ack, lazy=[on_remove_rule])
    app.action(ACTION_RULES_PAGE)(ack=just_ack, lazy=[on_rules_page])

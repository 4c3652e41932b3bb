"""Buttons and menus: matter and contact choices, Not a client cost, Retry, App Home buttons,
and the Older button of ``/hardcost history``.

Anyone in a channel can click, so every click is checked again here: the prompt must belong to
the clicking workspace's firm, and when the firm lists approvers only they may answer.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient
from sqlalchemy import select

from hardcost.bot import service
from hardcost.bot.context import BotContext
from hardcost.bot.live import queue_run_update
from hardcost.bot.notify import to_failure_notice, to_group_view, to_prompt
from hardcost.bot.outbox import enqueue
from hardcost.bot.payloads import id_pair, row_id
from hardcost.bot.surfaces import open_settings_modal, publish_home
from hardcost.bot.ui import undo as undo_answer
from hardcost.bot.ui.content import (
    ACTION_CHOOSE_CONTACT,
    ACTION_CHOOSE_MATTER,
    ACTION_GROUP_MATTER,
    ACTION_HISTORY_OLDER,
    ACTION_NOT_CLIENT_COST,
    ACTION_OPEN_QBO,
    ACTION_OPEN_SETTINGS,
    ACTION_RECONNECT,
    ACTION_RETRY_FAILURE,
    ACTION_RUN_NOW,
    ACTION_SEARCH_MATTER,
    ACTION_SELECT_CONTACT,
    ACTION_SELECT_MATTER,
    ACTION_SHOW_PENDING,
    ACTION_STOP_RUN,
    ACTION_UNDO_CHOICE,
    PROMPT_BLOCK_PREFIX,
    Choice,
    GroupAnswer,
    HistoryQuery,
    Message,
    PromptAnswer,
)
from hardcost.bot.ui.failures import failure_retried
from hardcost.bot.ui.groups import prompt_group_answered, replace_group_blocks
from hardcost.bot.ui.lists import pending_list
from hardcost.bot.ui.notices import connect_link, notice
from hardcost.bot.ui.prompts import matter_options, matter_search_options, prompt, prompt_answered
from hardcost.bot.ui.runs import run_progress
from hardcost.bot.ui.text import Mrkdwn, md, mention, slack_time
from hardcost.bot.ui.trail import history
from hardcost.sync import audit, choices, matter_cache, matter_rules, oauth, prompt_groups, undo
from hardcost.sync.choices import ChoiceResult
from hardcost.sync.importer import SHUTDOWN
from hardcost.sync.leases import RunStop
from hardcost.sync.live import LiveFigures, request_stop
from hardcost.sync.log_context import run_context
from hardcost.sync.prompt_groups import GroupResult
from hardcost.sync.store import (
    PROVIDER_NAMES,
    Failure,
    Firm,
    PromptGroup,
    SlackOutbox,
    WaitingExpense,
    WaitReason,
)
from hardcost.sync.summary import RunSummary, matter_label

log = logging.getLogger(__name__)



def _may_choose(ctx: BotContext, firm_id: int, user_id: str, respond: Respond, *,
                doing: str = "choose") -> bool:
    """Whether this person may answer the firm's questions (or stop its import: ``doing``);
    tells them who may when not."""
    settings = ctx.settings(firm_id)
    if service.may_choose(settings, user_id):
        return True
    approvers = [part for u in settings.approvers for part in (mention(u), " ")]
    _ephemeral(respond, md(f"Only the firm's approvers can {doing}: ", *approvers[:-1], "."))
    return False


def _ephemeral(respond: Respond, text: str) -> None:
    """Tell only the clicker. Plain ``text`` (a Clio error, a failure's message) is escaped;
    ``Mrkdwn`` keeps its mentions."""
    message = notice(text)
    respond(text=message.text, blocks=message.blocks, response_type="ephemeral",
            replace_original=False)


def _tell(respond: Respond | None, client: WebClient, user_id: str, text: str) -> None:
    """Tell the clicker: in place when the click came with a response URL (a message), in
    the app's direct messages otherwise (App Home has none)."""
    if respond is not None and getattr(respond, "response_url", None):
        _ephemeral(respond, text)
        return
    message = notice(text)
    client.chat_postMessage(channel=user_id, text=message.text, blocks=message.blocks)


def _result_text(result: ChoiceResult) -> str:
    who = mention(result.answered_by) if result.answered_by else "hardcost"
    if result.outcome == "being_answered":
        return md(who, " is answering this one right now.")
    if result.outcome == "already_answered":
        when = [" on ", Mrkdwn(slack_time(result.answered_at))] if result.answered_at else []
        what = [": ", result.answer] if result.answer else []
        return md("Already answered by ", who, *when, *what, ".")
    return result.message


def _action_value(action: dict[str, Any]) -> str:
    if "selected_option" in action and action["selected_option"]:
        return str(action["selected_option"].get("value") or "")
    return str(action.get("value") or "")


def _prompt_of_team(ctx: BotContext, body: dict[str, Any], waiting_id: int) -> int | None:
    """The firm id when the prompt belongs to the clicking team's firm; None otherwise."""
    firm_id = ctx.firm_id_for_interaction(body)
    if firm_id is None:
        return None
    with ctx.sessions() as session:
        row = session.get(WaitingExpense, waiting_id)
        if row is None or row.firm_id != firm_id:
            log.warning("team %s clicked prompt %s of another firm",
                        (body.get("team") or {}).get("id"), waiting_id)
            return None
    return firm_id


def register(app: App, ctx: BotContext) -> None:
    def just_ack(ack: Ack) -> None:
        ack()

    def on_choice(body: dict[str, Any], action: dict[str, Any], respond: Respond,
                  client: WebClient) -> None:
        action_id = str(action.get("action_id"))
        value = _action_value(action)
        user_id = str((body.get("user") or {}).get("id"))
        if action_id == ACTION_NOT_CLIENT_COST:
            waiting_id, target = row_id(value), 0
        else:
            waiting_id, target = id_pair(value)
        firm_id = _prompt_of_team(ctx, body, waiting_id) if waiting_id else None
        if firm_id is None:
            _ephemeral(respond, "That expense is not one this workspace can answer.")
            return
        if not _may_choose(ctx, firm_id, user_id, respond):
            return
        importer = ctx.importer_for(firm_id)
        with run_context(firm_id):  # the choice's log lines name the firm, as a run's do
            if action_id in (ACTION_CHOOSE_MATTER, ACTION_SELECT_MATTER, ACTION_SEARCH_MATTER):
                result = choices.choose_matter(importer, waiting_id, target, user_id)
            elif action_id in (ACTION_CHOOSE_CONTACT, ACTION_SELECT_CONTACT):
                result = choices.choose_contact(importer, waiting_id, target, user_id)
            else:
                result = choices.not_client_cost(importer, waiting_id, user_id)
        _show_result(ctx, client, respond, firm_id, waiting_id, result,
                     ephemeral=bool((body.get("container") or {}).get("is_ephemeral")))

    def on_group_choice(body: dict[str, Any], action: dict[str, Any], respond: Respond,
                        client: WebClient) -> None:
        """One matter for every open expense of a group (a grouped message or a digest)."""
        user_id = str((body.get("user") or {}).get("id"))
        group_id, matter_id = id_pair(_action_value(action))
        firm_id = ctx.firm_id_for_interaction(body)
        with ctx.sessions() as session:
            group = session.get(PromptGroup, group_id) if group_id else None
            if group is None or firm_id is None or group.firm_id != firm_id:
                _ephemeral(respond, "That group is not one this workspace can answer.")
                return
        if not _may_choose(ctx, firm_id, user_id, respond):
            return
        with run_context(firm_id):
            result = prompt_groups.choose_for_group(ctx.importer_for(firm_id), group_id,
                                                    matter_id, user_id)
        if result.outcome != "linked":
            who = mention(result.answered_by) if result.answered_by else "someone"
            if result.outcome == "being_answered":
                _ephemeral(respond, md(who, " is answering this group right now."))
            elif result.outcome == "already_answered":
                _ephemeral(respond, md("This group was answered already by ", who, "."))
            else:
                _ephemeral(respond, result.message)
            return
        _show_group_result(ctx, client, body, firm_id, group_id, result)

    def on_undo(body: dict[str, Any], action: dict[str, Any], respond: Respond,
                client: WebClient) -> None:
        """Undo a matter choice: the chooser, an approver or a workspace admin may."""
        value = str(action.get("value") or "")
        user_id = str((body.get("user") or {}).get("id"))
        waiting_id = row_id(value)
        firm_id = _prompt_of_team(ctx, body, waiting_id) if waiting_id else None
        if firm_id is None:
            _ephemeral(respond, "That expense is not one this workspace can answer.")
            return
        with ctx.sessions() as session:
            row = session.get(WaitingExpense, waiting_id)
            chooser = row.resolved_by if row is not None else None
        if user_id != chooser and \
                not service.is_settings_admin(client, ctx.settings(firm_id), user_id):
            chose = [" (", mention(chooser), ")"] if chooser else []
            _ephemeral(respond, md("Only the person who chose", *chose, ", the firm's "
                                   "approvers and workspace admins can undo this choice."))
            return
        with run_context(firm_id):
            result = undo.undo_choice(ctx.importer_for(firm_id), waiting_id, user_id)
        if result.outcome != "undone":
            _ephemeral(respond, result.message)
            return
        notifier = ctx.notifier(client)
        with ctx.sessions() as session:
            row = session.get(WaitingExpense, waiting_id)
            assert row is not None
            reopened = prompt(to_prompt(row, sandbox_links=ctx.sandbox_links))
            if row.slack_ts is not None:
                notifier.update_message(session, firm_id, "prompt", waiting_id, reopened)
            session.commit()
        notifier.send(firm_id)
        if (body.get("container") or {}).get("is_ephemeral"):
            respond(text=reopened.text, blocks=reopened.blocks, replace_original=True)
        # A rule made from the undone choice stays in force unless the clicker removes it.
        answer = undo_answer.undone(result.entry_id, result.rules)
        respond(text=answer.text, blocks=answer.blocks, response_type="ephemeral",
                replace_original=False)

    def on_search(ack: Ack, body: dict[str, Any], payload: dict[str, Any]) -> None:
        block_id = str(payload.get("block_id") or body.get("block_id") or "")
        waiting_id = row_id(block_id.removeprefix(PROMPT_BLOCK_PREFIX)) \
            if block_id.startswith(PROMPT_BLOCK_PREFIX) else 0
        firm_id = _prompt_of_team(ctx, body, waiting_id) if waiting_id else None
        if firm_id is None:
            ack(options=[])
            return
        with ctx.sessions() as session:
            row = session.get(WaitingExpense, waiting_id)
            assert row is not None
            if row.reason == WaitReason.NO_CUSTOMER.value:
                # Any of the firm's open and pending matters: searched in the local copy.
                found = matter_cache.search(session, firm_id, str(payload.get("value") or ""))
                ack(options=matter_search_options(waiting_id, [
                    (Choice(m.id, matter_label(m.display_number, m.description)),
                     m.client_name) for m in found]))
                return
            view = to_prompt(row, sandbox_links=ctx.sandbox_links)
        ack(options=matter_options(waiting_id, view.choices,
                                   str(payload.get("value") or ""),
                                   suggested=view.suggested))

    def on_retry(body: dict[str, Any], action: dict[str, Any], respond: Respond,
                 client: WebClient) -> None:
        value = str(action.get("value") or "")
        firm_id = ctx.firm_id_for_interaction(body)
        user_id = str((body.get("user") or {}).get("id"))
        with ctx.sessions() as session:
            failure = session.get(Failure, row_id(value)) if row_id(value) else None
            if failure is None or firm_id is None or failure.firm_id != firm_id:
                _ephemeral(respond, "That failure is not one this workspace can retry.")
                return
            purchase_id = failure.purchase_id
        with ctx.claim_run(firm_id) as lease:  # never beside another import of the firm
            if lease is None:
                _ephemeral(respond, "An import of this firm is under way; it retries this "
                           "expense too. Try again when it has finished if it still fails.")
                return
            importer = ctx.importer(firm_id)
            importer.stopping = RunStop(lease, SHUTDOWN)
            summary = importer.run(trigger="retry", purchase_ids={purchase_id}, actor=user_id)
        with ctx.sessions() as session:
            failure = session.get(Failure, row_id(value))
            assert failure is not None
            if not summary.error and summary.purchases_read == 0:
                failure.resolved_at = ctx.clock()  # deleted in QuickBooks: nothing to import
                failure.message += " (The expense is no longer in QuickBooks.)"
            fixed = failure.resolved_at is not None
            view = to_failure_notice(failure, sandbox_links=ctx.sandbox_links)
            if summary.error:
                outcome = f"could not run: {summary.error}"
            elif fixed:
                outcome = "fixed" + (f", imported {summary.imported}" if summary.imported
                                     else "")
            else:
                outcome = f"still failing: {failure.message}"
            audit.record(session, firm_id, audit.Action.RETRY, user_id,
                         realm_id=failure.realm_id, purchase_id=failure.purchase_id,
                         customer_id=failure.customer_id or None,
                         line_id=failure.line_id or None, run_id=summary.run_id,
                         detail=f"Retried: {outcome}", at=ctx.clock())
            notifier = ctx.notifier(client)
            if fixed:
                notifier.update_message(session, firm_id, "failure", failure.id,
                                        failure_retried(view, by_user=user_id,
                                                        outcome=outcome))
            session.commit()
        notifier.after_run(firm_id, summary)
        if not fixed:
            _ephemeral(respond, f"Retried: {outcome}")

    def on_run_now(body: dict[str, Any], respond: Respond, client: WebClient) -> None:
        firm_id = ctx.firm_id_for_interaction(body)
        if firm_id is None:
            return
        user_id = str((body.get("user") or {}).get("id"))

        def then(summary: RunSummary) -> None:
            ctx.notifier(client).after_run(firm_id, summary)
            publish_home(ctx, client, firm_id, user_id)

        def failed(sentence: str) -> None:
            _tell(respond, client, user_id, sentence)

        if not ctx.start_run(firm_id, trigger="slack", then=then, failed=failed,
                             actor=user_id):
            _tell(respond, client, user_id, "An import is already under way; its summary "
                                            "follows in the channel.")

    def on_show_pending(body: dict[str, Any], client: WebClient) -> None:
        firm_id = ctx.firm_id_for_interaction(body)
        user_id = str((body.get("user") or {}).get("id"))
        if firm_id is None:
            return
        settings = ctx.settings(firm_id)
        channel = settings.slack_channel_id
        if not channel:
            return
        for message in pending_list(service.open_prompts(ctx, firm_id)):
            client.chat_postEphemeral(channel=channel, user=user_id, text=message.text,
                                      blocks=message.blocks)

    def on_reconnect(body: dict[str, Any], action: dict[str, Any], respond: Respond,
                     client: WebClient) -> None:
        firm_id = ctx.firm_id_for_interaction(body)
        user_id = str((body.get("user") or {}).get("id"))
        provider = str(action.get("value") or "")
        if firm_id is None or provider not in PROVIDER_NAMES:
            return
        if not service.is_settings_admin(client, ctx.settings(firm_id), user_id):
            _ephemeral(respond, "Only workspace admins and hardcost's approvers can connect "
                                "QuickBooks or Clio.")
            return
        with ctx.sessions() as session:
            firm = session.get(Firm, firm_id)
            region = firm.clio_region if firm is not None else "us"
        link = oauth.start(ctx.sessions, ctx.config, firm_id, provider,
                           slack_team_id=(body.get("team") or {}).get("id"),
                           slack_user_id=user_id, region=region, now=ctx.clock())
        message = connect_link(PROVIDER_NAMES[provider], link)
        respond(text=message.text, blocks=message.blocks, response_type="ephemeral",
                replace_original=False)

    def on_history_older(body: dict[str, Any], action: dict[str, Any],
                         respond: Respond) -> None:
        """The next page of ``/hardcost history``, in place of the one clicked."""
        firm_id = ctx.firm_id_for_interaction(body)
        query = HistoryQuery.from_button_value(str(action.get("value") or ""))
        if firm_id is None or query is None:
            _ephemeral(respond, "That history is not one this workspace can page through.")
            return
        entries, more = service.history_page(ctx, firm_id, query)
        page = history(entries, query, more=more)
        respond(text=page.text, blocks=page.blocks, response_type="ephemeral",
                replace_original=True)

    def on_stop(body: dict[str, Any], action: dict[str, Any], respond: Respond,
                client: WebClient) -> None:
        """*Stop* on a run's progress message (approvers only, when the firm lists them):
        the run stops between two entries, as on shutdown; the next run carries on."""
        firm_id = ctx.firm_id_for_interaction(body)
        user_id = str((body.get("user") or {}).get("id"))
        run_id = row_id(str(action.get("value") or ""))
        if firm_id is None or not run_id:
            _ephemeral(respond, "That import is not one this workspace can stop.")
            return
        if not _may_choose(ctx, firm_id, user_id, respond, doing="stop an import"):
            return
        with ctx.sessions() as session:
            run, first = request_stop(session, firm_id, run_id, user_id, ctx.clock())
            if run is None:
                session.rollback()
                _ephemeral(respond, "That import has already finished; there is nothing to "
                                    "stop.")
                return
            asked_by = run.stop_requested_by or user_id
            figures = LiveFigures.from_json(run.progress)
            firm = session.get(Firm, firm_id)
            if figures is not None and firm is not None:
                shown = run_progress(
                    LiveFigures(**{**figures.to_json(), "stop_requested_by": asked_by}),
                    firm_name=firm.name)
                queue_run_update(session, firm_id, run_id, shown.text, shown.blocks,
                                 ctx.clock())
            if first:
                audit.record(session, firm_id, audit.Action.STOPPED, user_id, run_id=run_id,
                             detail=f"Stopped run #{run_id}", at=ctx.clock())
            session.commit()
        ctx.deliver_soon(firm_id, client)
        if not first:
            _ephemeral(respond, md(mention(asked_by), " has already stopped this import; it "
                                   "stops after the entry it is writing."))
            return
        _ephemeral(respond, "Stopping the import after the entry it is writing. Nothing is "
                            "lost: the next run carries on where it stopped.")

    def on_open_settings(body: dict[str, Any], client: WebClient, respond: Respond) -> None:
        firm_id = ctx.firm_id_for_interaction(body)
        user_id = str((body.get("user") or {}).get("id"))
        if firm_id is None:
            return
        if not service.is_settings_admin(client, ctx.settings(firm_id), user_id):
            client.chat_postEphemeral(
                channel=ctx.settings(firm_id).slack_channel_id or user_id, user=user_id,
                text="Only workspace admins and hardcost's approvers can change settings.")
            return
        open_settings_modal(ctx, client, firm_id, str(body.get("trigger_id")))

    for action_id in (ACTION_CHOOSE_MATTER, ACTION_SELECT_MATTER, ACTION_SEARCH_MATTER,
                      ACTION_CHOOSE_CONTACT, ACTION_SELECT_CONTACT, ACTION_NOT_CLIENT_COST):
        app.action(action_id)(ack=just_ack, lazy=[on_choice])
    app.options(ACTION_SEARCH_MATTER)(on_search)
    app.action(ACTION_UNDO_CHOICE)(ack=just_ack, lazy=[on_undo])
    app.action(ACTION_GROUP_MATTER)(ack=just_ack, lazy=[on_group_choice])
    app.action(ACTION_RETRY_FAILURE)(ack=just_ack, lazy=[on_retry])
    app.action(ACTION_RUN_NOW)(ack=just_ack, lazy=[on_run_now])
    app.action(ACTION_STOP_RUN)(ack=just_ack, lazy=[on_stop])
    app.action(ACTION_SHOW_PENDING)(ack=just_ack, lazy=[on_show_pending])
    app.action(ACTION_OPEN_SETTINGS)(ack=just_ack, lazy=[on_open_settings])
    app.action(ACTION_OPEN_QBO)(just_ack)
    app.action(ACTION_RECONNECT)(ack=just_ack, lazy=[on_reconnect])
    app.action(ACTION_HISTORY_OLDER)(ack=just_ack, lazy=[on_history_older])


def _show_result(ctx: BotContext, client: WebClient, respond: Respond, firm_id: int,
                 waiting_id: int, result: ChoiceResult, *, ephemeral: bool) -> None:
    """Update the prompt in place for a settled answer; tell only the clicker otherwise."""
    if result.outcome in ("being_answered", "already_answered", "refused", "failed"):
        _ephemeral(respond, _result_text(result))
        return
    notifier = ctx.notifier(client)
    with ctx.sessions() as session:
        row = session.get(WaitingExpense, waiting_id)
        assert row is not None
        view = to_prompt(row, sandbox_links=ctx.sandbox_links)
        answer = PromptAnswer(by_user=str(result.answered_by), outcome=result.outcome,
                              label=result.label, clio_entry_id=result.clio_entry_id,
                              undoable=result.outcome == "linked",
                              rule_offer=matter_rules.offer_for(row) is not None)
        answered = prompt_answered(view, answer)
        if result.still_waiting is not None:
            # The contact is settled, the matter is not: the old message records the answer
            # and a new prompt asks the next question.
            channel = row.slack_channel or ctx.settings(firm_id).slack_channel_id
            previous = _previous_message(session, firm_id, waiting_id)
            if previous is not None:
                notifier.update_message_at(session, firm_id, previous, answered)
            if channel:
                notifier.queue_prompt(session, row, channel)
        elif row.slack_ts is not None:
            notifier.update_message(session, firm_id, "prompt", waiting_id, answered)
        group = session.get(PromptGroup, row.group_id) if row.group_id else None
        if group is not None and group.resolution is None:
            notifier.update_group(session, group)  # one fewer waits under the group
        session.commit()
    notifier.send(firm_id)
    if ephemeral:  # clicked in a /hardcost pending list: that copy is replaced too
        respond(text=answered.text, blocks=answered.blocks, replace_original=True)


def _show_group_result(ctx: BotContext, client: WebClient, body: dict[str, Any], firm_id: int,
                       group_id: int, result: GroupResult) -> None:
    """Every member written updated in place, then the group's message (or, for a digest's
    group, its part of the digest)."""
    notifier = ctx.notifier(client)
    with ctx.sessions() as session:
        unposted: list[tuple[int, Message]] = []  # linked with no message of their own
        for waiting_id in result.linked:
            row = session.get(WaitingExpense, waiting_id)
            if row is None:
                continue
            answered = prompt_answered(
                to_prompt(row, sandbox_links=ctx.sandbox_links),
                PromptAnswer(by_user=str(result.answered_by), outcome="linked",
                             label=result.label, clio_entry_id=row.clio_activity_id,
                             undoable=True))
            if row.slack_ts is not None:
                notifier.update_message(session, firm_id, "prompt", waiting_id, answered)
            else:
                unposted.append((waiting_id, answered))
        failed = []
        for waiting_id, why in result.failed:
            row = session.get(WaitingExpense, waiting_id)
            if row is not None:
                failed.append((to_prompt(row, sandbox_links=ctx.sandbox_links), why))
        group = session.get(PromptGroup, group_id)
        assert group is not None
        answer = GroupAnswer(by_user=str(result.answered_by), label=str(result.label),
                             linked=len(result.linked), linked_total=result.linked_total,
                             failed=tuple(failed), others=result.others)
        if group.slack_ts is not None:
            view = to_group_view(session, group, sandbox_links=ctx.sandbox_links)
            notifier.update_message(session, firm_id, "group", group_id,
                                    prompt_group_answered(view, answer))
        else:
            clicked = _clicked_message(body)
            if clicked is not None:
                where, blocks, text = clicked
                replaced = replace_group_blocks(blocks, group_id,
                                                group.customer_name, answer)
                notifier.update_message_at(session, firm_id, where,
                                           Message(text=text, blocks=replaced))
                # A digest's expenses have no message of their own: each one linked gets one
                # in the digest's thread, saying where it went, with Undo, as the members of
                # a grouped message have.
                thread = str((body.get("message") or {}).get("thread_ts") or where[1])
                for waiting_id, answered in unposted:
                    enqueue(session, firm_id, "chat.postMessage", {
                        "channel": where[0], "thread_ts": thread, "text": answered.text,
                        "blocks": answered.blocks, "unfurl_links": False,
                        "unfurl_media": False}, ref_kind="prompt", ref_id=waiting_id)
        session.commit()
    notifier.send(firm_id)


def _clicked_message(body: dict[str, Any]) -> tuple[tuple[str, str], list[Any], str] | None:
    """(channel, ts), blocks and text of the message a click came from."""
    container = body.get("container") or {}
    message = body.get("message") or {}
    channel = container.get("channel_id") or (body.get("channel") or {}).get("id")
    ts = container.get("message_ts") or message.get("ts")
    if not channel or not ts or container.get("is_ephemeral"):
        return None
    return (str(channel), str(ts)), list(message.get("blocks") or []), \
        str(message.get("text") or "hardcost")


def _previous_message(session: Any, firm_id: int, waiting_id: int) -> tuple[str, str] | None:
    row = session.scalars(select(SlackOutbox).where(
        SlackOutbox.firm_id == firm_id, SlackOutbox.ref_kind == "prompt",
        SlackOutbox.ref_id == waiting_id, SlackOutbox.result_ts.is_not(None))
        .order_by(SlackOutbox.id.desc()).limit(1)).first()
    return (row.result_channel, row.result_ts) if row is not None else None


__all__ = ["Choice", "register"]

"""Matter and contact prompts: the question for a waiting expense, the prompt answered, the
reminder, and the options of its matter menus (pure builders, see ``bot.ui.blocks``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ConfirmObject,
    ExternalDataSelectElement,
    MarkdownTextObject,
    SectionBlock,
    StaticSelectElement,
)

from hardcost.bot.ui.blocks import (
    CONFIRM_TEXT,
    QBO_LINK,
    STATIC_OPTIONS,
    Block,
    _button_text,
    _confirmed_button,
    _context,
    _fallback,
    _fields,
    _section,
)
from hardcost.bot.ui.content import (
    ACTION_CHOOSE_CONTACT,
    ACTION_CHOOSE_MATTER,
    ACTION_MAKE_RULE,
    ACTION_NOT_CLIENT_COST,
    ACTION_SEARCH_MATTER,
    ACTION_SELECT_CONTACT,
    ACTION_SELECT_MATTER,
    ACTION_UNDO_CHOICE,
    PROMPT_BLOCK_PREFIX,
    RULE_OFFER_PREFIX,
    Choice,
    Message,
    Prompt,
    PromptAnswer,
)
from hardcost.bot.ui.text import (
    OPTION_TEXT,
    as_utc,
    clip,
    day,
    escape,
    fit,
    is_http_url,
    link,
    mention,
    name,
    one_line,
    option,
    plural,
    slack_date,
)
from hardcost.sync.report import REASONS, money
from hardcost.sync.store import WaitReason

PROMPT_BUTTONS = 5  # up to this many choices are buttons; then a select
MEMO_CHARS = 300


NO_CUSTOMER_REASON = WaitReason.NO_CUSTOMER.value
NO_CLIENT = "_none in QuickBooks_"
NO_CLIENT_QUESTION = "No client on this expense: which matter?"


def _untagged(p: Prompt) -> bool:
    return p.reason == NO_CUSTOMER_REASON


def _client(p: Prompt, limit: int = 200) -> str:
    """The client as mrkdwn; an expense with no customer says so."""
    return NO_CLIENT if _untagged(p) and not p.client else name(p.client, limit)


def _prompt_fields(p: Prompt) -> list[Block]:
    fields = [f"*Amount*\n{money(p.amount)}", f"*Date*\n{day(p.txn_date)}",
              f"*Client*\n{_client(p)}"]
    if p.payee:
        fields.append(f"*Payee*\n{name(p.payee, 200)}")
    if p.reference:
        fields.append(f"*{'Bill no.' if p.bill else 'Check no.'}*\n{name(p.reference, 50)}")
    if p.memo and p.memo.strip():
        fields.append(f"*Memo*\n{name(p.memo, MEMO_CHARS)}")
    blocks = [_fields(fields)]
    facts = []
    if p.waiting_since:
        facts.append(f"Waiting since {slack_date(p.waiting_since)}")
    if is_http_url(p.qbo_url):
        facts.append(link(p.qbo_url, QBO_LINK))
    if facts:
        blocks.append(_context(" · ".join(facts)))
    return blocks


WAITING_FOR_PAYMENT = "payment"  # a Bill (``bills on-payment``) not fully paid: no choice


def _prompt_question(p: Prompt) -> tuple[str, str]:
    """(mrkdwn block text, plain notification text)."""
    client = name(p.client, 200)
    amount = f"{money(p.amount)} on {day(p.txn_date)}"
    what = f"{amount} for {client}"
    if p.reason == WAITING_FOR_PAYMENT:
        return (f":hourglass: *A Bill for {client}: waiting for payment*; it imports by itself "
                "once QuickBooks shows it fully paid (`bills on-payment`).",
                f"Bill for {client} waiting for payment: {amount}")
    if _untagged(p):
        return (f":mag: *{NO_CLIENT_QUESTION}*\n"
                "Nobody tagged a customer on it in QuickBooks; search the firm's open and "
                "pending matters by number, client or description.",
                f"{NO_CLIENT_QUESTION} {amount}")
    if p.kind == "contact":
        if not p.choices:
            return (f":bust_in_silhouette: *No Clio contact matches {client}*\n"
                    "Staff can create the contact in Clio; the next run picks it up.",
                    f"No Clio contact matches {client}: {amount}")
        return (f":bust_in_silhouette: *Which Clio contact is {client}?*\n"
                f"Waiting because {escape(REASONS.get(p.reason, p.reason))}.",
                f"Which Clio contact is {client}? {what}")
    if not p.choices:
        return (f":hourglass: *No open or pending matter for {client} in Clio yet*; "
                "it imports by itself once one exists.",
                f"No matter yet for {client}: {amount}")
    return (f":mag: *Which matter is this expense for?*\n"
            f"Waiting because {escape(REASONS.get(p.reason, p.reason))}.",
            f"Which matter? {what}")


def _not_client_cost(p: Prompt) -> ButtonElement:
    text = (f"{money(p.amount)} on {day(p.txn_date)} for {_client(p, 80)} will not be "
            "imported into Clio, and this prompt closes.")
    return _confirmed_button("Not a client cost", ACTION_NOT_CLIENT_COST, str(p.id),
                             title="Not a client cost?", text=text,
                             confirm="Not a client cost")


def _prompt_actions(p: Prompt) -> list[Block]:
    """The choice blocks, then the actions block (block_id ``hc_prompt:<id>``).

    Up to PROMPT_BUTTONS choices are one section each with its button as the accessory: Slack
    wants action_ids unique within a block, and every choice button shares one action_id. The
    label shows in full there (a button's text is cut at 75)."""
    contact = p.kind == "contact"
    choose, select = ((ACTION_CHOOSE_CONTACT, ACTION_SELECT_CONTACT) if contact
                      else (ACTION_CHOOSE_MATTER, ACTION_SELECT_MATTER))
    noun = "contact" if contact else "matter"
    blocks: list[Block] = []
    elements: list[Any] = []
    note = None
    n = len(p.choices)
    if _untagged(p):
        elements.append(ExternalDataSelectElement(
            action_id=ACTION_SEARCH_MATTER, placeholder="Search matters: number, client, …",
            min_query_length=1))
    elif 0 < n <= PROMPT_BUTTONS:
        for c in p.choices:
            label = name(c.label, 300) or "_(no name)_"
            if _suggested(p, c):
                label = f"*{SUGGESTED}:* {label}"
            blocks.append(SectionBlock(
                text=MarkdownTextObject(text=label),
                accessory=ButtonElement(text="Choose", action_id=choose, value=f"{p.id}:{c.id}",
                                        accessibility_label=_button_text(f"Choose {c.label}")),
            ).to_dict())
    elif n and (n <= STATIC_OPTIONS or contact):
        elements.append(StaticSelectElement(
            action_id=select, placeholder=f"Choose a {noun} ({n:,})",
            options=[option(choice_label(p, c), f"{p.id}:{c.id}")
                     for c in p.choices[:STATIC_OPTIONS]]))
        if n > STATIC_OPTIONS:
            note = (f"Showing the first {STATIC_OPTIONS} of {n:,} possible contacts. If the "
                    "right one is missing, make its name in Clio match the QuickBooks customer; "
                    "the next run picks it up.")
    elif n:
        elements.append(ExternalDataSelectElement(
            action_id=ACTION_SEARCH_MATTER, placeholder=f"Search {n:,} matters",
            min_query_length=1))
    elements.append(_not_client_cost(p))
    blocks.append(ActionsBlock(elements=elements,
                               block_id=f"{PROMPT_BLOCK_PREFIX}{p.id}").to_dict())
    if note:
        blocks.append(_context(note))
    return blocks


SUGGESTED = "Suggested"


def _suggested(p: Prompt, c: Choice) -> bool:
    return p.suggested is not None and c.id == p.suggested


def choice_label(p: Prompt, c: Choice) -> str:
    """A choice's label as a select shows it (plain text): the suggested one says so."""
    return f"{SUGGESTED}: {c.label}" if _suggested(p, c) else c.label


def _prompt_hints(p: Prompt) -> list[Block]:
    """Why the first matter is suggested, and any note (a rule whose matter closed)."""
    parts = []
    if p.note:
        parts.append(f":information_source: {name(p.note, 400)}")
    if p.suggestion and p.suggested is not None and any(c.id == p.suggested
                                                        for c in p.choices):
        parts.append(f":bulb: *{SUGGESTED}* — {name(p.suggestion, 300)}")
    return [_context(*parts)] if parts else []


def _prompt_blocks(p: Prompt) -> list[Block]:
    question, _ = _prompt_question(p)
    if p.reason == WAITING_FOR_PAYMENT:  # nobody is asked: nothing to choose
        return [_section(question), *_prompt_fields(p)]
    return [_section(question), *_prompt_hints(p), *_prompt_fields(p), *_prompt_actions(p)]


def prompt(prompt: Prompt) -> Message:
    """The matter/contact prompt: the expense, why it waits, a QuickBooks link, the choices
    (buttons ≤ 5, a select ≤ 100, a search above that) and "Not a client cost"."""
    _, text = _prompt_question(prompt)
    return Message(text=_fallback(text), blocks=_prompt_blocks(prompt))


def _answer_line(answer: PromptAnswer) -> str:
    who = mention(answer.by_user)
    label = name(answer.label, 200) if answer.label else ""
    if answer.outcome == "linked":
        line = f"Linked to {label or 'the matter'} by {who}"
        if answer.clio_entry_id:
            line += f" — Clio entry #{answer.clio_entry_id}"
        return line
    if answer.outcome == "imported":
        line = "Imported into Clio by itself once the client had a matter"
        if answer.clio_entry_id:
            line += f" — Clio entry #{answer.clio_entry_id}"
        return line
    if answer.outcome == "not_client_cost":
        return f"Marked not a client cost by {who}"
    if answer.outcome in ("removed_deleted", "removed_voided"):
        what = "Deleted" if answer.outcome == "removed_deleted" else "Voided"
        return f"{what} in QuickBooks: nothing to choose any more"
    if answer.outcome == "superseded":
        return ("Edited in QuickBooks (its customer or lines changed): this question is "
                "gone; a new one follows if the edited expense needs a choice")
    if answer.outcome == "contact_remembered":
        return f"Contact remembered: {label or 'the contact'} (chosen by {who})"
    return f"{escape(answer.outcome)}{': ' + label if label else ''} by {who}"


_ANSWER_ICONS = {"linked": ":white_check_mark:", "imported": ":white_check_mark:",
                 "not_client_cost": ":heavy_minus_sign:", "removed_deleted": ":wastebasket:",
                 "removed_voided": ":wastebasket:", "superseded": ":pencil2:",
                 "contact_remembered": ":white_check_mark:"}


def _undo_button(p: Prompt) -> ButtonElement:
    text = (f"The Clio entry for {money(p.amount)} on {day(p.txn_date)} ({name(p.client, 80)}) "
            "is deleted, unless it is on a bill, and the question is asked again.")
    return _confirmed_button("Undo", ACTION_UNDO_CHOICE, str(p.id), title="Undo this choice?",
                             text=text, confirm="Undo", deny="Keep it")


def rule_words(payee: str | None, client: str) -> str:
    """"Speedy Couriers → Acme" (plain text)."""
    return f"{one_line(payee or '')} → {one_line(client)}"


def prompt_answered(prompt: Prompt, answer: PromptAnswer) -> Message:
    """The prompt updated in place: its actions replaced by who chose what. After a person's
    matter choice: Undo (it works while the Clio entry is unbilled) and the offer to make it a
    rule ("Always do this for <payee> → <client>"), or the rule made from it."""
    line = _answer_line(answer)
    icon = _ANSWER_ICONS.get(answer.outcome, ":white_check_mark:")
    blocks = [_section(f"{icon} {line}"), *_prompt_fields(prompt)]
    if answer.rule:
        blocks.append(_context(f":repeat: Rule made by {mention(answer.rule_by or '')}: "
                               f"{name(answer.rule, 300)} always goes to "
                               f"{name(answer.label, 200) or 'this matter'}"))
    elements: list[ButtonElement] = []
    if answer.undoable and answer.outcome == "linked":
        elements.append(_undo_button(prompt))
    if answer.rule_offer and prompt.payee and not answer.rule:
        offer = f"Always do this for {rule_words(prompt.payee, prompt.client)}"
        elements.append(ButtonElement(
            text=_button_text(offer), action_id=ACTION_MAKE_RULE, value=str(prompt.id),
            accessibility_label=_button_text(offer),
            confirm=ConfirmObject(
                title="Make a rule?",
                text=fit(f"Later costs from {name(prompt.payee, 80)} for "
                         f"{name(prompt.client, 80)} will go straight to "
                         f"{name(answer.label, 80) or 'this matter'} without asking, while "
                         "it is open. /hardcost rules lists and removes rules.", CONFIRM_TEXT),
                confirm="Make the rule", deny="Cancel")))
    if elements:
        # the rule offer's block id is what the rule handlers find the prompt by
        block_id = f"{RULE_OFFER_PREFIX}{prompt.id}" if answer.rule_offer and prompt.payee \
            and not answer.rule else f"hc_answered:{prompt.id}"
        blocks.append(ActionsBlock(elements=elements, block_id=block_id).to_dict())
    return Message(text=_fallback(line), blocks=blocks)


def prompt_reminder(prompt: Prompt, *, now: datetime) -> Message:
    """A thread reply under an unanswered prompt."""
    what = f"{money(prompt.amount)} on {day(prompt.txn_date)} for {_client(prompt)}"
    if prompt.waiting_since is None:
        return Message(text=_fallback(f"Still waiting for a choice: {what}"),
                       blocks=[_section(f":bell: Still waiting for a choice: {what}.")])
    days = max((as_utc(now) - as_utc(prompt.waiting_since)).days, 0)
    age = plural(days, "day") if days else "less than a day"
    since_plain = day(as_utc(prompt.waiting_since).date())
    text = f"Still waiting for a choice since {since_plain} ({age}): {what}"
    block = (f":bell: Still waiting for a choice since {slack_date(prompt.waiting_since)} "
             f"({age}): {what}.")
    return Message(text=_fallback(text), blocks=[_section(block)])


def matter_options(prompt_id: int, choices: Sequence[Choice], query: str,
                   suggested: int | None = None) -> list[dict[str, Any]]:
    """Options for the external matter select: labels containing the query (case-insensitive;
    each word of a several-word query must appear), at most 100; the suggested matter (first
    among the choices) says so."""
    words = query.casefold().split()
    out: list[dict[str, Any]] = []
    for c in choices:
        label = c.label.casefold()
        if all(w in label for w in words):
            shown = f"{SUGGESTED}: {c.label}" if c.id == suggested else c.label
            out.append(option(shown, f"{prompt_id}:{c.id}").to_dict())
            if len(out) == STATIC_OPTIONS:
                break
    return out


def _printable(text: str) -> str:
    """Plain option text without control or format characters (bidi overrides, NULs)."""
    return "".join(ch if ch.isprintable() else " " for ch in text)


def matter_search_options(prompt_id: int,
                          found: Sequence[tuple[Choice, str]]) -> list[dict[str, Any]]:
    """Options for the search menu of an expense with no client: each matter (its number
    and description) with its client as the option's description, at most 100, in the order
    found. Option text is plain text: shown as written, never a mention or a link."""
    out = []
    for matter, client in found[:STATIC_OPTIONS]:
        description = clip(one_line(_printable(client)), OPTION_TEXT) or None
        out.append(option(_printable(matter.label), f"{prompt_id}:{matter.id}",
                          description).to_dict())
    return out

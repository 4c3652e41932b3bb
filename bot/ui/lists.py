"""Lists asked for with a command: ``/hardcost pending`` and ``/hardcost rules`` (pure
builders, see ``bot.ui.blocks``)."""

from __future__ import annotations

from collections.abc import Sequence

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ConfirmObject,
    MarkdownTextObject,
    SectionBlock,
)

from hardcost.bot.ui.blocks import (
    CONFIRM_TEXT,
    LIST_ITEMS,
    SECTION_TEXT,
    Block,
    _button_text,
    _context,
    _pack,
    _part,
    _section,
)
from hardcost.bot.ui.content import ACTION_REMOVE_RULE, ACTION_RULES_PAGE, Message, Prompt, RuleView
from hardcost.bot.ui.notices import notice
from hardcost.bot.ui.prompts import WAITING_FOR_PAYMENT, _prompt_blocks, rule_words
from hardcost.bot.ui.text import fit, mention, name, plural, slack_date


def rules_list(rules: Sequence[RuleView], *, page: int = 1) -> list[Message]:
    """``/hardcost rules``: each matter rule with who made it, when, how often it was used,
    and its Remove button; LIST_ITEMS rules a page, a More button for the next."""
    if not rules:
        return [notice("No matter rules yet. After choosing a matter for an expense, "
                       "“Always do this for <payee> → <client>” makes one.")]
    last = (len(rules) - 1) // LIST_ITEMS + 1
    page = min(max(page, 1), last)
    start = (page - 1) * LIST_ITEMS
    title = plural(len(rules), "matter rule") + (f", page {page} of {last}" if last > 1 else "")
    groups: list[list[Block]] = [[_section(f"*{title}*")]]
    for rule in rules[start:start + LIST_ITEMS]:
        what = rule_words(rule.payee, rule.client)
        used = (f"used {plural(rule.uses, 'time')}, last {slack_date(rule.last_used_at)}"
                if rule.uses and rule.last_used_at else "not used yet")
        text = (f"*{name(what, 300)}* → {name(rule.matter, 200)}"
                + (" _(this QuickBooks account only)_" if rule.account else "")
                + f"\nMade by {mention(rule.created_by)} on {slack_date(rule.created_at)}"
                  f" · {used}")
        groups.append([SectionBlock(
            text=MarkdownTextObject(text=fit(text, SECTION_TEXT)),
            accessory=ButtonElement(
                text="Remove", action_id=ACTION_REMOVE_RULE, value=str(rule.id), style="danger",
                accessibility_label=_button_text(f"Remove the rule {what}"),
                confirm=ConfirmObject(
                    title="Remove this rule?",
                    text=fit(f"Costs from {name(rule.payee, 80)} for {name(rule.client, 80)} "
                             "will be asked about again.", CONFIRM_TEXT),
                    confirm="Remove", deny="Cancel")),
        ).to_dict()])
    if page < last:
        groups.append([_context(f"…and {len(rules) - start - LIST_ITEMS:,} more."),
                       ActionsBlock(elements=[ButtonElement(
                           text="More", action_id=ACTION_RULES_PAGE, value=str(page + 1),
                           accessibility_label=f"Matter rules, page {page + 1}")]).to_dict()])
    pages = _pack(groups)
    return [Message(text=_part(title, i, len(pages)), blocks=blocks)
            for i, blocks in enumerate(pages, start=1)]


def pending_list(prompts: Sequence[Prompt]) -> list[Message]:
    """``/hardcost pending``: each waiting expense with its buttons, at most LIST_ITEMS."""
    if not prompts:
        return [notice("Nothing is waiting.")]
    unique = list({p.id: p for p in reversed(prompts)}.values())[::-1]
    unpaid = sum(1 for p in unique if p.reason == WAITING_FOR_PAYMENT)
    title = f"{plural(len(unique) - unpaid, 'expense')} waiting for a choice"
    if unpaid:
        title += f", {plural(unpaid, 'Bill')} waiting for payment"
    groups = [[_section(f"*{title}*")]] + [_prompt_blocks(p) for p in unique[:LIST_ITEMS]]
    if len(unique) > LIST_ITEMS:
        groups.append([_context(f"…and {len(unique) - LIST_ITEMS:,} more; they are listed "
                                "once these are answered.")])
    pages = _pack(groups)
    return [Message(text=_part(title, i, len(pages)), blocks=blocks)
            for i, blocks in enumerate(pages, start=1)]

"""Undo's answer, visible only to the clicker: what was deleted, and each matter rule that
still sends this kind of expense to the undone matter, with a button that removes it.

Pure builders, like the message modules of ``bot.ui``: plain data in, ``Message`` (or blocks) out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    MarkdownTextObject,
    SectionBlock,
)

from hardcost.bot.ui.content import ACTION_REMOVE_UNDONE_RULE, UNDONE_RULE_PREFIX, Message
from hardcost.bot.ui.text import clip, fit, mention, name, one_line

if TYPE_CHECKING:
    from hardcost.sync.undo import RuleInForce

RULES_SHOWN = 5  # one section and one button each; more is not a real case
SECTION_TEXT = 3000
CONFIRM_TEXT = 300
BUTTON_LABEL = 75


def undone(entry_id: int | None, rules: Sequence[RuleInForce]) -> Message:
    """"Undone: Clio entry #981 was deleted …", then the rules still in force."""
    first = (f"Undone: Clio entry #{entry_id} was deleted and the expense waits for a choice "
             "again.")
    blocks: list[dict[str, Any]] = [_section(first)]
    for rule in rules[:RULES_SHOWN]:
        blocks.append(_section(
            f"The matter rule *{name(rule.words, 300)}* is still in force: it sends these "
            f"costs to *{name(rule.matter, 200)}* without asking. Remove it if it was wrong "
            "too; otherwise it stays."))
        blocks.append(ActionsBlock(block_id=f"{UNDONE_RULE_PREFIX}{rule.id}", elements=[
            ButtonElement(
                text="Remove rule", action_id=ACTION_REMOVE_UNDONE_RULE, value=str(rule.id),
                style="danger",
                accessibility_label=clip(one_line(f"Remove the rule {rule.words}"),
                                         BUTTON_LABEL),
                confirm=ConfirmObject(
                    title="Remove this rule?",
                    text=fit(f"{name(rule.words, 120)} will be asked about again.",
                             CONFIRM_TEXT),
                    confirm="Remove", deny="Keep it")),
        ]).to_dict())
    text = first + (" A matter rule made from this choice is still in force." if rules else "")
    return Message(text=text, blocks=blocks)


def rule_removed(blocks: Sequence[Any], rule_id: int, by_user: str,
                 words: str) -> list[dict[str, Any]]:
    """The answer's blocks with that rule's button replaced by who removed it; empty when
    the blocks have no such button (not this answer's)."""
    block_id = f"{UNDONE_RULE_PREFIX}{rule_id}"
    if not any(isinstance(b, dict) and b.get("block_id") == block_id for b in blocks):
        return []
    done = ContextBlock(elements=[MarkdownTextObject(text=_removed(by_user, words))]).to_dict()
    return [done if b.get("block_id") == block_id else b for b in blocks if isinstance(b, dict)]


def rule_removed_alone(by_user: str, words: str) -> Message:
    """The removal, when the answer it came from is not at hand."""
    text = _removed(by_user, words)
    return Message(text=text, blocks=[_section(text)])


def _removed(by_user: str, words: str) -> str:
    return fit(f"✅ Rule {name(words, 300)} removed by {mention(by_user)}: these costs are "
               "asked about again.", 2000)


def _section(text: str) -> dict[str, Any]:
    return SectionBlock(text=MarkdownTextObject(text=fit(text, SECTION_TEXT))).to_dict()

"""Grouped prompts and the daily digest: one message for a client's backlog with one menu
for all, and what a choice for all did (pure builders, see ``bot.ui.blocks``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal

from slack_sdk.models.blocks import ActionsBlock, ButtonElement, ConfirmObject, StaticSelectElement

from hardcost.bot.ui.blocks import (
    CONFIRM_TEXT,
    MESSAGE_BLOCKS,
    STATIC_OPTIONS,
    Block,
    _context,
    _fallback,
    _pack,
    _part,
    _section,
)
from hardcost.bot.ui.content import (
    ACTION_GROUP_MATTER,
    ACTION_SHOW_PENDING,
    DigestClient,
    GroupAnswer,
    Message,
    Prompt,
    PromptGroupView,
)
from hardcost.bot.ui.prompts import NO_CLIENT
from hardcost.bot.ui.text import day, escape, fit, mention, mrkdwn, name, one_line, option, plural
from hardcost.sync.report import money

GROUP_LINES = 10  # members a grouped message lists; the rest are "and N more"
GROUP_BLOCK_PREFIX = "hc_group:"


def group_headline(client: str, count: int, total: Decimal) -> str:
    """"7 expenses for Acme wait for a matter, $1,204.50" (plain text; escape for mrkdwn)."""
    verb = "waits" if count == 1 else "wait"
    return f"{plural(count, 'expense')} for {one_line(client)} {verb} for a matter, {money(total)}"


def _member_line(p: Prompt) -> str:
    parts = [day(p.txn_date), money(p.amount)]
    if p.payee:
        parts.append(name(p.payee, 60))
    if p.memo and p.memo.strip():
        parts.append(f"_{name(p.memo, 80)}_")
    return "• " + " · ".join(parts)


def group_blocks(group: PromptGroupView, *, hint: str) -> list[Block]:
    """A group's headline, its members (at most GROUP_LINES) and one menu for all of them."""
    count = len(group.members)
    headline = escape(group_headline(group.client, count, group.total))
    lines = [_member_line(p) for p in group.members[:GROUP_LINES]]
    if count > GROUP_LINES:
        lines.append(f"…and {count - GROUP_LINES:,} more")
    confirm = (f"All {plural(count, 'expense')} for {name(group.client, 80)} "
               f"({money(group.total)}) go to the matter you chose, one Clio entry each.")
    menu = StaticSelectElement(
        action_id=ACTION_GROUP_MATTER, placeholder=f"Send all {count} to a matter",
        options=[option(c.label, f"{group.id}:{c.id}") for c in group.choices[:STATIC_OPTIONS]],
        confirm=ConfirmObject(title="Send them all?", text=fit(confirm, CONFIRM_TEXT),
                              confirm="Send all", deny="Cancel"))
    return [_section(f":card_index_dividers: *{headline}*\n" + "\n".join(lines)),
            ActionsBlock(elements=[menu],
                         block_id=f"{GROUP_BLOCK_PREFIX}{group.id}").to_dict(),
            _context(hint)]


def prompt_group(group: PromptGroupView) -> Message:
    """One message for a client's backlog: the expenses, one menu to send them all to a
    matter; each expense's own prompt follows in the thread, to answer one by one."""
    text = group_headline(group.client, len(group.members), group.total)
    return Message(text=_fallback(text), blocks=group_blocks(
        group, hint="Or answer them one by one in this thread."))


def group_answer_blocks(client: str, answer: GroupAnswer) -> list[Block]:
    """What a group choice did, in place of the group's menu."""
    who = mention(answer.by_user)
    line = (f":white_check_mark: Linked {plural(answer.linked, 'expense')} for "
            f"{name(client, 200)} ({money(answer.linked_total)}) to "
            f"{name(answer.label, 200)} by {who}")
    blocks = [_section(line)]
    notes = []
    if answer.others:
        notes.append(f"{plural(answer.others, 'expense was', 'expenses were')} answered one "
                     "by one first.")
    if answer.failed:
        failed = [f"{_member_line(p)}: {mrkdwn(one_line(why), 300)}"
                  for p, why in answer.failed[:GROUP_LINES]]
        if len(answer.failed) > GROUP_LINES:
            failed.append(f"…and {len(answer.failed) - GROUP_LINES:,} more")
        blocks.append(_section(":warning: *Not linked* — Clio did not take these; they still "
                               "wait, each with its own prompt:\n" + "\n".join(failed)))
    if notes:
        blocks.append(_context(" ".join(notes)))
    return blocks


def _digest_client(part: DigestClient) -> list[Block]:
    if part.group is not None and len(part.group.members) == len(part.prompts):
        return group_blocks(part.group, hint="Or answer them one by one: *Answer one by one* "
                                             "above, or `/hardcost pending`.")
    count = len(part.prompts)
    lines = [_member_line(p) for p in part.prompts[:GROUP_LINES]]
    if count > GROUP_LINES:
        lines.append(f"…and {count - GROUP_LINES:,} more")
    client = f"*{name(part.client, 200)}*" if part.client else NO_CLIENT  # no customer
    head = f"{client} — {plural(count, 'expense')}, {money(part.total)}"
    blocks = [_section(head + "\n" + "\n".join(lines))]
    if part.group is not None:
        blocks.extend(group_blocks(part.group, hint="The menu answers the expenses that "
                                                    "share these matters."))
    return blocks


def digest(clients: Sequence[DigestClient], *, on: date) -> list[Message]:
    """The daily digest (``prompts digest``): what waits, by client, with each client's group
    menu and a button listing every prompt to answer one by one. Long digests are paged; the
    pages after the first go in its thread."""
    count = sum(len(c.prompts) for c in clients)
    total = sum((c.total for c in clients), Decimal("0.00"))
    title = (f"Daily digest for {day(on)}: {plural(count, 'expense')} for "
             f"{plural(len(clients), 'client')} wait for a choice, {money(total)}")
    head = [_section(f":spiral_calendar_pad: *{escape(title)}*"),
            ActionsBlock(elements=[ButtonElement(text="Answer one by one",
                                                 action_id=ACTION_SHOW_PENDING,
                                                 value="digest")]).to_dict()]
    pages = _pack([head, *(_digest_client(c) for c in clients)])
    return [Message(text=_part(title, i, len(pages)), blocks=blocks)
            for i, blocks in enumerate(pages, start=1)]


def replace_group_blocks(blocks: list[Block], group_id: int, client: str,
                         answer: GroupAnswer) -> list[Block]:
    """A message listing several groups (the digest) with one group's menu replaced by what
    its choice did; the other groups keep their menus."""
    out: list[Block] = []
    for block in blocks:
        if block.get("block_id") == f"{GROUP_BLOCK_PREFIX}{group_id}":
            out.extend(group_answer_blocks(client, answer))
        else:
            out.append(block)
    return out[:MESSAGE_BLOCKS + 5]


def prompt_group_done(client: str) -> Message:
    """A group whose expenses were all answered one by one: its menu goes."""
    text = f"Every expense of this group for {one_line(client)} was answered one by one."
    return Message(text=_fallback(text), blocks=[_section(f":white_check_mark: {escape(text)}")])


def prompt_group_answered(group: PromptGroupView, answer: GroupAnswer) -> Message:
    """The group message updated in place after a choice for all."""
    text = (f"Linked {plural(answer.linked, 'expense')} for {one_line(group.client)} to "
            f"{one_line(answer.label)}")
    if answer.failed:
        text += f"; {len(answer.failed)} not linked"
    return Message(text=_fallback(text), blocks=group_answer_blocks(group.client, answer))

"""What every Slack message builder of ``bot.ui`` shares: Slack's limits and the margins kept
under them, and the small block builders (section, fields, context, header, buttons, paging).

The message builders are pure: plain data in, ``Message`` out. No HTTP, no database, no clock
(``now`` is passed in). Blocks are built with ``slack_sdk.models.blocks`` and returned as dicts
(``to_dict()`` checks Slack's limits). User data (names, memos, messages) is escaped and clipped
before it reaches mrkdwn; every message carries a ``text`` notification fallback.

The messages, by what a person sees: ``bot.ui.runs`` (run summaries, details, progress),
``bot.ui.prompts`` (matter and contact questions), ``bot.ui.groups`` (grouped prompts, the
daily digest), ``bot.ui.failures`` (failure alerts), ``bot.ui.lists`` (``/hardcost pending``,
``rules``), ``bot.ui.status`` (status, help, usage) and ``bot.ui.notices`` (notices, connect and
reconnect). The settings modal lives in ``bot.ui.modals``, App Home in ``bot.ui.home``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from slack_sdk.models.blocks import (
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    LinkButtonElement,
    MarkdownTextObject,
    SectionBlock,
)

from hardcost.bot.ui.content import ACTION_OPEN_QBO
from hardcost.bot.ui.text import clip, fit, is_http_url, one_line

Block = dict[str, Any]

# Slack's limits (Slack's documented Block Kit and message limits) and the margins kept under them.
SECTION_TEXT = 3000
FIELD_TEXT = 2000
CONTEXT_TEXT = 2000
HEADER_TEXT = 150
BUTTON_TEXT = 75
CONFIRM_TEXT = 300
STATIC_OPTIONS = 100
FALLBACK_TEXT = 3000
MESSAGE_BLOCKS = 45  # under the 50 a message may hold
MESSAGE_CHARS = 12_000  # visible block text per message, under msg_blocks_too_long (~13k)
LIST_ITEMS = 50  # prompts or failures listed by /hardcost pending|failures
QBO_LINK = "Open in QuickBooks"


def _section(text: str, *, fields: Sequence[str] = (), block_id: str | None = None) -> Block:
    return SectionBlock(
        text=MarkdownTextObject(text=fit(text, SECTION_TEXT)) if text else None,
        fields=[MarkdownTextObject(text=fit(f, FIELD_TEXT)) for f in fields] or None,
        block_id=block_id,
    ).to_dict()


def _fields(fields: Sequence[str]) -> Block:
    return SectionBlock(fields=[MarkdownTextObject(text=fit(f, FIELD_TEXT))
                                for f in fields[:10]]).to_dict()


def _context(*parts: str) -> Block:
    return ContextBlock(elements=[MarkdownTextObject(text=fit(p, CONTEXT_TEXT))
                                  for p in parts if p][:10]).to_dict()


def _header(text: str) -> Block:
    return HeaderBlock(text=clip(one_line(text), HEADER_TEXT)).to_dict()


def _divider() -> Block:
    return DividerBlock().to_dict()


def _fallback(text: str) -> str:
    return fit(text, FALLBACK_TEXT) or "hardcost"


def _button_text(label: str) -> str:
    return clip(one_line(label), BUTTON_TEXT) or "(no name)"


def _qbo_button(url: str | None) -> LinkButtonElement | None:
    if not is_http_url(url):
        return None
    return LinkButtonElement(text=QBO_LINK, url=str(url), action_id=ACTION_OPEN_QBO)


def _block_chars(block: Block) -> int:
    """The visible text of a block, for the per-message budget."""
    size = 0
    text = block.get("text")
    if isinstance(text, dict):
        size += len(text.get("text", ""))
    for f in block.get("fields") or ():
        size += len(f.get("text", ""))
    if block.get("type") == "context":
        size += sum(len(e.get("text", "")) for e in block.get("elements", ()))
    return size


def _pack(groups: Iterable[list[Block]], *, limit_blocks: int = MESSAGE_BLOCKS,
          limit_chars: int = MESSAGE_CHARS, separator: bool = True) -> list[list[Block]]:
    """Groups of blocks (one prompt, one failure...) packed into messages; a group is never
    split. Dividers separate groups within a message."""
    pages: list[list[Block]] = []
    page: list[Block] = []
    chars = 0
    for group in groups:
        size = sum(_block_chars(b) for b in group)
        extra = 1 if (page and separator) else 0
        if page and (len(page) + extra + len(group) > limit_blocks or chars + size > limit_chars):
            pages.append(page)
            page, chars, extra = [], 0, 0
        if extra:
            page.append(_divider())
        page.extend(group)
        chars += size
    if page:
        pages.append(page)
    return pages


def _part(text: str, index: int, count: int) -> str:
    return text if count == 1 else f"{text} (part {index} of {count})"


def _confirmed_button(label: str, action_id: str, value: str, *, title: str, text: str,
                      confirm: str, deny: str = "Cancel") -> ButtonElement:
    """A button that asks "are you sure?" first (``text`` is mrkdwn, already escaped)."""
    return ButtonElement(
        text=_button_text(label), action_id=action_id, value=value,
        confirm=ConfirmObject(title=title, text=fit(text, CONFIRM_TEXT), confirm=confirm,
                              deny=deny))

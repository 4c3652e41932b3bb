"""The audit trail in Slack: ``/hardcost history`` and App Home's latest changes.

Pure builders like the message modules of ``bot.ui`` (``bot.ui.blocks``): plain ``TrailEntry``
rows in, blocks out. One entry is one line; everything that came from outside (client names,
matters, details, setting values) is escaped, and people are shown as mentions, system actors as
words ("schedule", "webhook").
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ContextBlock,
    MarkdownTextObject,
    SectionBlock,
)

from hardcost.bot.ui.content import (
    ACTION_HISTORY_OLDER,
    HistoryQuery,
    Message,
    TrailEntry,
)
from hardcost.bot.ui.text import (
    channel,
    escape,
    fit,
    is_http_url,
    link,
    mention,
    name,
    plural,
    slack_time,
)
from hardcost.sync.audit import DESCRIPTIONS, Action, is_person
from hardcost.sync.report import money

Block = dict[str, Any]

LINE_CHARS = 320  # one entry's line, at most
RECEIPT_LINE_CHARS = 520  # ... a receipt's, with its document's name and link
SECTION_CHARS = 2900  # lines per section block, under Slack's 3000
MESSAGE_CHARS = 11_000  # every line of one history message, under msg_blocks_too_long (~13k)
VALUE_CHARS = 80  # one setting value as shown
DETAIL_CHARS = 160
HOME_ENTRIES = 10


def _section(text: str) -> Block:
    return SectionBlock(text=MarkdownTextObject(text=fit(text, 3000))).to_dict()


def _context(text: str) -> Block:
    return ContextBlock(elements=[MarkdownTextObject(text=fit(text, 2000))]).to_dict()


def actor(who: str) -> str:
    """A person as a mention, anything else (the run's trigger) as an escaped word."""
    return mention(who) if is_person(who) else escape(who)


def _value(key: str, value: Any) -> str:
    """One setting value as the trail keeps it (``sync.firm_settings.readable``), shown."""
    if value is None or value == [] or value == "":
        return "_none_"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        if key == "approvers":
            shown = [mention(str(v)) for v in value[:10]]
            more = f" +{len(value) - 10}" if len(value) > 10 else ""
            return " ".join(shown) + more
        return ", ".join(_value(key, v) for v in value[:5]) + (
            f" +{len(value) - 5}" if len(value) > 5 else "")
    if isinstance(value, dict):
        if "account" in value:  # a per-account setting (``set category|utbms … for <account>``)
            return (f"{_value(key, value.get('value'))} for "
                    f"{name(str(value.get('account')), VALUE_CHARS)}")
        ident, label = value.get("id"), value.get("name")
        if key == "channel" and isinstance(ident, str):
            return channel(ident) or "_none_"
        if label:
            return name(str(label), VALUE_CHARS)
        return f"id {name(str(ident), 40)}"
    return name(str(value), VALUE_CHARS)


def _change(entry: TrailEntry) -> str | None:
    """``key: before → after`` for a setting change."""
    if entry.after is None and entry.before is None:
        return None
    keys = list((entry.after or entry.before or {}).keys())[:3]
    parts = [f"{name(k, 30)}: {_value(k, (entry.before or {}).get(k))} → "
             f"{_value(k, (entry.after or {}).get(k))}" for k in keys]
    return "; ".join(parts) or None


_ENTRY_CHANGES = {Action.UPDATED.value, Action.MOVED.value, Action.NOT_OVERWRITTEN.value,
                  Action.CHANGED_AFTER_BILLING.value}


def _entry_change(entry: TrailEntry) -> str | None:
    """``$1,200.00 → $120.00, 2026-02-03 → 2026-02-05`` for an edit followed (or not) into
    Clio: only the figures that differ."""
    before, after = entry.before or {}, entry.after or {}
    parts = []
    for key in ("price", "date", "matter"):
        old, new = before.get(key), after.get(key)
        if old is None or new is None or old == new:
            continue
        if key == "price":
            with contextlib.suppress(ArithmeticError):
                old, new = money(Decimal(str(old))), money(Decimal(str(new)))
        parts.append(f"{name(str(old), 60)} → {name(str(new), 60)}")
    return ", ".join(parts) or None


RECEIPT_FILED = Action.RECEIPT_FILED.value
DOCUMENT_CHARS = 120  # a Clio document's name as shown


def _receipt(entry: TrailEntry) -> str | None:
    """The Clio document a receipt was filed as: its name, number and a link to the matter
    whose documents hold it (escaped: the name is made of QuickBooks' payee and file name)."""
    after = entry.after or {}
    nested = after.get("document")
    document: dict[str, Any] = nested if isinstance(nested, dict) else after
    ident, label = document.get("id", document.get("document_id")), document.get("name")
    parts = []
    if label:
        parts.append(f"“{name(str(label), DOCUMENT_CHARS)}”")
    if isinstance(ident, int) and not isinstance(ident, bool):
        parts.append(f"Clio document #{ident}")
    if not parts:
        return None
    shown = " · ".join(parts)
    if is_http_url(entry.url):
        shown += f" · {link(entry.url, CLIO_MATTER_LINK)}"
    return shown


CLIO_MATTER_LINK = "its matter in Clio"


def trail_line(entry: TrailEntry) -> str:
    """One entry as one mrkdwn line: when, what, who, then what it was about."""
    try:
        what = DESCRIPTIONS[Action(entry.action)]
    except ValueError:
        what = entry.action
    line = f"{slack_time(entry.at)} *{escape(what)}* by {actor(entry.actor)}"
    about: list[str] = []
    if entry.client:
        about.append(name(entry.client, 80))
    if entry.amount is not None:
        about.append(money(entry.amount))
    if entry.matter:
        about.append("→ " + name(entry.matter, 80))
    ids = []
    if entry.purchase_id:
        ids.append(f"purchase {name(entry.purchase_id, 40)}")
    if entry.clio_entry_id:
        ids.append(f"Clio entry #{entry.clio_entry_id}")
    if ids:
        about.append(f"({', '.join(ids)})")
    if entry.action == Action.SETTING:
        change = _change(entry)
    elif entry.action == RECEIPT_FILED:
        change = _receipt(entry)
    elif entry.action in _ENTRY_CHANGES:
        change = _entry_change(entry)
        if change and entry.detail:
            change += f" _{name(entry.detail, DETAIL_CHARS)}_"
    else:
        change = None
    if change:
        about.append(change)
    elif entry.detail:
        about.append(f"_{name(entry.detail, DETAIL_CHARS)}_")
    if about:
        line += " — " + " ".join(about)
    return fit(line, RECEIPT_LINE_CHARS if entry.action == RECEIPT_FILED else LINE_CHARS)


def _sections(lines: Sequence[str]) -> list[Block]:
    blocks: list[Block] = []
    chunk: list[str] = []
    size = 0
    for line in lines:
        if chunk and size + len(line) + 1 > SECTION_CHARS:
            blocks.append(_section("\n".join(chunk)))
            chunk, size = [], 0
        chunk.append(line)
        size += len(line) + 1
    if chunk:
        blocks.append(_section("\n".join(chunk)))
    return blocks


def _subject(query: HistoryQuery) -> str:
    if query.purchase_id is not None:
        return f" for purchase {name(query.purchase_id, 40)}"
    if query.client is not None:
        return f" for clients matching “{name(query.client, 100)}”"
    return ""


def history(entries: Sequence[TrailEntry], query: HistoryQuery, *, more: bool) -> Message:
    """``/hardcost history``: newest first, one line each, with an Older button when there is
    more (entries that would make the message too long are left for it too)."""
    subject = _subject(query)
    paging = query.before_id is not None
    if not entries:
        text = (f"Nothing older in the audit trail{subject}." if paging
                else f"The audit trail has nothing{subject} yet.")
        return Message(text=text, blocks=[_section(text)])
    lines: list[str] = []
    total = 0
    for entry in entries:
        line = trail_line(entry)
        if lines and total + len(line) > MESSAGE_CHARS:
            more = True
            break
        lines.append(line)
        total += len(line) + 1
    shown = entries[:len(lines)]
    count = plural(len(shown), "older entry" if paging else "entry",
                   "older entries" if paging else "entries")
    blocks = [_section(f"*Audit trail{subject}* — {count}, newest first"), *_sections(lines)]
    if more:
        page = HistoryQuery(query.limit, query.purchase_id, query.client, shown[-1].id)
        blocks.append(ActionsBlock(elements=[ButtonElement(
            text="Older", action_id=ACTION_HISTORY_OLDER,
            value=page.button_value())]).to_dict())
    else:
        blocks.append(_context(f"That is all the trail holds{subject}."))
    return Message(text=fit(f"Audit trail{subject}: {count}", 3000), blocks=blocks)


def home_trail(entries: Sequence[TrailEntry]) -> list[Block]:
    """App Home's latest changes: at most ``HOME_ENTRIES`` lines in one section."""
    if not entries:
        return [_section("*Latest changes*\nNothing recorded yet: imports, choices and "
                         "setting changes will be listed here.")]
    lines = [trail_line(e) for e in entries[:HOME_ENTRIES]]
    return [_section("*Latest changes*"), *_sections(lines),
            _context("`/hardcost history` shows more; `/hardcost export` sends the trail as "
                     "a CSV file.")]

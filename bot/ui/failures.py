"""Failure alerts: what failed and why, with Retry; the alert after Retry; ``/hardcost
failures`` (pure builders, see ``bot.ui.blocks``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from slack_sdk.models.blocks import ActionsBlock, ButtonElement

from hardcost.bot.ui.blocks import (
    LIST_ITEMS,
    QBO_LINK,
    Block,
    _context,
    _fallback,
    _pack,
    _part,
    _qbo_button,
    _section,
)
from hardcost.bot.ui.content import ACTION_RETRY_FAILURE, FailureNotice, Message
from hardcost.bot.ui.notices import notice
from hardcost.bot.ui.text import (
    escape,
    is_http_url,
    link,
    mention,
    mrkdwn,
    one_line,
    plural,
    slack_date,
)

_KIND_WORDS = {
    "config": "setting or connection",
    "transient": "temporary service trouble",
    "data": "QuickBooks transaction needs a fix",
}
_KIND_HINTS = {
    "config": "Someone with access must fix this setting or connection, then press Retry.",
    "transient": "This looks temporary: hardcost will retry by itself. Retry tries now.",
    "data": "Fix it in QuickBooks, then press Retry.",
}


def _kind_words(failure: FailureNotice) -> str:
    if failure.kind == "data" and failure.refused_by_clio:
        return "Clio refused the entry"
    return _KIND_WORDS.get(failure.kind, failure.kind)


def _kind_hint(failure: FailureNotice) -> str:
    if failure.kind == "data" and failure.refused_by_clio:
        return ("Fix what Clio names (the matter, the category or the user, in Clio or with "
                "/hardcost set), then press Retry.")
    return _KIND_HINTS.get(failure.kind, "Press Retry once it is fixed.")


def _failure_blocks(failure: FailureNotice, *, actions: bool) -> list[Block]:
    kind = escape(_kind_words(failure))
    blocks = [_section(f":warning: *Sync failure* — {kind}\n{mrkdwn(failure.message, 2500)}")]
    seen = []
    if failure.occurrences > 1:
        seen.append(f"Seen {failure.occurrences:,} times"
                    + (f" since {slack_date(failure.first_seen)}" if failure.first_seen else ""))
    elif failure.first_seen:
        seen.append(f"First seen {slack_date(failure.first_seen)}")
    if actions:
        blocks.append(_context(" · ".join(
            [_kind_hint(failure), *seen])))
        elements: list[Any] = []
        qbo = _qbo_button(failure.qbo_url)
        if qbo:
            elements.append(qbo)
        elements.append(ButtonElement(text="Retry", action_id=ACTION_RETRY_FAILURE,
                                      value=str(failure.id), style="primary"))
        blocks.append(ActionsBlock(elements=elements).to_dict())
    elif seen:
        blocks.append(_context(" · ".join(seen)))
    return blocks


def failure_alert(failure: FailureNotice) -> Message:
    """What failed and why, a hint by kind, "Open in QuickBooks" (when linked) and Retry."""
    return Message(text=_fallback(f"Sync failure: {escape(one_line(failure.message))}"),
                   blocks=_failure_blocks(failure, actions=True))


_RESOLVED = ("imported", "resolved", "fixed", "done")


def failure_retried(failure: FailureNotice, *, by_user: str, outcome: str) -> Message:
    """The alert updated in place after Retry. A success ("imported") drops the buttons; a
    failure keeps them so someone can try again."""
    line = f"Retried by {mention(by_user)}: {mrkdwn(one_line(outcome), 1000)}"
    if outcome.strip().lower().startswith(_RESOLVED):
        blocks = _failure_blocks(failure, actions=False)
        blocks[0] = _section(f":white_check_mark: *Fixed* — {mrkdwn(failure.message, 2500)}")
        qbo = link(failure.qbo_url, QBO_LINK) if is_http_url(failure.qbo_url) else ""
        blocks.append(_context(" · ".join(p for p in (line, qbo) if p)))
    else:
        blocks = _failure_blocks(failure, actions=True)
        blocks.insert(1, _context(line))
    return Message(text=_fallback(line), blocks=blocks)


def failures_list(failures: Sequence[FailureNotice]) -> list[Message]:
    """``/hardcost failures``: each open failure with its buttons, at most LIST_ITEMS."""
    if not failures:
        return [notice("No open failures.")]
    unique = list({f.id: f for f in reversed(failures)}.values())[::-1]
    head = [_section(f"*{plural(len(unique), 'open failure')}*")]
    groups = [head] + [_failure_blocks(f, actions=True) for f in unique[:LIST_ITEMS]]
    if len(unique) > LIST_ITEMS:
        groups.append([_context(f"…and {len(unique) - LIST_ITEMS:,} more; they are listed "
                                "once these are fixed.")])
    pages = _pack(groups)
    return [Message(text=_part(f"{plural(len(unique), 'open failure')}", i, len(pages)),
                    blocks=blocks) for i, blocks in enumerate(pages, start=1)]

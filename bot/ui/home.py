"""App Home: the same status as ``/hardcost status``, with buttons for settings, run, pending,
and the audit trail's latest changes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from slack_sdk.models.blocks import ActionsBlock, ButtonElement, ContextBlock, MarkdownTextObject
from slack_sdk.models.views import View

from hardcost.bot.ui.content import (
    ACTION_OPEN_SETTINGS,
    ACTION_RUN_NOW,
    ACTION_SHOW_PENDING,
    StatusReport,
    TrailEntry,
)
from hardcost.bot.ui.status import status_blocks
from hardcost.bot.ui.trail import home_trail


def home_view(status: StatusReport, trail: Sequence[TrailEntry] = ()) -> dict[str, Any]:
    """The view for ``views.publish`` (``type: home``); ``trail``: the latest audit entries,
    newest first (ten are shown)."""
    blocks: list[Any] = list(status_blocks(status).blocks)
    blocks.append(ActionsBlock(elements=[
        ButtonElement(text="Settings", action_id=ACTION_OPEN_SETTINGS),
        ButtonElement(text="Run now", action_id=ACTION_RUN_NOW, style="primary"),
        ButtonElement(text=f"Waiting expenses ({status.waiting:,})",
                      action_id=ACTION_SHOW_PENDING),
    ]))
    blocks.extend(home_trail(trail))
    blocks.append(ContextBlock(elements=[MarkdownTextObject(
        text="`/hardcost help` in any channel lists every command.")]))
    return View(type="home", blocks=blocks).to_dict()

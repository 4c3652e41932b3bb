"""The Slack surfaces several listeners open: App Home and the settings modal.

Slack's trigger id dies 3 seconds after the click, and filling the modal's menus takes calls to
QuickBooks and Clio: a small "Loading…" modal opens at once and is replaced when ready.
"""

from __future__ import annotations

import logging

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from hardcost.bot import service
from hardcost.bot.context import BotContext
from hardcost.bot.ui.content import SETTINGS_CALLBACK
from hardcost.bot.ui.home import home_view
from hardcost.bot.ui.modals import settings_modal
from hardcost.bot.ui.trail import HOME_ENTRIES

log = logging.getLogger(__name__)

LOADING = {"type": "modal", "callback_id": SETTINGS_CALLBACK,
           "title": {"type": "plain_text", "text": "hardcost settings"},
           "blocks": [{"type": "section", "text": {
               "type": "mrkdwn", "text": "Reading your QuickBooks accounts and Clio lists…"}}]}


def open_settings_modal(ctx: BotContext, client: WebClient, firm_id: int,
                        trigger_id: str) -> None:
    opened = client.views_open(trigger_id=trigger_id, view=LOADING)
    view_id = opened["view"]["id"]
    modal = settings_modal(service.settings_form(ctx, firm_id))
    try:
        client.views_update(view_id=view_id, view=modal)
    except SlackApiError as exc:  # closed meanwhile: nothing to do
        log.info("settings modal %s not updated: %s", view_id, exc.response.get("error"))


def publish_home(ctx: BotContext, client: WebClient, firm_id: int, user_id: str) -> None:
    client.views_publish(user_id=user_id,
                         view=home_view(service.status_report(ctx, client, firm_id),
                                        service.latest_trail(ctx, firm_id, HOME_ENTRIES)))

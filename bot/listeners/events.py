"""Events: App Home."""

from __future__ import annotations

from typing import Any

from slack_bolt import App
from slack_sdk import WebClient

from hardcost.bot.context import BotContext
from hardcost.bot.surfaces import publish_home
from hardcost.bot.ui.notices import notice


def register(app: App, ctx: BotContext) -> None:
    def on_home_opened(event: dict[str, Any], body: dict[str, Any], client: WebClient) -> None:
        if event.get("tab") not in (None, "home"):
            return
        user_id = str(event.get("user"))
        firm_id = ctx.firm_id_for_team(body.get("team_id"))
        if firm_id is None:
            message = notice("This workspace is not set up with hardcost yet.")
            client.views_publish(user_id=user_id,
                                 view={"type": "home", "blocks": message.blocks})
            return
        publish_home(ctx, client, firm_id, user_id)

    def just_ack(ack: Any) -> None:
        ack()

    app.event("app_home_opened")(ack=just_ack, lazy=[on_home_opened])

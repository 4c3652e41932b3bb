"""The settings modal's submission: every field validated, then all saved or none.

The modal itself is opened by ``bot.surfaces.open_settings_modal`` (from ``/hardcost settings``
or App Home)."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient

from hardcost.bot import service
from hardcost.bot.context import BotContext
from hardcost.bot.ui.content import SETTINGS_CALLBACK
from hardcost.bot.ui.modals import settings_values
from hardcost.sync.firm_settings import SettingError, apply_setting
from hardcost.sync.http import ApiError
from hardcost.sync.store import FirmSettings

log = logging.getLogger(__name__)

def save_settings(ctx: BotContext, client: WebClient, firm_id: int,
                  values: dict[str, Any]) -> dict[str, str]:
    """Validate every field and save them all, or none; returns errors by block id."""
    errors: dict[str, str] = {}
    lookups = service.lookups(ctx.importer_for(firm_id))
    with ctx.sessions() as session:
        settings = session.get(FirmSettings, firm_id)
        assert settings is not None

        def attempt(block_id: str, key: str, raw: object) -> None:
            if raw in (None, ""):
                return
            try:
                apply_setting(session, firm_id, key, str(raw), lookups)
            except SettingError as exc:
                errors[block_id] = exc.problem[:150]
            except ApiError as exc:
                errors[block_id] = exc.message[:150]

        channel = values.get("channel")
        if channel:
            try:
                settings.slack_channel_id = service.resolve_channel(client, f"<#{channel}>")[0]
            except SettingError as exc:
                errors["channel"] = exc.problem[:150]
        attempt("start_date", "start-date", values.get("start_date"))
        accounts = [str(a) for a in values.get("accounts") or []]
        if not accounts:
            errors["accounts"] = "Choose at least one import account."
        else:
            chosen: list[str] = []
            for account in accounts:
                attempt("accounts", "account", f"+{account}")
                chosen = list(settings.import_account_ids or [])
            if "accounts" not in errors:
                known = {str(a) for a in accounts}
                settings.import_account_ids = [i for i in chosen if i in known] or chosen
        attempt("category", "category", values.get("category"))
        attempt("user", "user", values.get("user"))
        attempt("schedule", "schedule", values.get("schedule"))
        settings.split_lines = bool(values.get("split_lines"))
        settings.item_lines = bool(values.get("item_lines"))
        attempt("deletions", "deletions", values.get("deletions"))
        settings.approvers = sorted({str(u) for u in values.get("approvers") or []})
        if errors:
            session.rollback()
        else:
            session.commit()
    return errors


def register(app: App, ctx: BotContext) -> None:
    def on_submit(ack: Ack, body: dict[str, Any], view: dict[str, Any],
                  client: WebClient) -> None:
        firm_id = ctx.firm_id_for_interaction(body)
        user_id = str((body.get("user") or {}).get("id"))
        if firm_id is None or not service.is_settings_admin(client, ctx.settings(firm_id),
                                                            user_id):
            ack(response_action="errors", errors={
                "schedule": "Only workspace admins and hardcost's approvers can change "
                            "settings."})
            return
        errors = save_settings(ctx, client, firm_id, settings_values(view.get("state") or {}))
        if errors:
            ack(response_action="errors", errors=errors)
        else:
            ack()
            log.info("firm %s: settings saved by %s", firm_id, user_id)

    app.view(SETTINGS_CALLBACK)(on_submit)

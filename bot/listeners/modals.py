"""The settings modal's submission: every field validated, then all saved or none.

The modal itself is opened by ``bot.surfaces.open_settings_modal`` (from ``/hardcost settings``
or App Home)."""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from datetime import date
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient

from hardcost.bot import service
from hardcost.bot.context import BotContext
from hardcost.bot.ui.content import SETTINGS_CALLBACK, Choice, SettingsForm
from hardcost.bot.ui.modals import saved_modal, saving_modal, settings_modal, settings_values
from hardcost.sync.firm_settings import (
    SettingError,
    apply_setting,
    approver_ids,
    check_value,
    record_setting_changes,
    stored_values,
)
from hardcost.sync.http import ApiError
from hardcost.sync.store import FirmSettings

log = logging.getLogger(__name__)
_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

def save_settings(ctx: BotContext, client: WebClient, firm_id: int,
                  values: dict[str, Any], user_id: str) -> dict[str, str]:
    """Validate every field and save them all, or none; returns errors by block id. What
    changed goes into the audit trail (one row per setting, by ``user_id``) in the same
    transaction."""
    errors: dict[str, str] = {}
    said: dict[str, str] = {}  # what each setting's change says, for its audit row
    names: dict[str, str] = {}
    lookups = service.lookups(ctx.importer_for(firm_id))
    with ctx.sessions() as session:
        settings = session.get(FirmSettings, firm_id)
        assert settings is not None
        before = stored_values(settings)

        def attempt(block_id: str, key: str, raw: object) -> None:
            if raw in (None, ""):
                return
            try:
                said[key] = apply_setting(session, firm_id, key, str(raw), lookups)
            except SettingError as exc:
                errors[block_id] = exc.problem[:150]
            except ApiError as exc:
                errors[block_id] = exc.message[:150]

        channel = values.get("channel")
        if channel:
            try:
                channel_id, name = service.resolve_channel(client, f"<#{channel}>")
                settings.slack_channel_id = channel_id
                settings.report_due_at = None  # the report job looks at its next tick
                names[channel_id] = name
                said["channel"] = f"hardcost will post in #{name}."
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
        attempt("options", "receipts", "on" if values.get("receipts") else "off")
        attempt("deletions", "deletions", values.get("deletions"))
        attempt("bills", "bills", values.get("bills"))
        attempt("no_customer", "no-customer", values.get("no_customer"))  # absent: kept
        try:
            settings.approvers = approver_ids([str(u) for u in values.get("approvers") or []])
        except SettingError as exc:
            errors["approvers"] = exc.problem[:150]
        if errors:
            session.rollback()
        else:
            said.pop("account", None)  # said of one account of the list; the row shows all
            record_setting_changes(session, firm_id, before, settings, user_id, lookups,
                                   names=names, details=said, at=ctx.clock(),
                                   otherwise="Changed in the settings form.")
            session.commit()
    return errors


LOCAL_CHECKS = {"start_date": "start-date", "schedule": "schedule", "deletions": "deletions",
                "bills": "bills", "no_customer": "no-customer"}


def local_errors(values: dict[str, Any]) -> dict[str, str]:
    """What is wrong with the submitted values without asking any service: answered in the
    ack, as Slack's own field errors."""
    errors: dict[str, str] = {}
    for block_id, key in LOCAL_CHECKS.items():
        raw = values.get(block_id)
        if raw in (None, ""):
            continue
        try:
            check_value(key, str(raw))
        except SettingError as exc:
            errors[block_id] = exc.problem[:150]
    if not values.get("accounts"):
        errors["accounts"] = "Choose at least one import account."
    try:
        approver_ids([str(u) for u in values.get("approvers") or []])
    except SettingError as exc:
        errors["approvers"] = exc.problem[:150]
    return errors


def register(app: App, ctx: BotContext) -> None:
    def ack_submit(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        """Within Slack's 3 s: only the database and local checks; the rest after the ack."""
        if ctx.firm_id_for_interaction(body) is None:
            ack(response_action="errors", errors={
                "schedule": "This workspace is not set up with hardcost."})
            return
        errors = local_errors(settings_values(view.get("state") or {}))
        if errors:
            ack(response_action="errors", errors=errors)
        else:
            ack(response_action="update", view=saving_modal())

    def save_submitted(body: dict[str, Any], view: dict[str, Any],
                       client: WebClient) -> None:
        firm_id = ctx.firm_id_for_interaction(body)
        user_id = str((body.get("user") or {}).get("id"))
        view_id = str(view.get("id") or "")
        if firm_id is None:
            return
        values = settings_values(view.get("state") or {})
        if local_errors(values):
            return  # answered in the ack
        if not service.is_settings_admin(client, ctx.settings(firm_id), user_id):
            client.views_update(view_id=view_id, view=saved_modal(
                "Nothing was saved: only workspace admins and hardcost's approvers can change "
                "settings."))
            return
        errors = save_settings(ctx, client, firm_id, values, user_id)
        if errors:
            form = service.settings_form(ctx, firm_id)
            client.views_update(view_id=view_id, view=settings_modal(
                _as_submitted(form, values), problems=errors))
            return
        log.info("firm %s: settings saved by %s", firm_id, user_id)
        client.views_update(view_id=view_id, view=saved_modal(
            "Settings saved. They apply from the next run."))

    app.view(SETTINGS_CALLBACK)(ack=ack_submit, lazy=[save_submitted])


def _as_submitted(form: SettingsForm, values: dict[str, Any]) -> SettingsForm:
    """The form again with what the person chose, so a refused save loses nothing they
    entered (choices Slack no longer offers fall back to the stored ones)."""
    def pick(options: tuple[Choice, ...], raw: object) -> Choice | None:
        return next((c for c in options if str(c.id) == str(raw)), None)

    accounts = tuple(c for c in form.account_options
                     if str(c.id) in {str(a) for a in values.get("accounts") or []})
    schedule = str(values.get("schedule") or "")
    return replace(
        form,
        channel_id=str(values["channel"]) if values.get("channel") else form.channel_id,
        start_date=_day(values.get("start_date")) or form.start_date,
        import_accounts=accounts or form.import_accounts,
        category=pick(form.category_options, values.get("category")) or form.category,
        user=pick(form.user_options, values.get("user")) or form.user,
        schedule_minutes=int(schedule) if schedule.isascii() and schedule.isdigit()
        and len(schedule) <= 5 else form.schedule_minutes,
        split_lines=bool(values.get("split_lines")),
        item_lines=bool(values.get("item_lines")),
        receipts=bool(values.get("receipts")),
        deletions=str(values.get("deletions") or form.deletions),
        bills=str(values.get("bills") or form.bills),
        no_customer=str(values.get("no_customer") or form.no_customer),
        approvers=tuple(str(u) for u in values.get("approvers") or ()))


def _day(raw: object) -> date | None:
    if not isinstance(raw, str) or not _ISO_DAY.fullmatch(raw):
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        return None

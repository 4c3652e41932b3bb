"""The settings modal and the reading of its submission. Pure: plain data in, dicts out.

Block ids (and each element's action_id) are ``channel``, ``start_date``, ``accounts``,
``category``, ``user``, ``schedule``, ``options``, ``deletions``, ``bills``, ``approvers``; the
listener's validation errors refer to them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from slack_sdk.models.blocks import (
    CheckboxesElement,
    ContextBlock,
    ConversationFilter,
    ConversationSelectElement,
    DatePickerElement,
    InputBlock,
    MarkdownTextObject,
    Option,
    PlainTextInputElement,
    RadioButtonsElement,
    SectionBlock,
    StaticMultiSelectElement,
    StaticSelectElement,
    UserMultiSelectElement,
)
from slack_sdk.models.views import View

from hardcost.bot.ui.content import SETTINGS_CALLBACK, Choice, SettingsForm
from hardcost.bot.ui.text import clip, escape, fit, mrkdwn, one_line, option
from hardcost.sync.firm_settings import MAX_APPROVERS

MAX_OPTIONS = 100
OWNER = "owner"
FIELDS = ("channel", "start_date", "accounts", "category", "user", "schedule", "options",
          "deletions", "bills", "no_customer", "approvers")


def _options(choices: Iterable[Choice], selected: Iterable[Choice], limit: int = MAX_OPTIONS
             ) -> tuple[list[Option], list[Option], int]:
    """Options for a static select, at most ``limit``, no duplicate values, with the selected
    choices always among them (Slack requires initial options to be options; a selected one
    missing from the list goes first). Returns (options, selected options, how many were left
    out)."""
    picked = list({c.id: c for c in reversed(list(selected))}.values())[::-1]
    listed = list({c.id: c for c in reversed(list(choices))}.values())[::-1]
    listed_ids = {c.id for c in listed}
    ordered = [c for c in picked if c.id not in listed_ids] + listed
    keep = {c.id for c in picked[:limit]}
    for c in ordered:
        if len(keep) >= limit:
            break
        keep.add(c.id)
    final = [c for c in ordered if c.id in keep]
    by_id = {c.id: option(c.label, str(c.id), unnamed=str(c.id)) for c in final}
    return ([by_id[c.id] for c in final], [by_id[c.id] for c in picked if c.id in by_id],
            len(ordered) - len(final))


def _input(block_id: str, label: str, element: Any, *, optional: bool = False,
           hint: str | None = None) -> InputBlock:
    return InputBlock(block_id=block_id, label=label, element=element, optional=optional,
                      hint=hint)


FIELD_NAMES = {"channel": "Channel", "start_date": "Start date", "accounts": "Import accounts",
               "category": "Category", "user": "Clio user", "schedule": "Schedule",
               "deletions": "Deletions", "bills": "Vendor Bills",
               "no_customer": "Lines with no customer", "approvers": "Approvers"}


MAX_CODINGS_SHOWN = 10


def coding_context(settings: SettingsForm) -> str:
    """Under the category: the import accounts with a category or UTBMS code of their own, and
    the default code; they are set with ``/hardcost set category|utbms … for <account>``."""
    rows = []
    for account, category, code in settings.codings[:MAX_CODINGS_SHOWN]:
        parts = [escape(clip(category, 100)) if category else "default category",
                 f"UTBMS {escape(clip(code, 20))}" if code else "no code of its own"]
        rows.append(f"• {escape(clip(account, 100))} — {' · '.join(parts)}")
    if len(settings.codings) > MAX_CODINGS_SHOWN:
        rows.append(f"• … {len(settings.codings) - MAX_CODINGS_SHOWN} more "
                    "(`/hardcost status` lists them)")
    default = (f"UTBMS {escape(clip(settings.default_code, 20))}" if settings.default_code
               else "no UTBMS code")
    rows.append(f"• {'other accounts' if settings.codings else 'every account'}: the category "
                f"above · {default}")
    return fit("*Per import account* (change with `/hardcost set category|utbms … for "
               "&lt;account&gt;`)\n" + "\n".join(rows), 2000)


def settings_modal(settings: SettingsForm,
                   problems: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings form (``views.open``). Nothing secret in it: no private_metadata.
    ``problems`` (field → why), from a save that was refused, are listed at the top."""
    blocks: list[Any] = []
    if problems:
        lines = "\n".join(f"• *{FIELD_NAMES.get(field, escape(field))}*: {mrkdwn(why, 300)}"
                          for field, why in list(problems.items())[:10])
        blocks.append(SectionBlock(text=MarkdownTextObject(
            text=fit(f":warning: Nothing was saved:\n{lines}", 3000))))
    blocks.append(ContextBlock(elements=[MarkdownTextObject(
        text="Changes apply from the next run. Workspace admins and the firm's approvers "
             "can save them.")]))

    blocks.append(_input("channel", "Channel for summaries, alerts and prompts",
                         ConversationSelectElement(
                             action_id="channel", placeholder="Choose a channel",
                             initial_conversation=settings.channel_id or None,
                             filter=ConversationFilter(include=["public", "private"],
                                                       exclude_bot_users=True))))

    blocks.append(_input("start_date", "Import purchases dated on or after",
                         DatePickerElement(action_id="start_date", placeholder="Start date",
                                           initial_date=(settings.start_date.isoformat()
                                                         if settings.start_date else None))))

    if settings.account_options:
        options, initial, left_out = _options(settings.account_options,
                                              settings.import_accounts)
        hint = "QuickBooks expense accounts whose lines are client costs."
        if left_out:
            hint += (f" {left_out} more accounts are not listed: "
                     "use /hardcost set account +name.")
        accounts: Any = StaticMultiSelectElement(
            action_id="accounts", placeholder="Choose accounts", options=options,
            initial_options=initial or None)
    else:
        typed = ", ".join(one_line(c.label) for c in settings.import_accounts)
        hint = "QuickBooks expense account names, separated by commas."
        accounts = PlainTextInputElement(
            action_id="accounts", placeholder="Reimbursable Expenses",
            initial_value=clip(typed, 3000) or None)
    blocks.append(_input("accounts", "QuickBooks import accounts", accounts, hint=hint))

    chosen_category = [settings.category] if settings.category else []
    if settings.category_options:
        options, initial, _ = _options(settings.category_options, chosen_category)
        category: Any = StaticSelectElement(
            action_id="category", placeholder="Choose a category", options=options,
            initial_option=initial[0] if initial else None)
    else:
        category = PlainTextInputElement(
            action_id="category", placeholder="Clio category name or id",
            initial_value=(clip(one_line(settings.category.label), 3000)
                           if settings.category else None))
    blocks.append(_input("category", "Clio hard-cost category", category, optional=True))
    blocks.append(ContextBlock(elements=[MarkdownTextObject(text=coding_context(settings))]))

    chosen_user = [settings.user] if settings.user else []
    user_options, user_initial, _ = _options(settings.user_options, chosen_user,
                                             MAX_OPTIONS - 1)
    owner = option("Account owner", OWNER)
    user_options = [owner, *user_options]
    initial_user = user_initial[0] if user_initial else owner
    blocks.append(_input("user", "Clio user the entries are recorded under",
                         StaticSelectElement(action_id="user", placeholder="Choose a user",
                                             options=user_options,
                                             initial_option=initial_user)))

    blocks.append(_input("schedule", "Run every (minutes)",
                         PlainTextInputElement(action_id="schedule", placeholder="15",
                                               initial_value=str(settings.schedule_minutes),
                                               max_length=5)))

    split = option("One Clio entry per QuickBooks line", "split_lines",
                    "Instead of one entry per purchase and customer")
    items = option("Import Item details lines", "item_lines",
                    "When the item's expense account is an import account")
    receipts = option("File receipts on the matter", "receipts",
                      "Files attached in QuickBooks go to each entry's matter's documents")
    checked = [o for o, on in ((split, settings.split_lines), (items, settings.item_lines),
                               (receipts, settings.receipts)) if on]
    blocks.append(_input("options", "Options",
                         CheckboxesElement(action_id="options", options=[split, items, receipts],
                                           initial_options=checked or None),
                         optional=True))

    delete = option("Delete the unbilled Clio entry", "delete")
    alert = option("Only tell the channel", "alert")
    blocks.append(_input("deletions", "When a purchase is deleted or voided in QuickBooks",
                         RadioButtonsElement(action_id="deletions", options=[delete, alert],
                                             initial_option=(alert if settings.deletions
                                                             == "alert" else delete))))

    bill_options = [option("Not imported", "off"),
                    option("Imported as entered", "on-entry"),
                    option("Imported once fully paid, dated the payment", "on-payment")]
    blocks.append(_input("bills", "Vendor Bills (accounts payable)",
                         RadioButtonsElement(action_id="bills", options=bill_options,
                                             initial_option=next(
                                                 (o for o in bill_options
                                                  if o.value == settings.bills),
                                                 bill_options[0]))))
    ask = option("Ask in Slack which matter", "ask",
                 "A search over all open and pending matters")
    skip = option("Skip them", "skip", "As Clio's own import does")
    blocks.append(_input("no_customer", "Import-account lines with no customer in QuickBooks",
                         RadioButtonsElement(action_id="no_customer", options=[ask, skip],
                                             initial_option=(skip if settings.no_customer
                                                             == "skip" else ask))))

    blocks.append(_input("approvers", "Approvers",
                         UserMultiSelectElement(action_id="approvers",
                                                placeholder="Anyone in the channel",
                                                initial_users=list(settings.approvers) or None,
                                                max_selected_items=MAX_APPROVERS),
                         optional=True,
                         hint="Who may change settings and answer prompts, besides workspace "
                              "admins. Empty: anyone."))

    return View(type="modal", callback_id=SETTINGS_CALLBACK, title="hardcost settings",
                submit="Save", close="Cancel", blocks=blocks).to_dict()


def _values(view_state: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accepts the view, ``view["state"]`` or ``view["state"]["values"]``."""
    if isinstance(view_state.get("state"), Mapping):
        view_state = view_state["state"]
    values = view_state.get("values")
    if isinstance(values, Mapping) and not any(f in view_state for f in FIELDS):
        return values
    return view_state


def _element(values: Mapping[str, Any], block_id: str) -> Mapping[str, Any]:
    block = values.get(block_id)
    if not isinstance(block, Mapping) or not block:
        return {}
    element = block.get(block_id)
    if not isinstance(element, Mapping):
        element = next((v for v in block.values() if isinstance(v, Mapping)), {})
    return element


def _selected(element: Mapping[str, Any]) -> list[str]:
    return [str(o["value"]) for o in element.get("selected_options") or () if "value" in o]


def _single(element: Mapping[str, Any]) -> str | None:
    """A one-value element's raw value, whatever its type."""
    option = element.get("selected_option")
    if isinstance(option, Mapping) and option.get("value") is not None:
        return str(option["value"])
    for key in ("selected_conversation", "selected_channel", "selected_date", "value"):
        value = element.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _split_names(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def settings_values(view_state: Mapping[str, Any]) -> dict[str, object]:
    """A view_submission's state as raw strings: the caller validates them."""
    values = _values(view_state)
    accounts_el = _element(values, "accounts")
    if "selected_options" in accounts_el:
        accounts = _selected(accounts_el)
    else:
        accounts = _split_names(accounts_el.get("value"))
    options = set(_selected(_element(values, "options")))
    approvers: Sequence[Any] = _element(values, "approvers").get("selected_users") or ()
    return {
        "channel": _single(_element(values, "channel")),
        "start_date": _single(_element(values, "start_date")),
        "accounts": accounts,
        "category": _single(_element(values, "category")),
        "user": _single(_element(values, "user")),
        "schedule": _single(_element(values, "schedule")) or "",
        "split_lines": "split_lines" in options,
        "item_lines": "item_lines" in options,
        "receipts": "receipts" in options,
        "deletions": _single(_element(values, "deletions")) or "",
        "bills": _single(_element(values, "bills")) or "",
        "no_customer": _single(_element(values, "no_customer")) or "",
        "approvers": [str(u) for u in approvers],
    }


def saving_modal() -> dict[str, Any]:
    """Shown at once on Save (Slack waits 3 s for the answer; checking the accounts in
    QuickBooks and the names in Clio can take longer); replaced when the save is done."""
    return View(type="modal", callback_id=SETTINGS_CALLBACK, title="hardcost settings",
                close="Close", blocks=[SectionBlock(text=MarkdownTextObject(
                    text=":hourglass_flowing_sand: Saving: checking the accounts in "
                         "QuickBooks and the category and user in Clio…"))]).to_dict()


def saved_modal(text: str) -> dict[str, Any]:
    """The outcome of a save that needs no more input (done, or refused for good)."""
    return View(type="modal", callback_id=SETTINGS_CALLBACK, title="hardcost settings",
                close="Done", blocks=[SectionBlock(text=MarkdownTextObject(
                    text=fit(escape(text), 3000)))]).to_dict()

"""Changing a firm's settings (docs/commands.md, "Settings"), each value checked against the real
services.

Slack-free: the bot turns ``/hardcost set <key> <value>`` and the settings modal into calls
here. A bad value raises :class:`SettingError` with a sentence naming the problem and the
usage line; nothing is saved then.

Every change is kept in the audit trail (docs/operations.md, "The audit trail"):
:func:`record_setting_changes` compares the settings with a :func:`stored_values` snapshot taken
before and adds one ``setting`` row per key whose value changed, with readable before and after
values, to the caller's session. A value saved again unchanged records nothing.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, object_session

from hardcost.sync import audit
from hardcost.sync.bounds import ID, NAME, clip, fits
from hardcost.sync.clio import ExpenseCategory, User, UtbmsCode, UtbmsSet
from hardcost.sync.http import ApiError
from hardcost.sync.leases import run_soon
from hardcost.sync.store import AccountCoding, AuditEntry, FirmSettings

USAGE = {
    "channel": "/hardcost set channel #channel",
    "start-date": "/hardcost set start-date YYYY-MM-DD",
    "account": "/hardcost set account <QuickBooks account name or id>  (or +name / -name)",
    "category": "/hardcost set category <Clio hard-cost category name or id> "
                "[for <QuickBooks account>]",
    "utbms": "/hardcost set utbms <UTBMS expense code, e.g. E112>|off [for <QuickBooks account>]",
    "not-billable": "/hardcost set not-billable import|skip",
    "user": "/hardcost set user <Clio user name or id | owner>",
    "schedule": "/hardcost set schedule <minutes, 5 to 10080>",
    "split-lines": "/hardcost set split-lines on|off",
    "item-lines": "/hardcost set item-lines on|off",
    "deletions": "/hardcost set deletions delete|alert",
    "bills": "/hardcost set bills off|on-entry|on-payment",
    "no-customer": "/hardcost set no-customer ask|skip",
    "approvers": "/hardcost set approvers @someone @someone-else | anyone",
    "prompts": "/hardcost set prompts each|digest",
    "digest-hour": "/hardcost set digest-hour <0-23>",
    "timezone": "/hardcost set timezone <IANA name, e.g. America/New_York>",
    "report": "/hardcost set report monthly|off",
    "receipts": "/hardcost set receipts on|off",
}
BILLS_MODES = ("off", "on-entry", "on-payment")
BILLS_SAID = {
    "off": "Vendor Bills are not imported.",
    "on-entry": "Vendor Bills are imported as they are entered in QuickBooks.",
    "on-payment": "Vendor Bills are imported once they are fully paid, dated the payment.",
}
EXPENSE_ACCOUNT_TYPES = {"Expense", "Other Expense", "Cost of Goods Sold"}

SCHEDULE_MINUTES = (5, 7 * 24 * 60)
"""Shortest and longest interval ``set schedule`` accepts: five minutes to a week."""
START_DATES = (date(2000, 1, 1), date(2099, 12, 31))
"""The start dates ``set start-date`` accepts (QuickBooks Online holds nothing older)."""
ZONE_NAME = 64  # FirmSettings.timezone; IANA's longest name has 32 characters
MAX_VALUE = 200  # characters of a setting's value; names in QuickBooks and Clio are shorter
MAX_APPROVERS = 50
_MINUTES = re.compile(r"[0-9]{1,6}")  # ASCII digits only: "²" and "٣" are not minutes
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_HOUR = re.compile(r"[0-9]{1,2}")
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*")


class SettingError(Exception):
    def __init__(self, problem: str, key: str | None = None, *, usage: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.usage = usage or USAGE.get(key or "",
                                        "/hardcost set <key> <value> — see /hardcost help")


@dataclass
class Lookups:
    """Where names are checked; each is called only when its key is being set."""

    qbo_accounts: Callable[[], list[dict[str, Any]]]
    clio_categories: Callable[[], list[ExpenseCategory]]
    clio_users: Callable[[], list[User]]
    clio_utbms_codes: Callable[[], list[UtbmsCode]] = list
    clio_utbms_sets: Callable[[], list[UtbmsSet]] = list

    def cached(self) -> Lookups:
        """The same lookups, each asked at most once (checking a value and naming it in the
        audit trail need the same list)."""
        return Lookups(qbo_accounts=cache(self.qbo_accounts),
                       clio_categories=cache(self.clio_categories),
                       clio_users=cache(self.clio_users),
                       clio_utbms_codes=cache(self.clio_utbms_codes),
                       clio_utbms_sets=cache(self.clio_utbms_sets))


def _on_off(raw: str, key: str) -> bool:
    value = raw.strip().lower()
    if value in {"on", "yes", "true"}:
        return True
    if value in {"off", "no", "false"}:
        return False
    raise SettingError(f"“{raw}” is neither on nor off.", key)


def _find_account(accounts: list[dict[str, Any]], wanted: str) -> dict[str, Any]:
    text = wanted.strip().casefold()
    matches = [a for a in accounts
               if str(a.get("Id")) == wanted.strip()
               or str(a.get("Name", "")).casefold() == text
               or str(a.get("FullyQualifiedName", "")).casefold() == text]
    if not matches:
        raise SettingError(f"QuickBooks has no account named “{wanted}”.", "account")
    if len(matches) > 1:
        names = ", ".join(f"{a.get('FullyQualifiedName')} (id {a.get('Id')})" for a in matches)
        raise SettingError(f"Several QuickBooks accounts are called “{wanted}”: {names}. "
                           "Use the id.", "account")
    account = matches[0]
    if account.get("AccountType") not in EXPENSE_ACCOUNT_TYPES:
        raise SettingError(f"“{account.get('FullyQualifiedName')}” is a "
                           f"{account.get('AccountType')} account, not an expense account.",
                           "account")
    return account


def account_ids(raw: str, current: Sequence[str], accounts: list[dict[str, Any]]) -> list[str]:
    """``name`` replaces the list, ``+name`` adds, ``-name`` removes."""
    raw = raw.strip()
    if not raw:
        raise SettingError("Name an account.", "account")
    if raw[0] in "+-":
        account = _find_account(accounts, raw[1:])
        ids = [i for i in current if i != str(account["Id"])]
        if raw[0] == "+":
            ids.append(str(account["Id"]))
        if not ids:
            raise SettingError("At least one import account is needed.", "account")
        return ids
    return [str(_find_account(accounts, raw)["Id"])]


def _find_by_name_or_id(items: Sequence[Any], raw: str, what: str, key: str,
                        whats: str | None = None) -> Any:
    text = raw.strip().casefold()
    matches = [i for i in items if str(i.id) == raw.strip() or i.name.casefold() == text]
    if len(matches) != 1:
        problem = (f"Clio has no {what} called “{raw}”." if not matches
                   else f"Several Clio {whats or what + 's'} are called “{raw}”; use the id.")
        raise SettingError(problem, key)
    return matches[0]


SLACK_USER = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
SLACK_USER_ID = re.compile(r"[UW][A-Z0-9]{1,39}")


def approver_ids(users: Sequence[str]) -> list[str]:
    """Approvers as they are stored: Slack user ids (``U…``, ``W…``), each once, sorted, at
    most ``MAX_APPROVERS``; SettingError otherwise. The same check for ``set approvers`` and
    the settings form (a channel, ``<!channel>`` or any other text is nobody who can answer)."""
    unique = sorted(set(users))
    wrong = next((u for u in unique if not SLACK_USER_ID.fullmatch(u)), None)
    if wrong is not None:
        shown = wrong if len(wrong) <= 40 else wrong[:39] + "…"
        raise SettingError(f"“{shown}” is not a Slack user; approvers are people.",
                           "approvers")
    if len(unique) > MAX_APPROVERS:
        raise SettingError(f"That is {len(unique)} people; name at most {MAX_APPROVERS} "
                           "approvers.", "approvers")
    return unique


UTBMS_CODE = 20  # FirmSettings.utbms_code, AccountCoding.utbms_code: "E112" and the like
UTBMS_HINT = ("UTBMS expense codes look like E101 (copying), E107 (delivery), E112 (court "
              "fees), E124 (other); Clio lists them, and the sets enabled, under Settings → "
              "Billing → UTBMS.")
PER_ACCOUNT_KEYS = frozenset({"category", "utbms"})
"""Settings that may name one import account: ``set category <name> for <account>``."""
_FOR = re.compile(r"\s+for\s+", re.IGNORECASE)


def split_for(raw: str) -> tuple[str, str | None]:
    """``"Filing fees for Court costs"`` → (``"Filing fees"``, ``"Court costs"``): the value,
    and the QuickBooks account after the last " for " (None without one)."""
    text = raw.strip()
    found = list(_FOR.finditer(text))
    if not found:
        return text, None
    last = found[-1]
    return text[:last.start()].strip(), text[last.end():].strip()


def find_utbms_code(raw: str, codes: Sequence[UtbmsCode], sets: Sequence[UtbmsSet],
                    key: str = "utbms") -> UtbmsCode:
    """A UTBMS expense code of the firm's Clio, in an enabled set; SettingError with the
    reason and a hint otherwise."""
    wanted = raw.strip()
    matches = [c for c in codes
               if c.code.casefold() == wanted.casefold() or str(c.id) == wanted]
    expense = [c for c in matches if c.type in ("", "UtbmsExpense")]
    if not expense:
        shown = wanted if len(wanted) <= 40 else wanted[:39] + "…"
        why = ("is not an expense code" if matches
               else "is not a UTBMS expense code in this Clio account")
        raise SettingError(f"“{shown}” {why}. {UTBMS_HINT}", key)
    enabled = {s.id for s in sets if s.enabled}
    usable = [c for c in expense if c.set_id in enabled]
    if not usable:
        code = expense[0]
        set_name = next((s.name for s in sets if s.id == code.set_id), None)
        where = f"the UTBMS set “{set_name}”" if set_name else "a UTBMS set"
        raise SettingError(f"{code.code} is in {where}, which is not enabled in Clio: enable "
                           "the set in Clio (Settings → Billing → UTBMS) or choose a code of "
                           "an enabled set.", key)
    return usable[0]


def _coding_row(session: Session, firm_id: int, account: Mapping[str, Any]) -> AccountCoding:
    account_id = str(account["Id"])
    row = session.scalars(select(AccountCoding).where(
        AccountCoding.firm_id == firm_id, AccountCoding.account_id == account_id)).first()
    name = clip(str(account.get("FullyQualifiedName") or account.get("Name") or account_id),
                NAME)
    if row is None:
        row = AccountCoding(firm_id=firm_id, account_id=account_id, account_name=name)
        session.add(row)
    row.account_name = name
    return row


def _coding_value(row: AccountCoding | None, key: str) -> str | None:
    if row is None:
        return None
    return (str(row.expense_category_id) if key == "category"
            and row.expense_category_id is not None else row.utbms_code if key == "utbms"
            else None)


def apply_account_setting(session: Session, settings: FirmSettings, key: str, value: str,
                          account_raw: str, lookups: Lookups) -> tuple[str, str, Any, Any]:
    """``set category|utbms <value> for <account>``: the account's own category or code.
    Returns (sentence, account name, value before, value after) for the audit trail."""
    check_value(key, value)
    account = _find_account(lookups.qbo_accounts(), account_raw)
    account_id = str(account["Id"])
    if not fits(account_id, ID):
        raise SettingError(f"QuickBooks has no account named “{account_raw}”.", key)
    name = str(account.get("FullyQualifiedName") or account.get("Name") or account_id)
    if account_id not in [str(i) for i in settings.import_account_ids or []]:
        raise SettingError(f"“{name}” is not an import account; add it first with "
                           f"/hardcost set account +{name}.", key)
    if key == "category":
        category = _hard_cost_category(lookups, value, key)
        row = _coding_row(session, settings.firm_id, account)
        before = row.expense_category_id
        row.expense_category_id = category.id
        row.category_name = clip(category.name, NAME)
        return (f"Entries of {row.account_name} now go under {category.name}.", name,
                before, {"id": category.id, "name": category.name})
    existing = session.scalars(select(AccountCoding).where(
        AccountCoding.firm_id == settings.firm_id,
        AccountCoding.account_id == account_id)).first()
    before_code = existing.utbms_code if existing is not None else None
    if value.lower() == "off":
        if existing is not None:
            existing.utbms_code_id = None
            existing.utbms_code = None
        return (f"Entries of {name} carry no UTBMS code of their own: their category's, or "
                "the default, applies.", name, before_code, None)
    code = find_utbms_code(value, lookups.clio_utbms_codes(), lookups.clio_utbms_sets(), key)
    row = existing or _coding_row(session, settings.firm_id, account)
    row.utbms_code_id = code.id
    row.utbms_code = clip(code.code, UTBMS_CODE)
    return (f"Entries of {row.account_name} now carry UTBMS code {row.utbms_code}"
            f"{' (' + code.name + ')' if code.name else ''}.", name, before_code, row.utbms_code)


def _hard_cost_category(lookups: Lookups, raw: str, key: str) -> ExpenseCategory:
    category: ExpenseCategory = _find_by_name_or_id(lookups.clio_categories(), raw,
                                                    "hard-cost category", key,
                                                    "hard-cost categories")
    if category.entry_type != "hard_cost":
        raise SettingError(f"“{category.name}” is not a hard-cost category.", key)
    return category


SCHEDULING_KEYS = frozenset({"schedule", "start-date", "account"})
"""Settings that change when (or whether) scheduled imports run."""


def apply_setting(session: Session, firm_id: int, key: str, raw: str,
                  lookups: Lookups, *, actor: str | None = None,
                  at: datetime | None = None) -> str:
    """Validate and store one setting; returns a sentence saying what is now in force.

    With ``actor`` (who asked: a Slack user id), a change is also added to the audit trail in
    ``session`` (dated ``at``, default now), to be committed with it; without, the caller
    records (the settings form records its fields together)."""
    settings = session.get(FirmSettings, firm_id)
    if settings is None:
        raise SettingError("This workspace has no hardcost firm yet.")
    if key in SCHEDULING_KEYS:  # a new schedule, or a firm now ready: its next run soon
        run_soon(session, firm_id)
    value, account_raw = split_for(raw) if key in PER_ACCOUNT_KEYS else (raw, None)
    if account_raw is not None:
        lookups = lookups.cached()
        sentence, account, old, new = apply_account_setting(session, settings, key, value,
                                                            account_raw, lookups)
        if actor is not None and old != new and \
                not (isinstance(new, dict) and new.get("id") == old):
            audit.record(session, firm_id, audit.Action.SETTING, actor,
                         before={key: {"account": account, "value": old}},
                         after={key: {"account": account, "value": new}}, detail=sentence,
                         at=at)
        return sentence
    if actor is None:
        return _apply(settings, key, raw, lookups)
    lookups = lookups.cached()
    before = stored_values(settings)
    sentence = _apply(settings, key, raw, lookups)
    record_setting_changes(session, firm_id, before, settings, actor, lookups,
                           details={key: sentence}, at=at)
    return sentence


def _apply(settings: FirmSettings, key: str, raw: str, lookups: Lookups) -> str:
    raw = raw.strip()
    check_value(key, raw)
    if key == "start-date":
        settings.start_date = _start_date(raw, key)
        return f"Start date is now {settings.start_date.isoformat()}."
    if key == "account":
        accounts = lookups.qbo_accounts()
        settings.import_account_ids = account_ids(raw, settings.import_account_ids or [],
                                                  accounts)
        names = {str(a["Id"]): a.get("FullyQualifiedName") for a in accounts}
        shown = ", ".join(str(names.get(i, i)) for i in settings.import_account_ids)
        return f"Import account(s): {shown}."
    if key == "category":
        category = _hard_cost_category(lookups, raw, key)
        settings.expense_category_id = category.id
        return f"Expense category is now {category.name}."
    if key == "utbms":
        if raw.lower() == "off":
            settings.utbms_code_id = None
            settings.utbms_code = None
            return ("No default UTBMS code: entries carry their account's or their "
                    "category's, if any.")
        code = find_utbms_code(raw, lookups.clio_utbms_codes(), lookups.clio_utbms_sets(), key)
        settings.utbms_code_id = code.id
        settings.utbms_code = clip(code.code, UTBMS_CODE)
        return (f"Default UTBMS code is now {settings.utbms_code}"
                f"{' (' + code.name + ')' if code.name else ''}: entries whose account and "
                "category carry none get it.")
    if key == "not-billable":
        settings.not_billable = raw.lower()
        if settings.not_billable == "skip":
            return ("Lines marked not billable in QuickBooks are now skipped, with the reason "
                    "in the run's details.")
        return "Lines marked not billable in QuickBooks are imported as non-billable entries."
    if key == "user":
        if raw.lower() == "owner":
            settings.clio_user_id = None
            return "Entries will belong to the Clio account owner."
        user = _find_by_name_or_id([u for u in lookups.clio_users() if u.enabled], raw,
                                   "user", key)
        settings.clio_user_id = user.id
        return f"Entries will belong to {user.name}."
    if key == "schedule":
        settings.schedule_minutes = int(raw)
        return f"Imports run every {int(raw)} minutes."
    if key in {"split-lines", "item-lines"}:
        value = _on_off(raw, key)
        setattr(settings, key.replace("-", "_"), value)
        return f"{key} is now {'on' if value else 'off'}."
    if key == "deletions":
        settings.deletions = raw.lower()
        return f"Deletions in QuickBooks will {'delete the Clio entry' if raw.lower() == 'delete' else 'only be reported'}."  # noqa: E501
    if key == "bills":
        settings.bills = raw.lower()
        return BILLS_SAID[settings.bills]
    if key == "no-customer":
        settings.no_customer = raw.lower()
        if settings.no_customer == "ask":
            return ("Import-account lines with no customer now wait, and Slack asks which "
                    "matter they are for (a search over all open and pending matters).")
        return ("Import-account lines with no customer are now skipped, with the reason in the "
                "run's details.")
    if key == "approvers":
        if raw.lower() == "anyone":
            settings.approvers = []
            return "Anyone in the channel may answer prompts."
        users = approver_ids(SLACK_USER.findall(raw))
        if not users:
            raise SettingError("Mention the approvers, like @jane @sam, or say anyone.", key)
        settings.approvers = users
        return f"Approvers: {len(users)} {'person' if len(users) == 1 else 'people'}."
    if key == "prompts":
        settings.prompts = raw.lower()
        settings.digest_due_at = None  # the digest job looks at its next tick
        if settings.prompts == "digest":
            return (f"Prompts come as one digest a day at {settings.digest_hour:02d}:00 "
                    f"({settings.timezone}), instead of one message per expense.")
        return "Each waiting expense gets its own prompt as soon as a run finds it."
    if key == "digest-hour":
        settings.digest_hour = int(raw)
        settings.digest_due_at = settings.report_due_at = None  # both jobs look next tick
        return f"The daily digest goes out at {int(raw):02d}:00 ({settings.timezone})."
    if key == "timezone":
        settings.timezone = zone_name(raw)
        settings.digest_due_at = settings.report_due_at = None  # both jobs look next tick
        return f"The firm's time zone is now {settings.timezone}."
    if key == "report":
        settings.report = raw.lower()
        settings.report_due_at = None  # the report job looks at its next tick
        if settings.report == "monthly":
            return ("The month's hard-cost report goes to the channel on the first working day "
                    f"of each month at {settings.digest_hour:02d}:00 ({settings.timezone}).")
        return "No monthly report is posted; /hardcost report still makes one on demand."
    if key == "receipts":
        return _receipts(settings, _on_off(raw, key))
    if key == "channel":
        raise SettingError("The channel is set through Slack.", key)  # bot.settings does it
    raise SettingError(f"There is no setting called “{key}”.")


def _receipts(settings: FirmSettings, on: bool) -> str:
    """``set receipts on|off``: turning it on also files the receipts of the entries already
    imported since the start date, over the next runs."""
    was = settings.receipts
    settings.receipts = on
    if not on:
        return ("Receipts are no longer filed in Clio; those already filed stay on their "
                "matters.")
    since = (f" since {settings.start_date.isoformat()}" if settings.start_date is not None
             else "")
    if was:
        return ("Receipts attached in QuickBooks are filed in the documents of each entry's "
                "matter in Clio.")
    session = object_session(settings)
    if session is not None:  # the filing starts with the next run: make it come soon
        run_soon(session, settings.firm_id)
    return ("Receipts attached in QuickBooks are now filed in the documents of each entry's "
            f"matter in Clio. Those of the entries already imported{since} are filed by the "
            "next runs, paced like a backfill.")


SETTING_FIELDS = {
    "channel": "slack_channel_id", "start-date": "start_date", "account": "import_account_ids",
    "category": "expense_category_id", "user": "clio_user_id", "schedule": "schedule_minutes",
    "split-lines": "split_lines", "item-lines": "item_lines", "deletions": "deletions",
    "bills": "bills",
    "no-customer": "no_customer", "utbms": "utbms_code", "not-billable": "not_billable",
    "approvers": "approvers", "prompts": "prompts", "digest-hour": "digest_hour",
    "timezone": "timezone", "report": "report", "receipts": "receipts",
}
"""Each setting a person changes (``set`` key) → its ``FirmSettings`` column."""
_LISTS = frozenset({"account", "approvers"})


def stored_values(settings: FirmSettings) -> dict[str, Any]:
    """Every setting's stored value by key, to compare after a change (lists copied)."""
    values: dict[str, Any] = {}
    for key, column in SETTING_FIELDS.items():
        value = getattr(settings, column)
        values[key] = list(value or []) if key in _LISTS else value
    return values


def record_setting_changes(session: Session, firm_id: int, before: Mapping[str, Any],
                           settings: FirmSettings, actor: str, lookups: Lookups | None = None,
                           *, names: Mapping[str, str] | None = None,
                           details: Mapping[str, str] | None = None,
                           otherwise: str = "Changed.",
                           at: datetime | None = None) -> list[AuditEntry]:
    """One audit row per setting whose value differs from ``before`` (a
    :func:`stored_values` snapshot): ``before``/``after`` are ``{key: readable value}``,
    with names where ``lookups`` or ``names`` (id → name, e.g. a Slack channel's) know
    them; ``details`` gives a key's sentence (what ``apply_setting`` said), ``otherwise``
    the sentence of the others."""
    after = stored_values(settings)
    rows = []
    for key in SETTING_FIELDS:
        if before.get(key) == after[key]:
            continue
        old = readable(key, before.get(key), lookups, names)
        new = readable(key, after[key], lookups, names)
        sentence = (details or {}).get(key) or otherwise
        rows.append(audit.record(session, firm_id, audit.Action.SETTING, actor,
                                 before={key: old}, after={key: new}, detail=sentence, at=at))
    return rows


def readable(key: str, value: Any, lookups: Lookups | None = None,
             names: Mapping[str, str] | None = None) -> Any:
    """A setting's value as the audit trail keeps it: ids with their names where known
    (``{"id": 7, "name": "Filing fees"}``), dates as ISO text, ``owner`` for the default
    Clio user. A service that does not answer leaves the ids alone."""
    if value is None:
        return "owner" if key == "user" else None
    if key == "start-date" and isinstance(value, date):
        return value.isoformat()
    known = dict(names or {})
    if lookups is not None:
        try:
            if key == "account":
                known.update({str(a.get("Id")): str(a.get("FullyQualifiedName")
                                                     or a.get("Name") or "")
                              for a in lookups.qbo_accounts()})
            elif key == "category":
                known.update({str(c.id): c.name for c in lookups.clio_categories()})
            elif key == "user":
                known.update({str(u.id): u.name for u in lookups.clio_users()})
        except ApiError:
            pass  # the ids alone: the trail is written with the change, names or not

    def ref(item: Any) -> dict[str, Any]:
        name = known.get(str(item))
        return {"id": item, "name": name} if name else {"id": item}

    if key == "account":
        return [ref(i) for i in value]
    if key in ("category", "user", "channel"):
        return ref(value)
    if key == "approvers":
        return list(value)
    return value


def check_value(key: str, raw: str) -> None:
    """What can be checked of a value without asking QuickBooks, Clio or Slack (its length,
    a date, a number of minutes, a choice among words); SettingError when it is wrong. The
    settings modal checks these before Slack's 3 seconds run out."""
    raw = raw.strip()
    longest = MAX_APPROVERS * 40 if key == "approvers" else MAX_VALUE  # <@U…|name> each
    if len(raw) > longest:
        raise SettingError(f"That value is {len(raw):,} characters long; a setting takes at "
                           f"most {longest:,}.", key)
    if key == "start-date":
        _start_date(raw, key)
    elif key == "schedule":
        low, high = SCHEDULE_MINUTES
        if not _MINUTES.fullmatch(raw) or not low <= int(raw) <= high:
            raise SettingError(f"“{raw}” is not a number of minutes from {low} to {high:,} "
                               "(a week).", key)
    elif key == "deletions" and raw.lower() not in {"delete", "alert"}:
        raise SettingError(f"“{raw}” is neither delete nor alert.", key)
    elif key == "bills" and raw.lower() not in BILLS_MODES:
        raise SettingError(f"“{raw}” is not off, on-entry or on-payment.", key)
    elif key == "not-billable" and raw.lower() not in {"import", "skip"}:
        raise SettingError(f"“{raw}” is neither import nor skip.", key)
    elif key == "no-customer" and raw.lower() not in {"ask", "skip"}:
        raise SettingError(f"“{raw}” is neither ask nor skip.", key)
    elif key in {"split-lines", "item-lines", "receipts"}:
        _on_off(raw, key)
    elif key == "prompts" and raw.lower() not in {"each", "digest"}:
        raise SettingError(f"“{raw}” is neither each nor digest.", key)
    elif key == "digest-hour" and (not _HOUR.fullmatch(raw) or not 0 <= int(raw) <= 23):
        raise SettingError(f"“{raw}” is not an hour from 0 to 23.", key)
    elif key == "timezone":
        zone_name(raw)
    elif key == "report" and raw.lower() not in {"monthly", "off"}:
        raise SettingError(f"“{raw}” is neither monthly nor off.", key)


NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})
"""Files of the time zone database that are not zones a firm is in: the host's own zone (a
link to whatever the server is set to), the POSIX-rules template, and "Factory" (no zone)."""
_NOT_ZONE_TREES = ("posix/", "right/")  # copies of every zone (leap-second variants in right/)


@cache
def zone_names() -> frozenset[str]:
    """The IANA time zone names a firm may choose: the zones and their links (``UTC``,
    ``US/Eastern``) of the system's database or of the ``tzdata`` package, as
    ``zoneinfo.available_timezones`` finds them, without the files that are no zone."""
    return frozenset(n for n in zoneinfo.available_timezones()
                     if n not in NOT_ZONES and not n.startswith(_NOT_ZONE_TREES))


def zone_name(raw: str) -> str:
    """An IANA time zone name (``America/New_York``); SettingError otherwise. Case is kept as
    given: the names are case-sensitive. Used wherever a time zone enters (``set timezone``,
    ``check_value`` for forms)."""
    name = raw.strip()
    problem = SettingError(f"“{raw}” is not a time zone name like America/New_York.",
                           "timezone")
    if (len(name) > ZONE_NAME or not _ZONE_NAME.fullmatch(name) or ".." in name
            or name not in zone_names()):
        raise problem
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise problem from None
    return name


def _start_date(raw: str, key: str) -> date:
    low, high = START_DATES
    try:
        value = date.fromisoformat(raw) if _ISO_DATE.fullmatch(raw) else None
    except ValueError:
        value = None
    if value is None:
        raise SettingError(f"“{raw}” is not a date like 2026-01-31.", key)
    if not low <= value <= high:
        raise SettingError(f"{value.isoformat()} is outside {low.year} to {high.year}.", key)
    return value

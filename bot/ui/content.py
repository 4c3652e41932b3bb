"""What messages and views show, as plain data the Block Kit builders take. Listeners fill these
from the store; builders never touch the database, HTTP or the clock.

("View" in ``bot`` means only what Slack calls one: a modal or App Home.)"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

# action_id values the listeners register; block builders must use exactly these.
ACTION_CHOOSE_MATTER = "hc_choose_matter"  # button; value "<prompt id>:<matter id>"
ACTION_SELECT_MATTER = "hc_select_matter"  # static_select; option value "<prompt id>:<matter id>"
ACTION_SEARCH_MATTER = "hc_search_matter"  # external_select; block_id "hc_prompt:<prompt id>"
ACTION_CHOOSE_CONTACT = "hc_choose_contact"  # button; value "<prompt id>:<contact id>"
ACTION_SELECT_CONTACT = "hc_select_contact"  # static_select; value "<prompt id>:<contact id>"
ACTION_NOT_CLIENT_COST = "hc_not_client_cost"  # button; value "<prompt id>"
ACTION_RETRY_FAILURE = "hc_retry_failure"  # button; value "<failure id>"
ACTION_OPEN_SETTINGS = "hc_open_settings"  # button
ACTION_RUN_NOW = "hc_run_now"  # button
ACTION_SHOW_PENDING = "hc_show_pending"  # button
ACTION_RECONNECT = "hc_reconnect"  # button; value "quickbooks" | "clio"
ACTION_OPEN_QBO = "hc_open_qbo"  # link button (url), acknowledged and ignored
SETTINGS_CALLBACK = "hc_settings"  # view callback_id of the settings modal
PROMPT_BLOCK_PREFIX = "hc_prompt:"


@dataclass(frozen=True)
class Choice:
    """A matter or a contact a person may pick."""

    id: int
    label: str  # "00042 Smith v. Jones" or "Jane Smith <jane@example.com>"


@dataclass(frozen=True)
class Prompt:
    """An expense waiting for a person: which contact, or which matter."""

    id: int  # waiting_expenses.id
    kind: str  # "matter" | "contact"
    reason: str  # no_contact | several_contacts | several_matters | no_matter
    amount: Decimal
    txn_date: date
    client: str  # QBO customer, "Parent:Child" for sub-customers
    payee: str | None
    memo: str | None
    reference: str | None  # check number
    qbo_url: str
    choices: tuple[Choice, ...] = ()  # may be empty (no_matter / no_contact)
    waiting_since: datetime | None = None


@dataclass(frozen=True)
class PromptAnswer:
    """How a prompt was settled, to replace its buttons in place."""

    by_user: str  # Slack user id
    outcome: str  # "linked" | "not_client_cost" | "contact_remembered"
    label: str | None = None  # the matter or contact chosen
    clio_entry_id: int | None = None


@dataclass(frozen=True)
class FailureNotice:
    id: int
    kind: str  # config | transient | data
    message: str  # already a sentence for a bookkeeper
    qbo_url: str | None
    occurrences: int = 1
    first_seen: datetime | None = None
    refused_by_clio: bool = False  # Clio refused the entry: the fix is in Clio, not QuickBooks


@dataclass(frozen=True)
class SettingsForm:
    channel_id: str | None
    start_date: date | None
    import_accounts: tuple[Choice, ...]  # chosen QBO accounts (id is the QBO id as int)
    account_options: tuple[Choice, ...]  # every QBO expense account
    category: Choice | None
    category_options: tuple[Choice, ...]  # Clio hard-cost categories
    user: Choice | None  # None = the account owner
    user_options: tuple[Choice, ...]
    schedule_minutes: int
    split_lines: bool
    item_lines: bool
    deletions: str  # delete | alert
    approvers: tuple[str, ...]  # Slack user ids; empty = anyone


@dataclass(frozen=True)
class StatusReport:
    firm_name: str
    quickbooks: str  # e.g. "connected (realm 1234)" or "not connected"
    clio: str
    channel_id: str | None
    paused: bool
    schedule_minutes: int
    last_run: str | None  # one line, e.g. "today 09:15 — imported 4 ($812.50)"
    next_run: str | None  # one line or None when unknown/paused
    waiting: int
    open_failures: int
    problems: tuple[str, ...] = field(default_factory=tuple)  # e.g. "choose the import account"


@dataclass(frozen=True)
class Message:
    """What chat.postMessage/chat.update take: notification text plus blocks."""

    text: str
    blocks: list[dict[str, Any]]

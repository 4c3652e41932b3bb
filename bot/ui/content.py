"""What messages and views show, as plain data the Block Kit builders take. Listeners fill these
from the store; builders never touch the database, HTTP or the clock.

("View" in ``bot`` means only what Slack calls one: a modal or App Home.)"""

from __future__ import annotations

import json
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
ACTION_HISTORY_OLDER = "hc_history_older"  # button; value HistoryQuery.button_value()
ACTION_UNDO_CHOICE = "hc_undo_choice"  # button on an answered prompt; value "<prompt id>"
ACTION_GROUP_MATTER = "hc_group_matter"  # static_select; option value "<group id>:<matter id>"
ACTION_MAKE_RULE = "hc_make_rule"  # button; value "<prompt id>"
ACTION_REMOVE_RULE = "hc_remove_rule"  # button; value "<rule id>"
ACTION_REMOVE_UNDONE_RULE = "hc_remove_undone_rule"  # button in Undo's answer; "<rule id>"
ACTION_RULES_PAGE = "hc_rules_page"  # button under /hardcost rules; value "<page number>"
ACTION_STOP_RUN = "hc_stop_run"  # button on a run's progress message; value "<run id>"
SETTINGS_CALLBACK = "hc_settings"  # view callback_id of the settings modal
PROMPT_BLOCK_PREFIX = "hc_prompt:"
RULE_OFFER_PREFIX = "hc_rule_offer:"
UNDONE_RULE_PREFIX = "hc_undone_rule:"


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
    suggested: int | None = None  # the choice the firm's history supports (listed first)
    suggestion: str | None = None  # why, in one short line
    note: str | None = None  # e.g. why a matter rule did not apply
    bill: bool = False  # a vendor Bill's lines (``bills``), not a purchase's


@dataclass(frozen=True)
class PromptAnswer:
    """How a prompt was settled, to replace its buttons in place."""

    by_user: str  # Slack user id
    outcome: str  # "linked" | "not_client_cost" | "contact_remembered"
    label: str | None = None  # the matter or contact chosen
    clio_entry_id: int | None = None
    undoable: bool = False  # a person's matter choice: the message offers Undo
    rule_offer: bool = False  # offer "Always do this for <payee> → <client>"
    rule: str | None = None  # the rule made from this answer, "Speedy Couriers → Acme"
    rule_by: str | None = None  # who made it (Slack user id)


@dataclass(frozen=True)
class PromptGroupView:
    """Several expenses of one client waiting for the same matter choice, in one message."""

    id: int  # prompt_groups.id
    client: str
    members: tuple[Prompt, ...]  # the open ones, oldest first
    choices: tuple[Choice, ...]  # the matters every member may go to

    @property
    def total(self) -> Decimal:
        return sum((p.amount for p in self.members), Decimal("0.00"))


@dataclass(frozen=True)
class DigestClient:
    """One client's part of the daily digest: what waits, and its group menu when its
    expenses share one matter choice."""

    client: str
    prompts: tuple[Prompt, ...]
    group: PromptGroupView | None = None

    @property
    def total(self) -> Decimal:
        return sum((p.amount for p in self.prompts), Decimal("0.00"))


@dataclass(frozen=True)
class GroupAnswer:
    """What a group choice did, for the group message updated in place."""

    by_user: str
    label: str
    linked: int
    linked_total: Decimal
    failed: tuple[tuple[Prompt, str], ...] = ()  # a member Clio refused, and why
    others: int = 0  # members answered one by one before the group choice reached them


@dataclass(frozen=True)
class RuleView:
    """One matter rule, as ``/hardcost rules`` lists it."""

    id: int
    payee: str
    client: str
    matter: str
    created_by: str  # Slack user id
    created_at: datetime
    uses: int
    last_used_at: datetime | None = None
    account: bool = False  # the rule names the QuickBooks account too


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
    bills: str = "off"  # off | on-entry | on-payment
    no_customer: str = "ask"  # ask | skip: import-account lines with no customer
    codings: tuple[tuple[str, str | None, str | None], ...] = ()
    """Import accounts with a category or UTBMS code of their own: (account, category name or
    None, code or None), set with ``/hardcost set category|utbms … for <account>``."""
    default_code: str | None = None  # the default UTBMS expense code ("E124"), if any
    receipts: bool = True  # the firm's ``receipts`` setting: file QuickBooks receipts in Clio


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
    untagged_waiting: int = 0  # of ``waiting``: expenses with no client in QuickBooks
    problems: tuple[str, ...] = field(default_factory=tuple)  # e.g. "choose the import account"
    webhooks: bool = True  # False: no QuickBooks webhooks here, changes come with scheduled runs
    live: str | None = None  # a run under way: its figures in one line (``live_line``)
    stopping_by: str | None = None  # ... which this person asked to stop (Slack user id)
    bills: str = "off"  # the firm's ``bills`` setting: off | on-entry | on-payment
    waiting_for_payment: int = 0  # of ``waiting``, Bills waiting to be paid (nobody is asked)
    codings: tuple[tuple[str, str | None, str | None], ...] = ()
    """(QuickBooks account, Clio category, UTBMS code) of each import account with its own;
    None where the default applies."""
    default_code: str | None = None  # the default UTBMS expense code ("E124")
    not_billable: str = "import"  # the firm's ``not-billable`` setting
    receipts: bool = True  # the firm's ``receipts`` setting: file QuickBooks receipts in Clio


@dataclass(frozen=True)
class Message:
    """What chat.postMessage/chat.update take: notification text plus blocks."""

    text: str
    blocks: list[dict[str, Any]]


@dataclass(frozen=True)
class TrailEntry:
    """One row of the firm's audit trail, as ``/hardcost history`` and App Home show it."""

    id: int
    at: datetime
    actor: str  # a Slack user id, or schedule | webhook | …
    action: str  # hardcost.sync.audit.Action value
    purchase_id: str | None = None
    client: str | None = None
    amount: Decimal | None = None
    matter: str | None = None
    clio_entry_id: int | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    detail: str | None = None
    url: str | None = None  # the Clio matter's page, for a receipt filed on it


HISTORY_LIMIT = 10  # entries /hardcost history shows unless asked for "last N"
HISTORY_MAX = 50  # the most "last N" takes (one message)
HISTORY_CLIENT_CHARS = 100  # of a client name searched for
HISTORY_BEFORE_MAX = 2 ** 31 - 1  # an audit entry id (a PostgreSQL integer)


@dataclass(frozen=True)
class HistoryQuery:
    """What ``/hardcost history`` was asked: the latest entries, one purchase's, or a
    client's; ``before_id`` pages back (the Older button)."""

    limit: int = HISTORY_LIMIT
    purchase_id: str | None = None
    client: str | None = None
    before_id: int | None = None

    def button_value(self) -> str:
        """The query as the Older button carries it (well under Slack's 2000 characters)."""
        value: dict[str, Any] = {"n": self.limit}
        if self.purchase_id is not None:
            value["p"] = self.purchase_id
        if self.client is not None:
            value["c"] = self.client
        if self.before_id is not None:
            value["b"] = self.before_id
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_button_value(cls, raw: str) -> HistoryQuery | None:
        """The query a button carried; None for anything hardcost did not write."""
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(value, dict):
            return None
        limit, purchase, client, before = (value.get("n"), value.get("p"), value.get("c"),
                                           value.get("b"))
        if not isinstance(limit, int) or isinstance(limit, bool) \
                or not 1 <= limit <= HISTORY_MAX:
            return None
        if purchase is not None and (not isinstance(purchase, str) or len(purchase) > 40
                                     or "\x00" in purchase):
            return None
        if client is not None and (not isinstance(client, str) or "\x00" in client
                                   or len(client) > HISTORY_CLIENT_CHARS):
            return None
        if before is not None and (not isinstance(before, int) or isinstance(before, bool)
                                   or not 1 <= before <= HISTORY_BEFORE_MAX):
            return None
        return cls(limit, purchase, client, before)

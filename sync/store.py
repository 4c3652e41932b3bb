"""Database tables (SQLAlchemy 2) and the session factory.

Every row that belongs to a firm carries ``firm_id``. The schema is created and changed only by
the Alembic migrations in ``sync/migrations`` (``hardcost db upgrade``).
"""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
    insert,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from hardcost.sync.crypto import EncryptedText

MONEY = Numeric(14, 2, asdecimal=True)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes on every backend (SQLite drops the zone; this puts UTC back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), Decimal: MONEY, dict[str, Any]: JSON}


class LinkState(enum.StrEnum):
    PENDING = "pending"  # intent recorded, Clio POST may or may not have happened
    CREATED = "created"  # Clio entry exists, id recorded
    DELETED = "deleted"  # the purchase left QuickBooks and hardcost deleted the Clio entry
    KEPT = "kept"  # the purchase left QuickBooks; the Clio entry stays (billed, or "alert")
    UNDOING = "undoing"  # a person's Undo is deleting the Clio entry: runs leave it alone


class FailureKind(enum.StrEnum):
    CONFIG = "config"  # the firm must act: reconnect, fix a setting
    TRANSIENT = "transient"  # a service hiccup; retried by the next run
    DATA = "data"  # this expense needs fixing in QuickBooks


class WaitReason(enum.StrEnum):
    NO_CONTACT = "no_contact"
    SEVERAL_CONTACTS = "several_contacts"
    SEVERAL_MATTERS = "several_matters"
    NO_MATTER = "no_matter"
    PAYMENT = "payment"
    """A Bill (``bills on-payment``) not fully paid yet: nobody is asked; it imports by itself
    once paid."""
    NO_CUSTOMER = "no_customer"  # no customer on the lines: any open or pending matter


class Firm(Base):
    __tablename__ = "firms"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    slack_team_id: Mapped[str | None] = mapped_column(String(40), unique=True)
    qbo_realm_id: Mapped[str | None] = mapped_column(String(40))
    clio_region: Mapped[str] = mapped_column(String(8), default="us")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FirmSettings(Base):
    """One row per firm: what and how to import (docs/commands.md, "Settings")."""

    __tablename__ = "firm_settings"
    __table_args__ = (Index("ix_firm_settings_digest_due", "prompts", "digest_due_at"),
                      Index("ix_firm_settings_report_due", "report", "report_due_at"))

    firm_id: Mapped[int] = mapped_column(ForeignKey("firms.id", ondelete="CASCADE"),
                                         primary_key=True)
    start_date: Mapped[date | None] = mapped_column(Date)
    import_account_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    expense_category_id: Mapped[int | None] = mapped_column(Integer)
    clio_user_id: Mapped[int | None] = mapped_column(Integer)  # None = the account owner
    clio_entry_type: Mapped[str] = mapped_column(String(20), default="HardCostEntry")
    schedule_minutes: Mapped[int] = mapped_column(Integer, default=15)
    split_lines: Mapped[bool] = mapped_column(Boolean, default=False)
    item_lines: Mapped[bool] = mapped_column(Boolean, default=False)
    deletions: Mapped[str] = mapped_column(String(10), default="delete")
    bills: Mapped[str] = mapped_column(String(12), default="off", server_default="off")
    """Vendor Bills: ``off`` | ``on-entry`` (imported as entered) | ``on-payment`` (once
    their balance is 0, dated the payment)."""
    approvers: Mapped[list[str]] = mapped_column(JSON, default=list)
    slack_channel_id: Mapped[str | None] = mapped_column(String(40))
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    prompts: Mapped[str] = mapped_column(String(10), default="each")  # each | digest
    digest_hour: Mapped[int] = mapped_column(Integer, default=9)  # 0-23, in ``timezone``
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")  # an IANA name
    no_customer: Mapped[str] = mapped_column(String(10), default="ask")  # ask | skip
    not_billable: Mapped[str] = mapped_column(String(10), default="import",
                                              server_default="import")
    """QuickBooks lines marked ``NotBillable``: ``import`` (as non-billable entries) | ``skip``."""
    utbms_code_id: Mapped[int | None] = mapped_column(BigInteger)
    """The default UTBMS expense code (Clio's id); None = none unless an account or the
    category has one."""
    utbms_code: Mapped[str | None] = mapped_column(String(20))  # its code, e.g. "E124"
    matters_cached_at: Mapped[datetime | None] = mapped_column()
    """When ``matter_cache`` last held every open and pending Clio matter of the firm
    (``hardcost.sync.matter_cache``); None = never read."""
    digest_sent_on: Mapped[date | None] = mapped_column(Date)
    """The firm's local day whose digest was sent (claimed with the post, in one transaction):
    a restart, a second replica or a second tick that day sends nothing more."""
    report: Mapped[str] = mapped_column(String(8), default="monthly",
                                        server_default="monthly")  # monthly | off
    report_month: Mapped[str | None] = mapped_column(String(7))
    """``YYYY-MM``: the latest month whose automatic report was claimed (bot/month_report.py);
    with ``report_claimed_at`` while it is being made, NULL once it is posted."""
    report_claimed_at: Mapped[datetime | None] = mapped_column()
    digest_due_at: Mapped[datetime | None] = mapped_column()
    """When the daily digest job next looks at the firm (UTC; its next digest hour, kept by
    the job); None while it has not looked since the firm's digest settings changed. The job
    reads only firms in digest mode whose time has come or is unknown (index
    ``ix_firm_settings_digest_due``), never every firm's settings."""
    report_due_at: Mapped[datetime | None] = mapped_column()
    """When the monthly report job next looks at the firm (UTC; kept by the job and its
    claim: the next first working day's digest hour, or when a claim not posted lapses);
    None while it has not looked since the report settings changed. The job reads only
    ``report monthly`` firms whose time has come or is unknown (index
    ``ix_firm_settings_report_due``)."""
    receipts: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    """Files attached in QuickBooks are filed in the documents of the entries' matters
    (``hardcost.sync.receipts``); on by default."""
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AccountCoding(Base):
    """The Clio category and UTBMS expense code of one QuickBooks import account (``set
    category … for <account>``, ``set utbms … for <account>``); an entry of that account
    is written with them, the firm's defaults apply to the rest."""

    __tablename__ = "account_codings"
    __table_args__ = (UniqueConstraint("firm_id", "account_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    firm_id: Mapped[int] = mapped_column(ForeignKey("firms.id", ondelete="CASCADE"))
    account_id: Mapped[str] = mapped_column(String(40))  # the QuickBooks account's id
    account_name: Mapped[str] = mapped_column(String(300))  # as QuickBooks named it then
    expense_category_id: Mapped[int | None] = mapped_column(BigInteger)  # None = the default
    category_name: Mapped[str | None] = mapped_column(String(300))  # as Clio named it then
    utbms_code_id: Mapped[int | None] = mapped_column(BigInteger)  # None = the default
    utbms_code: Mapped[str | None] = mapped_column(String(20))  # its code, e.g. "E112"
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


PROVIDER_NAMES = {"quickbooks": "QuickBooks", "clio": "Clio"}
"""``Connection.provider`` values and the services' names as people read them (and as
``ApiError.service`` carries them)."""
PROVIDER_FOR_SERVICE = {name: provider for provider, name in PROVIDER_NAMES.items()}


class Connection(Base):
    """OAuth tokens of one provider for one firm."""

    __tablename__ = "connections"
    __table_args__ = (UniqueConstraint("firm_id", "provider"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    firm_id: Mapped[int] = mapped_column(ForeignKey("firms.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(20))  # "quickbooks" | "clio"
    access_token: Mapped[str] = mapped_column(EncryptedText)  # encrypted at rest
    refresh_token: Mapped[str | None] = mapped_column(EncryptedText)
    access_expires_at: Mapped[datetime | None] = mapped_column()
    refresh_expires_at: Mapped[datetime | None] = mapped_column()
    hard_expires_at: Mapped[datetime | None] = mapped_column()  # QBO: 5 years, no renewal
    broken_at: Mapped[datetime | None] = mapped_column()
    """Set when the provider refused our tokens for good (invalid_grant, revoked): imports
    wait for a reconnect, which clears it."""
    broken_reason: Mapped[str | None] = mapped_column(Text)
    broken_notified_at: Mapped[datetime | None] = mapped_column()
    expiry_warned_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ContactLink(Base):
    """A QuickBooks name (customer, vendor, employee) resolved to a Clio contact."""

    __tablename__ = "contact_links"
    __table_args__ = (UniqueConstraint("firm_id", "qbo_type", "qbo_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    firm_id: Mapped[int] = mapped_column(ForeignKey("firms.id", ondelete="CASCADE"))
    qbo_type: Mapped[str] = mapped_column(String(20))  # Customer | Vendor | Employee
    qbo_id: Mapped[str] = mapped_column(String(40))
    clio_contact_id: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(10))  # "auto" | "staff"
    chosen_by: Mapped[str | None] = mapped_column(String(60))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EntryLink(Base):
    """One QBO purchase (+customer [+line]) and the Clio entry it became.

    Written ahead of the Clio POST (``pending``) and completed after (``created``). The unique
    key is what makes every re-read of a purchase harmless.
    """

    __tablename__ = "entry_links"
    __table_args__ = (
        UniqueConstraint("firm_id", "realm_id", "purchase_id", "customer_id", "line_id",
                         name="uq_entry_links_qbo_key"),
        # a quiet run's questions: pending writes, superseded entries not removed yet
        Index("ix_entry_links_firm_state", "firm_id", "state"),
        Index("ix_entry_links_firm_superseded", "firm_id", "superseded_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    firm_id: Mapped[int] = mapped_column(ForeignKey("firms.id", ondelete="CASCADE"))
    realm_id: Mapped[str] = mapped_column(String(40))
    purchase_id: Mapped[str] = mapped_column(String(40))
    customer_id: Mapped[str] = mapped_column(String(40))
    line_id: Mapped[str] = mapped_column(String(40), default="")  # "" = whole purchase
    state: Mapped[str] = mapped_column(String(10))
    marker: Mapped[str] = mapped_column(String(200))
    sync_token: Mapped[str] = mapped_column(String(20))
    amount: Mapped[Decimal] = mapped_column()
    txn_date: Mapped[date] = mapped_column(Date)
    clio_activity_id: Mapped[int | None] = mapped_column(Integer)
    clio_matter_id: Mapped[int | None] = mapped_column(Integer)
    clio_etag: Mapped[str | None] = mapped_column(String(100))
    run_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    removed_at: Mapped[datetime | None] = mapped_column()  # deleted/voided handling settled
    removal_note: Mapped[str | None] = mapped_column(Text)  # what happened, in words
    written: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """What hardcost last wrote to the Clio entry (price, date, note, reference, matter): an
    entry that no longer reads so was changed in Clio by a person and is not overwritten."""
    superseded_at: Mapped[datetime | None] = mapped_column()
    """Set when the purchase no longer calls for this entry (its customer or lines changed):
    the entry is removed as for a deleted purchase (docs/purchases.md, "Deletions and voids"), by
    this run or the next."""


class ReceiptState(enum.StrEnum):
    PENDING = "pending"  # intent recorded, the Clio document may or may not exist yet
    CREATED = "created"  # a complete Clio document holds the file, id recorded
    SKIPPED = "skipped"  # not filed, for a reason (``reason``: too large, no file)
    FAILED = "failed"  # the last try failed (a failure row says why); retried by later runs


class ReceiptFile(Base):
    """A file attached in QuickBooks (an ``Attachable``) to a transaction hardcost imports.

    One row per Attachable and transaction (``txn_key``: the purchase id, or ``bill-<id>``
    as ``entry_links`` keep Bills), noted from CDC, a query or a read; ``removed`` once the
    Attachable is deleted or its reference made inactive in QuickBooks (the filed document
    stays in Clio)."""

    __tablename__ = "receipt_files"
    __table_args__ = (
        UniqueConstraint("firm_id", "realm_id", "attachable_id", "txn_key",
                         name="uq_receipt_files_key"),
        Index("ix_receipt_files_firm_txn", "firm_id", "txn_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    firm_id: Mapped[int] = mapped_column(ForeignKey("firms.id", ondelete="CASCADE"))
    realm_id: Mapped[str] = mapped_column(String(40))
    attachable_id: Mapped[str] = mapped_column(String(40))
    txn_key: Mapped[str] = mapped_column(String(40))
    file_name: Mapped[str] = mapped_column(String(300))
    content_type: Mapped[str | None] = mapped_column(String(100))
    size: Mapped[int | None] = mapped_column(BigInteger)  # bytes, as QuickBooks says
    removed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    removed_at: Mapped[datetime | None] = mapped_column()
    qbo_updated_at: Mapped[str | None] = mapped_column(String(40))  # its LastUpdatedTime
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReceiptLink(Base):
    """One file filed on one matter: written ``pending`` before the upload and settled
    ``created`` with the Clio document, so a file reaches each matter once across crashes,
    retries, replicas and reruns (``hardcost.sync.receipts``)."""

    __tablename__ = "receipt_links"
    __table_args__ = (
        UniqueConstraint("firm_id", "realm_id", "attachable_id", "matter_id",
                         name="uq_receipt_links_key"),
        Index("ix_receipt_links_firm_state", "firm_id", "state"),
        Index("ix_receipt_links_firm_txn", "firm_id", "txn_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    firm_id: Mapped[int] = mapped_column(ForeignKey("firms.id", ondelete="CASCADE"))
    realm_id: Mapped[str] = mapped_column(String(40))
    attachable_id: Mapped[str] = mapped_column(String(40))
    matter_id: Mapped[int] = mapped_column(BigInteger)
    txn_key: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(10))  # ReceiptState
    clio_document_id: Mapped[int | None] = mapped_column(BigInteger)
    uuid: Mapped[str | None] = mapped_column(String(100))
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    name: Mapped[str | None] = mapped_column(String(300))  # the document's name in Clio
    reason: Mapped[str | None] = mapped_column(Text)  # why skipped or failed, in words
    run_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PurchaseRemoval(Base):
    """A purchase deleted or voided in QuickBooks, kept until its Clio entries are dealt with.

    Found by a CDC sweep, a webhook ``Delete``, a read that shows a void, or a reconciliation
    pass. Unique per purchase, so every route to the same deletion records it once; a run
    handles the open ones (``handled_at`` null) and a failure leaves it open for the next run.
    """

    __tablename__ = "purchase_removals"
    __table_args__ = (UniqueConstraint("firm_id", "realm_id", "purchase_id",
                                       name="uq_purchase_removals_purchase"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    firm_id: Mapped[int] = mapped_column(ForeignKey("firms.id", ondelete="CASCADE"))
    realm_id: Mapped[str] = mapped_column(String(40))
    purchase_id: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(10))  # deleted | voided
    source: Mapped[str] = mapped_column(String(20))  # cdc | webhook | read | reconcile
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    handled_at: Mapped[datetime | None] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class Watermark(Base):
    """How far the firm's QBO purchases have been read (server time, with its offset)."""

    __tablename__ = "watermarks"
    __table_args__ = (UniqueConstraint("firm_id", "stream"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    firm_id: Mapped[int] = mapped_column(ForeignKey("firms.id", ondelete="CASCADE"))
    stream: Mapped[str] = mapped_column(String(40))
    value: Mapped[str] = mapped_column(String(40))  # ISO-8601 as QBO wrote it
    start_date: Mapped[date | None] = mapped_column(Date)  # start date in force when read
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_firm_id_id", "firm_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    firm_id: Mapped[int] = mapped_column(ForeignKey("firms.id", ondelete="CASCADE"))
    trigger: Mapped[str] = mapped_column(String(20))  # schedule | manual | webhook | demo
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    # running | ok | failed | abandoned (its process died: sync.leases.mark_abandoned)
    status: Mapped[str] = mapped_column(String(12), default="running")
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    imported: Mapped[int] = mapped_column(Integer, default=0)
    imported_total: Mapped[Decimal] = mapped_column(default=Decimal("0.00"))
    waiting: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    purchases_read: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    slack_ts: Mapped[str | None] = mapped_column(String(40))  # its message (progress, summary)
    slack_channel: Mapped[str | None] = mapped_column(String(40))
    quiet: Mapped[bool] = mapped_column(Boolean, default=False)  # nothing happened (pruned)
    # A long run's latest figures (``sync.live.LiveFigures``), while it runs.
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    stop_requested_by: Mapped[str | None] = mapped_column(String(40))  # a person's Stop
    stop_requested_at: Mapped[datetime | None] = mapped_column()


class RunLease(Base):
    """Which process runs the firm's import now, and when its next scheduled import is due.

    One row per firm (``hardcost.sync.leases``): the scheduler claims due rows
    (``next_run_at``), every import takes the lease (``claim_token`` until ``lease_until``,
    renewed while it runs) and gives it back at the end. The row is made with the firm.
    """

    __tablename__ = "run_leases"
    __table_args__ = (Index("ix_run_leases_next_run_at", "next_run_at"),
                      Index("ix_run_leases_lease_until", "lease_until"))

    firm_id: Mapped[int] = mapped_column(ForeignKey("firms.id", ondelete="CASCADE"),
                                         primary_key=True)
    next_run_at: Mapped[datetime] = mapped_column(default=utcnow)
    claim_token: Mapped[str | None] = mapped_column(String(40))
    claimed_by: Mapped[str | None] = mapped_column(String(200))  # "pid 12 on host"
    holder_start: Mapped[str | None] = mapped_column(String(120))  # sync.leases.PROCESS_START
    claim_kind: Mapped[str | None] = mapped_column(String(20))  # schedule | slack | webhook | cli
    claimed_at: Mapped[datetime | None] = mapped_column()
    lease_until: Mapped[datetime | None] = mapped_column()


@event.listens_for(Firm, "after_insert")
def _firm_lease_row(_mapper: Any, connection: Any, firm: Firm) -> None:
    """Every firm has its lease row from the start (due now: the scheduler looks at it, and
    until the firm is ready to import puts it off by its interval)."""
    connection.execute(insert(RunLease).values(firm_id=firm.id, next_run_at=utcnow()))


class SlackOutbox(Base):
    """A Slack call the firm must see, kept until Slack has taken it.

    ``parent_id`` points at the message a thread reply belongs to: it is sent once the parent
    has a ``ts``. ``ref_kind``/``ref_id`` say which row learns the ``ts`` (prompt, failure,
    run), so a later ``chat.update`` can edit the message in place.
    """

    __tablename__ = "slack_outbox"
    __table_args__ = (
        # unsent rows, due first (the pump); one firm's unsent rows and refs (the notifier)
        Index("ix_slack_outbox_unsent", "sent_at", "next_attempt_at"),
        Index("ix_slack_outbox_firm_ref", "firm_id", "ref_kind", "method"),
        Index("ix_slack_outbox_firm_ref_id", "firm_id", "ref_kind", "ref_id"),
        Index("ix_slack_outbox_firm_unsent", "firm_id", "sent_at", "next_attempt_at"),
        Index("ix_slack_outbox_created_at", "created_at"),  # housekeeping: the old rows only
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    firm_id: Mapped[int] = mapped_column(ForeignKey("firms.id", ondelete="CASCADE"))
    method: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    parent_id: Mapped[int | None] = mapped_column(Integer)
    ref_kind: Mapped[str | None] = mapped_column(String(20))
    ref_id: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column()
    gave_up_at: Mapped[datetime | None] = mapped_column()
    result_channel: Mapped[str | None] = mapped_column(String(40))
    result_ts: Mapped[str | None] = mapped_column(String(40))
    last_error: Mapped[str | None] = mapped_column(Text)


class Failure(Base):
    """A sync failure people can act on. Open while ``resolved_at`` is null."""

    __tablename__ = "failures"
    __table_args__ = (Index("ix_failures_firm_open", "firm_id", "resolved_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    firm_id: Mapped[int] = mapped_column(ForeignKey("firms.id", ondelete="CASCADE"))
    realm_id: Mapped[str] = mapped_column(String(40))
    purchase_id: Mapped[str] = mapped_column(String(40))
    customer_id: Mapped[str] = mapped_column(String(40), default="")
    line_id: Mapped[str] = mapped_column(String(40), default="")
    kind: Mapped[str] = mapped_column(String(10))
    code: Mapped[str] = mapped_column(String(60))
    message: Mapped[str] = mapped_column(Text)
    detail: Mapped[str | None] = mapped_column(Text)
    occurrences: Mapped[int] = mapped_column(Integer, default=1)
    first_run_id: Mapped[int | None] = mapped_column(Integer)
    last_run_id: Mapped[int | None] = mapped_column(Integer)
    first_seen: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column()
    slack_channel: Mapped[str | None] = mapped_column(String(40))
    slack_ts: Mapped[str | None] = mapped_column(String(40))


class WaitingExpense(Base):
    """An expense that needs a person to pick its contact or matter. Never dropped."""

    __tablename__ = "waiting_expenses"
    __table_args__ = (
        UniqueConstraint("firm_id", "realm_id", "purchase_id", "customer_id", "line_id",
                         name="uq_waiting_qbo_key"),
        Index("ix_waiting_expenses_firm_open", "firm_id", "resolved_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    firm_id: Mapped[int] = mapped_column(ForeignKey("firms.id", ondelete="CASCADE"))
    realm_id: Mapped[str] = mapped_column(String(40))
    purchase_id: Mapped[str] = mapped_column(String(40))
    customer_id: Mapped[str] = mapped_column(String(40))
    line_id: Mapped[str] = mapped_column(String(40), default="")
    reason: Mapped[str] = mapped_column(String(20))
    contact_id: Mapped[int | None] = mapped_column(Integer)
    candidates: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    entry: Mapped[dict[str, Any]] = mapped_column(JSON)  # the planned entry, serialised
    amount: Mapped[Decimal] = mapped_column()
    txn_date: Mapped[date] = mapped_column(Date)
    customer_name: Mapped[str] = mapped_column(String(300))
    run_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column()
    resolution: Mapped[str | None] = mapped_column(String(40))
    """imported (a run found the matter) | linked (a person chose) | not_client_cost;
    ``claimed`` while a person's choice is being written."""
    resolved_by: Mapped[str | None] = mapped_column(String(40))  # Slack user id
    clio_activity_id: Mapped[int | None] = mapped_column(Integer)
    clio_matter_id: Mapped[int | None] = mapped_column(Integer)
    slack_channel: Mapped[str | None] = mapped_column(String(40))
    slack_ts: Mapped[str | None] = mapped_column(String(40))
    reminded_at: Mapped[datetime | None] = mapped_column()
    prompt_stale: Mapped[bool] = mapped_column(Boolean, default=False)
    """The expense was edited in QuickBooks since its prompt was posted: the prompt is
    updated in place (new amount, date or client) and this goes back to false."""
    group_id: Mapped[int | None] = mapped_column(Integer, index=True)
    """The grouped prompt (``PromptGroup``) this expense's prompt was posted under, if any."""
    suggestion: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """What the prompt says beyond the choices (``hardcost.sync.suggestions``): the matter
    the firm's history supports (``matter_id``, ``reason``; it is also first in
    ``candidates``), and ``note``, why a rule did not apply (its matter is closed)."""


class PromptGroup(Base):
    """One message for several expenses of one client waiting for the same matter choice.

    Members are the ``WaitingExpense`` rows with this ``group_id``; each keeps its own prompt
    (in the group message's thread) and is answered through the same claim as a single click,
    so a group choice and a click on one member never write an entry twice. ``resolution`` is
    ``claimed`` while a group choice is being written, then ``linked``.
    """

    __tablename__ = "prompt_groups"
    __table_args__ = (Index("ix_prompt_groups_firm_open", "firm_id", "customer_id",
                            "resolved_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    firm_id: Mapped[int] = mapped_column(ForeignKey("firms.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(String(40))
    customer_name: Mapped[str] = mapped_column(String(300))
    choice_key: Mapped[str] = mapped_column(String(1000))  # the members' matter ids, sorted
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column()
    resolution: Mapped[str | None] = mapped_column(String(20))
    resolved_by: Mapped[str | None] = mapped_column(String(40))
    outcome: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # what the choice did
    shown: Mapped[list[int] | None] = mapped_column(JSON)
    """The waiting expenses (ids) its message shows: a choice on it answers these and no
    other (one that joined after a digest was posted is asked anew). None in groups made
    before it was kept: then the open members."""
    slack_channel: Mapped[str | None] = mapped_column(String(40))
    slack_ts: Mapped[str | None] = mapped_column(String(40))


class CachedMatter(Base):
    """One of the firm's open or pending Clio matters, kept so that a person searching for
    the matter of an expense with no client is answered within Slack's 3 seconds without
    asking Clio (``hardcost.sync.matter_cache``)."""

    __tablename__ = "matter_cache"
    __table_args__ = (
        UniqueConstraint("firm_id", "matter_id", name="uq_matter_cache_firm_matter"),
        Index("ix_matter_cache_firm_number", "firm_id", "number_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    firm_id: Mapped[int] = mapped_column(ForeignKey("firms.id", ondelete="CASCADE"))
    matter_id: Mapped[int] = mapped_column(BigInteger)
    display_number: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(String(300))
    client_name: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(20))
    number_key: Mapped[str] = mapped_column(String(100))  # display number, case-folded
    search_text: Mapped[str] = mapped_column(String(720))
    """Display number, client name and description, case-folded: what a search matches."""


_ACTIVE_ANY_ACCOUNT = "removed_at IS NULL AND account_id IS NULL"
_ACTIVE_ONE_ACCOUNT = "removed_at IS NULL AND account_id IS NOT NULL"


class MatterRule(Base):
    """"Always do this for <payee> → <client>": a person's standing choice of matter.

    Applies on later runs to an expense of the same Clio client and QuickBooks payee (and
    account, when set) whose client has several matters, while the rule's matter is still
    open or pending. Removed rules are kept (``removed_at``) for the trail.
    """

    __tablename__ = "matter_rules"
    __table_args__ = (
        Index("ix_matter_rules_firm_match", "firm_id", "contact_id", "payee_id"),
        # At most one active rule per client and payee (and account): two clicks at the same
        # moment make one rule, the other is told it exists (``matter_rules``). Two partial
        # indexes, as a unique index takes NULL accounts for different ones.
        Index("uq_matter_rules_active_any_account", "firm_id", "contact_id", "payee_id",
              unique=True, postgresql_where=text(_ACTIVE_ANY_ACCOUNT),
              sqlite_where=text(_ACTIVE_ANY_ACCOUNT)),
        Index("uq_matter_rules_active_account", "firm_id", "contact_id", "payee_id",
              "account_id", unique=True, postgresql_where=text(_ACTIVE_ONE_ACCOUNT),
              sqlite_where=text(_ACTIVE_ONE_ACCOUNT)),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    firm_id: Mapped[int] = mapped_column(ForeignKey("firms.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(BigInteger)  # the Clio client
    client_name: Mapped[str] = mapped_column(String(300))
    payee_id: Mapped[str] = mapped_column(String(40))  # the QuickBooks entity (vendor …)
    payee_name: Mapped[str] = mapped_column(String(300))
    account_id: Mapped[str | None] = mapped_column(String(40))  # None = any import account
    matter_id: Mapped[int] = mapped_column(BigInteger)
    matter_label: Mapped[str] = mapped_column(String(300))
    created_by: Mapped[str] = mapped_column(String(60))  # Slack user id
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    last_used_at: Mapped[datetime | None] = mapped_column()
    removed_at: Mapped[datetime | None] = mapped_column()
    removed_by: Mapped[str | None] = mapped_column(String(60))


class OAuthState(Base):
    """A "connect QuickBooks/Clio" link: random, single-use, short-lived, bound to who asked."""

    __tablename__ = "oauth_states"

    id: Mapped[int] = mapped_column(primary_key=True)
    firm_id: Mapped[int] = mapped_column(ForeignKey("firms.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(100), unique=True)
    provider: Mapped[str] = mapped_column(String(20))
    region: Mapped[str | None] = mapped_column(String(8))
    slack_team_id: Mapped[str | None] = mapped_column(String(40))
    slack_user_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column()
    outcome: Mapped[str | None] = mapped_column(String(40))


class WebhookEvent(Base):
    """A QuickBooks change notification for one purchase, stored before the webhook is answered.

    ``dedupe_key`` (the CloudEvents ``id``; legacy ``name:id:operation:lastUpdated``) makes
    Intuit's redeliveries harmless. A worker claims rows by moving ``next_attempt_at`` forward
    under a ``claim_token`` (a lease: a crashed worker's rows come back when it runs out), runs
    one targeted import per firm, and sets ``processed_at``; a failed run leaves the rows
    unprocessed with ``attempts``/``last_error`` and a later ``next_attempt_at``.
    """

    __tablename__ = "webhook_events"
    __table_args__ = (
        UniqueConstraint("firm_id", "dedupe_key", name="uq_webhook_events_dedupe"),
        Index("ix_webhook_events_unprocessed", "processed_at"),  # the queue depth (/metrics)
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    firm_id: Mapped[int] = mapped_column(ForeignKey("firms.id", ondelete="CASCADE"))
    realm_id: Mapped[str] = mapped_column(String(40))
    entity: Mapped[str] = mapped_column(String(40))  # "Purchase"
    entity_id: Mapped[str] = mapped_column(String(40))
    operation: Mapped[str] = mapped_column(String(20))  # Create | Update | Delete | Void | …
    event_time: Mapped[datetime | None] = mapped_column()
    dedupe_key: Mapped[str] = mapped_column(String(200))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    claim_token: Mapped[str | None] = mapped_column(String(40))
    processed_at: Mapped[datetime | None] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class AuditEntry(Base):
    """One change hardcost made or a person asked for: the firm's audit trail (append-only).

    Written in the same transaction as the change it records (``hardcost.sync.audit``); the
    migration adds a trigger that refuses UPDATEs.
    """

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_firm_id_id", "firm_id", "id"),
        Index("ix_audit_log_firm_at", "firm_id", "at"),
        Index("ix_audit_log_firm_purchase", "firm_id", "purchase_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    firm_id: Mapped[int] = mapped_column(ForeignKey("firms.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(60))  # a Slack user id, or schedule | webhook | …
    action: Mapped[str] = mapped_column(String(30))  # hardcost.sync.audit.Action
    realm_id: Mapped[str | None] = mapped_column(String(40))
    purchase_id: Mapped[str | None] = mapped_column(String(40))
    customer_id: Mapped[str | None] = mapped_column(String(40))
    line_id: Mapped[str | None] = mapped_column(String(40))
    client: Mapped[str | None] = mapped_column(String(300))  # the QuickBooks customer's name
    amount: Mapped[Decimal | None] = mapped_column()
    clio_activity_id: Mapped[int | None] = mapped_column(BigInteger)
    clio_matter_id: Mapped[int | None] = mapped_column(BigInteger)
    matter: Mapped[str | None] = mapped_column(String(300))  # "00042 Smith v. Jones"
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    detail: Mapped[str | None] = mapped_column(Text)  # what happened, in words
    run_id: Mapped[int | None] = mapped_column(Integer)


class RateBucket(Base):
    """A rate-limit budget shared by every process on the database (``hardcost.sync.pacing``).

    ``key`` is ``qbo:<realm>`` or ``clio:<connection id>`` (never a token). ``capacity`` is the
    service's limit per period (Clio's follows ``X-RateLimit-Limit``); ``tokens`` may be below
    zero while callers queue for a QuickBooks bucket; ``window_ends_at`` is Clio's window end.
    Times are the database's clock.
    """

    __tablename__ = "rate_buckets"
    __table_args__ = (UniqueConstraint("firm_id", "key", name="uq_rate_buckets_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    firm_id: Mapped[int] = mapped_column(ForeignKey("firms.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(100))
    capacity: Mapped[int] = mapped_column(Integer)
    tokens: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[datetime] = mapped_column()
    window_ends_at: Mapped[datetime | None] = mapped_column()

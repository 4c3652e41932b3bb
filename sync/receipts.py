"""Receipts follow the cost: files attached in QuickBooks are filed on the matters in Clio, once.

Two tables (``sync/store.py``): ``receipt_files`` knows each QuickBooks ``Attachable`` and the
transaction it is attached to (noted from the run's CDC call, from a query while a first
import or a "turned on" catches up, or from a read); ``receipt_links`` holds one row per
(Attachable, matter), the same discipline as ``entry_links`` for entries:

1. a ``pending`` row is committed before anything is uploaded;
2. when an earlier attempt left the row (a crash, a failure), Clio is asked for a document
   carrying the receipt's external property (uncompleted ones too) before uploading: a
   complete one settles the row, a half-finished one is completed with a fresh upload of the
   bytes, none is created; a row this run has just made skips the look-up (no attempt before
   it can have left a document);
3. the bytes are streamed from QuickBooks' ``TempDownloadUri`` into a spooled temporary file
   (memory up to ``SPOOL_BYTES``, disk past it) while counted, so the storage PUT carries a
   known ``Content-Length`` and a file of any size never sits in memory; an expired link is
   renewed once by reading the Attachable again; a file over ``MAX_BYTES`` is skipped with a
   reason;
4. ``fully_uploaded`` is set (PATCH) and the row settled ``created`` with the document's id.

hardcost never deletes a document in Clio: a file removed in QuickBooks stays filed and the
audit trail says so; an entry moved to another matter gets the receipt there too (the key is
the matter). A receipt's failure is recorded as a failure (``receipt_*`` codes) and never holds
back its expense: the entries are written before this step, and each receipt's errors are
caught on their own.

The firm's receipts state is the ``receipts`` watermark row: ``live`` (CDC brings the changes),
``off`` (the setting is off; turning it on catches up), ``query:<time>`` (Attachables changed
since ``<time>`` are read by query, ``QUERY_PAGES`` pages a run, until none are left) and
``live:due`` (receipts remain to be filed beyond one run's ``FILE_PER_RUN``). A missing row is
a first import (or a firm from before receipts): it catches up as if just turned on.
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from typing import IO, Any, Protocol

from sqlalchemy import and_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync import audit
from hardcost.sync.audit import Action
from hardcost.sync.batches import chunks
from hardcost.sync.bounds import ID, NAME, clip, clip_or_none, fits
from hardcost.sync.clio import ClioClient, Document
from hardcost.sync.clio_errors import DocumentsForbidden
from hardcost.sync.failures import RECEIPT_CODES, Failures
from hardcost.sync.http import ApiError, NotFound
from hardcost.sync.metrics import RECEIPT_BYTES, RECEIPTS
from hardcost.sync.qbo import BILL, DownloadExpired, QboClient, attachable_refs
from hardcost.sync.rules import BILL_PREFIX, LineFailure, is_bill
from hardcost.sync.run_state import RunState
from hardcost.sync.store import (
    EntryLink,
    Failure,
    FailureKind,
    LinkState,
    ReceiptFile,
    ReceiptLink,
    ReceiptState,
    Watermark,
    utcnow,
)
from hardcost.sync.summary import RunProgress, RunStopped, SkippedReceipt

log = logging.getLogger(__name__)

RECEIPTS_STREAM = "receipts"
LIVE, LIVE_DUE, OFF, QUERY = "live", "live:due", "off", "query:"
EXTERNAL_NAME = "hardcost_receipt"
"""The external property that ties a Clio document to ``<realm>:<Attachable id>:<matter id>``."""
MAX_BYTES = 250 * 1024 * 1024
"""Files larger than this are not filed (skipped with a reason)."""
SPOOL_BYTES = 4 * 1024 * 1024
"""A download is held in memory up to this size, in a temporary file past it."""
CHUNK = 256 * 1024
QUERY_PAGES = 2
"""Pages of Attachables (1,000 each) a catching-up run reads; the next run goes on."""
FILE_PER_RUN = 500
"""Receipts one run files at most; the next run files the rest (``live:due``)."""
FILE_NAME = 300
CONTENT_TYPE = 100
FAILURE_PREFIX = RECEIPT_CODES


class ImporterLike(Protocol):
    sessions: sessionmaker[Session]
    firm_id: int
    qbo: QboClient
    clio: ClioClient
    clock: Callable[[], datetime]

    def writer_state(self, trigger: str) -> RunState: ...


class Skipped(Exception):
    """The file is not filed, for a reason a person reads (too large, no file)."""


@dataclass
class Due:
    """One file to put on one matter."""

    file: ReceiptFile
    matter_id: int
    txn_date: date
    amount: Decimal
    link: ReceiptLink | None = None


@dataclass
class _Labels:
    payees: dict[str, str] = field(default_factory=dict)  # txn key → payee name


# -- noting Attachables ---------------------------------------------------------------------

def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _updated(obj: Mapping[str, Any]) -> str | None:
    meta = obj.get("MetaData")
    value = meta.get("LastUpdatedTime") if isinstance(meta, Mapping) else None
    # kept only when it fits the column, and the ``query:<time>`` state with it
    return value if isinstance(value, str) and fits(value, 40 - len(QUERY)) else None


def note(sessions: sessionmaker[Session], firm_id: int, realm_id: str,
         attachables: Iterable[Any], clock: Callable[[], datetime], actor: str = "schedule"
         ) -> int:
    """Record what QuickBooks says of these Attachables (raw objects): one ``receipt_files``
    row per file and transaction; a deleted Attachable, an inactive reference or one no longer
    there marks the row removed (its documents stay in Clio; the trail says so). Returns how
    many rows changed."""
    changed = 0
    now = clock()
    objects = {str(obj["Id"]): obj for obj in attachables
               if isinstance(obj, Mapping) and obj.get("Id") is not None
               and fits(str(obj["Id"]), ID) and str(obj["Id"]).isdigit()}
    with sessions() as session:
        stored: dict[str, dict[str, ReceiptFile]] = {}
        for chunk in chunks(sorted(objects), 500):  # the page's rows, read at once
            for known_row in session.scalars(select(ReceiptFile).where(
                    ReceiptFile.firm_id == firm_id, ReceiptFile.realm_id == realm_id,
                    ReceiptFile.attachable_id.in_(chunk))):
                stored.setdefault(known_row.attachable_id, {})[known_row.txn_key] = known_row
        for attachable_id, obj in objects.items():
            rows = stored.get(attachable_id, {})
            deleted = str(obj.get("status") or "").lower() == "deleted"
            name = _text(obj.get("FileName"))
            refs: dict[str, bool] = {}
            if not deleted and name is not None:
                for entity, txn_id, inactive in attachable_refs(obj):
                    key = f"{BILL_PREFIX}{txn_id}" if entity == BILL else txn_id
                    refs[key] = refs.get(key, True) and inactive
            for key, known in rows.items():
                if key not in refs or refs[key]:
                    changed += _mark_removed(session, known, now, actor)
            size = obj.get("Size")
            size_value = int(size) if isinstance(size, (int, float)) and not isinstance(
                size, bool) and 0 <= size < 2**62 else None
            for key, inactive in refs.items():
                if inactive or not fits(key, ID):
                    continue
                row = rows.get(key)
                if row is None:
                    row = ReceiptFile(firm_id=firm_id, realm_id=realm_id,
                                      attachable_id=attachable_id, txn_key=key, seen_at=now)
                    session.add(row)
                row.file_name = clip(name or "receipt", FILE_NAME)
                row.content_type = _content_type(obj.get("ContentType"))
                row.size = size_value
                row.removed, row.removed_at = False, None
                row.qbo_updated_at = _updated(obj)
                row.seen_at = now
                changed += 1
        session.commit()
    return changed


_MIME = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")


def _content_type(value: Any) -> str | None:
    """A MIME type as QuickBooks gives it when it is one (it becomes a header of the upload:
    ASCII, no parameters), else None (Clio's default)."""
    if not isinstance(value, str):
        return None
    value = value.strip().lower()
    return value if len(value) <= CONTENT_TYPE and _MIME.fullmatch(value) else None


def _mark_removed(session: Session, row: ReceiptFile, now: datetime, actor: str) -> int:
    if row.removed:
        return 0
    row.removed, row.removed_at = True, now
    filed = session.scalars(select(ReceiptLink).where(
        ReceiptLink.firm_id == row.firm_id, ReceiptLink.realm_id == row.realm_id,
        ReceiptLink.attachable_id == row.attachable_id,
        ReceiptLink.state == ReceiptState.CREATED.value)).all()
    for link in filed:
        audit.record(session, row.firm_id, Action.RECEIPT_KEPT, actor, realm_id=row.realm_id,
                     purchase_id=row.txn_key, clio_matter_id=link.matter_id,
                     after={"document_id": link.clio_document_id, "file": row.file_name},
                     detail=(f"The file {row.file_name} was removed in QuickBooks; its copy "
                             f"stays in the matter's documents in Clio (document "
                             f"#{link.clio_document_id})."), at=now)
    return 1


# -- the firm's receipts state --------------------------------------------------------------

def stored_state(sessions: sessionmaker[Session], firm_id: int) -> str | None:
    with sessions() as session:
        return session.scalars(select(Watermark.value).where(
            Watermark.firm_id == firm_id, Watermark.stream == RECEIPTS_STREAM)).one_or_none()


def save_state(sessions: sessionmaker[Session], firm_id: int, value: str) -> None:
    with sessions() as session:
        row = session.scalars(select(Watermark).where(
            Watermark.firm_id == firm_id, Watermark.stream == RECEIPTS_STREAM)).one_or_none()
        if row is None:
            session.add(Watermark(firm_id=firm_id, stream=RECEIPTS_STREAM, value=value))
        elif row.value != value:
            row.value = value
        session.commit()


def query_from(sessions: sessionmaker[Session], firm_id: int, since: str | None) -> None:
    """CDC could not answer for the whole time since ``since`` (offline too long, refused,
    saturated): the next receipts step reads the Attachables changed since then by query."""
    current = stored_state(sessions, firm_id)
    if current is None or current == OFF or current.startswith(QUERY):
        return  # already catching up (from earlier), or receipts are off
    value = QUERY + (since or "")
    save_state(sessions, firm_id, value if fits(value, 40) else QUERY)


def catching_up(value: str | None) -> bool:
    """Whether the firm's receipts state asks for a query of Attachables (or is unknown)."""
    return value is None or value == OFF or value.startswith(QUERY)


# -- filing ---------------------------------------------------------------------------------

def document_name(day: date, payee: str | None, amount: Decimal, file_name: str) -> str:
    """"2026-11-24 Speedy Couriers 88.40 – speedy-5101.pdf", at most ``bounds.NAME``."""
    head = " ".join(x for x in (day.isoformat(), payee, f"{amount:.2f}") if x)
    return clip(f"{head} – {file_name}", NAME)


def external_value(realm_id: str, attachable_id: str, matter_id: int) -> str:
    return f"{realm_id}:{attachable_id}:{matter_id}"


class Receipts:
    """One firm's receipts step: catch up by query when needed, then file what is due."""

    def __init__(self, sessions: sessionmaker[Session], firm_id: int, qbo: QboClient,
                 clio: ClioClient, *, clock: Callable[[], datetime] = utcnow,
                 stopping: threading.Event | None = None, failures: Failures | None = None,
                 progress: Callable[[RunState, str], None] | None = None) -> None:
        self.sessions = sessions
        self.firm_id = firm_id
        self.qbo = qbo
        self.clio = clio
        self.clock = clock
        self.stopping = stopping or threading.Event()
        self.failures = failures or Failures(sessions, firm_id, clock=clock)
        self.progress = progress
        self.noted = 0

    # the run's step

    def run(self, state: RunState) -> None:
        """After the run's entries are written: note Attachables (a query while catching
        up), then file the receipts due. Never raises an ``ApiError``: what fails is recorded
        and the next run tries again (a stop asked for ends the step)."""
        marks = state.open.marks
        value = marks[RECEIPTS_STREAM][0] if marks is not None and \
            RECEIPTS_STREAM in marks else (stored_state(self.sessions, self.firm_id)
                                          if marks is None else None)
        if not state.settings.receipts:
            if value != OFF:
                save_state(self.sessions, self.firm_id, OFF)
            return
        realm_id = state.firm.qbo_realm_id or ""
        more_query = False
        if catching_up(value):
            try:
                more_query = self._query(state, realm_id, value)
            except ApiError as exc:
                log.warning("firm %s: Attachables not read (%s); the next run tries again",
                            self.firm_id, exc)
                return
        summary = state.summary
        if not (self.noted or catching_up(value) or value == LIVE_DUE
                or state.open.receipts or summary.imported or summary.changed_items):
            return  # nothing can have become due: no statement on a quiet run
        left = self.file_due(state, realm_id, limit=FILE_PER_RUN)
        if not more_query:
            save_state(self.sessions, self.firm_id, LIVE_DUE if left else LIVE)

    def _query(self, state: RunState, realm_id: str, value: str | None) -> bool:
        """Read Attachables changed since the stored point (all of them at first), at most
        ``QUERY_PAGES`` pages; True while more remain (the point is saved for the next run)."""
        since = value[len(QUERY):] or None if value is not None and \
            value.startswith(QUERY) else None
        last = since
        pages = 0
        for page in self.qbo.attachables_since(since):
            self.noted += note(self.sessions, self.firm_id, realm_id, page, self.clock,
                               state.actor)
            for obj in page:
                if isinstance(obj, Mapping) and (moment := _updated(obj)) is not None:
                    last = moment
            pages += 1
            if self.progress is not None and page:  # an empty read is no news
                self.progress(state, "receipts")
            if pages >= QUERY_PAGES and len(page) >= 1000:
                if last == since:
                    continue  # a whole page in one second: read on rather than loop
                save_state(self.sessions, self.firm_id, QUERY + (last or ""))
                return True
        return False

    def file_due(self, state: RunState, realm_id: str, *, limit: int,
                 txn_keys: set[str] | None = None) -> bool:
        """File the receipts due (of ``txn_keys`` only, when given), ``limit`` at most; True
        when more were due than filed."""
        due = self.due(realm_id, limit + 1, txn_keys)
        more = len(due) > limit
        due = due[:limit]
        if not due:
            return False
        labels = self._labels(due)
        for item in due:
            if self.stopping.is_set():
                raise RunStopped.by(self.stopping)
            try:
                self._file(state, realm_id, item, labels)
            except DocumentsForbidden as exc:
                self._failed(state, item, exc, "receipt_documents_forbidden",
                             "Clio refused hardcost access to documents, so receipts cannot be "
                             "filed: reconnect Clio with the documents permission "
                             "(/hardcost connect clio), then press Retry.")
                return True  # every other receipt would be refused too
            except ApiError as exc:
                code = f"{FAILURE_PREFIX}{exc.code or exc.status or 'error'}".lower()[:60]
                self._failed(state, item, exc, code, self._sentence(item, exc))
            if self.progress is not None:
                self.progress(state, "receipts")
        return more

    def due(self, realm_id: str, limit: int, txn_keys: set[str] | None = None) -> list[Due]:
        """(file, matter) pairs whose transaction has created entries on the matter and no
        created or skipped receipt link there: entries of the same purchase on one matter
        are one receipt (dated the earliest, the sum of their amounts)."""
        with self.sessions() as session:
            query = (select(ReceiptFile, EntryLink.clio_matter_id, EntryLink.txn_date,
                            EntryLink.amount, ReceiptLink)
                     .join(EntryLink, and_(EntryLink.firm_id == ReceiptFile.firm_id,
                                           EntryLink.realm_id == ReceiptFile.realm_id,
                                           EntryLink.purchase_id == ReceiptFile.txn_key))
                     .outerjoin(ReceiptLink, and_(
                         ReceiptLink.firm_id == ReceiptFile.firm_id,
                         ReceiptLink.realm_id == ReceiptFile.realm_id,
                         ReceiptLink.attachable_id == ReceiptFile.attachable_id,
                         ReceiptLink.matter_id == EntryLink.clio_matter_id))
                     .where(ReceiptFile.firm_id == self.firm_id,
                            ReceiptFile.realm_id == realm_id,
                            ReceiptFile.removed.is_(False),
                            EntryLink.state == LinkState.CREATED.value,
                            EntryLink.superseded_at.is_(None),
                            EntryLink.clio_matter_id.is_not(None),
                            (ReceiptLink.id.is_(None)) | ReceiptLink.state.in_(
                                [ReceiptState.PENDING.value, ReceiptState.FAILED.value]))
                     .order_by(ReceiptFile.id, EntryLink.clio_matter_id))
            if txn_keys is not None:
                query = query.where(ReceiptFile.txn_key.in_(sorted(txn_keys)))
            found: dict[tuple[int, int], Due] = {}
            for file, matter, txn_date, amount, link in session.execute(query):
                matter_id = int(matter or 0)  # never None: the query asks for a matter
                key = (file.id, matter_id)
                item = found.get(key)
                if item is None:
                    if len(found) >= limit:
                        break
                    found[key] = Due(file, matter_id, txn_date, amount, link)
                else:
                    item.amount += amount
                    item.txn_date = min(item.txn_date, txn_date)
            return list(found.values())

    def _labels(self, due: list[Due]) -> _Labels:
        """The payees of the transactions (one read of purchases, one of Bills): the names
        of the documents. A read that fails leaves the payee out of the names."""
        labels = _Labels()
        keys = {d.file.txn_key for d in due}
        purchases = [k for k in keys if not is_bill(k)]
        bills = [k[len(BILL_PREFIX):] for k in keys if is_bill(k)]
        try:
            found = (self.qbo.purchases_by_id(purchases) if purchases else []) + \
                    (self.qbo.bills_by_id(bills) if bills else [])
        except ApiError as exc:
            log.info("firm %s: payees of receipts not read (%s)", self.firm_id, exc)
            return labels
        for doc in found:
            if not isinstance(doc, Mapping) or doc.get("Id") is None:
                continue
            ref = doc.get("EntityRef") or doc.get("VendorRef")
            name = ref.get("name") if isinstance(ref, Mapping) else None
            key = (f"{BILL_PREFIX}{doc['Id']}" if "VendorRef" in doc and "EntityRef" not in doc
                   else str(doc["Id"]))
            if isinstance(name, str) and name.strip():
                labels.payees[key] = clip(name.strip(), NAME)
        return labels

    def _pending(self, realm_id: str, item: Due, run_id: int | None
                 ) -> tuple[ReceiptLink, bool] | None:
        """The link row, pending and committed before the upload, and whether this call made
        it (no earlier attempt, so no document of it can be in Clio: the look-up is skipped);
        None when it is settled already (another process filed it meanwhile)."""
        file = item.file
        with self.sessions() as session:
            link = session.scalars(select(ReceiptLink).where(
                ReceiptLink.firm_id == self.firm_id, ReceiptLink.realm_id == realm_id,
                ReceiptLink.attachable_id == file.attachable_id,
                ReceiptLink.matter_id == item.matter_id)).one_or_none()
            if link is None:
                link = ReceiptLink(firm_id=self.firm_id, realm_id=realm_id,
                                   attachable_id=file.attachable_id, matter_id=item.matter_id,
                                   txn_key=file.txn_key, state=ReceiptState.PENDING.value,
                                   run_id=run_id)
                session.add(link)
                try:
                    session.commit()
                except IntegrityError:
                    session.rollback()
                    return None
                return link, True
            if link.state in (ReceiptState.CREATED.value, ReceiptState.SKIPPED.value):
                return None
            link.state = ReceiptState.PENDING.value
            link.run_id = run_id
            session.commit()
            return link, False

    def _file(self, state: RunState, realm_id: str, item: Due, labels: _Labels) -> None:
        file = item.file
        pending = self._pending(realm_id, item, state.summary.run_id)
        if pending is None:
            return
        link, first = pending
        value = external_value(realm_id, file.attachable_id, item.matter_id)
        # An earlier attempt (a crash, a failure) may have left a document in Clio, complete
        # or not: looked up by its external property first. A row this call made has none.
        found = [] if first else [
            d for d in self.clio.find_documents(name=EXTERNAL_NAME, value=value)
            if d.external.get(EXTERNAL_NAME, value) == value]
        complete = next((d for d in found if d.fully_uploaded), None)
        name = document_name(item.txn_date, labels.payees.get(file.txn_key), item.amount,
                             file.file_name)
        if complete is not None:
            self._settle(state, link, item, complete, complete.size, complete.name)
            return
        if file.size is not None and file.size > MAX_BYTES:
            self._skip(state, link, item, _too_large(file.file_name, file.size))
            return
        half = found[0] if found else None
        try:
            with self._download(file) as (body, length):
                if half is not None:
                    upload = self.clio.new_version(half.id, name=name,
                                                   content_type=file.content_type)
                else:
                    upload = self.clio.create_document(
                        name=name, matter_id=item.matter_id, content_type=file.content_type,
                        received_at=item.txn_date, external={EXTERNAL_NAME: value})
                self.clio.put_bytes(upload, body, length)
                document = self.clio.finish_document(upload.document_id, upload.uuid)
        except Skipped as exc:
            self._skip(state, link, item, str(exc))
            return
        self._settle(state, link, item, document, length, name)

    def _download(self, file: ReceiptFile) -> _Spool:
        return _Spool(self.qbo, file)

    def _settle(self, state: RunState, link: ReceiptLink, item: Due, document: Document,
                length: int | None, name: str) -> None:
        now = self.clock()
        with self.sessions() as session:
            session.execute(update(ReceiptLink).where(ReceiptLink.id == link.id).values(
                state=ReceiptState.CREATED.value, clio_document_id=document.id,
                uuid=clip_or_none(document.uuid, 100), bytes=length, name=clip(name, NAME),
                reason=None, updated_at=now))
            audit.record(session, self.firm_id, Action.RECEIPT_FILED, state.actor,
                         realm_id=link.realm_id, purchase_id=item.file.txn_key,
                         amount=item.amount, clio_matter_id=item.matter_id,
                         after={"document_id": document.id, "name": name,
                                "file": item.file.file_name, "bytes": length},
                         detail=(f"{item.file.file_name} filed in the matter's documents in Clio "
                                 f"as “{name}” (document #{document.id})."), at=now)
            _close_failures(session, self.firm_id, item, now)
            session.commit()
        state.summary.receipts_filed += 1
        state.summary.receipt_bytes += length or 0
        RECEIPTS.inc()
        RECEIPT_BYTES.inc(length or 0)

    def _skip(self, state: RunState, link: ReceiptLink, item: Due, reason: str) -> None:
        """Not filed, for good: the record keeps the reason, the trail and the run's summary
        say it so a person adds the file by hand (once: a skipped record is not tried again)."""
        now = self.clock()
        reason = clip(reason, 1000)
        with self.sessions() as session:
            session.execute(update(ReceiptLink).where(ReceiptLink.id == link.id).values(
                state=ReceiptState.SKIPPED.value, reason=reason, updated_at=now))
            audit.record(session, self.firm_id, Action.RECEIPT_SKIPPED, state.actor,
                         realm_id=link.realm_id, purchase_id=item.file.txn_key,
                         amount=item.amount, clio_matter_id=item.matter_id,
                         after={"file": item.file.file_name, "bytes": item.file.size},
                         detail=reason, at=now)
            session.commit()
        state.summary.receipts_skipped.append(
            SkippedReceipt(item.file.txn_key, item.file.file_name, reason))

    def _failed(self, state: RunState, item: Due, exc: ApiError, code: str,
                sentence: str) -> None:
        log.info("firm %s: receipt %s for matter %s not filed: %s", self.firm_id,
                 item.file.attachable_id, item.matter_id, exc)
        with self.sessions() as session:
            session.execute(update(ReceiptLink).where(
                ReceiptLink.firm_id == self.firm_id,
                ReceiptLink.attachable_id == item.file.attachable_id,
                ReceiptLink.matter_id == item.matter_id,
                ReceiptLink.state == ReceiptState.PENDING.value).values(
                    state=ReceiptState.FAILED.value, reason=clip(sentence, 1000),
                    updated_at=self.clock()))
            session.commit()
        # retried by every run either way; CONFIG when the firm must act (a permission)
        kind = FailureKind.CONFIG if exc.kind == FailureKind.CONFIG else FailureKind.TRANSIENT
        failure = LineFailure(item.file.txn_key, code, sentence,
                              line_id=_failure_line(item))
        self.failures.record(state, failure, kind, False, detail=str(exc))
        state.summary.receipts_failed += 1

    @staticmethod
    def _sentence(item: Due, exc: ApiError) -> str:
        name = item.file.file_name
        if isinstance(exc, NotFound) and exc.service == "QuickBooks":
            return (f"QuickBooks no longer serves the file {name}; attach it again in "
                    "QuickBooks, or press Retry.")
        if exc.service == "QuickBooks":
            return (f"QuickBooks did not hand over the file {name} ({exc.message}); hardcost "
                    "tries again on the next run, or press Retry.")
        return (f"Clio did not take the receipt {name}: {exc.message} hardcost tries again on "
                "the next run, or press Retry.")


def _failure_line(item: Due) -> str:
    """The failure's ``line_id``: which receipt on which matter (fits 40 characters)."""
    text = f"r{item.file.attachable_id}m{item.matter_id}"
    return text if fits(text, ID) else text[:ID]


def _close_failures(session: Session, firm_id: int, item: Due, now: datetime) -> None:
    session.execute(update(Failure).where(
        Failure.firm_id == firm_id, Failure.resolved_at.is_(None),
        Failure.purchase_id == item.file.txn_key, Failure.line_id == _failure_line(item),
        Failure.code.startswith(FAILURE_PREFIX)).values(resolved_at=now))


def _too_large(file_name: str, size: int) -> str:
    return (f"{file_name} is {size / 1024 / 1024:,.0f} MB, over the {MAX_BYTES // 1024 // 1024} "
            "MB hardcost files; add it to the matter in Clio by hand.")


class _Spool:
    """``with _Spool(qbo, file) as (body, length)``: the file's bytes from QuickBooks in a
    spooled temporary file, counted; an expired link is renewed once."""

    def __init__(self, qbo: QboClient, file: ReceiptFile) -> None:
        self.qbo = qbo
        self.file = file
        self.spool: IO[bytes] | None = None

    def __enter__(self) -> tuple[IO[bytes], int]:
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
        self.spool = spool
        for attempt in (1, 2):
            found = self.qbo.attachable(self.file.attachable_id)
            if found is None:
                raise NotFound("QuickBooks", f"QuickBooks no longer has {self.file.file_name}.")
            url = found.get("TempDownloadUri")
            if not isinstance(url, str) or not url:
                raise Skipped(f"QuickBooks has no file for {self.file.file_name} any more.")
            try:
                length = self._copy(url, spool)
            except DownloadExpired:
                if attempt == 2:
                    raise
                spool.seek(0)
                spool.truncate()
                continue
            spool.seek(0)
            return spool, length
        raise AssertionError("unreachable")

    def _copy(self, url: str, spool: IO[bytes]) -> int:
        length = 0
        with self.qbo.open_download(url) as response:
            for chunk in response.iter_content(CHUNK):
                length += len(chunk)
                if length > MAX_BYTES:
                    raise Skipped(_too_large(self.file.file_name, length))
                spool.write(chunk)
        return length

    def __exit__(self, *exc: object) -> None:
        if self.spool is not None:
            self.spool.close()


# -- outside a run --------------------------------------------------------------------------

def file_after_choice(importer: ImporterLike, purchase_id: str, actor: str) -> int:
    """File the receipts of one purchase whose entry a person's choice (or a grouped answer)
    just wrote; returns how many were filed. Errors are recorded, never raised: the choice
    is done whatever happens to its receipts."""
    try:
        state = importer.writer_state(actor)
        if not state.settings.receipts:
            return 0
        step = Receipts(importer.sessions, importer.firm_id, importer.qbo, importer.clio,
                        clock=importer.clock)
        step.file_due(state, state.firm.qbo_realm_id or "", limit=FILE_PER_RUN,
                      txn_keys={purchase_id})
        return state.summary.receipts_filed
    except Exception:  # noqa: BLE001 - a receipt never undoes a person's choice
        log.exception("firm %s: receipts of %s not filed after a choice", importer.firm_id,
                      purchase_id)
        return 0


class RunningImporter(ImporterLike, Protocol):
    stopping: threading.Event
    on_progress: Callable[[RunProgress], None] | None

    def _progress(self, state: RunState, stage: str, purchases_read: int | None = None
                  ) -> None: ...


def run_step(importer: RunningImporter, failures: Failures, state: RunState) -> None:
    """The run's receipts step (``Importer``, once the entries are written): progress is told
    at stage ``receipts`` with ``RunProgress.receipts_filed``."""

    def progress(state: RunState, stage: str) -> None:
        listener = importer.on_progress
        if listener is None:
            return

        def with_receipts(figures: RunProgress) -> None:
            listener(replace(figures, receipts_filed=state.summary.receipts_filed))

        importer.on_progress = with_receipts
        try:
            importer._progress(state, stage)  # noqa: SLF001 - the importer's own figures
        finally:
            importer.on_progress = listener

    Receipts(importer.sessions, importer.firm_id, importer.qbo, importer.clio,
             clock=importer.clock, stopping=importer.stopping, failures=failures,
             progress=progress).run(state)

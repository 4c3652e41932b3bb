"""QuickBooks webhooks: verify, read and store change notifications; later, import them.

Intuit wants a 200 within 3 s and redelivers (out of order, more than once), so receiving only
verifies the signature, reads the body and stores one ``WebhookEvent`` per purchase event; no
QuickBooks or Clio call happens then. :func:`process_pending` (the server's webhook worker, or
a test) claims stored events and runs one targeted import per firm for the purchases named.
Re-reading a purchase is harmless (the entry-link key), so redeliveries cost a read at most.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync.batches import chunks
from hardcost.sync.bills import OFF, PAYMENT_PREFIX, document_id
from hardcost.sync.bounds import ID, clean, clip, digest_key, fits
from hardcost.sync.importer import SHUTDOWN, Importer
from hardcost.sync.leases import Lease, RunStop, run_soon
from hardcost.sync.qbo import instant
from hardcost.sync.removals import note_removals
from hardcost.sync.store import Firm, FirmSettings, WebhookEvent, utcnow
from hardcost.sync.summary import RunSummary

log = logging.getLogger(__name__)

PURCHASE = "Purchase"
BILL = "Bill"
BILL_PAYMENT = "BillPayment"
IMPORTED_ENTITIES = frozenset({PURCHASE, BILL, BILL_PAYMENT})
ATTACHABLE = "Attachable"
"""A file attached or changed: not stored as an event; the firm's next run is brought forward
(its CDC call reads Attachables, ``sync/receipts.py``)."""
"""Entities whose changes are stored: Bills and their payments matter to firms that import
Bills (``bills on-entry|on-payment``); for the others they are dropped when processed."""
_ENTITY_NAMES = {name.lower(): name for name in (*IMPORTED_ENTITIES, ATTACHABLE)}
IMPORTED_OPERATIONS = frozenset({"Create", "Update", "Void"})
DELETE = "Delete"
LEASE = timedelta(minutes=15)
"""How long a claim holds: a worker that died mid-run frees its events after this."""
MAX_ATTEMPTS = 8
"""After this many failed runs an event is given up (marked processed with its error): the
scheduled runs read every changed purchase anyway, so nothing is lost."""
CLOUDEVENT_VERBS = {"created": "Create", "updated": "Update", "deleted": "Delete",
                    "voided": "Void", "merged": "Merge", "emailed": "Emailed"}
OPERATION = 20  # WebhookEvent.operation: QuickBooks' operations are single short words
ENTITY = 40  # WebhookEvent.entity
DEDUPE_KEY = 200  # WebhookEvent.dedupe_key: longer keys are kept as their digest
_CLOUDEVENT_TYPE = re.compile(r"^qbo\.(?P<entity>[a-z0-9]+)\.(?P<verb>[a-z]+)\.v\d+$")


class MalformedDelivery(ValueError):
    """The body is not JSON or not either webhook shape Intuit sends, or none of the changes
    it names can be read."""


class _BadChange(ValueError):
    """One notification or event that cannot be read: it is skipped (logged), the rest of the
    delivery is kept."""


@dataclass(frozen=True)
class EntityChange:
    """One entity change named by a delivery, in either format. Every field fits its column
    (``WebhookEvent``): a change whose ids or operation do not is skipped, not stored."""

    realm_id: str
    entity: str  # QuickBooks' entity name: "Purchase", "Bill", …
    entity_id: str
    operation: str  # Create | Update | Delete | Void | Merge | …
    event_time: datetime | None
    dedupe_key: str


def signature_valid(verifier: str, body: bytes, signature: str | None) -> bool:
    """``intuit-signature`` is base64(HMAC-SHA256(verifier, raw body)); constant-time compare."""
    if not signature:
        return False
    expected = base64.b64encode(hmac.new(verifier.encode(), body, hashlib.sha256).digest())
    return hmac.compare_digest(expected, signature.strip().encode())


def parse_delivery(body: bytes) -> list[EntityChange]:
    """The changes in a legacy (``eventNotifications``) or CloudEvents (array) body.

    A notification or event that cannot be read (a missing or overlong id, an operation
    QuickBooks never sends) is skipped and logged; the others are kept. Raises
    :class:`MalformedDelivery` when the body is not a delivery at all, or when every change
    it names was skipped."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedDelivery(f"not JSON: {exc}") from exc
    except RecursionError:  # signed, but nested thousands deep: no delivery looks like that
        raise MalformedDelivery("nested too deeply to be a QuickBooks delivery") from None
    skipped: list[str] = []
    if isinstance(payload, dict) and "eventNotifications" in payload:
        changes, read = _legacy(payload["eventNotifications"], skipped)
    else:
        if isinstance(payload, dict) and "specversion" in payload:
            payload = [payload]  # a single event in structured mode
        if not isinstance(payload, list):
            raise MalformedDelivery("neither eventNotifications nor a CloudEvents array")
        changes, read = _cloud_events(payload, skipped)
    if skipped:
        log.warning("webhook: %d change(s) of the delivery skipped, %d kept: %s",
                    len(skipped), len(changes), "; ".join(skipped[:5]))
        if read == 0:
            raise MalformedDelivery(skipped[0])
    return changes


def _legacy(notifications: Any, skipped: list[str]) -> tuple[list[EntityChange], int]:
    """(the changes, how many entities could be read, purchases or not)."""
    if not isinstance(notifications, list):
        raise MalformedDelivery("eventNotifications is not a list")
    changes: list[EntityChange] = []
    read = 0
    for notification in notifications:
        try:
            if not isinstance(notification, dict):
                raise _BadChange("a notification is not an object")
            realm = _text(notification, "realmId", ID)
            event = notification.get("dataChangeEvent")
            entities = event.get("entities") if isinstance(event, dict) else None
            if not isinstance(entities, list):
                raise _BadChange("dataChangeEvent.entities is not a list")
        except _BadChange as exc:
            skipped.append(str(exc))
            continue
        for entity in entities:
            try:
                changes.append(_legacy_change(realm, entity))
                read += 1
            except _BadChange as exc:
                skipped.append(str(exc))
    return changes, read


def _legacy_change(realm: str, entity: Any) -> EntityChange:
    if not isinstance(entity, dict):
        raise _BadChange("an entity is not an object")
    name = _text(entity, "name", 200)
    entity_id = _text(entity, "id", ID)
    operation = _text(entity, "operation", OPERATION)
    updated = entity.get("lastUpdated")
    updated_text = clean(updated) if isinstance(updated, str) else ""
    return EntityChange(realm, name if name in IMPORTED_ENTITIES else clip(name, ENTITY),
                        entity_id, operation, _when(updated_text),
                        _key(f"{name}:{entity_id}:{operation}:{updated_text}"))


def _cloud_events(events: list[Any], skipped: list[str]) -> tuple[list[EntityChange], int]:
    changes: list[EntityChange] = []
    read = 0
    for event in events:
        try:
            change = _cloud_event(event)
        except _BadChange as exc:
            skipped.append(str(exc))
            continue
        read += 1
        if change is not None:
            changes.append(change)
    return changes, read


def _cloud_event(event: Any) -> EntityChange | None:
    """The change an event names; None for an event that is not a QuickBooks entity change
    (acknowledged and ignored)."""
    if not isinstance(event, dict):
        raise _BadChange("a CloudEvent is not an object")
    event_id, event_type = _text(event, "id", 200), _text(event, "type", 200)
    _text(event, "specversion", 200)
    matched = _CLOUDEVENT_TYPE.match(event_type)
    if matched is None:
        log.info("webhook: CloudEvent type %r is not a QuickBooks entity change; ignored",
                 clip(event_type, 100))
        return None
    verb = matched["verb"]
    operation = CLOUDEVENT_VERBS.get(verb, verb.capitalize())
    if not fits(operation, OPERATION):
        raise _BadChange(f"CloudEvent type {clip(event_type, 100)!r} names no operation "
                         "QuickBooks sends")
    entity = _ENTITY_NAMES.get(matched["entity"], clip(matched["entity"].capitalize(), ENTITY))
    time = event.get("time")
    return EntityChange(_text(event, "intuitaccountid", ID), entity,
                        _text(event, "intuitentityid", ID), operation,
                        _when(time), _key(event_id))


def _text(obj: dict[str, Any], name: str, limit: int) -> str:
    """A field that must be present, a string (or a whole number) of at most ``limit``
    characters without NUL; otherwise the change is skipped."""
    value = obj.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise _BadChange(f"{name} is missing or not a string")
    if not fits(value, limit):
        raise _BadChange(f"{name} is longer than {limit} characters or holds a NUL")
    return value


def _when(value: object) -> datetime | None:
    """The event's time, when it is one a database can keep (as UTC)."""
    moment = instant(clean(value) if isinstance(value, str) else value)
    if moment is None:
        return None
    try:
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):  # "0001-01-01T00:00:00+05:00" has no UTC instant
        return None


def _key(raw: str) -> str:
    return digest_key(raw, DEDUPE_KEY)


@dataclass
class Recorded:
    stored: int = 0
    duplicates: int = 0
    ignored: int = 0  # not a purchase, or no active firm has that company


def record_changes(sessions: sessionmaker[Session], changes: list[EntityChange],
                   now: datetime) -> Recorded:
    """Store each purchase change for every active firm on its company, in one transaction.

    Intuit waits 3 seconds for the answer and redelivers what it does not get: a delivery of
    thousands of entities is stored with one bulk insert, and a change already stored (a
    redelivery, or a concurrent delivery of the same event) is skipped by the unique key."""
    result = Recorded()
    realms = {c.realm_id for c in changes if c.entity in IMPORTED_ENTITIES
              or c.entity == ATTACHABLE}
    ignored: Counter[str] = Counter()
    wanted: dict[tuple[int, str], EntityChange] = {}
    with sessions() as session:
        firms: dict[str, list[int]] = defaultdict(list)
        if realms:
            for firm_id, realm in session.execute(select(Firm.id, Firm.qbo_realm_id).where(
                    Firm.qbo_realm_id.in_(realms), Firm.active.is_(True))):
                firms[str(realm)].append(firm_id)
        due: set[int] = set()
        for change in changes:
            if change.entity == ATTACHABLE and firms.get(change.realm_id):
                due.update(firms[change.realm_id])  # its next run reads the file's change
            elif change.entity not in IMPORTED_ENTITIES:
                ignored[f"{change.entity} (only purchases and Bills are imported)"] += 1
            elif not firms.get(change.realm_id):
                ignored[f"company {change.realm_id} (no active firm has it)"] += 1
            else:
                for firm_id in firms[change.realm_id]:
                    if (firm_id, change.dedupe_key) in wanted:
                        result.duplicates += 1  # twice in one delivery
                    else:
                        wanted[(firm_id, change.dedupe_key)] = change
        known = _stored_keys(session, wanted)
        rows = [{"firm_id": firm_id, "realm_id": change.realm_id, "entity": change.entity,
                 "entity_id": change.entity_id, "operation": change.operation,
                 "event_time": change.event_time, "dedupe_key": key, "received_at": now,
                 "next_attempt_at": now, "attempts": 0}
                for (firm_id, key), change in wanted.items() if (firm_id, key) not in known]
        if rows:
            session.execute(_insert_new(session), rows)
        for firm_id in sorted(due):
            run_soon(session, firm_id, now)
        session.commit()
    result.duplicates += len(known)
    result.stored += len(rows)
    result.ignored += sum(ignored.values())
    for what, count in ignored.items():
        log.info("webhook: %d event(s) for %s acknowledged and dropped", count, what)
    return result


def _stored_keys(session: Session, wanted: dict[tuple[int, str], EntityChange]
                 ) -> set[tuple[int, str]]:
    """Which (firm, dedupe key) pairs are stored already, read in bounded ``IN`` lists."""
    by_firm: dict[int, list[str]] = defaultdict(list)
    for firm_id, key in wanted:
        by_firm[firm_id].append(key)
    known: set[tuple[int, str]] = set()
    for firm_id, keys in by_firm.items():
        for chunk in chunks(keys, 500):
            known.update((firm_id, key) for key in session.scalars(select(
                WebhookEvent.dedupe_key).where(WebhookEvent.firm_id == firm_id,
                                               WebhookEvent.dedupe_key.in_(chunk))))
    return known


def _insert_new(session: Session) -> Any:
    """INSERT … ON CONFLICT DO NOTHING on the dedupe key: a concurrent delivery of the same
    event (stored between our read and our insert) is skipped, not an error."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql_insert(WebhookEvent).on_conflict_do_nothing(
            index_elements=["firm_id", "dedupe_key"])
    if dialect == "sqlite":
        return sqlite_insert(WebhookEvent).on_conflict_do_nothing(
            index_elements=["firm_id", "dedupe_key"])
    return insert(WebhookEvent)


# -- processing --------------------------------------------------------------------------------

AfterRun = Callable[[int, RunSummary], None]
RunGuard = Callable[[int], AbstractContextManager[Lease | None]]
"""Firm id → a block holding the firm's run slot; yields False when a run is under way."""


@dataclass
class Processed:
    """What one :func:`process_pending` pass did."""

    runs: dict[int, RunSummary] = field(default_factory=dict)
    events: int = 0  # events marked processed
    deferred: int = 0  # events kept for a later pass (the run failed)
    busy: int = 0  # events left for the next pass: the firm's import was already running


def process_pending(sessions: sessionmaker[Session], importer_for: Callable[[int], Importer],
                    *, after_run: AfterRun | None = None, guard: RunGuard | None = None,
                    clock: Callable[[], datetime] = utcnow, limit: int = 1000) -> Processed:
    """Claim due events and run one targeted import per firm for the purchases they name.

    The claim is a conditional UPDATE (only rows still unprocessed and due), so two workers or
    replicas never take the same event. ``Delete`` events are recorded as removals and handled
    by the same run (docs/purchases.md, "Deletions and voids": the unbilled Clio entry is deleted).
    A run that fails (an exception, or a summary with an error) leaves its events unprocessed with
    ``attempts`` + 1 and ``last_error``, due again after a backoff. With a ``guard``
    (``BotContext.claim_run``), a firm whose import is already under way in this process keeps its
    events, due at the next pass.
    """
    result = Processed()
    claimed = _claim(sessions, clock(), limit)
    by_firm: dict[int, list[WebhookEvent]] = defaultdict(list)
    for event in claimed:
        by_firm[event.firm_id].append(event)
    for firm_id, events in by_firm.items():
        if guard is None:
            _process_firm(sessions, importer_for, firm_id, events, after_run, clock, result)
            continue
        with guard(firm_id) as lease:
            if lease:
                _process_firm(sessions, importer_for, firm_id, events, after_run, clock, result,
                              lease if isinstance(lease, Lease) else None)
            else:
                _release(sessions, events, clock())
                result.busy += len(events)
    return result


def _release(sessions: sessionmaker[Session], events: list[WebhookEvent],
             now: datetime) -> None:
    with sessions() as session:
        session.execute(update(WebhookEvent).where(
            WebhookEvent.id.in_([e.id for e in events]), WebhookEvent.processed_at.is_(None))
            .values(claim_token=None, next_attempt_at=now)
            .execution_options(synchronize_session=False))
        session.commit()


def _claim(sessions: sessionmaker[Session], now: datetime, limit: int) -> list[WebhookEvent]:
    token = uuid.uuid4().hex
    with sessions() as session:
        due = list(session.scalars(select(WebhookEvent.id).where(
            WebhookEvent.processed_at.is_(None), WebhookEvent.next_attempt_at <= now)
            .order_by(WebhookEvent.id).limit(limit)))
        if not due:
            return []
        session.execute(update(WebhookEvent).where(
            WebhookEvent.id.in_(due), WebhookEvent.processed_at.is_(None),
            WebhookEvent.next_attempt_at <= now)
            .values(claim_token=token, next_attempt_at=now + LEASE)
            .execution_options(synchronize_session=False))
        session.commit()
        return list(session.scalars(select(WebhookEvent).where(
            WebhookEvent.claim_token == token).order_by(WebhookEvent.id)))


def _process_firm(sessions: sessionmaker[Session], importer_for: Callable[[int], Importer],
                  firm_id: int, events: list[WebhookEvent], after_run: AfterRun | None,
                  clock: Callable[[], datetime], result: Processed,
                  lease: Lease | None = None) -> None:
    notes: dict[int, str | None] = {}
    to_import: list[WebhookEvent] = []
    deleted: list[WebhookEvent] = []
    with sessions() as session:
        settings = session.get(FirmSettings, firm_id)
        paused = settings is not None and settings.paused
        bills = settings.bills if settings is not None else OFF
    for event in events:
        if event.entity in (BILL, BILL_PAYMENT) and bills == OFF:
            notes[event.id] = "Bills are not imported (bills off); ignored"
        elif event.entity == BILL_PAYMENT and event.operation == DELETE:
            # Its Bill owes again: imported entries stay, waiting ones go on waiting.
            notes[event.id] = "a deleted Bill Payment does not change what is imported; ignored"
        elif event.operation in IMPORTED_OPERATIONS:
            to_import.append(event)
        elif event.operation == DELETE:
            deleted.append(event)
        else:
            notes[event.id] = f"{event.operation} does not change what is imported; ignored"
    if paused and (to_import or deleted):
        # The watermark has not moved past these purchases: the first run after resuming
        # reads them anyway. Deletions are recorded now and dealt with by that run.
        notes.update({e.id: "imports are paused; the next run after resuming reads it"
                      for e in to_import})
        if deleted:
            note_removals(sessions, firm_id, deleted[0].realm_id,
                          {_document(e): "deleted" for e in deleted}, "webhook", clock())
        notes.update({e.id: "imports are paused; the deletion is dealt with after resuming"
                      for e in deleted})
        to_import, deleted = [], []
    summary: RunSummary | None = None
    error: str | None = None
    if to_import or deleted:
        ids = {_document(e) for e in to_import} - {_document(e) for e in deleted}
        try:
            importer = importer_for(firm_id)
            if lease is not None:  # it stops between entries if its lease is lost
                importer.stopping = RunStop(lease, SHUTDOWN)
            summary = importer.run(
                trigger="webhook", purchase_ids=ids,
                removed={_document(e): "deleted" for e in deleted} or None)
            error = summary.error
        except Exception as exc:  # noqa: BLE001 - the events wait for the next pass
            log.exception("webhook import for firm %s failed", firm_id)
            error = f"{type(exc).__name__}: {exc}"
    now = clock()
    with sessions() as session:
        for event in events:
            row = session.get(WebhookEvent, event.id)
            if row is None:
                continue
            row.claim_token = None
            if event.id in notes:
                row.processed_at, row.last_error = now, notes[event.id]
                result.events += 1
            elif error is None:
                row.processed_at, row.last_error = now, None
                row.attempts += 1
                result.events += 1
            else:
                row.attempts += 1
                row.last_error = error[:2000]
                if row.attempts >= MAX_ATTEMPTS:
                    row.processed_at = now
                    row.last_error = f"gave up after {row.attempts} attempts: {row.last_error}"
                    result.events += 1
                else:
                    row.next_attempt_at = now + _backoff(row.attempts)
                    result.deferred += 1
        session.commit()
    if summary is not None:
        result.runs[firm_id] = summary
        if after_run is not None:
            try:
                after_run(firm_id, summary)
            except Exception:  # noqa: BLE001 - the import is done; Slack catches up later
                log.exception("webhook run notice for firm %s failed", firm_id)


def _document(event: WebhookEvent) -> str:
    """The importer's id of what the event names: a purchase id, ``bill-<id>``, or
    ``billpayment-<id>`` (whose Bills the run reads)."""
    if event.entity == BILL:
        return document_id(event.entity_id)
    if event.entity == BILL_PAYMENT:
        return f"{PAYMENT_PREFIX}{event.entity_id}"
    return event.entity_id


def _backoff(attempts: int) -> timedelta:
    return min(timedelta(seconds=30) * 2 ** (attempts - 1), timedelta(hours=1))

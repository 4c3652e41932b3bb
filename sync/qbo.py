"""QuickBooks Online client: purchases, names, preferences, CDC and attachments (receipts), in
the domain's words."""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import requests

from hardcost.sync.batches import chunks
from hardcost.sync.bills import linked_ids
from hardcost.sync.bounds import ID, fits
from hardcost.sync.http import (
    ApiError,
    ApiSession,
    ConfigError,
    MalformedAnswer,
    NotFound,
    Pacer,
    ReconnectRequired,
    RequestRejected,
    RetryPolicy,
    ServiceDown,
    Throttled,
    TokenSource,
    TransientError,
    parse_json,
    rate_pacer_for,
)
from hardcost.sync.rules import BILL_PREFIX, is_voided
from hardcost.sync.store import FailureKind

log = logging.getLogger(__name__)

MINOR_VERSION = "75"
PAGE_SIZE = 1000  # QBO's maximum MAXRESULTS
IDS_PER_QUERY = 200  # keeps an IN (...) list well inside QBO's statement limits
SERVICE = "QuickBooks"
ANY_STATUS = "Active IN (true, false)"  # name lists hide inactive rows unless asked
CDC_LIMIT = 1000  # objects in one CDC answer at most
CDC_MAX_ANSWERS = 50  # saturated answers followed before giving up on one sweep
PURCHASE, BILL, BILL_PAYMENT = "Purchase", "Bill", "BillPayment"
CDC_WITH_BILLS = (PURCHASE, BILL, BILL_PAYMENT)  # one CDC call reads all three
ATTACHABLE = "Attachable"
ATTACHABLE_TARGETS = {"purchase": PURCHASE, "bill": BILL}
"""The transactions whose attachments hardcost files (``AttachableRef.EntityRef.type``)."""
DOWNLOAD_TIMEOUT = (10.0, 60.0)
"""(connect, read) seconds for a ``TempDownloadUri``: the read timeout is per chunk."""


class DownloadExpired(ApiError):
    """The ``TempDownloadUri`` answered 403: its 15 minutes are over (or it was tampered
    with). Read the Attachable again (``QboClient.attachable``) for a fresh link."""

    kind = FailureKind.TRANSIENT


@dataclass(frozen=True)
class PurchasePage:
    purchases: list[dict[str, Any]]
    server_time: str | None  # the response's "time": QBO's clock, for the next watermark


def quote(value: str) -> str:
    """A string literal for QBO's query language."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def in_list(values: Iterable[str]) -> str:
    return "(" + ", ".join(quote(v) for v in values) + ")"


def _xml_fault(text: str) -> tuple[str | None, str | None, str | None]:
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return None, None, None
    for element in root.iter():
        if element.tag.endswith("Error"):
            code = element.get("code")
            message = detail = None
            for child in element:
                if child.tag.endswith("Message"):
                    message = child.text
                elif child.tag.endswith("Detail"):
                    detail = child.text
            return code, message, detail
    return None, None, None


def _fault_fields(response: requests.Response) -> tuple[str | None, str | None, str | None, str]:
    """(code, message, detail, fault type) from a JSON or XML QBO fault body."""
    text = response.text or ""
    if text.lstrip().startswith("<"):
        code, message, detail = _xml_fault(text)
        return code, message, detail, ""
    try:
        body = parse_json(response)
    except ValueError:
        return None, None, text[:300] or None, ""
    if not isinstance(body, dict):
        return None, None, None, ""
    fault = body.get("Fault") or body.get("fault") or {}
    if not isinstance(fault, dict):
        return None, None, None, ""
    errors = fault.get("Error") or fault.get("error") or []
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) \
        else {}
    code = first.get("code")
    message = first.get("Message") or first.get("message")
    detail = first.get("Detail") or first.get("detail")
    return (str(code) if code is not None else None, message, detail,
            str(fault.get("type") or ""))


def _throttled(status: int, code: str | None) -> bool:
    """QuickBooks' throttle: HTTP 429, or fault code 3001 under any status (it has come back
    as 403 too). The one rule both ``is_throttle`` and ``decode_error`` follow."""
    return status == 429 or code == "3001"


def is_throttle(response: requests.Response) -> bool:
    if response.status_code == 429:
        return True
    if response.status_code >= 400 and "3001" in (response.text or "")[:2000]:
        code, *_ = _fault_fields(response)
        return _throttled(response.status_code, code)
    return False


def decode_error(response: requests.Response) -> ApiError:
    code, message, detail, fault_type = _fault_fields(response)
    tid = response.headers.get("intuit_tid")
    status = response.status_code
    kwargs: dict[str, Any] = dict(status=status, code=code, detail=detail, request_id=tid)
    log.warning("QuickBooks error %s code=%s intuit_tid=%s: %s", status, code, tid, message)
    if _throttled(status, code):  # before 403: a throttle sent as 403 is still a throttle
        return Throttled(SERVICE, "QuickBooks is limiting requests; the next run will try "
                         "again.", **kwargs)
    if status == 401 or fault_type.upper().startswith("AUTHENTICATION"):
        return ReconnectRequired(SERVICE, "QuickBooks refused our sign-in; reconnect "
                                 "QuickBooks.", **kwargs)
    if status == 403 or fault_type == "AuthorizationFault":
        return ConfigError(SERVICE, "QuickBooks says this connection may not read that data; "
                           "reconnect QuickBooks as an administrator.", **kwargs)
    if status >= 500:
        return ServiceDown(SERVICE, "QuickBooks had an internal error.", **kwargs)
    if code == "610" or status == 404:
        return NotFound(SERVICE, message or "QuickBooks could not find that record.", **kwargs)
    return RequestRejected(SERVICE, f"QuickBooks rejected the request: {message or status}",
                           **kwargs)


class QboClient:
    """Reads one QuickBooks company (realm)."""

    def __init__(self, *, base_url: str, realm_id: str, tokens: TokenSource,
                 retry: RetryPolicy | None = None, session: requests.Session | None = None,
                 timeout: tuple[float, float] = (10.0, 120.0),
                 pacer: Pacer | None = None) -> None:
        self.realm_id = realm_id
        self.base = f"{base_url.rstrip('/')}/v3/company/{realm_id}"
        self.api = ApiSession(SERVICE, tokens=tokens,
                              pacer=pacer or rate_pacer_for(f"qbo:{realm_id}"),
                              decode_error=decode_error, retry=retry, timeout=timeout,
                              is_throttle=is_throttle, session=session)

    @property
    def calls(self) -> int:
        return self.api.calls

    @property
    def waited(self) -> float:
        """Seconds spent waiting on the rate limit (pacing and 429s)."""
        return self.api.waited

    def _get(self, path: str, **params: str) -> dict[str, Any]:
        response = self.api.request("GET", f"{self.base}/{path}",
                                    params={**params, "minorversion": MINOR_VERSION})
        return self._body(response)

    def _body(self, response: requests.Response) -> dict[str, Any]:
        try:
            body = parse_json(response)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise MalformedAnswer(SERVICE, "QuickBooks answered in a form hardcost does not "
                                  "understand; the next run tries again.",
                                  status=response.status_code,
                                  request_id=response.headers.get("intuit_tid"))
        if "Fault" in body:  # a 200 can still carry a fault
            raise decode_error(response)
        return body

    def query(self, statement: str) -> dict[str, Any]:
        """Run one statement; returns the whole body (``QueryResponse`` and ``time``)."""
        response = self.api.request(
            "POST", f"{self.base}/query", params={"minorversion": MINOR_VERSION},
            data=statement, headers={"Content-Type": "application/text"}, idempotent=True)
        return self._body(response)

    def _pages(self, entity: str, where: str = "", order_by: str = "Id") -> Iterator[
            tuple[list[dict[str, Any]], str | None]]:
        position = 1
        while True:
            statement = f"SELECT * FROM {entity}"
            if where:
                statement += f" WHERE {where}"
            statement += f" ORDERBY {order_by} STARTPOSITION {position} MAXRESULTS {PAGE_SIZE}"
            body = self.query(statement)
            found = body.get("QueryResponse", {})
            rows = found.get(entity, []) if isinstance(found, dict) else None
            if not isinstance(rows, list):
                raise MalformedAnswer(SERVICE, f"QuickBooks answered {entity} in a form "
                                      "hardcost does not understand; the next run tries again.")
            time = body.get("time")
            yield rows, time if isinstance(time, str) else None
            if len(rows) < PAGE_SIZE:
                return
            position += PAGE_SIZE

    def purchases_changed_since(self, since: str | None, start_date: date | None,
                                before_start: date | None = None) -> Iterator[PurchasePage]:
        """Purchases updated at or after ``since`` (all when None) dated on/after ``start_date``.

        ``before_start`` bounds ``TxnDate`` from above: used to backfill when the start date
        moves earlier.
        """
        for rows, server_time in self._pages("Purchase", _changed_where(since, start_date,
                                                                        before_start),
                                             order_by="MetaData.LastUpdatedTime"):
            yield PurchasePage(rows, server_time)

    def count_purchases_changed_since(self, since: str | None,
                                      start_date: date | None) -> int | None:
        """How many purchases ``purchases_changed_since`` will read (one ``count(*)`` query,
        for a long run's estimate); None when QuickBooks answers in another shape."""
        where = _changed_where(since, start_date, None)
        body = self.query("SELECT COUNT(*) FROM Purchase" + (f" WHERE {where}" if where else ""))
        found = body.get("QueryResponse")
        total = found.get("totalCount") if isinstance(found, dict) else None
        return total if isinstance(total, int) and 0 <= total <= 100_000_000 else None

    def bills_changed_since(self, since: str | None, start_date: date | None,
                            before_start: date | None = None) -> Iterator[PurchasePage]:
        """Bills updated at or after ``since``, as ``purchases_changed_since`` reads purchases
        (one query a page; a quiet run makes one)."""
        for rows, server_time in self._pages("Bill", _changed_where(since, start_date,
                                                                    before_start),
                                             order_by="MetaData.LastUpdatedTime"):
            yield PurchasePage(rows, server_time)

    def dated(self, entity: str, start: date, end: date) -> Iterator[list[dict[str, Any]]]:
        """Pages of ``entity`` (``Purchase``, ``Bill``) whose ``TxnDate`` is ``start``..``end``
        (the monthly report's reconciliation)."""
        where = f"TxnDate >= {quote(start.isoformat())} AND TxnDate <= {quote(end.isoformat())}"
        for rows, _ in self._pages(entity, where):
            yield rows

    def bills_by_id(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        return self._by_ids("Bill", ids)

    def bill_payments_by_id(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        return self._by_ids("BillPayment", ids)

    def _by_ids(self, entity: str, ids: Iterable[str], also: str = "") -> list[dict[str, Any]]:
        """Records of ``entity`` by id, a bounded ``IN`` list per query."""
        found: list[dict[str, Any]] = []
        for chunk in chunks(sorted(set(ids)), IDS_PER_QUERY):
            where = f"Id IN {in_list(chunk)}" + (f" AND {also}" if also else "")
            for rows, _ in self._pages(entity, where):
                found.extend(rows)
        return found

    def _all(self, entity: str, where: str) -> list[dict[str, Any]]:
        return [r for rows, _ in self._pages(entity, where) for r in rows]

    def purchases_by_id(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        return self._by_ids("Purchase", ids)

    def customers(self, ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Customers by id (all when ``ids`` is None), inactive ones included."""
        if ids is None:
            return self._all("Customer", ANY_STATUS)
        return self._by_ids("Customer", ids, ANY_STATUS)

    def accounts(self) -> list[dict[str, Any]]:
        return self._all("Account", ANY_STATUS)

    def items(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        return self._by_ids("Item", ids, ANY_STATUS)

    def preferences(self) -> dict[str, Any]:
        prefs = self._get("preferences").get("Preferences")
        if not isinstance(prefs, dict):
            raise TransientError(SERVICE, "QuickBooks sent preferences in an unexpected shape.")
        return prefs

    def tracks_expenses_by_customer(self) -> bool:
        prefs = self.preferences().get("VendorAndPurchasesPrefs") or {}
        return bool(prefs.get("TrackingByCustomer"))

    # --- attachments (receipts) ---------------------------------------------------------------

    def attachables_since(self, since: str | None) -> Iterator[list[dict[str, Any]]]:
        """Pages of Attachables (``select * from Attachable``), all of them when ``since`` is
        None, else those whose ``MetaData.LastUpdatedTime`` is at or after it (``>=``: a
        file changed in the watermark's own second is read again rather than missed), oldest
        change first, 1,000 a page; each a raw dict as QuickBooks sends it."""
        where = f"MetaData.LastUpdatedTime >= {quote(since)}" if since else ""
        for rows, _ in self._pages(ATTACHABLE, where, order_by="MetaData.LastUpdatedTime"):
            yield rows

    def attachable(self, attachable_id: str) -> dict[str, Any] | None:
        """``GET /attachable/<id>``: the Attachable with a fresh ``TempDownloadUri``; None when
        QuickBooks no longer has it (deleted: fault 610 or 404)."""
        if not fits(attachable_id, ID) or not attachable_id.isdigit():
            return None
        try:
            body = self._get(f"attachable/{attachable_id}")
        except NotFound:
            return None
        found = body.get(ATTACHABLE)
        if not isinstance(found, dict):
            raise MalformedAnswer(SERVICE, "QuickBooks answered an attachment in a form "
                                  "hardcost does not understand; the next run tries again.")
        return found

    def open_download(self, url: str) -> requests.Response:
        """A streamed GET (``stream=True``) of a ``TempDownloadUri``, without ``Authorization``
        (it is a pre-signed storage link) and outside the API's pacing. Raises
        :class:`DownloadExpired` on 403, another :class:`ApiError` otherwise (connection
        failures and 5xx are tried again as the retry policy says). The caller closes the
        response (``with client.open_download(url) as response: ...``)."""
        retry = self.api.retry
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self.api.http.get(url, stream=True, timeout=DOWNLOAD_TIMEOUT,
                                             headers={"Accept": "*/*"},
                                             proxies=self.api._proxies_for(url))
            except (requests.Timeout, requests.ConnectionError) as exc:
                if attempt < retry.attempts:
                    retry.sleep(retry.backoff_wait(attempt))
                    continue
                raise ServiceDown(SERVICE, f"QuickBooks' file storage did not answer "
                                  f"({type(exc).__name__}).") from None
            if response.status_code < 400:
                return response
            status = response.status_code
            detail = _storage_error(response)
            response.close()
            if status == 403:
                raise DownloadExpired(SERVICE, "The receipt's download link from QuickBooks "
                                      "has expired; hardcost asks QuickBooks for a new one.",
                                      status=status, detail=detail)
            if status >= 500 and attempt < retry.attempts:
                retry.sleep(retry.backoff_wait(attempt))
                continue
            if status >= 500:
                raise ServiceDown(SERVICE, "QuickBooks' file storage had an internal error.",
                                  status=status, detail=detail)
            if status == 404:
                raise NotFound(SERVICE, "QuickBooks no longer has this receipt's file.",
                               status=status, detail=detail)
            raise RequestRejected(SERVICE, f"QuickBooks' file storage refused the download "
                                  f"({status}).", status=status, detail=detail)

    def purchase_removals_since(self, changed_since: str, *, bills: bool = False,
                                attachables: bool = False) -> CdcSweep:
        """Purchases (and with ``bills``, Bills as ``bill-<id>``) deleted (``status:
        Deleted``) or voided since ``changed_since`` (≤ 30 days back), by CDC; with ``bills``
        the same call reads BillPayments, whose Bills are named in ``paid``. With
        ``attachables`` the same call reads Attachables too (``attachables``: the raw objects,
        deleted ones as ``status: Deleted`` stubs, the newest of each id).

        One answer holds at most 1,000 objects. A saturated answer is followed by another from
        the newest ``LastUpdatedTime`` it held (objects come oldest first), so the window is
        split until an answer is short. When the newest time does not move on (1,000 changes
        in one second) or ``CDC_MAX_ANSWERS`` is reached, ``complete`` is False and the caller
        must check its purchases another way.
        """
        removed: dict[str, str] = {}
        files: dict[str, dict[str, Any]] = {}
        paid: set[str] = set()
        payments_gone = False
        server_time: str | None = None
        since = changed_since
        entities = CDC_WITH_BILLS if bills else (PURCHASE,)
        if attachables:
            entities = (*entities, ATTACHABLE)
        for _ in range(CDC_MAX_ANSWERS):
            objects, answered = self.changed_cdc(since, entities)
            server_time = server_time or answered
            newest: datetime | None = None
            for entity, obj in objects:
                if not isinstance(obj, dict) or obj.get("Id") is None:
                    continue
                if entity == ATTACHABLE:
                    files[str(obj["Id"])] = obj
                elif entity == BILL_PAYMENT:
                    # A payment changed: its Bills' balances did too (docs/purchases.md, "Vendor
                    # Bills"). A deleted one names no Bill (CDC gives only its id): flagged instead.
                    paid.update(f"{BILL_PREFIX}{i}" for i in linked_ids(obj, "Bill"))
                    payments_gone |= str(obj.get("status") or "").lower() == "deleted"
                else:
                    key = f"{BILL_PREFIX}{obj['Id']}" if entity == BILL else str(obj["Id"])
                    if str(obj.get("status") or "").lower() == "deleted":
                        removed[key] = "deleted"
                    elif is_voided(obj):
                        removed.setdefault(key, "voided")
                metadata = obj.get("MetaData")
                moment = instant(metadata.get("LastUpdatedTime")
                                 if isinstance(metadata, dict) else None)
                if moment is not None and (newest is None or moment > newest):
                    newest = moment
            if len(objects) < CDC_LIMIT:
                return CdcSweep(removed, server_time, True, paid, payments_gone,
                                list(files.values()))
            start = instant(since)
            if newest is None or start is None or newest <= start:
                break
            since = newest.isoformat()
        log.warning("CDC stayed saturated from %s; the caller checks purchases one by one",
                    changed_since)
        return CdcSweep(removed, server_time, False, paid, payments_gone, list(files.values()))

    def changed_purchases_cdc(self, changed_since: str) -> tuple[list[dict[str, Any]], str | None]:
        """One CDC answer for Purchase (≤ 1000 objects, deletions as ``status: Deleted``)."""
        objects, time = self.changed_cdc(changed_since, (PURCHASE,))
        return [obj for _, obj in objects], time

    def changed_cdc(self, changed_since: str, entities: tuple[str, ...]
                    ) -> tuple[list[tuple[str, Any]], str | None]:
        """One CDC answer for ``entities`` in one call (≤ 1000 objects in all), as
        (entity, object) pairs; blocks of another shape are passed over."""
        body = self._get("cdc", entities=",".join(entities), changedSince=changed_since)
        found: list[tuple[str, Any]] = []
        blocks = body.get("CDCResponse")
        for block in blocks if isinstance(blocks, list) else []:
            responses = block.get("QueryResponse") if isinstance(block, dict) else None
            for response in responses if isinstance(responses, list) else []:
                if not isinstance(response, dict):
                    continue
                for entity in entities:
                    rows = response.get(entity)
                    if isinstance(rows, list):
                        found.extend((entity, row) for row in rows)
        time = body.get("time")
        return found, time if isinstance(time, str) else None


@dataclass(frozen=True)
class CdcSweep:
    removed: dict[str, str]  # purchase id (or ``bill-<id>``) → "deleted" | "voided"
    server_time: str | None  # QuickBooks' clock at the first answer
    complete: bool  # False: saturated answers could not be split further
    paid: set[str] = field(default_factory=set)
    """``bill-<id>`` of the Bills a changed BillPayment links to: their balances moved."""
    payments_gone: bool = False
    """A BillPayment was deleted: CDC does not say which Bills it paid."""
    attachables: list[dict[str, Any]] = field(default_factory=list)
    """Attachables changed (with ``attachables=True``): raw objects, deleted ones as
    ``{"Id", "status": "Deleted"}`` stubs."""


def attachable_refs(obj: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """(entity type, transaction id, inactive) of each of an Attachable's ``AttachableRef``s
    that names a purchase or a Bill with a well-formed ``EntityRef`` (the type as
    ``Purchase``/``Bill`` whatever its case; an id of digits that fits ``bounds.ID``); other
    refs (invoices, customers, malformed ones) are passed over."""
    refs = obj.get("AttachableRef")
    found: list[tuple[str, str, bool]] = []
    for ref in refs if isinstance(refs, list) else []:
        entity = ref.get("EntityRef") if isinstance(ref, dict) else None
        if not isinstance(entity, dict):
            continue
        kind, value = entity.get("type"), entity.get("value")
        target = ATTACHABLE_TARGETS.get(kind.lower()) if isinstance(kind, str) else None
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if target is None or not isinstance(value, str) or not value.isdigit() or \
                not fits(value, ID):
            continue
        inactive = ref.get("Inactive")
        found.append((target, value, inactive is True or
                      (isinstance(inactive, str) and inactive.lower() == "true")))
    return found


def _storage_error(response: requests.Response) -> str | None:
    """``<Code>: <Message>`` of an S3-style storage error body, if it has them."""
    text = (response.text or "")[:4000]
    parts = [m.group(1) for tag in ("Code", "Message")
             if (m := re.search(f"<{tag}>([^<]{{1,200}})</{tag}>", text))]
    return ": ".join(parts) or None


def _changed_where(since: str | None, start_date: date | None,
                   before_start: date | None) -> str:
    conditions = []
    if since:
        conditions.append(f"MetaData.LastUpdatedTime >= {quote(since)}")
    if start_date:
        conditions.append(f"TxnDate >= {quote(start_date.isoformat())}")
    if before_start:
        conditions.append(f"TxnDate < {quote(before_start.isoformat())}")
    return " AND ".join(conditions)


def instant(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def transaction_url(purchase_id: str, *, sandbox: bool = False) -> str:
    host = "https://app.sandbox.qbo.intuit.com" if sandbox else "https://app.qbo.intuit.com"
    page = "expense"
    if purchase_id.startswith(BILL_PREFIX):
        page, purchase_id = "bill", purchase_id[len(BILL_PREFIX):]
    return f"{host}/app/{page}?txnId={re.sub(r'[^0-9A-Za-z-]', '', purchase_id)}"

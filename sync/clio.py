"""Clio Manage v4 client: contacts, matters, users, categories, hard-cost entries and the
documents receipts are filed as."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, BinaryIO, Protocol

import requests

from hardcost.sync.bounds import clean, fits
from hardcost.sync.clio_errors import (
    SERVICE,
    DocumentsForbidden,
    UploadNotFound,
    UploadRefused,
    decode_error,
)
from hardcost.sync.http import (
    ApiSession,
    ConfigError,
    HeaderPacer,
    MalformedAnswer,
    Pacer,
    ReconnectRequired,
    RequestRejected,
    RetryPolicy,
    ServiceDown,
    TokenSource,
    parse_json,
    shaped,
)

log = logging.getLogger(__name__)
ETAG = 100  # EntryLink.clio_etag

API_VERSION = "4.0.13"
PAGE_LIMIT = 200

CONTACT_FIELDS = "id,name,type,primary_email_address"
MATTER_FIELDS = "id,display_number,description,status,client{id,name}"
USER_FIELDS = "id,name,email,account_owner,enabled"
CATEGORY_FIELDS = "id,name,rate,entry_type,utbms_code{id,code}"
UTBMS_CODE_FIELDS = "id,code,name,description,type,utbms_set_id"
UTBMS_SET_FIELDS = "id,name,enabled"
UTBMS_EXPENSE = "UtbmsExpense"
ACTIVITY_FIELDS = ("id,etag,type,date,price,total,note,reference,billed,on_bill,"
                   "matter{id,display_number},bill{id,state}")
REPORT_FIELDS = ("id,date,price,total,billed,on_bill,non_billable,no_charge,"
                 "matter{id,display_number},vendor{id,name},bill{id,number,state,issued_at}")
"""What the monthly report reads of each entry (``sync.month_report``)."""
MATTER_IDS_PER_CALL = 100  # ``ids[]`` per matters.json call: the URL stays short
UPLOAD_FIELDS = "id,latest_document_version{uuid,put_url,put_headers,fully_uploaded}"
"""What a new document (or version) is read for: where and how to PUT its bytes."""
DOCUMENT_FIELDS = ("id,name,size,matter{id},latest_document_version{uuid,fully_uploaded,size},"
                   "external_properties{name,value}")
STORAGE_TIMEOUT = (10.0, 300.0)
"""(connect, read) seconds for a PUT to the document storage (a large file's answer comes
once all of it has arrived)."""
STORAGE_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Contact:
    id: int
    name: str
    type: str
    email: str | None


@dataclass(frozen=True)
class Matter:
    id: int
    display_number: str
    description: str
    status: str
    client_id: int | None
    client_name: str = ""


@dataclass(frozen=True)
class User:
    id: int
    name: str
    email: str | None
    account_owner: bool
    enabled: bool


@dataclass(frozen=True)
class ExpenseCategory:
    id: int
    name: str
    entry_type: str
    utbms_code_id: int | None = None
    """The UTBMS expense code the category carries, if any (it applies where no code is
    mapped: docs/purchases.md, "Category and UTBMS code")."""


@dataclass(frozen=True)
class UtbmsCode:
    id: int
    code: str
    name: str
    type: str
    set_id: int | None


@dataclass(frozen=True)
class UtbmsSet:
    id: int
    name: str
    enabled: bool


@dataclass(frozen=True)
class CostCoding:
    """What an entry carries besides its figures: category, UTBMS code, billable or not."""

    category_id: int | None = None
    utbms_code_id: int | None = None
    non_billable: bool = False


@dataclass(frozen=True)
class Activity:
    id: int
    etag: str | None
    type: str | None
    date: str | None
    price: Decimal | None
    note: str | None
    billed: bool
    on_bill: bool
    matter_id: int | None
    bill_id: int | None = None
    bill_state: str | None = None
    matter_number: str | None = None
    reference: str | None = None

    def written_fields(self) -> dict[str, Any]:
        """The fields hardcost writes, as ``EntryLink.written`` keeps them."""
        return {"price": None if self.price is None else f"{self.price:.2f}",
                "date": self.date, "note": self.note, "reference": self.reference or None,
                "matter_id": self.matter_id}


@dataclass(frozen=True)
class Upload:
    """Where the bytes of a new document (version) go: PUT to ``put_url`` with exactly
    ``put_headers``, then ``finish_document(document_id, uuid)``."""

    document_id: int
    uuid: str
    put_url: str
    put_headers: dict[str, str]


@dataclass(frozen=True)
class Document:
    id: int
    name: str
    matter_id: int | None
    fully_uploaded: bool
    """Whether the latest version's upload is complete."""
    uuid: str | None
    """The latest version's uuid."""
    size: int | None
    external: dict[str, str]
    """The document's external properties, name → value."""


MAX_ID = 2 ** 53  # Clio's ids are JSON numbers: beyond this they are not exact anywhere


def _id(value: Any) -> int:
    """A Clio record id: a positive whole number below ``MAX_ID``; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
        raise ValueError(f"{value!r} is not an id")
    try:
        number = Decimal(value)
    except ArithmeticError:
        raise ValueError(f"{value!r} is not an id") from None
    if not number.is_finite() or number != number.to_integral_value() \
            or not 0 < number < MAX_ID:
        raise ValueError(f"{value!r} is not an id")
    return int(number)


def _str(value: Any) -> str:
    """Text from Clio, without NULs (``sync.bounds``); lengths are bounded where it is kept."""
    return clean(str(value or ""))


def _contact(row: Mapping[str, Any]) -> Contact:
    email = row.get("primary_email_address")
    return Contact(_id(row["id"]), _str(row.get("name")), _str(row.get("type")),
                   _str(email) if email else None)


def _matter(row: Mapping[str, Any]) -> Matter:
    client = row.get("client") or {}
    return Matter(_id(row["id"]), _str(row.get("display_number")),
                  _str(row.get("description")), _str(row.get("status")),
                  _id(client["id"]) if client.get("id") is not None else None,
                  _str(client.get("name")))


def _etag(value: Any) -> str | None:
    """An entry's etag, sent back in ``If-Match``: kept only when it fits (a cut one would
    never match; without one the entry is compared by what hardcost wrote)."""
    return value if isinstance(value, str) and fits(value, ETAG) else None


def holds_marker(note: str | None, marker: str) -> bool:
    """The note's last line is ``marker``: where hardcost puts it (``rules.build_note``). A
    marker elsewhere is text, a memo quoting another entry's, and never names this entry."""
    if not note:
        return False
    return note.rstrip().rsplit("\n", 1)[-1].strip() == marker


def _upload(row: Mapping[str, Any]) -> Upload:
    version = row["latest_document_version"]
    headers: dict[str, str] = {}
    for header in version.get("put_headers") or []:
        name, value = header["name"], header["value"]
        if not isinstance(name, str) or not isinstance(value, str) or \
                not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}", name) or \
                any(c in value for c in "\r\n\x00"):
            raise ValueError(f"put_headers holds {header!r}")
        headers[name] = value
    put_url, uuid = version["put_url"], version["uuid"]
    if not isinstance(put_url, str) or not put_url.startswith(("https://", "http://")):
        raise ValueError("put_url is not a URL")
    if not isinstance(uuid, str) or not fits(uuid, 100) or not uuid:
        raise ValueError("uuid is not a uuid")
    return Upload(_id(row["id"]), uuid, put_url, headers)


def _document(row: Mapping[str, Any]) -> Document:
    version = row.get("latest_document_version") or {}
    matter = row.get("matter") or {}
    external: dict[str, str] = {}
    for prop in row.get("external_properties") or []:
        if isinstance(prop, dict) and isinstance(prop.get("name"), str) and \
                isinstance(prop.get("value"), str):
            external[_str(prop["name"])] = _str(prop["value"])
    size = row.get("size") if row.get("size") is not None else version.get("size")
    uuid = version.get("uuid")
    return Document(
        id=_id(row["id"]), name=_str(row.get("name")),
        matter_id=_id(matter["id"]) if matter.get("id") is not None else None,
        fully_uploaded=version.get("fully_uploaded") is True,
        uuid=_str(uuid) if isinstance(uuid, str) and uuid else None,
        size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0
        else None,
        external=external)


class Readable(Protocol):
    """What ``put_bytes`` reads a file from: a binary file, a spooled temporary file, or a
    streamed download's raw body (``requests.Response.raw``)."""

    def read(self, size: int = ..., /) -> bytes: ...


class _Body:
    """``length`` bytes of ``raw``, read a chunk at a time as the request is sent (never
    whole); ``len()`` gives requests the ``Content-Length``, so it is never chunked."""

    def __init__(self, raw: Readable, length: int) -> None:
        self.raw, self.length, self.sent = raw, length, 0

    def __len__(self) -> int:
        return self.length

    def read(self, size: int = -1) -> bytes:
        left = self.length - self.sent
        if left <= 0:
            return b""
        chunk = self.raw.read(left if size is None or size < 0 else min(size, left))
        if not chunk:
            raise ValueError(f"the file ended after {self.sent} of {self.length} bytes")
        self.sent += len(chunk)
        return chunk

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(STORAGE_CHUNK):
            yield chunk


def _storage_error(response: requests.Response) -> tuple[str | None, str | None]:
    """S3's ``<Code>`` and ``<Message>`` of a storage error body."""
    text = (response.text or "")[:4000]
    found = [m.group(1) if (m := re.search(f"<{tag}>([^<]{{1,300}})</{tag}>", text)) else None
             for tag in ("Code", "Message")]
    return found[0], found[1]


def _activity(row: Mapping[str, Any]) -> Activity:
    matter = row.get("matter") or {}
    bill = row.get("bill") or {}
    price = row.get("price")
    return Activity(
        id=_id(row["id"]), etag=_etag(row.get("etag")), type=row.get("type"), date=row.get("date"),
        price=Decimal(str(price)) if price is not None else None, note=row.get("note"),
        billed=bool(row.get("billed")), on_bill=bool(row.get("on_bill")),
        matter_id=_id(matter["id"]) if matter.get("id") is not None else None,
        bill_id=_id(bill["id"]) if isinstance(bill, dict) and bill.get("id") is not None
        else None,
        bill_state=str(bill["state"]) if isinstance(bill, dict) and bill.get("state")
        else None,
        matter_number=str(matter["display_number"]) if matter.get("display_number")
        else None,
        reference=str(row["reference"]) if row.get("reference") else None,
    )


class ClioClient:
    """Talks to one Clio account through one access token."""

    def __init__(self, *, host: str, tokens: TokenSource, retry: RetryPolicy | None = None,
                 session: requests.Session | None = None,
                 timeout: tuple[float, float] = (10.0, 60.0),
                 pacer: Pacer | None = None) -> None:
        self.host = host.rstrip("/")
        self.base = f"{self.host}/api/v4"
        self.api = ApiSession(SERVICE, tokens=tokens, pacer=pacer or HeaderPacer(),
                              decode_error=decode_error, retry=retry, timeout=timeout,
                              default_headers={"X-API-VERSION": API_VERSION}, session=session)
        self._storage = requests.Session()  # the document storage: no token, no API headers
        self._storage.trust_env = False

    def matter_url(self, matter_id: int | None) -> str | None:
        """The matter's page in Clio's web app (where its entries are listed)."""
        return None if matter_id is None else f"{self.host}/nc/#/matters/{int(matter_id)}"

    @property
    def calls(self) -> int:
        return self.api.calls

    @property
    def waited(self) -> float:
        """Seconds spent waiting on the rate limit (pacing and 429s)."""
        return self.api.waited

    @property
    def rate_limit(self) -> int | None:
        """Requests Clio allows per minute on this connection, as it last said."""
        return self.api.rate_limit

    def give_back(self) -> None:
        """Unsent tokens of a shared pacer's block back to the bucket (a run ended)."""
        give_back = getattr(self.api.pacer, "give_back", None)
        if give_back is not None:
            give_back()

    def _json(self, response: requests.Response) -> dict[str, Any]:
        try:
            body = parse_json(response)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise MalformedAnswer(SERVICE, "Clio answered in a form hardcost does not "
                                  "understand; the next run tries again.",
                                  status=response.status_code)
        return body

    def _paged(self, path: str, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """Every record of an index, following ``meta.paging.next`` (cursor paging)."""
        url: str | None = f"{self.base}/{path}"
        query: Mapping[str, Any] | None = {"limit": PAGE_LIMIT, "order": "id(asc)", **params}
        while url:
            body = self._json(self.api.request("GET", url, params=query))
            rows = body.get("data")
            if not isinstance(rows, list):  # a missing or empty-object list is no answer
                raise MalformedAnswer(SERVICE, "Clio answered a list in a form hardcost does "
                                      "not understand; the next run tries again.")
            yield from rows
            url = ((body.get("meta") or {}).get("paging") or {}).get("next")
            query = None  # the next URL carries every parameter

    def _listed_within(self, path: str, params: Mapping[str, Any],
                       max_pages: int) -> tuple[list[dict[str, Any]], bool]:
        """Every record of an index if that takes at most ``max_pages`` pages.

        The first page's ``meta.records`` tells the total; when listing would cost more than
        ``max_pages`` calls, returns that first page and ``False``.
        """
        url: str | None = f"{self.base}/{path}"
        query: Mapping[str, Any] | None = {"limit": PAGE_LIMIT, "order": "id(asc)", **params}
        rows: list[dict[str, Any]] = []
        first = True
        while url:
            body = self._json(self.api.request("GET", url, params=query))
            page = body.get("data")
            if not isinstance(page, list):
                raise MalformedAnswer(SERVICE, "Clio answered a list in a form hardcost does "
                                      "not understand; the next run tries again.")
            rows.extend(page)
            meta = body.get("meta") or {}
            url = (meta.get("paging") or {}).get("next")
            query = None
            if first and url:
                total = meta.get("records")
                if isinstance(total, int) and -(-total // PAGE_LIMIT) > max_pages:
                    return rows, False
            first = False
        return rows, True

    def contacts_within(self, max_pages: int) -> tuple[list[Contact], bool]:
        """All contacts, unless that takes more than ``max_pages`` calls (then a first page)."""
        rows, complete = self._listed_within("contacts.json", {"fields": CONTACT_FIELDS},
                                             max_pages)
        return shaped(SERVICE, "its contacts", lambda: [_contact(r) for r in rows]), complete

    def open_matters_within(self, max_pages: int) -> tuple[list[Matter], bool]:
        """All open and pending matters, unless that takes more than ``max_pages`` calls."""
        rows, complete = self._listed_within(
            "matters.json", {"status": "open,pending", "fields": MATTER_FIELDS}, max_pages)
        return shaped(SERVICE, "its matters", lambda: [_matter(r) for r in rows]), complete

    def open_matters_upto(self, limit: int) -> tuple[list[Matter], bool]:
        """The first ``limit`` open and pending matters (by id), and whether that is all."""
        rows: list[dict[str, Any]] = []
        for row in self._paged("matters.json", {"status": "open,pending",
                                                "fields": MATTER_FIELDS}):
            if len(rows) == limit:
                return shaped(SERVICE, "its matters", lambda: [_matter(r) for r in rows]), False
            rows.append(row)
        return shaped(SERVICE, "its matters", lambda: [_matter(r) for r in rows]), True

    def search_contacts(self, text: str) -> list[Contact]:
        return shaped(SERVICE, "a search of contacts", lambda: [
            _contact(r) for r in self._paged("contacts.json",
                                             {"query": text, "fields": CONTACT_FIELDS})])

    def contacts_by_id(self, ids: list[int]) -> list[Contact]:
        if not ids:
            return []
        params = {"ids[]": ids, "fields": CONTACT_FIELDS}
        return shaped(SERVICE, "its contacts", lambda: [
            _contact(r) for r in self._paged("contacts.json", params)])

    def open_matters(self, client_id: int | None = None) -> list[Matter]:
        """Open and pending matters, of one client or of the whole account."""
        params: dict[str, Any] = {"status": "open,pending", "fields": MATTER_FIELDS}
        if client_id is not None:
            params["client_id"] = client_id
        return shaped(SERVICE, "its matters", lambda: [
            _matter(r) for r in self._paged("matters.json", params)])

    def cost_entries(self, *, entry_type: str, start: date | None = None,
                     end: date | None = None) -> Iterator[dict[str, Any]]:
        """Every entry of ``entry_type`` dated ``start``..``end`` (either open), as Clio
        answers it with :data:`REPORT_FIELDS`, one page (200) at a time through the client's
        pacing; the report (``sync.month_report``) reads its figures from these rows."""
        params: dict[str, Any] = {"type": entry_type, "fields": REPORT_FIELDS}
        if start is not None:
            params["start_date"] = start.isoformat()
        if end is not None:
            params["end_date"] = end.isoformat()
        return self._paged("activities.json", params)

    def matters_by_id(self, ids: Iterable[int]) -> list[Matter]:
        """The matters (with their client's name), ``MATTER_IDS_PER_CALL`` ids a call."""
        wanted = sorted(set(ids))
        rows: list[dict[str, Any]] = []
        for at in range(0, len(wanted), MATTER_IDS_PER_CALL):
            params = {"ids[]": wanted[at:at + MATTER_IDS_PER_CALL], "fields": MATTER_FIELDS}
            rows.extend(self._paged("matters.json", params))
        return shaped(SERVICE, "its matters", lambda: [_matter(r) for r in rows])

    def users(self) -> list[User]:
        return shaped(SERVICE, "its users", lambda: [
            User(_id(r["id"]), str(r.get("name") or ""), r.get("email"),
                 bool(r.get("account_owner")), bool(r.get("enabled", True)))
            for r in self._paged("users.json", {"fields": USER_FIELDS})])

    def account_owner(self) -> User | None:
        owners = [u for u in self.users() if u.account_owner]
        return owners[0] if owners else None

    def hard_cost_categories(self) -> list[ExpenseCategory]:
        params = {"entry_type": "hard_cost", "fields": CATEGORY_FIELDS}
        return shaped(SERVICE, "its expense categories", lambda: [
            ExpenseCategory(_id(r["id"]), str(r.get("name") or ""),
                            str(r.get("entry_type") or ""),
                            _id(r["utbms_code"]["id"]) if isinstance(r.get("utbms_code"), dict)
                            and r["utbms_code"].get("id") is not None else None)
            for r in self._paged("expense_categories.json", params)])

    def utbms_expense_codes(self) -> list[UtbmsCode]:
        """Every UTBMS expense code of the account, whatever its set (see
        :meth:`utbms_sets`)."""
        params = {"type": UTBMS_EXPENSE, "fields": UTBMS_CODE_FIELDS}
        return shaped(SERVICE, "its UTBMS codes", lambda: [
            UtbmsCode(_id(r["id"]), _str(r.get("code")), _str(r.get("name")),
                      _str(r.get("type")),
                      None if r.get("utbms_set_id") is None else _id(r["utbms_set_id"]))
            for r in self._paged("utbms/codes.json", params)])

    def utbms_sets(self) -> list[UtbmsSet]:
        """The account's UTBMS code sets, enabled or not."""
        return shaped(SERVICE, "its UTBMS sets", lambda: [
            UtbmsSet(_id(r["id"]), _str(r.get("name")), r.get("enabled") is True)
            for r in self._paged("utbms/sets.json", {"fields": UTBMS_SET_FIELDS})])

    def create_entry(self, *, entry_type: str, on: date, price: Decimal, matter_id: int,
                     note: str, reference: str | None, expense_category_id: int | None,
                     user_id: int | None, vendor_id: int | None,
                     utbms_code_id: int | None = None, non_billable: bool = False) -> Activity:
        """POST one cost entry. Not retried on an ambiguous failure: see ``find_by_marker``."""
        data: dict[str, Any] = {
            "type": entry_type,
            "date": on.isoformat(),
            "price": price,
            "matter": {"id": matter_id},
            "note": note,
        }
        if reference:
            data["reference"] = reference
        if expense_category_id is not None:
            data["expense_category"] = {"id": expense_category_id}
        if user_id is not None:
            data["user"] = {"id": user_id}
        if vendor_id is not None and entry_type == "HardCostEntry":
            data["vendor"] = {"id": vendor_id}
        if utbms_code_id is not None:
            data["utbms_expense"] = {"id": utbms_code_id}
        if non_billable:
            data["non_billable"] = True
        if entry_type == "ExpenseEntry":
            data["quantity"] = Decimal("1")
        response = self.api.request("POST", f"{self.base}/activities.json",
                                    params={"fields": ACTIVITY_FIELDS},
                                    json_body={"data": data}, idempotent=False)
        # Clio took the POST: with an answer we cannot read, the entry may exist. Ambiguous,
        # so the pending link stays and the next run looks for it by its marker.
        try:
            body = self._json(response)
        except MalformedAnswer as exc:  # not JSON, not an object: still, Clio took the POST
            exc.ambiguous = True
            raise
        return shaped(SERVICE, "the new entry", lambda: _activity(body["data"]),
                      ambiguous=True)

    def update_entry(self, activity_id: int, *, etag: str | None, on: date, price: Decimal,
                     note: str, reference: str | None, matter_id: int,
                     coding: CostCoding | None = None) -> Activity:
        """PATCH the fields hardcost writes, with ``If-Match: etag`` (412 →
        :class:`PreconditionFailed`); with ``coding``, the category, UTBMS code and billable
        status of the entry's account now. Not retried on an ambiguous failure: re-read the
        entry to learn whether it took."""
        data: dict[str, Any] = {"date": on.isoformat(), "price": price, "note": note,
                                "reference": reference or "", "matter": {"id": matter_id}}
        if coding is not None:
            if coding.category_id is not None:
                data["expense_category"] = {"id": coding.category_id}
            if coding.utbms_code_id is not None:
                data["utbms_expense"] = {"id": coding.utbms_code_id}
            data["non_billable"] = coding.non_billable
        headers = {"If-Match": etag} if etag else None
        response = self.api.request("PATCH", f"{self.base}/activities/{activity_id}.json",
                                    params={"fields": ACTIVITY_FIELDS},
                                    json_body={"data": data}, headers=headers,
                                    idempotent=False)
        try:
            body = self._json(response)
        except MalformedAnswer as exc:
            exc.ambiguous = True
            raise
        return shaped(SERVICE, "the updated entry", lambda: _activity(body["data"]),
                      ambiguous=True)

    def pause(self, attempt: int) -> None:
        """Wait as the retry policy does before its ``attempt``-th retry (counted as waited)."""
        retry = self.api.retry
        seconds = retry.backoff_wait(attempt)
        retry.sleep(seconds)
        self.api.waited += seconds

    def wait_out_late_write(self) -> None:
        """Wait as long again as the client waits for an answer: a POST that got none may still
        be applied by Clio after the client gave up, and a look-up for it must come after."""
        seconds = float(self.api.timeout[1] if isinstance(self.api.timeout, tuple)
                        else self.api.timeout)
        self.api.retry.sleep(seconds)
        self.api.waited += seconds

    def find_by_marker(self, marker: str) -> list[Activity]:
        """Entries whose note ends in ``marker`` as hardcost writes it (Clio's ``query``
        searches notes, and finds it anywhere: :func:`holds_marker` keeps the right ones)."""
        rows = self._paged("activities.json", {"query": marker, "fields": ACTIVITY_FIELDS})
        return shaped(SERVICE, "a search of entries", lambda: [
            a for a in map(_activity, rows) if holds_marker(a.note, marker)])

    def delete_activity(self, activity_id: int) -> None:
        """DELETE → 204. Callers read the entry first (``billed``/``on_bill``): Clio's
        answer to deleting a billed entry is unconfirmed."""
        self.api.request("DELETE", f"{self.base}/activities/{activity_id}.json")

    def get_activity(self, activity_id: int) -> Activity:
        response = self.api.request("GET", f"{self.base}/activities/{activity_id}.json",
                                    params={"fields": ACTIVITY_FIELDS})
        return shaped(SERVICE, "an entry", lambda: _activity(self._json(response)["data"]))

    # -- documents (receipts) ------------------------------------------------------------------

    @contextmanager
    def _documents_allowed(self) -> Iterator[None]:
        """A 403 on ``/documents`` becomes :class:`DocumentsForbidden`."""
        try:
            yield
        except ConfigError as exc:
            if exc.status != 403 or isinstance(exc, ReconnectRequired):
                raise
            raise DocumentsForbidden(
                SERVICE, "The Clio connection may not add documents: reconnect Clio as a user "
                "allowed to manage documents (and with the app's documents permission).",
                status=exc.status, code=exc.code, detail=exc.detail,
                request_id=exc.request_id) from None

    def _post_document(self, data: dict[str, Any], what: str) -> Upload:
        with self._documents_allowed():
            response = self.api.request("POST", f"{self.base}/documents.json",
                                        params={"fields": UPLOAD_FIELDS},
                                        json_body={"data": data}, idempotent=False)
        try:
            body = self._json(response)
        except MalformedAnswer as exc:  # Clio took the POST: the document may exist
            exc.ambiguous = True
            raise
        return shaped(SERVICE, what, lambda: _upload(body["data"]), ambiguous=True)

    def create_document(self, *, name: str, matter_id: int, content_type: str | None,
                        received_at: date | None, external: Mapping[str, str]) -> Upload:
        """``POST /documents.json`` on the matter (``parent {type: Matter}``) with its
        external properties (at most 5); the answer says where to PUT the bytes. Not retried
        on an ambiguous failure: look it up with :meth:`find_documents`."""
        if len(external) > 5:
            raise ValueError("Clio keeps at most 5 external properties per document")
        data: dict[str, Any] = {"name": name, "parent": {"id": matter_id, "type": "Matter"}}
        if content_type:
            data["content_type"] = content_type
        if received_at is not None:
            data["received_at"] = f"{received_at.isoformat()}T00:00:00+00:00"
        if external:
            data["external_properties"] = [{"name": k, "value": v} for k, v in external.items()]
        return self._post_document(data, "the new document")

    def new_version(self, document_id: int, *, name: str, content_type: str | None) -> Upload:
        """A new upload into an existing (half-finished) document: Clio's documented way is
        ``POST /documents.json`` with ``parent {id: document_id, type: "Document"}``, which
        adds a version with its own ``uuid``/``put_url``; then PUT and
        :meth:`finish_document` as for a new document. (``PATCH /documents/{id}`` has no
        field that hands out a new ``put_url`` for a single-part upload.)"""
        data: dict[str, Any] = {"name": name, "parent": {"id": document_id, "type": "Document"}}
        if content_type:
            data["content_type"] = content_type
        return self._post_document(data, "the new document version")

    def put_bytes(self, upload: Upload, body: BinaryIO | Readable, length: int) -> None:
        """PUT ``length`` bytes of ``body`` to the storage ``put_url``, streamed (64 KiB at a
        time, never read whole) with exactly ``put_headers`` and a ``Content-Length``; no
        ``Authorization``, and outside the API's pacing and token refresh (it is S3, not
        Clio's API). A refusal raises :class:`UploadRefused`; no answer or a 5xx raises
        ``ServiceDown`` (not retried here: the body has been read; upload again)."""
        if length < 0:
            raise ValueError("length must be 0 or more")
        headers = dict(upload.put_headers)
        headers.pop("Authorization", None)
        headers["Content-Length"] = str(length)
        try:
            response = self._storage.put(upload.put_url, data=_Body(body, length) if length
                                         else b"", headers=headers, timeout=STORAGE_TIMEOUT,
                                         proxies=self.api._proxies_for(upload.put_url))
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise ServiceDown(SERVICE, f"Clio's document storage did not answer "
                              f"({type(exc).__name__}).", unanswered=True) from None
        with response:
            if response.status_code < 300:
                return
            code, message = _storage_error(response)
            status = response.status_code
        log.warning("Clio document storage refused an upload: %s %s %s", status, code, message)
        if status >= 500:
            raise ServiceDown(SERVICE, "Clio's document storage had an internal error.",
                              status=status, code=code, detail=message)
        raise UploadRefused(SERVICE, f"Clio's document storage refused the file ({status} "
                            f"{code or 'error'}).", status=status, code=code, detail=message)

    def finish_document(self, document_id: int, uuid: str) -> Document:
        """``PATCH /documents/{id}.json {uuid, fully_uploaded: true}``: the upload is complete.
        Safe to repeat: when Clio says the version is already complete (a retry after a lost
        answer), the document is read and returned. No bytes at the ``put_url`` raises
        :class:`UploadNotFound`."""
        try:
            with self._documents_allowed():
                response = self.api.request(
                    "PATCH", f"{self.base}/documents/{document_id}.json",
                    params={"fields": DOCUMENT_FIELDS},
                    json_body={"data": {"uuid": uuid, "fully_uploaded": True}},
                    idempotent=True)
        except RequestRejected as exc:
            if exc.code == "UploadNotFoundError":
                raise UploadNotFound(SERVICE, "Clio did not find the uploaded file; hardcost "
                                     "uploads it again.", status=exc.status, code=exc.code,
                                     detail=exc.detail, request_id=exc.request_id) from None
            if exc.status == 422 and "already" in str(exc.detail or "").lower():
                done = self.document(document_id)
                if done.fully_uploaded and done.uuid == uuid:
                    return done
            raise
        body = self._json(response)
        return shaped(SERVICE, "the finished document", lambda: _document(body["data"]))

    def find_documents(self, *, name: str, value: str) -> list[Document]:
        """Documents whose external property ``name`` is ``value``, half-finished ones too
        (``show_uncompleted=true``): what an earlier attempt may have left."""
        params = {"external_property_name": name, "external_property_value": value,
                  "show_uncompleted": "true", "fields": DOCUMENT_FIELDS}
        with self._documents_allowed():
            rows = list(self._paged("documents.json", params))
        return shaped(SERVICE, "a search of documents", lambda: [_document(r) for r in rows])

    def document(self, document_id: int) -> Document:
        with self._documents_allowed():
            response = self.api.request("GET", f"{self.base}/documents/{document_id}.json",
                                        params={"fields": DOCUMENT_FIELDS})
        return shaped(SERVICE, "a document", lambda: _document(self._json(response)["data"]))

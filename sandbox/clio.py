"""A fake Clio Manage API v4 that serves real HTTP.

It behaves as Clio's documentation of Manage API v4 describes the real one: wrapped
bodies, ``fields=`` selection (only ``id`` and ``etag`` without it), cursor paging with full
``next`` URLs, ETags with ``If-Match``, per-token rate limits, OAuth with reusable refresh
tokens, and every request and every 2xx answer (its own and a fault's) checked against Clio's own
OpenAPI document (``sandbox.openapi``); what breaks it is collected in ``schema_errors``.

Tests and the demo seed data through the Python API (:class:`ClioSandbox`, :class:`ClioAccount`);
clients only ever talk HTTP to it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import logging
import math
import mimetypes
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import simplejson
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from hardcost.sandbox.body import NO_BODY
from hardcost.sandbox.clio_storage import STORAGE_PREFIX, Storage, drain, s3_error
from hardcost.sandbox.clock import SandboxClock
from hardcost.sandbox.faults import (
    Call,
    CallLog,
    Fault,
    FaultPlan,
    RandomFaults,
    with_faults,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from hardcost.sandbox.openapi import OpenApiDocument

API_PREFIX = "/api/v4"
API_VERSION = "4.0.13"
ACCESS_TOKEN_SECONDS = 2_592_000
RATE_WINDOW_SECONDS = 60
DEFAULT_LIMIT = 200
OFFSET_PAGING_CAP = 10_000
CLIO_SCHEMA = Path(__file__).resolve().with_name("clio_schema.json")
"""The facts of Clio's OpenAPI document every request and answer is checked against (made by
``scripts/clio_schema_extract.py``; see docs/api-fidelity.md)."""
log = logging.getLogger(__name__)
JSON_TYPE = "application/json; charset=utf-8"

ACTIVITY_TYPES = ("TimeEntry", "ExpenseEntry", "HardCostEntry", "SoftCostEntry")
COST_TYPES = ("ExpenseEntry", "HardCostEntry", "SoftCostEntry")
BILL_STATES = ("draft", "awaiting_approval", "awaiting_payment", "paid")
BILLED_STATES = ("awaiting_payment", "paid")
ASSOCIATIONS = {"matter": "Matter", "user": "User", "vendor": "Vendor",
                "expense_category": "Expense category", "utbms_expense": "Utbms expense"}
UTBMS_TYPES = ("UtbmsTask", "UtbmsExpense", "UtbmsActivity")

Record = dict[str, Any]
FieldTree = list[tuple[str, "FieldTree | None"]]
Predicate = Callable[[Record], bool]
DEFAULT_FIELDS: FieldTree = [("id", None), ("etag", None)]

# Which fields each resource has; a value names the resource a nested field renders as.
FIELDS: dict[str, dict[str, str | None]] = {
    "activity": {
        "id": None, "etag": None, "type": None, "date": None, "price": None, "quantity": None,
        "total": None, "note": None, "reference": None, "billed": None, "on_bill": None,
        "non_billable": None, "no_charge": None, "created_at": None, "updated_at": None,
        "matter": "matter", "user": "user",
        "vendor": "contact", "expense_category": "expense_category", "bill": "bill",
        "utbms_expense": "utbms_code",
    },
    "matter": {
        "id": None, "etag": None, "display_number": None, "description": None, "status": None,
        "client": "contact", "client_reference": None, "open_date": None, "created_at": None,
        "updated_at": None,
    },
    "contact": {
        "id": None, "etag": None, "name": None, "type": None, "primary_email_address": None,
        "first_name": None, "last_name": None, "created_at": None, "updated_at": None,
    },
    "user": {
        "id": None, "etag": None, "name": None, "email": None, "account_owner": None,
        "enabled": None, "first_name": None, "last_name": None, "created_at": None,
        "updated_at": None,
    },
    "expense_category": {
        "id": None, "etag": None, "name": None, "rate": None, "entry_type": None,
        "created_at": None, "updated_at": None, "utbms_code": "utbms_code",
    },
    "utbms_code": {
        "id": None, "etag": None, "name": None, "code": None, "description": None, "type": None,
        "utbms_set_id": None, "created_at": None, "updated_at": None,
    },
    "utbms_set": {
        "id": None, "etag": None, "name": None, "enabled": None, "created_at": None,
        "updated_at": None,
    },
    "bill": {"id": None, "etag": None, "state": None, "number": None, "issued_at": None},
    "document": {
        "id": None, "etag": None, "type": None, "name": None, "filename": None,
        "content_type": None, "received_at": None, "size": None, "locked": None,
        "created_at": None, "updated_at": None, "deleted_at": None, "matter": "matter",
        "parent": "folder", "latest_document_version": "document_version",
        "external_properties": "external_property",
    },
    "document_version": {
        "id": None, "etag": None, "document_id": None, "uuid": None, "filename": None,
        "size": None, "version_number": None, "content_type": None, "received_at": None,
        "put_url": None, "fully_uploaded": None, "created_at": None, "updated_at": None,
        "put_headers": "put_header",
    },
    "external_property": {"id": None, "etag": None, "name": None, "value": None,
                          "created_at": None, "updated_at": None},
    "put_header": {"name": None, "value": None},
    "folder": {"id": None, "etag": None, "type": None, "name": None, "created_at": None,
               "updated_at": None},
}
EMBEDDED = frozenset({"bill", "document_version", "external_property", "put_header", "folder"})
"""Nested resources rendered from the copy inside their record (no store of their own)."""
NESTED_DEFAULTS: dict[str, FieldTree] = {"put_header": [("name", None), ("value", None)]}
"""A nested resource's fields when none are asked for (others: ``id`` and ``etag``)."""
MAX_EXTERNAL_PROPERTIES = 5


# -- errors and responses ----------------------------------------------------------------------

class ApiError(Exception):
    """An answer in Clio's error shape: ``{"error": {"type": ..., "message": ...}}``."""

    def __init__(self, status: int, kind: str, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message
        self.headers = dict(headers or {})

    def response(self) -> Response:
        body = {"error": {"type": self.kind, "message": self.message}}
        return json_response(body, self.status, self.headers)


def unprocessable(message: str) -> ApiError:
    return ApiError(422, "UnprocessableEntity", message)


def bad_argument(message: str) -> ApiError:
    return ApiError(400, "ArgumentError", message)


def json_response(body: object, status: int = 200,
                  headers: Mapping[str, str] | None = None) -> Response:
    return Response(simplejson.dumps(body, use_decimal=True), status=status,
                    headers=dict(headers or {}), content_type=JSON_TYPE)


def oauth_error(status: int, error: str, description: str | None = None) -> Response:
    body = {"error": error} if description is None else {
        "error": error, "error_description": description}
    return json_response(body, status)


# -- fault builders (arm with ``sandbox.faults.add(...)``) ---------------------------------------

def rate_limit_fault(retry_after: int = 1, times: int = 1, path: str = r"/api/v4/") -> Fault:
    """The next ``times`` matching requests get Clio's 429 with ``Retry-After``."""
    body = {"error": {"type": "RateLimited",
                      "message": f"Rate limit exceeded. Retry in {retry_after} seconds."}}
    return Fault(path=path, status=429, times=times, body=json.dumps(body),
                 headers={"Retry-After": str(retry_after)}, content_type=JSON_TYPE)


def server_error_fault(status: int = 500, times: int = 1, path: str = r"/api/v4/",
                       method: str | None = None, *, after_handler: bool = False) -> Fault:
    """The next ``times`` matching requests fail with ``status`` and have no effect (with
    ``after_handler``: the request took effect and only the reply is lost)."""
    body = {"error": {"type": "InternalServerError", "message": "Something went wrong"}}
    return Fault(path=path, method=method, status=status, times=times, body=json.dumps(body),
                 content_type=JSON_TYPE, after_handler=after_handler)


def timeout_fault(delay: float, times: int = 1, path: str = r"/api/v4/") -> Fault:
    """The next ``times`` matching requests hang ``delay`` seconds, then fail with 504 unapplied.

    Make ``delay`` longer than the client's timeout to simulate a timeout. (For a reply lost
    *after* the effect, arm ``Fault(after_handler=True, ...)`` instead.)
    """
    body = {"error": {"type": "GatewayTimeout", "message": "The request timed out"}}
    return Fault(path=path, status=504, times=times, delay=delay, body=json.dumps(body),
                 content_type=JSON_TYPE)


RATE_LIMITED = "rate_limited"
SERVER_ERROR = "server_error"
BAD_GATEWAY = "bad_gateway"
LOST_REPLY = "lost_reply"
TIMEOUT = "timeout"
LATE_REPLY = "late_reply"
FAULT_KINDS = {
    RATE_LIMITED: "429 with Retry-After, not applied",
    SERVER_ERROR: "500, not applied",
    BAD_GATEWAY: "502, not applied",
    LOST_REPLY: "502 after the request took effect (a lost reply)",
    TIMEOUT: "no answer within the client's timeout, not applied",
    LATE_REPLY: "no answer within the client's timeout, after the request took effect",
}
"""What each kind of :func:`random_faults` does to a request."""
FAULT_WEIGHTS = dict.fromkeys(FAULT_KINDS, 1)
"""The default mix: every kind equally often, so every six faults hold each kind once."""
SLOW_WRITE = "slow_write"
"""Not in the default mix: the request is held ``hang`` seconds, *then* takes effect and is
answered — after the client gave up on it, and possibly after it looked for the entry."""


def random_faults(rate: float, *, seed: int = 0, hang: float = 1.0, retry_after: int = 1,
                  weights: dict[str, int] | None = None, path: str = r"/api/v4/",
                  method: str | None = None) -> RandomFaults:
    """A flaky Clio: ``rate`` of the matching requests fail with the mix of ``FAULT_KINDS``
    (``weights``, default ``FAULT_WEIGHTS``; ``SLOW_WRITE`` may be weighted in too). ``hang``
    is how long a timeout holds the reply: make it longer than the client's read timeout.
    Set it as ``sandbox.faults.random``."""
    rate_limited = rate_limit_fault(retry_after=retry_after)
    timeout = timeout_fault(hang)
    late = Fault(passthrough=True, delay_after=hang)
    faults = {RATE_LIMITED: rate_limited, SERVER_ERROR: server_error_fault(500),
              BAD_GATEWAY: server_error_fault(502),
              LOST_REPLY: server_error_fault(502, after_handler=True),
              TIMEOUT: timeout, LATE_REPLY: late,
              SLOW_WRITE: Fault(passthrough=True, delay=hang)}
    chosen = FAULT_WEIGHTS if weights is None else weights
    unknown = set(chosen) - faults.keys()
    if unknown:
        raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {sorted(faults)}")
    return RandomFaults(rate, {kind: (weight, faults[kind]) for kind, weight in chosen.items()},
                        seed=seed, path=path, method=method)


# -- records -----------------------------------------------------------------------------------

def new_etag() -> str:
    return f'"{uuid.uuid4().hex}"'


class Ledger:
    """What every record of one sandbox shares: the id counter, the clock and the lock."""

    def __init__(self, clock: SandboxClock) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self._ids = itertools.count(1)
        self.storage = Storage(clock)

    def next_id(self) -> int:
        return next(self._ids)

    def ids_from(self, first: int) -> None:
        """Number the records made from now on from ``first``: production Clio's ids run to
        ten digits, which some bounds only meet at that size."""
        with self.lock:
            self._ids = itertools.count(first)

    def now(self) -> str:
        return self.clock.now().isoformat(timespec="seconds")

    def new_record(self, **values: Any) -> Record:
        now = self.now()
        return {"id": self.next_id(), "etag": new_etag(), **values,
                "created_at": now, "updated_at": now}

    def touch(self, record: Record) -> None:
        record["etag"] = new_etag()
        record["updated_at"] = self.now()


class ClioAccount:
    """One Clio firm: its users, contacts, matters, expense categories and activities."""

    def __init__(self, ledger: Ledger, *, name: str, hard_costs_enabled: bool) -> None:
        self._ledger = ledger
        self.id = ledger.next_id()
        self.name = name
        self.hard_costs_enabled = hard_costs_enabled
        self.users: dict[int, Record] = {}
        self.contacts: dict[int, Record] = {}
        self.matters: dict[int, Record] = {}
        self.expense_categories: dict[int, Record] = {}
        self.activities: dict[int, Record] = {}
        self.documents: dict[int, Record] = {}
        self.folders: dict[int, Record] = {}
        self.documents_allowed = True
        """False: every ``/documents`` request answers 403, as for a connection whose user
        (or app) lacks the documents permission."""
        self.utbms_sets: dict[int, Record] = {}
        self.utbms_codes: dict[int, Record] = {}
        self._matter_numbers = itertools.count(1)
        # Every firm has a primary subscriber; the first owner added takes this record over.
        self._placeholder_owner = True
        self.owner_id = self._store_user("Account Owner", None, owner=True, enabled=True)["id"]

    @property
    def owner(self) -> Record:
        return self.users[self.owner_id]

    def ids_from(self, first: int) -> None:
        """Records made from now on are numbered from ``first`` (``Ledger.ids_from``)."""
        self._ledger.ids_from(first)

    def add_user(self, name: str, *, email: str | None = None, account_owner: bool = False,
                 enabled: bool = True) -> Record:
        with self._ledger.lock:
            if not account_owner:
                return self._store_user(name, email, owner=False, enabled=enabled)
            if not self._placeholder_owner:
                raise ValueError(f"account {self.id} already has an owner")
            self._placeholder_owner = False
            owner = self.owner
            owner.update(_person_names(name), name=name, email=email, enabled=enabled)
            self._ledger.touch(owner)
            return owner

    def add_contact(self, name: str, *, type: str = "Person", email: str | None = None) -> Record:
        if type not in ("Person", "Company"):
            raise ValueError(f"contact type must be Person or Company, not {type!r}")
        names = _person_names(name) if type == "Person" else {
            "first_name": None, "last_name": None}
        with self._ledger.lock:
            contact = self._ledger.new_record(name=name, type=type, primary_email_address=email,
                                              **names)
            self.contacts[contact["id"]] = contact
            return contact

    def add_matter(self, client_id: int, *, description: str, display_number: str | None = None,
                   status: str = "Open", client_reference: str | None = None) -> Record:
        if client_id not in self.contacts:
            raise ValueError(f"contact {client_id} is not in account {self.id}")
        if status.capitalize() not in ("Open", "Pending", "Closed"):
            raise ValueError(f"matter status must be Open, Pending or Closed, not {status!r}")
        with self._ledger.lock:
            number = next(self._matter_numbers)
            matter = self._ledger.new_record(
                display_number=display_number or f"{number:05d}", description=description,
                status=status.capitalize(), client={"id": client_id},
                client_reference=client_reference,
                open_date=self._ledger.clock.now().date().isoformat(),
            )
            self.matters[matter["id"]] = matter
            return matter

    def add_expense_category(self, name: str, *, entry_type: str = "hard_cost",
                             rate: Decimal | str = "0", utbms_code_id: int | None = None
                             ) -> Record:
        if entry_type not in ("hard_cost", "soft_cost", "unassociated"):
            raise ValueError(f"unknown expense category entry_type {entry_type!r}")
        if utbms_code_id is not None and utbms_code_id not in self.utbms_codes:
            raise ValueError(f"UTBMS code {utbms_code_id} is not in account {self.id}")
        with self._ledger.lock:
            category = self._ledger.new_record(
                name=name, rate=Decimal(str(rate)), entry_type=entry_type,
                utbms_code=None if utbms_code_id is None else {"id": utbms_code_id})
            self.expense_categories[category["id"]] = category
            return category

    def delete_expense_category(self, category_id: int) -> None:
        """A person deletes the category in Clio (entries that name it keep their copy)."""
        with self._ledger.lock:
            del self.expense_categories[category_id]

    def add_utbms_set(self, name: str, *, enabled: bool = True) -> Record:
        """A UTBMS code set (Clio lists the sets with ``enabled`` for this account)."""
        with self._ledger.lock:
            utbms_set = self._ledger.new_record(name=name, enabled=enabled)
            self.utbms_sets[utbms_set["id"]] = utbms_set
            return utbms_set

    def set_utbms_set_enabled(self, set_id: int, enabled: bool) -> None:
        with self._ledger.lock:
            self.utbms_sets[set_id]["enabled"] = enabled
            self._ledger.touch(self.utbms_sets[set_id])

    def add_utbms_code(self, set_id: int, code: str, name: str, *,
                       type: str = "UtbmsExpense", description: str | None = None) -> Record:
        if set_id not in self.utbms_sets:
            raise ValueError(f"UTBMS set {set_id} is not in account {self.id}")
        if type not in UTBMS_TYPES:
            raise ValueError(f"UTBMS code type must be one of {UTBMS_TYPES}, not {type!r}")
        with self._ledger.lock:
            utbms_code = self._ledger.new_record(code=code, name=name,
                                                 description=description or name, type=type,
                                                 utbms_set_id=set_id)
            self.utbms_codes[utbms_code["id"]] = utbms_code
            return utbms_code

    def require_utbms(self, matter_id: int, required: bool = True) -> None:
        """LEDES billing on the matter: Clio refuses an expense without a UTBMS code."""
        with self._ledger.lock:
            self.matters[matter_id]["ledes"] = required

    def mark_billed(self, activity_id: int, *, state: str = "awaiting_payment") -> None:
        """Put the activity on a bill in ``state`` (``draft`` = on a bill but not billed)."""
        self.add_bill([activity_id], state=state)

    def add_bill(self, activity_ids: Sequence[int], *, state: str = "awaiting_payment",
                 number: str | None = None, issued_at: str | None = None) -> Record:
        """A bill in ``state`` holding the activities (as a person makes one in Clio's web
        app): each gets ``bill {id, number, state, issued_at}``, ``on_bill`` true and
        ``billed`` true once the bill is issued (``awaiting_payment``, ``paid``). A draft or
        one awaiting approval has no ``issued_at``; an issued one is dated today unless
        given. Returns the bill (embedded in its activities, as Clio shows it)."""
        if state not in BILL_STATES:
            raise ValueError(f"bill state must be one of {BILL_STATES}, not {state!r}")
        with self._ledger.lock:
            bill_id = self._ledger.next_id()
            issued = state in BILLED_STATES
            bill: Record = {"id": bill_id, "etag": new_etag(), "state": state,
                            "number": number or str(bill_id),
                            "issued_at": (issued_at or self._ledger.now()[:10]) if issued
                            else None}
            for activity_id in activity_ids:
                activity = self.activities[activity_id]
                activity["bill"] = dict(bill)
                activity["on_bill"] = True
                activity["billed"] = issued
                self._ledger.touch(activity)
            return bill

    def set_non_billable(self, activity_id: int, *, no_charge: bool = False) -> None:
        """A person marks the activity non-billable in Clio (``no_charge``: billable but
        shown on the bill at no charge, a write-off)."""
        with self._ledger.lock:
            activity = self.activities[activity_id]
            activity["non_billable" if not no_charge else "no_charge"] = True
            self._ledger.touch(activity)

    def edit_activity(self, activity_id: int, **changes: Any) -> None:
        """A person changes the activity in Clio's web app (``price``, ``date``, ``note``,
        ``reference``); its etag changes. With no changes, only the etag changes (Clio's own
        bookkeeping touched it)."""
        with self._ledger.lock:
            activity = self.activities[activity_id]
            for key, value in changes.items():
                if key not in ("price", "date", "note", "reference"):
                    raise TypeError(f"edit_activity: {key} is not editable here")
                activity[key] = Decimal(str(value)) if key == "price" else value
            activity["total"] = activity_total(activity)
            self._ledger.touch(activity)

    # -- documents (test-facing)

    def refuse_documents(self, refused: bool = True) -> None:
        """Every ``/documents`` request of this account answers 403 (the connection lacks the
        documents permission) until called again with ``False``."""
        with self._ledger.lock:
            self.documents_allowed = not refused

    def documents_of(self, matter_id: int, *, uncompleted: bool = True) -> list[Record]:
        """The matter's documents as a test checks them: ``id``, ``name``, ``fully_uploaded``
        (the latest version's), ``uuid``, ``sha256`` and ``size`` of the bytes stored for
        the latest version (None before a PUT), ``data`` (small files only),
        ``content_type``, ``received_at``, ``external`` (name → value) and ``versions``."""
        with self._ledger.lock:
            found = []
            for document in self.documents.values():
                if (document["matter"] or {}).get("id") != matter_id or \
                        (not uncompleted and not document_completed(document)):
                    continue
                version = document["latest_document_version"]
                upload = self._ledger.storage.upload(version["uuid"])
                found.append({
                    "id": document["id"], "name": document["name"],
                    "fully_uploaded": version["fully_uploaded"], "uuid": version["uuid"],
                    "sha256": upload.sha256 if upload else None,
                    "size": upload.size if upload else None,
                    "data": upload.data if upload else None,
                    "content_type": version["content_type"],
                    "received_at": document["received_at"],
                    "external": {p["name"]: p["value"] for p in document["external_properties"]},
                    "versions": len(document["versions"]),
                })
            return found

    def matter_folder(self, matter_id: int) -> Record:
        """The matter's own document folder (made on first use)."""
        with self._ledger.lock:
            matter = self.matters[matter_id]
            folder_id = matter.get("folder_id")
            if folder_id is None:
                folder = self._ledger.new_record(type="Folder", name=matter["display_number"],
                                                 matter={"id": matter_id})
                self.folders[folder["id"]] = folder
                folder_id = matter["folder_id"] = folder["id"]
            return self.folders[folder_id]

    def store(self, resource: str) -> dict[int, Record]:
        """The records of one resource kind (``activity``, ``matter``, ``contact``...)."""
        return {
            "activity": self.activities, "matter": self.matters, "contact": self.contacts,
            "document": self.documents, "folder": self.folders,
            "user": self.users, "expense_category": self.expense_categories,
            "utbms_code": self.utbms_codes, "utbms_set": self.utbms_sets,
        }[resource]

    def resolve(self, resource: str, reference: Record | None) -> Record | None:
        """The record a nested reference (``{"id": 5}``) points at; bills are embedded."""
        if reference is None or resource in EMBEDDED:
            return reference
        return self.store(resource).get(reference["id"], reference)

    def _store_user(self, name: str, email: str | None, *, owner: bool, enabled: bool) -> Record:
        with self._ledger.lock:
            user = self._ledger.new_record(name=name, email=email, account_owner=owner,
                                           enabled=enabled, **_person_names(name))
            self.users[user["id"]] = user
            return user


def _person_names(name: str) -> dict[str, str | None]:
    first, _, last = name.strip().partition(" ")
    return {"first_name": first or None, "last_name": last or None}


# -- fields= -----------------------------------------------------------------------------------

def parse_fields(text: str) -> FieldTree:
    """``id,matter{id,display_number}`` → ``[("id", None), ("matter", [...])]``."""
    tree, rest = _parse_field_list(text.replace(" ", ""), 0)
    if rest != len(text.replace(" ", "")):
        raise bad_argument(f"Invalid fields parameter: {text}")
    return tree


def _parse_field_list(text: str, at: int) -> tuple[FieldTree, int]:
    tree: FieldTree = []
    while at < len(text) and text[at] != "}":
        match = re.compile(r"[A-Za-z_][A-Za-z0-9_]*").match(text, at)
        if match is None:
            raise bad_argument(f"Invalid fields parameter: {text}")
        name, at = match.group(), match.end()
        children: FieldTree | None = None
        if at < len(text) and text[at] == "{":
            children, at = _parse_field_list(text, at + 1)
            if at >= len(text) or text[at] != "}":
                raise bad_argument(f"Invalid fields parameter: {text}")
            at += 1
        tree.append((name, children))
        if at < len(text) and text[at] == ",":
            at += 1
    return tree, at


def check_fields(resource: str, tree: FieldTree) -> None:
    known = FIELDS[resource]
    for name, children in tree:
        if name not in known:
            raise bad_argument(f"Invalid field: {name}")
        nested = known[name]
        if children is not None:
            if nested is None:
                raise bad_argument(f"Invalid field: {name}")
            check_fields(nested, children)


def render(resource: str, record: Record, tree: FieldTree, account: ClioAccount) -> Record:
    shown: Record = {}
    for name, children in tree:
        nested = FIELDS[resource][name]
        if nested is None:
            shown[name] = record.get(name)
            continue
        subtree = children or NESTED_DEFAULTS.get(nested, DEFAULT_FIELDS)
        value = record.get(name)
        if isinstance(value, list):  # a has-many association (external_properties, ...)
            shown[name] = [render(nested, account.resolve(nested, item) or item, subtree,
                                  account) for item in value]
            continue
        target = account.resolve(nested, value)
        shown[name] = None if target is None else render(nested, target, subtree, account)
    return shown


# -- query arguments ---------------------------------------------------------------------------

def int_arg(args: MultiDict[str, str], name: str) -> int | None:
    """An integer argument; ``None`` for the keyword ``null``."""
    raw = args.get(name, "")
    if raw == "null":
        return None
    try:
        return int(raw)
    except ValueError:
        raise bad_argument(f"Invalid value for {name}: {raw!r}") from None


def ids_arg(args: MultiDict[str, str]) -> set[int]:
    try:
        return {int(raw) for raw in args.getlist("ids[]")}
    except ValueError:
        raise bad_argument("Invalid value for ids[]") from None


def date_arg(args: MultiDict[str, str], name: str) -> str:
    raw = args.get(name, "")
    try:
        return date.fromisoformat(raw[:10]).isoformat()
    except ValueError:
        raise bad_argument(f"Invalid value for {name}: {raw!r}") from None


def time_arg(args: MultiDict[str, str], name: str) -> datetime:
    raw = args.get(name, "")
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise bad_argument(f"Invalid value for {name}: {raw!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def contains(haystack: object, needle: str) -> bool:
    return isinstance(haystack, str) and needle.lower() in haystack.lower()


def refers_to(key: str, wanted: int | None) -> Predicate:
    def check(record: Record) -> bool:
        reference = record.get(key)
        return (reference or {}).get("id") == wanted
    return check


def changed_since(key: str, since: datetime) -> Predicate:
    return lambda record: datetime.fromisoformat(record[key]) >= since


def common_predicates(args: MultiDict[str, str]) -> list[Predicate]:
    predicates: list[Predicate] = []
    if "ids[]" in args:
        ids = ids_arg(args)
        predicates.append(lambda r: r["id"] in ids)
    for name, key in (("updated_since", "updated_at"), ("created_since", "created_at")):
        if name in args:
            predicates.append(changed_since(key, time_arg(args, name)))
    return predicates


def activity_predicates(args: MultiDict[str, str]) -> list[Predicate]:
    predicates = common_predicates(args)
    for name, key in (("matter_id", "matter"), ("user_id", "user"),
                      ("expense_category_id", "expense_category")):
        if name in args:
            predicates.append(refers_to(key, int_arg(args, name)))
    if "type" in args:
        wanted = {part.lower() for part in args["type"].split(",")}
        predicates.append(lambda r: r["type"].lower() in wanted)
    if "status" in args:
        predicates.append(activity_status(args["status"]))
    if "start_date" in args:
        start = date_arg(args, "start_date")
        predicates.append(lambda r: r["date"] >= start)
    if "end_date" in args:
        end = date_arg(args, "end_date")
        predicates.append(lambda r: r["date"] <= end)
    if "query" in args:
        needle = args["query"]
        predicates.append(lambda r: contains(r.get("note"), needle))
    return predicates


def activity_status(status: str) -> Predicate:
    checks: dict[str, Predicate] = {
        "billed": lambda r: r["billed"],
        "draft": lambda r: r["on_bill"] and not r["billed"],
        "unbilled": lambda r: not (r["on_bill"] or r.get("non_billable") or r.get("no_charge")),
        "billable": lambda r: not (r["on_bill"] or r.get("non_billable")),
        "non_billable": lambda r: bool(r.get("non_billable")),
        "written_off": lambda r: bool(r.get("no_charge")),
    }
    if status not in checks:
        raise bad_argument(f"Invalid value for status: {status!r}")
    return checks[status]


def matter_predicates(args: MultiDict[str, str], account: ClioAccount) -> list[Predicate]:
    predicates = common_predicates(args)
    if "client_id" in args:
        predicates.append(refers_to("client", int_arg(args, "client_id")))
    if "status" in args:
        statuses = {part.strip().capitalize() for part in args["status"].split(",")}
        if not statuses <= {"Open", "Pending", "Closed"}:
            raise bad_argument(f"Invalid value for status: {args['status']!r}")
        predicates.append(lambda r: r["status"] in statuses)
    if "query" in args:
        needle = args["query"]

        def matches(matter: Record) -> bool:
            client = account.resolve("contact", matter["client"]) or {}
            return any(contains(text, needle) for text in (
                matter["display_number"], matter["description"], client.get("name")))
        predicates.append(matches)
    return predicates


def contact_predicates(args: MultiDict[str, str]) -> list[Predicate]:
    predicates = common_predicates(args)
    if "type" in args:
        kind = args["type"].capitalize()
        predicates.append(lambda r: r["type"] == kind)
    if "query" in args:
        needle = args["query"]
        predicates.append(lambda r: contains(r["name"], needle)
                          or contains(r["primary_email_address"], needle))
    return predicates


def user_predicates(args: MultiDict[str, str]) -> list[Predicate]:
    predicates = common_predicates(args)
    if "enabled" in args:
        enabled = args["enabled"].lower() == "true"
        predicates.append(lambda r: r["enabled"] == enabled)
    if "name" in args:
        needle = args["name"]
        predicates.append(lambda r: contains(r["name"], needle))
    return predicates


def utbms_code_predicates(args: MultiDict[str, str]) -> list[Predicate]:
    predicates = common_predicates(args)
    if "type" in args:
        kind = args["type"]
        if kind not in UTBMS_TYPES:
            raise bad_argument(f"Invalid type: {kind}")
        predicates.append(lambda r: r["type"] == kind)
    if "utbms_set_id" in args:
        set_id = int_arg(args, "utbms_set_id")
        predicates.append(lambda r: r["utbms_set_id"] == set_id)
    return predicates


def expense_category_predicates(args: MultiDict[str, str]) -> list[Predicate]:
    predicates = common_predicates(args)
    if "entry_type" in args:
        entry_type = args["entry_type"]
        predicates.append(lambda r: r["entry_type"] == entry_type)
    if "query" in args:
        needle = args["query"]
        predicates.append(lambda r: contains(r["name"], needle))
    return predicates


def document_completed(document: Record) -> bool:
    """A document counts as uploaded once one of its versions is fully uploaded."""
    return any(version["fully_uploaded"] for version in document["versions"])


def document_predicates(args: MultiDict[str, str], account: ClioAccount) -> list[Predicate]:
    predicates = common_predicates(args)
    for name, key in (("matter_id", "matter"), ("parent_id", "parent")):
        if name in args:
            predicates.append(refers_to(key, int_arg(args, name)))
    if "external_property_value" in args and "external_property_name" not in args:
        raise bad_argument("external_property_value requires external_property_name")
    if "external_property_name" in args:
        wanted_name = args["external_property_name"]
        wanted_value = args.get("external_property_value")
        predicates.append(lambda r: any(
            p["name"] == wanted_name and (wanted_value is None or p["value"] == wanted_value)
            for p in r["external_properties"]))
    if args.get("show_uncompleted", "false").lower() != "true":
        predicates.append(document_completed)
    if args.get("include_deleted", "false").lower() != "true":
        predicates.append(lambda r: r.get("deleted_at") is None)
    if "query" in args:
        needle = args["query"]
        predicates.append(lambda r: contains(r["name"], needle))
    return predicates


@dataclass(frozen=True)
class Collection:
    resource: str
    model: str
    max_limit: int
    predicates: Callable[[MultiDict[str, str], ClioAccount], list[Predicate]]


COLLECTIONS: dict[str, Collection] = {
    "activities": Collection("activity", "Activity", 200, lambda a, _: activity_predicates(a)),
    "matters": Collection("matter", "Matter", 200, matter_predicates),
    "contacts": Collection("contact", "Contact", 200, lambda a, _: contact_predicates(a)),
    "users": Collection("user", "User", 2000, lambda a, _: user_predicates(a)),
    "expense_categories": Collection("expense_category", "ExpenseCategory", 200,
                                     lambda a, _: expense_category_predicates(a)),
    "documents": Collection("document", "Document", 200, document_predicates),
}
UTBMS_COLLECTIONS: dict[str, Collection] = {
    "codes": Collection("utbms_code", "UtbmsCode", 200, lambda a, _: utbms_code_predicates(a)),
    "sets": Collection("utbms_set", "UtbmsSet", 200, lambda a, _: common_predicates(a)),
}
"""``/utbms/codes.json`` and ``/utbms/sets.json`` (read only)."""


# -- ordering and paging -----------------------------------------------------------------------

@dataclass(frozen=True)
class Page:
    records: list[Record]
    total: int
    next_token: str | None


def parse_order(raw: str | None) -> tuple[str, bool]:
    """``name(desc)`` → ``("name", True)``; the default is ``id(asc)``."""
    if not raw:
        return "id", False
    match = re.fullmatch(r"([a-z_.]+)\((asc|desc)\)", raw)
    if match is None:
        raise bad_argument(f"Invalid value for order: {raw!r}")
    return match.group(1), match.group(2) == "desc"


def sort_records(records: list[Record], resource: str, order: tuple[str, bool],
                 account: ClioAccount) -> list[Record]:
    key_path, descending = order

    def key(record: Record) -> tuple[bool, Any, int]:
        value: Any = record
        kind: str | None = resource
        for part in key_path.split("."):
            nested = FIELDS.get(kind or "", {}).get(part)
            value = value.get(part) if isinstance(value, dict) else None
            if nested is not None:
                value, kind = account.resolve(nested, value), nested
        if isinstance(value, dict):
            value = value.get("id")
        return value is None, value if value is not None else 0, record["id"]

    return sorted(records, key=key, reverse=descending)


def filter_signature(args: MultiDict[str, str]) -> str:
    kept = sorted((k, v) for k, v in args.items(multi=True)
                  if k not in ("page_token", "limit", "fields"))
    return hashlib.sha256(json.dumps(kept).encode()).hexdigest()[:16]


def encode_token(position: Record) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def decode_token(token: str, signature: str) -> Record:
    try:
        padded = token + "=" * (-len(token) % 4)
        position = json.loads(base64.urlsafe_b64decode(padded))
    except (binascii.Error, ValueError):
        raise bad_argument("Invalid page_token") from None
    if not isinstance(position, dict) or position.get("filters") != signature:
        raise bad_argument("page_token does not belong to this query")
    return position


def page_limit(args: MultiDict[str, str], maximum: int) -> int:
    if "limit" not in args:
        return min(DEFAULT_LIMIT, maximum)
    limit = int_arg(args, "limit")
    if limit is None or not 1 <= limit <= maximum:
        raise bad_argument(f"Limit must be between 1 and {maximum}")
    return limit


def paginate(records: list[Record], args: MultiDict[str, str], maximum: int,
             by_id_cursor: bool) -> Page:
    """One page of ``records`` (already filtered and sorted).

    With ``order=id(asc)`` the cursor is the last id seen (unlimited); otherwise it is an offset,
    and offsets past 10,000 records are refused, as Clio does.
    """
    limit = page_limit(args, maximum)
    signature = filter_signature(args)
    position = decode_token(args["page_token"], signature) if "page_token" in args else {}
    if by_id_cursor:
        after = int(position.get("after", 0))
        rest = [r for r in records if r["id"] > after]
        page = rest[:limit]
        more = len(rest) > limit
        following = {"after": page[-1]["id"] if page else after}
    else:
        offset = int(position.get("offset", 0))
        if offset >= OFFSET_PAGING_CAP:
            raise unprocessable("Offset pagination is limited to 10,000 records; "
                                "use order=id(asc) to page through more")
        page = records[offset:offset + limit]
        more = len(records) > offset + limit
        following = {"offset": offset + limit}
    token = encode_token({**following, "filters": signature}) if more else None
    return Page(page, len(records), token)


def next_url(request: Request, token: str) -> str:
    kept = [(k, v) for k, v in request.args.items(multi=True) if k != "page_token"]
    return f"{request.base_url}?{urlencode([*kept, ('page_token', token)])}"


# -- activities --------------------------------------------------------------------------------

def body_data(body: Any) -> Record:
    if body is NO_BODY or not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise ApiError(400, "InvalidRequest", 'The request body must be {"data": {...}}')
    data: Record = body["data"]
    return data


def decimal_value(value: object, label: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise unprocessable(f"{label} is not a number")
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise unprocessable(f"{label} is not a number") from None


def activity_changes(data: Mapping[str, Any]) -> Record:
    """The stored form of the activity fields a request body sets (others are ignored)."""
    changes: Record = {}
    for key in ("type", "note", "reference"):
        if key in data:
            changes[key] = data[key]
    if "non_billable" in data:
        if not isinstance(data["non_billable"], bool):
            raise unprocessable("Non billable is invalid")
        changes["non_billable"] = data["non_billable"]
    if "date" in data:
        try:
            changes["date"] = date.fromisoformat(str(data["date"])).isoformat()
        except ValueError:
            raise unprocessable("Date is invalid") from None
    for key in ("price", "quantity"):
        if key in data:
            changes[key] = decimal_value(data[key], key.capitalize())
    for key, label in ASSOCIATIONS.items():
        if key in data:
            changes[key] = association(data[key], label)
    return changes


def association(value: object, label: str) -> Record | None:
    if isinstance(value, dict) and "id" in value:
        if value["id"] is None:
            return None
        if isinstance(value["id"], int) and not isinstance(value["id"], bool):
            return {"id": value["id"]}
    raise unprocessable(f"{label} is invalid")


def check_activity(account: ClioAccount, activity: Record) -> None:
    """Clio's rules for an activity as it would be saved; 422 naming what is wrong."""
    kind = activity.get("type")
    if not kind:
        raise unprocessable("Type can't be blank")
    if kind not in ACTIVITY_TYPES:
        raise unprocessable(f"Type {kind} is not included in the list")
    if not activity.get("date"):
        raise unprocessable("Date can't be blank")
    if kind in ("HardCostEntry", "SoftCostEntry") and not account.hard_costs_enabled:
        cost = "Hard" if kind == "HardCostEntry" else "Soft"
        raise unprocessable(f"{cost} costs are not enabled for this account")
    if kind in COST_TYPES and activity.get("price") is None:
        raise unprocessable("Price can't be blank")
    if kind == "HardCostEntry" and activity.get("quantity") is not None:
        raise unprocessable("Quantity is not applicable to a HardCostEntry")
    check_references(account, activity)


def check_references(account: ClioAccount, activity: Record) -> None:
    matter = activity.get("matter")
    unknown = matter is not None and matter["id"] not in account.matters
    if unknown or (matter is None and activity["type"] in COST_TYPES):
        raise unprocessable("Matter can't be blank")
    user = activity.get("user")
    if user is not None and not account.users.get(user["id"], {}).get("enabled"):
        raise unprocessable("User is invalid")
    vendor = activity.get("vendor")
    if vendor is not None and vendor["id"] not in account.contacts:
        raise unprocessable("Vendor is invalid")
    check_utbms(account, activity)
    category_ref = activity.get("expense_category")
    if category_ref is None:
        return
    category = account.expense_categories.get(category_ref["id"])
    if category is None:
        raise unprocessable("Expense category is invalid")
    for kind, entry_type in (("HardCostEntry", "soft_cost"), ("SoftCostEntry", "hard_cost")):
        if activity["type"] == kind and category["entry_type"] == entry_type:
            raise unprocessable(f"Expense category is a {entry_type.replace('_', ' ')} category")


def check_utbms(account: ClioAccount, activity: Record) -> None:
    """A UTBMS expense code must be one of the account's, of the expense type, in an enabled
    set; a matter with LEDES billing on needs one on every cost entry."""
    ref = activity.get("utbms_expense")
    if ref is None:
        matter_ref = activity.get("matter") or {}
        matter = account.matters.get(int(matter_ref.get("id") or 0))
        if matter is not None and matter.get("ledes") and activity["type"] in COST_TYPES:
            raise unprocessable("Utbms expense can't be blank for a matter with LEDES billing")
        return
    code = account.utbms_codes.get(ref["id"])
    if code is None:
        raise unprocessable("Utbms expense is invalid")
    if code["type"] != "UtbmsExpense":
        raise unprocessable(f"Utbms expense {code['code']} is not an expense code")
    if not account.utbms_sets.get(code["utbms_set_id"], {}).get("enabled"):
        raise unprocessable(f"Utbms expense {code['code']} is in a set that is not enabled")


def activity_total(activity: Record) -> Decimal | None:
    price: Decimal | None = activity.get("price")
    quantity: Decimal | None = activity.get("quantity")
    if price is None:
        return None
    if activity["type"] == "HardCostEntry":
        return price
    if activity["type"] == "TimeEntry":
        return price * (quantity or Decimal(0)) / 3600
    return price * (quantity if quantity is not None else Decimal(1))


def external_properties(value: object) -> list[Record]:
    """A request's ``external_properties`` (``[{name, value}]``, at most 5), checked."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_EXTERNAL_PROPERTIES:
        raise unprocessable("External properties: there is a limit of 5 per document")
    found = []
    for prop in value:
        name, text = prop.get("name"), prop.get("value")
        if not isinstance(name, str) or not name or not isinstance(text, str) or not text:
            raise unprocessable("External property name and value can't be blank")
        found.append({"name": name, "value": text})
    return found


def storage_fault(status: int = 500, times: int = 1, *, after_handler: bool = False,
                  delay: float = 0.0) -> Fault:
    """The next ``times`` storage PUTs fail with ``status`` and an S3 error body; with
    ``after_handler`` the bytes were stored and only the reply is lost. Arm with
    ``sandbox.faults.add(...)``."""
    code = {500: "InternalError", 503: "SlowDown", 403: "AccessDenied"}.get(status, "Error")
    return Fault(path=r"^/storage/", method="PUT", status=status, times=times,
                 body=s3_error(status, code, "sandbox fault").get_data(),
                 content_type="application/xml", after_handler=after_handler, delay=delay)


def finish_fault(status: int = 502, times: int = 1, *, after_handler: bool = True,
                 delay: float = 0.0) -> Fault:
    """The next ``times`` ``PATCH /documents/{id}.json`` answer ``status``; by default after
    the PATCH took effect (the document is complete, the reply is lost)."""
    body = {"error": {"type": "BadGateway", "message": "sandbox fault"}}
    return Fault(path=r"^/api/v4/documents/\d+\.json$", method="PATCH", status=status,
                 times=times, body=json.dumps(body), content_type=JSON_TYPE,
                 after_handler=after_handler, delay=delay)


def same_etag(given: str, etag: str) -> bool:
    def bare(tag: str) -> str:
        return tag.strip().removeprefix("W/").strip('"')
    return given.strip() == "*" or bare(given) == bare(etag)


# -- OAuth and rate limits ---------------------------------------------------------------------

@dataclass
class Grant:
    """One authorisation of the app by one firm; revoked by ``/oauth/deauthorize``."""

    account: ClioAccount
    user_id: int
    refresh_token: str
    revoked: bool = False


@dataclass
class AccessToken:
    grant: Grant
    expires_at: float


@dataclass
class RateWindow:
    ends_at: float
    used: int = 0


@dataclass
class Context:
    """One authenticated API request."""

    request: Request
    account: ClioAccount
    user_id: int
    token: str
    body: Any = NO_BODY
    args: Mapping[str, Any] = field(default_factory=dict)


# -- the service -------------------------------------------------------------------------------

URL_MAP = Map([
    Rule("/oauth/authorize", methods=["GET"], endpoint="authorize"),
    Rule("/oauth/token", methods=["POST"], endpoint="token"),
    Rule("/oauth/deauthorize", methods=["POST"], endpoint="deauthorize"),
    Rule("/api/v4/users/who_am_i.json", methods=["GET"], endpoint="who_am_i"),
    Rule("/api/v4/activities.json", methods=["POST"], endpoint="create_activity"),
    Rule("/api/v4/documents.json", methods=["POST"], endpoint="create_document"),
    Rule("/api/v4/documents/<int:record_id>.json", methods=["PATCH"],
         endpoint="update_document"),
    Rule("/api/v4/activities/<int:record_id>.json", methods=["PATCH"],
         endpoint="update_activity"),
    Rule("/api/v4/activities/<int:record_id>.json", methods=["DELETE"],
         endpoint="delete_activity"),
    Rule(f"/api/v4/<any({','.join(COLLECTIONS)}):collection>.json", methods=["GET"],
         endpoint="index"),
    Rule(f"/api/v4/utbms/<any({','.join(UTBMS_COLLECTIONS)}):utbms>.json", methods=["GET"],
         endpoint="index"),
    Rule(f"/api/v4/<any({','.join(COLLECTIONS)}):collection>/<int:record_id>.json",
         methods=["GET"], endpoint="show"),
])


class ClioSandbox:
    """A fake Clio Manage (API v4 + OAuth) as a WSGI app; serve it with ``serve_in_thread``."""

    def __init__(self, *, client_id: str = "sandbox-clio-client",
                 client_secret: str = "sandbox-clio-secret", clock: SandboxClock | None = None,
                 rate_limit_per_minute: int = 50, validate: bool = True) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.clock = clock or SandboxClock()
        self.rate_limit_per_minute = rate_limit_per_minute
        self.rate_window_seconds: float = RATE_WINDOW_SECONDS
        """The rate limit's window: 60 s as in Clio; shorter compresses time for benchmarks
        (``rate_limit_per_minute`` requests per window; the reset is then sent with
        fractions of a second, which Clio itself never needs)."""
        self.faults = FaultPlan()
        self.calls = CallLog()
        self.schema_errors: list[str] = []
        self.accounts: dict[int, ClioAccount] = {}
        self._ledger = Ledger(self.clock)
        self._access: dict[str, AccessToken] = {}
        self._refresh: dict[str, Grant] = {}
        self._codes: dict[str, tuple[ClioAccount, str | None]] = {}
        self._windows: dict[str, RateWindow] = {}
        self._spec: OpenApiDocument | None = None
        self.validation_disabled_reason: str | None = None
        self._load_spec(validate)
        self._dispatch = with_faults(self.faults, self.calls, self._handle)

    @property
    def validation_enabled(self) -> bool:
        return self._spec is not None

    @property
    def spec(self) -> OpenApiDocument | None:
        return self._spec

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse
                 ) -> Iterable[bytes]:
        request = Request(environ)
        if request.path.startswith(STORAGE_PREFIX):
            response = self._storage_put(request)
        else:
            response = self._dispatch(request)
            self._check_response(request, response)
        return response(environ, start_response)

    # -- seeding

    def add_account(self, *, name: str = "Sandbox Law",
                    hard_costs_enabled: bool = True) -> ClioAccount:
        with self._ledger.lock:
            account = ClioAccount(self._ledger, name=name, hard_costs_enabled=hard_costs_enabled)
            self.accounts[account.id] = account
            return account

    def issue_tokens(self, account: ClioAccount) -> dict[str, Any]:
        """Tokens as if the firm's owner had just connected the app."""
        with self._ledger.lock:
            grant = Grant(account, account.owner_id, secrets.token_urlsafe(32))
            self._refresh[grant.refresh_token] = grant
            return {**self._new_access(grant), "refresh_token": grant.refresh_token}

    def authorization_code(self, account: ClioAccount, redirect_uri: str | None = None) -> str:
        """A one-time code for ``POST /oauth/token`` (grant_type=authorization_code)."""
        with self._ledger.lock:
            code = secrets.token_urlsafe(16)
            self._codes[code] = (account, redirect_uri)
            return code

    def expire_access_tokens(self) -> None:
        with self._ledger.lock:
            now = self.clock.timestamp()
            for token in self._access.values():
                token.expires_at = min(token.expires_at, now)

    # -- set-up

    def _load_spec(self, validate: bool) -> None:
        if not validate:
            self.validation_disabled_reason = "request validation was turned off (validate=False)"
            return
        # Request validation needs the dev extra's jsonschema packages; it is test tooling, so
        # a plain install (the demo) never imports them, and skips it without them.
        try:
            from hardcost.sandbox.openapi import load_openapi
        except ModuleNotFoundError as exc:
            self.validation_disabled_reason = (
                f"{exc.name or 'a package'} is not installed (pip install 'hardcost[dev]'), so "
                "requests are not checked against Clio's OpenAPI document (its extract "
                f"{CLIO_SCHEMA.name})")
            log.warning("Sandbox Clio: %s.", self.validation_disabled_reason)
            return

        self._spec = load_openapi(CLIO_SCHEMA)

    def _new_access(self, grant: Grant) -> dict[str, Any]:
        token = secrets.token_urlsafe(32)
        self._access[token] = AccessToken(grant, self.clock.timestamp() + ACCESS_TOKEN_SECONDS)
        return {"access_token": token, "token_type": "bearer",
                "expires_in": ACCESS_TOKEN_SECONDS}

    # -- dispatch

    def _handle(self, request: Request) -> Response:
        with self._ledger.lock:
            if request.path.startswith(API_PREFIX + "/"):
                return self._api(request)
            try:
                endpoint, _ = URL_MAP.bind_to_environ(request.environ).match()
            except (NotFound, MethodNotAllowed) as error:
                return oauth_error(error.code or 404, "not_found")
            return getattr(self, f"_oauth_{endpoint}")(request)

    def _api(self, request: Request) -> Response:
        try:
            self._check_version(request)
            context = self._authenticate(request)
        except ApiError as error:
            return error.response()
        except _Unauthorized as error:
            return oauth_error(401, "invalid_token", str(error))
        window, allowed = self._spend(context.token)
        if allowed:
            response = self._answer(context)
        else:
            retry = max(1, math.ceil(window.ends_at - self.clock.timestamp()))
            response = ApiError(429, "RateLimited",
                                f"Rate limit exceeded. Retry in {retry} seconds.",
                                {"Retry-After": str(retry)}).response()
        response.headers.update(self._rate_headers(window))
        if response.status_code < 400:
            response.headers["X-API-VERSION"] = request.headers.get("X-API-VERSION", API_VERSION)
        return response

    def _answer(self, context: Context) -> Response:
        request = context.request
        try:
            if request.path.startswith(f"{API_PREFIX}/documents") and \
                    not context.account.documents_allowed:
                raise ApiError(403, "Forbidden", "You do not have permission to access "
                               "Documents")
            context.body = self._read_body(request)
            self._validate(request, context.body)
            endpoint, context.args = URL_MAP.bind_to_environ(request.environ).match()
            handler: Callable[[Context], Response] = getattr(self, f"_{endpoint}")
            return handler(context)
        except ApiError as error:
            return error.response()
        except NotFound:
            return ApiError(404, "NotFound", f"No route matches {request.path}").response()
        except MethodNotAllowed:
            return ApiError(405, "MethodNotAllowed",
                            f"{request.method} is not allowed on {request.path}").response()

    def _check_version(self, request: Request) -> None:
        version = request.headers.get("X-API-VERSION")
        if version is None:
            return
        match = re.fullmatch(r"4\.0\.(\d+)", version.strip())
        if match is None or int(match.group(1)) > int(API_VERSION.rsplit(".", 1)[1]):
            raise ApiError(410, "Gone", f"API version {version} is not supported")

    def _authenticate(self, request: Request) -> Context:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        access = self._access.get(token.strip()) if scheme.lower() == "bearer" else None
        if access is None or access.grant.revoked:
            raise _Unauthorized("The access token is invalid")
        if access.expires_at <= self.clock.timestamp():
            raise _Unauthorized("The access token expired")
        grant = access.grant
        return Context(request, grant.account, grant.user_id, token.strip())

    def _spend(self, token: str) -> tuple[RateWindow, bool]:
        now = self.clock.timestamp()
        window = self._windows.get(token)
        if window is None or now >= window.ends_at:
            window = self._windows[token] = RateWindow(now + self.rate_window_seconds)
        if window.used >= self.rate_limit_per_minute:
            return window, False
        window.used += 1
        return window, True

    def _rate_headers(self, window: RateWindow) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.rate_limit_per_minute),
            "X-RateLimit-Remaining": str(max(0, self.rate_limit_per_minute - window.used)),
            "X-RateLimit-Reset": str(math.ceil(window.ends_at))
            if self.rate_window_seconds == RATE_WINDOW_SECONDS else f"{window.ends_at:.3f}",
        }

    def _read_body(self, request: Request) -> Any:
        raw = request.get_data(cache=True)
        if request.method not in ("POST", "PUT", "PATCH") or not raw.strip():
            return NO_BODY
        try:
            return json.loads(raw, parse_float=Decimal)
        except ValueError as error:
            message = f"The request body is not valid JSON: {error}"
            self.schema_errors.append(message)
            raise ApiError(400, "InvalidRequest", message) from None

    def _validate(self, request: Request, body: Any) -> None:
        if self._spec is None:
            return
        errors = self._spec.validate_request(
            request.method, request.path.removeprefix(API_PREFIX),
            request.args.to_dict(flat=False), body)
        if errors:
            self.schema_errors.extend(errors)
            raise ApiError(400, "InvalidRequest", "; ".join(errors))

    def _check_response(self, request: Request, response: Response) -> None:
        """A 2xx answer (the handler's or an armed fault's) against the document's response
        schema for the operation; what breaks it joins ``schema_errors`` (the client still
        gets the answer: it is the sandbox that is wrong)."""
        if self._spec is None or not request.path.startswith(API_PREFIX + "/") or \
                not 200 <= response.status_code < 300 or response.is_streamed:
            return
        errors = self._spec.validate_response(
            request.method, request.path.removeprefix(API_PREFIX), response.status_code,
            response.get_data(), response.content_type)
        if errors:
            with self._ledger.lock:
                self.schema_errors.extend(errors)

    # -- API endpoints

    def _index(self, context: Context) -> Response:
        request, account = context.request, context.account
        collection = (UTBMS_COLLECTIONS[context.args["utbms"]] if "utbms" in context.args
                      else COLLECTIONS[context.args["collection"]])
        tree = self._fields(request, collection.resource)
        predicates = collection.predicates(request.args, account)
        records = [r for r in account.store(collection.resource).values()
                   if all(check(r) for check in predicates)]
        order = parse_order(request.args.get("order"))
        records = sort_records(records, collection.resource, order, account)
        by_id_cursor = request.args.get("order") == "id(asc)"
        page = paginate(records, request.args, collection.max_limit, by_id_cursor)
        paging = {} if page.next_token is None else {"next": next_url(request, page.next_token)}
        data = [render(collection.resource, r, tree, account) for r in page.records]
        return json_response({"data": data, "meta": {"paging": paging, "records": page.total}})

    def _show(self, context: Context) -> Response:
        collection = COLLECTIONS[context.args["collection"]]
        record = self._find(context, collection, context.args["record_id"])
        return self._record_response(context, collection.resource, record)

    def _who_am_i(self, context: Context) -> Response:
        user = context.account.users[context.user_id]
        return self._record_response(context, "user", user)

    def _create_activity(self, context: Context) -> Response:
        account = context.account
        tree = self._fields(context.request, "activity")
        activity: Record = {
            "type": None, "date": None, "price": None, "quantity": None, "note": None,
            "reference": None, "billed": False, "on_bill": False, "bill": None, "matter": None,
            "user": {"id": context.user_id}, "vendor": None, "expense_category": None,
            "non_billable": False, "no_charge": False, "utbms_expense": None,
            **activity_changes(body_data(context.body)),
        }
        check_activity(account, activity)
        if activity["type"] in ("ExpenseEntry", "SoftCostEntry") and activity["quantity"] is None:
            activity["quantity"] = Decimal(1)
        activity["total"] = activity_total(activity)
        stored = self._ledger.new_record(**activity)
        account.activities[stored["id"]] = stored
        data = render("activity", stored, tree, account)
        return json_response({"data": data}, 201)

    def _update_activity(self, context: Context) -> Response:
        account = context.account
        tree = self._fields(context.request, "activity")
        activity = self._editable_activity(context)
        changes = activity_changes(body_data(context.body))
        check_activity(account, {**activity, **changes})
        activity.update(changes)
        activity["total"] = activity_total(activity)
        self._ledger.touch(activity)
        return json_response({"data": render("activity", activity, tree, account)})

    def _delete_activity(self, context: Context) -> Response:
        activity = self._editable_activity(context)
        del context.account.activities[activity["id"]]
        return Response(status=204)

    def _editable_activity(self, context: Context) -> Record:
        activity = self._find(context, COLLECTIONS["activities"], context.args["record_id"])
        if_match = context.request.headers.get("If-Match")
        if if_match is not None and not same_etag(if_match, activity["etag"]):
            raise ApiError(412, "PreconditionFailed",
                           "The resource has changed since it was read (ETag mismatch)")
        if activity["on_bill"]:
            # Unconfirmed in Clio's docs (its UI freezes billed entries); the sandbox refuses.
            raise unprocessable("Activity is on a bill and can't be changed")
        return activity

    # -- documents

    def _create_document(self, context: Context) -> Response:
        """A new document on a matter (or folder), or with ``parent {type: Document}`` a new
        version of an existing one: its ``latest_document_version`` carries the ``uuid``,
        ``put_url`` and ``put_headers`` of the upload (see ``sandbox.clio_storage``)."""
        account = context.account
        tree = self._fields(context.request, "document")
        data = body_data(context.body)
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            raise unprocessable("Name can't be blank")
        properties = external_properties(data.get("external_properties"))
        parent = data.get("parent")
        if not isinstance(parent, dict):
            raise unprocessable("Parent can't be blank")
        kind, raw_id = parent.get("type"), parent.get("id")
        parent_id = raw_id if isinstance(raw_id, int) else 0
        filename = data.get("filename") or name
        content_type = data.get("content_type") or mimetypes.guess_type(filename)[0] or \
            "application/octet-stream"
        received_at = data.get("received_at")
        if kind == "Document":
            document = account.documents.get(parent_id)
            if document is None:
                raise unprocessable("Parent is invalid")
        else:
            if kind == "Matter" and parent_id in account.matters:
                folder = account.matter_folder(parent_id)
            elif kind == "Folder" and parent_id in account.folders:
                folder = account.folders[parent_id]
            else:
                raise unprocessable("Parent is invalid")
            document = self._ledger.new_record(
                type="Document", name=name, filename=filename, content_type=content_type,
                received_at=received_at, size=None, locked=False, deleted_at=None,
                matter=folder.get("matter"), parent={"id": folder["id"]},
                external_properties=[], versions=[])
            account.documents[document["id"]] = document
        for prop in properties:
            document["external_properties"].append(self._ledger.new_record(**prop))
        if len(document["external_properties"]) > MAX_EXTERNAL_PROPERTIES:
            raise unprocessable("External properties: there is a limit of 5 per document")
        self._new_version(context, document, filename, content_type, received_at)
        return json_response({"data": render("document", document, tree, account)}, 201)

    def _new_version(self, context: Context, document: Record, filename: str,
                     content_type: str, received_at: str | None) -> Record:
        version_uuid = str(uuid.uuid4())
        put_url, put_headers = self._ledger.storage.issue(
            context.request.host_url, version_uuid, filename, content_type)
        version = self._ledger.new_record(
            document_id=document["id"], uuid=version_uuid, filename=filename, size=None,
            version_number=len(document["versions"]) + 1, content_type=content_type,
            received_at=received_at, put_url=put_url, put_headers=put_headers,
            fully_uploaded=False)
        document["versions"].append(version)
        document["latest_document_version"] = version
        self._ledger.touch(document)
        return version

    def _update_document(self, context: Context) -> Response:
        """PATCH: ``uuid`` + ``fully_uploaded: true`` completes an upload (422
        ``UploadNotFoundError`` when no bytes reached the ``put_url``); ``name`` and
        ``received_at`` change."""
        account = context.account
        tree = self._fields(context.request, "document")
        document = self._find(context, COLLECTIONS["documents"], context.args["record_id"])
        if_match = context.request.headers.get("If-Match")
        if if_match is not None and not same_etag(if_match, document["etag"]):
            raise ApiError(412, "PreconditionFailed",
                           "The resource has changed since it was read (ETag mismatch)")
        data = body_data(context.body)
        if data.get("fully_uploaded") is True:
            version = next((v for v in document["versions"] if v["uuid"] == data.get("uuid")),
                           None)
            if version is None:
                raise unprocessable("Uuid is required to mark a document fully uploaded")
            if version["fully_uploaded"]:
                raise unprocessable("Document is already fully uploaded")
            upload = self._ledger.storage.upload(version["uuid"])
            if upload is None or upload.sha256 is None:
                raise ApiError(422, "UploadNotFoundError",
                               "The file was not found in storage; upload it again")
            version.update(fully_uploaded=True, size=upload.size, put_url=None)
            self._ledger.touch(version)
            if document["latest_document_version"] is version:
                document["size"] = upload.size
                document["content_type"] = version["content_type"]
        for key in ("name", "received_at"):
            if isinstance(data.get(key), str) and data[key].strip():
                document[key] = data[key]
        self._ledger.touch(document)
        return json_response({"data": render("document", document, tree, account)})

    def _storage_put(self, request: Request) -> Response:
        """The storage PUT with the sandbox's faults and call log (a refused or faulted body
        is read and dropped first, so the client reads the answer)."""
        fault = self.faults.take(request)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is None or fault.passthrough:
            response = self._ledger.storage.put(request)
        else:
            if fault.after_handler:
                self._ledger.storage.put(request)
            else:
                drain(request)
            response = Response(fault.body, status=fault.status, headers=fault.headers,
                                content_type=fault.content_type)
        if fault is not None and fault.delay_after:
            time.sleep(fault.delay_after)
        self.calls.record(Call(request.method, request.path, request.query_string.decode(),
                               response.status_code, time.time()))
        return response

    def _find(self, context: Context, collection: Collection, record_id: int) -> Record:
        record = context.account.store(collection.resource).get(record_id)
        if record is None:
            raise ApiError(404, "RecordNotFound",
                           f"Couldn't find {collection.model} with 'id'={record_id}")
        return record

    def _record_response(self, context: Context, resource: str, record: Record) -> Response:
        tree = self._fields(context.request, resource)
        return json_response({"data": render(resource, record, tree, context.account)})

    @staticmethod
    def _fields(request: Request, resource: str) -> FieldTree:
        raw = request.args.get("fields")
        tree = parse_fields(raw) if raw else DEFAULT_FIELDS
        check_fields(resource, tree)
        return tree

    # -- OAuth endpoints

    authorize_mode = "approve"
    """The consent screen's answer: approve | decline | wrong_state (a tampered state)."""
    authorize_account: ClioAccount | None = None
    """The account whose user approves (default: the first one)."""

    def _oauth_authorize(self, request: Request) -> Response:
        """Auto-approves for the first account (the demo's "Connect Clio" button)."""
        args = request.args
        if args.get("client_id") != self.client_id:
            return oauth_error(400, "invalid_client")
        redirect_uri = args.get("redirect_uri")
        if not redirect_uri or not self.accounts:
            return oauth_error(400, "invalid_request", "redirect_uri and an account are needed")
        query: dict[str, str] = {}
        state = args.get("state")
        if args.get("response_type") != "code":
            query["error"] = "unsupported_response_type"
        elif self.authorize_mode == "decline":
            query["error"] = "access_denied"
        else:
            account = self.authorize_account or next(iter(self.accounts.values()))
            query["code"] = self.authorization_code(account, redirect_uri)
            if self.authorize_mode == "wrong_state" and state:
                state = state[::-1]
        if state is not None:
            query["state"] = state
        separator = "&" if "?" in redirect_uri else "?"
        return Response(status=302, headers={"Location": redirect_uri + separator +
                                             urlencode(query)})

    def _oauth_token(self, request: Request) -> Response:
        form = request.form
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if request.authorization and request.authorization.type == "basic":
            client_id, secret = request.authorization.username, request.authorization.password
        if (client_id, secret) != (self.client_id, self.client_secret):
            return oauth_error(401, "invalid_client")
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            return self._exchange_code(form.get("code", ""), form.get("redirect_uri"))
        if grant_type == "refresh_token":
            grant = self._refresh.get(form.get("refresh_token", ""))
            if grant is None or grant.revoked:
                return oauth_error(400, "invalid_grant")
            # Clio may answer a refresh without a new refresh token: clients keep the old one.
            return json_response(self._new_access(grant))
        return oauth_error(400, "unsupported_grant_type")

    def _exchange_code(self, code: str, redirect_uri: str | None) -> Response:
        issued = self._codes.get(code)
        if issued is None or not redirect_uri or issued[1] not in (None, redirect_uri):
            return oauth_error(400, "invalid_grant")
        del self._codes[code]
        return json_response(self.issue_tokens(issued[0]))

    def _oauth_deauthorize(self, request: Request) -> Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else request.form.get("token", "")
        access = self._access.get(token)
        if access is None or access.grant.revoked:
            return oauth_error(401, "invalid_token", "The access token is invalid")
        access.grant.revoked = True
        return json_response({})


class _Unauthorized(Exception):
    """No valid access token; answered in the OAuth error shape."""

"""A fake QuickBooks Online (Accounting API v3 + Intuit OAuth 2.0) serving real HTTP.

Tests, the demo and benchmarks seed companies through :class:`QboSandbox`; clients only talk
HTTP to it (``sandbox.server.serve_in_thread(QboSandbox())``). It behaves as described in
Intuit's QuickBooks Online API documentation: query language subset, CDC with its 30-day /
1000-object limits, lower-case 401 faults, rotating refresh tokens, an ``intuit_tid`` header on
every response. Throttling and outages only happen when a test arms a fault (see the ``*_fault*``
helpers).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import itertools
import secrets
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import simplejson
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from hardcost.sandbox.clock import SandboxClock
from hardcost.sandbox.faults import CallLog, Fault, FaultPlan, with_faults
from hardcost.sandbox.qbo_company import (
    ATTACHABLE,
    ENTITIES,
    NAME_LISTS,
    QboCompany,
    Record,
    account_line,
    item_line,
    last_updated,
)
from hardcost.sandbox.qbo_files import DOWNLOAD_SECONDS, download_signature
from hardcost.sandbox.qbo_oauth import TokenBook
from hardcost.sandbox.qbo_query import (
    COMPANY_TZ,
    Condition,
    QuerySyntaxError,
    QueryValidationError,
    page,
    parse_instant,
    parse_query,
    run_query,
)

__all__ = [
    "QboCompany",
    "QboSandbox",
    "account_line",
    "fault_json",
    "item_line",
    "server_error_fault",
    "throttle_fault_json",
    "throttle_fault_xml",
    "timeout_fault",
]

API_PATH = r"/v3/company/"
CDC_WINDOW = timedelta(days=30)
CDC_MAX_OBJECTS = 1000
_ENTITY_BY_LOWER = {entity.lower(): entity for entity in ENTITIES}

_URLS = Map([
    Rule("/v3/company/<realm>/query", endpoint="query", methods=["GET", "POST"]),
    Rule("/v3/company/<realm>/cdc", endpoint="cdc", methods=["GET"]),
    Rule("/v3/company/<realm>/preferences", endpoint="preferences", methods=["GET"]),
    Rule("/v3/company/<realm>/companyinfo/<company_id>", endpoint="company_info",
         methods=["GET"]),
    Rule("/v3/company/<realm>/<any(purchase, bill, billpayment, customer, vendor, employee, "
         "account, item, attachable):entity>"
         "/<record_id>", endpoint="read", methods=["GET"]),
    Rule("/v3/company/<realm>/download/<attachable_id>", endpoint="download_uri",
         methods=["GET"]),
    # The pre-signed download links (TempDownloadUri): no Authorization, a signature instead.
    Rule("/attachments/<file_realm>/<attachable_id>/<path:file_name>", endpoint="download_file",
         methods=["GET"]),
    Rule("/oauth2/v1/tokens/bearer", endpoint="token", methods=["POST"]),
    Rule("/v2/oauth2/tokens/revoke", endpoint="revoke", methods=["POST"]),
    Rule("/connect/oauth2", endpoint="authorize", methods=["GET"]),
])


# --- response bodies --------------------------------------------------------------------------


def qbo_time(now: datetime) -> str:
    """The ``time`` member of every QBO response: Pacific, milliseconds, with offset."""
    return now.astimezone(COMPANY_TZ).isoformat(timespec="milliseconds")


def fault_json(message: str, detail: str, code: str, fault_type: str = "ValidationFault",
               *, now: datetime | None = None) -> str:
    """A QBO ``{"Fault": ...}`` body (the shape of every error but 401)."""
    body = {"Fault": {"Error": [{"Message": message, "Detail": detail, "code": code}],
                      "type": fault_type},
            "time": qbo_time(now or datetime.now(COMPANY_TZ))}
    return simplejson.dumps(body)


def _json(body: Any, status: int = 200) -> Response:
    return Response(simplejson.dumps(body, use_decimal=True), status=status,
                    content_type="application/json")


def _oauth_error(error: str, status: int = 400) -> Response:
    return _json({"error": error}, status)


# --- faults tests arm ---------------------------------------------------------------------------


def throttle_fault_xml(times: int = 1, *, path: str = API_PATH) -> Fault:
    """429 ThrottleExceeded with the XML body Intuit sends even to JSON clients."""
    body = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<IntuitResponse xmlns="http://schema.intuit.com/finance/v3" '
        f'time="{qbo_time(datetime.now(COMPANY_TZ))}">'
        '<Fault type="ValidationFault"><Error code="3001">'
        "<Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message>"
        "<Detail>The request limit was reached.</Detail>"
        "</Error></Fault></IntuitResponse>"
    )
    return Fault(path=path, status=429, body=body, content_type="application/xml", times=times)


def throttle_fault_json(times: int = 1, *, path: str = API_PATH) -> Fault:
    body = fault_json("message=ThrottleExceeded; errorCode=003001; statusCode=429",
                      "The request limit was reached.", "3001")
    return Fault(path=path, status=429, body=body, times=times)


def server_error_fault(status: int = 500, times: int = 1, *, path: str = API_PATH) -> Fault:
    body = fault_json("An application error has occurred while processing your request",
                      "System Failure Error: An unexpected error occurred", "10000",
                      "SystemFault")
    return Fault(path=path, status=status, body=body, times=times)


def timeout_fault(delay: float, times: int = 1, *, path: str = API_PATH) -> Fault:
    """Answer 504 after ``delay`` seconds: longer than the client's timeout = a timeout."""
    return Fault(path=path, status=504, body="Gateway Timeout", content_type="text/plain",
                 delay=delay, passthrough=False, times=times)


# --- the service --------------------------------------------------------------------------------


class QboSandbox:
    """A WSGI app faking QuickBooks Online for any number of companies."""

    def __init__(self, *, client_id: str = "sandbox-qbo-client",
                 client_secret: str = "sandbox-qbo-secret",
                 webhook_verifier: str = "sandbox-qbo-verifier",
                 clock: SandboxClock | None = None, refresh_grace_seconds: float = 86400.0,
                 access_token_seconds: int = 3600) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.webhook_verifier = webhook_verifier
        self.clock = clock or SandboxClock()
        self.refresh_grace_seconds = refresh_grace_seconds
        self.faults = FaultPlan()
        self.calls = CallLog()
        self._lock = threading.RLock()
        self._companies: dict[str, QboCompany] = {}
        self._tokens = TokenBook(access_token_seconds)
        self._realm_numbers = itertools.count(9341453000000001)
        self._dispatch = with_faults(self.faults, self.calls, self._handle)
        self._endpoints: dict[str, Callable[..., Response]] = {
            "query": self._query, "cdc": self._cdc, "preferences": self._preferences,
            "company_info": self._company_info, "read": self._read, "token": self._token,
            "revoke": self._revoke, "authorize": self._authorize,
            "download_uri": self._download_uri, "download_file": self._download_file,
        }
        self._download_key = secrets.token_bytes(32)
        self._download_generation = 0
        self.download_seconds = DOWNLOAD_SECONDS
        """How long a ``TempDownloadUri`` works on the sandbox clock (15 minutes)."""

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        response = self._dispatch(Request(environ))
        response.headers["intuit_tid"] = secrets.token_hex(16)
        return response(environ, start_response)

    # --- seeding and test controls ------------------------------------------------------------

    def add_company(self, realm_id: str | None = None, *, tracking_by_customer: bool = True,
                    home_currency: str = "USD", name: str = "Sandbox Company") -> QboCompany:
        with self._lock:
            realm_id = realm_id or str(next(self._realm_numbers))
            if realm_id in self._companies:
                raise ValueError(f"realm {realm_id} already exists")
            company = QboCompany(realm_id, clock=self.clock, lock=self._lock,
                                 tracking_by_customer=tracking_by_customer,
                                 home_currency=home_currency, name=name)
            self._companies[realm_id] = company
            return company

    def company(self, realm_id: str) -> QboCompany:
        return self._companies[realm_id]

    def issue_tokens(self, realm_id: str) -> dict[str, Any]:
        """Tokens as if the OAuth code exchange for ``realm_id`` just happened."""
        with self._lock:
            self.company(realm_id)
            return self._tokens.issue(realm_id, self.clock.timestamp()).body()

    def authorization_code(self, realm_id: str, redirect_uri: str | None = None) -> str:
        """A one-use code for ``grant_type=authorization_code`` (any redirect_uri if None)."""
        with self._lock:
            self.company(realm_id)
            return self._tokens.new_code(realm_id, redirect_uri, self.clock.timestamp())

    def expire_access_tokens(self) -> None:
        with self._lock:
            self._tokens.expire_access_tokens()

    @property
    def access_token_seconds(self) -> int:
        return self._tokens.access_token_seconds

    @access_token_seconds.setter
    def access_token_seconds(self, seconds: int) -> None:
        self._tokens.access_token_seconds = seconds

    def sign_webhook(self, body: bytes) -> str:
        """The ``intuit-signature`` header Intuit would send with ``body``."""
        digest = hmac.new(self.webhook_verifier.encode(), body, hashlib.sha256).digest()
        return base64.b64encode(digest).decode()

    def expire_downloads(self) -> None:
        """Every ``TempDownloadUri`` handed out so far answers 403 from now on (as if its 15
        minutes had passed); links handed out afterwards work."""
        with self._lock:
            self._download_generation += 1

    def webhook_notification(self, realm_id: str, changes: list[tuple[str, str, str]]
                             ) -> tuple[bytes, dict[str, str]]:
        """A signed webhook delivery in Intuit's ``eventNotifications`` format naming
        ``changes`` ((entity, id, operation): ``("Attachable", "1000…", "Create")``):
        (the body, the headers to POST it with)."""
        stamp = self.clock.now().isoformat(timespec="milliseconds").replace("+00:00", "Z")
        body = simplejson.dumps({"eventNotifications": [{
            "realmId": realm_id,
            "dataChangeEvent": {"entities": [
                {"name": entity, "id": entity_id, "operation": operation,
                 "lastUpdated": stamp}
                for entity, entity_id, operation in changes]},
        }]}).encode()
        return body, {"Content-Type": "application/json",
                      "intuit-signature": self.sign_webhook(body)}

    # --- dispatch -----------------------------------------------------------------------------

    def _handle(self, request: Request) -> Response:
        with self._lock:
            try:
                endpoint, matched = _URLS.bind_to_environ(request.environ).match()
                args = dict(matched)
                if "realm" in args:
                    denied = self._authenticate(request, args["realm"])
                    if denied is not None:
                        return denied
                    args["company"] = self._companies[args.pop("realm")]
                return self._endpoints[str(endpoint)](request, **args)
            except HTTPException as error:
                return error.get_response(request.environ)

    def _authenticate(self, request: Request, realm_id: str) -> Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and realm_id in self._companies and \
                self._tokens.authenticate(token.strip(), realm_id, self.clock.timestamp()):
            return None
        return _json({
            "fault": {"error": [{
                "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                "detail": "Token expired", "code": "3200"}],
                "type": "AUTHENTICATION"},
            "time": self._time(),
        }, 401)

    def _time(self) -> str:
        return qbo_time(self.clock.now())

    def _fault(self, message: str, detail: str, code: str, status: int = 400) -> Response:
        body = fault_json(message, detail, code, now=self.clock.now())
        return Response(body, status=status, content_type="application/json")

    def _ok(self, body: dict[str, Any]) -> Response:
        return _json({**body, "time": self._time()})

    # --- accounting endpoints -----------------------------------------------------------------

    def _query(self, request: Request, company: QboCompany) -> Response:
        text = request.args.get("query") if request.method == "GET" else \
            request.get_data(as_text=True)
        try:
            query = parse_query(text or "")
        except QuerySyntaxError as error:
            return self._fault("Error parsing query", str(error), "4000")
        except QueryValidationError as error:
            return self._fault("QueryValidationError", str(error), "4001")
        entity = _ENTITY_BY_LOWER.get(query.entity.lower())
        if entity is None:
            return self._fault("Error parsing query",
                               f"QueryParserError: Invalid entity name: {query.entity}", "4000")
        if entity in NAME_LISTS and not query.mentions("Active"):
            query = dataclasses.replace(
                query, conditions=(*query.conditions, Condition("Active", "=", True)))
        rows = run_query(query, company.records(entity))
        if query.count:
            return self._ok({"QueryResponse": {"totalCount": len(rows)}})
        found = self._present(request, company, entity, page(rows, query))
        if not found:
            return self._ok({"QueryResponse": {}})
        return self._ok({"QueryResponse": {entity: found, "startPosition": query.start_position,
                                           "maxResults": len(found)}})

    def _read(self, request: Request, company: QboCompany, entity: str,
              record_id: str) -> Response:
        name = _ENTITY_BY_LOWER[entity]
        record = company.record(name, record_id)
        if record is None:
            return self._fault(
                "Object Not Found",
                f"Object Not Found : Something you're trying to use has been made inactive. "
                f"Check the fields with accounts, customers, items, vendors or employees. "
                f"({name} {record_id})",
                "610")
        return self._ok({name: self._present(request, company, name, [record])[0]})

    def _cdc(self, request: Request, company: QboCompany) -> Response:
        names = [n.strip() for n in request.args.get("entities", "").split(",") if n.strip()]
        entities = [_ENTITY_BY_LOWER.get(n.lower()) for n in names]
        since = parse_instant(request.args.get("changedSince", ""))
        if not entities or None in entities or since is None:
            return self._fault("Request has invalid or unsupported property",
                               "cdc needs entities=<Purchase,...> and changedSince=<ISO-8601>",
                               "2010")
        if since < self.clock.now() - CDC_WINDOW:
            return self._fault("Request has invalid or unsupported property",
                               f"changedSince {since.isoformat()} must be within 30 days",
                               "2010")
        changes = _oldest_changes(company, list(dict.fromkeys(e for e in entities if e)), since)
        return self._ok({"CDCResponse": [{"QueryResponse": [
            {entity: self._present(request, company, entity, rows), "startPosition": 1,
             "maxResults": len(rows)}
            for entity, rows in changes.items()
        ]}]})

    # --- attachments --------------------------------------------------------------------------

    def _present(self, request: Request, company: QboCompany, entity: str,
                 rows: list[Record]) -> list[Record]:
        """Rows as QuickBooks sends them: an Attachable with a file gets a fresh
        ``TempDownloadUri`` on every read (query, read, CDC)."""
        if entity != ATTACHABLE:
            return rows
        return [{**row, "TempDownloadUri": self._download_url(request, company, str(row["Id"]))}
                if company.attachment(str(row.get("Id"))) is not None and
                row.get("status") != "Deleted" else row for row in rows]

    def _download_url(self, request: Request, company: QboCompany, attachable_id: str) -> str:
        expires = int(self.clock.timestamp()) + self.download_seconds
        generation = self._download_generation
        signature = download_signature(self._download_key, company.realm_id, attachable_id,
                                       expires, generation)
        record = company.record(ATTACHABLE, attachable_id) or {}
        name = quote(str(record.get("FileName") or "file"), safe="")
        query = urlencode({"Expires": expires, "Generation": generation,
                           "Signature": signature})
        return (f"{request.host_url}attachments/{quote(company.realm_id, safe='')}/"
                f"{quote(attachable_id, safe='')}/{name}?{query}")

    def _download_uri(self, request: Request, company: QboCompany,
                      attachable_id: str) -> Response:
        """``GET /download/<id>``: the plain-text temporary URL Intuit documents."""
        if company.attachment(attachable_id) is None or \
                company.record(ATTACHABLE, attachable_id) is None:
            return self._fault("Object Not Found",
                               f"Object Not Found : Attachable {attachable_id}", "610")
        return Response(self._download_url(request, company, attachable_id), status=200,
                        content_type="text/plain")

    def _download_file(self, request: Request, file_realm: str, attachable_id: str,
                       file_name: str) -> Response:
        """The pre-signed link: 403 once expired (sandbox clock) or tampered with, like S3."""
        company = self._companies.get(file_realm)
        args = request.args
        if "Authorization" in request.headers:
            return _s3_error(400, "InvalidArgument", "Only one auth mechanism allowed; only "
                             "the X-Amz-Algorithm query parameter, Signature query string "
                             "parameter or the Authorization header should be specified")
        try:
            expires, generation = int(args.get("Expires", "")), int(args.get("Generation", ""))
        except ValueError:
            return _s3_error(403, "AccessDenied", "Query-string authentication requires the "
                             "Signature, Expires and AWSAccessKeyId parameters")
        wanted = download_signature(self._download_key, file_realm, attachable_id, expires,
                                    generation)
        if company is None or not hmac.compare_digest(wanted, args.get("Signature", "")):
            return _s3_error(403, "SignatureDoesNotMatch", "The request signature we "
                             "calculated does not match the signature you provided.")
        if expires <= self.clock.timestamp() or generation != self._download_generation:
            return _s3_error(403, "AccessDenied", "Request has expired")
        body = company.attachment(attachable_id)
        record = company.record(ATTACHABLE, attachable_id)
        if body is None or record is None:
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
        response = Response(body.chunks(), status=200, direct_passthrough=True,
                            content_type=str(record.get("ContentType") or
                                             "application/octet-stream"))
        response.headers["Content-Length"] = str(body.size)
        return response

    def _preferences(self, request: Request, company: QboCompany) -> Response:
        return self._ok({"Preferences": company.preferences_body()})

    def _company_info(self, request: Request, company: QboCompany,
                      company_id: str) -> Response:
        return self._ok({"CompanyInfo": {"CompanyName": company.name, "Id": company.realm_id,
                                         "Country": "US", "domain": "QBO", "sparse": False}})

    # --- OAuth endpoints ----------------------------------------------------------------------

    def _client_authenticated(self, request: Request) -> bool:
        auth = request.authorization
        return (auth is not None and auth.type == "basic"
                and hmac.compare_digest(str(auth.username), self.client_id)
                and hmac.compare_digest(str(auth.password), self.client_secret))

    def _token(self, request: Request) -> Response:
        if not self._client_authenticated(request):
            return _oauth_error("invalid_client", 401)
        now = self.clock.timestamp()
        grant_type = request.form.get("grant_type")
        if grant_type == "authorization_code":
            realm_id = self._tokens.redeem_code(request.form.get("code", ""),
                                                request.form.get("redirect_uri"), now)
            tokens = None if realm_id is None else self._tokens.issue(realm_id, now)
        elif grant_type == "refresh_token":
            tokens = self._tokens.refresh(request.form.get("refresh_token", ""), now,
                                          self.refresh_grace_seconds)
        else:
            return _oauth_error("unsupported_grant_type")
        if tokens is None:
            return _oauth_error("invalid_grant")
        hard = request.headers.get("x-include-refresh-token-hard-expires-in", "").lower()
        return _json(tokens.body(include_hard_expiry=hard == "true"))

    def _revoke(self, request: Request) -> Response:
        if not self._client_authenticated(request):
            return _oauth_error("invalid_client", 401)
        body = request.get_json(silent=True)
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str):
            return _oauth_error("invalid_request")
        self._tokens.revoke(token)
        return Response("", status=200)

    authorize_mode = "approve"
    """The consent screen's answer: approve | decline | wrong_state (a tampered state)."""
    authorize_realm: str | None = None
    """The company the person picks on the consent screen (default: the first one)."""

    def _authorize(self, request: Request) -> Response:
        """The consent screen, auto-approved: redirect back with ``code``, ``state``, ``realmId``.

        Sandbox extra: ``realm_id`` picks the company (default: the first one added).
        """
        redirect_uri = request.args.get("redirect_uri")
        if request.args.get("client_id") != self.client_id or not redirect_uri:
            return Response("invalid client_id or redirect_uri", status=400)
        realm_id = request.args.get("realm_id") or self.authorize_realm or \
            next(iter(self._companies), None)
        if realm_id not in self._companies:
            return Response("no such company", status=400)
        state = request.args.get("state", "")
        if self.authorize_mode == "decline":
            params = {"error": "access_denied", "state": state}
        else:
            code = self._tokens.new_code(realm_id, redirect_uri, self.clock.timestamp())
            if self.authorize_mode == "wrong_state":
                state = state[::-1] or "tampered"
            params = {"code": code, "state": state, "realmId": realm_id}
        separator = "&" if "?" in redirect_uri else "?"
        return Response(status=302, headers={"Location": redirect_uri + separator +
                                             urlencode(params)})


def _s3_error(status: int, code: str, message: str) -> Response:
    body = ('<?xml version="1.0" encoding="UTF-8"?>'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<RequestId>{secrets.token_hex(8).upper()}</RequestId></Error>")
    return Response(body, status=status, content_type="application/xml")


def _oldest_changes(company: QboCompany, entities: list[str],
                    since: datetime) -> dict[str, list[Record]]:
    """The changes per entity, keeping only the CDC_MAX_OBJECTS oldest overall."""
    tagged = [(entity, record) for entity in entities
              for record in company.changes_since(entity, since)]
    tagged.sort(key=lambda pair: (last_updated(pair[1]), _numeric_id(pair[1])))
    changes: dict[str, list[Record]] = {entity: [] for entity in entities}
    for entity, record in tagged[:CDC_MAX_OBJECTS]:
        changes[entity].append(record)
    return changes


def _numeric_id(record: Record) -> int:
    record_id = str(record.get("Id", ""))
    return int(record_id) if record_id.isdigit() else 0

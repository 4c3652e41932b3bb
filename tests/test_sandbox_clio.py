"""The sandbox Clio behaves like Clio Manage API v4 (as Clio documents it), over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from hardcost.sandbox.clio import (
    BAD_GATEWAY,
    CLIO_SCHEMA,
    FAULT_KINDS,
    FIELDS,
    LATE_REPLY,
    LOST_REPLY,
    RATE_LIMITED,
    SERVER_ERROR,
    SLOW_WRITE,
    TIMEOUT,
    ClioAccount,
    ClioSandbox,
    random_faults,
    rate_limit_fault,
)
from hardcost.sandbox.faults import Fault
from hardcost.sandbox.openapi import OpenApiDocument, load_openapi
from hardcost.sandbox.server import serve_in_thread

ACTIVITY_FIELDS = ("id,etag,type,date,price,total,note,reference,billed,on_bill,"
                   "matter{id,display_number},bill{id,state}")


@dataclass
class Clio:
    """A running sandbox, one firm in it and an HTTP session holding that firm's token."""

    sandbox: ClioSandbox
    account: ClioAccount
    url: str
    http: requests.Session

    def get(self, path: str, **params: Any) -> requests.Response:
        return self.http.get(f"{self.url}/api/v4/{path}", params=params, timeout=5)

    def post(self, path: str, data: dict[str, Any], **params: Any) -> requests.Response:
        return self.http.post(f"{self.url}/api/v4/{path}", json={"data": data}, params=params,
                              timeout=5)

    def patch(self, path: str, data: dict[str, Any], etag: str | None = None,
              **params: Any) -> requests.Response:
        headers = {"If-Match": etag} if etag else {}
        return self.http.patch(f"{self.url}/api/v4/{path}", json={"data": data},
                               params=params, headers=headers, timeout=5)

    def delete(self, path: str) -> requests.Response:
        return self.http.delete(f"{self.url}/api/v4/{path}", timeout=5)


def body(response: requests.Response) -> Any:
    return response.json(parse_float=Decimal)


def session(access_token: str) -> requests.Session:
    http = requests.Session()
    http.headers.update({"Authorization": f"Bearer {access_token}",
                         "X-API-VERSION": "4.0.13"})
    return http


@pytest.fixture(scope="module")
def openapi() -> OpenApiDocument:
    """What the sandbox checks against: the committed extract of Clio's OpenAPI document."""
    return load_openapi(CLIO_SCHEMA)


@pytest.fixture
def clio() -> Iterator[Clio]:
    sandbox = ClioSandbox()
    account = sandbox.add_account(name="Smith & Jones LLP")
    with serve_in_thread(sandbox) as server:
        yield Clio(sandbox, account, server.url,
                   session(sandbox.issue_tokens(account)["access_token"]))


@pytest.fixture
def matter(clio: Clio) -> dict[str, Any]:
    client = clio.account.add_contact("Jane Smith", email="jane@example.com")
    return clio.account.add_matter(client["id"], description="Smith v. Jones")


def hard_cost(matter: dict[str, Any], /, **overrides: Any) -> dict[str, Any]:
    return {"type": "HardCostEntry", "date": "2024-03-05", "price": Decimal("12.34"),
            "matter": {"id": matter["id"]}, "note": "Filing fee [qbo 123/45/6]",
            "reference": "1001", **overrides}


# -- fields ------------------------------------------------------------------------------------

def test_without_fields_only_id_and_etag_are_returned(clio: Clio, matter: dict[str, Any]) -> None:
    response = clio.get(f"matters/{matter['id']}.json")

    assert response.status_code == 200
    assert body(response)["data"] == {"id": matter["id"], "etag": matter["etag"]}


def test_nested_fields_render_the_associated_records(clio: Clio, matter: dict[str, Any]) -> None:
    response = clio.get("matters.json", fields="id,display_number,client{id,name},status")

    assert body(response)["data"] == [{
        "id": matter["id"], "display_number": "00001",
        "client": {"id": matter["client"]["id"], "name": "Jane Smith"}, "status": "Open",
    }]


def test_an_unknown_field_is_a_400(clio: Clio) -> None:
    response = clio.get("activities.json", fields="id,foo")

    assert response.status_code == 400
    assert body(response) == {"error": {"type": "ArgumentError", "message": "Invalid field: foo"}}


def test_an_unknown_nested_field_is_a_400(clio: Clio) -> None:
    response = clio.get("activities.json", fields="id,matter{id,bogus}")

    assert response.status_code == 400
    assert body(response)["error"]["message"] == "Invalid field: bogus"


# -- paging ------------------------------------------------------------------------------------

def test_cursor_paging_follows_full_next_urls(clio: Clio) -> None:
    for number in range(450):
        clio.account.add_contact(f"Contact {number:03d}")

    url: str | None = f"{clio.url}/api/v4/contacts.json?order=id(asc)&fields=id,name&limit=200"
    seen: list[int] = []
    pages = 0
    while url:
        page = body(clio.http.get(url, timeout=5))
        pages += 1
        assert page["meta"]["records"] == 450
        seen += [contact["id"] for contact in page["data"]]
        assert all(set(contact) == {"id", "name"} for contact in page["data"])
        url = page["meta"]["paging"].get("next")
        if url:
            assert url.startswith(f"{clio.url}/api/v4/contacts.json?")
            query = parse_qs(urlsplit(url).query)
            assert query["fields"] == ["id,name"] and query["order"] == ["id(asc)"]

    assert pages == 3
    assert seen == sorted(seen) and len(set(seen)) == 450


def test_next_is_absent_on_the_last_page(clio: Clio, matter: dict[str, Any]) -> None:
    page = body(clio.get("matters.json", limit=5))

    assert page["meta"] == {"paging": {}, "records": 1}


def test_a_limit_over_200_is_a_400(clio: Clio) -> None:
    assert clio.get("contacts.json", limit=201).status_code == 400
    assert clio.get("users.json", limit=2000).status_code == 200
    assert clio.get("users.json", limit=2001).status_code == 400


def test_a_page_token_from_other_filters_is_refused(clio: Clio) -> None:
    for number in range(3):
        clio.account.add_contact(f"Contact {number}")
    first = body(clio.get("contacts.json", limit=1, order="id(asc)"))
    token = parse_qs(urlsplit(first["meta"]["paging"]["next"]).query)["page_token"][0]

    response = clio.get("contacts.json", limit=1, order="id(asc)", type="Company",
                        page_token=token)

    assert response.status_code == 400


# -- index filters -----------------------------------------------------------------------------

def test_matters_filter_by_client_and_open_or_pending_status(clio: Clio) -> None:
    smith = clio.account.add_contact("Jane Smith")
    jones = clio.account.add_contact("Bob Jones")
    open_matter = clio.account.add_matter(smith["id"], description="Estate")
    pending = clio.account.add_matter(smith["id"], description="Lease", status="Pending")
    clio.account.add_matter(smith["id"], description="Old", status="Closed")
    clio.account.add_matter(jones["id"], description="Other client")

    response = clio.get("matters.json", client_id=smith["id"], status="open,pending",
                        fields="id,status,description")

    assert body(response)["data"] == [
        {"id": open_matter["id"], "status": "Open", "description": "Estate"},
        {"id": pending["id"], "status": "Pending", "description": "Lease"},
    ]


def test_contacts_query_searches_name_and_email(clio: Clio) -> None:
    clio.account.add_contact("Acme Corp", type="Company", email="billing@acme.test")
    clio.account.add_contact("Jane Smith", email="jane@smith.test")

    by_name = body(clio.get("contacts.json", query="acme", fields="name,type"))["data"]
    by_email = body(clio.get("contacts.json", query="SMITH.TEST", fields="name"))["data"]

    assert by_name == [{"name": "Acme Corp", "type": "Company"}]
    assert by_email == [{"name": "Jane Smith"}]


def test_expense_categories_filter_by_entry_type(clio: Clio) -> None:
    hard = clio.account.add_expense_category("Filing fees", rate="0")
    clio.account.add_expense_category("Copies", entry_type="soft_cost")

    response = clio.get("expense_categories.json", entry_type="hard_cost",
                        fields="id,name,rate,entry_type")

    assert body(response)["data"] == [
        {"id": hard["id"], "name": "Filing fees", "rate": 0, "entry_type": "hard_cost"}]


def test_who_am_i_is_the_account_owner(clio: Clio) -> None:
    owner = clio.account.add_user("Pat Owner", email="pat@firm.test", account_owner=True)
    clio.account.add_user("Sam Staff")

    me = body(clio.get("users/who_am_i.json", fields="id,name,account_owner"))["data"]
    users = body(clio.get("users.json", fields="name,account_owner,enabled"))["data"]

    assert me == {"id": owner["id"], "name": "Pat Owner", "account_owner": True}
    assert users == [{"name": "Pat Owner", "account_owner": True, "enabled": True},
                     {"name": "Sam Staff", "account_owner": False, "enabled": True}]


def test_tokens_only_see_their_own_account(clio: Clio) -> None:
    other = clio.sandbox.add_account(name="Other Firm")
    client = other.add_contact("Someone Else")
    foreign = other.add_matter(client["id"], description="Not yours")

    assert clio.get(f"matters/{foreign['id']}.json").status_code == 404
    assert body(clio.get("matters.json"))["data"] == []


# -- activities --------------------------------------------------------------------------------

def test_an_activity_is_created_read_patched_and_deleted(
        clio: Clio, matter: dict[str, Any]) -> None:
    created = clio.post("activities.json", hard_cost(matter), fields=ACTIVITY_FIELDS)
    assert created.status_code == 201
    activity = body(created)["data"]
    assert activity | {"id": 0, "etag": ""} == {
        "id": 0, "etag": "", "type": "HardCostEntry", "date": "2024-03-05",
        "price": Decimal("12.34"), "total": Decimal("12.34"),
        "note": "Filing fee [qbo 123/45/6]", "reference": "1001", "billed": False,
        "on_bill": False, "matter": {"id": matter["id"], "display_number": "00001"},
        "bill": None,
    }
    path = f"activities/{activity['id']}.json"
    assert body(clio.get(path, fields=ACTIVITY_FIELDS))["data"] == activity
    assert clio.account.activities[activity["id"]]["user"] == {"id": clio.account.owner_id}

    stale = clio.patch(path, {"price": Decimal("20.00")}, etag='"stale"')
    assert stale.status_code == 412
    assert body(stale)["error"]["type"] == "PreconditionFailed"

    patched = clio.patch(path, {"price": Decimal("20.00")}, etag=activity["etag"],
                         fields="id,etag,price,total")
    assert patched.status_code == 200
    assert body(patched)["data"]["total"] == Decimal("20.00")
    assert body(patched)["data"]["etag"] != activity["etag"]

    assert clio.delete(path).status_code == 204
    missing = clio.get(path)
    assert missing.status_code == 404
    assert body(missing)["error"]["type"] == "RecordNotFound"


def test_query_finds_the_marker_in_a_note(clio: Clio, matter: dict[str, Any]) -> None:
    clio.post("activities.json", hard_cost(matter, note="Courier [qbo 123/45/7]"))
    wanted = body(clio.post("activities.json", hard_cost(matter)))["data"]

    found = body(clio.get("activities.json", query="[QBO 123/45/6]", fields="id,note"))

    assert found["data"] == [{"id": wanted["id"], "note": "Filing fee [qbo 123/45/6]"}]


def test_an_unknown_matter_is_a_422(clio: Clio, matter: dict[str, Any]) -> None:
    response = clio.post("activities.json", hard_cost(matter, matter={"id": 999_999}))

    assert response.status_code == 422
    assert body(response) == {"error": {"type": "UnprocessableEntity",
                                        "message": "Matter can't be blank"}}


def test_hard_costs_need_the_firm_setting(clio: Clio, matter: dict[str, Any]) -> None:
    clio.account.hard_costs_enabled = False

    refused = clio.post("activities.json", hard_cost(matter))
    expense = clio.post("activities.json", hard_cost(matter, type="ExpenseEntry"))

    assert refused.status_code == 422
    assert body(refused)["error"]["message"] == "Hard costs are not enabled for this account"
    assert expense.status_code == 201


def test_a_hard_cost_with_a_quantity_is_a_422(clio: Clio, matter: dict[str, Any]) -> None:
    response = clio.post("activities.json", hard_cost(matter, quantity=2))

    assert response.status_code == 422


def test_billed_entries_show_their_bill_and_refuse_changes(
        clio: Clio, matter: dict[str, Any]) -> None:
    billed = body(clio.post("activities.json", hard_cost(matter)))["data"]
    drafted = body(clio.post("activities.json", hard_cost(matter, note="draft")))["data"]
    clio.account.mark_billed(billed["id"])
    clio.account.mark_billed(drafted["id"], state="draft")

    shown = body(clio.get("activities.json", fields="id,billed,on_bill,bill{state}"))["data"]
    only_billed = body(clio.get("activities.json", status="billed"))["data"]

    assert shown == [
        {"id": billed["id"], "billed": True, "on_bill": True,
         "bill": {"state": "awaiting_payment"}},
        {"id": drafted["id"], "billed": False, "on_bill": True, "bill": {"state": "draft"}},
    ]
    assert [a["id"] for a in only_billed] == [billed["id"]]
    assert clio.patch(f"activities/{billed['id']}.json", {"note": "x"}).status_code == 422


# -- versions, auth, rate limits ---------------------------------------------------------------

def test_an_unsupported_api_version_is_410(clio: Clio) -> None:
    response = clio.http.get(f"{clio.url}/api/v4/users.json",
                             headers={"X-API-VERSION": "4.0.99"}, timeout=5)

    assert response.status_code == 410
    assert body(response)["error"]["type"] == "Gone"


def test_an_unknown_or_expired_token_is_401_in_oauth_shape(clio: Clio) -> None:
    unknown = session("nope").get(f"{clio.url}/api/v4/users.json", timeout=5)
    clio.sandbox.expire_access_tokens()
    expired = clio.get("users.json")

    assert unknown.status_code == 401 and body(unknown)["error"] == "invalid_token"
    assert body(expired) == {"error": "invalid_token",
                             "error_description": "The access token expired"}


def test_rate_limit_headers_and_a_real_429(clio: Clio) -> None:
    clio.sandbox.rate_limit_per_minute = 5
    remaining = []
    for _ in range(5):
        response = clio.get("users.json")
        assert response.status_code == 200
        assert response.headers["X-RateLimit-Limit"] == "5"
        assert int(response.headers["X-RateLimit-Reset"]) > clio.sandbox.clock.timestamp()
        remaining.append(int(response.headers["X-RateLimit-Remaining"]))

    limited = clio.get("users.json")

    assert remaining == [4, 3, 2, 1, 0]
    assert limited.status_code == 429
    assert body(limited)["error"]["type"] == "RateLimited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    clio.sandbox.clock.advance(61)
    assert clio.get("users.json").status_code == 200


def test_an_armed_rate_limit_fault_answers_429(clio: Clio) -> None:
    clio.sandbox.faults.add(rate_limit_fault(retry_after=3))

    first, second = clio.get("users.json"), clio.get("users.json")

    assert (first.status_code, first.headers["Retry-After"]) == (429, "3")
    assert second.status_code == 200


def test_random_faults_fail_a_seeded_share_of_calls_the_same_way_every_time(
        clio: Clio) -> None:
    clio.sandbox.rate_limit_per_minute = 1_000_000

    def statuses(seed: int) -> tuple[list[int], Any]:
        faults = random_faults(0.3, seed=seed, hang=0.01)
        clio.sandbox.faults.random = faults
        return [clio.get("users.json").status_code for _ in range(60)], faults

    first, faults = statuses(5)
    again, _ = statuses(5)
    other, _ = statuses(6)

    assert first == again != other
    assert faults.considered == 60
    # A late reply is a success, only slow; every other fault is an error status.
    assert sum(status != 200 for status in first) == faults.total - faults.injected[LATE_REPLY]
    assert set(faults.injected) == set(FAULT_KINDS)  # dealt from a deck: 6 faults hold all
    clio.sandbox.faults.clear()
    assert clio.get("users.json").status_code == 200


@pytest.mark.parametrize(("kind", "status", "applied"), [
    (RATE_LIMITED, 429, False), (SERVER_ERROR, 500, False), (BAD_GATEWAY, 502, False),
    (LOST_REPLY, 502, True), (TIMEOUT, 504, False), (LATE_REPLY, 201, True),
    (SLOW_WRITE, 201, True)])
def test_each_kind_of_random_fault_answers_and_applies_as_it_says(
        clio: Clio, matter: dict[str, Any], kind: str, status: int, applied: bool) -> None:
    clio.sandbox.faults.random = random_faults(1.0, weights={kind: 1}, hang=0.2)

    response = clio.post("activities.json", hard_cost(matter))

    assert response.status_code == status
    assert len(clio.account.activities) == (1 if applied else 0)
    if kind in (TIMEOUT, LATE_REPLY, SLOW_WRITE):
        assert response.elapsed.total_seconds() >= 0.2  # held longer than a short timeout
    if kind == RATE_LIMITED:
        assert response.headers["Retry-After"] == "1"


# -- OAuth -------------------------------------------------------------------------------------

def oauth(clio: Clio, **form: str) -> requests.Response:
    credentials = {"client_id": "sandbox-clio-client", "client_secret": "sandbox-clio-secret"}
    return requests.post(f"{clio.url}/oauth/token", data=credentials | form, timeout=5)


def test_a_code_becomes_tokens_and_refreshing_keeps_the_refresh_token(clio: Clio) -> None:
    code = clio.sandbox.authorization_code(clio.account)
    tokens = body(oauth(clio, grant_type="authorization_code", code=code,
                        redirect_uri="http://localhost/cb"))
    refreshed = body(oauth(clio, grant_type="refresh_token",
                           refresh_token=tokens["refresh_token"]))
    again = oauth(clio, grant_type="refresh_token", refresh_token=tokens["refresh_token"])

    assert tokens["token_type"] == "bearer" and tokens["expires_in"] == 2592000
    assert set(refreshed) == {"access_token", "token_type", "expires_in"}
    assert again.status_code == 200
    me = session(refreshed["access_token"]).get(f"{clio.url}/api/v4/users/who_am_i.json",
                                                 timeout=5)
    assert me.status_code == 200


def test_oauth_refuses_a_wrong_client_or_a_bad_grant(clio: Clio) -> None:
    wrong_client = oauth(clio, client_secret="nope", grant_type="refresh_token",
                         refresh_token="x")
    bad_code = oauth(clio, grant_type="authorization_code", code="nope",
                     redirect_uri="http://localhost/cb")

    assert (wrong_client.status_code, body(wrong_client)) == (401, {"error": "invalid_client"})
    assert (bad_code.status_code, body(bad_code)) == (400, {"error": "invalid_grant"})


def test_deauthorize_revokes_the_grant(clio: Clio) -> None:
    tokens = clio.sandbox.issue_tokens(clio.account)
    revoked = session(tokens["access_token"])

    assert revoked.post(f"{clio.url}/oauth/deauthorize", timeout=5).status_code == 200
    assert revoked.get(f"{clio.url}/api/v4/users.json", timeout=5).status_code == 401
    refresh = oauth(clio, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert refresh.status_code == 400


# -- request validation against Clio's OpenAPI document ----------------------------------------

def test_a_price_that_is_not_a_number_is_refused_by_the_schema(
        openapi: OpenApiDocument, clio: Clio, matter: dict[str, Any]) -> None:
    response = clio.post("activities.json", hard_cost(matter, price="abc"))

    assert response.status_code == 400
    assert body(response)["error"]["type"] == "InvalidRequest"
    assert "data.price" in body(response)["error"]["message"]
    assert clio.sandbox.schema_errors == [body(response)["error"]["message"]]


def test_an_unknown_activity_type_is_refused_by_the_schema(
        openapi: OpenApiDocument, clio: Clio, matter: dict[str, Any]) -> None:
    response = clio.post("activities.json", hard_cost(matter, type="MileageEntry"))

    assert response.status_code == 400
    assert "MileageEntry" in clio.sandbox.schema_errors[0]


def test_query_parameters_are_checked_against_the_schema(
        openapi: OpenApiDocument, clio: Clio) -> None:
    assert clio.get("activities.json", limit="ten").status_code == 400
    assert clio.get("activities.json", status="lost").status_code == 400
    assert clio.get("matters.json", status="Open,pending", unknown="ok").status_code == 200
    assert len(clio.sandbox.schema_errors) == 2


def test_the_keyword_null_is_taken_where_the_document_says_so(
        openapi: OpenApiDocument) -> None:
    """``matter_id=null`` ("Use the keyword `null` to match those without ..."), but not
    ``client_id=null`` on matters ("The keyword `null` is not valid for this field")."""
    assert openapi.validate_request("GET", "/activities.json", {"matter_id": ["null"]}) == []
    assert openapi.validate_request("GET", "/matters.json", {"client_id": ["null"]}) == [
        "Invalid query parameter client_id: 'null' is not of type 'integer'"]


def test_valid_requests_leave_no_schema_errors(
        openapi: OpenApiDocument, clio: Clio, matter: dict[str, Any]) -> None:
    vendor = clio.account.add_contact("Courier Co", type="Company")
    category = clio.account.add_expense_category("Filing fees")
    created = clio.post("activities.json", hard_cost(
        matter, vendor={"id": vendor["id"]}, expense_category={"id": category["id"]},
        user={"id": clio.account.owner_id}), fields="id,etag")
    activity = body(created)["data"]
    clio.patch(f"activities/{activity['id']}.json", {"vendor": {"id": None}},
               etag=activity["etag"])
    clio.get("activities.json", matter_id=matter["id"], start_date="2024-01-01",
             updated_since="2024-01-01T00:00:00+00:00", order="id(asc)", fields=ACTIVITY_FIELDS)

    assert created.status_code == 201
    assert clio.sandbox.schema_errors == []
    assert clio.sandbox.validation_enabled


# -- response validation against Clio's OpenAPI document ---------------------------------------

def test_an_answer_that_breaks_the_schema_is_reported(
        openapi: OpenApiDocument, clio: Clio, matter: dict[str, Any]) -> None:
    """Armed answers (a fault's body) are checked as the sandbox's own are: a field of the
    wrong type, a value outside its enum, a list without Clio's paging ``meta``, a missing
    ``data`` and an undocumented success status are each reported."""
    wrong = '{"data": [{"id": 1, "price": "12.50", "type": "MileageEntry"}], ' \
        '"meta": {"paging": {}, "records": 1}}'
    clio.sandbox.faults.add(Fault(path=r"/activities\.json$", method="GET", status=200,
                                  body=wrong))
    clio.sandbox.faults.add(Fault(path=r"/matters\.json$", method="GET", status=200,
                                  body='{"data": [{"id": 2, "status": "Open"}]}'))
    clio.sandbox.faults.add(Fault(path=r"/who_am_i\.json$", status=200, body='{"id": 3}'))
    clio.sandbox.faults.add(Fault(path=r"/activities\.json$", method="POST", status=200,
                                  body='{"data": {"id": 4}}'))

    assert clio.get("activities.json", fields="id,price,type").status_code == 200
    assert clio.get("matters.json", fields="id,status").status_code == 200
    assert clio.get("users/who_am_i.json").status_code == 200
    assert clio.post("activities.json", hard_cost(matter)).status_code == 200

    errors = clio.sandbox.schema_errors
    assert errors == [
        "Invalid response to GET /activities.json (200): data.0.price: '12.50' is not of "
        "type 'number'",
        "Invalid response to GET /activities.json (200): data.0.type: 'MileageEntry' is not "
        "one of ['TimeEntry', 'ExpenseEntry', 'HardCostEntry', 'SoftCostEntry']",
        "Invalid response to GET /matters.json (200): (root): 'meta' is a required property",
        "Invalid response to GET /users/who_am_i.json (200): (root): 'data' is a required "
        "property",
        "Invalid response to POST /activities.json (200): status 200 is not documented "
        "(documented: 201)",
    ]


def test_the_response_validator_checks_what_is_present_and_allows_null(
        openapi: OpenApiDocument) -> None:
    """``fields=`` leaves out what was not asked for (no resource schema requires a key),
    and Clio answers null for an empty value: both pass; a present value of the wrong type or
    a body where none is documented does not."""
    def check(method: str, path: str, status: int, raw: str) -> list[str]:
        return openapi.validate_response(method, path, status, raw.encode(),
                                         "application/json; charset=utf-8")

    assert check("GET", "/activities/7.json", 200, '{"data": {"id": 7}}') == []
    assert check("GET", "/activities/7.json", 200,
                 '{"data": {"id": 7, "bill": null, "reference": null, "quantity": null}}') == []
    assert check("GET", "/expense_categories.json", 200,
                 '{"data": [{"id": 1, "rate": 0}], "meta": {"paging": {"next": '
                 '"https://app.clio.com/api/v4/expense_categories.json?page_token=x"}}}') == []
    assert check("GET", "/contacts.json", 200,
                 '{"data": [{"id": 1, "type": "Robot"}], "meta": {"paging": {}}}') == [
        "Invalid response to GET /contacts.json (200): data.0.type: 'Robot' is not one of "
        "['Company', 'Person']"]
    assert check("GET", "/users.json", 200,
                 '{"data": [], "meta": {"paging": {"next": "page 2"}}}') == [
        "Invalid response to GET /users.json (200): meta.paging.next: 'page 2' does not "
        "match '^https?://'"]
    assert check("GET", "/matters/1.json", 200, '{"data": {"client": {"id": "x"}}}') == [
        "Invalid response to GET /matters/1.json (200): data.client.id: 'x' is not of type "
        "'integer'"]
    assert check("DELETE", "/activities/7.json", 204, "") == []
    assert check("DELETE", "/activities/7.json", 204, "{}") == [
        "Invalid response to DELETE /activities/7.json (204): a body where none is documented"]
    assert check("GET", "/activities.json", 200, "not json")[0].startswith(
        "Invalid response to GET /activities.json (200): the body is not valid JSON")


def test_every_answer_the_sandbox_gives_hardcost_matches_the_schema(
        openapi: OpenApiDocument, clio: Clio, matter: dict[str, Any]) -> None:
    """Every field the sandbox can render, on every endpoint hardcost calls, in answers
    holding nulls (no vendor, no bill, a company's names) and pages with a ``next`` URL."""
    account = clio.account
    vendor = account.add_contact("Courier Co", type="Company")
    account.add_contact("Jane Doe", email="jane@example.com")
    account.add_user("Sam Clerk", email="sam@example.com")
    category = account.add_expense_category("Filing fees", rate="0")
    account.add_expense_category("Copies", entry_type="soft_cost")
    created = clio.post("activities.json", hard_cost(
        matter, vendor={"id": vendor["id"]}, expense_category={"id": category["id"]}),
        fields="id,etag")
    plain = clio.post("activities.json", hard_cost(matter), fields="id,etag")
    account.mark_billed(body(plain)["data"]["id"], state="paid")
    activity = body(created)["data"]
    every = {resource: ",".join(name if target is None else f"{name}{{id,etag}}"
                                for name, target in fields.items())
             for resource, fields in FIELDS.items()}

    answers = [
        clio.get("activities.json", fields=every["activity"], limit=1, order="id(asc)"),
        clio.get(f"activities/{activity['id']}.json", fields=every["activity"]),
        clio.patch(f"activities/{activity['id']}.json", {"note": "edited"},
                   fields=every["activity"]),
        clio.get("matters.json", fields=every["matter"], status="open,pending"),
        clio.get(f"matters/{matter['id']}.json", fields=every["matter"]),
        clio.get("contacts.json", fields=every["contact"], limit=1),
        clio.get("users.json", fields=every["user"]),
        clio.get("users/who_am_i.json", fields=every["user"]),
        clio.get("expense_categories.json", fields=every["expense_category"]),
        clio.get("activities.json"),
        clio.delete(f"activities/{activity['id']}.json"),
    ]

    assert [a.status_code for a in answers] == [200] * 10 + [204]
    assert body(answers[0])["meta"]["paging"]["next"].startswith("http")
    assert clio.sandbox.schema_errors == []


def test_the_sandbox_checks_against_the_committed_extract() -> None:
    """Every checkout checks the same way: the sandbox reads the extract committed beside it
    (no document outside the repository), unless told not to check at all."""
    sandbox = ClioSandbox()

    assert sandbox.validation_enabled
    assert sandbox.spec is not None and sandbox.spec.source == CLIO_SCHEMA.resolve()
    assert not ClioSandbox(validate=False).validation_enabled


def test_a_normal_run_gets_no_answer_that_breaks_the_schema(firm: Any) -> None:
    """A run that imports, follows an edit and a deletion reads Clio's answers to every call
    hardcost makes (who_am_i, users, categories, contacts, matters, activities): none breaks
    the document. (``firm.run`` asserts it after every run; said here in so many words.)"""
    if not firm.world.clio.validation_enabled:
        pytest.skip(firm.world.clio.validation_disabled_reason)
    firm.client("Jane Smith", ["Smith estate"])
    purchase = firm.expense(("125.00", "Jane Smith", "Filing fee"))
    first = firm.engine.run()
    firm.later()
    firm.qbo.delete_purchase(str(purchase["Id"]))
    second = firm.engine.run()

    assert (first.imported, second.deleted) == (1, 1)
    assert firm.world.clio.calls.count("GET", r"/activities") >= 1
    assert firm.world.clio.schema_errors == []

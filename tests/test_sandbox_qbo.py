"""The QuickBooks Online sandbox behaves like QBO (as Intuit documents it), over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from hardcost.sandbox.qbo import (
    QboCompany,
    QboSandbox,
    account_line,
    item_line,
    server_error_fault,
    throttle_fault_json,
    throttle_fault_xml,
    timeout_fault,
)
from hardcost.sandbox.server import RunningServer, serve_in_thread

TOKEN_PATH = "/oauth2/v1/tokens/bearer"
CLIENT = ("sandbox-qbo-client", "sandbox-qbo-secret")


@dataclass
class Qbo:
    sandbox: QboSandbox
    company: QboCompany
    server: RunningServer
    http: requests.Session

    @property
    def api(self) -> str:
        return f"{self.server.url}/v3/company/{self.company.realm_id}"

    def query(self, statement: str) -> requests.Response:
        return self.http.get(f"{self.api}/query", params={"query": statement,
                                                          "minorversion": "75"})

    def rows(self, statement: str, entity: str) -> list[dict[str, Any]]:
        response = self.query(statement)
        assert response.status_code == 200, response.text
        return list(loads(response.text)["QueryResponse"].get(entity, []))

    def cdc(self, changed_since: str, entities: str = "Purchase") -> requests.Response:
        return self.http.get(f"{self.api}/cdc", params={"entities": entities,
                                                        "changedSince": changed_since})

    def token(self, **form: str) -> requests.Response:
        return requests.post(f"{self.server.url}{TOKEN_PATH}", data=form, auth=CLIENT)

    def ago(self, **delta: float) -> str:
        return (self.sandbox.clock.now() - timedelta(**delta)).isoformat()


def loads(text: str) -> Any:
    return json.loads(text, parse_float=Decimal)


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}


@pytest.fixture
def qbo() -> Iterator[Qbo]:
    sandbox = QboSandbox()
    company = sandbox.add_company()
    tokens = sandbox.issue_tokens(company.realm_id)
    with serve_in_thread(sandbox) as server, requests.Session() as http:
        http.headers.update(bearer(tokens["access_token"]))
        yield Qbo(sandbox, company, server, http)


@pytest.fixture
def costs(qbo: Qbo) -> str:
    return str(qbo.company.add_account("Client Costs")["Id"])


def add_purchases(company: QboCompany, account_id: str, count: int) -> None:
    for n in range(count):
        company.add_purchase(lines=[account_line(n + 1, account_id)])


# --- auth and headers -------------------------------------------------------------------------


def test_every_response_carries_intuit_tid(qbo: Qbo) -> None:
    qbo.sandbox.faults.add(throttle_fault_xml())
    responses = [qbo.query("SELECT * FROM Purchase"), qbo.query("SELECT * FROM Purchase"),
                 requests.get(f"{qbo.api}/preferences"), qbo.token(grant_type="refresh_token")]
    assert [r.status_code for r in responses] == [429, 200, 401, 400]
    tids = [r.headers["intuit_tid"] for r in responses]
    assert all(len(t) == 32 and int(t, 16) >= 0 for t in tids)
    assert len(set(tids)) == 4


def test_unknown_token_gets_lower_case_401_fault(qbo: Qbo) -> None:
    response = requests.get(f"{qbo.api}/preferences", headers=bearer("nope"))
    assert response.status_code == 401
    body = response.json()
    assert body["fault"]["type"] == "AUTHENTICATION"
    assert body["fault"]["error"] == [{
        "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
        "detail": "Token expired", "code": "3200"}]
    assert "time" in body and "Fault" not in body


def test_access_token_expires_after_an_hour_of_sandbox_time(qbo: Qbo) -> None:
    qbo.sandbox.clock.advance(3599)
    assert qbo.query("SELECT * FROM Purchase").status_code == 200
    qbo.sandbox.clock.advance(2)
    assert qbo.query("SELECT * FROM Purchase").status_code == 401


def test_expire_access_tokens_makes_every_token_401(qbo: Qbo) -> None:
    qbo.sandbox.expire_access_tokens()
    assert qbo.query("SELECT * FROM Purchase").status_code == 401


def test_token_of_another_realm_is_refused(qbo: Qbo) -> None:
    other = qbo.sandbox.add_company()
    other_token = qbo.sandbox.issue_tokens(other.realm_id)["access_token"]
    response = requests.get(f"{qbo.api}/preferences", headers=bearer(other_token))
    assert response.status_code == 401


# --- query language -------------------------------------------------------------------------


def test_query_pages_through_2500_purchases(qbo: Qbo, costs: str) -> None:
    add_purchases(qbo.company, costs, 2500)
    ids: list[int] = []
    for start in (1, 1001, 2001):
        response = qbo.query(f"SELECT * FROM Purchase STARTPOSITION {start} MAXRESULTS 1000")
        page = loads(response.text)["QueryResponse"]
        assert page["startPosition"] == start
        assert page["maxResults"] == len(page["Purchase"])
        ids += [int(p["Id"]) for p in page["Purchase"]]
    assert ids == list(range(1, 2501))
    beyond = loads(qbo.query("SELECT * FROM Purchase STARTPOSITION 2501").text)
    assert beyond["QueryResponse"] == {}


def test_maxresults_defaults_to_100(qbo: Qbo, costs: str) -> None:
    add_purchases(qbo.company, costs, 150)
    assert len(qbo.rows("SELECT * FROM Purchase", "Purchase")) == 100


def test_maxresults_over_1000_is_refused(qbo: Qbo) -> None:
    response = qbo.query("SELECT * FROM Purchase MAXRESULTS 1001")
    assert response.status_code == 400
    fault = response.json()["Fault"]
    assert fault["type"] == "ValidationFault"
    assert fault["Error"][0]["Message"] == "QueryValidationError"
    assert fault["Error"][0]["Detail"].endswith("Max allowed value is 1000")


def test_where_last_updated_time_compares_instants_across_offsets(qbo: Qbo, costs: str) -> None:
    qbo.company.add_purchase(lines=[account_line(1, costs)])
    qbo.sandbox.clock.advance(1800)
    second = qbo.company.add_purchase(lines=[account_line(2, costs)])
    stamp = second["MetaData"]["LastUpdatedTime"]
    assert stamp.endswith(("-08:00", "-07:00"))
    in_utc = (qbo.sandbox.clock.now() - timedelta(minutes=15)).strftime("%Y-%m-%dT%H:%M:%SZ")
    newer = qbo.rows(f"SELECT * FROM Purchase WHERE MetaData.LastUpdatedTime >= '{in_utc}'",
                     "Purchase")
    assert [p["Id"] for p in newer] == [second["Id"]]
    same = qbo.rows(f"SELECT * FROM Purchase WHERE metadata.lastupdatedtime = '{stamp}'",
                    "Purchase")
    assert [p["Id"] for p in same] == [second["Id"]]


def test_where_dates_ids_and_order(qbo: Qbo, costs: str) -> None:
    for day in ("2026-01-03", "2026-01-10", "2026-01-20"):
        qbo.company.add_purchase(txn_date=day, lines=[account_line(5, costs)])
    rows = qbo.rows("SELECT * FROM Purchase WHERE TxnDate > '2026-01-05' AND Id < '10' "
                    "ORDERBY TxnDate DESC", "Purchase")
    assert [p["TxnDate"] for p in rows] == ["2026-01-20", "2026-01-10"]


def test_where_in_and_like(qbo: Qbo) -> None:
    smith = qbo.company.add_customer("Smith, John")
    qbo.company.add_customer("Estate of Smith", parent_id=smith["Id"])
    qbo.company.add_customer("O'Brien")
    names = qbo.rows("SELECT * FROM Customer WHERE DisplayName LIKE '%smith%'", "Customer")
    assert [c["FullyQualifiedName"] for c in names] == ["Smith, John",
                                                        "Smith, John:Estate of Smith"]
    assert names[1]["Job"] is True and names[1]["ParentRef"] == {"value": smith["Id"]}
    quoted = qbo.rows("SELECT * FROM customer WHERE DisplayName IN ('O\\'Brien', 'Nobody')",
                      "Customer")
    assert [c["DisplayName"] for c in quoted] == ["O'Brien"]
    by_id = qbo.rows("SELECT * FROM Customer WHERE Id IN ('1', '3')", "Customer")
    assert [c["Id"] for c in by_id] == ["1", "3"]


def test_name_lists_return_active_rows_unless_asked(qbo: Qbo) -> None:
    qbo.company.add_customer("Active Client")
    qbo.company.add_customer("Former Client", active=False)
    default = qbo.rows("SELECT * FROM Customer", "Customer")
    assert [c["DisplayName"] for c in default] == ["Active Client"]
    both = qbo.rows("SELECT * FROM Customer WHERE Active IN (true, false)", "Customer")
    assert len(both) == 2
    inactive = qbo.rows("SELECT * FROM Customer WHERE Active = false", "Customer")
    assert [c["DisplayName"] for c in inactive] == ["Former Client"]


def test_count(qbo: Qbo, costs: str) -> None:
    add_purchases(qbo.company, costs, 7)
    response = qbo.query("SELECT COUNT(*) FROM Purchase WHERE TotalAmt > '3'")
    assert loads(response.text)["QueryResponse"] == {"totalCount": 4}


def test_or_is_refused(qbo: Qbo) -> None:
    response = qbo.query("SELECT * FROM Purchase WHERE Id = '1' OR Id = '2'")
    assert response.status_code == 400
    fault = response.json()["Fault"]
    assert fault["type"] == "ValidationFault"
    assert fault["Error"][0]["code"] == "4000"


@pytest.mark.parametrize("statement", ["SELECT FROM Purchase", "SELECT * FROM Nonsense",
                                       "SELECT * FROM Purchase WHERE Id = 'unterminated",
                                       "SELECT * FROM Purchase ORDERBY"])
def test_syntax_errors_are_validation_faults(qbo: Qbo, statement: str) -> None:
    response = qbo.query(statement)
    assert response.status_code == 400
    assert response.json()["Fault"]["Error"][0]["Message"] == "Error parsing query"


def test_empty_result_has_no_entity_key(qbo: Qbo) -> None:
    body = loads(qbo.query("SELECT * FROM Purchase").text)
    assert body["QueryResponse"] == {}
    assert "time" in body


def test_query_by_post_with_application_text(qbo: Qbo, costs: str) -> None:
    add_purchases(qbo.company, costs, 3)
    response = qbo.http.post(f"{qbo.api}/query", data="select * from purchase maxresults 2",
                             headers={"Content-Type": "application/text"})
    assert len(response.json()["QueryResponse"]["Purchase"]) == 2


# --- purchases --------------------------------------------------------------------------------


def test_amounts_are_exact_decimals(qbo: Qbo, costs: str) -> None:
    purchase = qbo.company.add_purchase(lines=[account_line("0.10", costs),
                                               account_line(Decimal("0.20"), costs),
                                               account_line("0.00", costs)])
    response = qbo.http.get(f"{qbo.api}/purchase/{purchase['Id']}")
    assert '"TotalAmt": 0.3,' in response.text
    body = loads(response.text)["Purchase"]
    assert body["TotalAmt"] == Decimal("0.3")
    assert [line["Amount"] for line in body["Line"]] == [Decimal("0.1"), Decimal("0.2"), 0]


def test_purchase_shape(qbo: Qbo, costs: str) -> None:
    parent = qbo.company.add_customer("Acme")
    job = qbo.company.add_customer("Lawsuit", parent_id=parent["Id"])
    vendor = qbo.company.add_vendor("County Court")
    filing = qbo.company.add_account("Filing", parent_id=costs)
    item = qbo.company.add_item("Copies", expense_account_id=costs)
    created = qbo.company.add_purchase(
        payment_type="CreditCard", doc_number="1001", private_note="fees",
        entity=(vendor["Id"], "Vendor"), credit=False,
        lines=[account_line("12.50", filing["Id"], customer_id=job["Id"], description="filing"),
               item_line("9", item["Id"], customer_id=parent["Id"], qty=3)])
    body = qbo.http.get(f"{qbo.api}/purchase/{created['Id']}").json()["Purchase"]
    assert body["SyncToken"] == "0" and body["domain"] == "QBO" and body["sparse"] is False
    assert body["EntityRef"] == {"value": vendor["Id"], "name": "County Court", "type": "Vendor"}
    assert body["AccountRef"]["name"] == "Visa"
    assert body["CurrencyRef"] == {"value": "USD", "name": "United States Dollar"}
    assert (body["PaymentType"], body["Credit"], body["DocNumber"]) == ("CreditCard", False,
                                                                        "1001")
    first, second = body["Line"]
    assert first["Id"] == "1" and first["Amount"] == 12.5
    assert first["AccountBasedExpenseLineDetail"] == {
        "AccountRef": {"value": filing["Id"], "name": "Client Costs:Filing"},
        "CustomerRef": {"value": job["Id"], "name": "Acme:Lawsuit"},
        "BillableStatus": "Billable", "TaxCodeRef": {"value": "NON"}}
    assert second["ItemBasedExpenseLineDetail"]["ItemRef"]["name"] == "Copies"
    assert second["ItemBasedExpenseLineDetail"]["UnitPrice"] == 3
    assert body["TotalAmt"] == 21.5


def test_read_missing_purchase_is_object_not_found(qbo: Qbo) -> None:
    response = qbo.http.get(f"{qbo.api}/purchase/999")
    assert response.status_code == 400
    assert response.json()["Fault"]["Error"][0]["code"] == "610"


def test_update_and_void_bump_sync_token(qbo: Qbo, costs: str) -> None:
    purchase = qbo.company.add_purchase(private_note="memo", lines=[account_line(10, costs)])
    qbo.sandbox.clock.advance(5)
    updated = qbo.company.update_purchase(purchase["Id"], lines=[account_line(11, costs)])
    assert (updated["SyncToken"], updated["TotalAmt"]) == ("1", 11)
    assert updated["MetaData"]["LastUpdatedTime"] > purchase["MetaData"]["LastUpdatedTime"]
    assert updated["PrivateNote"] == "memo"
    voided = qbo.company.void_purchase(purchase["Id"])
    assert voided["SyncToken"] == "2" and voided["TotalAmt"] == 0
    assert voided["PrivateNote"].startswith("Voided")
    assert voided["Line"][0]["Amount"] == 0


def test_tracking_by_customer_off_drops_customers(qbo: Qbo) -> None:
    company = qbo.sandbox.add_company(tracking_by_customer=False)
    account = company.add_account("Costs")
    customer = company.add_customer("Smith")
    purchase = company.add_purchase(lines=[account_line(1, account["Id"],
                                                        customer_id=customer["Id"])])
    assert "CustomerRef" not in purchase["Line"][0]["AccountBasedExpenseLineDetail"]


def test_raw_purchases_are_served_verbatim(qbo: Qbo) -> None:
    raw = qbo.company.put_purchase_raw({"PaymentType": "Expense", "TotalAmt": "abc"})
    body = qbo.http.get(f"{qbo.api}/purchase/{raw['Id']}").json()["Purchase"]
    assert body["TotalAmt"] == "abc" and "Line" not in body and body["SyncToken"] == "0"


# --- CDC --------------------------------------------------------------------------------------


def test_cdc_reports_changes_and_deletions(qbo: Qbo, costs: str) -> None:
    old = qbo.company.add_purchase(lines=[account_line(1, costs)])
    gone = qbo.company.add_purchase(lines=[account_line(2, costs)])
    qbo.sandbox.clock.advance(1800)
    since = qbo.ago(seconds=1)
    new = qbo.company.add_purchase(lines=[account_line(3, costs)])
    qbo.sandbox.clock.advance(1)
    qbo.company.delete_purchase(gone["Id"])
    body = loads(qbo.cdc(since, "Purchase,Customer").text)
    purchases, customers = body["CDCResponse"][0]["QueryResponse"]
    ids = [p["Id"] for p in purchases["Purchase"]]
    assert ids == [new["Id"], gone["Id"]] and old["Id"] not in ids
    stub = purchases["Purchase"][1]
    assert stub["status"] == "Deleted" and stub["domain"] == "QBO"
    assert set(stub) == {"Id", "status", "domain", "MetaData"}
    assert customers == {"Customer": [], "startPosition": 1, "maxResults": 0}
    assert qbo.query(f"SELECT * FROM Purchase WHERE Id = '{gone['Id']}'").json()[
        "QueryResponse"] == {}


def test_cdc_returns_at_most_the_1000_oldest_changes(qbo: Qbo, costs: str) -> None:
    since = qbo.ago(seconds=1)
    for batch in range(3):
        add_purchases(qbo.company, costs, 400)
        qbo.sandbox.clock.advance(60 - batch)
    qbo.company.update_purchase("1", private_note="edited last")
    purchases = loads(qbo.cdc(since).text)["CDCResponse"][0]["QueryResponse"][0]
    assert purchases["maxResults"] == 1000
    assert [int(p["Id"]) for p in purchases["Purchase"]] == list(range(2, 1002))


def test_cdc_window_is_30_days(qbo: Qbo) -> None:
    assert qbo.cdc(qbo.ago(days=29)).status_code == 200
    refused = qbo.cdc(qbo.ago(days=31))
    assert refused.status_code == 400
    assert "30 days" in refused.json()["Fault"]["Error"][0]["Detail"]


# --- preferences -----------------------------------------------------------------------------


def test_preferences(qbo: Qbo) -> None:
    qbo.company.set_preferences(tracking_by_customer=False)
    prefs = qbo.http.get(f"{qbo.api}/preferences").json()["Preferences"]
    assert prefs["VendorAndPurchasesPrefs"]["TrackingByCustomer"] is False
    assert prefs["VendorAndPurchasesPrefs"]["BillableExpenseTracking"] is True
    assert prefs["CurrencyPrefs"]["HomeCurrency"] == {"value": "USD"}
    assert prefs["CurrencyPrefs"]["MultiCurrencyEnabled"] is False


def test_company_info(qbo: Qbo) -> None:
    info = qbo.http.get(f"{qbo.api}/companyinfo/{qbo.company.realm_id}").json()["CompanyInfo"]
    assert info["Id"] == qbo.company.realm_id


# --- OAuth ------------------------------------------------------------------------------------


def test_refresh_rotates_and_old_token_lives_through_grace(qbo: Qbo) -> None:
    first = qbo.sandbox.issue_tokens(qbo.company.realm_id)["refresh_token"]
    rotated = qbo.token(grant_type="refresh_token", refresh_token=first).json()
    assert rotated["refresh_token"] != first and rotated["token_type"] == "bearer"
    assert rotated["expires_in"] == 3600 and rotated["x_refresh_token_expires_in"] == 8726400
    again = qbo.token(grant_type="refresh_token", refresh_token=first).json()
    assert again["refresh_token"] == rotated["refresh_token"]
    fresh = requests.get(f"{qbo.api}/preferences", headers=bearer(again["access_token"]))
    assert fresh.status_code == 200
    qbo.sandbox.clock.advance(86401)
    dead = qbo.token(grant_type="refresh_token", refresh_token=first)
    assert (dead.status_code, dead.json()) == (400, {"error": "invalid_grant"})
    assert qbo.token(grant_type="refresh_token",
                     refresh_token=rotated["refresh_token"]).status_code == 200


def test_refresh_grace_zero_kills_superseded_token_at_once(qbo: Qbo) -> None:
    qbo.sandbox.refresh_grace_seconds = 0
    first = qbo.sandbox.issue_tokens(qbo.company.realm_id)["refresh_token"]
    assert qbo.token(grant_type="refresh_token", refresh_token=first).status_code == 200
    assert qbo.token(grant_type="refresh_token", refresh_token=first).json() == {
        "error": "invalid_grant"}


def test_hard_expiry_only_when_asked(qbo: Qbo) -> None:
    first = qbo.sandbox.issue_tokens(qbo.company.realm_id)["refresh_token"]
    response = requests.post(f"{qbo.server.url}{TOKEN_PATH}", auth=CLIENT,
                             data={"grant_type": "refresh_token", "refresh_token": first},
                             headers={"x-include-refresh-token-hard-expires-in": "true"})
    assert response.json()["x_refresh_token_hard_expires_in"] > 8726400
    again = qbo.token(grant_type="refresh_token", refresh_token=response.json()["refresh_token"])
    assert "x_refresh_token_hard_expires_in" not in again.json()


def test_wrong_client_is_invalid_client(qbo: Qbo) -> None:
    response = requests.post(f"{qbo.server.url}{TOKEN_PATH}", auth=("x", "y"),
                             data={"grant_type": "refresh_token", "refresh_token": "r"})
    assert (response.status_code, response.json()) == (401, {"error": "invalid_client"})


def test_authorization_code_is_single_use(qbo: Qbo) -> None:
    code = qbo.sandbox.authorization_code(qbo.company.realm_id)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": "http://app/cb"}
    granted = qbo.token(**form)
    assert granted.status_code == 200
    access = granted.json()["access_token"]
    assert requests.get(f"{qbo.api}/preferences", headers=bearer(access)).status_code == 200
    reused = qbo.token(**form)
    assert (reused.status_code, reused.json()) == (400, {"error": "invalid_grant"})


def test_authorize_redirects_back_with_code_and_realm(qbo: Qbo) -> None:
    response = requests.get(f"{qbo.server.url}/connect/oauth2", allow_redirects=False, params={
        "client_id": CLIENT[0], "response_type": "code", "redirect_uri": "http://app/cb",
        "scope": "com.intuit.quickbooks.accounting", "state": "s1"})
    assert response.status_code == 302
    params = parse_qs(urlsplit(response.headers["Location"]).query)
    assert params["state"] == ["s1"] and params["realmId"] == [qbo.company.realm_id]
    assert qbo.token(grant_type="authorization_code", code=params["code"][0],
                     redirect_uri="http://app/cb").status_code == 200


def test_revoke_kills_refresh_and_access_tokens(qbo: Qbo) -> None:
    tokens = qbo.sandbox.issue_tokens(qbo.company.realm_id)
    revoke = requests.post(f"{qbo.server.url}/v2/oauth2/tokens/revoke", auth=CLIENT,
                           json={"token": tokens["refresh_token"]})
    assert revoke.status_code == 200
    assert qbo.token(grant_type="refresh_token",
                     refresh_token=tokens["refresh_token"]).status_code == 400
    assert requests.get(f"{qbo.api}/preferences",
                        headers=bearer(tokens["access_token"])).status_code == 401


# --- faults and webhooks ----------------------------------------------------------------------


def test_throttle_fault_answers_xml_429_once(qbo: Qbo) -> None:
    qbo.sandbox.faults.add(throttle_fault_xml())
    throttled = qbo.query("SELECT * FROM Purchase")
    assert throttled.status_code == 429
    assert throttled.headers["Content-Type"].startswith("application/xml")
    assert '<Error code="3001">' in throttled.text and "ThrottleExceeded" in throttled.text
    assert qbo.query("SELECT * FROM Purchase").status_code == 200
    assert qbo.sandbox.calls.count("GET", r"/query$") == 2


def test_json_throttle_and_server_error_faults(qbo: Qbo) -> None:
    qbo.sandbox.faults.add(throttle_fault_json())
    qbo.sandbox.faults.add(server_error_fault(503, path=r"/preferences"))
    throttled = qbo.query("SELECT * FROM Purchase")
    assert throttled.json()["Fault"]["Error"][0]["code"] == "3001"
    failed = qbo.http.get(f"{qbo.api}/preferences")
    assert failed.status_code == 503 and failed.json()["Fault"]["type"] == "SystemFault"


def test_timeout_fault_delays_past_the_client_timeout(qbo: Qbo) -> None:
    qbo.sandbox.faults.add(timeout_fault(0.5))
    with pytest.raises(requests.Timeout):
        qbo.http.get(f"{qbo.api}/preferences", timeout=0.1)


def test_sign_webhook(qbo: Qbo) -> None:
    body = b'{"eventNotifications": []}'
    expected = hmac.new(b"sandbox-qbo-verifier", body, hashlib.sha256).digest()
    assert qbo.sandbox.sign_webhook(body) == base64.b64encode(expected).decode()


# --- bills and bill payments ------------------------------------------------------------------


def test_a_bill_is_queryable_readable_and_paid_down_by_bill_payments(qbo: Qbo, costs: str) -> None:
    vendor = qbo.company.add_vendor("Court Reporters Inc")
    customer = qbo.company.add_customer("Jane Smith")
    qbo.sandbox.clock.advance(1800)
    since = qbo.ago(seconds=1)
    bill = qbo.company.add_bill(txn_date="2026-02-03", vendor_id=vendor["Id"],
                                doc_number="CR-1", lines=[
                                    account_line("100.00", costs, customer_id=customer["Id"]),
                                    account_line("50.50", costs, customer_id=customer["Id"])])

    [row] = qbo.rows(f"select * from Bill where MetaData.LastUpdatedTime > '{since}'", "Bill")
    assert row["TotalAmt"] == row["Balance"] == Decimal("150.5")
    assert row["VendorRef"] == {"value": vendor["Id"], "name": "Court Reporters Inc"}
    assert row["APAccountRef"]["name"] == "Accounts Payable (A/P)"
    assert row["Line"][0]["AccountBasedExpenseLineDetail"]["CustomerRef"]["name"] == "Jane Smith"
    assert row["LinkedTxn"] == []

    first = qbo.company.pay_bill(bill["Id"], "100", txn_date="2026-02-20")
    second = qbo.company.pay_bill(bill["Id"], txn_date="2026-03-01",
                                  pay_type="CreditCard")  # the rest

    read = loads(qbo.http.get(f"{qbo.api}/bill/{bill['Id']}").text)["Bill"]
    assert read["Balance"] == 0
    # As QuickBooks links a Bill to its payments: the payment's kind is in the type.
    assert read["LinkedTxn"] == [{"TxnId": first["Id"], "TxnType": "BillPaymentCheck"},
                                 {"TxnId": second["Id"], "TxnType": "BillPaymentCreditCard"}]
    [payment] = qbo.rows(f"SELECT * FROM BillPayment WHERE Id IN ('{second['Id']}')",
                         "BillPayment")
    assert payment["TotalAmt"] == Decimal("50.5") and payment["TxnDate"] == "2026-03-01"
    assert payment["Line"][0]["LinkedTxn"] == [{"TxnId": bill["Id"], "TxnType": "Bill"}]
    qbo.company.delete_bill_payment(second["Id"])
    assert qbo.company.bills[bill["Id"]]["Balance"] == Decimal("50.5")


def test_cdc_reads_purchases_bills_and_bill_payments_in_one_call(qbo: Qbo, costs: str) -> None:
    vendor = qbo.company.add_vendor("Investigators LLC")
    gone = qbo.company.add_bill(lines=[account_line(10, costs)], vendor_id=vendor["Id"])
    voided = qbo.company.add_bill(lines=[account_line(20, costs)], vendor_id=vendor["Id"],
                                  private_note="Surveillance")
    qbo.sandbox.clock.advance(1800)
    since = qbo.ago(seconds=1)
    purchase = qbo.company.add_purchase(lines=[account_line(3, costs)])
    qbo.company.delete_bill(gone["Id"])
    qbo.company.void_bill(voided["Id"])
    payment = qbo.company.pay_bill(voided["Id"], 0)

    body = loads(qbo.cdc(since, "Purchase,Bill,BillPayment").text)

    purchases, bills, payments = body["CDCResponse"][0]["QueryResponse"]
    assert [p["Id"] for p in purchases["Purchase"]] == [purchase["Id"]]
    by_id = {b["Id"]: b for b in bills["Bill"]}
    assert by_id[gone["Id"]]["status"] == "Deleted"
    assert by_id[voided["Id"]]["TotalAmt"] == 0
    assert by_id[voided["Id"]]["PrivateNote"] == "Voided - Surveillance"
    assert [p["Id"] for p in payments["BillPayment"]] == [payment["Id"]]
    assert qbo.http.get(f"{qbo.api}/bill/{gone['Id']}").status_code == 400

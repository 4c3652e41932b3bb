"""The QuickBooks and Clio clients against the sandboxes: reads, paging, errors, headers."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from hardcost.sandbox.clio import ClioAccount
from hardcost.sandbox.qbo import QboCompany, account_line
from hardcost.sandbox.world import SandboxWorld
from hardcost.sync.clio import API_VERSION, ClioClient
from hardcost.sync.config import Settings
from hardcost.sync.http import (
    NotFound,
    ReconnectRequired,
    RequestRejected,
    RetryPolicy,
    StaticTokens,
)
from hardcost.sync.qbo import QboClient

FAST = RetryPolicy(attempts=3, backoff=0.01, max_wait=0.05, throttle_wait=0.01)


@pytest.fixture
def world() -> Iterator[SandboxWorld]:
    with SandboxWorld.start() as w:
        yield w


@pytest.fixture
def company(world: SandboxWorld) -> QboCompany:
    return world.qbo.add_company()


@pytest.fixture
def qbo(world: SandboxWorld, company: QboCompany) -> QboClient:
    token = world.qbo.issue_tokens(company.realm_id)["access_token"]
    return QboClient(base_url=world.qbo_server.url, realm_id=company.realm_id,
                     tokens=StaticTokens(token), retry=FAST)


@pytest.fixture
def account(world: SandboxWorld) -> ClioAccount:
    return world.clio.add_account()


@pytest.fixture
def clio(world: SandboxWorld, account: ClioAccount) -> ClioClient:
    token = world.clio.issue_tokens(account)["access_token"]
    return ClioClient(host=world.clio_server.url, tokens=StaticTokens(token), retry=FAST)


# -- QuickBooks --------------------------------------------------------------------------------

def test_purchases_page_by_1000(company: QboCompany, qbo: QboClient,
                                world: SandboxWorld) -> None:
    account = company.add_account("Reimbursable Expenses")
    for n in range(2100):
        company.add_purchase(lines=[account_line(f"{n}.01", account["Id"])])

    pages = list(qbo.purchases_changed_since(None, None))

    assert [len(p.purchases) for p in pages] == [1000, 1000, 100]
    assert len({p["Id"] for page in pages for p in page.purchases}) == 2100
    assert pages[0].server_time is not None
    assert world.qbo.calls.count(None, r"/query") == 3


def test_amounts_are_decoded_as_decimal(company: QboCompany, qbo: QboClient) -> None:
    account = company.add_account("Reimbursable Expenses")
    company.add_purchase(lines=[account_line("0.10", account["Id"]),
                                account_line("0.20", account["Id"])])

    [page] = list(qbo.purchases_changed_since(None, None))
    purchase = page.purchases[0]

    assert purchase["TotalAmt"] == Decimal("0.30")
    assert isinstance(purchase["Line"][0]["Amount"], Decimal)


def test_customers_include_inactive_ones(company: QboCompany, qbo: QboClient) -> None:
    active = company.add_customer("Active Client")
    gone = company.add_customer("Former Client", active=False)

    found = {c["Id"] for c in qbo.customers([active["Id"], gone["Id"]])}

    assert found == {active["Id"], gone["Id"]}
    assert {c["Id"] for c in qbo.customers()} >= found


def test_accounts_and_preferences(company: QboCompany, qbo: QboClient) -> None:
    company.add_account("Reimbursable Expenses")
    company.set_preferences(tracking_by_customer=False)

    assert "Reimbursable Expenses" in {a["Name"] for a in qbo.accounts()}
    assert qbo.tracks_expenses_by_customer() is False


def test_cdc_reports_deleted_purchases(company: QboCompany, qbo: QboClient,
                                       world: SandboxWorld) -> None:
    account = company.add_account("Reimbursable Expenses")
    kept = company.add_purchase(lines=[account_line("5.00", account["Id"])])
    gone = company.add_purchase(lines=[account_line("6.00", account["Id"])])
    company.delete_purchase(gone["Id"])
    since = (world.clock.now().replace(microsecond=0)).isoformat()
    world.clock.advance(-3600)
    since = world.clock.now().replace(microsecond=0).isoformat()
    world.clock.advance(3600)

    changed, _ = qbo.changed_purchases_cdc(since)

    by_id = {p["Id"]: p for p in changed}
    assert by_id[gone["Id"]]["status"] == "Deleted"
    assert kept["Id"] in by_id


def test_quickbooks_fault_is_typed_and_carries_intuit_tid(qbo: QboClient) -> None:
    with pytest.raises(RequestRejected) as caught:
        qbo.query("SELECT * FROM Purchase WHERE Id = '1' OR Id = '2'")

    assert caught.value.request_id  # intuit_tid
    assert caught.value.request_id in str(caught.value)


@pytest.mark.parametrize("status", [429, 403, 400, 500])
@pytest.mark.parametrize("fault", ["json", "xml"])
def test_a_quickbooks_throttle_is_a_throttle_whatever_its_status(
        world: SandboxWorld, qbo: QboClient, status: int, fault: str) -> None:
    """Issue 10 #11: fault 3001 sent as 403 was retried as a throttle by the request path but
    called a config error ("reconnect as an administrator") once the retries ran out."""
    from dataclasses import replace

    from hardcost.sandbox.qbo import throttle_fault_json, throttle_fault_xml
    from hardcost.sync.http import ConfigError, Throttled

    armed = (throttle_fault_json if fault == "json" else throttle_fault_xml)(times=10)
    world.qbo.faults.add(replace(armed, status=status))

    with pytest.raises(Throttled) as caught:
        qbo.accounts()

    assert not isinstance(caught.value, ConfigError)
    assert caught.value.status == status and caught.value.code == "3001"
    assert world.qbo.calls.count(None, r"/query") == FAST.attempts  # retried as a throttle
    # And the decoder alone, wherever it is used, says the same.
    import requests

    from hardcost.sync.qbo import decode_error, is_throttle

    answer = requests.Response()
    answer.status_code = status
    answer._content = armed.body.encode() if isinstance(armed.body, str) else armed.body
    assert is_throttle(answer) and isinstance(decode_error(answer), Throttled)


def test_quickbooks_refused_token_is_reconnect_required(world: SandboxWorld,
                                                         company: QboCompany) -> None:
    client = QboClient(base_url=world.qbo_server.url, realm_id=company.realm_id,
                       tokens=StaticTokens("not-a-token"), retry=FAST)

    with pytest.raises(ReconnectRequired) as caught:
        client.preferences()

    assert "reconnect" in str(caught.value).lower()
    assert "not-a-token" not in str(caught.value)


def test_purchases_by_id_reads_only_those(company: QboCompany, qbo: QboClient) -> None:
    account = company.add_account("Reimbursable Expenses")
    ids = [company.add_purchase(lines=[account_line("1.00", account["Id"])])["Id"]
           for _ in range(5)]

    assert {p["Id"] for p in qbo.purchases_by_id(ids[1:3])} == set(ids[1:3])


# -- Clio --------------------------------------------------------------------------------------

def test_clio_pins_the_api_version_and_asks_for_fields(clio: ClioClient, account: ClioAccount,
                                                       world: SandboxWorld) -> None:
    account.add_contact("Jane Smith")
    clio.search_contacts("Smith")

    call = world.clio.calls.all()[-1]
    assert "fields=" in call.query
    assert clio.api.http.headers["X-API-VERSION"] == API_VERSION


def test_clio_cursor_paging_follows_next(clio: ClioClient, account: ClioAccount,
                                         world: SandboxWorld) -> None:
    for n in range(450):
        account.add_contact(f"Contact {n:03d}")

    contacts, complete = clio.contacts_within(max_pages=3)

    assert complete and len({c.id for c in contacts}) == 450
    assert world.clio.calls.count("GET", r"/contacts\.json") == 3


def test_clio_listing_stops_when_it_would_cost_more_than_allowed(
        clio: ClioClient, account: ClioAccount, world: SandboxWorld) -> None:
    for n in range(450):
        account.add_contact(f"Contact {n:03d}")

    contacts, complete = clio.contacts_within(max_pages=2)

    assert not complete and len(contacts) == 200
    assert world.clio.calls.count("GET", r"/contacts\.json") == 1


def test_clio_open_and_pending_matters_of_a_client(clio: ClioClient,
                                                   account: ClioAccount) -> None:
    client = account.add_contact("Acme Holdings", type="Company")
    other = account.add_contact("Other Co", type="Company")
    open_matter = account.add_matter(client["id"], description="Lease")
    pending = account.add_matter(client["id"], description="Intake", status="Pending")
    account.add_matter(client["id"], description="Done", status="Closed")
    account.add_matter(other["id"], description="Not theirs")

    matters = clio.open_matters(client["id"])

    assert {m.id for m in matters} == {open_matter["id"], pending["id"]}
    assert {m.status for m in matters} == {"Open", "Pending"}
    assert all(m.client_id == client["id"] for m in matters)


def test_clio_users_owner_and_categories(clio: ClioClient, account: ClioAccount) -> None:
    owner = account.add_user("Olivia Owner", account_owner=True)
    account.add_user("Pat Paralegal")
    hard = account.add_expense_category("Filing fees", entry_type="hard_cost")
    account.add_expense_category("Photocopies", entry_type="soft_cost")

    assert clio.account_owner() is not None
    assert clio.account_owner().id == owner["id"]  # type: ignore[union-attr]
    assert [c.id for c in clio.hard_cost_categories()] == [hard["id"]]


def test_clio_create_and_find_by_marker(clio: ClioClient, account: ClioAccount,
                                        world: SandboxWorld) -> None:
    from datetime import date

    client = account.add_contact("Jane Smith")
    matter = account.add_matter(client["id"], description="Estate")
    created = clio.create_entry(entry_type="HardCostEntry", on=date(2026, 2, 3),
                                price=Decimal("447.50"), matter_id=matter["id"],
                                note="Filing\n[qbo 1/2/3]", reference="1042",
                                expense_category_id=None, user_id=None, vendor_id=None)

    assert created.price == Decimal("447.50") and created.matter_id == matter["id"]
    assert [a.id for a in clio.find_by_marker("[qbo 1/2/3]")] == [created.id]
    assert clio.find_by_marker("[qbo 1/2/4]") == []
    assert clio.get_activity(created.id).billed is False
    assert world.clio.schema_errors == []


def test_clio_find_by_marker_ignores_a_marker_quoted_in_the_text(
        clio: ClioClient, account: ClioAccount) -> None:
    """Issue 24 #3: a marker counts only as the note's last line, where hardcost puts it; one
    inside the text copied from QuickBooks (a memo quoting another entry's) is no match."""
    from datetime import date

    client = account.add_contact("Jane Smith")
    matter = account.add_matter(client["id"], description="Estate")
    def create(note: str) -> int:
        return clio.create_entry(entry_type="HardCostEntry", on=date(2026, 2, 3),
                                 price=Decimal("125.00"), matter_id=matter["id"], note=note,
                                 reference=None, expense_category_id=None, user_id=None,
                                 vendor_id=None).id

    forged = create("see [qbo 1/501/3]\n[qbo 1/500/3]")
    create("[qbo 1/502/3] and more")

    assert clio.find_by_marker("[qbo 1/501/3]") == []
    assert clio.find_by_marker("[qbo 1/502/3]") == []
    assert [a.id for a in clio.find_by_marker("[qbo 1/500/3]")] == [forged]


def test_clio_missing_record_is_not_found(clio: ClioClient) -> None:
    with pytest.raises(NotFound):
        clio.get_activity(999999)


@pytest.mark.parametrize("region, host", [("us", "https://app.clio.com"),
                                          ("ca", "https://ca.app.clio.com"),
                                          ("eu", "https://eu.app.clio.com"),
                                          ("au", "https://au.app.clio.com")])
def test_clio_regional_hosts(region: str, host: str) -> None:
    assert Settings().clio_host(region) == host


def test_clio_base_url_overrides_the_region() -> None:
    assert Settings(CLIO_BASE_URL="http://127.0.0.1:9/").clio_host("eu") == "http://127.0.0.1:9"


def test_unknown_clio_region_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="us, ca, eu, au"):
        Settings().clio_host("mars")

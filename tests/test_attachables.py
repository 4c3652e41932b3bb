"""QuickBooks attachments (receipts): the sandbox serves Attachables as Intuit documents them
(query, read, CDC, webhooks, pre-signed ``TempDownloadUri`` that expires), and the QuickBooks
client reads them, over real HTTP."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from hardcost.sandbox.faults import Fault
from hardcost.sandbox.qbo import QboCompany, account_line
from hardcost.sandbox.qbo_files import DOWNLOAD_SECONDS
from hardcost.sandbox.world import SandboxWorld
from hardcost.sync.http import NotFound, RetryPolicy, ServiceDown, StaticTokens
from hardcost.sync.qbo import (
    ATTACHABLE,
    DownloadExpired,
    QboClient,
    attachable_refs,
    instant,
)
from hardcost.sync.webhooks import parse_delivery, signature_valid

FAST = RetryPolicy(attempts=3, backoff=0.01, max_wait=0.05, throttle_wait=0.01)


@pytest.fixture
def world() -> Iterator[SandboxWorld]:
    with SandboxWorld.start() as started:
        yield started


@pytest.fixture
def company(world: SandboxWorld) -> QboCompany:
    return world.qbo.add_company()


@pytest.fixture
def qbo(world: SandboxWorld, company: QboCompany) -> QboClient:
    token = world.qbo.issue_tokens(company.realm_id)["access_token"]
    return QboClient(base_url=world.qbo_server.url, realm_id=company.realm_id,
                     tokens=StaticTokens(token), retry=FAST)


def _purchase(company: QboCompany) -> str:
    account = company.add_account(f"Costs {len(company.purchases)}")
    return str(company.add_purchase(lines=[account_line("88.40", account["Id"])])["Id"])


def _download(qbo: QboClient, url: str) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with qbo.open_download(url) as response:
        for chunk in response.iter_content(64 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


# -- the Attachable's shape --------------------------------------------------------------------

def test_an_attached_receipt_reads_in_quickbooks_shape(company: QboCompany,
                                                       qbo: QboClient) -> None:
    purchase = _purchase(company)
    attachable_id = company.attach("Purchase", purchase, "speedy-5101.pdf", data=b"%PDF-1.4 x")

    [page] = list(qbo.attachables_since(None))

    [found] = page
    assert found["Id"] == attachable_id and len(attachable_id) == 18
    assert found["AttachableRef"] == [{"EntityRef": {"type": "Purchase", "value": purchase},
                                       "IncludeOnSend": False, "Inactive": False}]
    assert (found["FileName"], found["ContentType"], found["Size"], found["Category"]) == \
        ("speedy-5101.pdf", "application/pdf", 10, "Receipt")
    assert found["FileAccessUri"] == f"/v3/company/{company.realm_id}/download/{attachable_id}"
    assert found["TempDownloadUri"].startswith("http://127.0.0.1:")
    assert {"SyncToken", "domain", "sparse", "MetaData"} <= found.keys()
    assert instant(found["MetaData"]["LastUpdatedTime"]) is not None
    assert attachable_refs(found) == [("Purchase", purchase, False)]


def test_attachable_refs_pass_over_malformed_and_other_refs(company: QboCompany,
                                                            qbo: QboClient) -> None:
    company.put_attachable_raw({"FileName": "odd.pdf", "AttachableRef": [
        {"EntityRef": {"type": "bill", "value": "12"}, "Inactive": True},
        {"EntityRef": {"type": "Invoice", "value": "13"}},
        {"EntityRef": {"type": "Purchase", "value": "9" * 41}},
        {"EntityRef": {"type": "Purchase", "value": "1 OR 1"}},
        {"EntityRef": {"type": "Purchase"}},
        {"EntityRef": "Purchase:7"},
        "Purchase",
        {"EntityRef": {"type": "Purchase", "value": 7}, "Inactive": "true"},
    ]})
    company.put_attachable_raw({"FileName": "none.pdf", "AttachableRef": {"not": "a list"}})

    first, second = [row for page in qbo.attachables_since(None) for row in page]

    assert attachable_refs(first) == [("Bill", "12", True), ("Purchase", "7", True)]
    assert attachable_refs(second) == []


# -- query: changed since, paging ------------------------------------------------------------

def test_attachables_since_reads_only_files_changed_since(world: SandboxWorld,
                                                          company: QboCompany,
                                                          qbo: QboClient) -> None:
    purchase = _purchase(company)
    old = company.attach("Purchase", purchase, "old.pdf", size=10)
    world.clock.advance(60)
    since = world.clock.now().isoformat()
    world.clock.advance(60)
    new = company.attach("Purchase", purchase, "new.pdf", size=10)
    assert [r["Id"] for page in qbo.attachables_since(since) for r in page] == [new]

    world.clock.advance(60)
    company.set_attachment_inactive(old, "Purchase", purchase)
    changed = [r for page in qbo.attachables_since(since) for r in page]

    assert [r["Id"] for r in changed] == [new, old]  # oldest change first
    assert attachable_refs(changed[1]) == [("Purchase", purchase, True)]
    statement = world.qbo.calls.all()[-1].statement or ""
    assert "FROM Attachable WHERE MetaData.LastUpdatedTime >= " in statement


def test_attachables_page_by_1000(company: QboCompany, qbo: QboClient,
                                  world: SandboxWorld) -> None:
    purchase = _purchase(company)
    for n in range(1001):
        company.attach("Purchase", purchase, f"r{n}.png", size=1)

    pages = list(qbo.attachables_since(None))

    assert [len(p) for p in pages] == [1000, 1]
    assert len({r["Id"] for p in pages for r in p}) == 1001
    assert world.qbo.calls.count("POST", r"/query") == 2


# -- read and download ------------------------------------------------------------------------

def test_a_receipt_downloads_byte_identical_without_authorization(
        company: QboCompany, qbo: QboClient) -> None:
    bill = company.add_bill(vendor_id=company.add_vendor("Speedy")["Id"], lines=[
        account_line("12", company.add_account("Couriers")["Id"])])["Id"]
    attachable_id = company.attach("Bill", bill, "scan.jpg", size=3 * 1024 * 1024 + 5)
    found = qbo.attachable(attachable_id)
    assert found is not None

    digest, size = _download(qbo, found["TempDownloadUri"])

    assert (digest, size) == (company.attachment_sha256(attachable_id), 3 * 1024 * 1024 + 5)
    assert found["ContentType"] == "image/jpeg"
    sent_with_token = requests.get(found["TempDownloadUri"],
                                   headers={"Authorization": "Bearer anything"})
    assert sent_with_token.status_code == 400
    assert "<Code>InvalidArgument</Code>" in sent_with_token.text


def test_generated_content_is_the_same_for_the_same_file(company: QboCompany) -> None:
    purchase = _purchase(company)
    first = company.attach("Purchase", purchase, "a.pdf", size=200_000)
    second = company.attach("Purchase", purchase, "b.pdf", size=200_000)
    body = company.attachment(first)

    assert body is not None and body.sha256() == company.attachment_sha256(first)
    assert company.attachment_sha256(first) != company.attachment_sha256(second)
    assert len(body.read()) == 200_000


def test_a_download_link_expires_after_15_minutes_of_sandbox_time(
        world: SandboxWorld, company: QboCompany, qbo: QboClient) -> None:
    attachable_id = company.attach("Purchase", _purchase(company), "r.pdf", data=b"receipt")
    found = qbo.attachable(attachable_id)
    assert found is not None
    url = found["TempDownloadUri"]
    world.clock.advance(DOWNLOAD_SECONDS - 5)
    assert _download(qbo, url)[1] == 7

    world.clock.advance(10)
    with pytest.raises(DownloadExpired) as raised:
        qbo.open_download(url)
    assert raised.value.status == 403 and "Request has expired" in str(raised.value.detail)

    fresh = qbo.attachable(attachable_id)
    assert fresh is not None and _download(qbo, fresh["TempDownloadUri"])[1] == 7


def test_expire_downloads_expires_every_link_handed_out(world: SandboxWorld,
                                                        company: QboCompany,
                                                        qbo: QboClient) -> None:
    attachable_id = company.attach("Purchase", _purchase(company), "r.pdf", data=b"receipt")
    [[listed]] = list(qbo.attachables_since(None))
    world.qbo.expire_downloads()

    with pytest.raises(DownloadExpired):
        qbo.open_download(listed["TempDownloadUri"])
    fresh = qbo.attachable(attachable_id)
    assert fresh is not None and _download(qbo, fresh["TempDownloadUri"])[1] == 7


def test_a_tampered_link_is_refused(company: QboCompany, qbo: QboClient) -> None:
    attachable_id = company.attach("Purchase", _purchase(company), "r.pdf", data=b"receipt")
    found = qbo.attachable(attachable_id)
    assert found is not None
    parts = urlsplit(found["TempDownloadUri"])
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query["Expires"] = str(int(query["Expires"]) + 3600)
    forged = parts._replace(query=urlencode(query)).geturl()

    with pytest.raises(DownloadExpired) as raised:
        qbo.open_download(forged)
    assert "SignatureDoesNotMatch" in str(raised.value.detail)


def test_a_deleted_attachable_reads_as_none_and_its_link_as_not_found(
        company: QboCompany, qbo: QboClient) -> None:
    attachable_id = company.attach("Purchase", _purchase(company), "r.pdf", data=b"receipt")
    found = qbo.attachable(attachable_id)
    assert found is not None
    company.delete_attachable(attachable_id)

    assert qbo.attachable(attachable_id) is None
    assert qbo.attachable("../preferences") is None
    with pytest.raises(NotFound):
        qbo.open_download(found["TempDownloadUri"])


def test_storage_errors_are_retried_then_reported(world: SandboxWorld, company: QboCompany,
                                                  qbo: QboClient) -> None:
    attachable_id = company.attach("Purchase", _purchase(company), "r.pdf", data=b"receipt")
    found = qbo.attachable(attachable_id)
    assert found is not None
    world.qbo.faults.add(Fault(path=r"^/attachments/", status=503, body="slow down",
                               content_type="text/plain", times=1))
    assert _download(qbo, found["TempDownloadUri"])[1] == 7

    world.qbo.faults.add(Fault(path=r"^/attachments/", status=500, body="", times=3))
    with pytest.raises(ServiceDown):
        qbo.open_download(found["TempDownloadUri"])


def test_the_download_endpoint_answers_a_plain_text_link(world: SandboxWorld,
                                                         company: QboCompany) -> None:
    attachable_id = company.attach("Purchase", _purchase(company), "r.pdf", data=b"receipt")
    token = world.qbo.issue_tokens(company.realm_id)["access_token"]
    response = requests.get(
        f"{world.qbo_server.url}/v3/company/{company.realm_id}/download/{attachable_id}",
        headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 200 and response.headers["Content-Type"].startswith(
        "text/plain")
    assert requests.get(response.text).content == b"receipt"


# -- CDC and webhooks --------------------------------------------------------------------------

def test_cdc_reads_attachables_in_the_same_call(world: SandboxWorld, company: QboCompany,
                                                qbo: QboClient) -> None:
    since = world.clock.now().isoformat()
    world.clock.advance(5)
    purchase = _purchase(company)
    kept = company.attach("Purchase", purchase, "kept.pdf", data=b"k")
    gone = company.attach("Purchase", purchase, "gone.pdf", data=b"g")
    company.delete_attachable(gone)
    company.delete_purchase(purchase)
    world.qbo.calls.clear()

    sweep = qbo.purchase_removals_since(since, bills=True, attachables=True)

    [call] = world.qbo.calls.all()
    assert call.path.endswith("/cdc")
    assert parse_qs(call.query)["entities"] == ["Purchase,Bill,BillPayment,Attachable"]
    assert sweep.removed == {purchase: "deleted"}
    by_id = {a["Id"]: a for a in sweep.attachables}
    assert set(by_id) == {kept, gone}
    assert by_id[gone]["status"] == "Deleted" and "TempDownloadUri" not in by_id[gone]
    assert attachable_refs(by_id[kept]) == [("Purchase", purchase, False)]
    assert _download(qbo, by_id[kept]["TempDownloadUri"])[1] == 1

    plain = qbo.purchase_removals_since(since)
    assert plain.attachables == []
    assert "Attachable" not in world.qbo.calls.all()[-1].query


def test_the_sandbox_sends_attachable_webhooks(world: SandboxWorld,
                                               company: QboCompany) -> None:
    attachable_id = company.attach("Purchase", _purchase(company), "r.pdf", data=b"x")

    body, headers = world.qbo.webhook_notification(
        company.realm_id, [(ATTACHABLE, attachable_id, "Create")])

    assert signature_valid(world.qbo.webhook_verifier, body, headers["intuit-signature"])
    [change] = parse_delivery(body)
    assert (change.realm_id, change.entity, change.entity_id, change.operation) == \
        (company.realm_id, ATTACHABLE, attachable_id, "Create")
    assert json.loads(body)["eventNotifications"][0]["dataChangeEvent"]["entities"][0][
        "lastUpdated"].endswith("Z")


def test_linking_detaching_and_inactive_links_show_as_changes(world: SandboxWorld,
                                                              company: QboCompany,
                                                              qbo: QboClient) -> None:
    first, second = _purchase(company), _purchase(company)
    attachable_id = company.attach("Purchase", first, "r.pdf", data=b"x")
    company.link_attachable(attachable_id, "Purchase", second)
    [[both]] = list(qbo.attachables_since(None))
    assert attachable_refs(both) == [("Purchase", first, False), ("Purchase", second, False)]

    world.clock.advance(30)
    since = world.clock.now().isoformat()
    world.clock.advance(30)
    company.detach(attachable_id, "Purchase", first)
    [[changed]] = list(qbo.attachables_since(since))

    assert attachable_refs(changed) == [("Purchase", second, False)]
    assert changed["SyncToken"] == "2"

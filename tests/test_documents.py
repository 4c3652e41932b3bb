"""Clio documents (receipts filed on a matter): the sandbox Clio serves documents as Clio's
OpenAPI document describes them, with an S3-like storage that enforces a pre-signed upload's
rules, and the Clio client creates, uploads, completes and finds documents, over real HTTP."""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import io
from collections.abc import Iterator
from datetime import date
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from hardcost.sandbox.clio import ClioAccount, finish_fault, storage_fault
from hardcost.sandbox.clio_storage import PUT_URL_SECONDS
from hardcost.sandbox.world import SandboxWorld
from hardcost.sync.clio import ClioClient, Document, Upload
from hardcost.sync.clio_errors import DocumentsForbidden, UploadNotFound, UploadRefused
from hardcost.sync.http import RetryPolicy, ServiceDown, StaticTokens

FAST = RetryPolicy(attempts=3, backoff=0.01, max_wait=0.05, throttle_wait=0.01)
PROPERTY = "hardcost_receipt"


@pytest.fixture
def world() -> Iterator[SandboxWorld]:
    with SandboxWorld.start() as started:
        yield started
        assert started.clio.schema_errors == []


@pytest.fixture
def account(world: SandboxWorld) -> ClioAccount:
    return world.clio.add_account()


@pytest.fixture
def matter(account: ClioAccount) -> int:
    client = account.add_contact("Ann Client")
    return int(account.add_matter(client["id"], description="Estate")["id"])


@pytest.fixture
def clio(world: SandboxWorld, account: ClioAccount) -> ClioClient:
    token = world.clio.issue_tokens(account)["access_token"]
    return ClioClient(host=world.clio_server.url, tokens=StaticTokens(token), retry=FAST)


def _create(clio: ClioClient, matter: int, value: str = "9130:1000:7") -> Upload:
    return clio.create_document(name="2026-11-24 Speedy Couriers 88.40 – speedy-5101.pdf",
                                matter_id=matter, content_type="application/pdf",
                                received_at=date(2026, 11, 24), external={PROPERTY: value})


def _bytes(size: int) -> bytes:
    return bytes((n * 7 + n // 251) % 256 for n in range(size))


# -- the round trip ---------------------------------------------------------------------------

def test_create_put_finish_files_the_bytes_identically(world: SandboxWorld,
                                                       account: ClioAccount, matter: int,
                                                       clio: ClioClient) -> None:
    content = _bytes(3 * 1024 * 1024 + 11)
    upload = _create(clio, matter)
    assert set(upload.put_headers) == {"x-amz-server-side-encryption", "Content-Type"}
    assert upload.put_headers["Content-Type"] == "application/pdf"
    api_calls = clio.calls

    clio.put_bytes(upload, io.BytesIO(content), len(content))

    assert clio.calls == api_calls  # storage, not Clio's API: no pacing, no token
    done = clio.finish_document(upload.document_id, upload.uuid)
    assert done == Document(id=upload.document_id,
                            name="2026-11-24 Speedy Couriers 88.40 – speedy-5101.pdf",
                            matter_id=matter, fully_uploaded=True, uuid=upload.uuid,
                            size=len(content), external={PROPERTY: "9130:1000:7"})
    assert clio.document(upload.document_id) == done
    [filed] = account.documents_of(matter)
    assert filed["sha256"] == hashlib.sha256(content).hexdigest()
    assert (filed["size"], filed["fully_uploaded"], filed["versions"]) == (len(content), True, 1)
    assert filed["received_at"].startswith("2026-11-24")
    assert world.clio.calls.count("PUT", r"^/storage/") == 1


def test_put_bytes_reads_only_length_bytes_of_the_file(account: ClioAccount, matter: int,
                                                       clio: ClioClient) -> None:
    upload = _create(clio, matter)
    source = io.BytesIO(b"receipt" + b"-and-more-after-it")

    clio.put_bytes(upload, source, 7)

    clio.finish_document(upload.document_id, upload.uuid)
    assert account.documents_of(matter)[0]["data"] == b"receipt"
    with pytest.raises(ValueError):
        clio.put_bytes(_create(clio, matter, "other"), io.BytesIO(b"short"), 10)


def test_an_empty_file_uploads(account: ClioAccount, matter: int, clio: ClioClient) -> None:
    upload = _create(clio, matter)
    clio.put_bytes(upload, io.BytesIO(b""), 0)
    assert clio.finish_document(upload.document_id, upload.uuid).size == 0


# -- finding documents by external property -----------------------------------------------------

def test_find_documents_by_external_property_shows_uncompleted_ones(
        world: SandboxWorld, account: ClioAccount, matter: int, clio: ClioClient) -> None:
    finished = _create(clio, matter, "r:1:7")
    clio.put_bytes(finished, io.BytesIO(b"one"), 3)
    clio.finish_document(finished.document_id, finished.uuid)
    half = _create(clio, matter, "r:2:7")
    _create(clio, matter, "r:3:7")

    [found] = clio.find_documents(name=PROPERTY, value="r:2:7")

    assert (found.id, found.fully_uploaded, found.uuid) == (half.document_id, False, half.uuid)
    assert [d.id for d in clio.find_documents(name=PROPERTY, value="r:1:7")] == \
        [finished.document_id]
    assert clio.find_documents(name=PROPERTY, value="r:9:7") == []
    assert clio.find_documents(name="other_property", value="r:1:7") == []
    call = world.clio.calls.all()[-1]
    assert "show_uncompleted=true" in call.query
    token = world.clio.issue_tokens(account)["access_token"]
    listed = requests.get(f"{world.clio_server.url}/api/v4/documents.json",
                          params={"matter_id": matter, "fields": "id"},
                          headers={"Authorization": f"Bearer {token}"})
    assert [d["id"] for d in listed.json()["data"]] == [finished.document_id]


# -- finishing ---------------------------------------------------------------------------------

def test_finishing_without_the_bytes_is_upload_not_found(account: ClioAccount, matter: int,
                                                         clio: ClioClient) -> None:
    upload = _create(clio, matter)

    with pytest.raises(UploadNotFound) as raised:
        clio.finish_document(upload.document_id, upload.uuid)

    assert raised.value.code == "UploadNotFoundError" and raised.value.status == 422
    assert account.documents_of(matter)[0]["fully_uploaded"] is False


def test_finishing_twice_returns_the_finished_document(matter: int, clio: ClioClient) -> None:
    upload = _create(clio, matter)
    clio.put_bytes(upload, io.BytesIO(b"x"), 1)
    first = clio.finish_document(upload.document_id, upload.uuid)

    assert clio.finish_document(upload.document_id, upload.uuid) == first


def test_a_lost_finish_answer_is_retried_and_still_returns_the_document(
        world: SandboxWorld, account: ClioAccount, matter: int, clio: ClioClient) -> None:
    upload = _create(clio, matter)
    clio.put_bytes(upload, io.BytesIO(b"x"), 1)
    world.clio.faults.add(finish_fault(502, after_handler=True))

    done = clio.finish_document(upload.document_id, upload.uuid)

    assert done.fully_uploaded and done.uuid == upload.uuid
    assert world.clio.calls.count("PATCH", r"/documents/") == 2
    assert len(account.documents_of(matter)) == 1


def test_a_half_finished_document_gets_a_new_version(account: ClioAccount, matter: int,
                                                     clio: ClioClient) -> None:
    first = _create(clio, matter)  # crashed before its PUT
    again = clio.new_version(first.document_id, name="speedy-5101.pdf",
                             content_type="application/pdf")
    assert again.document_id == first.document_id and again.uuid != first.uuid

    clio.put_bytes(again, io.BytesIO(b"receipt"), 7)
    done = clio.finish_document(again.document_id, again.uuid)

    assert (done.fully_uploaded, done.uuid, done.size) == (True, again.uuid, 7)
    [filed] = account.documents_of(matter)
    assert (filed["versions"], filed["data"]) == (2, b"receipt")
    assert clio.find_documents(name=PROPERTY, value="9130:1000:7") == [done]


# -- the storage's rules -----------------------------------------------------------------------

def _raw_put(upload: Upload, headers: dict[str, str], body: bytes | None = b"abc"
             ) -> tuple[int, str]:
    """A PUT sent by hand (so a header can be left out that requests always adds)."""
    parts = urlsplit(upload.put_url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=10)
    connection.putrequest("PUT", f"{parts.path}?{parts.query}", skip_accept_encoding=True)
    for name, value in headers.items():
        connection.putheader(name, value)
    connection.endheaders(body)
    response = connection.getresponse()
    text = response.read().decode()
    connection.close()
    return response.status, text


def test_the_storage_refuses_what_s3_refuses(world: SandboxWorld, matter: int,
                                             clio: ClioClient) -> None:
    upload = _create(clio, matter)
    good = {**upload.put_headers, "Content-Length": "3"}

    cases: dict[str, tuple[int, str]] = {
        "no length": _raw_put(upload, dict(upload.put_headers), None),
        "chunked": _raw_put(upload, {**upload.put_headers, "Transfer-Encoding": "chunked"},
                            b"3\r\nabc\r\n0\r\n\r\n"),
        "authorization": _raw_put(upload, {**good, "Authorization": "Bearer x"}),
        "content type": _raw_put(upload, {**good, "Content-Type": "image/png"}),
        "no encryption": _raw_put(upload, {k: v for k, v in good.items()
                                           if k != "x-amz-server-side-encryption"}),
        "unsigned amz": _raw_put(upload, {**good, "x-amz-meta-note": "hi"}),
        "bad signature": _raw_put(dataclasses.replace(upload, put_url=upload.put_url.replace(
            "X-Amz-Signature=", "X-Amz-Signature=0")), good),
    }

    assert {case: status for case, (status, _) in cases.items()} == {
        "no length": 411, "chunked": 501, "authorization": 400, "content type": 403,
        "no encryption": 403, "unsigned amz": 403, "bad signature": 403}
    assert "<Code>MissingContentLength</Code>" in cases["no length"][1]
    assert "<Code>NotImplemented</Code>" in cases["chunked"][1]
    assert "<Code>InvalidArgument</Code>" in cases["authorization"][1]
    assert "<Code>SignatureDoesNotMatch</Code>" in cases["content type"][1]
    assert "<Code>AccessDenied</Code>" in cases["unsigned amz"][1]
    assert world.clio.accounts and _raw_put(upload, good)[0] == 200


def test_a_put_url_expires_after_10_minutes_of_sandbox_time(world: SandboxWorld, matter: int,
                                                            clio: ClioClient) -> None:
    upload = _create(clio, matter)
    world.clock.advance(PUT_URL_SECONDS - 5)
    clio.put_bytes(upload, io.BytesIO(b"ok"), 2)
    world.clock.advance(10)

    with pytest.raises(UploadRefused) as raised:
        clio.put_bytes(upload, io.BytesIO(b"late"), 4)

    assert (raised.value.status, raised.value.code) == (403, "AccessDenied")
    assert "expired" in str(raised.value.detail)


def test_storage_faults(world: SandboxWorld, account: ClioAccount, matter: int,
                        clio: ClioClient) -> None:
    upload = _create(clio, matter)
    world.clio.faults.add(storage_fault(500))
    with pytest.raises(ServiceDown):
        clio.put_bytes(upload, io.BytesIO(b"abc"), 3)
    assert account.documents_of(matter)[0]["sha256"] is None

    world.clio.faults.add(storage_fault(503, after_handler=True))
    with pytest.raises(ServiceDown):
        clio.put_bytes(upload, io.BytesIO(b"abc"), 3)
    assert clio.finish_document(upload.document_id, upload.uuid).size == 3


# -- permission --------------------------------------------------------------------------------

def test_an_account_without_the_documents_permission(account: ClioAccount, matter: int,
                                                     clio: ClioClient) -> None:
    account.refuse_documents()

    with pytest.raises(DocumentsForbidden) as raised:
        _create(clio, matter)
    assert raised.value.status == 403
    with pytest.raises(DocumentsForbidden):
        clio.find_documents(name=PROPERTY, value="x")
    assert clio.open_matters() != []  # only documents are refused

    account.refuse_documents(False)
    assert _create(clio, matter).document_id > 0


def test_documents_requests_are_checked_against_clios_document(world: SandboxWorld,
                                                               account: ClioAccount,
                                                               matter: int) -> None:
    token = world.clio.issue_tokens(account)["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{world.clio_server.url}/api/v4/documents.json"
    bad: list[dict[str, Any]] = [
        {"data": {"name": "x.pdf"}},  # no parent
        {"data": {"name": "x.pdf", "parent": {"id": matter, "type": "Bill"}}},
        {"data": {"name": "x.pdf", "parent": {"id": matter, "type": "Matter"},
                  "external_properties": "hardcost"}},
    ]
    statuses = [requests.post(url, json=body, headers=headers).status_code for body in bad]
    too_many = requests.post(url, headers=headers, json={"data": {
        "name": "x.pdf", "parent": {"id": matter, "type": "Matter"},
        "external_properties": [{"name": f"p{n}", "value": "v"} for n in range(6)]}})

    assert statuses == [400, 400, 400]
    assert too_many.status_code == 422
    assert len(world.clio.schema_errors) == 3
    world.clio.schema_errors.clear()

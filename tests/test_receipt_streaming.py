"""A 200 MB receipt goes from QuickBooks' download link to Clio's storage as a stream: the
process (here the client and both sandboxes) never holds the file, over real HTTP."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import pytest

from hardcost.sandbox.qbo import account_line
from hardcost.sandbox.world import SandboxWorld
from hardcost.sync.clio import ClioClient
from hardcost.sync.http import StaticTokens
from hardcost.sync.qbo import QboClient
from tests.memkit import MB, RssSampler

SIZE = 200 * MB


@pytest.fixture
def world() -> Iterator[SandboxWorld]:
    with SandboxWorld.start() as started:
        yield started


def test_a_200_mb_receipt_streams_from_download_to_upload_in_under_20_mb(
        world: SandboxWorld) -> None:
    company = world.qbo.add_company()
    purchase = company.add_purchase(lines=[account_line("12", company.add_account("C")["Id"])])
    attachable_id = company.attach("Purchase", purchase["Id"], "scan.pdf", size=SIZE)
    account = world.clio.add_account()
    matter = account.add_matter(account.add_contact("Ann")["id"], description="Estate")["id"]
    qbo = QboClient(base_url=world.qbo_server.url, realm_id=company.realm_id,
                    tokens=StaticTokens(world.qbo.issue_tokens(company.realm_id)["access_token"]))
    clio = ClioClient(host=world.clio_server.url,
                      tokens=StaticTokens(world.clio.issue_tokens(account)["access_token"]))
    found = qbo.attachable(attachable_id)
    assert found is not None
    upload = clio.create_document(name="scan.pdf", matter_id=matter,
                                  content_type=found["ContentType"], received_at=None,
                                  external={"hardcost_receipt": f"r:{attachable_id}:{matter}"})

    with RssSampler() as rss, qbo.open_download(found["TempDownloadUri"]) as response:
        clio.put_bytes(upload, response.raw, int(response.headers["Content-Length"]))

    done = clio.finish_document(upload.document_id, upload.uuid)
    [filed] = account.documents_of(matter)
    assert (done.size, filed["sha256"]) == (SIZE, company.attachment_sha256(attachable_id))
    assert filed["data"] is None  # too big for the sandbox to keep
    assert rss.samples > 10
    assert rss.growth < 20 * MB, f"RSS grew {rss.growth / MB:.1f} MB"


def test_a_download_spooled_to_a_temporary_file_uploads_identically(
        world: SandboxWorld) -> None:
    company = world.qbo.add_company()
    purchase = company.add_purchase(lines=[account_line("12", company.add_account("C")["Id"])])
    attachable_id = company.attach("Purchase", purchase["Id"], "scan.pdf", size=9 * MB + 3)
    account = world.clio.add_account()
    matter = account.add_matter(account.add_contact("Ann")["id"], description="Estate")["id"]
    qbo = QboClient(base_url=world.qbo_server.url, realm_id=company.realm_id,
                    tokens=StaticTokens(world.qbo.issue_tokens(company.realm_id)["access_token"]))
    clio = ClioClient(host=world.clio_server.url,
                      tokens=StaticTokens(world.clio.issue_tokens(account)["access_token"]))
    found = qbo.attachable(attachable_id)
    assert found is not None

    with tempfile.SpooledTemporaryFile(max_size=4 * MB) as spool:
        with qbo.open_download(found["TempDownloadUri"]) as response:
            for chunk in response.iter_content(64 * 1024):
                spool.write(chunk)
        length = spool.tell()
        spool.seek(0)
        upload = clio.create_document(name="scan.pdf", matter_id=matter,
                                      content_type="application/pdf", received_at=None,
                                      external={})
        clio.put_bytes(upload, spool, length)
    clio.finish_document(upload.document_id, upload.uuid)

    [filed] = account.documents_of(matter)
    assert (filed["size"], filed["sha256"]) == (9 * MB + 3,
                                                company.attachment_sha256(attachable_id))

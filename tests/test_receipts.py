"""Receipts follow the cost (issue 28): files attached in QuickBooks are filed, once, in the
documents of the matters their entries went to — end to end over real HTTP against the sandbox
QuickBooks (Attachables, expiring download links) and the sandbox Clio (documents, S3-like
storage). The database is SQLite or PostgreSQL (``HARDCOST_TEST_DATABASE_URL``)."""

from __future__ import annotations

import dataclasses
import io
import signal
import time
from datetime import timedelta
from typing import Any
from urllib.parse import unquote_plus

import pytest
import requests
from sqlalchemy import select, update

from hardcost.sandbox.faults import Fault
from hardcost.sandbox.qbo import account_line
from hardcost.sandbox.slack_rig import SlackRig
from hardcost.sync import audit, choices
from hardcost.sync.receipts import EXTERNAL_NAME, RECEIPTS_STREAM, external_value
from hardcost.sync.store import (
    AuditEntry,
    ReceiptFile,
    ReceiptLink,
    ReceiptState,
    Watermark,
)
from hardcost.sync.store import Firm as FirmRow
from tests import crashkit
from tests.firmkit import Firm, lapse_leases, not_due

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 300 + b"\n%%EOF\n"


def _courier(firm: Firm, matters: list[str] | None = None) -> dict[str, Any]:
    firm.client("Jane Smith", matters or ["Smith estate"])
    vendor = firm.qbo.add_vendor("Speedy Couriers")
    return firm.expense(("88.40", "Jane Smith", "Courier"), txn_date="2026-02-03",
                        entity=(vendor["Id"], "Vendor"))


def _links(firm: Firm) -> list[ReceiptLink]:
    with firm.sessions() as session:
        return list(session.scalars(select(ReceiptLink).where(
            ReceiptLink.firm_id == firm.id).order_by(ReceiptLink.id)))


def _trail(firm: Firm, action: audit.Action) -> list[AuditEntry]:
    with firm.sessions() as session:
        return list(session.scalars(select(AuditEntry).where(
            AuditEntry.firm_id == firm.id, AuditEntry.action == action.value)))


def _state(firm: Firm) -> str | None:
    with firm.sessions() as session:
        return session.scalars(select(Watermark.value).where(
            Watermark.firm_id == firm.id, Watermark.stream == RECEIPTS_STREAM)).one_or_none()


def test_a_purchases_receipt_is_filed_byte_identical_on_its_matter_once(firm: Firm) -> None:
    purchase = _courier(firm)
    attachable = firm.qbo.attach("Purchase", purchase["Id"], "speedy-5101.pdf", data=PDF)

    firm.world.clio.calls.clear()
    summary = firm.run()

    assert summary.imported == 1 and summary.receipts_filed == 1
    assert summary.receipt_bytes == len(PDF)
    # two Clio API calls for a receipt filed the first time (create, finish) and the storage
    # PUT: no look-up by external property, since no earlier attempt can have left a document
    assert firm.world.clio.calls.count("POST", r"/documents\.json$") == 1
    assert firm.world.clio.calls.count("PATCH", r"/documents/\d+\.json$") == 1
    assert firm.world.clio.calls.count("GET", r"/documents\.json$") == 0
    assert firm.world.clio.calls.count("PUT", r"^/storage/") == 1
    [document] = firm.clio.documents_of(firm.matters["Smith estate"])
    assert document["fully_uploaded"] is True
    assert document["sha256"] == firm.qbo.attachment_sha256(attachable)
    assert document["size"] == len(PDF)
    assert document["name"] == "2026-02-03 Speedy Couriers 88.40 – speedy-5101.pdf"
    assert str(document["received_at"]).startswith("2026-02-03")
    assert document["external"] == {EXTERNAL_NAME: external_value(
        firm.qbo.realm_id, attachable, firm.matters["Smith estate"])}
    [link] = _links(firm)
    assert link.state == ReceiptState.CREATED.value and link.clio_document_id == document["id"]
    [filed] = _trail(firm, audit.Action.RECEIPT_FILED)
    assert filed.purchase_id == purchase["Id"] and str(document["id"]) in (filed.detail or "")
    assert _state(firm) == "live"
    details = _run_details(firm, summary.run_id)
    assert details["receipts"] == {"filed": 1, "bytes": len(PDF), "failed": 0}

    # a second run files nothing again
    firm.later()
    again = firm.run()
    assert again.receipts_filed == 0
    assert len(firm.clio.documents_of(firm.matters["Smith estate"])) == 1


def _run_details(firm: Firm, run_id: int | None) -> dict[str, Any]:
    from hardcost.sync.store import Run

    with firm.sessions() as session:
        run = session.get(Run, run_id)
        assert run is not None
        return dict(run.details)


def test_a_file_attached_after_the_import_is_filed_by_the_next_run_through_cdc(
        firm: Firm) -> None:
    purchase = _courier(firm)
    firm.run()
    assert firm.clio.documents_of(firm.matters["Smith estate"]) == []
    firm.later()
    attachable = firm.qbo.attach("Purchase", purchase["Id"], "late.pdf", data=b"late receipt")
    firm.world.qbo.calls.clear()

    summary = firm.run()

    assert summary.receipts_filed == 1
    [document] = firm.clio.documents_of(firm.matters["Smith estate"])
    assert document["sha256"] == firm.qbo.attachment_sha256(attachable)
    # read through the run's CDC call, not a query of Attachables
    assert not [c for c in firm.world.qbo.calls.all() if c.path.endswith("/query")
                and "attachable" in unquote_plus((c.statement or "") + c.query).lower()]
    assert any("Attachable" in (c.query or "") for c in firm.world.qbo.calls.all()
               if "/cdc" in c.path)


def test_a_multi_matter_clients_receipt_goes_to_the_matter_the_person_chose(
        firm: Firm) -> None:
    purchase = _courier(firm, ["Smith estate", "Smith divorce"])
    attachable = firm.qbo.attach("Purchase", purchase["Id"], "r.pdf", data=PDF)
    summary = firm.run()
    assert summary.waiting == 1 and summary.receipts_filed == 0
    [waiting] = firm.waiting()

    result = choices.choose_matter(firm.engine, waiting.id, firm.matters["Smith divorce"],
                                   "U0PERSON")

    assert result.outcome == "linked"
    [document] = firm.clio.documents_of(firm.matters["Smith divorce"])
    assert document["sha256"] == firm.qbo.attachment_sha256(attachable)
    assert firm.clio.documents_of(firm.matters["Smith estate"]) == []
    [filed] = _trail(firm, audit.Action.RECEIPT_FILED)
    assert filed.actor == "U0PERSON"
    firm.later()
    assert firm.run().receipts_filed == 0  # the next run files nothing more


def test_an_expired_download_link_is_renewed_by_reading_the_attachable_again(
        firm: Firm) -> None:
    purchase = _courier(firm)
    attachable = firm.qbo.attach("Purchase", purchase["Id"], "r.pdf", data=PDF)
    expired = (b"<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code>"
               b"<Message>Request has expired</Message></Error>")
    firm.world.qbo.faults.add(Fault(path=r"^/attachments/", method="GET", status=403,
                                    body=expired, content_type="application/xml"))

    summary = firm.run()

    assert summary.receipts_filed == 1 and firm.open_failures() == []
    [document] = firm.clio.documents_of(firm.matters["Smith estate"])
    assert document["sha256"] == firm.qbo.attachment_sha256(attachable)
    assert firm.world.qbo.calls.count("GET", rf"/attachable/{attachable}$") == 2


def test_receipts_off_files_nothing_and_turning_them_on_files_those_imported_before(
        firm: Firm) -> None:
    firm.update_settings(receipts=False)
    purchase = _courier(firm)
    attachable = firm.qbo.attach("Purchase", purchase["Id"], "r.pdf", data=PDF)

    summary = firm.run()

    assert summary.imported == 1 and summary.receipts_filed == 0
    assert firm.clio.documents_of(firm.matters["Smith estate"]) == []
    assert _state(firm) == "off"
    firm.later()
    assert firm.run().receipts_filed == 0

    firm.later()
    firm.update_settings(receipts=True)
    turned_on = firm.run()
    assert turned_on.receipts_filed == 1 and turned_on.imported == 0
    [document] = firm.clio.documents_of(firm.matters["Smith estate"])
    assert document["sha256"] == firm.qbo.attachment_sha256(attachable)
    assert _state(firm) == "live"


def test_a_failure_is_recorded_and_the_expense_still_created_then_retried(
        firm: Firm) -> None:
    purchase = _courier(firm)
    firm.qbo.attach("Purchase", purchase["Id"], "r.pdf", data=PDF)
    firm.clio.refuse_documents()

    summary = firm.run()

    assert summary.imported == 1 and len(firm.entries()) == 1 and summary.error is None
    assert summary.receipts_filed == 0 and summary.receipts_failed == 1
    [failure] = firm.open_failures()
    assert failure.code == "receipt_documents_forbidden" and failure.kind == "config"
    assert "documents permission" in failure.message
    [link] = _links(firm)
    assert link.state == ReceiptState.FAILED.value

    firm.clio.refuse_documents(False)
    firm.later()
    retried = firm.run()
    assert retried.receipts_filed == 1 and firm.open_failures() == []
    assert len(firm.clio.documents_of(firm.matters["Smith estate"])) == 1
    assert len(firm.entries()) == 1


def _pending_after_a_refusal(firm: Firm) -> tuple[str, int]:
    """A purchase imported with its receipt refused (the link failed), then the link put
    back to pending, as a process killed mid-upload leaves it."""
    purchase = _courier(firm)
    attachable = firm.qbo.attach("Purchase", purchase["Id"], "r.pdf", data=PDF)
    firm.clio.refuse_documents()
    firm.run()
    firm.clio.refuse_documents(False)
    with firm.sessions() as session:
        session.execute(update(ReceiptLink).values(state=ReceiptState.PENDING.value))
        session.commit()
    return attachable, firm.matters["Smith estate"]


def test_a_pending_receipt_whose_document_exists_in_clio_is_settled_not_uploaded_again(
        firm: Firm) -> None:
    attachable, matter = _pending_after_a_refusal(firm)
    clio = firm.engine.clio
    upload = clio.create_document(
        name="filed before the crash", matter_id=matter, content_type="application/pdf",
        received_at=None, external={EXTERNAL_NAME: external_value(
            firm.qbo.realm_id, attachable, matter)})
    clio.put_bytes(upload, io.BytesIO(PDF), len(PDF))
    finished = clio.finish_document(upload.document_id, upload.uuid)
    puts_before = firm.world.clio.calls.count("PUT", r"^/storage/")

    firm.later()
    summary = firm.run()

    assert summary.receipts_filed == 1
    assert firm.world.clio.calls.count("PUT", r"^/storage/") == puts_before
    [document] = firm.clio.documents_of(matter)
    assert document["id"] == finished.id
    [link] = _links(firm)
    assert link.state == ReceiptState.CREATED.value and link.clio_document_id == finished.id


def test_a_half_finished_document_is_completed_not_doubled(firm: Firm) -> None:
    attachable, matter = _pending_after_a_refusal(firm)
    firm.engine.clio.create_document(
        name="created, never uploaded", matter_id=matter, content_type="application/pdf",
        received_at=None, external={EXTERNAL_NAME: external_value(
            firm.qbo.realm_id, attachable, matter)})

    firm.later()
    summary = firm.run()

    assert summary.receipts_filed == 1
    [document] = firm.clio.documents_of(matter)
    assert document["fully_uploaded"] is True
    assert document["sha256"] == firm.qbo.attachment_sha256(attachable)


def test_a_file_removed_in_quickbooks_stays_in_clio_and_the_trail_says_so(firm: Firm) -> None:
    purchase = _courier(firm)
    attachable = firm.qbo.attach("Purchase", purchase["Id"], "r.pdf", data=PDF)
    firm.run()
    firm.later()
    firm.qbo.delete_attachable(attachable)

    firm.run()

    assert len(firm.clio.documents_of(firm.matters["Smith estate"])) == 1
    [kept] = _trail(firm, audit.Action.RECEIPT_KEPT)
    assert "stays" in (kept.detail or "")
    with firm.sessions() as session:
        [row] = session.scalars(select(ReceiptFile).where(ReceiptFile.firm_id == firm.id))
        assert row.removed is True


def test_a_file_over_the_limit_is_skipped_with_a_reason(firm: Firm,
                                                        monkeypatch: Any) -> None:
    from hardcost.sync import receipts

    monkeypatch.setattr(receipts, "MAX_BYTES", 1000)
    purchase = _courier(firm)
    firm.qbo.attach("Purchase", purchase["Id"], "huge.pdf", size=5000)

    summary = firm.run()

    assert summary.imported == 1 and summary.receipts_filed == 0
    assert firm.clio.documents_of(firm.matters["Smith estate"]) == []
    [link] = _links(firm)
    assert link.state == ReceiptState.SKIPPED.value and "huge.pdf" in (link.reason or "")
    [skipped] = summary.receipts_skipped
    assert skipped.purchase_id == purchase["Id"] and skipped.file_name == "huge.pdf"
    assert "by hand" in skipped.reason
    assert summary.details()["receipts"]["skipped"] == [
        {"purchase_id": purchase["Id"], "file": "huge.pdf", "reason": skipped.reason}]
    [noted] = _trail(firm, audit.Action.RECEIPT_SKIPPED)
    assert noted.detail == skipped.reason and noted.clio_matter_id == firm.matters["Smith estate"]

    from hardcost.sync.report import render_summary

    printed = render_summary(summary)  # what `hardcost sync` prints
    assert "receipts: 0 filed in Clio (0 bytes), 0 failed, 1 to add by hand" in printed
    assert f"  purchase {purchase['Id']}: huge.pdf is 0 MB, over the 0 MB hardcost files" \
        in printed

    again = firm.run()  # said once: a skipped file is not tried, nor reported, again
    assert again.receipts_skipped == [] and len(_trail(firm, audit.Action.RECEIPT_SKIPPED)) == 1


# -- SIGKILL mid-filing: exactly one complete document after a rerun ---------------------------

DOCUMENTS_POST = r"^/api/v4/documents\.json$"
DOCUMENT_PATCH = r"^/api/v4/documents/\d+\.json$"
KILL_MOMENTS = {
    "before the upload": Fault(path=DOCUMENTS_POST, method="POST", passthrough=True, delay=60),
    "between the PUT and the PATCH": Fault(path=DOCUMENT_PATCH, method="PATCH",
                                           passthrough=True, delay=60),
    "after the PATCH": Fault(path=DOCUMENT_PATCH, method="PATCH", passthrough=True,
                             delay_after=60),
}


@pytest.mark.parametrize("moment", sorted(KILL_MOMENTS))
def test_a_serve_killed_while_filing_ends_with_exactly_one_complete_document(
        firm: Firm, database_url: str, serve_slack: tuple[str, str], moment: str) -> None:
    with firm.sessions() as session:
        row = session.get(FirmRow, firm.id)
        assert row is not None
        row.slack_team_id = "T0001"
        session.commit()
    purchase = _courier(firm)
    attachable = firm.qbo.attach("Purchase", purchase["Id"], "r.pdf", data=PDF)
    matter = firm.matters["Smith estate"]
    firm.world.clio.faults.add(dataclasses.replace(KILL_MOMENTS[moment]))
    not_due(firm)  # only /hardcost run files here

    proc, base = crashkit.serve(firm, database_url, serve_slack)
    try:
        assert crashkit.run_command(base).status_code == 200
        crashkit.wait(lambda: firm.world.clio.faults.pending() == 0, "the call to be held")
        if moment == "after the PATCH":
            crashkit.wait(lambda: [d["fully_uploaded"] for d in firm.clio.documents_of(matter)]
                          == [True], "Clio to complete the document")
        time.sleep(0.2)
        assert [link.state for link in _links(firm)] == [ReceiptState.PENDING.value]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    lapse_leases(firm)
    firm.world.clio.faults.clear()

    proc, base = crashkit.serve(firm, database_url, serve_slack)  # restarted
    try:
        assert crashkit.run_command(base).status_code == 200
        crashkit.wait(lambda: [link.state for link in _links(firm)]
                      == [ReceiptState.CREATED.value], "the receipt filed")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)

    complete = [d for d in firm.clio.documents_of(matter) if d["fully_uploaded"]]
    assert len(complete) == 1
    assert complete[0]["sha256"] == firm.qbo.attachment_sha256(attachable)
    [link] = _links(firm)
    assert link.clio_document_id == complete[0]["id"]
    assert len(firm.entries()) == 1


def test_an_attachable_webhook_brings_the_firms_next_run_forward(rig: SlackRig) -> None:
    from hardcost.sync.leases import run_soon
    from hardcost.sync.store import RunLease, WebhookEvent

    firm = rig.firm
    later = rig.ctx.clock() + timedelta(hours=6)
    with firm.sessions() as session:
        run_soon(session, firm.id, later)  # not due for hours
        session.commit()
    body, headers = firm.world.qbo.webhook_notification(
        firm.qbo.realm_id, [("Attachable", "5001", "Create")])

    answer = requests.post(rig.web.url + "/webhooks/quickbooks", data=body,
                           headers=headers, timeout=10)

    assert answer.status_code == 200
    with firm.sessions() as session:
        lease = session.get(RunLease, firm.id)
        assert lease is not None and lease.next_run_at < later
        assert list(session.scalars(select(WebhookEvent))) == []  # no event: a run reads it


def test_an_entry_moved_to_another_matter_by_an_edit_gets_its_receipt_there_too(
        firm: Firm) -> None:
    purchase = _courier(firm)
    attachable = firm.qbo.attach("Purchase", purchase["Id"], "r.pdf", data=PDF)
    firm.run()
    firm.client("Bob Brown", ["Brown contract"])
    firm.later()
    firm.qbo.update_purchase(str(purchase["Id"]), lines=[account_line(
        "88.40", firm.import_account, customer_id=firm.customers["Bob Brown"])])

    summary = firm.run()

    assert summary.receipts_filed == 1
    [moved] = firm.clio.documents_of(firm.matters["Brown contract"])
    assert moved["sha256"] == firm.qbo.attachment_sha256(attachable)
    # the first matter's copy is never deleted
    assert len(firm.clio.documents_of(firm.matters["Smith estate"])) == 1
    firm.later()
    assert firm.run().receipts_filed == 0


def test_the_command_line_shows_a_skipped_receipts_outside_name_on_one_safe_line() -> None:
    from datetime import UTC, datetime

    from hardcost.sync.report import render_summary
    from hardcost.sync.summary import RunSummary, SkippedReceipt

    summary = RunSummary(firm_id=1, run_id=7, dry_run=False,
                         started_at=datetime(2026, 3, 2, tzinfo=UTC))
    summary.receipts_skipped.append(SkippedReceipt(
        "77", "x\x1b[2J.pdf", "x\x1b[2J\n.pdf is 300 MB, over the 250 MB hardcost files."))

    printed = render_summary(summary)

    assert "\x1b" not in printed
    assert "  purchase 77: x?[2J?.pdf is 300 MB, over the 250 MB hardcost files." in printed

"""Receipts filed by a real ``hardcost serve`` process (issue 28): a 200 MB file goes from
QuickBooks' download link to Clio's storage with serve's resident memory growing less than
20 MB, sampled from ``/proc`` while the run files it.

``/hardcost run`` is sent to serve as a signed slash command (tests/crashkit.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select

from hardcost.sync.store import Firm as FirmRow
from hardcost.sync.store import ReceiptLink, ReceiptState, Run
from tests.crashkit import SECRET, run_command, wait
from tests.firmkit import Firm, free_port, not_due, serve_env, wait_answering
from tests.memkit import MB, RssSampler

BIG = 200 * MB
STORAGE_PUT = r"^/storage/"
PATCH = r"^/api/v4/documents/\d+\.json$"


@contextmanager
def serve(firm: Firm, database_url: str, slack: tuple[str, str]
          ) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``hardcost serve`` in a process of its own for ``firm``; (the process, its URL), with
    the production size limit (``receipts.MAX_BYTES``, 250 MB)."""
    token, url = slack
    port = free_port()
    env = serve_env(firm.world, database_url, bot_token=token, slack_url=url, port=port,
                    signing_secret=SECRET)
    code = "import sys\nfrom hardcost.cli import main\nsys.exit(main(['serve']))\n"
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, text=True,
                                stdout=subprocess.DEVNULL, stderr=log)
        try:
            wait_answering(f"http://127.0.0.1:{port}/healthz", proc, "hardcost serve")
            yield proc, f"http://127.0.0.1:{port}"
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


def _ready(firm: Firm) -> None:
    with firm.sessions() as session:
        row = session.get(FirmRow, firm.id)
        assert row is not None
        row.slack_team_id = "T0001"
        session.commit()
    not_due(firm)  # only /hardcost run imports here


def _runs_done(firm: Firm) -> int:
    with firm.sessions() as session:
        return sum(1 for status in session.scalars(select(Run.status).where(
            Run.firm_id == firm.id)) if status != "running")


def _run(base: str, firm: Firm, timeout: float = 60.0) -> None:
    """``/hardcost run`` and wait until the run has finished."""
    before = _runs_done(firm)
    answer = run_command(base)
    assert answer.status_code == 200, (answer.status_code, answer.text[:200])
    wait(lambda: _runs_done(firm) > before, "the run to finish", timeout=timeout)


def _links(firm: Firm) -> list[ReceiptLink]:
    with firm.sessions() as session:
        return list(session.scalars(select(ReceiptLink).where(ReceiptLink.firm_id == firm.id)))


def _courier(firm: Firm) -> dict[str, Any]:
    firm.client("Jane Smith", ["Smith estate"])
    vendor = firm.qbo.add_vendor("Speedy Couriers")
    return firm.expense(("88.40", "Jane Smith", "Courier"), txn_date="2026-02-03",
                        entity=(vendor["Id"], "Vendor"))


def test_serve_files_a_200_mb_receipt_with_its_rss_growing_less_than_20_mb(
        firm: Firm, database_url: str, serve_slack: tuple[str, str]) -> None:
    purchase = _courier(firm)
    matter = firm.matters["Smith estate"]
    _ready(firm)
    with serve(firm, database_url, serve_slack) as (proc, base):
        _run(base, firm)  # the entry, and the code paths of a run, before the measure
        assert len(firm.entries()) == 1
        firm.later()
        attachable = firm.qbo.attach("Purchase", purchase["Id"], "scan.pdf", size=BIG)

        with RssSampler(proc.pid, interval=0.01) as rss:
            _run(base, firm, timeout=180)

    [document] = firm.clio.documents_of(matter)
    assert document["fully_uploaded"] is True
    assert (document["size"], document["sha256"]) == (BIG, firm.qbo.attachment_sha256(attachable))
    [link] = _links(firm)
    assert link.state == ReceiptState.CREATED.value and link.bytes == BIG
    assert rss.samples > 20
    assert rss.growth < 20 * MB, f"serve's RSS grew {rss.growth / MB:.1f} MB"

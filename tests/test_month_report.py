"""The monthly hard-cost report (docs/reports.md), over real HTTP on the sandboxes: figures read
from the sandbox Clio after entries were put on draft and issued bills there."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from hardcost.sync import month_report
from hardcost.sync.month_report import Month
from tests.firmkit import Firm
from tests.reportkit import march_firm

D = Decimal
TODAY = date(2026, 4, 6)  # the report's "now": days unbilled count to here


def _build(firm: Firm, month: Month = Month(2026, 3)) -> month_report.MonthReport:
    return month_report.build(firm.sessions, firm.id, month, clio=firm.engine.clio,
                              qbo=firm.engine.qbo, today=TODAY)


def test_the_months_totals_to_the_cent_as_clio_has_them_now(firm: Firm) -> None:
    march_firm(firm)

    report = _build(firm)

    assert firm.world.clio.schema_errors == []
    assert report.split.count == 5
    assert report.split.total == D("485.74")
    assert report.split["billed"] == D("100.00")
    assert report.split["draft"] == D("250.50")
    assert report.split["unbilled"] == D("95.24")
    assert report.split["non_billable"] == D("40.00")
    assert report.money(report.split.total) == "$485.74"
    [bravo, acme] = report.matters
    assert (bravo.client, bravo.split["unbilled"]) == ("Bravo LLC", D("95.24"))
    assert (acme.client, acme.split["billed"], acme.split["draft"]) == (
        "Acme Holdings", D("100.00"), D("250.50"))


def test_ageing_of_everything_unbilled_and_the_oldest_matters(firm: Firm) -> None:
    march_firm(firm)

    report = _build(firm)

    # as of 6 April: 03-10 is 27 days, 03-20 17 days, 02-03 62 days
    assert [(b.label, b.amount, b.count) for b in report.ageing] == [
        ("0–30 days", D("95.24"), 2), ("31–60 days", D("0.00"), 0),
        ("61–90 days", D("300.00"), 1), ("over 90 days", D("0.00"), 0)]
    assert report.oldest[0].client == "Acme Holdings" and report.oldest[0].days == 62


def test_waiting_failed_and_the_reconciliation_with_quickbooks(firm: Firm) -> None:
    march_firm(firm)

    report = _build(firm)

    out = report.outstanding
    assert (out.waiting, out.waiting_total) == (1, D("55.00"))
    assert (out.failures, out.failures_total, out.failures_unknown) == (1, D("12.34"), 0)
    assert (out.payment, out.payment_total) == (0, D("0.00"))
    rec = report.reconciliation
    assert rec is not None
    assert rec.qbo_total == D("553.08")
    assert rec.reached == D("485.74")
    assert (rec.waiting, rec.failed, rec.not_yet, rec.skipped) == (
        D("55.00"), D("12.34"), D("0.00"), ())
    assert rec.difference == D("67.34")


def test_the_six_months_history(firm: Firm) -> None:
    march_firm(firm)

    report = _build(firm)

    assert [h.month.slug for h in report.history] == [
        "2025-10", "2025-11", "2025-12", "2026-01", "2026-02", "2026-03"]
    assert report.history[2].billed == D("20.00")
    assert report.history[4].unbilled == D("300.00")
    march = report.history[5]
    assert (march.billed, march.draft, march.unbilled, march.waiting) == (
        D("100.00"), D("250.50"), D("95.24"), D("55.00"))

"""The benchmarks still run: a tiny quiet-run benchmark, end to end, on the test database."""

from __future__ import annotations

from pathlib import Path

from bench import quiet_bench


def _row(report: str, label: str) -> list[str]:
    """The cells after the label of the report's table row that starts with ``label``."""
    for line in report.splitlines():
        cells = [c.strip().strip("*").strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == label:
            return cells[1:]
    raise AssertionError(f"no row {label!r} in the report:\n{report}")


def _min_mean_max(cell: str) -> tuple[int, float, int]:
    low, mean, high = (part.strip() for part in cell.split("/"))
    return int(low), float(mean), int(high)


def test_quiet_bench_reports_its_call_counts_and_no_clio_calls(
        database_url: str, tmp_path: Path) -> None:
    out = tmp_path / "quiet.md"

    assert quiet_bench.main(["--firms", "3", "--database-url", database_url,
                             "--out", str(out)]) == 0

    report = out.read_text(encoding="utf-8")
    assert _row(report, "Quiet runs finished / skipped / crashed") == ["3 / 0 / 0", "3 / 0 / 0"]
    qbo = [_min_mean_max(c) for c in
           _row(report, "QuickBooks calls per quiet run: min / mean / max")]
    clio = [_min_mean_max(c) for c in _row(report, "Clio calls per quiet run: min / mean / max")]
    assert len(qbo) == len(clio) == 2  # one at a time, and with the scheduler's workers
    assert all(low >= 1 and high <= quiet_bench.QBO_TARGET for low, _, high in qbo)
    assert clio == [(0, 0.0, 0), (0, 0.0, 0)]
    assert "Wall time, all 3 quiet runs" in report
    assert "✗" not in report  # every correctness check passed


def test_the_reliability_report_runs_and_loses_nothing(tmp_path: Path) -> None:
    from bench import reliability

    out = tmp_path / "reliability.md"

    assert reliability.main(["--requests", "10", "--purchases", "10", "--kills", "1",
                             "--out", str(out)]) == 0
    text = out.read_text()
    assert "**Lost in all: 0**" in text
    assert "| Forged, stale or altered Slack requests | 10 | 401: 10 | nothing |" in text

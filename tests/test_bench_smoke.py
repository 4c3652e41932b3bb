"""The benchmarks still run: a tiny quiet-run benchmark, end to end, on the test database."""

from __future__ import annotations

from pathlib import Path

import pytest

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
    # three passes: one at a time, the scheduler's workers, one at a time with a pacing grant
    assert _row(report, "Quiet runs finished / skipped / crashed") == ["3 / 0 / 0"] * 3
    qbo = [_min_mean_max(c) for c in
           _row(report, "QuickBooks calls per quiet run: min / mean / max")]
    clio = [_min_mean_max(c) for c in _row(report, "Clio calls per quiet run: min / mean / max")]
    assert len(qbo) == len(clio) == 3
    assert all(low >= 1 and high <= quiet_bench.QBO_TARGET for low, _, high in qbo)
    assert clio == [(0, 0.0, 0)] * 3
    assert "Wall time, all 3 quiet runs" in report
    assert "✗" not in report  # every correctness check passed


def test_quiet_bench_with_bills_stays_at_three_quickbooks_calls(
        database_url: str, tmp_path: Path) -> None:
    out = tmp_path / "quiet-bills.md"

    assert quiet_bench.main(["--firms", "2", "--database-url", database_url, "--bills",
                             "--out", str(out)]) == 0

    report = out.read_text(encoding="utf-8")
    qbo = [_min_mean_max(c) for c in
           _row(report, "QuickBooks calls per quiet run: min / mean / max")]
    assert all(high <= quiet_bench.QBO_TARGET_WITH_BILLS for _, _, high in qbo)
    assert _row(report, "QuickBooks calls per quiet run ≤ 3 (Bills on)")[1] == "met"
    assert "✗" not in report  # every firm imported its paid Bill; quiet runs stayed quiet


def test_the_reliability_report_runs_and_loses_nothing(tmp_path: Path) -> None:
    from bench import reliability

    out = tmp_path / "reliability.md"

    assert reliability.main(["--requests", "10", "--purchases", "10", "--kills", "1",
                             "--out", str(out)]) == 0
    text = out.read_text()
    assert "**Lost in all: 0**" in text
    assert "| Forged, stale or altered Slack requests | 10 | 401: 10 | nothing |" in text


def test_the_fault_benchmark_reports_every_entry_once_and_keeps_the_other_sections(
        database_url: str, tmp_path: Path) -> None:
    from bench import fault_bench

    out = tmp_path / "benchmarks.md"
    out.write_text("# Import benchmark\n\n## Figures\n\nkept\n", encoding="utf-8")

    assert fault_bench.main(["--purchases", "30", "--clients", "8", "--fault-seeds", "1",
                             "--database-url", database_url, "--out", str(out)]) == 0

    report = out.read_text(encoding="utf-8")
    assert report.startswith("# Import benchmark\n\n## Figures\n\nkept\n\n")
    assert "## Import under Clio faults (20% of calls failing)" in report
    assert _row(report, "Duplicates (markers in Clio more than once)") == ["0", "0"]
    assert _row(report, "Missing (implied, not in Clio)") == ["0", "0"]
    injected = _row(report, "Faults injected (share of Clio calls)")
    assert injected[0] == "0 (0.0%)" and not injected[1].startswith("0 ")
    assert "✗" not in report  # every correctness check passed


def test_a_benchmark_section_is_replaced_in_place_and_carried_over_a_rewrite(
        tmp_path: Path) -> None:
    from bench.sections import FAULT_SECTION, carry_over, write_section

    out = tmp_path / "benchmarks.md"
    out.write_text("# Import\n\n## Figures\n\nold\n\n## How to read this\n\ntext\n",
                   encoding="utf-8")
    write_section(out, FAULT_SECTION, f"{FAULT_SECTION} (20%)\n\n### Figures\n\nfirst\n")
    write_section(out, FAULT_SECTION, f"{FAULT_SECTION} (20%)\n\n### Figures\n\nsecond\n")

    assert out.read_text(encoding="utf-8") == (
        "# Import\n\n## Figures\n\nold\n\n## How to read this\n\ntext\n\n"
        f"{FAULT_SECTION} (20%)\n\n### Figures\n\nsecond\n")
    rewritten = carry_over(out, "# Import\n\n## Figures\n\nnew\n", [FAULT_SECTION])
    assert rewritten == (f"# Import\n\n## Figures\n\nnew\n\n{FAULT_SECTION} (20%)\n\n"
                         "### Figures\n\nsecond\n")


def test_the_prompt_load_benchmark_runs_small_and_writes_only_its_section(
        database_url: str, tmp_path: Path) -> None:
    from bench import prompt_load

    out = tmp_path / "benchmarks.md"
    out.write_text("# Import benchmark\n\n## Figures\n\nkept\n", encoding="utf-8")

    assert prompt_load.main(["--weeks", "3", "--clients", "5", "--payees", "4",
                             "--per-week", "20", "--database-url", database_url,
                             "--out", str(out)]) == 0

    report = out.read_text(encoding="utf-8")
    assert "## Figures\n\nkept" in report
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in report.splitlines()
            if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    assert [int(r[0]) for r in rows] == [1, 2, 3]
    assert all(int(r[-1]) == 0 for r in rows)  # no wrong assignment
    assert sum(int(r[4]) for r in rows) > 0  # rules imported something
    assert "every expense imported once, ✓" in report


def test_the_backfill_benchmark_runs_small_paced_too_and_writes_only_its_section(
        tmp_path: Path) -> None:
    from bench import backfill_bench

    out = tmp_path / "benchmarks.md"
    out.write_text("# Import benchmark\n\n## Figures\n\nkept\n", encoding="utf-8")

    assert backfill_bench.main(["--sizes", "40", "--paced", "40", "--speedup", "600",
                                "--out", str(out)]) == 0

    report = out.read_text(encoding="utf-8")
    assert "## Figures\n\nkept" in report
    [cells] = [[c.strip() for c in line.strip("|").split("|")] for line in report.splitlines()
               if line.startswith("| SQLite | 40 |")]
    created = int(cells[2])
    assert created > 0
    assert float(cells[8]) >= 1.0  # at least one Clio call per entry it created
    # one short page of QuickBooks purchases and one of Attachables (receipts), nothing more
    assert cells[9] == "2 (2)"
    assert "0 responses 429" in report


@pytest.mark.postgres
def test_the_scale_benchmark_runs_small_on_three_replicas_and_writes_only_its_section(
        database_url: str, tmp_path: Path) -> None:
    from bench import scale_bench

    out = tmp_path / "benchmarks.md"
    out.write_text("# Import benchmark\n\n## Figures\n\nkept\n", encoding="utf-8")

    assert scale_bench.main(["--firms", "30", "--unit-seconds", "0.5", "--refresh", "10",
                             "--intervals", "1",
                             "--baseline", "2", "--no-kill", "--database-url", database_url,
                             "--out", str(out)]) == 0

    report = out.read_text(encoding="utf-8")
    assert report.startswith("# Import benchmark\n\n## Figures\n\nkept\n\n## Scale: 30 firms")
    assert _row(report, "Replicas serving at the end") == ["3"]
    assert int(_row(report, "Due firms run (scheduled claims)")[0]) >= 30
    assert "| QuickBooks calls per quiet run: 2 | min 2, max 2" in report
    assert "| Clio calls per quiet run: 0 | max 0 | met |" in report
    assert "0 doubled, 0 missing" in report


def test_the_slack_ack_benchmark_runs_over_http_and_socket_mode_in_one_run(
        tmp_path: Path) -> None:
    from bench import slack_ack_bench

    out = tmp_path / "slack-benchmarks.md"

    assert slack_ack_bench.main(["--socket-mode", "--rounds", "2", "--requests", "12",
                                 "--concurrency", "3", "--out", str(out)]) == 0

    report = out.read_text(encoding="utf-8")
    assert report.startswith("# Slack benchmark")
    assert "## Ack latency (send → HTTP response)" in report
    assert f"{slack_ack_bench.SOCKET_SECTION}: " in report
    http = _row(report, "HTTP: request sent → response read")
    socket = _row(report, "Socket Mode: envelope sent → ack read")
    assert http[0] == socket[0] == "24"  # every request sent and timed: 2 rounds of each
    assert http[-1] == socket[-1] == "0"  # none without a 200 / an ack
    assert "Socket Mode ack p99 ≤ 1.2× the HTTP ack p99" in report
    assert [c.split(" ")[0] for c in _row(report, "1")[:1] + _row(report, "2")[:1]] == \
        ["HTTP", "Socket"]  # the rounds alternate which transport goes first
    # Every correctness check passed over both transports (the one about Slack's 3 s aside:
    # no timed assertions here).
    assert [line for line in report.splitlines()
            if line.startswith("- ✗") and "3 s" not in line] == []

    # A run without --socket-mode rewrites the HTTP part and keeps the Socket Mode section.
    assert slack_ack_bench.main(["--requests", "6", "--concurrency", "2",
                                 "--out", str(out)]) == 0
    again = out.read_text(encoding="utf-8")
    assert "--requests 6" in again and _row(again, "Socket Mode: envelope sent → ack read")


def test_progress_bench_compares_the_estimate_with_the_time_really_left(tmp_path: Path) -> None:
    from bench import progress_bench

    out = tmp_path / "progress.md"

    assert progress_bench.main(["--purchases", "200", "--speedup", "600",
                                "--out", str(out)]) == 0

    report = out.read_text(encoding="utf-8")
    assert report.startswith(progress_bench.PROGRESS_SECTION)
    halfway = _row(report, "50%")
    done, of = (int(n.replace(",", "")) for n in halfway[0].split(" of "))
    assert 0 < done <= of
    assert halfway[2].endswith(" min")  # the time really left, measured
    assert "within ±20%" in halfway[4]


def test_the_matter_search_benchmark_runs_small_and_writes_only_its_section(
        database_url: str, tmp_path: Path) -> None:
    from bench import matter_search_bench

    out = tmp_path / "benchmarks.md"
    out.write_text("# Import benchmark\n\n## Figures\n\nkept\n", encoding="utf-8")

    assert matter_search_bench.main(["--matters", "60", "--requests", "3", "--concurrency", "2",
                                     "--database-url", database_url, "--out", str(out)]) == 0

    report = out.read_text(encoding="utf-8")
    assert "## Figures\n\nkept" in report
    assert "## Matter search (60 matters)" in report
    assert "read 60 matters into the copy" in report
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in report.splitlines()
            if line.startswith("| ") and not line.startswith("| Query")]
    assert len(rows) == len(matter_search_bench.queries(60)) + 2
    assert all(r[-1] == "0" for r in rows)  # every answer sane
    by_kind = {r[0]: r for r in rows}
    assert by_kind["one letter (matches nearly all)"][6] == "60"
    assert by_kind["no match"][6] == "0"


def test_the_export_benchmark_runs_small_and_writes_only_its_section(tmp_path: Path) -> None:
    from bench import export_bench

    out = tmp_path / "benchmarks.md"
    out.write_text("# Import benchmark\n\n## Figures\n\nkept\n", encoding="utf-8")

    assert export_bench.main(["--rows", "50,120", "--out", str(out)]) == 0

    report = out.read_text(encoding="utf-8")
    assert "## Figures\n\nkept" in report
    assert "## Export: memory while `/hardcost export` writes its CSV" in report
    rows = [line for line in report.splitlines() if line.startswith("| ") and "MB" in line]
    assert [row.split("|")[1].strip() for row in rows] == ["50", "120"]


def test_receipts_bench_files_each_receipt_once_and_reports_its_targets(
        tmp_path: Path) -> None:
    from bench import receipts_bench

    out = tmp_path / "receipts.md"

    assert receipts_bench.main(["--purchases", "12", "--with-files", "4", "--largest-mb", "1",
                                "--big-mb", "2", "--speedup", "600", "--out", str(out)]) == 0

    report = out.read_text(encoding="utf-8")
    assert report.startswith("## Receipts: files filed on the matter (issue 28)")
    assert _row(report, "every check above") == ["all hold", "yes"]
    quiet = _row(report, "quiet run with receipts on ≤ 2 QuickBooks calls, 0 Clio")
    assert quiet[-1] == "yes", quiet
    assert "NO" not in report

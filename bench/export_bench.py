"""Audit export memory benchmark (issue 14): the CSV of ``/hardcost export`` is written row by
row to a temporary file, so the memory it takes does not grow with the trail.

    python -m bench.export_bench [--rows 10000,100000] [--database-url URL]
                                 [--out docs/benchmarks.md]

Seeds ``--rows`` audit entries on one day (one bulk INSERT), then writes the period's CSV with
``bot.export.trail_file`` under ``tracemalloc`` and prints the peak of Python allocations
beside the file's size. Before issue 14 the whole file was built in memory (about six times its
size at the peak). The upload itself (slack-sdk's ``files_upload_v2``) reads the finished file
once, so the upload's peak is about the file's size, bounded by ``bot.export.MAX_ROWS``.
Prints its figures and writes them to its section of ``docs/benchmarks.md``
(``bench.sections``); not a test (nothing here asserts a time).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import tracemalloc
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy import insert

from bench.backfill_bench import database
from bench.sections import EXPORT_SECTION, write_section
from hardcost.bot.export import MAX_ROWS, trail_file
from hardcost.sync import audit
from hardcost.sync.audit_period import Period
from hardcost.sync.engine import make_engine, make_session_factory
from hardcost.sync.firms import FirmSetup, create_firm
from hardcost.sync.store import AuditEntry

DAY = date(2026, 3, 10)


def measure(rows: int, database_url: str | None) -> dict[str, Any]:
    with database(database_url) as url:
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        with sessions() as session:
            firm = create_firm(session, FirmSetup(name="Bench", qbo_realm_id="9",
                                                  start_date=DAY, import_account_ids=("1",)))
            session.flush()
            row = audit.values(firm.id, audit.Action.IMPORTED, "schedule",
                               at=datetime(2026, 3, 10, 12, tzinfo=UTC), purchase_id="1234",
                               client="Müller & Söhne " * 4, amount=Decimal("123.45"),
                               matter="00042 Estate of Jane Smith",
                               before={"matter": None}, after={"matter": 42},
                               detail="Imported expense 1234 line 1 " * 3)
            for start in range(0, rows, 10_000):
                session.execute(insert(AuditEntry), [row] * min(10_000, rows - start))
            session.commit()
            firm_id = firm.id
        ctx: Any = SimpleNamespace(sessions=sessions)
        tracemalloc.start()
        started = time.perf_counter()
        with trail_file(ctx, firm_id, Period(DAY, DAY)) as file:
            elapsed = time.perf_counter() - started
            _, peak = tracemalloc.get_traced_memory()
            size = os.path.getsize(file.path)
            written = file.rows
        tracemalloc.stop()
        engine.dispose()
    return {"rows": written, "file_mb": size / 1e6, "peak_mb": peak / 1e6, "seconds": elapsed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default=f"10000,{MAX_ROWS}",
                        help="sizes to measure, comma-separated")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--out", default="docs/benchmarks.md")
    args = parser.parse_args(argv)
    sizes = [max(1, min(int(n), MAX_ROWS)) for n in str(args.rows).split(",") if n.strip()]
    lines = [f"{EXPORT_SECTION}: memory while `/hardcost export` writes its CSV", "",
             f"- **Date:** {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
             f"- **Machine:** {platform.platform()} ({platform.machine()})",
             f"- **Command:** `python -m bench.export_bench --rows {args.rows}`",
             "- **Database:** " + ("a temporary SQLite file" if args.database_url is None
                                   else "the PostgreSQL server given"), "",
             "| entries | CSV on disk | peak Python memory while writing | time |",
             "|---:|---:|---:|---:|"]
    for size in sizes:
        result = measure(size, args.database_url)
        print(f"{result['rows']:,} rows: CSV {result['file_mb']:.1f} MB on disk, peak Python "
              f"memory while writing it {result['peak_mb']:.1f} MB, {result['seconds']:.1f} s")
        lines.append(f"| {result['rows']:,} | {result['file_mb']:.1f} MB | "
                     f"{result['peak_mb']:.1f} MB | {result['seconds']:.1f} s |")
    lines += ["", "The peak does not grow with the export: rows are written to a temporary file "
              "as they are read. The upload (slack-sdk's `files_upload_v2`) then reads the "
              f"finished file once, so its peak is about the file's size, at most "
              f"{MAX_ROWS:,} entries.", ""]
    write_section(Path(args.out), EXPORT_SECTION, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Audit export memory benchmark (issue 14): the CSV of ``/hardcost export`` is written row by
row to a temporary file, so the memory it takes does not grow with the trail.

    python -m bench.export_bench [--rows 100000] [--database-url URL]

Seeds ``--rows`` audit entries on one day (one bulk INSERT), then writes the period's CSV with
``bot.export.trail_file`` under ``tracemalloc`` and prints the peak of Python allocations
beside the file's size. Before issue 14 the whole file was built in memory (about six times its
size at the peak). The upload itself (slack-sdk's ``files_upload_v2``) reads the finished file
once, so the upload's peak is about the file's size, bounded by ``bot.export.MAX_ROWS``.
Prints its figures; not a test (nothing here asserts a time).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from datetime import UTC, date, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from sqlalchemy import insert

from bench.backfill_bench import database
from hardcost.bot.export import MAX_ROWS, trail_file
from hardcost.sync import audit
from hardcost.sync.audit_period import Period
from hardcost.sync.firms import FirmSetup, create_firm
from hardcost.sync.store import AuditEntry, make_engine, make_session_factory

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
    parser.add_argument("--rows", type=int, default=MAX_ROWS)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args(argv)
    result = measure(max(1, min(args.rows, MAX_ROWS)), args.database_url)
    print(f"{result['rows']:,} rows: CSV {result['file_mb']:.1f} MB on disk, peak Python "
          f"memory while writing it {result['peak_mb']:.1f} MB, {result['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

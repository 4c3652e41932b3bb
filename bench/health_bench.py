"""Health-probe benchmark: what one ``/healthz`` request costs the database, by number of firms.

    python -m bench.health_bench [--firms 1000 10000] [--probes 20] [--database-url URL]
                                 [--out docs/benchmarks.md]

Bulk-inserts ready firms (``firms``, ``firm_settings``, two ``connections`` each,
``run_leases`` due tomorrow, so no claim pass runs an import) into one database — a temporary
SQLite file unless ``--database-url`` names an empty one (PostgreSQL) — up to the first size,
measures, adds firms up to the next size, measures again. Each measure starts
``ImportScheduler`` as ``hardcost serve`` does (claim pass and figures job once at start, then
periodic ones far apart so that none runs among the probes) and sends ``--probes`` ``GET
/healthz`` requests to the real WSGI app (``make_wsgi_app``) in this thread. The SQL statements
the probes send are counted with SQLAlchemy's cursor events, for this thread only, with the
rows each returned (PostgreSQL reports them; SQLite does not); on PostgreSQL the table rows the
server read (``pg_stat_user_tables``) are counted too. For comparison, the count of scheduled
firms that every probe ran before (``ImportScheduler.scheduled_firms``, now the figures job's)
is measured the same way. Writes (replaces) the "Health probe" section of ``--out``; exits 0
unless the benchmark itself crashes.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from slack_bolt import App
from sqlalchemy import event, insert, text
from sqlalchemy.engine import Engine
from werkzeug.test import Client

from bench.sections import HEALTH_SECTION, write_section
from hardcost.bot.web import make_wsgi_app
from hardcost.sync.crypto import generate_key
from hardcost.sync.db import upgrade
from hardcost.sync.engine import make_engine, make_session_factory
from hardcost.sync.scheduler import ImportScheduler
from hardcost.sync.store import Connection, Firm, FirmSettings, RunLease

SIZES = (1_000, 10_000)
PROBES = 20
BATCH = 1_000
START_DATE = date(2026, 1, 1)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def seed_firms(db: Engine, first: int, count: int, *, due: datetime | None = None) -> list[int]:
    """Bulk-insert ``count`` ready firms numbered from ``first`` (active, QuickBooks and Clio
    connected, an import account and a start date, a 15-minute schedule), their next run at
    ``due`` (default: tomorrow, so that no claim pass takes them); their ids."""
    now = datetime.now(UTC)
    due = due or now + timedelta(days=1)
    ids: list[int] = []
    for start in range(first, first + count, BATCH):
        numbers = range(start, min(start + BATCH, first + count))
        with db.begin() as conn:
            made = list(conn.scalars(insert(Firm.__table__).returning(
                Firm.__table__.c.id, sort_by_parameter_order=True), [
                {"name": f"Probe Firm {n:05d}", "qbo_realm_id": f"9{n:09d}", "clio_region": "us",
                 "active": True, "created_at": now} for n in numbers]))
            conn.execute(insert(FirmSettings.__table__), [
                {"firm_id": firm_id, "start_date": START_DATE, "import_account_ids": ["1"],
                 "schedule_minutes": 15, "updated_at": now} for firm_id in made])
            conn.execute(insert(Connection.__table__), [
                {"firm_id": firm_id, "provider": provider, "access_token": "bench-access",
                 "refresh_token": "bench-refresh", "updated_at": now}
                for firm_id in made for provider in ("quickbooks", "clio")])
            conn.execute(insert(RunLease.__table__), [
                {"firm_id": firm_id, "next_run_at": due} for firm_id in made])
        ids += made
    return ids


class ThreadStatements:
    """The SQL statements one thread sends on an engine, and the rows each returned (the
    driver's ``rowcount``; None where it does not say, as SQLite's for a SELECT)."""

    def __init__(self, db: Engine) -> None:
        self.thread = threading.get_ident()
        self.seen: list[tuple[str, int | None]] = []
        event.listen(db, "after_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if threading.get_ident() != self.thread:
            return
        rows = getattr(cursor, "rowcount", -1)
        self.seen.append((" ".join(statement.split()), rows if rows >= 0 else None))

    def mark(self) -> int:
        return len(self.seen)

    def since(self, mark: int) -> list[tuple[str, int | None]]:
        return self.seen[mark:]


def table_rows_read(db: Engine) -> int | None:
    """Rows PostgreSQL's tables have handed out so far (``seq_tup_read`` + ``idx_tup_fetch``,
    every table); None on SQLite."""
    if db.dialect.name != "postgresql":
        return None
    with db.connect() as conn:
        return int(conn.scalar(text(
            "SELECT coalesce(sum(seq_tup_read), 0) + coalesce(sum(idx_tup_fetch), 0) "
            "FROM pg_stat_user_tables")) or 0)


def settled_rows_read(db: Engine) -> int | None:
    """``table_rows_read`` once every backend's statistics have reached the server: the
    engine's idle connections are closed (a backend sends its statistics as it exits; an idle
    one may hold them for seconds), then the sum is read until it stops moving."""
    if db.dialect.name != "postgresql":
        return None
    db.dispose()
    last = table_rows_read(db)
    for _ in range(50):
        time.sleep(0.3)
        now = table_rows_read(db)
        if now == last:
            break
        last = now
    db.dispose()
    return last


@dataclass
class Cost:
    """What ``n`` calls sent: statements and rows per call (rows: None when not reported)."""

    calls: int
    statements: list[str] = field(default_factory=list)
    rows_returned: int | None = 0
    rows_read: int | None = None  # PostgreSQL's table rows read
    seconds: float = 0.0

    @property
    def statements_per_call(self) -> float:
        return len(self.statements) / self.calls

    def per_call(self, value: int | None) -> float | None:
        return None if value is None else value / self.calls


def measure(db: Engine, counter: ThreadStatements, calls: int,
            fn: Callable[[], object]) -> Cost:
    before = settled_rows_read(db)
    mark = counter.mark()
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    took = time.perf_counter() - started
    seen = counter.since(mark)
    after = settled_rows_read(db)
    rows: int | None = 0
    for _, count in seen:
        rows = None if rows is None or count is None else rows + count
    # The statistics query itself reads no user table; the probes' and nothing else's.
    read = after - before if after is not None and before is not None else None
    return Cost(calls, [s for s, _ in seen], rows, read, took / calls)


@dataclass
class Size:
    firms: int
    scheduled: int
    probe: Cost
    old_count: Cost
    statuses: set[int]


def bolt_app() -> App:
    """A Bolt app that asks Slack nothing (the probe never reaches it)."""
    return App(token="xoxb-health-bench", signing_secret="health-bench",
               token_verification_enabled=False)


@contextmanager
def database(url: str | None) -> Iterator[Engine]:
    with tempfile.TemporaryDirectory(prefix="hardcost-health-bench-") as tmp:
        if url and not url.startswith("sqlite") and not os.environ.get("HARDCOST_SECRET_KEY"):
            os.environ["HARDCOST_SECRET_KEY"] = generate_key()  # this process only
        db = make_engine(url or f"sqlite:///{Path(tmp) / 'bench.sqlite'}")
        try:
            upgrade(db)
            yield db
        finally:
            db.dispose()


def measure_size(db: Engine, firms: int, probes: int) -> Size:
    sessions = make_session_factory(db)

    def no_import(firm_id: int) -> Any:
        raise RuntimeError("the health benchmark runs no import")

    scheduler = ImportScheduler(sessions, no_import, refresh_every=3600, figures_every=3600,
                                housekeeping=None)
    scheduler.start()
    try:
        client = Client(make_wsgi_app(bolt_app(), sessions, scheduler=scheduler))
        counter = ThreadStatements(db)
        statuses: set[int] = set()
        scheduled = -1

        def probe() -> None:
            nonlocal scheduled
            answer = client.get("/healthz")
            statuses.add(answer.status_code)
            scheduled = answer.get_json()["scheduler"]["firms"]

        probe()  # the pool's first connection, Bolt's and werkzeug's first request
        cost = measure(db, counter, probes, probe)
        old = measure(db, counter, max(1, probes // 4), scheduler.scheduled_firms)
        event.remove(db, "after_cursor_execute", counter._seen)
    finally:
        scheduler.shutdown()
        scheduler.wait(10)
    return Size(firms, scheduled, cost, old, statuses)


def run_bench(sizes: list[int], probes: int, database_url: str | None) -> list[Size]:
    results = []
    with database(database_url) as db:
        made = 0
        for n in sorted(sizes):
            progress(f"firms {made:,} → {n:,} …")
            seed_firms(db, made + 1, n - made)
            made = n
            if db.dialect.name == "postgresql":
                with db.connect() as conn:
                    conn.execute(text("ANALYZE"))
                    conn.commit()
            results.append(measure_size(db, n, probes))
    return results


def num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if value == int(value) else f"{value:,.{digits}f}"


def render(results: list[Size], *, command: str, database: str, probes: int) -> str:
    first, last = results[0], results[-1]
    header = "| | " + " | ".join(f"{r.firms:,} firms" for r in results) + " | " + \
        f"ratio {last.firms:,} ÷ {first.firms:,} |"

    def ratio(a: float | None, b: float | None) -> str:
        if a is None or b is None:
            return "n/a"
        if a == b:
            return "1.00"
        return f"{b / a:.2f}" if a else "—"

    def row(label: str, get: Callable[[Size], float | None]) -> str:
        values = [get(r) for r in results]
        return f"| {label} | " + " | ".join(num(v) for v in values) + \
            f" | {ratio(values[0], values[-1])} |"

    statements = sorted({s for r in results for s in r.probe.statements})
    lines = [
        f"{HEALTH_SECTION}: `/healthz` at {' and '.join(f'{r.firms:,}' for r in results)} firms",
        "",
        f"- **Date:** {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- **Machine:** {platform.platform()} ({platform.machine()}), {os.cpu_count()} CPUs "
        "shared with other work: read the counts, not the times.",
        f"- **Python:** {platform.python_implementation()} {platform.python_version()}",
        f"- **Command:** `{command}`",
        f"- **Database:** {database}; the firms are bulk-inserted (firms, settings, two "
        "connections each, leases due tomorrow), each size adds to the one before.",
        f"- **Probe:** {probes} `GET /healthz` to the real WSGI app (`make_wsgi_app` with a "
        "started `ImportScheduler`), called in the bench's thread; statements counted with "
        "SQLAlchemy's `after_cursor_execute` for that thread only, rows returned from the "
        "driver's `rowcount`, table rows read from `pg_stat_user_tables` (PostgreSQL).",
        "",
        header,
        "|---|" + "---|" * (len(results) + 1),
        row("Firms scheduled (the probe's `firms`)", lambda r: r.scheduled),
        row("**SQL statements per probe**", lambda r: r.probe.statements_per_call),
        row("Rows returned per probe", lambda r: r.probe.per_call(r.probe.rows_returned)),
        row("**Table rows read per probe** (PostgreSQL)",
            lambda r: r.probe.per_call(r.probe.rows_read)),
        row("Time per probe (ms)", lambda r: r.probe.seconds * 1000),
        row("Before: the count each probe ran (`scheduled_firms`), statements",
            lambda r: r.old_count.statements_per_call),
        row("Before: rows returned by that count",
            lambda r: r.old_count.per_call(r.old_count.rows_returned)),
        row("Before: table rows read by that count (PostgreSQL)",
            lambda r: r.old_count.per_call(r.old_count.rows_read)),
        row("Before: time of that count (ms)", lambda r: r.old_count.seconds * 1000),
        "",
        "Statements a probe sends: " + ", ".join(f"`{s}`" for s in statements) + ". "
        "HTTP statuses: " + ", ".join(
            f"{r.firms:,} firms {sorted(r.statuses)}" for r in results) + ".",
        "",
        "**How to read this.** A probe reads nothing that grows with the firms: the database "
        "check (`SELECT 1`) and the scheduler's own figures, kept in memory by its claim passes "
        "(their times) and by its figures job (the count of scheduled firms, every 30 s: the "
        "*Before* rows, which every probe paid before, whenever its one-claim-period cache had "
        "run out). The ratio column compares the largest size with the smallest in this one "
        "run: 1.00 for the probe's statements and rows, about the ratio of firms for the old "
        "count. The figures job pays that count once every 30 s per replica, whatever the "
        "number of probes.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.health_bench",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--firms", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--probes", type=int, default=PROBES)
    parser.add_argument("--database-url",
                        help="an empty (e.g. PostgreSQL) database instead of a temporary "
                             "SQLite file")
    parser.add_argument("--out", default="docs/benchmarks.md")
    args = parser.parse_args(argv)
    raw = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m bench.health_bench", *map(shlex.quote, raw)])
    results = run_bench(args.firms, args.probes, args.database_url)
    if args.database_url:
        shown = make_engine(args.database_url).url.render_as_string(hide_password=True)
        shown = f"PostgreSQL ({shown.rsplit('@', 1)[-1]})" if "postgresql" in shown else shown
    else:
        shown = "a temporary SQLite file"
    report = render(results, command=command, database=shown, probes=args.probes)
    print(report)
    write_section(Path(args.out), HEALTH_SECTION, report)
    progress(f"section written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

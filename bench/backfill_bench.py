"""Backfill benchmark (issue 14): a first run that imports tens of thousands of purchases.

    python -m bench.backfill_bench [--sizes 1000,5000,20000,50000] [--database-url PG_URL]
                                   [--paced 50000] [--speedup 60] [--out docs/benchmarks.md]

For each size and database (a temporary SQLite file, and PostgreSQL when ``--database-url`` is
given) the benchmark seeds a firm in the sandboxes (``bench.import_bench.seed_firm``), then runs
ONE import with ``hardcost``'s own engine in a process of its own (``python -m
bench.backfill_bench app``), so the peak RSS and CPU time are the app's alone. The app process
counts its SQL statements (each execution the driver runs: an ``executemany`` counts each of
its rows) and commits, and reports them with its QuickBooks and Clio calls.

``--paced N`` repeats N purchases on SQLite with Clio's real limit of 50 requests per window on
a compressed clock (the sandbox's window is 60 s ÷ ``--speedup``), and reports the wall time ÷
the rate-limit bound (Clio calls ÷ 50 windows) and the 429s Clio sent. With
``--database-url`` it repeats them on PostgreSQL too, imported by ``--paced-replicas`` app
processes at once (alternate purchase ids each, one firm, so one Clio account and one shared
``rate_buckets`` row), with ``HARDCOST_PACING_UNIT_SECONDS`` set to the compressed window.
Rewrites only its own section of ``docs/benchmarks.md``; always exits 0 unless the benchmark
itself crashes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.import_bench import connect_seeded
from bench.sections import BACKFILL_SECTION, write_section
from hardcost.sandbox.world import SandboxWorld
from hardcost.sync.crypto import generate_key
from hardcost.sync.db import upgrade
from hardcost.sync.engine import make_engine, make_session_factory

SIZES = (1_000, 5_000, 20_000, 50_000)
CLIENTS = 150
SEED = 7
UNPACED = 1_000_000
CLIO_LIMIT = 50  # requests per window, as Clio at peak
TARGETS = {
    "rss_mb": 150.0, "rss_growth": 1.2, "statements": 1.5, "commits": 0.1,
    "wall_sqlite_s": 120.0, "pg_ratio": 1.2, "clio_per_entry": 1.002, "paced_ratio": 1.03,
    "cpu_ms": 1.0,
}


# -- the app's side: one run in its own process -------------------------------------------

def app_main(firm_id: int, ids_file: str | None = None) -> int:
    """One import of ``firm_id`` at ``DATABASE_URL`` (of the purchases listed in ``ids_file``
    when given: one replica's share); prints what it measured as JSON."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from hardcost.sync.config import Settings
    from hardcost.sync.firms import build_importer
    from hardcost.sync.http import RetryPolicy

    counts = {"statements": 0, "commits": 0, "pacing_statements": 0, "pacing_commits": 0}
    kinds: Counter[str] = Counter()  # statement → executions (HARDCOST_BENCH_SQL=1 prints)

    @event.listens_for(Engine, "before_cursor_execute")
    def _statement(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                   executemany: bool) -> None:
        # An executemany runs once per row; a multi-row VALUES (SQLAlchemy's
        # "insertmanyvalues") is one statement with a flat parameter list.
        rows = len(parameters) if executemany and isinstance(parameters, (list, tuple)) \
            and parameters and isinstance(parameters[0], (tuple, list, dict)) else 1
        counts["statements"] += rows
        kinds[" ".join(statement.split())[:110]] += rows
        if "rate_buckets" in statement:  # the shared pacing's grants (sync/pacing.py)
            counts["pacing_statements"] += rows
            conn.info["pacing"] = True

    @event.listens_for(Engine, "commit")
    def _commit(conn: Any) -> None:
        counts["commits"] += 1
        if conn.info.pop("pacing", False):
            counts["pacing_commits"] += 1

    @event.listens_for(Engine, "rollback")
    def _rollback(conn: Any) -> None:
        conn.info.pop("pacing", None)

    engine = make_engine(os.environ["DATABASE_URL"])
    sessions = make_session_factory(engine)
    importer = build_importer(sessions, firm_id, Settings(),
                              retry=RetryPolicy(attempts=4, backoff=0.01, max_wait=0.2,
                                                throttle_wait=0.05), sandbox_links=True)
    for name in counts:  # the run's own work from here
        counts[name] = 0
    kinds.clear()
    if os.environ.get("HARDCOST_BENCH_TRACE"):  # where the memory goes (slow)
        import tracemalloc
        tracemalloc.start(8)
    ids = set(json.loads(Path(ids_file).read_text())) if ids_file else None
    if os.environ.get("HARDCOST_BENCH_STACKS"):  # where the time goes (every few seconds)
        import faulthandler
        faulthandler.dump_traceback_later(float(os.environ["HARDCOST_BENCH_STACKS"]),
                                          repeat=True)
    profile_to = os.environ.get("HARDCOST_BENCH_PROFILE")  # where the CPU goes (pstats file)
    profiler = None
    if profile_to:
        import cProfile
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
    cpu_before = time.process_time()
    began = time.time()
    started = time.perf_counter()
    summary = importer.run(trigger="bench", purchase_ids=ids)
    wall = time.perf_counter() - started
    ended = time.time()
    cpu = time.process_time() - cpu_before
    if profiler is not None and profile_to:
        profiler.disable()
        profiler.dump_stats(profile_to)
    if os.environ.get("HARDCOST_BENCH_TRACE"):
        import tracemalloc
        top = tracemalloc.take_snapshot().statistics("traceback")[:6]
        for stat in top:
            print(f"{stat.size / 1e6:8.1f} MB {stat.count}", file=sys.stderr)
            for line in stat.traceback.format()[-8:]:
                print("    " + line, file=sys.stderr)
    if os.environ.get("HARDCOST_BENCH_SQL"):
        for text, times in kinds.most_common(15):
            print(f"{times:7d}  {text}", file=sys.stderr)
    print(json.dumps({
        "wall_s": wall, "cpu_s": cpu, "began": began, "ended": ended,
        "peak_rss_mb": _peak_rss_mb(),
        "statements": counts["statements"], "commits": counts["commits"],
        "pacing_statements": counts["pacing_statements"],
        "pacing_commits": counts["pacing_commits"],
        "imported": summary.imported, "waiting": summary.waiting, "failed": summary.failed,
        "read": summary.purchases_read, "qbo_calls": summary.qbo_calls,
        "clio_calls": summary.clio_calls, "error": summary.error,
        "rate_limit_wait_s": importer.clio.waited, "pacing": _pacing_stats(importer.clio),
    }))
    return 0


def _pacing_stats(clio: Any) -> dict[str, float]:
    """What the Clio pacer counted: a shared pacer's grants, tokens and waits (PostgreSQL), or
    the header pacer's waits for a reset (SQLite)."""
    pacer = clio.api.pacer
    if hasattr(pacer, "stats"):
        return dict(pacer.stats())
    return {"header_waits": getattr(pacer, "waits", 0),
            "header_wait_s": getattr(pacer, "waited", 0.0)}


def _peak_rss_mb() -> float:
    """This process's own peak RSS: ``VmHWM``, which starts afresh at ``exec``. (Linux carries
    ``ru_maxrss`` over an ``exec``: a child of the benchmark would report the benchmark's
    peak, sandboxes and all.)"""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- the benchmark's side -----------------------------------------------------------------

@dataclass
class Result:
    database: str
    purchases: int
    paced: bool
    app: dict[str, Any]
    seed_s: float
    clio_429: int
    clio_api: int
    qbo_api: int
    bound_s: float | None = None
    replicas: int = 1

    @property
    def created(self) -> int:
        return int(self.app["imported"])

    def per_entry(self, key: str) -> float:
        return float(self.app[key]) / max(self.created, 1)

    @property
    def qbo_floor(self) -> int:
        """Pages of 1,000 purchases (one more when the last is full), and the one read of
        Attachables a first import makes with receipts on (docs/purchases.md, Receipts)."""
        return math.ceil(self.purchases / 1000) + (1 if self.purchases % 1000 == 0 else 0) + 1


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def database(url: str | None) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="hardcost-backfill-") as tmp:
        target = url or f"sqlite:///{Path(tmp) / 'bench.sqlite'}"
        engine = make_engine(target)
        if url:  # a clean schema on the server each time
            with engine.begin() as connection:
                connection.exec_driver_sql("DROP SCHEMA public CASCADE")
                connection.exec_driver_sql("CREATE SCHEMA public")
        upgrade(engine)
        engine.dispose()
        yield target


def bench_one(purchases: int, database_url: str | None, *, paced: bool,
              speedup: float, replicas: int = 1) -> Result:
    label = "PostgreSQL" if database_url else "SQLite"
    with database(database_url) as url, SandboxWorld.start() as world:
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        world.clio.rate_limit_per_minute = CLIO_LIMIT if paced else UNPACED
        if paced:
            world.clio.rate_window_seconds = 60.0 / speedup
        progress(f"{label}: seeding {purchases:,} purchases …")
        started = time.perf_counter()
        world.clock.advance(-300)  # the bookkeeper entered these five minutes ago
        seeded, firm_id = connect_seeded(world, sessions, purchases=purchases,
                                    clients=CLIENTS, seed=SEED)
        world.clock.advance(300)  # back to real time: Clio's reset times are the app's
        engine.dispose()
        seed_s = time.perf_counter() - started
        env = world.environment(url)
        if paced:  # shared pacing (PostgreSQL) counts the sandbox's compressed minute
            env["HARDCOST_PACING_UNIT_SECONDS"] = f"{60.0 / speedup:g}"
        progress(f"{label}: importing {purchases:,} in the app's own process"
                 f"{'es' if replicas > 1 else ''}{' (Clio paced)' if paced else ''} …")
        app = run_apps(env, firm_id, sorted(seeded.company.purchases, key=int), replicas)
        clio_calls = [c for c in world.clio.calls.all() if "/api/v4/" in c.path]
        qbo_calls = [c for c in world.qbo.calls.all() if "/v3/company/" in c.path]
        result = Result(label, purchases, paced, app, seed_s,
                        sum(1 for c in clio_calls if c.status == 429), len(clio_calls),
                        len(qbo_calls))
        result.replicas = replicas
        if paced:
            result.bound_s = math.ceil(len(clio_calls) / CLIO_LIMIT) * 60.0 / speedup
            times = [c.at for c in clio_calls]
            progress("  " + windows_seen(times, 60.0 / speedup))
            if times:
                progress(f"  before the first Clio call {min(times) - app['began']:.1f} s, "
                         f"after the last {app['ended'] - max(times):.1f} s")
        progress(f"  {app['imported']:,} entries in {app['wall_s']:.1f} s, peak RSS "
                 f"{app['peak_rss_mb']:.0f} MB, {result.per_entry('statements'):.2f} "
                 f"statements and {result.per_entry('commits'):.3f} commits per entry")
        return result


def windows_seen(times: list[float], window: float) -> str:
    """Clio's windows as the sandbox counted them (each opens with the first request after
    the last one ended): how many, how full, and the time between one's end and the next's
    first request (where a paced run's wall goes beyond the bound)."""
    fills: list[int] = []
    idle, ends = 0.0, float("-inf")
    for at in sorted(times):
        if at >= ends:
            if fills:
                idle += at - ends
            ends = at + window
            fills.append(0)
        fills[-1] += 1
    full = sum(1 for f in fills if f >= CLIO_LIMIT - 1)
    return (f"Clio windows: {len(fills)} ({full} with ≥ {CLIO_LIMIT - 1} requests, mean "
            f"{sum(fills) / max(len(fills), 1):.1f}), idle between windows {idle:.1f} s, "
            f"fills {sorted(Counter(fills).items())}")


def run_apps(env: dict[str, str], firm_id: int, ids: list[str],
             replicas: int) -> dict[str, Any]:
    """The import in ``replicas`` app processes at once (each a replica importing its share
    of the purchases, alternate ids, for the same Clio account); their figures summed, the
    wall from the first one's start to the last one's end."""
    command = [sys.executable, "-m", "bench.backfill_bench", "app", "--firm", str(firm_id)]
    with tempfile.TemporaryDirectory(prefix="hardcost-replicas-") as tmp:
        commands = [command]
        if replicas > 1:
            commands = []
            for index in range(replicas):
                share = Path(tmp) / f"ids-{index}.json"
                share.write_text(json.dumps(ids[index::replicas]))
                commands.append([*command, "--ids", str(share)])
        procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for c in commands]
        outputs = [p.communicate() for p in procs]
    apps = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        if os.environ.get("HARDCOST_BENCH_SQL") or os.environ.get("HARDCOST_BENCH_TRACE") \
                or os.environ.get("HARDCOST_BENCH_STACKS"):
            progress(err[-int(os.environ.get('HARDCOST_BENCH_ERR', 9000)):])
        if proc.returncode != 0:
            raise RuntimeError(f"the app failed: {err[-3000:]}")
        apps.append(json.loads(out.strip().splitlines()[-1]))
    for index, app in enumerate(apps):  # where each replica's time and Clio tokens went
        progress(f"  replica {index}: wall {app['wall_s']:.1f} s, cpu {app['cpu_s']:.1f} s, "
                 f"Clio calls {app['clio_calls']}, waited {app['rate_limit_wait_s']:.1f} s, "
                 f"pacing {json.dumps(app['pacing'], sort_keys=True)}")
    if len(apps) == 1:
        return apps[0]
    summed: dict[str, Any] = {key: sum(a[key] for a in apps) for key in (
        "cpu_s", "statements", "commits", "imported", "waiting", "failed", "read",
        "qbo_calls", "clio_calls", "rate_limit_wait_s")}
    summed["began"] = min(a["began"] for a in apps)
    summed["ended"] = max(a["ended"] for a in apps)
    summed["wall_s"] = summed["ended"] - summed["began"]
    summed["peak_rss_mb"] = max(a["peak_rss_mb"] for a in apps)
    summed["error"] = next((a["error"] for a in apps if a["error"]), None)
    return summed


def _fmt(value: float, places: int = 2) -> str:
    return f"{value:,.{places}f}"


def _own(r: Result, key: str) -> float:
    """Statements or commits per entry without the shared pacing's grants (``rate_buckets``,
    PostgreSQL only)."""
    return (float(r.app[key]) - float(r.app.get(f"pacing_{key}", 0))) / max(r.created, 1)


def _per_entry_cell(r: Result, key: str, places: int) -> str:
    if not r.app.get(f"pacing_{key}"):
        return _fmt(r.per_entry(key), places)
    return f"{_fmt(r.per_entry(key), places)} ({_fmt(_own(r, key), places)} without pacing)"


def render(results: list[Result], *, command: str, speedup: float) -> str:
    unpaced = [r for r in results if not r.paced]
    lines = [
        f"{BACKFILL_SECTION}: a first run of thousands of purchases (issues 14 and 31)",
        "",
        f"`{command}` — {platform.python_version()} on {platform.machine()}, "
        f"{os.cpu_count()} cores (shared), sandbox QuickBooks and Clio on loopback in the "
        "benchmark's process, hardcost in a process of its own (`python -m "
        "bench.backfill_bench app`: its peak RSS, CPU, SQL statements and commits). One run "
        f"each; {CLIENTS} clients, about 1.2 entries per purchase, about 7% waiting for a "
        "matter. Statements count every execution the driver runs (each row of an "
        "`executemany`); commits are the engine's.",
        "",
        "| database | purchases | entries created | wall | peak RSS | statements / entry | "
        "commits / entry | CPU ms / entry | Clio calls / entry | QuickBooks calls (floor) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in unpaced:
        lines.append(
            f"| {r.database} | {r.purchases:,} | {r.created:,} | {_fmt(r.app['wall_s'], 1)} s "
            f"| {_fmt(r.app['peak_rss_mb'], 0)} MB | {_per_entry_cell(r, 'statements', 2)} | "
            f"{_per_entry_cell(r, 'commits', 3)} | {_fmt(1000 * r.per_entry('cpu_s'))} | "
            f"{_fmt(r.clio_api / max(r.created, 1), 4)} | {r.qbo_api} ({r.qbo_floor}) |")
    paced = [r for r in results if r.paced]
    for r in paced:
        assert r.bound_s is not None
        shared = f" by {r.replicas} replicas at once (a share each, one Clio account)" \
            if r.replicas > 1 else ""
        lines += [
            "",
            f"Paced: {r.purchases:,} purchases on {r.database}"
            f"{shared}"
            f" with Clio at {CLIO_LIMIT} "
            f"requests per window, the window compressed {speedup:g}× "
            f"({60 / speedup:g} s): {r.clio_api:,} Clio calls, bound "
            f"{_fmt(r.bound_s, 1)} s (⌈calls ÷ {CLIO_LIMIT}⌉ windows), wall "
            f"{_fmt(r.app['wall_s'], 1)} s: **{_fmt(r.app['wall_s'] / r.bound_s, 3)} × the "
            f"bound**, {r.clio_429} responses 429.",
        ]
    lines += ["", *targets(results)]
    return "\n".join(lines) + "\n"


def targets(results: list[Result]) -> list[str]:
    def largest(database: str) -> Result | None:
        found = [r for r in results if r.database == database and not r.paced]
        return max(found, key=lambda r: r.purchases) if found else None

    def smallest(database: str) -> Result | None:
        found = [r for r in results if r.database == database and not r.paced]
        return min(found, key=lambda r: r.purchases) if found else None

    rows = ["| target | measured | met |", "|---|---|---|"]
    sqlite, first = largest("SQLite"), smallest("SQLite")
    if sqlite and first:
        rss = sqlite.app["peak_rss_mb"]
        rows.append(f"| peak RSS at {sqlite.purchases:,} ≤ {TARGETS['rss_mb']:g} MB | "
                    f"{rss:.0f} MB | {'yes' if rss <= TARGETS['rss_mb'] else 'no'} |")
        growth = rss / first.app["peak_rss_mb"]
        rows.append(f"| peak RSS ≤ {TARGETS['rss_growth']}× the {first.purchases:,} peak | "
                    f"{growth:.2f}× | {'yes' if growth <= TARGETS['rss_growth'] else 'no'} |")
    for r in (largest("SQLite"), largest("PostgreSQL")):
        if r is None:
            continue
        statements, commits = r.per_entry("statements"), r.per_entry("commits")
        rows.append(f"| SQL statements per entry ≤ {TARGETS['statements']} ({r.database}, "
                    f"{r.purchases:,}) | {statements:.2f} | "
                    f"{'yes' if statements <= TARGETS['statements'] else 'no'} |")
        rows.append(f"| commits per entry ≤ {TARGETS['commits']} ({r.database}) | "
                    f"{commits:.3f} | {'yes' if commits <= TARGETS['commits'] else 'no'} |")
        if r.app.get("pacing_commits"):
            own_s, own_c = _own(r, "statements"), _own(r, "commits")
            rows.append(f"| the same without the pacing grants ({r.database}) | "
                        f"{own_s:.2f} statements, {own_c:.3f} commits | "
                        f"{'yes' if own_s <= TARGETS['statements'] else 'no'}, "
                        f"{'yes' if own_c <= TARGETS['commits'] else 'no'} |")
        cpu = 1000 * r.per_entry("cpu_s")
        rows.append(f"| app CPU per entry ≤ {TARGETS['cpu_ms']} ms ({r.database}, "
                    f"{r.purchases:,}) | {cpu:.2f} ms | "
                    f"{'yes' if cpu <= TARGETS['cpu_ms'] else 'no'} |")
        clio = r.clio_api / max(r.created, 1)
        rows.append(f"| Clio calls per entry ≤ {TARGETS['clio_per_entry']} ({r.database}) | "
                    f"{clio:.4f} | {'yes' if clio <= TARGETS['clio_per_entry'] else 'no'} |")
        rows.append(f"| QuickBooks calls at the floor ({r.database}) | {r.qbo_api} of "
                    f"{r.qbo_floor} | {'yes' if r.qbo_api <= r.qbo_floor else 'no'} |")
    if sqlite:
        wall = sqlite.app["wall_s"]
        scaled = wall * 50_000 / sqlite.purchases
        note = "" if sqlite.purchases == 50_000 else f" (measured at {sqlite.purchases:,})"
        rows.append(f"| 50,000 wall ≤ {TARGETS['wall_sqlite_s']:g} s on SQLite{note} | "
                    f"{scaled:.0f} s | {'yes' if scaled <= TARGETS['wall_sqlite_s'] else 'no'} |")
    pg = largest("PostgreSQL")
    if pg and sqlite:
        same = next((r for r in results if r.database == "SQLite" and not r.paced
                     and r.purchases == pg.purchases), None)
        if same:
            ratio = pg.app["wall_s"] / same.app["wall_s"]
            rows.append(f"| PostgreSQL ≤ {TARGETS['pg_ratio']}× SQLite ({pg.purchases:,}) | "
                        f"{ratio:.2f}× | {'yes' if ratio <= TARGETS['pg_ratio'] else 'no'} |")
    for r in results:
        if r.paced and r.bound_s:
            ratio = r.app["wall_s"] / r.bound_s
            ok = ratio <= TARGETS["paced_ratio"] and r.clio_429 == 0
            rows.append(f"| paced wall ÷ bound ≤ {TARGETS['paced_ratio']}, no 429 "
                        f"({r.database}, {r.replicas} replica{'s' if r.replicas > 1 else ''}, "
                        f"{r.purchases:,}) | {ratio:.3f}, {r.clio_429} × 429 | "
                        f"{'yes' if ok else 'no'} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["app"]:
        parser = argparse.ArgumentParser(prog="bench.backfill_bench app")
        parser.add_argument("--firm", type=int, required=True)
        parser.add_argument("--ids", help="a JSON file of the purchase ids to import")
        parsed = parser.parse_args(args[1:])
        return app_main(parsed.firm, parsed.ids)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(str(n) for n in SIZES))
    parser.add_argument("--database-url", default=os.environ.get("HARDCOST_BENCH_PG_URL"),
                        help="also run on this PostgreSQL database (its schema is dropped)")
    parser.add_argument("--paced", type=int, default=50_000,
                        help="purchases for the paced run (0: none)")
    parser.add_argument("--speedup", type=float, default=60.0,
                        help="how much the paced run's rate-limit window is compressed")
    parser.add_argument("--paced-replicas", type=int, default=2,
                        help="app processes importing the paced run at once on PostgreSQL")
    parser.add_argument("--no-sqlite", action="store_true",
                        help="only the PostgreSQL rounds (with --database-url)")
    parser.add_argument("--out", default="docs/benchmarks.md")
    options = parser.parse_args(args)
    os.environ.setdefault("HARDCOST_SECRET_KEY", generate_key())
    sizes = [int(s) for s in options.sizes.split(",") if s.strip()]
    results: list[Result] = []
    urls = [None, *([options.database_url] if options.database_url else [])]
    for url in urls[1:] if options.no_sqlite and options.database_url else urls:
        for size in sizes:
            results.append(bench_one(size, url, paced=False, speedup=options.speedup))
    if options.paced:
        results.append(bench_one(options.paced, None, paced=True, speedup=options.speedup))
        if options.database_url:  # replicas sharing the Clio account's pacing in PostgreSQL
            results.append(bench_one(options.paced, options.database_url, paced=True,
                                     speedup=options.speedup,
                                     replicas=options.paced_replicas))
    shown = ["<PostgreSQL>" if "://" in a else a for a in args]
    command = "python -m bench.backfill_bench " + shlex.join(shown)
    report = render(results, command=command.strip(), speedup=options.speedup)
    write_section(Path(options.out), BACKFILL_SECTION, report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

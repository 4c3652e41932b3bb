"""Progress estimate benchmark (issue 16): how good is "about 32 minutes left"?

    python -m bench.progress_bench [--purchases 2000] [--speedup 60] [--out docs/benchmarks.md]

Seeds the benchmark firm (``bench.import_bench.seed_firm``: clients with one matter or
several, so some expenses are written and some wait) and runs ONE first import against a
sandbox Clio paced to its real 50 requests per window, the window compressed ``--speedup``
times (60: one second stands for a minute). The run's ``on_progress`` is hardcost's own
``sync.live.LiveProgress``, publishing every 15 s of compressed time, as in production. Each
publication's estimate of the time left is compared with the time the run really took from
then on; the issue's target is within 20% at the halfway point. Times are reported in the
uncompressed minutes a firm would see. Rewrites only its own section of
``docs/benchmarks.md``; always exits 0 unless the benchmark itself crashes.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.backfill_bench import database
from bench.import_bench import connect_seeded
from bench.sections import PROGRESS_SECTION, write_section
from hardcost.sandbox.world import SandboxWorld
from hardcost.sync.crypto import generate_key
from hardcost.sync.engine import make_engine, make_session_factory
from hardcost.sync.live import PROGRESS_AFTER, PROGRESS_EVERY, LiveFigures, LiveProgress

PURCHASES = 2_000
CLIENTS = 150
SEED = 7
CLIO_LIMIT = 50  # requests per window, as Clio
TARGET = 0.20  # the estimate at the halfway point, within 20% of the real time left
POINTS = (0.25, 0.5, 0.75)


@dataclass(frozen=True)
class Point:
    fraction: float
    handled: int
    total: int | None
    estimate_s: float | None  # compressed seconds
    actual_s: float

    @property
    def error(self) -> float | None:
        if self.estimate_s is None or self.actual_s <= 0:
            return None
        return (self.estimate_s - self.actual_s) / self.actual_s


@dataclass(frozen=True)
class Result:
    database: str
    purchases: int
    speedup: float
    wall_s: float
    handled: int
    imported: int
    waiting: int
    publications: int
    points: list[Point]
    first_estimate_at: float | None  # fraction done when the first estimate was shown
    totals: list[int]  # the "of N" each publication showed


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def bench(purchases: int, speedup: float, database_url: str | None) -> Result:
    label = "PostgreSQL" if database_url else "SQLite"
    with database(database_url) as url, SandboxWorld.start() as world:
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        world.clio.rate_limit_per_minute = CLIO_LIMIT
        world.clio.rate_window_seconds = 60.0 / speedup
        progress(f"{label}: seeding {purchases:,} purchases …")
        world.clock.advance(-300)
        _, firm_id = connect_seeded(world, sessions, purchases=purchases,
                                    clients=CLIENTS, seed=SEED)
        world.clock.advance(300)
        importer = world.importer(sessions, firm_id)
        samples: list[tuple[float, LiveFigures]] = []
        live = LiveProgress(sessions, firm_id, stopping=lambda: importer.stopping,
                            publish=lambda f, first: samples.append((time.monotonic(), f)),
                            after=PROGRESS_AFTER / speedup, every=PROGRESS_EVERY / speedup)
        importer.on_progress = live
        progress(f"{label}: importing {purchases:,} with Clio paced at {CLIO_LIMIT} per "
                 f"{60.0 / speedup:.2f} s …")
        started = time.monotonic()
        summary = importer.run(trigger="manual")
        ended = time.monotonic()
        engine.dispose()
    if summary.error:
        raise RuntimeError(f"the run stopped: {summary.error}")
    points = []
    for fraction in POINTS:
        at = next(((t, f) for t, f in samples
                   if f.total and f.handled >= fraction * summary.handled), None)
        if at is None:
            continue
        t, f = at
        points.append(Point(fraction, f.handled, f.total, f.remaining_s, ended - t))
    first = next((f.handled / max(summary.handled, 1) for _, f in samples
                  if f.remaining_s is not None), None)
    result = Result(label, purchases, speedup, ended - started, summary.handled,
                    summary.imported, summary.waiting, len(samples), points, first,
                    [f.total for _, f in samples if f.total is not None])
    progress(f"  {summary.handled:,} entries in {result.wall_s:.1f} s, "
             f"{len(samples)} publications")
    return result


def _minutes(compressed_s: float | None, speedup: float) -> str:
    if compressed_s is None:
        return "—"
    return f"{compressed_s * speedup / 60:,.1f} min"


def render(results: list[Result], *, command: str) -> str:
    lines = [
        f"{PROGRESS_SECTION}: how good is the estimate of the time left (issue 16)",
        "",
        f"Command: `{command}`. Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}. One first import of the benchmark firm against a "
        f"sandbox Clio paced at its real {CLIO_LIMIT} requests per window, the window "
        "compressed (see the speed-up); the run's progress is published as in production "
        "(after 15 s, then every 15 s, of uncompressed time). At each point, the estimate "
        "the message showed is compared with the time the run really took from then on. "
        "Minutes are uncompressed (what a firm would see).",
        "",
    ]
    for r in results:
        lines += [
            f"**{r.database}, {r.purchases:,} purchases** (speed-up {r.speedup:g}×): "
            f"{r.handled:,} entries ({r.imported:,} written, {r.waiting:,} waiting for a "
            f"choice) in {_minutes(r.wall_s, r.speedup)}; {r.publications} updates of the "
            "message; the first estimate was shown at "
            + (f"{r.first_estimate_at:.0%} done" if r.first_estimate_at is not None else "—")
            + "; the \"of N\" shown ranged "
            + (f"{min(r.totals):,}–{max(r.totals):,}" if r.totals else "—")
            + f" (actual {r.handled:,}).",
            "",
            "| Point | Done | Estimated left | Really left | Error | Target |",
            "|---|---|---|---|---|---|",
        ]
        for p in r.points:
            error = p.error
            target = ""
            if p.fraction == 0.5:
                ok = error is not None and abs(error) <= TARGET
                target = f"within ±{TARGET:.0%}: **{'met' if ok else 'not met'}**"
            lines.append(
                f"| {p.fraction:.0%} | {p.handled:,} of {p.total or 0:,} | "
                f"{_minutes(p.estimate_s, r.speedup)} | {_minutes(p.actual_s, r.speedup)} | "
                + (f"{error:+.1%}" if error is not None else "—") + f" | {target} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--purchases", type=int, default=PURCHASES)
    parser.add_argument("--speedup", type=float, default=60.0,
                        help="how much Clio's rate-limit window is compressed")
    parser.add_argument("--database-url", default=None,
                        help="run on this PostgreSQL database instead (its schema is dropped); "
                             "its shared Clio budget counts real minutes, so the run is not "
                             "compressed there: 2,000 purchases take about 40 minutes")
    parser.add_argument("--out", default="docs/benchmarks.md")
    options = parser.parse_args(args)
    if options.purchases < 1 or options.speedup <= 0:
        parser.error("--purchases must be at least 1 and --speedup more than 0")
    os.environ.setdefault("HARDCOST_SECRET_KEY", generate_key())
    results = [bench(options.purchases, options.speedup, options.database_url)]
    shown = ["<PostgreSQL>" if "://" in a else a for a in args]
    report = render(results, command=("python -m bench.progress_bench " +
                                      shlex.join(shown)).strip())
    write_section(Path(options.out), PROGRESS_SECTION, report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

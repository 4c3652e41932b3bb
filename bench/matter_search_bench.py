"""Matter search benchmark: the "which matter?" menu of an expense with no client, for a firm
with many matters.

    python -m bench.matter_search_bench [--matters 10000] [--requests 200] [--concurrency 8]
                                        [--out docs/benchmarks.md] [--database-url URL]

Sets up a firm on the sandboxes (QuickBooks, Clio and Slack over real HTTP on loopback) with
``--matters`` open and pending Clio matters (five per client), and one QuickBooks expense whose
line carries no customer. One import (``Importer.run``) makes it wait and reads every matter
into the firm's local copy (``sync.matter_cache``): its time and Clio calls are reported. Then
the search menu's options requests are sent as Slack sends them — ``block_suggestion``
payloads, signed, over HTTP into the real Bolt app — ``--requests`` of each kind of query one
at a time, then all kinds mixed ``--concurrency`` at a time. A request's time runs from send
until the HTTP response (the options): Slack waits at most 3 s for it. Every answer is checked
(HTTP 200, at most 100 options, each a matter of the firm). Writes its section of
``docs/benchmarks.md`` (``bench.sections``); exits 0 unless the benchmark itself crashes —
benchmarks report, they don't assert.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench.sections import MATTER_SEARCH_SECTION, write_section
from bench.slack_ack_bench import BenchFirm
from hardcost.sandbox.qbo import account_line
from hardcost.sandbox.server import serve_in_thread
from hardcost.sandbox.slack import SlackSandbox
from hardcost.sandbox.slack_rig import SlackRig, make_rig
from hardcost.sandbox.world import SandboxWorld
from hardcost.sync import matter_cache
from hardcost.sync.db import upgrade
from hardcost.sync.engine import make_engine, make_session_factory
from hardcost.sync.store import WaitingExpense, WaitReason

START_DATE = date(2026, 1, 1)
RATE_LIMIT = 1_000_000  # Clio's sandbox limit (50/min) raised: the copy's calls are counted
MATTERS_PER_CLIENT = 5
SLACK_LIMIT_S = 3.0
DESCRIPTIONS = ("Lease dispute", "Employment claim", "Estate planning", "Contract review",
                "Personal injury")


@dataclass(frozen=True)
class Query:
    kind: str  # what the row of the report says
    text: Callable[[int], str]  # the n-th request's search text


def queries(matters: int) -> list[Query]:
    clients = max(1, matters // MATTERS_PER_CLIENT)
    return [
        Query("display number, 3 digits (many prefix matches)", lambda n: f"{n % 10:03d}"),
        Query("display number, whole", lambda n: f"{(n * 7919) % matters + 1:05d}"),
        Query("client name, two words", lambda n: f"client {(n * 31) % clients + 1:05d}"),
        Query("description word (a fifth of all matters)", lambda n: DESCRIPTIONS[n % 5]),
        Query("one letter (matches nearly all)", lambda n: "ae"[n % 2]),
        Query("no match", lambda n: f"zzq{n}"),
        Query("hostile: 100,000 characters of % and _", lambda n: "%_" * 50_000),
    ]


@dataclass(frozen=True)
class Sample:
    seconds: float
    ok: bool
    options: int


@dataclass(frozen=True)
class Stats:
    n: int
    p50: float
    p95: float
    p99: float
    max: float


def stats(seconds: list[float]) -> Stats:
    """Milliseconds; percentiles by linear interpolation between the closest ranks."""
    ms = sorted(s * 1000 for s in seconds)
    if len(ms) == 1:
        return Stats(1, ms[0], ms[0], ms[0], ms[0])
    cuts = statistics.quantiles(ms, n=100, method="inclusive")
    return Stats(len(ms), cuts[49], cuts[94], cuts[98], ms[-1])


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextmanager
def scene(matters: int, database_url: str | None) -> Iterator[tuple[SlackRig, int, dict[
        str, Any]]]:
    """The rig, the waiting expense's id, and what the import that asked it cost."""
    with tempfile.TemporaryDirectory(prefix="hardcost-search-bench-") as tmp:
        db = make_engine(database_url or f"sqlite:///{Path(tmp) / 'bench.sqlite'}")
        try:
            upgrade(db)
            sessions = make_session_factory(db)
            with SandboxWorld.start() as world:
                world.clio.rate_limit_per_minute = RATE_LIMIT
                books = world.open_books("Search Bench LLP")
                firm_id = world.connect_firm(sessions, books.company, books.account,
                                             name="Search Bench LLP", start_date=START_DATE,
                                             import_account_ids=[books.import_account_id],
                                             expense_category_id=books.category_id)
                firm = BenchFirm(world, sessions, firm_id, books.company, books.account,
                                 books.import_account_id)
                progress(f"seeding {matters:,} matters …")
                for n in range(0, matters, MATTERS_PER_CLIENT):
                    contact = firm.clio.add_contact(f"Client {n // MATTERS_PER_CLIENT + 1:05d} "
                                                    "Holdings")
                    for m in range(min(MATTERS_PER_CLIENT, matters - n)):
                        firm.clio.add_matter(contact["id"], description=DESCRIPTIONS[m],
                                             status="Open" if m % 4 else "Pending")
                firm.qbo.add_purchase(payment_type="Check", txn_date="2026-02-03",
                                      doc_number="5001", lines=[account_line(
                                          "64.20", firm.import_account,
                                          description="Courier, no client tagged")])
                importer = world.importer(sessions, firm_id)
                progress("importing (the expense waits; the matters are read) …")
                started = time.perf_counter()
                summary = importer.run(trigger="bench")
                facts = {"import_s": time.perf_counter() - started,
                         "clio_calls": importer.clio.calls, "waiting": summary.waiting}
                with sessions() as session:
                    facts["cached"] = matter_cache.count(session, firm_id)
                    waiting_id = session.scalars(select(WaitingExpense.id).where(
                        WaitingExpense.firm_id == firm_id,
                        WaitingExpense.reason == WaitReason.NO_CUSTOMER.value)).one()
                slack = SlackSandbox(clock=world.clock)
                slack_server = serve_in_thread(slack)
                slack.base_url = slack_server.url
                rig = make_rig(firm, slack, slack_server, "http")
                try:
                    yield rig, waiting_id, facts
                finally:
                    rig.stop()
                    slack_server.stop()
        finally:
            db.dispose()


def ask(rig: SlackRig, waiting_id: int, text: str) -> Sample:
    started = time.perf_counter()
    response = rig.options(f"hc_prompt:{waiting_id}", "hc_search_matter", text)
    seconds = time.perf_counter() - started
    try:
        options = response.json().get("options") if response.status_code == 200 else None
    except ValueError:
        options = None
    ok = isinstance(options, list) and len(options) <= 100 and all(
        str(o.get("value", "")).startswith(f"{waiting_id}:") for o in options)
    return Sample(seconds, ok, len(options) if isinstance(options, list) else -1)


def ms(value: float) -> str:
    return f"{value:,.1f}"


def report(args: argparse.Namespace, facts: dict[str, Any],
           rows: list[tuple[str, list[Sample]]], mixed: list[Sample], mixed_s: float) -> str:
    command = " ".join(["python -m bench.matter_search_bench", *map(shlex.quote, args.raw)])
    lines = [f"{MATTER_SEARCH_SECTION} ({args.matters:,} matters)", "",
             "The search menu of an expense with no client (an external select): its options "
             "request sent as Slack sends it (signed `block_suggestion`, HTTP into the real "
             "Bolt app), answered from the firm's local copy of its open and pending matters. "
             "Slack waits at most 3 s.", "",
             f"`{command}` on {platform.python_implementation()} {platform.python_version()}, "
             f"{platform.machine()}, database: {'SQLite' if not args.database_url else 'given'}"
             ".", "",
             f"- The import that asked the question read {facts['cached']:,} matters into the "
             f"copy in {facts['import_s']:.1f} s with {facts['clio_calls']} Clio calls "
             "(≤ 200 a page; against Clio's 50 a minute that is about "
             f"{facts['clio_calls'] / 50:.1f} min of the firm's budget, once an hour at most).",
             "", "| Query | n | p50 ms | p95 ms | p99 ms | max ms | options (last) | not sane |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    every: list[Sample] = []
    for kind, samples in rows:
        s = stats([x.seconds for x in samples])
        every += samples
        bad = sum(not x.ok for x in samples)
        lines.append(f"| {kind} | {s.n} | {ms(s.p50)} | {ms(s.p95)} | {ms(s.p99)} | "
                     f"{ms(s.max)} | {samples[-1].options} | {bad} |")
    s = stats([x.seconds for x in every])
    lines.append(f"| **all, one at a time** | {s.n} | {ms(s.p50)} | {ms(s.p95)} | {ms(s.p99)} | "
                 f"{ms(s.max)} | | {sum(not x.ok for x in every)} |")
    m = stats([x.seconds for x in mixed])
    lines.append(f"| **all kinds mixed, {args.concurrency} at a time** | {m.n} | {ms(m.p50)} | "
                 f"{ms(m.p95)} | {ms(m.p99)} | {ms(m.max)} | | "
                 f"{sum(not x.ok for x in mixed)} |")
    worst = max(s.max, m.max) / 1000
    lines += ["", f"- Slowest answer {worst * 1000:,.0f} ms: "
              + ("✓ within Slack's 3 s" if worst < SLACK_LIMIT_S else "✗ over Slack's 3 s")
              + f"; mixed throughput {len(mixed) / mixed_s:,.0f} requests/s.",
              "- Sane: HTTP 200, at most 100 options, each a matter of this expense's firm "
              "(`<prompt id>:<matter id>`)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.matter_search_bench",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--matters", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200, help="of each kind of query")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", default="docs/benchmarks.md")
    parser.add_argument("--database-url", default=None)
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)
    args.raw = raw
    with scene(args.matters, args.database_url) as (rig, waiting_id, facts):
        rows = []
        for query in queries(args.matters):
            progress(f"{query.kind} …")
            rows.append((query.kind, [ask(rig, waiting_id, query.text(n))
                                      for n in range(args.requests)]))
        plan = [q.text(n) for n in range(args.requests) for q in queries(args.matters)]
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            mixed = list(pool.map(lambda text: ask(rig, waiting_id, text), plan))
        mixed_s = time.perf_counter() - started
    text = report(args, facts, rows, mixed, mixed_s)
    write_section(Path(args.out), MATTER_SEARCH_SECTION, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

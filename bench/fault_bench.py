"""Import under Clio faults: one run of a firm's backlog while a share of Clio's calls fail.

    python -m bench.fault_bench [--purchases 1000] [--clients 150] [--rate 0.2]
                                [--fault-seeds 3] [--seed 7] [--read-timeout 0.5] [--hang 0.75]
                                [--database-url URL] [--out docs/benchmarks.md]

Seeds the import benchmark's firm (``bench.import_bench.seed_firm``) and runs ONE import with
the real engine over real HTTP on loopback while the sandbox Clio fails ``--rate`` of its API
calls (``sandbox.clio.random_faults``: 429 with Retry-After, 500, 502, 502 after the request
took effect, and no answer within the client's read timeout before or after the request took
effect, each equally often), once per fault seed, and once with no faults (the baseline, same
firm). Counts what Clio holds per note marker against what the seed implies (duplicates and
missing entries must be 0), the links and open failures the run left, Clio calls and marker
look-ups from the sandbox's own log, the faults injected by kind, and wall time; then runs the
next scheduled import (15 minutes later, faults still on) to show what it settles. Replaces its
own section of ``--out`` and keeps the rest; always exits 0 unless the benchmark itself
crashes — benchmarks report, they don't assert.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bench.import_bench import (
    MARKER,
    RATE_LIMIT,
    Check,
    SeededFirm,
    connect_seeded,
    database,
    is_api,
    progress,
    table,
)
from bench.sections import FAULT_SECTION, write_section
from hardcost.sandbox.clio import (
    BAD_GATEWAY,
    FAULT_KINDS,
    FAULT_WEIGHTS,
    LATE_REPLY,
    LOST_REPLY,
    RATE_LIMITED,
    SERVER_ERROR,
    TIMEOUT,
    random_faults,
)
from hardcost.sandbox.faults import Call, RandomFaults
from hardcost.sandbox.world import SandboxWorld
from hardcost.sync.http import RetryPolicy
from hardcost.sync.importer import Importer
from hardcost.sync.run_state import CIRCUIT_BREAK_AFTER
from hardcost.sync.store import EntryLink, Failure, LinkState
from hardcost.sync.summary import RunSummary
from hardcost.sync.writer import HEAL_TRIES

SEED = 7
FAULT_SEED = 1
POST_ACTIVITY = "/api/v4/activities.json"
KIND_LABELS = {
    RATE_LIMITED: "429 (Retry-After)",
    SERVER_ERROR: "500",
    BAD_GATEWAY: "502",
    LOST_REPLY: "502 after it took effect",
    TIMEOUT: "timeout",
    LATE_REPLY: "timeout after it took effect",
}
PRODUCTION = RetryPolicy()
FAST_RETRY = RetryPolicy(attempts=4, backoff=0.01, max_wait=0.2, throttle_wait=0.05)
"""The client's waits here (the sandbox world's): what a fault costs in calls, not in time."""
PRODUCTION_READ_TIMEOUT = 60.0  # ClioClient's default (10 s to connect, 60 s to read)


@dataclass
class Contents:
    """What Clio holds against what the seed implies, and what the store recorded."""

    entries: int
    duplicates: int  # markers in Clio more than once (counted once each)
    missing: int  # expected markers absent from Clio
    unexpected: int  # entries whose marker the seed does not imply
    links: Counter[str]
    open_failures: int


@dataclass
class RunResult:
    summary: RunSummary
    wall_s: float
    calls: list[Call]
    contents: Contents
    waited_s: float  # the Clio client's Retry-After, pacing and healing waits in the run
    faults: Counter[str]  # injected during this run, by kind
    faults_on_posts: int

    @property
    def clio_api(self) -> int:
        return sum(1 for c in self.calls if is_api(c))

    @property
    def posts(self) -> int:
        return sum(1 for c in self.calls if c.method == "POST" and c.path == POST_ACTIVITY)

    @property
    def lookups(self) -> int:
        """Searches of entries by note marker (``GET /activities.json?query=``)."""
        return sum(1 for c in self.calls if c.method == "GET" and c.path == POST_ACTIVITY
                   and "query=" in c.query)

    @property
    def injected(self) -> int:
        return sum(self.faults.values())

    def per_entry(self, count: int) -> float | None:
        created = self.summary.imported
        return count / created if created else None


@dataclass
class FaultResult:
    rate: float
    fault_seed: int | None  # None: the baseline (no faults)
    firm: SeededFirm
    first: RunResult
    following: RunResult
    checks: list[Check] = field(default_factory=list)

    @property
    def expected(self) -> int:
        return len(self.firm.expected_imported())

    @property
    def label(self) -> str:
        if self.fault_seed is None:
            return "0% (baseline)"
        return f"{self.rate:.0%}, fault seed {self.fault_seed}"


def contents(firm: SeededFirm, sessions: sessionmaker[Session], firm_id: int) -> Contents:
    expected = {m for m, e in firm.expected.items() if e.matter_id is not None}
    found = (MARKER.search(a.get("note") or "") for a in list(firm.account.activities.values()))
    markers = Counter(match.group() if match else "" for match in found)
    with sessions() as session:
        links = Counter(str(s.value if isinstance(s, LinkState) else s) for s in session.scalars(
            select(EntryLink.state).where(EntryLink.firm_id == firm_id)))
        failures = len(list(session.scalars(select(Failure.id).where(
            Failure.firm_id == firm_id, Failure.resolved_at.is_(None)))))
    return Contents(
        entries=sum(markers.values()),
        duplicates=sum(1 for n in markers.values() if n > 1),
        missing=len(expected - markers.keys()),
        unexpected=sum(n for m, n in markers.items() if m not in expected),
        links=links, open_failures=failures)


def answered(world: SandboxWorld, engine: Importer, logged_before: int, sent_before: int,
             hang: float) -> None:
    """Wait until the sandbox has answered (and logged) every API call the client sent: a
    reply the client gave up on is logged when the sandbox sends it, up to ``hang`` later."""
    deadline = time.monotonic() + 10 * hang + 5
    while True:
        logged = sum(1 for c in world.clio.calls.all()[logged_before:] if is_api(c))
        if logged >= engine.clio.calls - sent_before or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def measure(world: SandboxWorld, engine: Importer, faults: RandomFaults, firm: SeededFirm,
            sessions: sessionmaker[Session], firm_id: int, hang: float) -> RunResult:
    calls_before = len(world.clio.calls.all())
    sent_before = engine.clio.calls
    faults_before = Counter(faults.injected)
    posts_before = sum(n for (_, method), n in faults.by_method.items() if method == "POST")
    waited_before = engine.clio.waited
    started = time.perf_counter()
    summary = engine.run(trigger="bench")
    wall = time.perf_counter() - started
    answered(world, engine, calls_before, sent_before, hang)
    posts_after = sum(n for (_, method), n in faults.by_method.items() if method == "POST")
    return RunResult(summary, wall, world.clio.calls.all()[calls_before:],
                     contents(firm, sessions, firm_id), engine.clio.waited - waited_before,
                     Counter(faults.injected) - faults_before, posts_after - posts_before)


def bench_faults(*, purchases: int, clients: int, seed: int, rate: float,
                 fault_seed: int | None, read_timeout: float, hang: float, retry_after: int,
                 database_url: str | None) -> tuple[FaultResult, str]:
    label = "baseline" if fault_seed is None else f"faults-{fault_seed}"
    with database(database_url, label) as (sessions, shown), SandboxWorld.start() as world:
        world.clio.rate_limit_per_minute = RATE_LIMIT
        world.clio_timeout = (10.0, read_timeout)
        world.retry = FAST_RETRY
        firm, firm_id = connect_seeded(world, sessions, purchases=purchases,
                                       clients=clients, seed=seed)
        world.clock.advance(300)
        engine = world.importer(sessions, firm_id)
        faults = random_faults(0.0 if fault_seed is None else rate, seed=fault_seed or 0,
                               hang=hang, retry_after=retry_after)
        world.clio.faults.random = faults
        progress(f"importing {purchases:,} purchases, "
                 + ("no faults" if fault_seed is None else
                    f"{rate:.0%} of Clio calls failing (fault seed {fault_seed})") + " …")
        first = measure(world, engine, faults, firm, sessions, firm_id, hang)
        progress(f"  {first.summary.imported:,} entries in {first.wall_s:.1f}s, "
                 f"{first.injected} faults, {first.contents.duplicates} duplicates, "
                 f"{first.contents.missing} missing")
        world.clock.advance(15 * 60)
        following = measure(world, engine, faults, firm, sessions, firm_id, hang)
        result = FaultResult(rate, fault_seed, firm, first, following)
        result.checks = checks(result, world)
        return result, shown


def checks(result: FaultResult, world: SandboxWorld) -> list[Check]:
    first, c = result.first, result.first.contents
    summary = first.summary
    kinds = set(first.faults)
    made = [
        Check("the run finished without error", summary.error is None, summary.error or ""),
        Check("no entry is in Clio twice", c.duplicates == 0 and c.unexpected == 0,
              f"{c.duplicates} markers twice or more, {c.unexpected} unexpected"),
        Check("no entry is missing from Clio after ONE run", c.missing == 0,
              f"{c.missing} of {result.expected:,} missing"),
        Check("every link is created (none pending), no failure open",
              set(c.links) <= {LinkState.CREATED.value} and c.open_failures == 0,
              f"links {dict(c.links)}, {c.open_failures} open failures"),
        Check("imported = entries the seed implies = Clio's entries",
              summary.imported == result.expected == c.entries,
              f"{summary.imported:,} / {result.expected:,} / {c.entries:,}"),
        Check("engine's Clio counter = sandbox log", summary.clio_calls == first.clio_api,
              f"{summary.clio_calls:,} vs {first.clio_api:,}"),
        Check("no request failed the Clio OpenAPI check", not world.clio.schema_errors,
              "; ".join(world.clio.schema_errors[:3])),
    ]
    if result.fault_seed is not None and first.injected >= len(FAULT_KINDS):
        # The kinds are dealt from a deck: any len(FAULT_KINDS) faults in a row hold them all.
        made.append(Check("every kind of fault was injected", kinds == set(FAULT_KINDS),
                          "none of " + ", ".join(sorted(set(FAULT_KINDS) - kinds))
                          if kinds != set(FAULT_KINDS) else ""))
    after = result.following.contents
    made.append(Check("the next run leaves nothing doubled or missing",
                      after.duplicates == 0 and after.missing == 0 and after.unexpected == 0,
                      f"{after.duplicates} twice, {after.missing} missing"))
    return made


# -- the report -------------------------------------------------------------------------------

def ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}×" if base else "n/a"


def per(value: float | None, places: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{places}f}"


def production_wait(run: RunResult, retry_after: int) -> float:
    """Seconds these faults would add with the production client: a 429 waits its Retry-After,
    a timeout the 60 s read timeout, and each 5xx or timeout at least the first backoff."""
    backoff = PRODUCTION.backoff_wait(1)
    f = run.faults
    return (f[RATE_LIMITED] * retry_after
            + (f[TIMEOUT] + f[LATE_REPLY]) * PRODUCTION_READ_TIMEOUT
            + (f[SERVER_ERROR] + f[BAD_GATEWAY] + f[LOST_REPLY] + f[TIMEOUT] + f[LATE_REPLY])
            * backoff)


def figures_table(results: list[FaultResult], retry_after: int) -> list[str]:
    base = results[0]

    def row(label: str, fn: object) -> list[str]:
        return [label, *[fn(r) for r in results]]  # type: ignore[operator]

    def kinds(r: FaultResult) -> str:
        return " / ".join(str(r.first.faults[k]) for k in KIND_LABELS)

    rows = [
        row("Purchases read", lambda r: f"{r.first.summary.purchases_read:,}"),
        row("Entries the seed implies (one open matter) / waiting for a choice",
            lambda r: f"{r.expected:,} / {len(r.firm.expected_waiting()):,}"),
        row("**Entries created in Clio (one run)**",
            lambda r: f"**{r.first.summary.imported:,}**"),
        row("**Duplicates (markers in Clio more than once)**",
            lambda r: f"**{r.first.contents.duplicates}**"),
        row("**Missing (implied, not in Clio)**", lambda r: f"**{r.first.contents.missing}**"),
        row("Links created / pending",
            lambda r: f"{r.first.contents.links[LinkState.CREATED.value]:,} / "
                      f"{r.first.contents.links[LinkState.PENDING.value]}"),
        row("Open failures after the run", lambda r: str(r.first.contents.open_failures)),
        row("Clio API calls: sandbox log / engine counter",
            lambda r: f"{r.first.clio_api:,} / {r.first.summary.clio_calls:,}"),
        row("**Clio calls per created entry**",
            lambda r: f"**{per(r.first.per_entry(r.first.clio_api))}**"),
        row("`POST /activities.json` per created entry",
            lambda r: per(r.first.per_entry(r.first.posts))),
        row("Faults injected (share of Clio calls)",
            lambda r: f"{r.first.injected:,} ({r.first.injected / r.first.clio_api:.1%})"
            if r.first.clio_api else "0"),
        row("… by kind: " + " / ".join(KIND_LABELS.values()), kinds),
        row("… of them on entry POSTs", lambda r: str(r.first.faults_on_posts)),
        row("Marker look-ups (`GET /activities.json?query=`)",
            lambda r: f"{r.first.lookups:,}"),
        row("Client's counted waits (Retry-After, pacing, healing pauses)",
            lambda r: f"{r.first.waited_s:.2f} s"),
        row("**Wall time of the run (× baseline)**",
            lambda r: f"**{r.first.wall_s:.2f} s** ({ratio(r.first.wall_s, base.first.wall_s)})"),
        row("**Clio calls × baseline**",
            lambda r: f"**{ratio(r.first.clio_api, base.first.clio_api)}**"),
        row("Waiting these faults would add with the production client (estimate)",
            lambda r: f"≈ {production_wait(r.first, retry_after) / 60:.1f} min"),
        row("Next run 15 min later: imported / duplicates / missing / open failures",
            lambda r: f"{r.following.summary.imported} / {r.following.contents.duplicates} / "
                      f"{r.following.contents.missing} / {r.following.contents.open_failures}"),
        row("Next run: Clio calls (faults injected)",
            lambda r: f"{r.following.clio_api} ({r.following.injected})"),
    ]
    return table(["", *[r.label for r in results]], rows)


def span(values: list[float], shown: Callable[[float], str]) -> str:
    """``values`` as one figure, or as ``lowest–highest``."""
    low, high = shown(min(values)), shown(max(values))
    return low if low == high else f"{low}–{high}"


def shows(results: list[FaultResult], read_timeout: float) -> list[str]:
    base, faulted = results[0], results[1:]
    if not faulted:
        return ["- Only the baseline was run (`--fault-seeds 0`)."]
    clean = [r for r in faulted if all(c.ok for c in r.checks)]
    missing = sum(r.first.contents.missing for r in faulted)
    doubled = sum(r.first.contents.duplicates for r in faulted)
    settled = all(r.following.contents.missing == 0 and r.following.contents.duplicates == 0
                  for r in faulted)

    def count(n: float) -> str:
        return f"{n:,.0f}"

    def times(n: float) -> str:
        return f"{n:.2f}×"

    def seconds(n: float) -> str:
        return f"{n:.1f} s"

    rate = faulted[0].rate
    weights = FAULT_WEIGHTS
    share = {kind: weight / sum(weights.values()) for kind, weight in weights.items()}
    unapplied = rate * (share[SERVER_ERROR] + share[BAD_GATEWAY] + share[TIMEOUT])
    last = rate * (1 - share[RATE_LIMITED])  # a 429 on the last try is retried in ApiSession
    exhausted = unapplied ** (HEAL_TRIES - 1) * last
    leftover = 1 - (1 - exhausted) ** base.expected

    lines = [
        f"- **Exactly once in one run:** {len(clean)} of {len(faulted)} faulted imports "
        f"ended with every one of the {base.expected:,} entries the seed implies in Clio "
        "exactly once, every link `created` and no failure open. Over all of them: "
        f"{doubled} duplicates, {missing} {'entry' if missing == 1 else 'entries'} missing "
        "after the first run"
        + ("." if not missing else
           f"; the next run {'settled' if settled else 'did not settle'} "
           f"{'it' if missing == 1 else 'them'} "
           "(the last two rows)."),
        f"- **Calls:** "
        f"{span([r.first.clio_api - base.first.clio_api for r in faulted], count)} Clio "
        f"calls more than the baseline's {base.first.clio_api:,} "
        f"({span([r.first.clio_api / base.first.clio_api for r in faulted], times)}), from "
        f"the {span([r.first.injected for r in faulted], count)} faults: a failed call is "
        "sent again (by `ApiSession` for GETs and 429s, by the importer's healing for POSTs), "
        "and a POST whose outcome was unknown is settled by one of the "
        f"{span([r.first.lookups for r in faulted], count)} marker look-ups — found there, "
        "it is not posted again.",
        f"- **Time:** {span([r.first.wall_s / base.first.wall_s for r in faulted], times)} "
        "the baseline's wall time. Of the extra "
        f"{span([r.first.wall_s - base.first.wall_s for r in faulted], seconds)}, the calls "
        "that timed out account for "
        + span([(r.first.faults[TIMEOUT] + r.first.faults[LATE_REPLY]) * read_timeout
                for r in faulted], seconds)
        + f" ({read_timeout} s each) and the client's waits for "
        f"{span([r.first.waited_s for r in faulted], seconds)}; the rest is the extra calls. "
        "Both waits are shortened here; the estimate row prices the same faults with the "
        "production client, where each timeout costs the 60 s read timeout.",
        f"- **Left for the next run:** an entry whose {HEAL_TRIES} tries all fail keeps a "
        "`pending` link (when a POST may have taken effect) and a transient failure; the "
        "next run settles it by marker and posts only what is absent. With this mix a try "
        f"fails without taking effect with probability {unapplied:.2f} (a 500, a 502 or a "
        f"timeout before Clio acted) and the last try fails with {last:.2f}, so an entry "
        f"runs out of tries about {exhausted * 1_000_000:.1f} times in a million and a run of "
        f"{base.expected:,} entries leaves one for the next run about {leftover:.1%} of the "
        "time; each further try divides that by about "
        f"{1 / unapplied:.0f}. {CIRCUIT_BREAK_AFTER} such entries in a row would stop the "
        "run's writes to Clio.",
        "- **Not in this mix:** a POST that Clio holds past the client's read timeout and "
        "applies afterwards (the sandbox's `SLOW_WRITE`). After a POST that got no answer the "
        "run waits as long again as its read timeout before it looks the entry up, so a write "
        "applied within that time is found, not posted twice "
        "(`tests/test_fault_healing.py`); one Clio applies later still would be posted again.",
    ]
    return lines


def render_section(results: list[FaultResult], *, command: str, database_shown: str,
                   args: argparse.Namespace) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    uname = platform.uname()
    policy = FAST_RETRY
    lines = [
        f"{FAULT_SECTION} ({args.rate:.0%} of calls failing)",
        "",
        f"- **Date:** {now}",
        f"- **Machine:** {platform.platform()} ({uname.machine}), {os.cpu_count()} CPUs",
        f"- **Python:** {platform.python_implementation()} {platform.python_version()}",
        f"- **Command:** `{command}`",
        f"- **Database:** {database_shown}",
        f"- **Firm:** the import benchmark's, seeded with `random.Random({args.seed})`: "
        f"{args.purchases:,} purchases, {args.clients} clients (about 1 in 10 with 2-3 "
        "matters, whose entries wait for a person), identical in every column.",
        f"- **Faults:** the sandbox Clio fails each API call with probability {args.rate:.0%} "
        "(`hardcost.sandbox.clio.random_faults`, drawn from `random.Random(fault seed)` in "
        "the order calls arrive), each kind equally often: "
        + "; ".join(FAULT_KINDS.values())
        + f". Retry-After is {args.retry_after} s; a timeout holds the reply {args.hang} s, "
        f"longer than the client's {args.read_timeout} s read timeout. QuickBooks, OAuth "
        "and the database have no faults.",
        f"- **Client:** the importer as it runs in production (`Writer._post_healing`: up "
        f"to {HEAL_TRIES} tries per entry, a marker look-up after an ambiguous failure; "
        "`ApiSession` retries GETs and 429s), with its waits shortened: "
        f"`RetryPolicy(attempts={policy.attempts}, backoff={policy.backoff}, "
        f"max_wait={policy.max_wait})` (a Retry-After of {args.retry_after} s waits "
        f"{min(args.retry_after, policy.max_wait)} s) and a {args.read_timeout} s read "
        f"timeout (production: attempts {PRODUCTION.attempts}, back-off "
        f"{PRODUCTION.backoff} s, max wait {PRODUCTION.max_wait:.0f} s, read timeout "
        f"{PRODUCTION_READ_TIMEOUT:.0f} s). Clio's rate limit is raised as in the import "
        "benchmark, so every 429 here is an injected one.",
        "- **Measured:** per column, ONE import of the backlog (fresh sandboxes and "
        "database), then the next scheduled run 15 minutes later with the faults still on. "
        "Duplicates and missing entries come from Clio's own records, counted per note "
        "marker `[qbo …]` against the entries the seed implies; calls and look-ups from the "
        "sandbox's request log (the engine's counter must agree); faults from the sandbox's "
        "injection counts.",
        "",
        "### Figures",
        "",
        *figures_table(results, args.retry_after),
        "",
        "### Checks",
        "",
    ]
    for r in results:
        lines.append(f"**{r.label}**")
        lines.append("")
        for check in r.checks:
            mark = "✓" if check.ok else "✗"
            lines.append(f"- {mark} {check.what}" + (f" — {check.detail}" if check.detail else ""))
        lines.append("")
    lines += ["### What it shows", "", *shows(results, args.read_timeout), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fault_bench",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--purchases", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=150)
    parser.add_argument("--rate", type=float, default=0.2,
                        help="the share of Clio API calls that fail (0-1)")
    parser.add_argument("--fault-seeds", type=int, default=3,
                        help="faulted imports, with fault seeds 1, 2, … (0: baseline only)")
    parser.add_argument("--seed", type=int, default=SEED, help="the firm's seed")
    parser.add_argument("--read-timeout", type=float, default=0.5,
                        help="the Clio client's read timeout, seconds")
    parser.add_argument("--hang", type=float, default=0.75,
                        help="how long a timeout fault holds the reply (> --read-timeout)")
    parser.add_argument("--retry-after", type=int, default=1)
    parser.add_argument("--out", default="docs/benchmarks.md")
    parser.add_argument("--database-url",
                        help="use this database instead of a temporary SQLite file per import")
    args = parser.parse_args(argv)
    if args.hang <= args.read_timeout:
        parser.error("--hang must be longer than --read-timeout, or no call times out")
    raw = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m bench.fault_bench", *map(shlex.quote, raw)])

    results: list[FaultResult] = []
    shown = ""
    for fault_seed in [None, *range(FAULT_SEED, FAULT_SEED + args.fault_seeds)]:
        result, shown = bench_faults(
            purchases=args.purchases, clients=args.clients, seed=args.seed, rate=args.rate,
            fault_seed=fault_seed, read_timeout=args.read_timeout, hang=args.hang,
            retry_after=args.retry_after, database_url=args.database_url)
        results.append(result)
    shown = ("a temporary SQLite file (a fresh one per column)" if args.database_url is None
             else f"{shown} (each column a new firm in it)")
    text = render_section(results, command=command, database_shown=shown, args=args)
    print(text)
    out = Path(args.out)
    write_section(out, FAULT_SECTION, text)
    progress(f"section written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Prompt load: how many matter questions staff answer each week, with suggestions and rules.

    python -m bench.prompt_load [--weeks 8] [--clients 40] [--payees 25] [--per-week 150]
                                [--seed 12] [--out docs/benchmarks.md] [--database-url URL]

Simulates a firm on the sandbox QuickBooks and Clio, over real HTTP on loopback: ``--clients``
clients with 1 to 8 open matters each, ``--payees`` recurring payees (QuickBooks vendors), and
about ``--per-week`` expenses a week, entered day by day and imported by one scheduled run a
day. Each client uses a handful of the payees, and each (client, payee) pair's costs belong to
one matter — the firm's habit, and the "true" matter of every expense.

A simulated staff member answers every matter prompt with the true matter, through the code a
click in Slack runs (``sync.choices.choose_matter``), and — from week 2 — accepts the rule
offer on the answered prompt (``sync.matter_rules.create_from_choice``, what the *Always do
this for …* button runs) once that payee has gone to the same matter three times for that
client. It also notes whether the prompt's *Suggested* matter was the true one.

Per week: expenses entered, prompts posted per 100 expenses, expenses imported by a rule,
suggestions shown and right, and wrong assignments (a Clio entry on a matter other than the
expense's true one). Targets: week 8's prompts per 100 at most half of week 1's; no wrong
assignment. Writes its section of ``docs/benchmarks.md`` (``bench.sections``); exits 0 unless
the benchmark itself crashes — benchmarks report, they don't assert.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from random import Random

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bench.sections import PROMPT_SECTION, write_section
from hardcost.sandbox.clio import ClioAccount
from hardcost.sandbox.qbo import QboCompany, account_line
from hardcost.sandbox.world import SandboxWorld
from hardcost.sync import choices, matter_rules
from hardcost.sync.db import upgrade
from hardcost.sync.engine import make_engine, make_session_factory
from hardcost.sync.importer import Importer
from hardcost.sync.store import WaitingExpense, WaitReason

SEED = 12
START = date(2026, 1, 5)  # a Monday
RATE_LIMIT = 1_000_000  # Clio's sandbox limit (50/min by default) raised: calls are not timed
STAFF = "U0STAFF"
RULE_AFTER = 3  # same matter this many times for a (client, payee) → the staff make the rule
RULES_FROM_WEEK = 2
PAYEES_PER_CLIENT = (2, 6)


@dataclass
class Week:
    number: int
    expenses: int = 0
    prompts: int = 0  # matter prompts posted (new questions)
    by_rule: int = 0
    automatic: int = 0  # imported without a person: one matter, or named in the memo
    suggested: int = 0  # prompts answered that carried a suggestion
    suggested_right: int = 0
    rules_made: int = 0
    wrong: int = 0  # entries written this week on a matter other than the true one

    def per_100(self) -> float:
        return 100 * self.prompts / self.expenses if self.expenses else 0.0


@dataclass
class SimFirm:
    """The simulated firm: its clients' matters and payees, and every expense's truth."""

    import_account: str
    customers: list[str] = field(default_factory=list)  # QBO customer ids
    matters: dict[str, list[int]] = field(default_factory=dict)  # customer → Clio matter ids
    payees: list[tuple[str, str]] = field(default_factory=list)  # (QBO vendor id, name)
    habits: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    """customer → its (payee index, true matter id) pairs."""
    truth: dict[str, int] = field(default_factory=dict)  # purchase id → true matter id
    pair_of: dict[str, tuple[str, int]] = field(default_factory=dict)  # purchase → pair


def seed_firm(world: SandboxWorld, rng: Random, *, clients: int, payees: int) -> tuple[
        SimFirm, QboCompany, ClioAccount, str, int]:
    books = world.open_books("Prompt Load LLP")
    company, account = books.company, books.account
    firm = SimFirm(books.import_account_id)
    for n in range(payees):
        vendor = company.add_vendor(f"Payee {n + 1:02d} Services")
        firm.payees.append((vendor["Id"], vendor["DisplayName"]))
    for n in range(clients):
        name = f"Client {n + 1:02d} Holdings"
        customer = company.add_customer(name)
        contact = account.add_contact(name)
        ids = [account.add_matter(contact["id"], description=f"Matter {m + 1} of {name}")["id"]
               for m in range(rng.randint(1, 8))]
        firm.customers.append(customer["Id"])
        firm.matters[customer["Id"]] = ids
        used = rng.sample(range(payees), min(payees, rng.randint(*PAYEES_PER_CLIENT)))
        firm.habits[customer["Id"]] = [(p, rng.choice(ids)) for p in used]
    return firm, company, account, books.import_account_id, books.category_id


def enter_expense(company: QboCompany, firm: SimFirm, rng: Random, day: date) -> None:
    customer = rng.choice(firm.customers)
    payee_index, matter = rng.choice(firm.habits[customer])
    vendor_id, _ = firm.payees[payee_index]
    amount = Decimal(rng.randint(500, 60_000)) / 100
    purchase = company.add_purchase(
        payment_type="Check", txn_date=day.isoformat(), entity=(vendor_id, "Vendor"),
        lines=[account_line(amount, firm.import_account, customer_id=customer,
                            description="Courier and filing")])
    firm.truth[str(purchase["Id"])] = matter
    firm.pair_of[str(purchase["Id"])] = (customer, payee_index)


def answer_prompts(sessions: sessionmaker[Session], engine: Importer, firm_id: int,
                   firm: SimFirm, week: Week, history: dict[tuple[str, int], list[int]]) -> None:
    """The staff member answers every open matter prompt with the true matter."""
    with sessions() as session:
        rows = list(session.scalars(select(WaitingExpense).where(
            WaitingExpense.firm_id == firm_id, WaitingExpense.resolved_at.is_(None),
            WaitingExpense.resolution.is_(None),
            WaitingExpense.reason == WaitReason.SEVERAL_MATTERS.value)
            .order_by(WaitingExpense.id)))
    for row in rows:
        truth = firm.truth[row.purchase_id]
        hints = row.suggestion or {}
        if hints.get("matter_id") is not None:
            week.suggested += 1
            week.suggested_right += hints["matter_id"] == truth
        result = choices.choose_matter(engine, row.id, truth, STAFF)
        if result.outcome != "linked":
            raise RuntimeError(f"the choice for {row.purchase_id} was {result.outcome}: "
                               f"{result.message}")
        pair = firm.pair_of[row.purchase_id]
        history[pair].append(truth)
        if week.number >= RULES_FROM_WEEK and len(history[pair]) >= RULE_AFTER and \
                len(set(history[pair][-RULE_AFTER:])) == 1:
            made = matter_rules.create_from_choice(sessions, firm_id, row.id, STAFF,
                                                   clock=engine.clock)
            week.rules_made += made.outcome == "created"


def wrong_entries(account: ClioAccount, firm: SimFirm, seen: set[int]) -> int:
    """Entries not counted before whose matter is not their expense's true one."""
    wrong = 0
    for activity in account.activities.values():
        if activity["id"] in seen:
            continue
        seen.add(activity["id"])
        note = str(activity.get("note") or "")
        purchase_id = note.rsplit("[qbo ", 1)[-1].split("/")[1] if "[qbo " in note else ""
        if firm.truth.get(purchase_id) != activity["matter"]["id"]:
            wrong += 1
    return wrong


@contextmanager
def database(url: str | None) -> Iterator[sessionmaker[Session]]:
    with tempfile.TemporaryDirectory(prefix="hardcost-prompt-load-") as tmp:
        db = make_engine(url or f"sqlite:///{Path(tmp) / 'bench.sqlite'}")
        try:
            upgrade(db)
            yield make_session_factory(db)
        finally:
            db.dispose()


def simulate(*, weeks: int, clients: int, payees: int, per_week: int, seed: int,
             database_url: str | None) -> tuple[list[Week], dict[str, object]]:
    rng = Random(seed)
    with database(database_url) as sessions, SandboxWorld.start() as world:
        world.clio.rate_limit_per_minute = RATE_LIMIT
        firm, company, account, import_account, category = seed_firm(
            world, rng, clients=clients, payees=payees)
        firm_id = world.connect_firm(sessions, company, account,
                                     name="Prompt Load LLP", start_date=START - timedelta(7),
                                     import_account_ids=[import_account],
                                     expense_category_id=category)
        engine = world.importer(sessions, firm_id)
        history: dict[tuple[str, int], list[int]] = defaultdict(list)
        seen: set[int] = set()
        results: list[Week] = []
        started = time.perf_counter()
        for number in range(1, weeks + 1):
            week = Week(number)
            for weekday in range(7):
                day = START + timedelta(days=7 * (number - 1) + weekday)
                for _ in range(_today(rng, per_week)):
                    enter_expense(company, firm, rng, day)
                    week.expenses += 1
                world.clock.advance(24 * 3600)
                summary = engine.run(trigger="schedule")
                if summary.error:
                    raise RuntimeError(f"week {number} day {weekday + 1}: {summary.error}")
                week.prompts += summary.waiting
                week.by_rule += summary.by_rule
                week.automatic += summary.imported - summary.by_rule
                answer_prompts(sessions, engine, firm_id, firm, week, history)
            week.wrong = wrong_entries(account, firm, seen)
            results.append(week)
            print(f"week {number}: {week.expenses} expenses, {week.prompts} prompts "
                  f"({week.per_100():.1f}/100), {week.by_rule} by rule, {week.wrong} wrong",
                  file=sys.stderr)
        multi = sum(1 for ids in firm.matters.values() if len(ids) > 1)
        facts: dict[str, object] = {
            "wall_s": time.perf_counter() - started, "multi": multi,
            "pairs": sum(len(h) for h in firm.habits.values()),
            "multi_pairs": sum(len(h) for c, h in firm.habits.items()
                               if len(firm.matters[c]) > 1),
            "entries": len(account.activities),
            "expenses": len(firm.truth), "schema_errors": len(world.clio.schema_errors)}
        return results, facts


def _today(rng: Random, per_week: int) -> int:
    """About ``per_week / 7`` expenses a day (more on weekdays)."""
    mean = per_week / 7
    return max(0, round(rng.gauss(mean, mean ** 0.5)))


def render(weeks: list[Week], facts: dict[str, object], *, command: str, args: argparse.Namespace
           ) -> str:
    lines = [
        f"{PROMPT_SECTION}: matter prompts per week with suggestions and rules",
        "",
        f"`{command}` — {args.clients} clients with 1 to 8 open matters each "
        f"({facts['multi']} with several), {args.payees} recurring payees, about "
        f"{args.per_week} expenses a week entered day by day and imported by one scheduled run "
        "a day, on the sandbox QuickBooks and Clio over real HTTP (seed "
        f"{args.seed}). A simulated staff member answers every prompt with the expense's true "
        "matter through `sync.choices.choose_matter` (what a click runs) and, from week "
        f"{RULES_FROM_WEEK}, accepts the *Always do this for …* offer once a payee has gone to "
        f"the same matter {RULE_AFTER} times for that client.",
        "",
        "| week | expenses | prompts | prompts / 100 expenses | imported by rule | "
        "rules made | prompts with a suggestion | suggestion right | wrong assignments |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for w in weeks:
        right = f"{w.suggested_right} ({100 * w.suggested_right / w.suggested:.0f}%)" \
            if w.suggested else "—"
        lines.append(f"| {w.number} | {w.expenses} | {w.prompts} | {w.per_100():.1f} | "
                     f"{w.by_rule} | {w.rules_made} | {w.suggested} | {right} | {w.wrong} |")
    first, last = weeks[0], weeks[-1]
    halved = last.per_100() <= first.per_100() / 2
    wrong = sum(w.wrong for w in weeks)
    lines += [
        "",
        f"- Prompts per 100 expenses, week {last.number} against week 1: "
        f"{last.per_100():.1f} against {first.per_100():.1f} — target at most half: "
        + ("✓ met" if halved else "✗ not met") + ".",
        f"- Wrong assignments over all weeks: {wrong} — target 0: "
        + ("✓ met" if wrong == 0 else "✗ not met") + ".",
        f"- {facts['entries']} Clio entries for {facts['expenses']} expenses "
        f"(every expense imported once, "
        + ("✓" if facts["entries"] == facts["expenses"] else "✗") + "); "
        f"Clio OpenAPI check failures: {facts['schema_errors']}; wall time "
        f"{float(facts['wall_s']):.0f} s (not a target).",
        "",
        "What the figures rest on: each (client, payee) pair's costs belong to one matter "
        f"({facts['pairs']} pairs, {facts['multi_pairs']} of them for clients with several "
        "matters), so a rule made after three same answers is right by construction, and "
        "*wrong assignments* measures hardcost itself: an entry on a matter nobody chose for it. "
        "A firm whose payee splits its costs for one client across matters should not make a "
        "rule for it — the rule would file every later cost on one matter. The prompts left in "
        "the last week are pairs not yet seen three times (rare payees of a client) and the first "
        "costs of each pair; suggestions there are right whenever the pair was answered before.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.prompt_load",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--weeks", type=int, default=8)
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--payees", type=int, default=25)
    parser.add_argument("--per-week", type=int, default=150)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", default="docs/benchmarks.md")
    parser.add_argument("--database-url",
                        help="use this database instead of a temporary SQLite file")
    args = parser.parse_args(argv)
    raw = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m bench.prompt_load", *map(shlex.quote, raw)])
    weeks, facts = simulate(weeks=args.weeks, clients=args.clients, payees=args.payees,
                            per_week=args.per_week, seed=args.seed,
                            database_url=args.database_url)
    text = render(weeks, facts, command=command, args=args)
    print(text)
    write_section(Path(args.out), PROMPT_SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())


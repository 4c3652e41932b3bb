"""Import benchmark: one firm's backlog of QuickBooks purchases into Clio, on the sandboxes.

    python -m bench.import_bench [--purchases 2000] [--clients 150] [--out docs/benchmarks.md]
                                 [--second-purchases 2345] [--database-url URL] [--seed 7]

Seeds a realistic firm (clients with Clio contacts and matters, vendors, an import account and
an office account, a few thousand purchases), runs ONE import with the real engine over real
HTTP on loopback, and measures API calls from the sandboxes' own call logs (and the engine's
counters, which must agree). Then runs again 15 minutes later (nothing changed: 1 QuickBooks
call, 0 Clio calls expected), and repeats the first import at a size that is not a multiple of
QuickBooks' 1,000-row page. Writes a Markdown report; always exits 0 unless the benchmark itself
crashes — benchmarks report, they don't assert.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import shlex
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from random import Random
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from bench.sections import (
    BACKFILL_SECTION,
    EXPORT_SECTION,
    FAULT_SECTION,
    HEALTH_SECTION,
    MATTER_SEARCH_SECTION,
    PROGRESS_SECTION,
    PROMPT_SECTION,
    RECEIPTS_SECTION,
    SCALE_SECTION,
    carry_over,
)
from hardcost.sandbox.clio import ClioAccount
from hardcost.sandbox.faults import Call
from hardcost.sandbox.qbo import QboCompany, account_line
from hardcost.sandbox.world import SandboxWorld
from hardcost.sync.db import upgrade
from hardcost.sync.engine import make_engine, make_session_factory
from hardcost.sync.importer import Importer
from hardcost.sync.matching import BULK_THRESHOLD, normalise_name
from hardcost.sync.qbo import PAGE_SIZE
from hardcost.sync.rules import QboKey
from hardcost.sync.summary import RunSummary

START_DATE = date(2026, 1, 1)
SEED = 7
RATE_LIMIT = 1_000_000
VENDORS = 40
CLIO_TARGET = Decimal("1.05")  # Clio calls per created entry (1.0 = one POST per entry)
QBO_TARGET = Decimal("1.1")  # QuickBooks calls per 1,000 purchases read
MARKER = re.compile(r"\[qbo [^\]]+\]")

FIRST = ["Jane", "Robert", "Maria", "David", "Linda", "James", "Susan", "Michael", "Karen",
         "William", "Nancy", "Thomas", "Emily", "Daniel", "Grace", "Henry", "Olivia", "Samuel",
         "Chloe", "Arthur", "Priya", "Kenji", "Fatima", "Lucas", "Ingrid", "Mateo", "Aisha",
         "Oscar", "Hannah", "Victor"]
LAST = ["Smith", "Brown", "Garcia", "Miller", "Davis", "Wilson", "Moore", "Taylor", "Anderson",
        "Thomas", "Jackson", "White", "Harris", "Martin", "Thompson", "Lopez", "Clark",
        "Lewis", "Walker", "Young", "Nakamura", "Okafor", "Schultz", "Rossi", "Haddad",
        "Kowalski", "Lindqvist", "Moreau", "Singh", "Oliveira"]
COMPANY_A = ["Acme", "Harbor", "Summit", "Granite", "Bluewater", "Redwood", "Northgate",
             "Silverline", "Keystone", "Pioneer", "Lakeside", "Ironbridge", "Meridian",
             "Crescent", "Evergreen", "Falcon", "Orchard", "Beacon"]
COMPANY_B = ["Holdings", "Logistics", "Properties", "Foods", "Builders", "Partners",
             "Analytics", "Marine", "Health", "Textiles", "Energy", "Media"]
COMPANY_SUFFIX = ["LLC", "Inc.", "Corp.", "LLP", "Co."]
VENDOR_PLACES = ["Metro", "Capitol", "Bayside", "Summit County"]
VENDOR_KINDS = ["Couriers", "Court Reporting", "Process Servers", "Copy Center",
                "Expert Witness Group", "Records Retrieval", "Translation Services",
                "E-Discovery", "Filing Service", "Investigations"]
PERSON_MATTERS = ["Estate of {last}", "Divorce proceedings", "Personal injury claim",
                  "Real estate closing", "Guardianship", "Employment dispute"]
COMPANY_MATTERS = ["v. Beta Logistics", "Lease renewal", "Contract dispute",
                   "Trademark filing", "Employment claim", "Acquisition due diligence"]
COST_DESCRIPTIONS = ["Filing fee", "Certified copies", "Same-day courier", "Process service",
                     "Deposition transcript", "Expert report", "Medical records request",
                     "Translation of exhibits", "Travel: mileage to hearing", "Witness fee",
                     "E-discovery hosting", "Recording fee", "Court reporter appearance",
                     "Postage and delivery", "Title search"]
OFFICE_DESCRIPTIONS = ["Printer toner", "Paper", "Coffee service", "Desk chair",
                       "Software subscription", "Postage"]
MEMOS = ["Trial preparation", "Discovery phase", "Closing costs", "Hearing costs",
         "Client requested rush", "Appeal record"]


# -- the firm ---------------------------------------------------------------------------------

@dataclass
class Client:
    name: str
    qbo_id: str
    contact_id: int
    matter_ids: list[int]
    weight: float


@dataclass
class Vendor:
    name: str
    qbo_id: str
    contact_id: int | None


@dataclass
class Expected:
    """One Clio entry the seed implies: merged import-account lines of one customer."""

    amount: Decimal
    on: date
    matter_id: int | None  # None: the client has several matters, so it waits
    vendor_id: int | None


@dataclass
class SeededFirm:
    company: QboCompany
    account: ClioAccount
    import_account_id: str
    category_id: int
    clients: list[Client]
    vendors: list[Vendor]
    purchases: int = 0
    lines: int = 0
    office_lines: int = 0
    office_only_purchases: int = 0
    payment_types: Counter[str] = field(default_factory=Counter)
    expected: dict[str, Expected] = field(default_factory=dict)  # marker → entry

    @property
    def multi_matter_clients(self) -> int:
        return sum(1 for c in self.clients if len(c.matter_ids) > 1)

    @property
    def vendor_contacts(self) -> int:
        return sum(1 for v in self.vendors if v.contact_id is not None)

    def expected_imported(self) -> list[Expected]:
        return [e for e in self.expected.values() if e.matter_id is not None]

    def expected_waiting(self) -> list[Expected]:
        return [e for e in self.expected.values() if e.matter_id is None]


def _cents(rng: Random, low: int, high: int) -> str:
    value = rng.randint(low, high)
    return f"{value // 100}.{value % 100:02d}"


def _unique_names(rng: Random, count: int, taken: set[str]) -> list[tuple[str, str]]:
    """``count`` (name, "Person"|"Company") pairs, distinct however the engine compares names."""
    people = [(f"{f} {last}", "Person") for f in FIRST for last in LAST]
    companies = [(f"{a} {b} {s}", "Company") for a in COMPANY_A for b in COMPANY_B
                 for s in COMPANY_SUFFIX[:1]]
    rng.shuffle(people)
    rng.shuffle(companies)
    chosen: list[tuple[str, str]] = []
    while len(chosen) < count:
        pool = companies if (rng.random() < 0.3 and companies) or not people else people
        if not pool:
            raise ValueError(f"cannot make {count} distinct client names")
        name, kind = pool.pop()
        if kind == "Company":
            name = name.rsplit(" ", 1)[0] + " " + rng.choice(COMPANY_SUFFIX)
        key = normalise_name(name)
        if key in taken:
            continue
        taken.add(key)
        chosen.append((name, kind))
    return chosen


def connect_seeded(world: SandboxWorld, sessions: sessionmaker[Session], *, purchases: int,
                   clients: int, seed: int) -> tuple[SeededFirm, int]:
    """``seed_firm``'s firm, connected to the store as the benchmark firm; it and its id."""
    firm = seed_firm(world, purchases=purchases, clients=clients, seed=seed)
    return firm, world.connect_firm(
        sessions, firm.company, firm.account, name="Benchmark Law LLP",
        start_date=START_DATE, import_account_ids=[firm.import_account_id],
        expense_category_id=firm.category_id)


def seed_firm(world: SandboxWorld, *, purchases: int, clients: int, seed: int) -> SeededFirm:
    """A mid-sized litigation firm and ``purchases`` QuickBooks expenses; deterministic."""
    rng = Random(seed)
    qbo = world.qbo.add_company(name="Benchmark Law LLP")
    clio = world.clio.add_account(name="Benchmark Law LLP")
    clio.add_user("Dana Moss", email="dana@benchlaw.example", account_owner=True)
    clio.add_user("Maria Lopez", email="maria@benchlaw.example")
    category = clio.add_expense_category("Client disbursements", entry_type="hard_cost")

    reimbursable = qbo.add_account("Reimbursable Expenses", account_type="Expense")
    office = qbo.add_account("Office Supplies", account_type="Expense")
    checking = qbo.add_account("Operating Account", account_type="Bank")
    card = qbo.add_account("Firm Amex", account_type="Credit Card")
    petty = qbo.add_account("Petty Cash", account_type="Bank")
    paying = {"Check": checking["Id"], "CreditCard": card["Id"], "Cash": petty["Id"]}

    taken: set[str] = set()
    vendor_names = [f"{place} {kind}" for kind in VENDOR_KINDS for place in VENDOR_PLACES]
    vendors: list[Vendor] = []
    for name in vendor_names[:VENDORS]:
        taken.add(normalise_name(name))
        contact_id = clio.add_contact(name, type="Company")["id"] if rng.random() < 0.5 else None
        vendors.append(Vendor(name, qbo.add_vendor(name)["Id"], contact_id))

    firm_clients: list[Client] = []
    for number, (name, kind) in enumerate(_unique_names(rng, clients, taken), start=1):
        email = f"client{number}@example.com"
        contact = clio.add_contact(name, type=kind, email=email)
        customer = qbo.add_customer(name, email=email)
        matters = 1 if rng.random() >= 0.10 else rng.choice((2, 3))
        templates = PERSON_MATTERS if kind == "Person" else COMPANY_MATTERS
        matter_ids = []
        for template in rng.sample(templates, matters):
            what = template.format(last=name.split()[-1])
            matter_ids.append(clio.add_matter(contact["id"], description=f"{name} – {what}")["id"])
        firm_clients.append(Client(name, customer["Id"], contact["id"], matter_ids,
                                   rng.uniform(0.3, 3.0)))

    firm = SeededFirm(qbo, clio, reimbursable["Id"], category["id"], firm_clients, vendors)
    weights = [c.weight for c in firm_clients]
    check_number = 1000
    for _ in range(purchases):
        payment_type = rng.choices(("Check", "CreditCard", "Cash"), weights=(4, 5, 1))[0]
        vendor = rng.choice(vendors)
        billed = rng.choices(firm_clients, weights=weights, k=rng.choice((1, 1, 1, 2)))
        lines: list[dict[str, Any]] = []
        charged: list[tuple[Client, Decimal]] = []
        for _ in range(rng.choices((1, 2, 3, 4), weights=(50, 25, 15, 10))[0]):
            if rng.random() < 0.15:
                lines.append(account_line(_cents(rng, 300, 40_000), office["Id"],
                                          description=rng.choice(OFFICE_DESCRIPTIONS)))
                firm.office_lines += 1
                continue
            client = rng.choice(billed)
            big = rng.random() < 0.05
            price = _cents(rng, 50_000, 750_000) if big else _cents(rng, 150, 95_000)
            lines.append(account_line(price, reimbursable["Id"], customer_id=client.qbo_id,
                                      description=rng.choice(COST_DESCRIPTIONS)))
            charged.append((client, Decimal(price)))
        doc_number = None
        if payment_type == "Check":
            check_number += 1
            doc_number = str(check_number)
        txn_date = START_DATE + timedelta(days=rng.randrange(180))
        memo = rng.choice(MEMOS) if rng.random() < 0.3 else None
        purchase = qbo.add_purchase(
            payment_type=payment_type, txn_date=txn_date.isoformat(), doc_number=doc_number,
            entity=(vendor.qbo_id, "Vendor"), paying_account_id=paying[payment_type],
            private_note=memo, lines=lines)
        firm.purchases += 1
        firm.lines += len(lines)
        firm.payment_types[payment_type] += 1
        if not charged:
            firm.office_only_purchases += 1
        for client, amount in charged:
            marker = QboKey(qbo.realm_id, purchase["Id"], client.qbo_id).marker
            entry = firm.expected.get(marker)
            if entry is None:
                entry = firm.expected[marker] = Expected(
                    Decimal(0), txn_date,
                    client.matter_ids[0] if len(client.matter_ids) == 1 else None,
                    vendor.contact_id)
            entry.amount += amount
    return firm


# -- measuring --------------------------------------------------------------------------------

def endpoint(call: Call) -> str:
    """Method and path pattern: ids and realm numbers replaced by placeholders."""
    path = re.sub(r"^/v3/company/[^/]+", "/v3/company/{realm}", call.path)
    path = re.sub(r"/\d+(\.json)?$", r"/{id}\1", path)
    return f"{call.method} {path}"


def is_api(call: Call) -> bool:
    return call.path.startswith(("/v3/company/", "/api/v4/"))


@dataclass
class RunMeasure:
    summary: RunSummary
    wall_s: float
    qbo_calls: list[Call]
    clio_calls: list[Call]

    @property
    def qbo_api(self) -> int:
        return sum(1 for c in self.qbo_calls if is_api(c))

    @property
    def clio_api(self) -> int:
        return sum(1 for c in self.clio_calls if is_api(c))

    @property
    def token_calls(self) -> int:
        return sum(1 for c in [*self.qbo_calls, *self.clio_calls] if not is_api(c))

    @property
    def failed_calls(self) -> list[Call]:
        return [c for c in [*self.qbo_calls, *self.clio_calls] if c.status >= 400]

    def breakdown(self) -> list[tuple[str, str, int]]:
        rows = Counter(("QuickBooks", endpoint(c)) for c in self.qbo_calls)
        rows.update(("Clio", endpoint(c)) for c in self.clio_calls)
        return [(service, name, n) for (service, name), n in sorted(rows.items())]


def run_import(world: SandboxWorld, engine: Importer) -> RunMeasure:
    qbo_before, clio_before = len(world.qbo.calls.all()), len(world.clio.calls.all())
    started = time.perf_counter()
    summary = engine.run(trigger="bench")
    wall = time.perf_counter() - started
    return RunMeasure(summary, wall, world.qbo.calls.all()[qbo_before:],
                      world.clio.calls.all()[clio_before:])


@dataclass
class Check:
    what: str
    ok: bool
    detail: str = ""


def verify(firm: SeededFirm, first: RunMeasure, world: SandboxWorld) -> list[Check]:
    """Clio's contents against the engine's summary and against what the seed implies."""
    summary = first.summary
    activities = list(firm.account.activities.values())
    prices = sum((Decimal(a["price"]) for a in activities), Decimal(0))
    expected = firm.expected_imported()
    expected_total = sum((e.amount for e in expected), Decimal(0))
    checks = [
        Check("the run finished without error", summary.error is None, summary.error or ""),
        Check("Clio activities = engine's imported count", len(activities) == summary.imported,
              f"{len(activities):,} activities, imported {summary.imported:,}"),
        Check("sum of Clio prices = engine's imported_total (exact Decimal)",
              prices == summary.imported_total,
              f"{prices} vs {summary.imported_total}"),
        Check("imported = entries the seed implies (one per purchase and client)",
              summary.imported == len(expected) and summary.imported_total == expected_total,
              f"{summary.imported:,} / {summary.imported_total} vs "
              f"{len(expected):,} / {expected_total}"),
        Check("waiting = entries of clients with several matters",
              summary.waiting == len(firm.expected_waiting()),
              f"{summary.waiting:,} vs {len(firm.expected_waiting()):,}"),
        Check("nothing failed or skipped", summary.failed == 0 and summary.skipped == 0,
              f"failed {summary.failed}, skipped {summary.skipped}"),
    ]
    wrong: list[str] = []
    seen: set[str] = set()
    for activity in activities:
        found = MARKER.search(activity.get("note") or "")
        marker = found.group() if found else None
        want = firm.expected.get(marker or "")
        problems = []
        if marker is None or want is None or want.matter_id is None:
            problems.append("no expected entry for its marker")
        elif marker in seen:
            problems.append("duplicate")
        else:
            seen.add(marker)
            vendor = (activity.get("vendor") or {}).get("id")
            category = (activity.get("expense_category") or {}).get("id")
            if Decimal(activity["price"]) != want.amount:
                problems.append(f"price {activity['price']} ≠ {want.amount}")
            if (activity.get("matter") or {}).get("id") != want.matter_id:
                problems.append("wrong matter")
            if activity.get("date") != want.on.isoformat():
                problems.append("wrong date")
            if vendor != want.vendor_id:
                problems.append(f"vendor {vendor} ≠ {want.vendor_id}")
            if activity.get("type") != "HardCostEntry" or category != firm.category_id:
                problems.append("not a hard cost in the chosen category")
        if problems:
            wrong.append(f"activity {activity['id']} {marker}: {', '.join(problems)}")
    checks.append(Check("every entry has the right amount, matter, date, vendor and category",
                        not wrong, "; ".join(wrong[:5]) + (" …" if len(wrong) > 5 else "")))
    checks.append(Check("engine call counters = sandbox call logs",
                        summary.qbo_calls == first.qbo_api and summary.clio_calls == first.clio_api,
                        f"QuickBooks {summary.qbo_calls} vs {first.qbo_api}, "
                        f"Clio {summary.clio_calls} vs {first.clio_api}"))
    checks.append(Check("no request failed the Clio OpenAPI check",
                        not world.clio.schema_errors,
                        "; ".join(world.clio.schema_errors[:3])))
    return checks


@dataclass
class SizeResult:
    purchases: int
    clients: int
    firm: SeededFirm
    seed_s: float
    first: RunMeasure
    checks: list[Check]
    validation: str
    rerun: RunMeasure | None = None
    rerun_checks: list[Check] = field(default_factory=list)

    @property
    def clio_per_entry(self) -> Decimal | None:
        imported = self.first.summary.imported
        return Decimal(self.first.clio_api) / imported if imported else None

    @property
    def qbo_per_1000(self) -> Decimal | None:
        read = self.first.summary.purchases_read
        return Decimal(self.first.qbo_api) * 1000 / read if read else None

    @property
    def qbo_data_pages(self) -> int:
        return math.ceil(self.purchases / PAGE_SIZE)

    @property
    def qbo_pages_floor(self) -> int:
        """Pages a reader that stops on a short page must read: one more on an exact multiple."""
        return self.purchases // PAGE_SIZE + 1


@contextmanager
def database(url: str | None, label: str) -> Iterator[tuple[sessionmaker[Session], str]]:
    with tempfile.TemporaryDirectory(prefix=f"hardcost-bench-{label}-") as tmp:
        db = make_engine(url or f"sqlite:///{Path(tmp) / 'bench.sqlite'}")
        try:
            upgrade(db)
            shown = db.url.render_as_string(hide_password=True)
            yield make_session_factory(db), shown
        finally:
            db.dispose()


def bench_size(*, purchases: int, clients: int, seed: int, database_url: str | None,
               rerun: bool) -> tuple[SizeResult, str]:
    with database(database_url, str(purchases)) as (sessions, shown), SandboxWorld.start() as world:
        world.clio.rate_limit_per_minute = RATE_LIMIT
        validation = ("on" if world.clio.validation_enabled else
                      f"off ({world.clio.validation_disabled_reason})")
        progress(f"seeding {purchases:,} purchases for {clients:,} clients …")
        started = time.perf_counter()
        firm, firm_id = connect_seeded(world, sessions, purchases=purchases,
                                       clients=clients, seed=seed)
        seed_s = time.perf_counter() - started
        world.clock.advance(300)  # the bookkeeper entered these a while ago
        engine = world.importer(sessions, firm_id)
        progress(f"importing {purchases:,} purchases …")
        first = run_import(world, engine)
        progress(f"  imported {first.summary.imported:,} entries in {first.wall_s:.1f}s")
        result = SizeResult(purchases, clients, firm, seed_s, first,
                            verify(firm, first, world), validation)
        if rerun:
            world.clock.advance(15 * 60)
            progress("re-running 15 minutes later …")
            again = run_import(world, engine)
            result.rerun = again
            before = len(firm.account.activities)
            result.rerun_checks = [
                Check("re-run finished without error", again.summary.error is None,
                      again.summary.error or ""),
                Check("re-run imported nothing and Clio is unchanged",
                      again.summary.imported == 0 and before == first.summary.imported,
                      f"imported {again.summary.imported}, Clio holds {before:,}"),
                Check("re-run: engine call counters = sandbox call logs",
                      again.summary.qbo_calls == again.qbo_api
                      and again.summary.clio_calls == again.clio_api,
                      f"QuickBooks {again.summary.qbo_calls} vs {again.qbo_api}, "
                      f"Clio {again.summary.clio_calls} vs {again.clio_api}"),
            ]
        return result, shown


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the report -------------------------------------------------------------------------------

def money(amount: Decimal) -> str:
    return f"${amount:,.2f}"


def ratio(value: Decimal | None, places: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{places}f}"


def per_1000(calls: int, purchases: int) -> str:
    return f"{Decimal(calls * 1000) / purchases:.2f}" if purchases else "n/a"


def met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def figures_table(results: list[SizeResult]) -> list[str]:
    def row(label: str, fn: Any) -> list[str]:
        return [label, *[fn(r) for r in results]]

    def rerun(r: SizeResult) -> str:
        if r.rerun is None:
            return "not run"
        return f"{r.rerun.qbo_api} QuickBooks, {r.rerun.clio_api} Clio ({r.rerun.wall_s:.2f} s)"

    rows = [
        row("Purchases seeded / read",
            lambda r: f"{r.purchases:,} / {r.first.summary.purchases_read:,}"),
        row("Purchase lines (office-account lines)",
            lambda r: f"{r.firm.lines:,} ({r.firm.office_lines:,})"),
        row("Payment types", lambda r: ", ".join(
            f"{k} {v:,}" for k, v in sorted(r.firm.payment_types.items()))),
        row("Clients / with 2-3 open matters",
            lambda r: f"{r.clients:,} / {r.firm.multi_matter_clients}"),
        row("Vendors / also Clio contacts",
            lambda r: f"{len(r.firm.vendors)} / {r.firm.vendor_contacts}"),
        row("**Entries created in Clio**", lambda r: f"**{r.first.summary.imported:,}**"),
        row("Entries waiting (client has several matters)",
            lambda r: f"{r.first.summary.waiting:,}"),
        row("Skipped / failed", lambda r: f"{r.first.summary.skipped} / {r.first.summary.failed}"),
        row("Imported total", lambda r: money(r.first.summary.imported_total)),
        row("Clio API calls: sandbox log / engine counter",
            lambda r: f"{r.first.clio_api:,} / {r.first.summary.clio_calls:,}"),
        row("**Clio calls per created entry**", lambda r: f"**{ratio(r.clio_per_entry, 4)}**"),
        row("QuickBooks API calls: sandbox log / engine counter",
            lambda r: f"{r.first.qbo_api} / {r.first.summary.qbo_calls}"),
        row("**QuickBooks calls per 1,000 purchases read**",
            lambda r: f"**{ratio(r.qbo_per_1000, 2)}**"),
        row("QuickBooks pages holding purchases (⌈n / 1,000⌉)",
            lambda r: f"{r.qbo_data_pages} ({per_1000(r.qbo_data_pages, r.purchases)} per 1,000)"),
        row("QuickBooks pages a reader that stops on a short page must read",
            lambda r: f"{r.qbo_pages_floor} ({per_1000(r.qbo_pages_floor, r.purchases)} per 1,000"
                      + (", one empty)" if r.qbo_pages_floor > r.qbo_data_pages else ")")),
        row("OAuth token calls / failed (4xx-5xx) calls",
            lambda r: f"{r.first.token_calls} / {len(r.first.failed_calls)}"),
        row("Wall time of the import (engine's own)",
            lambda r: f"{r.first.wall_s:.2f} s ({r.first.summary.duration_s:.2f} s)"),
        row("Entries per second",
            lambda r: f"{r.first.summary.imported / r.first.wall_s:,.0f}"
            if r.first.wall_s else "n/a"),
        row("Same import paced at Clio's real 50 requests/min (estimate)",
            lambda r: f"≥ {math.ceil(r.first.clio_api / 50):,} min"),
        row("Re-run 15 min later: calls", rerun),
        row("Seeding time (not measured above)", lambda r: f"{r.seed_s:.1f} s"),
    ]
    return table(["", *[f"{r.purchases:,} purchases" for r in results]], rows)


def targets_table(results: list[SizeResult]) -> tuple[list[str], bool]:
    rows: list[list[str]] = []
    all_met = True
    for r in results:
        size = f"{r.purchases:,}"
        clio_ok = r.clio_per_entry is not None and r.clio_per_entry <= CLIO_TARGET
        qbo_ok = r.qbo_per_1000 is not None and r.qbo_per_1000 <= QBO_TARGET
        rows.append([f"Clio calls per created entry ≤ {CLIO_TARGET} (floor 1.0)", size,
                     ratio(r.clio_per_entry, 4), met(clio_ok)])
        floor_note = ""
        if not qbo_ok:
            reads = "page read" if r.qbo_pages_floor == 1 else "page reads"
            floor_note = (f" (floor at this size: {r.qbo_pages_floor} {reads} = "
                          f"{per_1000(r.qbo_pages_floor, r.purchases)}"
                          + (f", of which one is the empty page after {r.purchases:,}"
                             if r.qbo_pages_floor > r.qbo_data_pages else "") + ")")
        rows.append([f"QuickBooks calls per 1,000 purchases read ≤ {QBO_TARGET}", size,
                     ratio(r.qbo_per_1000, 2) + floor_note, met(qbo_ok)])
        all_met = all_met and clio_ok and qbo_ok
        if r.rerun is not None:
            ok = r.rerun.qbo_api == 1 and r.rerun.clio_api == 0
            rows.append(["Re-run with nothing changed: 1 QuickBooks call, 0 Clio calls", size,
                         f"{r.rerun.qbo_api} QuickBooks, {r.rerun.clio_api} Clio", met(ok)])
            all_met = all_met and ok
        checks = [*r.checks, *r.rerun_checks]
        failed = [c for c in checks if not c.ok]
        rows.append([f"Correctness checks ({len(checks)})", size,
                     f"{len(checks) - len(failed)} of {len(checks)} passed", met(not failed)])
        all_met = all_met and not failed
    return table(["Target", "Size", "Measured", "Result"], rows), all_met


def render_report(results: list[SizeResult], *, command: str, database_shown: str,
                  args: argparse.Namespace) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    uname = platform.uname()
    lines = [
        "# Import benchmark: QuickBooks purchases → Clio hard costs",
        "",
        f"- **Date:** {now}",
        f"- **Machine:** {platform.platform()} ({uname.machine}), "
        f"{os.cpu_count()} CPUs",
        f"- **Python:** {platform.python_implementation()} {platform.python_version()}",
        f"- **Command:** `{command}`",
        f"- **Database:** {database_shown}",
        f"- **Services:** the built-in QuickBooks and Clio sandboxes over real HTTP on loopback "
        f"(Clio OpenAPI request validation {results[0].validation}).",
        f"- **Rate limit:** the Clio sandbox's limit was raised from Clio's 50 requests/minute "
        f"to {RATE_LIMIT:,} so that the client's pacing (it waits when Clio's "
        "`X-RateLimit-Remaining` runs out) does not dominate the wall time. Times below are "
        "therefore engine + database + loopback HTTP, not what a real firm waits; the call "
        "counts are what a real firm pays.",
        f"- **Firm:** seeded with `random.Random({args.seed})`: {args.clients} clients, each a "
        "Clio contact with one open matter (about 1 in 10 with 2-3, whose expenses wait for a "
        f"person to choose), {VENDORS} vendors (about half also Clio contacts), an import "
        "account \"Reimbursable Expenses\" and an \"Office Supplies\" account; purchases of "
        "1-4 lines (85% client costs in the import account, 15% office lines), paid by "
        "Check, CreditCard or Cash, amounts with cents. The resolver's bulk threshold is "
        f"{BULK_THRESHOLD} names, so this firm's contacts and matters are listed once.",
        "",
        "## Figures (one import of a backlog)",
        "",
        *figures_table(results),
        "",
        "## Calls by endpoint (first import)",
        "",
    ]
    for r in results:
        lines += [f"**{r.purchases:,} purchases**", ""]
        lines += table(["Service", "Endpoint", "Calls"],
                       [[s, f"`{e}`", f"{n:,}"] for s, e, n in r.first.breakdown()])
        lines.append("")
    if any(r.rerun for r in results):
        for r in results:
            if r.rerun is not None:
                lines += [f"**Re-run 15 minutes later, nothing changed ({r.purchases:,} "
                          "purchases)**", ""]
                rows = [[s, f"`{e}`", f"{n:,}"] for s, e, n in r.rerun.breakdown()]
                lines += table(["Service", "Endpoint", "Calls"],
                               rows or [["—", "no calls", "0"]])
        lines.append("")
    target_lines, all_met = targets_table(results)
    lines += ["## Targets", "", *target_lines, ""]
    lines.append("All targets were met." if all_met else
                 "**Not every target was met** — see the rows marked *missed*; the benchmark "
                 "reports, it does not fail.")
    lines += ["", "## Correctness checks", ""]
    for r in results:
        lines.append(f"**{r.purchases:,} purchases**")
        lines.append("")
        for check in [*r.checks, *r.rerun_checks]:
            mark = "✓" if check.ok else "✗"
            lines.append(f"- {mark} {check.what}" + (f" — {check.detail}" if check.detail else ""))
        lines.append("")
    lines += [
        "## How to read this",
        "",
        "The call counts come from the sandboxes' own request logs (every HTTP request they "
        "answered), and the engine's counters must agree with them. *Clio calls per created "
        "entry* cannot go below 1.0 — each entry is one `POST /activities.json` — so anything "
        "above 1.0 is lookup overhead (listing contacts, matters, users) spread over the entries; "
        "for a backlog it should be a few calls in total. *QuickBooks calls per 1,000 purchases "
        f"read* counts query pages of up to {PAGE_SIZE:,} purchases: a reader only knows it is "
        "done when a page comes back short, so an exact multiple of 1,000 costs one extra, empty "
        "page (compare the two sizes), and a partial page costs a whole call. The 'pages a "
        "reader … must read' row is the floor for each size; it is within the 1.1 target for "
        "every size from 10,000 purchases up, but below that only when the size falls near the "
        "top of its thousand (2,345 needs 3 pages = 1.28; 2,800 would need 3 = 1.07). The "
        "re-run shows the steady state of the 15-minute schedule when nothing changed: one "
        "QuickBooks query and no Clio traffic. Wall time and entries/second measure this machine "
        "with Clio's rate limit lifted; in production Clio's 50 requests/minute per token, not "
        "the engine, sets the pace of a large first import (the estimate row). The sandbox's "
        "HTTP server (Werkzeug's) closes every connection, so each call here also pays a new "
        "loopback TCP connection; the sandboxes run in the benchmark's own process and share "
        "its CPU (with validation on, the Clio sandbox also checks every request against "
        "Clio's OpenAPI document).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.import_bench",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--purchases", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=150)
    parser.add_argument("--second-purchases", type=int, default=2345,
                        help="a second size, not a multiple of 1,000 (0: skip)")
    parser.add_argument("--out", default="docs/benchmarks.md")
    parser.add_argument("--database-url",
                        help="use this database (e.g. PostgreSQL) instead of a temporary SQLite "
                             "file; each size gets a new firm in it")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    raw = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m bench.import_bench", *map(shlex.quote, raw)])

    sizes = [args.purchases]
    if args.second_purchases and args.second_purchases != args.purchases:
        sizes.append(args.second_purchases)
    results: list[SizeResult] = []
    shown = ""
    for index, size in enumerate(sizes):
        result, shown = bench_size(purchases=size, clients=args.clients, seed=args.seed,
                                   database_url=args.database_url, rerun=index == 0)
        results.append(result)
    if args.database_url is None:
        shown = "a temporary SQLite file (a fresh one per size)"
    else:
        shown = f"{shown} (each size a new firm in it)"
    out = Path(args.out)
    report = carry_over(out, render_report(results, command=command, database_shown=shown,
                                           args=args), [FAULT_SECTION, PROMPT_SECTION,
                                                        BACKFILL_SECTION, SCALE_SECTION,
                                                        PROGRESS_SECTION,
                                                        MATTER_SEARCH_SECTION,
                                                        EXPORT_SECTION, HEALTH_SECTION,
                                                        RECEIPTS_SECTION])
    print(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report, encoding="utf-8")
    progress(f"report written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

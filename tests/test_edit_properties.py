"""Property: whatever happens in QuickBooks and Clio, in whatever order, the books end right.

Hypothesis generates sequences of purchase creations, amount edits, customer changes, lines
added and removed, deletions, voids and bills (an entry put on a bill in Clio), with import
runs between them; some runs are cut short (stopped between two entries, or Clio's reply to a
POST lost and its look-ups failing, which leaves a pending link). After a final run, over real
HTTP against the sandboxes:

- nothing is in Clio twice (one entry per note marker);
- every unbilled entry is exactly what QuickBooks' final state calls for (amount, date,
  matter), and nothing QuickBooks no longer calls for is left unbilled;
- everything QuickBooks calls for is in Clio (or stands on a bill);
- billed entries are untouched.

The expected state is computed here from the sandbox's purchases, not by the importer's own
planning code. ``HYPOTHESIS_PROFILE=long`` runs many more sequences.
"""

from __future__ import annotations

import os
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sandbox.clio import server_error_fault
from hardcost.sandbox.faults import Fault
from hardcost.sandbox.qbo import account_line
from hardcost.sandbox.world import SandboxWorld
from tests.firmkit import Firm, make_firm

settings.register_profile("edits-ci", max_examples=40, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                 HealthCheck.too_slow])
settings.register_profile("edits-long", max_examples=2_000, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                 HealthCheck.too_slow])
PROFILE = "edits-long" if os.environ.get("HYPOTHESIS_PROFILE") == "long" else "edits-ci"

CLIENTS = ("Avery Ames", "Blake Burns", "Casey Cole")
SLOTS = 3
MARKER = re.compile(r"\[qbo [^\]]+\]")
POST = r"/api/v4/activities\.json$"

slot = st.integers(0, SLOTS - 1)
client = st.sampled_from(CLIENTS)
amount = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("9999.99"), places=2)

event = st.one_of(
    st.tuples(st.just("create"), slot, client, amount),
    st.tuples(st.just("amount"), slot, amount),
    st.tuples(st.just("customer"), slot, client),
    st.tuples(st.just("add_line"), slot, client, amount),
    st.tuples(st.just("drop_line"), slot),
    st.tuples(st.just("date"), slot, st.integers(1, 27)),
    st.tuples(st.just("delete"), slot),
    st.tuples(st.just("void"), slot),
    st.tuples(st.just("bill"), slot),
    st.tuples(st.just("run"), st.sampled_from(["whole", "stopped", "lost_reply"])),
)


@dataclass
class Books:
    firm: Firm
    ids: dict[int, str] = field(default_factory=dict)  # slot → purchase id
    billed: dict[int, dict[str, Any]] = field(default_factory=dict)  # entry id → as billed

    def line(self, who: str, value: Decimal) -> dict[str, Any]:
        return account_line(str(value), self.firm.import_account,
                            customer_id=self.firm.customers[who])

    def live(self, n: int) -> dict[str, Any] | None:
        pid = self.ids.get(n)
        purchase = self.firm.qbo.purchases.get(pid) if pid else None
        if purchase is None or str(purchase.get("PrivateNote") or "").startswith("Voided"):
            return None
        return purchase


def _apply(books: Books, step: tuple[Any, ...]) -> None:
    firm = books.firm
    kind, n = step[0], step[1]
    purchase = books.live(n) if kind not in ("create", "run") else None
    if kind == "create" and n not in books.ids:
        made = firm.qbo.add_purchase(txn_date="2026-02-03", lines=[books.line(step[2], step[3])])
        books.ids[n] = str(made["Id"])
    elif kind == "amount" and purchase:
        lines = purchase["Line"]
        firm.qbo.update_purchase(books.ids[n], lines=[
            {**lines[0], "Amount": step[2]}, *lines[1:]])
    elif kind == "customer" and purchase:
        lines = purchase["Line"]
        detail = lines[0]["AccountBasedExpenseLineDetail"]
        moved = {**lines[0], "AccountBasedExpenseLineDetail": {
            **detail, "CustomerRef": {"value": firm.customers[step[2]], "name": step[2]}}}
        firm.qbo.update_purchase(books.ids[n], lines=[moved, *lines[1:]])
    elif kind == "add_line" and purchase:
        firm.qbo.update_purchase(books.ids[n], lines=[*purchase["Line"],
                                                      books.line(step[2], step[3])])
    elif kind == "drop_line" and purchase and len(purchase["Line"]) > 1:
        firm.qbo.update_purchase(books.ids[n], lines=purchase["Line"][:-1])
    elif kind == "date" and purchase:
        firm.qbo.update_purchase(books.ids[n], txn_date=f"2026-03-{step[2]:02d}")
    elif kind == "delete" and n in books.ids and books.ids[n] in firm.qbo.purchases:
        firm.qbo.delete_purchase(books.ids[n])
    elif kind == "void" and purchase:
        firm.qbo.void_purchase(books.ids[n])
    elif kind == "bill" and n in books.ids:
        for entry in firm.entries():
            if f"/{books.ids[n]}/" in (entry.get("note") or "") and not entry.get("on_bill"):
                firm.clio.mark_billed(entry["id"])
                books.billed[entry["id"]] = _snapshot(firm.clio.activities[entry["id"]])
    elif kind == "run":
        _run(books, n)
    firm.later(2)


def _run(books: Books, how: str) -> None:
    firm = books.firm
    firm.later()
    if how == "whole":
        firm.run()
        return
    if how == "lost_reply":  # Clio creates the entry, the reply and every look-up are lost
        firm.world.clio.faults.add(Fault(path=POST, method="POST", after_handler=True,
                                         status=502, body='{"error": {"type": "BadGateway"}}'))
        firm.world.clio.faults.add(server_error_fault(503, times=40, path=POST))
        firm.run()
        firm.world.clio.faults.clear()
        return
    engine = firm.engine  # stopped after its first entry, as on shutdown
    stop = threading.Event()
    engine.stopping = stop
    engine.on_progress = lambda progress: stop.set() if progress.handled >= 1 else None
    try:
        firm.run()
    finally:
        engine.stopping = threading.Event()
        engine.on_progress = None


def _snapshot(activity: dict[str, Any]) -> dict[str, Any]:
    return {key: activity.get(key) for key in ("price", "date", "note", "matter", "reference")}


def _expected(books: Books) -> dict[str, tuple[Decimal, str, int]]:
    """marker → (amount, date, matter id) for what QuickBooks' final state calls for."""
    firm = books.firm
    by_customer = {qbo_id: name for name, qbo_id in firm.customers.items()}
    wanted: dict[str, tuple[Decimal, str, int]] = {}
    for n in books.ids:
        purchase = books.live(n)
        if purchase is None:
            continue
        sums: Counter[str] = Counter()
        for line in purchase["Line"]:
            ref = line["AccountBasedExpenseLineDetail"]["CustomerRef"]["value"]
            sums[ref] += Decimal(str(line["Amount"]))
        for customer_id, total in sums.items():
            marker = f"[qbo {firm.qbo.realm_id}/{purchase['Id']}/{customer_id}]"
            matter = firm.matters[f"{by_customer[customer_id]} matter"]
            wanted[marker] = (total, str(purchase["TxnDate"]), matter)
    return wanted


@settings(settings.get_profile(PROFILE))
@given(steps=st.lists(event, min_size=1, max_size=12))
def test_any_sequence_of_changes_ends_with_clio_matching_quickbooks(
        world: SandboxWorld, sessions: sessionmaker[Session],
        steps: list[tuple[Any, ...]]) -> None:
    firm = make_firm(world, sessions)
    world.clio.faults.clear()
    for name in CLIENTS:
        firm.client(name, [f"{name} matter"])
    books = Books(firm)
    for step in steps:
        _apply(books, step)

    for _ in range(2):  # a final run, and one more that must find nothing left to do
        firm.later()
        summary = firm.run()
        assert summary.error is None, summary.error
    assert summary.imported == summary.updated == summary.deleted == 0, steps

    entries = firm.entries()
    in_clio = Counter(m for e in entries for m in MARKER.findall(e.get("note") or ""))
    assert not [m for m, count in in_clio.items() if count > 1], ("doubled", steps)
    wanted = _expected(books)
    for entry in entries:
        [marker] = MARKER.findall(entry["note"])
        if entry.get("on_bill"):
            assert _snapshot(entry) == books.billed[entry["id"]], ("billed entry touched", steps)
            continue
        assert marker in wanted, ("left in Clio but not called for", marker, steps)
        total, day, matter = wanted[marker]
        assert (Decimal(str(entry["price"])), entry["date"], entry["matter"]["id"]) == \
            (total, day, matter), ("wrong figures", marker, steps)
    assert set(wanted) <= set(in_clio), ("never reached Clio", set(wanted) - set(in_clio), steps)
    assert firm.waiting() == [], steps

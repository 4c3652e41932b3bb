"""The parts of one run (sync/reader.py, writer.py, waits.py, failures.py), made for a test
firm on the sandbox, with a planned entry to hand them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from hardcost.sync.failures import Failures
from hardcost.sync.reader import Reader
from hardcost.sync.rules import PlannedEntry, plan_purchase
from hardcost.sync.run_state import RunState
from hardcost.sync.waits import Waits
from hardcost.sync.writer import Writer
from tests.firmkit import Firm


@dataclass
class Parts:
    firm: Firm
    state: RunState
    reader: Reader
    writer: Writer
    waits: Waits
    failures: Failures
    stages: list[str] = field(default_factory=list)  # what the parts reported, in order
    ahead: timedelta = timedelta(0)  # how far the parts' clock runs ahead of the sandbox's

    def now(self) -> datetime:
        return self.firm.world.clock.now() + self.ahead

    def planned(self, purchase_id: str) -> list[PlannedEntry]:
        """The entries the firm's settings make of a purchase, as QuickBooks returns it."""
        [purchase] = self.firm.engine.qbo.purchases_by_id({purchase_id})
        plan = plan_purchase(purchase, self.state.firm.qbo_realm_id or "",
                             self.reader.rules(self.state, [purchase]))
        return plan.entries


def parts(firm: Firm) -> Parts:
    engine = firm.engine
    state = engine.writer_state("test")
    made = Parts(firm, state, None, None, None, None)  # type: ignore[arg-type]

    def progress(_: RunState, stage: str, __: int | None) -> None:
        made.stages.append(stage)

    made.failures = Failures(firm.sessions, firm.id, clock=made.now, sandbox_links=True)
    made.reader = Reader(firm.sessions, firm.id, engine.qbo, progress=progress, counting=False)
    made.writer = Writer(firm.sessions, firm.id, engine.clio, clock=made.now,
                         stopping=engine.stopping, failures=made.failures, progress=progress)
    made.waits = Waits(firm.sessions, firm.id, engine.clio, clock=made.now,
                       stopping=engine.stopping)
    return made

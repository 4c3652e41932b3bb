"""A firm whose March 2026 hard costs stand in every state a report tells apart, on the
sandboxes (for tests/test_month_report.py).

March 2026, imported by runs over HTTP, then billed in the sandbox Clio as a person would:

| date | client | amount | then |
|---|---|---|---|
| 03-02 | Acme Holdings | 100.00 | on bill A-1, issued (awaiting payment) |
| 03-05 | Acme Holdings | 250.50 | on bill A-2, a draft |
| 03-10 | Bravo LLC | 75.25 | unbilled |
| 03-15 | Bravo LLC | 40.00 | marked non-billable |
| 03-20 | Bravo LLC | 19.99 | unbilled |
| 03-12 | Charlie Co | 55.00 | waits: no Clio contact |
| 03-25 | Acme Holdings | 12.34 | failed: Clio refused it (422) |

and earlier: 2026-02-03 Acme Holdings 300.00 (unbilled), 2025-12-01 Bravo LLC 20.00 (paid bill).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from hardcost.sandbox.faults import Fault
from tests.firmkit import Firm

D = Decimal


@dataclass(frozen=True)
class Scenario:
    issued: int  # Clio ids
    draft: int
    unbilled: tuple[int, ...]
    non_billable: int
    february: int


def march_firm(firm: Firm) -> Scenario:
    firm.update_settings(start_date=date(2025, 11, 1))
    firm.client("Acme Holdings", ["Acme v. Beta"])
    firm.client("Bravo LLC", ["Bravo lease"])
    firm.client("Charlie Co", contact=False)
    firm.expense(("20.00", "Bravo LLC"), txn_date="2025-12-01")
    firm.expense(("300.00", "Acme Holdings"), txn_date="2026-02-03")
    for amount, client, day in (("100.00", "Acme Holdings", "02"),
                                ("250.50", "Acme Holdings", "05"),
                                ("75.25", "Bravo LLC", "10"), ("40.00", "Bravo LLC", "15"),
                                ("19.99", "Bravo LLC", "20"), ("55.00", "Charlie Co", "12")):
        firm.expense((amount, client), txn_date=f"2026-03-{day}")
    firm.run()
    firm.later()
    firm.expense(("12.34", "Acme Holdings"), txn_date="2026-03-25")
    firm.world.clio.faults.add(Fault(
        path=r"/activities\.json$", method="POST", status=422, times=1,
        body=json.dumps({"error": {"type": "UnprocessableEntity",
                                   "message": "Matter is closed for billing"}})))
    firm.run()
    by_price = {(str(a["date"]), str(D(a["price"]).quantize(D("0.01")))): a["id"]
                for a in firm.entries()}
    december = by_price[("2025-12-01", "20.00")]
    firm.clio.add_bill([december], state="paid", number="A-0", issued_at="2026-01-05")
    issued = by_price[("2026-03-02", "100.00")]
    draft = by_price[("2026-03-05", "250.50")]
    firm.clio.add_bill([issued], state="awaiting_payment", number="A-1",
                       issued_at="2026-04-01")
    firm.clio.add_bill([draft], state="draft", number="A-2")
    non_billable = by_price[("2026-03-15", "40.00")]
    firm.clio.set_non_billable(non_billable)
    return Scenario(issued=issued, draft=draft,
                    unbilled=(by_price[("2026-03-10", "75.25")],
                              by_price[("2026-03-20", "19.99")]),
                    non_billable=non_billable, february=by_price[("2026-02-03", "300.00")])

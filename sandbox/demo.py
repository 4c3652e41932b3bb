"""``hardcost demo``: a realistic small firm in the sandbox, imported, a choice made in Slack,
a quiet run, then a purchase deleted in QuickBooks and its Clio entry removed, and an expense with
no customer given its matter through the search menu; all printed. It ends with the month's
hard-cost report (docs/reports.md), its chart written to a file it names.

Everything is real except the two services: the sandbox QuickBooks and Clio serve HTTP on
loopback, the importer is the one ``hardcost serve`` runs, the database is a real SQLite file
(a temporary one unless ``--database-url`` says otherwise).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from hardcost.bot.month_report import share
from hardcost.sandbox.clio import ClioAccount
from hardcost.sandbox.qbo import QboCompany, account_line, item_line
from hardcost.sandbox.server import RunningServer, serve_in_thread
from hardcost.sandbox.slack import SlackSandbox
from hardcost.sandbox.slack_render import render
from hardcost.sandbox.slack_rig import SlackRig, make_rig, wait_for
from hardcost.sandbox.world import SandboxWorld
from hardcost.sync import month_report, report_chart
from hardcost.sync.config import Settings
from hardcost.sync.db import upgrade
from hardcost.sync.engine import make_engine, make_session_factory
from hardcost.sync.importer import Importer
from hardcost.sync.month_report import Month
from hardcost.sync.report import money, render_summary
from hardcost.sync.store import EntryLink, WaitingExpense
from hardcost.sync.summary import RunSummary

START_DATE = date(2026, 10, 1)
RECEIPT_FILE = "clerk-receipt-1042.pdf"
RECEIPT_BYTES = (b"%PDF-1.4\n% Superior Court Clerk, receipt for check 1042\n"
                 + b"% petition and complaint filing fees, certified copies\n" * 40 + b"%%EOF\n")
"""The filing check's receipt as the bookkeeper attached it in QuickBooks (the demo checks
Clio ends up with exactly these bytes on each matter)."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoFirm:
    company: QboCompany
    account: ClioAccount
    import_account_id: str
    category_id: int
    courier_id: str = ""  # Speedy Couriers (a QuickBooks vendor)
    acme_id: str = ""  # Acme Holdings (a QuickBooks customer with three matters in Clio)
    expert_id: str = ""  # Dr. Alan Expert (a QuickBooks vendor who sends Bills)
    jane_id: str = ""  # Jane Smith (a QuickBooks customer with one matter in Clio)
    court_id: str = ""  # Superior Court Clerk (a QuickBooks vendor)
    checking_id: str = ""  # the firm's operating account (QuickBooks), which pays by check
    filing_check_id: str = ""  # Check 1042 (two clients' filing fees), with its receipt


def seed_demo(world: SandboxWorld) -> DemoFirm:
    """Moss & Hale LLP: five clients, the usual payees, and a month of client costs."""
    qbo = world.qbo.add_company(name="Moss & Hale LLP")
    clio = world.clio.add_account(name="Moss & Hale LLP")

    # Clio: people, matters, the hard-cost category.
    clio.add_user("Dana Moss", email="dana@mosshale.example", account_owner=True)
    clio.add_user("Maria Lopez", email="maria@mosshale.example")
    jane = clio.add_contact("Jane Smith", email="jane.smith@example.com")
    acme = clio.add_contact("Acme Holdings", type="Company", email="legal@acme.example")
    clio.add_contact("Robert Brown", email="rbrown@example.com")  # no open matter yet
    clio.add_contact("Speedy Couriers", type="Company")
    clio.add_matter(jane["id"], description="Smith – Estate of Harold Smith")
    clio.add_matter(acme["id"], description="Acme v. Beta Logistics")
    clio.add_matter(acme["id"], description="Acme – Lease renewal, Dock 4")
    clio.add_matter(acme["id"], description="Acme – Employment claim (Reyes)")
    category = clio.add_expense_category("Court & filing fees", entry_type="hard_cost")

    # QuickBooks: accounts, names, purchases.
    reimbursable = qbo.add_account("Reimbursable Expenses", account_type="Expense")
    office = qbo.add_account("Office Supplies", account_type="Expense")
    checking = qbo.add_account("Operating Account", account_type="Bank")
    card = qbo.add_account("Firm Amex", account_type="Credit Card")
    courier_item = qbo.add_item("Courier service", expense_account_id=reimbursable["Id"])
    c_jane = qbo.add_customer("Jane Smith", email="jane.smith@example.com")
    c_acme = qbo.add_customer("Acme Holdings", email="legal@acme.example")
    c_acme_beta = qbo.add_customer("Acme v. Beta Logistics", parent_id=c_acme["Id"])
    c_brown = qbo.add_customer("Robert Brown")
    c_garcia = qbo.add_customer("Garcia Family Trust")
    court = qbo.add_vendor("Superior Court Clerk")
    courier = qbo.add_vendor("Speedy Couriers")
    expert = qbo.add_vendor("Dr. Alan Expert")
    printer = qbo.add_vendor("Copy Center")
    maria = qbo.add_employee("Maria Lopez")
    ra, jid = reimbursable["Id"], c_jane["Id"]

    filing_check = qbo.add_purchase(  # one check: two clients, an office line (no client)
        payment_type="Check", doc_number="1042", txn_date="2026-10-06",
        entity=(court["Id"], "Vendor"), paying_account_id=checking["Id"],
        private_note="Filing fees, October calendar",
        lines=[account_line("435.00", ra, customer_id=jid, description="Petition filing fee"),
               account_line("12.50", ra, customer_id=jid, description="Certified copies"),
               account_line("435.00", ra, customer_id=c_acme_beta["Id"],
                            description="Complaint filing fee"),
               account_line("30.00", office["Id"], description="Postage")])
    qbo.add_purchase(  # Acme has three matters: staff will choose
        payment_type="CreditCard", txn_date="2026-10-08", entity=(courier["Id"], "Vendor"),
        paying_account_id=card["Id"],
        lines=[account_line("48.75", ra, customer_id=c_acme["Id"],
                            description="Same-day courier to opposing counsel")])
    qbo.add_purchase(  # ...unless the memo names the matter
        payment_type="CreditCard", txn_date="2026-10-09", entity=(courier["Id"], "Vendor"),
        paying_account_id=card["Id"], private_note="Dock 4 lease docs, matter 00003",
        lines=[account_line("36.20", ra, customer_id=c_acme["Id"],
                            description="Courier, lease package")])
    qbo.add_purchase(  # Robert Brown has no open matter yet
        payment_type="Check", doc_number="1043", txn_date="2026-10-12",
        entity=(expert["Id"], "Vendor"), paying_account_id=checking["Id"],
        lines=[account_line("2500.00", ra, customer_id=c_brown["Id"],
                            description="Expert report retainer")])
    qbo.add_purchase(  # no Clio contact for this customer
        payment_type="Cash", txn_date="2026-10-13", entity=(printer["Id"], "Vendor"),
        lines=[account_line("84.15", ra, customer_id=c_garcia["Id"],
                            description="Trust documents, 3 copies")])
    qbo.add_purchase(  # entered under Item details: Clio's importer fails silently here
        payment_type="CreditCard", txn_date="2026-10-14", entity=(courier["Id"], "Vendor"),
        paying_account_id=card["Id"],
        lines=[item_line("22.00", courier_item["Id"], customer_id=jid,
                         description="Courier to probate court")])
    qbo.add_purchase(  # a card refund is not a cost
        payment_type="CreditCard", credit=True, txn_date="2026-10-15",
        entity=(courier["Id"], "Vendor"), paying_account_id=card["Id"],
        lines=[account_line("48.75", ra, customer_id=c_acme["Id"],
                            description="Refund: duplicate courier charge")])
    qbo.add_purchase(  # paid in euros: Clio gets dollars, the note keeps the euros
        payment_type="CreditCard", txn_date="2026-10-16", currency="EUR",
        exchange_rate="1.0850", paying_account_id=card["Id"],
        entity=(printer["Id"], "Vendor"),
        lines=[account_line("200.00", ra, customer_id=jid,
                            description="Apostille, Paris registry")])
    qbo.add_purchase(  # an employee paid and is reimbursed: the entry is hers in Clio
        payment_type="Cash", txn_date="2026-10-19", entity=(maria["Id"], "Employee"),
        lines=[account_line("61.40", ra, customer_id=jid, description="Mileage to deposition")])
    qbo.add_purchase(  # an import-account line with no customer
        payment_type="Check", doc_number="1044", txn_date="2026-10-20",
        entity=(printer["Id"], "Vendor"), paying_account_id=checking["Id"],
        lines=[account_line("19.99", ra, description="Binding supplies")])
    qbo.add_purchase(  # before the start date: not this firm's concern
        payment_type="Check", doc_number="0999", txn_date="2026-09-15",
        entity=(court["Id"], "Vendor"), paying_account_id=checking["Id"],
        lines=[account_line("120.00", ra, customer_id=jid, description="Old filing")])
    # The clerk's receipt for check 1042, scanned and attached to it in QuickBooks.
    qbo.attach("Purchase", filing_check["Id"], RECEIPT_FILE, data=RECEIPT_BYTES,
               content_type="application/pdf")
    return DemoFirm(qbo, clio, ra, category["id"], courier["Id"], c_acme["Id"], expert["Id"],
                    jid, court["Id"], checking["Id"], filing_check["Id"])


def run_demo(*, database_url: str | None, out: TextIO, verbose: bool = False) -> int:
    with tempfile.TemporaryDirectory(prefix="hardcost-demo-") as tmp:
        url = database_url or f"sqlite:///{Path(tmp) / 'demo.sqlite'}"
        db = make_engine(url)
        upgrade(db)
        sessions = make_session_factory(db)
        with SandboxWorld.start() as world:
            slack = SlackSandbox(clock=world.clock)
            slack_server = serve_in_thread(slack)
            slack.base_url = slack_server.url
            try:
                return _demo(world, slack, slack_server, sessions, db.url.render_as_string(),
                             out, verbose)
            finally:
                slack_server.stop()
                db.dispose()


def _demo(world: SandboxWorld, slack: SlackSandbox, slack_server: RunningServer,
          sessions: sessionmaker[Session], database: str, out: TextIO,
          verbose: bool) -> int:
    demo = seed_demo(world)
    firm_id = world.connect_firm(
        sessions, demo.company, demo.account, name="Moss & Hale LLP", start_date=START_DATE,
        import_account_ids=[demo.import_account_id], expense_category_id=demo.category_id)
    rig = make_rig(SimpleNamespace(world=world, sessions=sessions, id=firm_id), slack,
                   slack_server)
    out.write(
        "hardcost demo — Moss & Hale LLP, on the built-in sandbox\n"
        f"  QuickBooks sandbox: {world.qbo_server.url} (realm {demo.company.realm_id})\n"
        f"  Clio sandbox:       {world.clio_server.url}\n"
        f"  Slack sandbox:      {slack_server.url} (the app itself at {rig.web.url})\n"
        f"  database:           {database}\n"
        f"  import account \"Reimbursable Expenses\", start date {START_DATE}\n\n")
    try:
        world.clock.advance(5 * 60)  # the bookkeeper entered these a while ago
        importer = world.importer(sessions, firm_id)
        first = importer.run(trigger="demo")
        out.write(render_summary(first) + "\n\n")
        rig.ctx.notifier(rig.app.client).after_run(firm_id, first)
        out.write("What #costs sees in Slack:\n\n")
        for message in rig.channel_messages():
            out.write(render(message) + "\n")
            replies = len(rig.ws.thread(rig.channel, message["ts"])) - 1
            if replies > 0:
                out.write(f"  └ {replies} repl{'y' if replies == 1 else 'ies'} in the thread "
                          "with the details\n")
            out.write("\n")

        receipts_filed = _demo_receipt(demo, sessions, firm_id, first, out)

        prompt = next(m for m in rig.prompts() if "48.75" in (m.get("text") or ""))
        waiting = next(w for w in _waiting(sessions, firm_id) if w.amount == Decimal("48.75"))
        matter = next(c for c in waiting.candidates if "Lease" not in c["description"]
                      and "Reyes" in c["description"])
        out.write(f"Sam Staff clicks {matter['display_number']} on the $48.75 courier prompt "
                  "(a signed request into the Slack app)…\n")
        rig.click(prompt, "hc_choose_matter", value=f"{waiting.id}:{matter['id']}")
        wait_for(lambda: len(demo.account.activities) == first.imported + 1,
                 what="the chosen entry in Clio")
        updated = wait_for(lambda: (m := rig.ws.message(rig.channel, prompt["ts"]))
                           and m["updated"] and m, what="the prompt updated")
        names = {user_id: user["real_name"] for user_id, user in rig.ws.users.items()}
        out.write(render(updated, names=names) + "\n\n")

        world.clock.advance(15 * 60)
        second = importer.run(trigger="demo")
        rig.ctx.notifier(rig.app.client).after_run(firm_id, second)
        out.write("The next scheduled run, 15 minutes later, finds nothing new "
                  "(and posts nothing):\n")
        out.write(render_summary(second) + "\n\n")
        # A purchase that became exactly one Clio entry in the first run.
        by_purchase: dict[str, list[EntryLink]] = {}
        for link in _links(sessions, firm_id):
            by_purchase.setdefault(link.purchase_id, []).append(link)
        purchase_id = next(pid for pid, links in by_purchase.items()
                           if len(links) == 1 and links[0].run_id == first.run_id)
        duplicate = next(e for e in first.imported_entries
                         if e.marker == by_purchase[purchase_id][0].marker)
        out.write(f"The bookkeeper deletes the {money(duplicate.amount)} expense for "
                  f"{duplicate.customer} in QuickBooks (it was entered by mistake). The next "
                  "run's deletion check (QuickBooks' change data capture) finds it and removes "
                  "the unbilled Clio entry:\n")
        demo.company.delete_purchase(purchase_id)
        world.clock.advance(15 * 60)
        third = importer.run(trigger="demo")
        before = len(rig.channel_messages())
        rig.ctx.notifier(rig.app.client).after_run(firm_id, third)
        out.write(render_summary(third) + "\n\n")
        for message in rig.channel_messages()[before:]:
            out.write(render(message) + "\n\n")
        fourth = _demo_edit(world, demo, importer, rig, sessions, firm_id, first, out)
        fifth = _demo_rule(world, demo, importer, rig, sessions, firm_id, out, names)
        sixth = _demo_bill(world, demo, importer, rig, firm_id, out, names)
        untagged = _demo_untagged(demo, rig, sessions, firm_id, out, names)
        coded = _demo_coding(world, demo, importer, rig, firm_id, out, names)
        out.write("Who put which cost where, and when? Anyone can ask: /hardcost history "
                  "last 6 (only they see the answer):\n\n")
        asked = len(rig.replies_to(rig.admin))
        rig.command("history last 6")
        history = wait_for(lambda: rig.replies_to(rig.admin)[asked:] or None,
                           what="the history reply")[0]
        out.write(render(history, names=names) + "\n\n")
        entries = demo.account.activities
        out.write(f"Clio now holds {len(entries)} hard-cost entries, each on its client's "
                  "matter and none twice.\n\n")
        reported = _demo_report(demo, importer, rig, sessions, firm_id, out)
        out.write("Next: hardcost serve --sandbox tries the same books in your own Slack "
                  "workspace (docs/setup.md).\n")
        if verbose:  # test tooling: the sandbox Clio's check of hardcost's requests
            if world.clio.validation_enabled:
                check = (f"{len(world.clio.schema_errors)} requests failed the check against "
                         "Clio's OpenAPI document")
            else:
                check = ("requests not checked against Clio's OpenAPI document: "
                         f"{world.clio.validation_disabled_reason}")
            out.write(f"Sandbox Clio: {check}.\n")
    finally:
        rig.web.stop()
    ok = not first.error and not second.error and second.imported == 0 and receipts_filed \
        and second.receipts_filed == 0 and \
        not third.error and third.deleted >= 1 and not fourth.error and fourth.updated == 1 \
        and not fifth.error and fifth.by_rule == 1 and not sixth.error \
        and sixth.imported_bills == 1 and untagged and coded and reported
    return 0 if ok else 1


def _demo_receipt(demo: DemoFirm, sessions: sessionmaker[Session], firm_id: int,
                  first: RunSummary, out: TextIO) -> bool:
    """Check 1042's receipt, attached in QuickBooks, filed in the documents of each matter
    its entries went to, byte for byte, once each."""
    matters = sorted({link.clio_matter_id for link in _links(sessions, firm_id)
                      if link.purchase_id == demo.filing_check_id and link.state == "created"
                      and link.clio_matter_id is not None})
    digest = hashlib.sha256(RECEIPT_BYTES).hexdigest()
    filed = []
    for matter_id in matters:
        documents = [d for d in demo.account.documents_of(matter_id)
                     if d["name"].endswith(RECEIPT_FILE)]
        matter = demo.account.matters[matter_id]
        if len(documents) == 1 and documents[0]["fully_uploaded"] \
                and documents[0]["sha256"] == digest:
            filed.append(f"“{documents[0]['name']}” (document #{documents[0]['id']}) on "
                         f"{matter['display_number']} {matter['description']}")
    ok = bool(matters) and len(filed) == len(matters) and first.receipts_filed == len(matters)
    out.write(f"Check 1042's receipt ({RECEIPT_FILE}, attached in QuickBooks) is filed in the "
              "documents of each matter its entries went to, byte for byte:\n"
              + "".join(f"  • {line}\n" for line in filed)
              + ("" if ok else "  (not filed on every matter: see the run's failures)\n")
              + "\n")
    return ok


def _answer(rig: SlackRig, text: str) -> dict[str, Any]:
    """``/hardcost <text>`` from the admin, and the app's (ephemeral) reply to it."""
    asked = len(rig.replies_to(rig.admin))
    rig.command(text)
    replies: list[dict[str, Any]] = wait_for(lambda: rig.replies_to(rig.admin)[asked:] or None,
                                             what=f"the reply to {text}")
    return replies[0]


def _demo_coding(world: SandboxWorld, demo: DemoFirm, importer: Importer, rig: SlackRig,
                 firm_id: int, out: TextIO, names: dict[str, str]) -> bool:
    """A court fee booked to a QuickBooks account of its own arrives in Clio under "Filing
    fees" with the UTBMS expense code E112 (Court fees), by two settings per account."""
    clio = demo.account
    ledes = clio.add_utbms_set("LEDES 1998B")
    codes = {code: clio.add_utbms_code(ledes["id"], code, name)
             for code, name in (("E101", "Copying"), ("E107", "Delivery services/messengers"),
                                ("E112", "Court fees"), ("E124", "Other"))}
    filing = clio.add_expense_category("Filing fees", entry_type="hard_cost")
    court_costs = demo.company.add_account("Court Costs", account_type="Expense")["Id"]
    out.write("Acme's insurer is billed by LEDES: every expense needs a UTBMS code, and court "
              "fees print under their own category. The bookkeeper books court fees to a "
              "QuickBooks account of their own; an admin maps it in Slack:\n\n")
    for text in ("set account +Court Costs", "set category Filing fees for Court Costs",
                 "set utbms E112 for Court Costs"):
        reply = _answer(rig, text)
        out.write(f"/hardcost {text}\n{render(reply, names=names)}\n\n")
    demo.company.add_purchase(
        payment_type="Check", doc_number="1045", txn_date="2026-10-28",
        entity=(demo.court_id, "Vendor"), paying_account_id=demo.checking_id,
        lines=[account_line("350.00", court_costs, customer_id=demo.jane_id,
                            description="Motion filing fee")])
    world.clock.advance(15 * 60)
    summary = importer.run(trigger="demo")
    rig.ctx.notifier(rig.app.client).after_run(firm_id, summary)
    entry = next((a for a in clio.activities.values() if Decimal(str(a["price"])) ==
                  Decimal("350.00")), None)
    if entry is None or summary.error:
        out.write("The court fee did not reach Clio.\n\n")
        return False
    category = (entry.get("expense_category") or {}).get("id")
    code = (entry.get("utbms_expense") or {}).get("id")
    out.write(f"Check 1045 ($350.00, motion filing fee for Jane Smith) arrives as Clio entry "
              f"#{entry['id']} under "
              f"{filing['name'] if category == filing['id'] else 'another category'}, "
              f"UTBMS {'E112 (Court fees)' if code == codes['E112']['id'] else 'code missing'}; "
              "the other accounts keep the firm's default category.\n\n")
    return category == filing["id"] and code == codes["E112"]["id"]


REPORT_MONTH = Month(2026, 10)


def _demo_report(demo: DemoFirm, importer: Importer, rig: SlackRig,
                 sessions: sessionmaker[Session], firm_id: int, out: TextIO) -> bool:
    """The month's report: two entries put on bills in Clio first (one issued, one draft),
    then the report as the firm's channel gets it, and its chart written to a file named."""
    entries = sorted(demo.account.activities.values(), key=lambda a: a["id"])
    issued, draft = entries[0], entries[1]
    demo.account.add_bill([issued["id"]], state="awaiting_payment", number="1001")
    demo.account.add_bill([draft["id"]], state="draft", number="1002")
    out.write(f"In Clio, someone bills the ${issued['price']:.2f} entry (bill 1001, issued) and "
              f"puts the ${draft['price']:.2f} one on a draft bill. The month's report, as "
              f"/hardcost report {REPORT_MONTH.slug} posts it in #costs:\n\n")
    today = date(2026, 11, 16)
    report = month_report.build(sessions, firm_id, REPORT_MONTH, clio=importer.clio,
                                qbo=importer.qbo, today=today)
    share(rig.app.client, report, to=rig.channel)
    top = next(m for m in reversed(rig.channel_messages())
               if "Hard costs for" in (m.get("text") or ""))
    out.write(render(top) + "\n")
    files = [f for f in rig.ws.files_in(rig.channel) if f.get("thread_ts") == top["ts"]]
    out.write(f"  └ in the thread: the details, {', '.join(f['name'] for f in files)}\n\n")
    png = Path(tempfile.gettempdir()) / f"hardcost-demo-report-{REPORT_MONTH.slug}.png"
    png.write_bytes(report_chart.render_png(report))
    out.write(f"The chart is written to {png} (open it to see the six months and the "
              "unbilled by age).\n\n")
    return len(files) == 2 and report.split.count > 0


def _courier_run(world: SandboxWorld, demo: DemoFirm, importer: Importer, rig: SlackRig,
                 firm_id: int, amount: str, description: str, day: str) -> RunSummary:
    """Another Speedy Couriers cost for Acme, and the next scheduled run."""
    demo.company.add_purchase(
        payment_type="CreditCard", txn_date=day, entity=(demo.courier_id, "Vendor"),
        lines=[account_line(amount, demo.import_account_id, customer_id=demo.acme_id,
                            description=description)])
    world.clock.advance(15 * 60)
    summary = importer.run(trigger="demo")
    rig.ctx.notifier(rig.app.client).after_run(firm_id, summary)
    return summary


def _demo_rule(world: SandboxWorld, demo: DemoFirm, importer: Importer, rig: SlackRig,
               sessions: sessionmaker[Session], firm_id: int, out: TextIO,
               names: dict[str, str]) -> RunSummary:
    """A suggestion on the next courier prompt, a rule made from the answer, and the rule
    importing the courier cost after that without a question."""
    out.write("Another Speedy Couriers cost for Acme arrives. The prompt now puts the matter "
              "Sam chose last time first, marked Suggested, with the reason:\n\n")
    _courier_run(world, demo, importer, rig, firm_id, "52.00", "Courier to Beta's counsel",
                 "2026-10-22")
    prompt = wait_for(lambda: next((m for m in rig.prompts() if "52.00" in (m.get("text")
                                                                           or "")), None),
                      what="the courier prompt")
    out.write(render(prompt, names=names) + "\n\n")
    waiting = next(w for w in _waiting(sessions, firm_id) if w.amount == Decimal("52.00"))
    suggested = (waiting.suggestion or {}).get("matter_id") or waiting.candidates[0]["id"]
    out.write("Sam takes the suggestion, then clicks \"Always do this for Speedy Couriers → "
              "Acme Holdings\" on the updated message:\n\n")
    rig.click(prompt, "hc_choose_matter", value=f"{waiting.id}:{suggested}")
    answered = wait_for(lambda: (m := rig.ws.message(rig.channel, prompt["ts"]))
                        and "hc_make_rule" in str(m["blocks"]) and m, what="the rule offer")
    rig.click(answered, "hc_make_rule", value=str(waiting.id))
    made = wait_for(lambda: (m := rig.ws.message(rig.channel, prompt["ts"]))
                    and "Rule made by" in str(m["blocks"]) and m, what="the rule made")
    out.write(render(made, names=names) + "\n\n")
    out.write("The next Speedy Couriers cost for Acme goes straight to that matter; the run's "
              "thread names the rule and who made it (/hardcost rules lists and removes "
              "rules):\n")
    before = len(rig.channel_messages())
    fifth = _courier_run(world, demo, importer, rig, firm_id, "31.40",
                         "Courier, signed lease back to Acme", "2026-10-23")
    out.write(render_summary(fifth) + "\n\n")
    for message in rig.channel_messages()[before:]:
        out.write(render(message, names=names) + "\n")
        for reply in rig.ws.thread(rig.channel, message["ts"])[1:]:
            out.write(render(reply, names=names) + "\n")
        out.write("\n")
    return fifth


def _demo_bill(world: SandboxWorld, demo: DemoFirm, importer: Importer, rig: SlackRig,
               firm_id: int, out: TextIO, names: dict[str, str]) -> RunSummary:
    """A vendor Bill (an expert's invoice, accounts payable) with ``bills on-payment``: it
    waits while unpaid, and reaches Clio once paid, dated the payment."""
    out.write("The expert invoices the firm: the bookkeeper enters a Bill in QuickBooks, paid "
              "later. Dana turns on Bills, imported once paid (/hardcost set bills "
              "on-payment):\n")
    asked = len(rig.replies_to(rig.admin))
    rig.command("set bills on-payment")
    reply = wait_for(lambda: rig.replies_to(rig.admin)[asked:] or None,
                     what="the set reply")[0]
    out.write(render(reply, names=names) + "\n\n")
    bill = demo.company.add_bill(
        txn_date="2026-10-21", vendor_id=demo.expert_id, doc_number="AE-2026-114",
        lines=[account_line("1850.00", demo.import_account_id, customer_id=demo.jane_id,
                            description="Expert report, Smith estate valuation")])
    world.clock.advance(15 * 60)
    unpaid = importer.run(trigger="demo")
    rig.ctx.notifier(rig.app.client).after_run(firm_id, unpaid)
    out.write("The next run reads the unpaid Bill: it waits for payment (nobody is asked):\n")
    out.write(render_summary(unpaid) + "\n\n")
    demo.company.pay_bill(bill["Id"], txn_date="2026-11-04")
    world.clock.advance(15 * 60)
    paid = importer.run(trigger="demo")
    before = len(rig.channel_messages())
    rig.ctx.notifier(rig.app.client).after_run(firm_id, paid)
    out.write("The Bill is paid on 2026-11-04 (a Bill Payment); the next run imports it, "
              "dated the payment, with the bill number as reference:\n")
    out.write(render_summary(paid) + "\n\n")
    for message in rig.channel_messages()[before:]:
        out.write(render(message, names=names) + "\n\n")
    return paid


def _demo_untagged(demo: DemoFirm, rig: SlackRig, sessions: sessionmaker[Session],
                   firm_id: int, out: TextIO, names: dict[str, str]) -> bool:
    """The check with no customer on its line: asked about in the first run, its matter
    picked through the search menu (an options request, then the pick), written to Clio."""
    waiting = next(w for w in _waiting(sessions, firm_id) if w.amount == Decimal("19.99"))
    prompt = wait_for(lambda: next((m for m in rig.prompts() if "19.99" in (m.get("text")
                                                                           or "")), None),
                      what="the prompt of the check with no customer")
    out.write("Check 1044 ($19.99, binding supplies) has no customer on its line in QuickBooks "
              "(card and bank-feed imports often arrive that way). Clio's own import skips "
              "it; hardcost asked in the channel, with a search over every open and pending "
              "matter of the firm:\n\n")
    out.write(render(prompt, names=names) + "\n\n")
    response = rig.options(f"hc_prompt:{waiting.id}", "hc_search_matter", "smith")
    options = response.json().get("options") or []
    out.write("Sam types \"smith\" in the menu; the app answers from its copy of the firm's "
              "matters:\n")
    for option in options:
        client = (option.get("description") or {}).get("text") or ""
        out.write(f"  • {option['text']['text']}" + (f" ({client})" if client else "") + "\n")
    if not options:
        out.write("  (nothing found)\n")
        return False
    before = len(demo.account.activities)
    rig.click(prompt, "hc_search_matter", selected=options[0]["value"],
              block_id=f"hc_prompt:{waiting.id}")
    wait_for(lambda: len(demo.account.activities) == before + 1,
             what="the untagged expense's entry in Clio")
    updated = wait_for(lambda: (m := rig.ws.message(rig.channel, prompt["ts"]))
                       and m["updated"] and m, what="the prompt updated")
    out.write(f"…and picks {options[0]['text']['text']}:\n\n")
    out.write(render(updated, names=names) + "\n\n")
    return True


def _demo_edit(world: SandboxWorld, demo: Any, importer: Importer, rig: SlackRig,
               sessions: sessionmaker[Session], firm_id: int, first: RunSummary,
               out: TextIO) -> RunSummary:
    """The bookkeeper corrects an amount in QuickBooks; the next run updates the Clio entry
    in place (one PATCH), and the thread says old → new."""
    links = [link for link in _links(sessions, firm_id)
             if link.run_id == first.run_id and link.state == "created"]
    link = next(link for link in links
                if len(demo.company.purchases.get(link.purchase_id, {}).get("Line", [])) == 1
                and Decimal(str(demo.company.purchases[link.purchase_id]["Line"][0]["Amount"]))
                == link.amount  # in the home currency
                and sum(1 for other in links if other.purchase_id == link.purchase_id) == 1)
    purchase = demo.company.purchases[link.purchase_id]
    [line] = purchase["Line"]
    corrected = (link.amount / 10).quantize(Decimal("0.01"))
    out.write(f"The bookkeeper finds a typo: expense #{link.purchase_id} was entered as "
              f"{money(link.amount)} instead of {money(corrected)}. She corrects it in "
              f"QuickBooks; the next run updates the unbilled Clio entry "
              f"#{link.clio_activity_id} in place (Clio's own importer keeps the old "
              "amount):\n")
    demo.company.update_purchase(link.purchase_id, lines=[{**line, "Amount": corrected}])
    world.clock.advance(15 * 60)
    fourth = importer.run(trigger="demo")
    before = len(rig.channel_messages())
    rig.ctx.notifier(rig.app.client).after_run(firm_id, fourth)
    out.write(render_summary(fourth) + "\n\n")
    for message in rig.channel_messages()[before:]:
        out.write(render(message) + "\n")
        for reply in rig.ws.thread(rig.channel, message["ts"])[1:]:
            out.write(render(reply) + "\n")
        out.write("\n")
    return fourth


def _waiting(sessions: sessionmaker[Session], firm_id: int) -> list[WaitingExpense]:
    with sessions() as session:
        return list(session.scalars(select(WaitingExpense).where(
            WaitingExpense.firm_id == firm_id, WaitingExpense.resolved_at.is_(None))))


def _links(sessions: sessionmaker[Session], firm_id: int) -> list[EntryLink]:
    with sessions() as session:
        return list(session.scalars(select(EntryLink).where(EntryLink.firm_id == firm_id)
                                    .order_by(EntryLink.id)))


def start_sandbox(config: Settings) -> tuple[SandboxWorld, Settings]:
    """The built-in QuickBooks and Clio with the demo firm's books, for ``hardcost serve
    --sandbox`` in a real Slack: returns the running world and ``config`` pointed at it."""
    world = SandboxWorld.start()
    seed_demo(world)
    sandbox = world.settings()
    overrides = {name: getattr(sandbox, name) for name in type(sandbox).model_fields
                 if name.startswith(("qbo_", "clio_"))}
    log.warning("SANDBOX mode — QuickBooks at %s and Clio at %s hold the demo firm's "
                "books; `/hardcost connect quickbooks` and `connect clio` approve at once. "
                "Then: /hardcost set account Reimbursable Expenses, /hardcost set category "
                "Court & filing fees, /hardcost set start-date 2026-10-01, /hardcost run.",
                world.qbo_server.url, world.clio_server.url)
    return world, config.model_copy(update=overrides)

"""``python -m bench.reliability``: hardcost tried as a hostile user and a broken network would
treat it, with what was tried and what was lost written to ``docs/reliability.md``.

Everything runs on loopback against the built-in sandboxes and the production WSGI app:
forged Slack requests, hostile slash commands and interaction payloads, hostile QuickBooks
webhook bodies and purchases, faults of QuickBooks and Clio during an import, and ``hardcost
sync`` killed with SIGKILL at random moments. "Lost" must be nothing: no 5xx, no reply showing
a stack trace or a secret, no expense missing from Clio or there twice, no run left
``running``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import requests
from slack_sdk.signature import SignatureVerifier
from sqlalchemy import select

from bench.sections import HAND_PASS_SECTION, carry_over
from hardcost.sandbox.clio import rate_limit_fault, server_error_fault
from hardcost.sandbox.faults import Fault
from hardcost.sandbox.qbo import account_line, throttle_fault_json
from hardcost.sandbox.server import serve_in_thread
from hardcost.sandbox.slack import SlackSandbox
from hardcost.sandbox.slack_rig import SIGNING_SECRET, SlackRig, make_rig
from hardcost.sandbox.world import SandboxWorld
from hardcost.sync.db import upgrade
from hardcost.sync.engine import make_engine, make_session_factory
from hardcost.sync.leases import settle_abandoned_runs
from hardcost.sync.store import Connection, EntryLink, LinkState, Run

SEED = 10
POST = r"/api/v4/activities\.json$"
MARKER = re.compile(r"\[qbo [^\]]+\]")
ABSURD = ["10000000000", "99999999999999999999999", "3000000000", "-5", "0", "²", "٣٠", "1e9",
          "NaN", "０x10", "2026-02-30", "0001-01-01", "9999-12-31", "２０２６-01-31", "<!here>",
          "<!channel>", "<@U999>", "<#C999|x>", "<https://evil.example|click>", "&amp;&lt;",
          "\u202e", "\x00", "' OR 1=1 --", "x" * 5000, "🤖" * 100, "+", "anyone", "owner"]
KEYS = ["channel", "start-date", "account", "category", "user", "schedule", "split-lines",
        "item-lines", "deletions", "approvers", "colour"]
LEAKS = ("Traceback", 'File "/', "sqlalchemy.exc", "psycopg")


@dataclass
class Tried:
    """One category's counts."""

    tried: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)  # anything wrong, in words

    def answer(self, status: int, expected: set[int] | None = None) -> None:
        self.tried += 1
        self.statuses[status] += 1
        if status >= 500:
            self.lost.append(f"HTTP {status}")
        elif expected is not None and status not in expected:
            self.lost.append(f"HTTP {status}, expected {sorted(expected)}")


@dataclass
class Firm:
    """What ``make_rig`` needs of a firm, and its books."""

    world: SandboxWorld
    sessions: Any
    id: int
    books: Any
    customers: list[str] = field(default_factory=list)


def _firm(world: SandboxWorld, sessions: Any, clients: int = 5) -> Firm:
    books = world.open_books("Reliability Law LLP")
    firm_id = world.connect_firm(sessions, books.company, books.account,
                                 name="Reliability Law LLP", start_date=date(2026, 1, 1),
                                 import_account_ids=[books.import_account_id],
                                 expense_category_id=books.category_id)
    firm = Firm(world, sessions, firm_id, books)
    for n in range(clients):
        name = f"Client {n}"
        firm.customers.append(books.company.add_customer(name)["Id"])
        contact = books.account.add_contact(name)
        books.account.add_matter(contact["id"], description=f"{name} matter")
    return firm


def _expense(firm: Firm, n: int) -> tuple[str, Decimal]:
    customer = firm.customers[n % len(firm.customers)]
    amount = Decimal(f"{10 + n}.{n % 100:02d}")
    purchase = firm.books.company.add_purchase(
        payment_type="Check", txn_date="2026-02-03",
        lines=[account_line(str(amount), firm.books.import_account_id, customer_id=customer)])
    return f"[qbo {firm.books.company.realm_id}/{purchase['Id']}/{customer}]", amount


def secrets_of(rig: SlackRig) -> list[str]:
    """Every secret a reply must never show: the bot token, the signing secret, the stored
    QuickBooks and Clio tokens."""
    with rig.firm.sessions() as session:
        rows = list(session.scalars(select(Connection)))
    found = [rig.ws.bot_token, SIGNING_SECRET]
    for row in rows:
        found += [row.access_token, row.refresh_token or ""]
    return [s for s in found if len(s) >= 8]


def _signed(body: str, secret: str = SIGNING_SECRET, stamp: str | None = None) -> dict[str, str]:
    ts = stamp if stamp is not None else str(int(time.time()))
    return {"X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": SignatureVerifier(secret).generate_signature(
                timestamp=ts, body=body)}


# -- the categories ------------------------------------------------------------------------------

def forged(rig: SlackRig, rng: random.Random, n: int) -> Tried:
    result = Tried()
    url = f"{rig.web.url}/slack/events"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for i in range(n):
        body = rig.command_body("pause")
        kind = i % 5
        if kind == 0:
            headers = _signed(body, secret="not-the-secret")
        elif kind == 1:
            headers = _signed(body, stamp=str(int(time.time()) - 6 * 60))
        elif kind == 2:
            headers = {**_signed(body), "X-Slack-Request-Timestamp": rng.choice(
                ["abc", "", "1e9", "17.5", "9" * 40])}
        elif kind == 3:
            headers = _signed(body)
            body = body.replace("pause", "resume")  # altered after signing
        else:
            headers = {}
        response = requests.post(url, data=body.encode(), headers={**form, **headers},
                                 timeout=10)
        result.answer(response.status_code, {401})
    return result


def commands(rig: SlackRig, rng: random.Random, n: int) -> Tried:
    result = Tried()
    for _ in range(n):
        text = rng.choice([f"set {rng.choice(KEYS)} {rng.choice(ABSURD)}",
                           f"{rng.choice(['run', 'check', 'status', 'pending', 'x'])} "
                           f"{rng.choice(ABSURD)}", rng.choice(ABSURD)])
        response = rig.command(text)
        result.answer(response.status_code)
    return result


def payloads(rig: SlackRig, rng: random.Random, n: int) -> Tried:
    result = Tried()
    junk: list[Any] = [None, 7, "x", [], {}, [{}], {"id": 7}, {"type": 7}, "<!here>"]
    for _ in range(n):
        payload: dict[str, Any] = {
            "type": rng.choice(["block_actions", "view_submission", "block_suggestion",
                                "view_closed", "", "nonsense"]),
            "team": {"id": rig.ws.team_id}, "user": {"id": rig.staff,
                                                     "team_id": rig.ws.team_id},
            "actions": [{"action_id": rng.choice(["hc_choose_matter", "hc_run_now",
                                                  "hc_retry_failure", "hc_reconnect", "x"]),
                         "value": rng.choice(ABSURD), "block_id": "hc_prompt:1"}],
            "view": {"id": "V1", "type": "modal", "callback_id": "hc_settings",
                     "state": {"values": {}}}}
        for _ in range(rng.randint(0, 3)):
            payload[rng.choice(list(payload))] = rng.choice(junk)
        response = rig.interaction(payload)
        result.answer(response.status_code)
    return result


def webhooks(rig: SlackRig, rng: random.Random, n: int) -> Tried:
    result = Tried()
    realm = rig.firm.books.company.realm_id
    for i in range(n):
        shape = i % 4
        if shape == 0:
            body: Any = {"eventNotifications": [{"realmId": rng.choice([realm, 7, None]),
                                                 "dataChangeEvent": {"entities": [
                                                     {"name": "Purchase",
                                                      "id": rng.choice(ABSURD),
                                                      "operation": rng.choice(ABSURD)}]}}]}
        elif shape == 1:
            body = [{"specversion": "1.0", "type": rng.choice(ABSURD), "id": str(i),
                     "intuitaccountid": realm, "intuitentityid": rng.choice(ABSURD)}]
        elif shape == 2:
            body = rng.choice([None, 7, "x", [], {}, {"eventNotifications": "x"}])
        else:
            depth = rng.choice([10, 1000, 50_000])
            raw = ("[" * depth + "]" * depth).encode()
            response = requests.post(f"{rig.web.url}/webhooks/quickbooks", data=raw,
                                     timeout=10, headers={
                                         "Content-Type": "application/json",
                                         "intuit-signature": rig.firm.world.qbo.sign_webhook(
                                             raw)})
            result.answer(response.status_code, {200, 400})
            continue
        raw = json.dumps(body).encode()
        response = requests.post(f"{rig.web.url}/webhooks/quickbooks", data=raw, timeout=10,
                                 headers={"Content-Type": "application/json",
                                          "intuit-signature": rig.firm.world.qbo.sign_webhook(
                                              raw)})
        result.answer(response.status_code, {200, 400})
    return result


def purchases(rig: SlackRig, rng: random.Random, n: int) -> Tried:
    """Hostile purchases in QuickBooks: each run must end with a truthful record."""
    result = Tried()
    firm = rig.firm
    values: list[Any] = [None, 7, "x", [], {}, "2026-02-30", "NaN", "1e400",
                         "99999999999999999999.99", "12.123456789", -5, True, "\x00"]
    for _ in range(n):
        purchase: dict[str, Any] = {
            "TxnDate": "2026-02-03", "PaymentType": "Check",
            "Line": [{"Amount": "12.34", "DetailType": "AccountBasedExpenseLineDetail",
                      "AccountBasedExpenseLineDetail": {
                          "AccountRef": {"value": firm.books.import_account_id},
                          "CustomerRef": {"value": firm.customers[0]}}}]}
        for _ in range(rng.randint(1, 3)):
            where = rng.choice(["TxnDate", "PaymentType", "Line", "Amount", "CustomerRef",
                                "ExchangeRate", "CurrencyRef"])
            value = rng.choice(values)
            line = purchase["Line"][0] if isinstance(purchase["Line"], list) \
                and purchase["Line"] else {}
            if where == "Amount":
                line["Amount"] = value
            elif where == "CustomerRef":
                line.get("AccountBasedExpenseLineDetail", {})["CustomerRef"] = value
            else:
                purchase[where] = value
        firm.books.company.put_purchase_raw(purchase)
        firm.world.clock.advance(15 * 60)
        result.tried += 1
        try:
            summary = firm.world.importer(firm.sessions, firm.id).run(trigger="manual")
        except Exception as exc:  # noqa: BLE001 - that is what this counts
            result.lost.append(f"a run raised {type(exc).__name__}")
            continue
        with firm.sessions() as session:
            run = session.get(Run, summary.run_id)
            truthful = run is not None and run.status == ("failed" if summary.error else "ok")
        result.statuses[200 if truthful else 500] += 1
        if not truthful:
            result.lost.append("a run's record did not say what happened")
    return result


def faults(firm: Firm, rng: random.Random, n: int) -> tuple[Tried, int]:
    """An import of n purchases while QuickBooks and Clio fail now and then."""
    result = Tried()
    expected = dict(_expense(firm, 10_000 + i) for i in range(n))
    clio, qbo = firm.world.clio.faults, firm.world.qbo.faults
    armed = 0
    for _ in range(max(3, n // 10)):
        kind = rng.choice(["clio 500", "clio 429", "clio timeout", "clio malformed 201",
                           "clio lost reply", "qbo 500", "qbo throttle"])
        if kind == "clio 500":
            clio.add(replace(server_error_fault(500, path=POST), method="POST"))
        elif kind == "clio 429":
            clio.add(replace(rate_limit_fault(retry_after=1, path=POST), method="POST"))
        elif kind == "clio timeout":
            clio.add(Fault(path=POST, method="POST", delay=0.2, status=504))
        elif kind == "clio malformed 201":
            clio.add(Fault(path=POST, method="POST", status=201, body='{"data": {}}'))
        elif kind == "clio lost reply":
            clio.add(Fault(path=POST, method="POST", status=502, after_handler=True))
        elif kind == "qbo 500":
            qbo.add(Fault(path=r"/query$", status=500, body='{"Fault": {}}'))
        else:
            qbo.add(throttle_fault_json())
        armed += 1
    for _ in range(6):
        firm.world.clock.advance(15 * 60)
        firm.world.importer(firm.sessions, firm.id).run(trigger="manual")
        result.tried += 1
        result.statuses[200] += 1
    _check_books(firm, expected, result)
    return result, armed


def kills(firm: Firm, database_url: str, rng: random.Random, n: int,
          purchases: int) -> tuple[Tried, Counter[str]]:
    result = Tried()
    expected = dict(_expense(firm, 20_000 + i) for i in range(purchases))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QBO_", "CLIO_"))}
    settings = firm.world.settings()
    for name, info in type(settings).model_fields.items():
        value = getattr(settings, name)
        if info.alias and value is not None:
            env[info.alias] = str(value)
    env["DATABASE_URL"] = database_url
    moments: Counter[str] = Counter()
    for _ in range(n):
        moment = rng.choice(["reading", "before a POST", "after Clio created", "anywhere"])
        moments[moment] += 1
        if moment == "before a POST":
            firm.world.clio.faults.add(Fault(path=POST, method="POST", passthrough=True,
                                             delay=0.4, times=3))
        elif moment == "after Clio created":
            firm.world.clio.faults.add(Fault(path=POST, method="POST", passthrough=True,
                                             delay_after=0.4, times=3))
        elif moment == "reading":
            firm.world.qbo.faults.add(Fault(path=r"/query$", passthrough=True, delay=0.3,
                                            times=2))
        proc = subprocess.Popen([sys.executable, "-m", "hardcost", "sync", "--firm",
                                 str(firm.id)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.6, 2.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        firm.world.clio.faults.clear()
        firm.world.qbo.faults.clear()
        result.tried += 1
        result.statuses[200] += 1
    settle_abandoned_runs(firm.sessions.kw["bind"])  # hardcost serve starting again
    for _ in range(3):
        firm.world.clock.advance(15 * 60)
        firm.world.importer(firm.sessions, firm.id).run(trigger="manual")
    _check_books(firm, expected, result)
    return result, moments


def _check_books(firm: Firm, expected: dict[str, Decimal], result: Tried) -> None:
    in_clio = Counter(m for a in firm.books.account.activities.values()
                      for m in MARKER.findall(a.get("note") or "") if m in expected)
    missing = expected.keys() - in_clio.keys()
    doubled = [m for m, count in in_clio.items() if count > 1]
    if missing:
        result.lost.append(f"{len(missing)} expense(s) never reached Clio")
    if doubled:
        result.lost.append(f"{len(doubled)} expense(s) in Clio more than once")
    with firm.sessions() as session:
        pending = session.scalars(select(EntryLink.id).where(
            EntryLink.firm_id == firm.id, EntryLink.state == LinkState.PENDING)).all()
        running = session.scalars(select(Run.id).where(Run.firm_id == firm.id,
                                                       Run.status == "running")).all()
    if pending:
        result.lost.append(f"{len(pending)} link(s) left pending")
    if running:
        result.lost.append(f"{len(running)} run(s) left running")


# -- the report ------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="hardcost-reliability-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'reliability.sqlite'}"
        db = make_engine(url)
        upgrade(db)
        sessions = make_session_factory(db)
        with SandboxWorld.start() as world:
            world.clio.rate_limit_per_minute = 1_000_000
            firm = _firm(world, sessions)
            slack = SlackSandbox(clock=world.clock)
            slack_server = serve_in_thread(slack)
            slack.base_url = slack_server.url
            rig = make_rig(firm, slack, slack_server)
            try:
                started = time.monotonic()
                results = {
                    "Forged, stale or altered Slack requests": forged(rig, rng, args.requests),
                    "Hostile slash commands": commands(rig, rng, args.requests),
                    "Hostile interaction payloads": payloads(rig, rng, args.requests),
                    "Hostile webhook bodies (validly signed)": webhooks(rig, rng,
                                                                        args.requests),
                    "Hostile QuickBooks purchases": purchases(rig, rng, args.purchases // 4),
                }
                time.sleep(1.0)  # lazy listeners answer after the ack
                leaks = [m for m in rig.ws.messages
                         for text in [m.get("text", "") + json.dumps(m.get("blocks") or [])]
                         if any(x in text for x in (*LEAKS, *secrets_of(rig)))]
                other = _firm(world, sessions)
                results["QuickBooks and Clio faults during an import"], armed = faults(
                    other, rng, args.purchases)
                third = _firm(world, sessions)
                results["hardcost sync killed with SIGKILL"], moments = kills(
                    third, url, rng, args.kills, args.purchases)
                healthy = requests.get(f"{rig.web.url}/healthz", timeout=10).status_code
                return {"results": results, "leaks": len(leaks), "armed": armed,
                        "moments": moments, "healthy": healthy,
                        "seconds": time.monotonic() - started}
            finally:
                rig.web.stop()
                slack_server.stop()
                db.dispose()


def report(data: dict[str, Any], args: argparse.Namespace) -> str:
    results: dict[str, Tried] = data["results"]
    rows = "\n".join(
        f"| {name} | {r.tried:,} | "
        f"{', '.join(f'{s}: {c:,}' for s, c in sorted(r.statuses.items()))} | "
        f"{'; '.join(sorted(set(r.lost))) or 'nothing'} |" for name, r in results.items())
    lost = sum(len(r.lost) for r in results.values()) + data["leaks"] + \
        (data["healthy"] != 200)
    moments = ", ".join(f"{k} {v}" for k, v in sorted(data["moments"].items()))
    return f"""# Reliability: hardcost tried as a hostile user and a broken network would

- **Date:** {datetime.now(UTC):%Y-%m-%d %H:%M} UTC
- **Machine:** {platform.platform()} ({platform.machine()})
- **Command:** `python -m bench.reliability --requests {args.requests} --purchases \
{args.purchases} --kills {args.kills} --seed {args.seed}` ({data['seconds']:.0f} s)
- **Set-up:** the production WSGI app and Bolt app on loopback (`sandbox.slack_rig.make_rig`),
  the built-in QuickBooks, Clio and Slack sandboxes, a temporary SQLite file; `hardcost sync`
  in processes of its own for the kills.

## What was tried and what was lost

| category | tried | answers (HTTP status: count) | lost |
|---|---|---|---|
{rows}

- Replies in Slack showing a stack trace, a token or a secret: {data['leaks']}.
- `/healthz` at the end: {data['healthy']}.
- Faults armed during the import: {data['armed']}; kill moments: {moments}.
- **Lost in all: {lost}** (must be 0).

## How to read it

For purchases, faults and kills the "answers" column counts runs (200: the run's record told
the truth). Forged requests must all be refused with 401. Hostile commands, payloads and
webhook bodies may be answered 200 (a usage reply, a refusal in words) or 4xx, never 5xx. Each
hostile purchase is followed by a run whose record must say what happened (`failed` with a
reason when it stopped, `ok` otherwise) and which must not raise. The faults and kills end with
recovery runs, after which every purchase must be in Clio exactly once, no link pending and no
run left `running` (a killed run is `abandoned` once `hardcost serve` starts again). The
property-based suites in `tests/test_fuzz.py`, `tests/test_crash_consistency.py` and
`tests/test_isolation.py` check the same properties on every CI run.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reliability")
    parser.add_argument("--requests", type=int, default=200,
                        help="requests per Slack and webhook category")
    parser.add_argument("--purchases", type=int, default=200,
                        help="purchases imported under faults and under kills")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", default="docs/reliability.md")
    args = parser.parse_args(argv)
    data = run(args)
    text = report(data, args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = carry_over(out, text, [HAND_PASS_SECTION])
    out.write_text(text, encoding="utf-8")
    print(text)
    return 0 if "**Lost in all: 0**" in text else 1


if __name__ == "__main__":
    sys.exit(main())

"""Scale benchmark: many firms on three ``hardcost serve`` replicas and one PostgreSQL.

    python -m bench.scale_bench [--firms 10000] [--replicas 3] [--unit-seconds 24]
                                [--intervals 2] [--threads 8] [--refresh 1] [--lease 120]
                                [--history 20] [--baseline 30] [--no-kill]
                                [--database-url URL] [--out docs/benchmarks.md]

``--refresh`` and ``--lease`` are given uncompressed and compressed like the schedule. With
the defaults (8 threads, a claim pass every 10 s) three replicas start at most 2,160 scheduled
runs per 15 minutes (see the report), so the bench's default pass is 1 s; ``--refresh 10``
shows the product's default.

Sets up ``--firms`` firms in one PostgreSQL database, each with its own sandbox QuickBooks
company and Clio account (real HTTP on loopback, served from this process), encrypted tokens,
a Slack channel, one client with one open matter, and the watermarks of a firm that has run
before (so every scheduled run is a steady-state run), plus ``--history`` created entry links
and sent Slack messages from earlier use. The rows are bulk-inserted (``firms``,
``firm_settings``, ``connections``, ``watermarks``, ``run_leases``); the first firm is made
through the ORM and imported once, and the others copy its watermarks.

Then ``--replicas`` real ``hardcost serve`` processes run against the database, each logging
in as a role of its own (``hc_r1``…, members of the owner) so that ``pg_stat_statements``
splits their statements. A 15-minute schedule is compressed with
``HARDCOST_SCHEDULE_UNIT_SECONDS`` (``--unit-seconds``: one schedule minute lasts that long).
After an idle baseline (no firm due: the fixed cost of a replica), every firm's
``run_leases.next_run_at`` is spread uniformly over one interval (as the migration spreads
them) and ``--intervals`` intervals are measured. Meanwhile 1% of the firms per interval get a
new purchase (a fifth of them also a signed QuickBooks webhook to a random replica), a few
``/hardcost run`` and ``/hardcost status`` commands go to every replica, and halfway through
the last interval one replica gets SIGKILL while it writes a firm's entries. Afterwards every
purchase must be in Clio exactly once (by its note marker).

Measured: statements per interval per replica (``pg_stat_statements``, by role), split into the
scheduler's own (every statement on ``run_leases``) and the rest; rows read
(``pg_stat_user_tables``); schedule lateness (a bench-only trigger notes each claim's due time);
peak connections (``pg_stat_activity`` sampled); QuickBooks and Clio calls per quiet run and
429s (the sandboxes' logs); the killed replica's firms' takeover. Writes its section of
``docs/benchmarks.md``; exits 0 unless the benchmark itself crashes — benchmarks report, they
don't assert.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests
from slack_sdk.signature import SignatureVerifier
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.engine import Engine, make_url

from bench.sections import SCALE_SECTION, write_section
from hardcost.sandbox.qbo import account_line
from hardcost.sandbox.server import RunningServer, serve_in_thread
from hardcost.sandbox.slack import SlackSandbox, SlackWorkspace
from hardcost.sandbox.world import SandboxWorld
from hardcost.sync.crypto import generate_key
from hardcost.sync.db import upgrade
from hardcost.sync.engine import make_engine, make_session_factory
from hardcost.sync.store import (
    Connection,
    ContactLink,
    EntryLink,
    Firm,
    FirmSettings,
    LinkState,
    RunLease,
    SlackOutbox,
    Watermark,
)

REPO = Path(__file__).resolve().parent.parent
FIRMS = 10_000
REPLICAS = 3
SCHEDULE_MINUTES = 15
UNIT_SECONDS = 24.0  # one schedule minute: 15 minutes last 360 s (compression 2.5×)
INTERVALS = 2
THREADS = 8  # HARDCOST_IMPORT_THREADS' default
REFRESH = 1.0  # claim pass, uncompressed; the product's default (10 s) carries 2,160 firms
LEASE = 120.0  # HARDCOST_LEASE_SECONDS' default, uncompressed
BASELINE = 30.0  # seconds of the idle baseline (no firm due)
HISTORY = 20  # entry links and sent Slack messages per firm from earlier use
FED_SHARE = 0.01  # firms with a new purchase per interval
WEBHOOK_SHARE = 0.2  # of those, also announced by a signed webhook
COMMANDS = 3  # /hardcost run and /hardcost status per replica per interval (each)
SAMPLE_EVERY = 0.25  # seconds between two pg_stat_activity samples
START_DATE = date(2026, 1, 1)
SEED = 13
SIGNING_SECRET = "scale-bench-signing-secret"
LATENESS_TARGET = 60.0  # seconds of an uncompressed 15-minute interval (p95)
STATEMENTS_TARGET = 10  # scheduler statements per due firm
CONNECTIONS_TARGET = 20  # per replica
MARKER = re.compile(r"\[qbo ([^\]]+)\]")
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def progress(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# -- the database ---------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def own_cluster() -> Iterator[str]:
    """A throwaway PostgreSQL cluster with ``pg_stat_statements`` loaded; its server URL."""
    tmp = Path(tempfile.mkdtemp(prefix="hardcost-scale-pg-"))
    port = _free_port()
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(tmp, "postgres")
    data = tmp / "data"
    subprocess.run([*as_postgres, str(PG_BIN / "initdb"), "-D", str(data), "-U", "hardcost",
                    "-A", "trust"], check=True, stdout=subprocess.DEVNULL)
    options = (f"-p {port} -k {tmp} -c fsync=off -c max_connections=200 "
               "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=top")
    subprocess.run([*as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options,
                    "-l", str(tmp / "log"), "-w", "start"], check=True,
                   stdout=subprocess.DEVNULL)
    try:
        yield f"postgresql://hardcost@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast",
                        "stop"], check=False, stdout=subprocess.DEVNULL)
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class Database:
    url: str  # the bench's own (the owner's)
    name: str
    admin: Engine  # statistics and instrumentation, AUTOCOMMIT
    roles: list[str]  # one per replica; empty when roles could not be made
    statements: bool  # pg_stat_statements available

    def replica_url(self, n: int) -> str:
        url = make_url(self.url).update_query_dict({"application_name": f"replica-{n}"})
        if self.roles:
            url = url.set(username=self.roles[n - 1], password=None)
        return url.render_as_string(hide_password=False)


@contextmanager
def database(server_url: str, replicas: int) -> Iterator[Database]:
    """A fresh database on the server at ``server_url`` (dropped afterwards), migrated."""
    name = f"hardcost_scale_{os.getpid()}_{int(time.time())}"
    server = create_engine(server_url.replace("postgresql://", "postgresql+psycopg://", 1),
                           isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    admin = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1),
                          isolation_level="AUTOCOMMIT", pool_size=2)
    owner = make_url(server_url).username or "postgres"
    roles: list[str] = []
    statements = True
    with admin.connect() as conn:
        try:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
            conn.execute(text("SELECT count(*) FROM pg_stat_statements"))
        except Exception as exc:  # noqa: BLE001 - reported: the table-level figures remain
            progress(f"pg_stat_statements is not available ({type(exc).__name__}); "
                     "statements come from pg_stat_database only")
            statements = False
        try:
            for n in range(1, replicas + 1):
                role = f"hc_r{n}"
                exists = conn.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :r"),
                                     {"r": role})
                if not exists:
                    conn.execute(text(f"CREATE ROLE {role} LOGIN"))
                conn.execute(text(f'GRANT "{owner}" TO {role}'))
                roles.append(role)
        except Exception as exc:  # noqa: BLE001 - no split by replica, said in the report
            progress(f"could not make a role per replica ({type(exc).__name__})")
            roles = []
    db = Database(url, name, admin, roles, statements)
    try:
        yield db
    finally:
        admin.dispose()
        with server.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()


CLAIMS_DDL = """
CREATE TABLE bench_claims (
    id bigserial PRIMARY KEY, firm_id integer, due timestamptz, claimed_at timestamptz,
    claimed_by text, kind text);
CREATE FUNCTION bench_note_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.claim_token IS NOT NULL AND NEW.claim_token IS DISTINCT FROM OLD.claim_token THEN
        INSERT INTO bench_claims (firm_id, due, claimed_at, claimed_by, kind)
        VALUES (NEW.firm_id, OLD.next_run_at, NEW.claimed_at, NEW.claimed_by, NEW.claim_kind);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER bench_claims AFTER UPDATE ON run_leases
    FOR EACH ROW EXECUTE FUNCTION bench_note_claim();
"""
"""Bench-only instrumentation: each lease taken, with the ``next_run_at`` it was due at (the
claim pass leaves ``next_run_at`` as it was until the run gives the lease back). The trigger's
insert runs inside the claiming statement, so it adds no statement of its own."""


# -- the firms ----------------------------------------------------------------------------------

@dataclass
class Fleet:
    ids: list[int] = field(default_factory=list)
    realms: dict[int, str] = field(default_factory=dict)
    books: dict[int, Any] = field(default_factory=dict)  # firm id → SandboxBooks
    customer: dict[int, str] = field(default_factory=dict)  # firm id → the client's QBO id
    accounts: dict[int, int] = field(default_factory=dict)  # firm id → Clio account id
    first: int = 0  # the firm made through the ORM (Slack commands go to it)


def _books(world: SandboxWorld, n: int) -> tuple[Any, str]:
    books = world.open_books(f"Scale Firm {n:05d}")
    customer = books.company.add_customer("Pat Client")["Id"]
    contact = books.account.add_contact("Pat Client")
    books.account.add_matter(contact["id"], description="The one matter")
    return books, customer


def seed_history(conn: Any, ids: list[int], history: int, now: datetime) -> None:
    """What ``history`` runs that imported something leave behind, per firm: that many
    created entry links (for purchases QuickBooks no longer reports as changed), that many sent
    Slack messages, and a contact link of a vendor. So the tables a run reads by firm are the
    size of a fleet that has been in use, not only the rows written during the benchmark."""
    if history <= 0:
        return
    conn.execute(insert(EntryLink.__table__), [
        {"firm_id": firm_id, "realm_id": "history", "purchase_id": f"H{k}", "customer_id": "1",
         "line_id": "", "state": LinkState.CREATED.value, "marker": f"[qbo history/H{k}/1]",
         "sync_token": "0", "amount": Decimal("12.34"), "txn_date": START_DATE,
         "clio_activity_id": 10_000_000 + k, "created_at": now, "updated_at": now}
        for firm_id in ids for k in range(history)])
    conn.execute(insert(SlackOutbox.__table__), [
        {"firm_id": firm_id, "method": "chat.postMessage", "payload": {"text": "history"},
         "ref_kind": "run", "attempts": 1, "next_attempt_at": now, "created_at": now,
         "sent_at": now, "result_channel": "C0", "result_ts": f"{k}.0001"}
        for firm_id in ids for k in range(history)])
    conn.execute(insert(ContactLink.__table__), [
        {"firm_id": firm_id, "qbo_type": "Vendor", "qbo_id": "history", "clio_contact_id": 1,
         "source": "auto", "created_at": now} for firm_id in ids])


def seed_fleet(world: SandboxWorld, db: Database, ws: SlackWorkspace, firms: int,
               interval: float, history: int = 0) -> Fleet:
    engine = make_engine(db.url)
    sessions = make_session_factory(engine)
    fleet = Fleet()
    far = datetime.now(UTC) + timedelta(days=1)  # no firm is due until the spread
    try:
        books, customer = _books(world, 1)
        first = world.connect_firm(sessions, books.company, books.account,
                                   start_date=START_DATE,
                                   import_account_ids=[books.import_account_id],
                                   expense_category_id=books.category_id, name="Scale Firm 00001",
                                   slack_team_id=ws.team_id)
        world.importer(sessions, first).run(trigger="manual")  # its watermarks
        with engine.begin() as conn:
            conn.execute(RunLease.__table__.update().where(RunLease.firm_id == first)
                         .values(next_run_at=far))
            conn.execute(FirmSettings.__table__.update().where(FirmSettings.firm_id == first)
                         .values(slack_channel_id=ws.add_channel("costs-00001")["id"]))
            marks = conn.execute(select(Watermark.stream, Watermark.value,
                                        Watermark.start_date).where(
                Watermark.firm_id == first)).all()
        fleet.first = first
        for firm_id, b, c in [(first, books, customer)]:
            fleet.ids.append(firm_id)
            fleet.realms[firm_id] = b.company.realm_id
            fleet.books[firm_id] = b
            fleet.customer[firm_id] = c
        batch = 1000
        now = datetime.now(UTC)
        for start in range(2, firms + 1, batch):
            numbers = range(start, min(start + batch, firms + 1))
            made = [_books(world, n) for n in numbers]
            grants = [(world.qbo.issue_tokens(b.company.realm_id), world.clio.issue_tokens(
                b.account)) for b, _ in made]
            channels = [ws.add_channel(f"costs-{n:05d}")["id"] for n in numbers]
            with engine.begin() as conn:
                ids = list(conn.scalars(insert(Firm.__table__).returning(
                    Firm.__table__.c.id, sort_by_parameter_order=True), [
                    {"name": f"Scale Firm {n:05d}", "qbo_realm_id": b.company.realm_id,
                     "clio_region": "us", "active": True, "created_at": now}
                    for n, (b, _) in zip(numbers, made, strict=True)]))
                conn.execute(insert(FirmSettings.__table__), [
                    {"firm_id": firm_id, "start_date": START_DATE,
                     "import_account_ids": [b.import_account_id],
                     "expense_category_id": b.category_id, "schedule_minutes": SCHEDULE_MINUTES,
                     "slack_channel_id": channel, "updated_at": now}
                    for firm_id, (b, _), channel in zip(ids, made, channels, strict=True)])
                rows = []
                for firm_id, (qbo, clio) in zip(ids, grants, strict=True):
                    for provider, grant in (("quickbooks", qbo), ("clio", clio)):
                        rows.append({
                            "firm_id": firm_id, "provider": provider,
                            "access_token": grant["access_token"],
                            "refresh_token": grant.get("refresh_token"),
                            "access_expires_at": now + timedelta(seconds=grant["expires_in"]),
                            "refresh_expires_at": now + timedelta(
                                seconds=grant.get("x_refresh_token_expires_in") or 8_640_000),
                            "updated_at": now})
                conn.execute(insert(Connection.__table__), rows)
                conn.execute(insert(Watermark.__table__), [
                    {"firm_id": firm_id, "stream": stream, "value": value,
                     "start_date": mark_start, "updated_at": now}
                    for firm_id in ids for stream, value, mark_start in marks])
                conn.execute(insert(RunLease.__table__), [
                    {"firm_id": firm_id, "next_run_at": far} for firm_id in ids])
                seed_history(conn, ids, history, now)
            for firm_id, (b, c) in zip(ids, made, strict=True):
                fleet.ids.append(firm_id)
                fleet.realms[firm_id] = b.company.realm_id
                fleet.books[firm_id] = b
                fleet.customer[firm_id] = c
            progress(f"  {len(fleet.ids):,} firms")
        for firm_id in fleet.ids:
            fleet.accounts[firm_id] = fleet.books[firm_id].account.id
    finally:
        engine.dispose()
    with db.admin.connect() as conn:
        conn.execute(text(CLAIMS_DDL))
        conn.execute(text("ANALYZE"))
    return fleet


# -- the replicas -------------------------------------------------------------------------------

@dataclass
class Replica:
    n: int
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def name(self) -> str:
        return f"replica-{self.n}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def holder(self) -> str:
        return f"pid {self.proc.pid} on {socket.gethostname()}"[:200]

    def tail(self, lines: int = 30) -> str:
        body = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} (exit {self.proc.poll()}) ---\n" + \
            "\n".join(body.splitlines()[-lines:])


def env_for(world: SandboxWorld, database_url: str) -> dict[str, str]:
    """The environment a ``hardcost`` process needs to reach these sandboxes and database."""
    return world.environment(database_url)


def start_replicas(args: argparse.Namespace, world: SandboxWorld, db: Database,
                   ws: SlackWorkspace, slack_url: str, logs: Path) -> list[Replica]:
    replicas: list[Replica] = []
    for n in range(1, args.replicas + 1):
        port = _free_port()
        env = {**env_for(world, db.replica_url(n)),
               "SLACK_BOT_TOKEN": ws.bot_token, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
               "SLACK_API_URL": f"{slack_url}/api/", "PORT": str(port),
               "PUBLIC_URL": f"http://127.0.0.1:{port}",
               "HARDCOST_SCHEDULE_UNIT_SECONDS": str(args.unit_seconds),
               "HARDCOST_SCHEDULER_REFRESH_SECONDS": str(args.refresh / args.compression),
               "HARDCOST_LEASE_SECONDS": str(args.lease / args.compression),
               "HARDCOST_IMPORT_THREADS": str(args.threads),
               "HARDCOST_LOG_LEVEL": args.log_level, "PYTHONPATH": str(REPO)}
        env.pop("SLACK_APP_TOKEN", None)
        log = logs / f"replica-{n}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "hardcost", "serve"], env=env,
                                    cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        replicas.append(Replica(n, port, proc, log))
    deadline = time.monotonic() + 120
    waiting = list(replicas)
    while waiting:
        replica = waiting[0]
        if replica.proc.poll() is not None:
            raise RuntimeError("a replica stopped while starting\n" + replica.tail())
        try:
            if requests.get(f"{replica.url}/healthz", timeout=30).status_code == 200:
                waiting.pop(0)
                continue
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("replicas did not come up\n" + "\n".join(
                r.tail() for r in replicas))
        time.sleep(0.5)
    return replicas


# -- what the bench sends meanwhile -------------------------------------------------------------

@dataclass
class Traffic:
    """Purchases fed (marker → amount), webhooks and Slack commands sent, with their answers."""

    added: dict[str, Decimal] = field(default_factory=dict)
    fed_firms: set[int] = field(default_factory=set)
    webhooks: Counter[int] = field(default_factory=Counter)  # HTTP status → count
    commands: Counter[int] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_purchase(self, fleet: Fleet, firm_id: int, rng: random.Random) -> str:
        books = fleet.books[firm_id]
        with self.lock:
            amount = Decimal(rng.randint(500, 90_000)) / 100
        purchase = books.company.add_purchase(
            payment_type="Check", txn_date="2026-02-03",
            lines=[account_line(str(amount), books.import_account_id,
                                customer_id=fleet.customer[firm_id], description="Courier")])
        with self.lock:
            self.added[f"{fleet.realms[firm_id]}/{purchase['Id']}/{fleet.customer[firm_id]}"] = \
                amount
            self.fed_firms.add(firm_id)
        return str(purchase["Id"])


def send_webhook(world: SandboxWorld, replica: Replica, realm: str, purchase_id: str,
                 n: int) -> int:
    body = json.dumps([{
        "specversion": "1.0", "id": f"scale-{n}", "source": "intuit.quickbooks",
        "type": "qbo.purchase.created.v1", "datacontenttype": "application/json",
        "time": datetime.now(UTC).isoformat(), "intuitaccountid": realm,
        "intuitentityid": purchase_id, "data": {}}]).encode()
    try:
        return requests.post(f"{replica.url}/webhooks/quickbooks", data=body, timeout=30,
                             headers={"Content-Type": "application/cloudevents+json",
                                      "intuit-signature": world.qbo.sign_webhook(body)}
                             ).status_code
    except requests.RequestException:
        return 0


def send_command(slack: SlackSandbox, ws: SlackWorkspace, replica: Replica, channel: str,
                 user: str, words: str) -> int:
    body = urlencode({
        "token": "legacy", "team_id": ws.team_id, "team_domain": "sandbox",
        "channel_id": channel, "channel_name": "costs", "user_id": user, "user_name": user,
        "command": "/hardcost", "text": words, "api_app_id": "A0APP",
        "response_url": slack.response_url(ws.team_id, user_id=user, channel_id=channel),
        "trigger_id": ws.trigger_id()})
    stamp = str(int(time.time()))
    signature = SignatureVerifier(SIGNING_SECRET).generate_signature(timestamp=stamp,
                                                                     body=body)
    try:
        return requests.post(f"{replica.url}/slack/events", data=body.encode(), timeout=30,
                             headers={"Content-Type": "application/x-www-form-urlencoded",
                                      "X-Slack-Request-Timestamp": stamp,
                                      "X-Slack-Signature": signature}).status_code
    except requests.RequestException:
        return 0


class Sampler(threading.Thread):
    """Connections to the bench database by role (= replica), every ``SAMPLE_EVERY`` s."""

    def __init__(self, db: Database) -> None:
        super().__init__(name="pg-sampler", daemon=True)
        self.db = db
        self.stopped = threading.Event()
        self.peak: Counter[str] = Counter()  # by application_name
        self.peak_total = 0
        self.samples = 0

    def run(self) -> None:
        query = text("SELECT application_name, count(*) FROM pg_stat_activity "
                     "WHERE datname = :db AND application_name LIKE 'replica-%' "
                     "GROUP BY application_name")
        with self.db.admin.connect() as conn:
            while not self.stopped.wait(SAMPLE_EVERY):
                counts: dict[str, int] = {str(name): int(count) for name, count in
                                          conn.execute(query, {"db": self.db.name})}
                for name, count in counts.items():
                    self.peak[name] = max(self.peak[name], int(count))
                self.peak_total = max(self.peak_total, sum(int(c) for c in counts.values()))
                self.samples += 1


# -- statistics ---------------------------------------------------------------------------------

@dataclass
class Snapshot:
    at: float
    statements: dict[tuple[str, int], tuple[str, int, int]]  # (role, queryid) → query, calls, rows
    tables: dict[str, tuple[int, int, int]]  # table → seq_tup_read, idx_tup_fetch, writes
    xact_commit: int
    tup_returned: int
    tup_fetched: int


def snapshot(db: Database) -> Snapshot:
    with db.admin.connect() as conn:
        statements: dict[tuple[str, int], tuple[str, int, int]] = {}
        if db.statements:
            for role, queryid, query, calls, rows in conn.execute(text(
                    "SELECT userid::regrole::text, queryid, query, calls, rows "
                    "FROM pg_stat_statements WHERE dbid = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database())")):
                statements[(str(role), int(queryid))] = (str(query), int(calls), int(rows))
        tables = {str(name): (int(seq or 0), int(idx or 0), int(writes or 0))
                  for name, seq, idx, writes in conn.execute(text(
                      "SELECT relname, seq_tup_read, idx_tup_fetch, "
                      "n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables"))}
        xact, returned, fetched = conn.execute(text(
            "SELECT xact_commit, tup_returned, tup_fetched FROM pg_stat_database "
            "WHERE datname = current_database()")).one()
    return Snapshot(time.monotonic(), statements, tables, int(xact), int(returned),
                    int(fetched))


TRANSACTION = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE)", re.I)


def lease_kind(query: str) -> str | None:
    """What a statement on ``run_leases`` is for (None: not on run_leases)."""
    if "run_leases" not in query:
        return None
    if "SKIP LOCKED" in query:
        return "claim pass (SELECT … FOR UPDATE SKIP LOCKED)"
    if query.startswith("UPDATE run_leases SET lease_until"):
        return "renew (one per keeper pass)"
    if query.startswith("UPDATE run_leases") and "run_leases.claim_token = " in query:
        return "release"
    if query.startswith("UPDATE run_leases") and "IS NULL OR" in query:
        return "claim of one firm (in the pass)"
    if query.startswith("UPDATE run_leases SET next_run_at") and "claim_token" not in query:
        return "put off (not ready)"
    if query.startswith("UPDATE run_leases"):
        return "acquire (Slack, webhook)"
    return "other on run_leases"


@dataclass
class Window:
    """What happened between two snapshots."""

    label: str
    seconds: float
    by_role: dict[str, Counter[str]]  # role → class → statements
    rows_by_role: dict[str, int]
    lease_kinds: Counter[str]
    table_reads: dict[str, int]
    table_writes: dict[str, int]
    xacts: int
    tup_returned: int
    tup_fetched: int

    def total(self, cls: str | None = None) -> int:
        return sum(c[cls] if cls else sum(c.values()) for c in self.by_role.values())


def window(label: str, before: Snapshot, after: Snapshot) -> Window:
    by_role: dict[str, Counter[str]] = defaultdict(Counter)
    rows: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for key, (query, calls, count) in after.statements.items():
        old = before.statements.get(key, (query, 0, 0))
        calls, count = calls - old[1], count - old[2]
        if calls <= 0:
            continue
        role = key[0]
        kind = lease_kind(query)
        if TRANSACTION.match(query):
            by_role[role]["transaction control"] += calls
        elif kind is not None:
            by_role[role]["scheduler"] += calls
            if role.startswith("hc_r"):
                kinds[kind] += calls
        else:
            by_role[role]["other"] += calls
        rows[role] += count
    reads = {t: (v[0] + v[1]) - (before.tables.get(t, (0, 0, 0))[0]
                                 + before.tables.get(t, (0, 0, 0))[1])
             for t, v in after.tables.items()}
    writes = {t: v[2] - before.tables.get(t, (0, 0, 0))[2] for t, v in after.tables.items()}
    return Window(label, after.at - before.at, dict(by_role), dict(rows), kinds,
                  {t: n for t, n in reads.items() if n}, {t: n for t, n in writes.items() if n},
                  after.xact_commit - before.xact_commit,
                  after.tup_returned - before.tup_returned,
                  after.tup_fetched - before.tup_fetched)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


# -- the run ------------------------------------------------------------------------------------

@dataclass
class Interval:
    window: Window
    scheduled: int  # scheduled claims in it
    runs: int  # run rows started in it (all triggers)
    quiet_runs: int
    replicas_up: int


@dataclass
class Kill:
    victim: str
    at: datetime
    caught_writing: bool
    held: list[int]
    takeover_s: list[float]  # per held firm: kill → the next lease of it by another replica
    abandoned_runs: int
    lease_s: float
    probe_reads: int = 0  # rows read while the bench looked for a replica writing an entry


@dataclass
class Result:
    args: argparse.Namespace
    firms: int
    setup_s: float
    baseline: Window
    intervals: list[Interval]
    lateness: list[float]  # seconds, scheduled claims in the measured intervals
    lateness_survivors: list[float]  # the same without the killed replica's firms' takeovers
    peak: Counter[str]
    peak_total: int
    kill: Kill | None
    traffic: Traffic
    in_clio: Counter[str]
    quiet: QuietCalls
    status_429: dict[str, int]
    calls: dict[str, int]
    load: tuple[float, float]
    total_s: float
    pending_left: int
    health: tuple[int, float]  # rows read per /healthz request, and its time (s)
    errors: dict[str, tuple[int, int, int]]  # replica → "taken over" lines, other errors,
    # "taken over" lines another replica's claim of the firm explains


def run_bench(args: argparse.Namespace, server_url: str) -> Result:
    began = time.monotonic()
    load0 = os.getloadavg()[0]
    interval = SCHEDULE_MINUTES * args.unit_seconds
    rng = random.Random(args.seed)
    if not os.environ.get("HARDCOST_SECRET_KEY"):
        os.environ["HARDCOST_SECRET_KEY"] = generate_key()  # this process and its replicas
    with database(server_url, args.replicas) as db, \
            SandboxWorld.start(validate=False) as world, \
            tempfile.TemporaryDirectory(prefix="hardcost-scale-") as tmp:
        slack = SlackSandbox(clock=world.clock)
        slack_server: RunningServer = serve_in_thread(slack)
        slack.base_url = slack_server.url
        ws = slack.add_workspace("T0001")
        admin_user = ws.add_user("Ada Admin", is_admin=True)["id"]
        engine = make_engine(db.url)
        upgrade(engine)
        engine.dispose()
        progress(f"setting up {args.firms:,} firms")
        fleet = seed_fleet(world, db, ws, args.firms, interval, args.history)
        setup_s = time.monotonic() - began
        progress(f"set up in {setup_s:.0f} s; starting {args.replicas} replicas")
        replicas = start_replicas(args, world, db, ws, slack_server.url, Path(tmp))
        sampler = Sampler(db)
        sampler.start()
        traffic = Traffic()
        kill: Kill | None = None
        try:
            # -- the idle baseline: every replica up, no firm due ------------------------------
            time.sleep(2)
            before = snapshot(db)
            time.sleep(args.baseline)
            baseline = window("idle baseline", before, snapshot(db))
            progress(f"baseline: {baseline.total()} statements in {baseline.seconds:.0f} s")

            # -- spread the firms over one interval, as the migration does ---------------------
            t0 = datetime.now(UTC) + timedelta(seconds=1)
            offsets = {firm_id: rng.uniform(0, interval) for firm_id in fleet.ids}
            with db.admin.connect() as conn:
                conn.execute(text("UPDATE run_leases SET next_run_at = :t0 + make_interval("
                                  "secs => (CAST(:offsets AS jsonb) ->> firm_id::text)::float8)"),
                             {"t0": t0, "offsets": json.dumps(
                                 {str(k): v for k, v in offsets.items()})})
                conn.execute(text("TRUNCATE bench_claims"))
            wait = (t0 - datetime.now(UTC)).total_seconds()
            time.sleep(max(wait, 0))
            progress(f"measuring {args.intervals} intervals of {interval:.0f} s")
            spans: list[tuple[datetime, datetime, int]] = []
            marks = [snapshot(db)]
            kill_at = t0 + timedelta(seconds=interval * (args.intervals - 0.5))
            counter = 0
            for k in range(args.intervals):
                start = t0 + timedelta(seconds=k * interval)
                end = start + timedelta(seconds=interval)
                fed = rng.sample(fleet.ids, max(1, round(args.firms * FED_SHARE)))
                plan: list[tuple[datetime, str, Any]] = [
                    (start + timedelta(seconds=rng.uniform(0, interval * 0.95)), "purchase",
                     firm_id) for firm_id in fed]
                for r in replicas:
                    for _ in range(COMMANDS):
                        for words in ("run", "status"):
                            plan.append((start + timedelta(seconds=rng.uniform(
                                0, interval * 0.95)), "command", (r, words)))
                if kill is None and args.kill and start <= kill_at < end:
                    plan.append((kill_at, "kill", None))
                plan.sort(key=lambda item: item[0])
                for when, what, detail in plan:
                    time.sleep(max((when - datetime.now(UTC)).total_seconds(), 0))
                    live = [r for r in replicas if r.proc.poll() is None]
                    if what == "purchase":
                        purchase = traffic.add_purchase(fleet, detail, rng)
                        if rng.random() < WEBHOOK_SHARE:
                            counter += 1
                            status = send_webhook(world, rng.choice(live),
                                                  fleet.realms[detail], purchase, counter)
                            traffic.webhooks[status] += 1
                    elif what == "command":
                        replica, words = detail
                        if replica.proc.poll() is None:
                            channel = slack_channel(db, fleet.first)
                            traffic.commands[send_command(slack, ws, replica, channel,
                                                          admin_user, words)] += 1
                    elif what == "kill":
                        kill = kill_one(db, fleet, traffic, replicas, rng, args)
                time.sleep(max((end - datetime.now(UTC)).total_seconds(), 0))
                marks.append(snapshot(db))
                spans.append((start, end, sum(1 for r in replicas if r.proc.poll() is None)))
                progress(f"interval {k + 1} over")

            # -- let every fed purchase in (the killed runs' pending links need two minutes) ---
            progress("waiting for every purchase to reach Clio")
            deadline = time.monotonic() + max(2 * interval, 150 + interval)
            in_clio = markers(world)
            while time.monotonic() < deadline and not set(traffic.added) <= set(in_clio):
                time.sleep(2)
                in_clio = markers(world)
            health = health_cost(db, [r for r in replicas if r.proc.poll() is None][0])
            for replica in replicas:
                if replica.proc.poll() is None:
                    replica.proc.send_signal(signal.SIGTERM)
            for replica in replicas:
                try:
                    replica.proc.wait(40)
                except subprocess.TimeoutExpired:
                    replica.proc.kill()
            in_clio = markers(world)
        finally:
            sampler.stopped.set()
            for replica in replicas:
                if replica.proc.poll() is None:
                    replica.proc.kill()
                    replica.proc.wait(10)
            slack_server.stop()
        intervals = [interval_figures(db, f"interval {k + 1}", marks[k], marks[k + 1], *span)
                     for k, span in enumerate(spans)]
        for span, figures in zip(spans, intervals, strict=True):
            if kill is not None and span[0] <= kill.at < span[1] and kill.probe_reads:
                figures.window.table_reads["(the bench's kill probe, taken out)"] = \
                    -kill.probe_reads
        if kill is not None:
            kill = takeover(db, kill)
        lateness, survivors = lateness_figures(db, t0, t0 + timedelta(
            seconds=interval * args.intervals), kill)
        quiet = quiet_calls(world, db, fleet, traffic, t0, interval, args.intervals)
        with db.admin.connect() as conn:
            pending_left = int(conn.scalar(text(
                "SELECT count(*) FROM entry_links WHERE state = 'pending'")) or 0)
        status_429 = {"QuickBooks": sum(1 for c in world.qbo.calls.all() if c.status == 429),
                      "Clio": sum(1 for c in world.clio.calls.all() if c.status == 429),
                      "Slack": sum(1 for c in slack.calls.all() if c.status == 429)}
        calls = {"QuickBooks": len(world.qbo.calls.all()), "Clio": len(world.clio.calls.all()),
                 "Slack": len(slack.calls.all())}
        errors: dict[str, tuple[int, int, int]] = {}  # replica → "taken over" lines, others,
        # and how many of the former another replica's claim of the firm explains
        for replica in replicas:
            lines = [line for line in replica.log.read_text(errors="replace").splitlines()
                     if " ERROR " in line or "Traceback" in line]
            lost = [line for line in lines if "was taken over while its import ran" in line]
            errors[replica.name] = (len(lost), len(lines) - len(lost),
                                    sum(1 for line in lost if taken_by_another(
                                        db, replica, line, args.lease / args.compression)))
            if lines:
                progress(f"{replica.name}: {len(lines)} error lines, first: {lines[0]}")
        return Result(args, args.firms, setup_s, baseline, intervals, lateness, survivors,
                      sampler.peak, sampler.peak_total, kill, traffic, in_clio, quiet,
                      status_429, calls,
                      (load0, os.getloadavg()[0]), time.monotonic() - began, pending_left,
                      health, errors)


_channels: dict[int, str] = {}


def slack_channel(db: Database, firm_id: int) -> str:
    if firm_id not in _channels:
        with db.admin.connect() as conn:
            _channels[firm_id] = str(conn.scalar(text(
                "SELECT slack_channel_id FROM firm_settings WHERE firm_id = :f"),
                {"f": firm_id}))
    return _channels[firm_id]


HEALTH_PROBES = 5
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) .*lease of firm (\d+) ")


def taken_by_another(db: Database, replica: Replica, line: str, lease: float) -> bool:
    """Whether another replica claimed the firm named in a "lease … taken over" log line
    within two leases before it (a real takeover), rather than nobody (the renewal race)."""
    match = LOG_LINE.match(line)
    if match is None:
        return False
    when = datetime.fromisoformat(f"{match[1]}.{match[2]}+00:00")
    with db.admin.connect() as conn:
        return bool(conn.scalar(text(
            "SELECT count(*) FROM bench_claims WHERE firm_id = :f AND claimed_by <> :h "
            "AND claimed_at BETWEEN :a AND :b"),
            {"f": int(match[3]), "h": replica.holder, "a": when - timedelta(seconds=2 * lease),
             "b": when}))


def health_cost(db: Database, replica: Replica) -> tuple[int, float]:
    """Rows read (every client, so the replicas' own work of those moments too) and the time
    of one ``/healthz`` request, over ``HEALTH_PROBES`` requests one after another."""
    before = snapshot(db)
    started = time.perf_counter()
    for _ in range(HEALTH_PROBES):
        requests.get(f"{replica.url}/healthz", timeout=60)
    took = (time.perf_counter() - started) / HEALTH_PROBES
    after = snapshot(db)
    reads = sum(window("healthz", before, after).table_reads.values())
    return reads // HEALTH_PROBES, took


def markers(world: SandboxWorld) -> Counter[str]:
    return Counter(marker for account in list(world.clio.accounts.values())
                   for activity in list(account.activities.values())
                   for marker in MARKER.findall(activity.get("note") or ""))


def interval_figures(db: Database, label: str, before: Snapshot, after: Snapshot,
                     start: datetime, end: datetime, up: int) -> Interval:
    with db.admin.connect() as conn:
        scheduled = int(conn.scalar(text(
            "SELECT count(*) FROM bench_claims WHERE kind = 'schedule' "
            "AND claimed_at >= :a AND claimed_at < :b"), {"a": start, "b": end}) or 0)
        runs, quiet = conn.execute(text(
            "SELECT count(*), count(*) FILTER (WHERE quiet) FROM runs "
            "WHERE started_at >= :a AND started_at < :b"), {"a": start, "b": end}).one()
    return Interval(window(label, before, after), scheduled, int(runs), int(quiet), up)


def _writing_now(db: Database) -> list[tuple[int, str]]:
    """(firm, holder) for firms whose import is between committing an entry's pending link
    and recording it, right now."""
    with db.admin.connect() as conn:
        return [(int(f), str(h)) for f, h in conn.execute(text(
            "SELECT l.firm_id, l.claimed_by FROM (SELECT DISTINCT firm_id FROM entry_links "
            "WHERE state = 'pending') e JOIN run_leases l ON l.firm_id = e.firm_id "
            "WHERE l.claim_token IS NOT NULL AND l.lease_until >= now()"))]


def kill_one(db: Database, fleet: Fleet, traffic: Traffic, replicas: list[Replica],
             rng: random.Random, args: argparse.Namespace) -> Kill:
    """A burst of purchases for firms due in the next seconds, then SIGKILL for the replica
    caught writing one of their entries (or, failing that within 20 s, the first replica)."""
    with db.admin.connect() as conn:
        soon = [int(f) for f in conn.scalars(text(
            "SELECT firm_id FROM run_leases WHERE claim_token IS NULL "
            "ORDER BY next_run_at LIMIT 30"))]
    for firm_id in soon:
        for _ in range(3):
            traffic.add_purchase(fleet, firm_id, rng)
    by_holder = {r.holder: r for r in replicas}
    victim: Replica | None = None
    probe_began = snapshot(db)
    deadline = time.monotonic() + 20
    while victim is None and time.monotonic() < deadline:
        for _, holder in _writing_now(db):
            if holder in by_holder:
                victim = by_holder[holder]
                break
        else:
            time.sleep(0.05)
    caught = victim is not None
    # The probe reads entry_links whole (no index on its state) every 50 ms: its reads (and the
    # replicas' of those moments) are taken out of the interval's rows read.
    probe_reads = sum(window("probe", probe_began, snapshot(db)).table_reads.values())
    victim = victim or replicas[0]
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(10)
    at = datetime.now(UTC)
    with db.admin.connect() as conn:
        held = [int(f) for f in conn.scalars(text(
            "SELECT firm_id FROM run_leases WHERE claimed_by = :h AND lease_until >= :at"),
            {"h": victim.holder, "at": at})]
    progress(f"killed {victim.name} ({'caught writing' if caught else 'not caught writing'}) "
             f"holding {len(held)} leases")
    return Kill(victim.holder, at, caught, held, [], 0, args.lease / args.compression,
                probe_reads)


def takeover(db: Database, kill: Kill) -> Kill:
    with db.admin.connect() as conn:
        for firm_id in kill.held:
            taken = conn.scalar(text(
                "SELECT min(claimed_at) FROM bench_claims WHERE firm_id = :f AND "
                "claimed_at >= :at AND claimed_by <> :h"),
                {"f": firm_id, "at": kill.at, "h": kill.victim})
            if taken is not None:
                kill.takeover_s.append((taken - kill.at).total_seconds())
        kill.abandoned_runs = int(conn.scalar(text(
            "SELECT count(*) FROM runs WHERE status = 'abandoned'")) or 0)
    return kill


def lateness_figures(db: Database, start: datetime, end: datetime, kill: Kill | None
                     ) -> tuple[list[float], list[float]]:
    with db.admin.connect() as conn:
        rows = conn.execute(text(
            "SELECT firm_id, extract(epoch FROM claimed_at - due), claimed_at FROM bench_claims "
            "WHERE kind = 'schedule' AND claimed_at >= :a AND claimed_at < :b"),
            {"a": start, "b": end}).all()
    late = [max(float(s), 0.0) for _, s, _ in rows]
    held = set(kill.held) if kill else set()
    survivors = [max(float(s), 0.0) for f, s, at in rows
                 if not (kill and f in held and at >= kill.at
                         and (at - kill.at).total_seconds() <= kill.lease_s * 2)]
    return late, survivors


def quiet_calls(world: SandboxWorld, db: Database, fleet: Fleet, traffic: Traffic,
                t0: datetime, interval: float, intervals: int) -> QuietCalls:
    """QuickBooks and Clio calls of the quiet runs in the measured intervals (each run's own
    counters, ``runs.details``), checked against the sandbox QuickBooks' log for the firms
    never fed (every run of theirs was quiet)."""
    begin, end = t0, t0 + timedelta(seconds=interval * intervals)
    with db.admin.connect() as conn:
        rows = conn.execute(text(
            "SELECT firm_id, quiet, (details ->> 'qbo_calls')::int, "
            "(details ->> 'clio_calls')::int FROM runs "
            "WHERE started_at >= :a AND started_at < :b AND status = 'ok'"),
            {"a": begin, "b": end}).all()
    result = QuietCalls()
    unfed = set(fleet.ids) - traffic.fed_firms - {fleet.first}
    for firm, quiet, qbo, clio in rows:
        if quiet:
            result.qbo.append(int(qbo or 0))
            result.clio.append(int(clio or 0))
        if firm in unfed:
            result.unfed_counted += int(qbo or 0)
    realm_of = {realm: firm for firm, realm in fleet.realms.items()}
    low, high = begin.timestamp(), end.timestamp()
    for call in world.qbo.calls.all():
        if low <= call.at < high and call.path.startswith("/v3/company/"):
            firm = realm_of.get(call.path.split("/")[3])
            if firm in unfed:
                result.unfed_logged += 1
    # Runs that started just before the window and answered inside it (or the reverse) make
    # the two differ by a handful at the window's edges.
    return result


@dataclass
class QuietCalls:
    qbo: list[int] = field(default_factory=list)
    clio: list[int] = field(default_factory=list)
    unfed_counted: int = 0  # the unfed firms' runs' own QuickBooks counters, summed
    unfed_logged: int = 0  # the sandbox QuickBooks' log for their realms


# -- the report ---------------------------------------------------------------------------------

def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


OWN_TRANSACTION = ("claim pass (SELECT … FOR UPDATE SKIP LOCKED)", "renew (one per keeper pass)",
                   "release", "acquire (Slack, webhook)")
"""Lease statements that run in a transaction of their own (a BEGIN and a COMMIT each)."""


def _replica_roles(w: Window) -> list[str]:
    return sorted(role for role in w.by_role if role.startswith("hc_r"))


def scheduler_statements(w: Window) -> tuple[int, int]:
    """Statements on ``run_leases`` by the replicas, and the same with their BEGIN/COMMIT."""
    plain = sum(w.lease_kinds.values())
    return plain, plain + 2 * sum(w.lease_kinds[k] for k in OWN_TRANSACTION)


def replica_total(w: Window, cls: str | None = None) -> int:
    return sum((w.by_role[r][cls] if cls else sum(w.by_role[r].values()))
               for r in _replica_roles(w))


def f0(x: float) -> str:
    return f"{x:,.0f}"


def f1(x: float) -> str:
    return f"{x:,.1f}"


def render(result: Result, command: str) -> str:
    args = result.args
    n, reps = result.firms, args.replicas
    interval = SCHEDULE_MINUTES * args.unit_seconds
    comp = args.compression
    base = result.baseline
    base_rate = replica_total(base) / base.seconds  # statements/s of all replicas, idle
    cols = result.intervals
    due = [i.scheduled for i in cols]
    base_sched = scheduler_statements(base)
    sched_raw = [scheduler_statements(i.window) for i in cols]
    # Empty claim passes are a fixed cost per replica and second (in the idle cost), not per
    # firm: the baseline's rate of them is taken out.
    sched = [(r[0] - base_sched[0] / base.seconds * i.window.seconds,
              r[1] - base_sched[1] / base.seconds * i.window.seconds)
             for r, i in zip(sched_raw, cols, strict=True)]
    totals = [replica_total(i.window) for i in cols]
    idle = [base_rate * i.window.seconds for i in cols]
    runs_part = [(t - s[1] - b) / max(i.runs, 1)
                 for t, s, b, i in zip(totals, sched_raw, idle, cols, strict=True)]
    reads = [sum(i.window.table_reads.values()) for i in cols]
    old = reps * n * n
    late_c = result.lateness
    late_s = result.lateness_survivors
    limit_late = LATENESS_TARGET / comp
    cap = reps * args.threads * interval / (args.refresh / comp)

    def per_replica(i: Interval) -> str:
        return " / ".join(f0(sum(i.window.by_role.get(r, Counter()).values()))
                          for r in [f"hc_r{k}" for k in range(1, reps + 1)])

    def lat(values: list[float]) -> str:
        if not values:
            return "n/a"
        return (f"{f1(statistics.median(values))} / {f1(pct(values, 0.95))} / {f1(max(values))} s"
                f" (uncompressed: {f0(statistics.median(values) * comp)} / "
                f"{f0(pct(values, 0.95) * comp)} / {f0(max(values) * comp)} s)")

    figures = table(["", *[i.window.label for i in cols]], [
        ["Replicas serving at the end", *[str(i.replicas_up) for i in cols]],
        ["**Due firms run (scheduled claims)**", *[f"**{d:,}**" for d in due]],
        ["Runs started (every trigger) / of them quiet",
         *[f"{i.runs:,} / {i.quiet_runs:,}" for i in cols]],
        ["Statements, all replicas (incl. BEGIN/COMMIT)", *[f0(t) for t in totals]],
        [f"… per replica ({', '.join(f'replica-{k}' for k in range(1, reps + 1))})",
         *[per_replica(i) for i in cols]],
        ["… of them BEGIN/COMMIT/ROLLBACK",
         *[f0(replica_total(i.window, 'transaction control')) for i in cols]],
        ["Statements on `run_leases` (with their BEGIN/COMMIT)",
         *[f"{f0(r[0])} ({f0(r[1])})" for r in sched_raw]],
        ["**Scheduler statements per due firm**, less the idle rate of empty claim passes "
         "(with their BEGIN/COMMIT)",
         *[f"**{s[0] / max(d, 1):.2f}** ({s[1] / max(d, 1):.2f})"
           for s, d in zip(sched, due, strict=True)]],
        ["Idle cost in the interval (baseline rate × length: outbox, webhook poll, digest, "
         "empty claim passes)", *[f0(b) for b in idle]],
        ["Run statements per run (the rest, less the idle cost, incl. BEGIN/COMMIT)",
         *[f1(r) for r in runs_part]],
        ["Transactions committed (pg_stat_database, every client) per due firm",
         *[f"{i.window.xacts / max(d, 1):.1f}" for i, d in zip(cols, due, strict=True)]],
        ["**Rows read** (`seq_tup_read` + `idx_tup_fetch`, every table)",
         *[f"**{f0(r)}**" for r in reads]],
        ["… per due firm", *[f1(r / max(d, 1)) for r, d in zip(reads, due, strict=True)]],
        ["Rows returned to the replicas (pg_stat_statements `rows`)",
         *[f0(sum(v for k, v in i.window.rows_by_role.items() if k.startswith("hc_r")))
           for i in cols]],
        [f"Old design on paper: replicas × firms² rows read ({reps} × {n:,}²)",
         *[f0(old) for _ in cols]],
        ["Old ÷ measured rows read", *[f"{old / max(r, 1):,.0f}×" for r in reads]],
    ])
    tables_read: Counter[str] = Counter()
    for i in cols:
        tables_read.update(i.window.table_reads)
    kinds: Counter[str] = Counter()
    for i in cols:
        kinds.update(i.window.lease_kinds)
    total_due = max(sum(due), 1)
    kind_rows = [[k, f0(v), f"{v / total_due:.2f}"] for k, v in kinds.most_common()]
    quiet = result.quiet
    q_ok = bool(quiet.qbo) and max(quiet.qbo) <= 2 and min(quiet.qbo) >= 1
    c_ok = bool(quiet.clio) and max(quiet.clio) == 0
    peak_rep = max(result.peak.values(), default=0)
    added = result.traffic.added
    doubled = {m: c for m, c in result.in_clio.items() if c > 1}
    missing = set(added) - set(result.in_clio)
    stray = set(result.in_clio) - set(added)
    n429 = sum(result.status_429.values())
    kill = result.kill
    per_due = [s[1] / max(d, 1) for s, d in zip(sched, due, strict=True)]
    linear = due and max(per_due) <= STATEMENTS_TARGET

    def met(ok: bool) -> str:
        return "met" if ok else "**missed**"

    late_ok = bool(late_s) and pct(late_s, 0.95) <= limit_late
    targets = table(["Target", "Measured", "Result"], [
        [f"Scheduler statements per due firm ≤ {STATEMENTS_TARGET}, proportional to due firms",
         " / ".join(f"{x:.2f}" for x in per_due) + " (with BEGIN/COMMIT)", met(bool(linear))],
        [f"Rows read proportional to due firms, not firms² (old: {f0(old)} per interval)",
         " / ".join(f"{r / max(d, 1):,.1f}" for r, d in zip(reads, due, strict=True))
         + " rows per due firm", met(all(r < old / 10 for r in reads))],
        [f"Schedule lateness p95 ≤ {LATENESS_TARGET:.0f} s of the 15-minute interval "
         f"(÷ {comp:g} = {limit_late:.1f} s here), firms of live replicas",
         f"p95 {f1(pct(late_s, 0.95))} s (≙ {f0(pct(late_s, 0.95) * comp)} s)"
         if late_s else "n/a", met(late_ok)],
        [f"Peak PostgreSQL connections ≤ {CONNECTIONS_TARGET} per replica",
         f"{peak_rep} (all replicas at once: {result.peak_total})",
         met(peak_rep <= CONNECTIONS_TARGET)],
        ["QuickBooks calls per quiet run: 2",
         f"min {min(quiet.qbo, default=0)}, max {max(quiet.qbo, default=0)} over "
         f"{len(quiet.qbo):,} quiet runs", met(q_ok)],
        ["Clio calls per quiet run: 0", f"max {max(quiet.clio, default=0)}", met(c_ok)],
        ["429s received (QuickBooks, Clio, Slack) with imports, commands and webhooks on every "
         "replica", f"{n429}", met(n429 == 0)],
        ["Killed replica: nothing doubled or lost",
         f"{len(doubled)} doubled, {len(missing)} missing of {len(added):,}",
         met(not doubled and not missing)],
    ])
    uname = platform.uname()
    lines = [
        f"{SCALE_SECTION}: {n:,} firms on {reps} `hardcost serve` replicas and one PostgreSQL",
        "",
        *([f"*This run shows a limit, not a capacity: its claim ceiling — {f0(cap)} firms per "
           f"interval for {reps} replicas ({args.threads} import threads, a claim pass every "
           f"{args.refresh:g} s uncompressed) — is below its {n:,} firms. See the first point "
           "of *How to read this*.*", ""] if cap < n else []),
        f"- **Date:** {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; the whole run took "
        f"{result.total_s / 60:.1f} min (setting up the firms {result.setup_s:.0f} s).",
        f"- **Machine:** {platform.platform()} ({uname.machine}), {os.cpu_count()} CPUs shared "
        f"with other work (1-minute load average {result.load[0]:.1f} at the start, "
        f"{result.load[1]:.1f} at the end). The replicas, PostgreSQL, the sandboxes and the "
        "bench all share these two cores: read the counts and ratios, not the times.",
        f"- **Command:** `{command}`",
        "- **Database:** PostgreSQL 15 (its own cluster, `fsync=off`, `pg_stat_statements` "
        "loaded through `shared_preload_libraries`, `track = top`), a fresh database migrated "
        "by `sync.db.upgrade`. Each replica logs in as a role of its own (a member of the "
        "owner), so `pg_stat_statements` counts its statements apart."
        + ("" if result.baseline.by_role else " (no per-role split was possible)"),
        f"- **Firms:** {n:,}, each with its own sandbox QuickBooks company, Clio account, "
        "encrypted tokens, Slack channel, one client with one open matter, a 15-minute schedule "
        "and the watermarks of a firm that has run before. One is made through the ORM and "
        "imported once; the others are bulk-inserted (`firms`, `firm_settings`, `connections`, "
        "`watermarks`, `run_leases`) with its watermarks. The replicas run the real code. "
        + (f"Each firm also has the rows {args.history} earlier imports leave (created entry "
           f"links, sent Slack messages; {n * args.history:,} of each in all) and a vendor's "
           "contact link, so the tables a run reads by firm have the size of a fleet in use."
           if args.history else "The per-firm tables start empty (`--history 0`)."),
        f"- **Compression:** `HARDCOST_SCHEDULE_UNIT_SECONDS={args.unit_seconds:g}`: the "
        f"15-minute interval lasts {interval:.0f} s ({comp:g}× faster than real time). The "
        f"other periods are compressed alike: `HARDCOST_SCHEDULER_REFRESH_SECONDS="
        f"{args.refresh / comp:g}` ({args.refresh:g} s uncompressed), "
        f"`HARDCOST_LEASE_SECONDS={args.lease / comp:g}` ({args.lease:g} s uncompressed), "
        f"`HARDCOST_IMPORT_THREADS={args.threads}`, default pool (10 + 10). Logs at "
        f"`{args.log_level}` (INFO's line per run costs CPU the machine did not have to spare).",
        f"- **Spread:** after an idle baseline of {base.seconds:.0f} s (no firm due), every "
        "firm's `run_leases.next_run_at` is set uniformly at random within one interval (as "
        "migration 0014 spreads them); each run gives its lease back due one interval later "
        "(`next_due`).",
        f"- **Traffic:** per interval {FED_SHARE:.0%} of the firms get a new purchase at a "
        f"random moment ({len(added):,} purchases in all, the kill's burst included), "
        f"{WEBHOOK_SHARE:.0%} of them also a signed QuickBooks webhook to a random replica "
        f"({sum(result.traffic.webhooks.values())} sent: "
        f"{dict(result.traffic.webhooks)}); {COMMANDS} `/hardcost run` and {COMMANDS} "
        "`/hardcost status` per replica per interval, signed as Slack signs them "
        f"({sum(result.traffic.commands.values())} sent: {dict(result.traffic.commands)}). "
        "The sandbox Clio keeps its real limit (50 requests/minute per token).",
        "- **Instrumentation:** a bench-only trigger on `run_leases` notes each lease taken with "
        "the `next_run_at` it was due at (lateness = claimed − due); `pg_stat_activity` is "
        f"sampled every {SAMPLE_EVERY:g} s by `application_name` ({reps} replicas).",
        "",
        "### Figures",
        "",
        *figures,
        "",
        "**Statements on `run_leases` by kind (every measured interval):**",
        "",
        *table(["Statement", "Count", "Per due firm"], kind_rows or [["—", "0", "0"]]),
        "",
        f"**Idle baseline** ({base.seconds:.0f} s, firms set up, none due): "
        f"{base_rate:.1f} statements/s for all replicas ({base_rate / reps:.1f} per replica; "
        f"{base_sched[1] / base.seconds:.1f}/s of them empty claim passes), "
        f"{sum(base.table_reads.values()) / base.seconds:,.0f} rows read/s.",
        "",
        "**Rows read by table (measured intervals):** "
        + ", ".join(f"`{t}` {f0(v)}" for t, v in tables_read.most_common(8)) + ".",
        "",
        "**Schedule lateness** (claim − due), p50 / p95 / max, compressed seconds: "
        f"firms of live replicas {lat(late_s)}; every scheduled claim, the killed replica's "
        f"firms' takeovers included, {lat(late_c)}.",
        "",
        "**Peak connections** (sampled): "
        + ", ".join(f"{k} {v}" for k, v in sorted(result.peak.items()))
        + f"; all replicas at once {result.peak_total} (pool limit {reps} × 20).",
        "",
        f"**Quiet runs:** {len(quiet.qbo):,} in the measured intervals; QuickBooks calls per "
        f"quiet run min / mean / max {min(quiet.qbo, default=0)} / "
        f"{statistics.fmean(quiet.qbo) if quiet.qbo else 0:.2f} / {max(quiet.qbo, default=0)}; "
        f"Clio calls max {max(quiet.clio, default=0)}. Cross-check for the firms never fed: "
        f"their runs counted {quiet.unfed_counted:,} QuickBooks calls, the sandbox logged "
        f"{quiet.unfed_logged:,} for their realms (a run at a window's edge can fall on "
        "either side).",
        "",
        f"**`/healthz`** (after the intervals, {HEALTH_PROBES} requests to one replica): "
        f"{f0(result.health[0])} rows read per request ({result.health[1] * 1000:,.0f} ms), "
        f"for {n:,} firms (every client's reads in those moments, the replicas' own work "
        "included): `ImportScheduler.health()` answers from the scheduler's own figures (its "
        "count of the scheduled firms every 30 s), so a probe itself sends `SELECT 1` only "
        "(`bench.health_bench` counts it alone: *Health probe*).",
        "",
        "**Replicas' logs:** "
        + "; ".join(f"{name}: {lost} “lease … taken over while its import ran here” errors "
                    f"({real} of them with another replica's claim of the firm in the lease "
                    f"before), {other} other error lines" for name, (lost, other, real) in
                    sorted(result.errors.items()))
        + " (see *How to read this*).",
        "",
        f"**API calls and 429s (whole run):** QuickBooks {result.calls['QuickBooks']:,} calls, "
        f"{result.status_429['QuickBooks']} 429s; Clio {result.calls['Clio']:,} calls, "
        f"{result.status_429['Clio']} 429s; Slack {result.calls['Slack']:,} calls, "
        f"{result.status_429['Slack']} 429s.",
        "",
    ]
    if kill is not None:
        took = kill.takeover_s
        lines += [
            "**Replica killed** (SIGKILL) halfway through the last interval, "
            + ("caught between committing an entry’s pending link and recording it"
               if kill.caught_writing else "not caught writing (killed after 20 s of looking)")
            + f": it held {len(kill.held)} leases. "
            + (f"The other replicas took those firms over {f1(min(took))}–{f1(max(took))} s "
               f"after the kill (median {f1(statistics.median(took))} s; the lease is "
               f"{kill.lease_s:g} s here, {kill.lease_s * comp:g} s uncompressed)"
               if took else "No takeover of its firms was seen in the window")
            + f", {len(took)} of {len(kill.held)} within the run. Runs marked `abandoned`: "
            f"{kill.abandoned_runs}. Clio afterwards: {len(result.in_clio):,} entries by marker "
            f"for {len(added):,} purchases — {len(doubled)} doubled, {len(missing)} missing, "
            f"{len(stray)} not ours; pending links left: {result.pending_left}.",
            "",
        ]
    lines += [
        "### Targets",
        "",
        *targets,
        "",
        "### How to read this",
        "",
        f"- **The scheduler's throughput has a ceiling of its own.** A claim pass takes at most "
        "as many firms as the replica has free import threads, and the next pass comes "
        "`HARDCOST_SCHEDULER_REFRESH_SECONDS` later, even when the runs took milliseconds "
        "(`ImportScheduler.sync`, `_run_claimed`: a run that ends frees its thread but does "
        "not claim again). So one replica runs at most threads ÷ refresh firms per second: "
        f"with the defaults (8 threads, 10 s) {8 * 900 / 10:,.0f} firms per 15 minutes, "
        f"{reps * 8 * 900 / 10:,.0f} for {reps} replicas, however fast the runs are. This run "
        f"used {args.threads} threads and a refresh of {args.refresh:g} s (uncompressed): a "
        f"ceiling of {f0(cap)} firms per interval for {reps} replicas, for {n:,} firms.",
        "- Scheduler statements are every statement on `run_leases`: per due firm, its claim "
        "(one `UPDATE` in the pass) and its release (one `UPDATE`, a transaction of its own), "
        "plus a share of the passes' `SELECT … FOR UPDATE SKIP LOCKED` and the keeper's "
        "renewals (one statement for every lease a replica holds). *With their BEGIN/COMMIT* "
        "adds two for each statement that is a transaction of its own. Empty claim passes are "
        "in the idle cost; they are a fixed cost per replica and second, not per firm.",
        "- Run statements per run are what a run costs beyond its lease: building the importer "
        "(firm row, tokens), the run row, the watermarks, the notifier's look for prompts and "
        "alerts. It is the measured total less the scheduler's statements and less the idle "
        "cost at the baseline's rate, divided by the runs started.",
        "- Rows read per due firm grow with each firm's own history, not with the number of "
        "firms: a quiet run looks for the firm's pending and superseded entry links three or "
        "four times, and the unique index on `entry_links` (firm, realm, purchase, customer, "
        "line) finds every link of the firm, which the state filters then drop — so each "
        "earlier entry of the firm costs about four rows read per quiet run (`--history`). "
        "Tables the bench leaves nearly empty are read whole (a sequential scan of a page or "
        "two is cheaper than the index), which adds rows here that an index would not read in "
        "production.",
        "- The “lease … taken over while its import ran here” errors in the replicas' logs "
        "come from a race in `Leases.renew`: a lease its run gives back "
        "between the keeper's snapshot of the held leases and its `UPDATE` is no longer "
        "found, and is reported lost — after its run ended. The bench checks each against its "
        "claim log: one that no other replica's claim of the firm explains is that race.",
        "- The old design's cost is on paper: each replica ticked every firm, and each tick read "
        "the whole firms table (and the connections table beside it) to decide about one firm: "
        "replicas × firms² rows per interval, at least.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_bench",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--firms", type=int, default=FIRMS)
    parser.add_argument("--replicas", type=int, default=REPLICAS)
    parser.add_argument("--unit-seconds", type=float, default=UNIT_SECONDS,
                        help="HARDCOST_SCHEDULE_UNIT_SECONDS: how long one schedule minute lasts")
    parser.add_argument("--intervals", type=int, default=INTERVALS)
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--refresh", type=float, default=REFRESH,
                        help="the claim pass period, uncompressed seconds (compressed like the "
                             "schedule)")
    parser.add_argument("--lease", type=float, default=LEASE,
                        help="the lease, uncompressed seconds (compressed like the schedule)")
    parser.add_argument("--baseline", type=float, default=BASELINE)
    parser.add_argument("--history", type=int, default=HISTORY,
                        help="entry links and sent Slack messages per firm from earlier use "
                             "(bulk-inserted), so the per-firm tables are not nearly empty")
    parser.add_argument("--no-kill", dest="kill", action="store_false")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--database-url",
                        help="a PostgreSQL server (the bench makes and drops a database on it); "
                             "without it, a cluster of its own is started")
    parser.add_argument("--out", default="docs/benchmarks.md")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    args.compression = 60.0 / args.unit_seconds
    raw = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m bench.scale_bench", *map(shlex.quote, raw)])
    if args.database_url:
        result = run_bench(args, args.database_url)
    else:
        with own_cluster() as server:
            result = run_bench(args, server)
    report = render(result, command)
    print(report)
    write_section(Path(args.out), f"{SCALE_SECTION}: {args.firms:,} firms ", report)
    progress(f"section written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

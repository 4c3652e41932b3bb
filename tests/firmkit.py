"""A small firm on the sandbox for integration tests: names, accounts, matters, and helpers."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import requests
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sandbox.clio import ClioAccount
from hardcost.sandbox.qbo import QboCompany, account_line
from hardcost.sandbox.world import SandboxWorld
from hardcost.sync.importer import Importer
from hardcost.sync.store import EntryLink, Failure, FirmSettings, Run, WaitingExpense, utcnow
from hardcost.sync.summary import RunSummary

START = date(2026, 1, 1)


@dataclass
class Firm:
    world: SandboxWorld
    sessions: sessionmaker[Session]
    id: int
    qbo: QboCompany
    clio: ClioAccount
    import_account: str
    other_account: str
    category_id: int
    customers: dict[str, str] = field(default_factory=dict)  # name → QBO id
    contacts: dict[str, int] = field(default_factory=dict)  # name → Clio id
    matters: dict[str, int] = field(default_factory=dict)  # description → Clio id
    _engine: Importer | None = None

    @property
    def engine(self) -> Importer:
        if self._engine is None:
            self._engine = self.world.importer(self.sessions, self.id)
        return self._engine

    def run(self, *, malformed_answers: bool = False, **kwargs: Any) -> RunSummary:
        """One run; Clio's sandbox must have seen no request and given no answer that breaks
        Clio's document. ``malformed_answers``: the test armed answers that break it on purpose
        (a fault's body), so the answers' errors are dropped; the requests' still count."""
        summary = self.engine.run(**kwargs)
        errors = self.world.clio.schema_errors
        if malformed_answers:
            errors[:] = [error for error in errors if not error.startswith("Invalid response")]
        assert errors == [], errors
        return summary

    def later(self, minutes: int = 15) -> None:
        """Move both sandboxes' clock on, past the watermark's safety margin."""
        self.world.clock.advance(minutes * 60)

    def client(self, name: str, matters: list[str] | None = None, *,
               email: str | None = None, contact: bool = True,
               contact_email: str | None = None, parent: str | None = None) -> str:
        """A QBO customer and (unless ``contact=False``) its Clio contact and matters."""
        customer = self.qbo.add_customer(
            name, email=email, parent_id=self.customers[parent] if parent else None)
        self.customers[name] = customer["Id"]
        if contact:
            clio_contact = self.clio.add_contact(name, email=contact_email or email)
            self.contacts[name] = clio_contact["id"]
            for description in matters or []:
                matter = self.clio.add_matter(clio_contact["id"], description=description)
                self.matters[description] = matter["id"]
        return customer["Id"]

    def expense(self, *lines: tuple[str, str] | tuple[str, str, str], txn_date: str = "2026-02-03",
                payment_type: str = "Check", **kwargs: Any) -> dict[str, Any]:
        """A purchase with import-account lines given as (amount, customer name[, description])."""
        built = [account_line(line[0], self.import_account, customer_id=self.customers[line[1]],
                              description=line[2] if len(line) > 2 else None)
                 for line in lines]
        return self.qbo.add_purchase(payment_type=payment_type, txn_date=txn_date,
                                     lines=built, **kwargs)

    def entries(self) -> list[dict[str, Any]]:
        return sorted(self.clio.activities.values(), key=lambda a: a["id"])

    def links(self) -> list[EntryLink]:
        with self.sessions() as session:
            return list(session.scalars(select(EntryLink).where(EntryLink.firm_id == self.id)))

    def waiting(self) -> list[WaitingExpense]:
        with self.sessions() as session:
            return list(session.scalars(select(WaitingExpense).where(
                WaitingExpense.firm_id == self.id, WaitingExpense.resolved_at.is_(None))))

    def open_failures(self) -> list[Failure]:
        with self.sessions() as session:
            return list(session.scalars(select(Failure).where(
                Failure.firm_id == self.id, Failure.resolved_at.is_(None))))

    def update_settings(self, **values: Any) -> None:
        with self.sessions() as session:
            settings = session.get(FirmSettings, self.id)
            assert settings is not None
            for key, value in values.items():
                setattr(settings, key, value)
            session.commit()


def make_firm(world: SandboxWorld, sessions: sessionmaker[Session], **options: Any) -> Firm:
    books = world.open_books()
    firm_id = world.connect_firm(sessions, books.company, books.account, start_date=START,
                                 import_account_ids=[books.import_account_id],
                                 expense_category_id=books.category_id, **options)
    return Firm(world, sessions, firm_id, books.company, books.account,
                books.import_account_id, books.other_account_id, books.category_id)


def env_for(world: SandboxWorld, database_url: str) -> dict[str, str]:
    """The environment a ``hardcost`` process needs to reach these sandboxes and database."""
    return world.environment(database_url)


def price(entry: dict[str, Any]) -> Decimal:
    return Decimal(str(entry["price"]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_serve(env: dict[str, str], port: int, *extra: str) -> subprocess.Popen[str]:
    """``hardcost serve`` in a process of its own, once it answers ``/healthz`` on ``port``."""
    proc = subprocess.Popen([sys.executable, "-m", "hardcost", "serve", *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
            return proc
        except requests.ConnectionError:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "hardcost serve never listened"
            time.sleep(0.1)


def serve_env(world: SandboxWorld, database_url: str, *, bot_token: str, slack_url: str,
              port: int | str, signing_secret: str = "s3cret") -> dict[str, str]:
    """The environment of a single-workspace ``hardcost serve`` on these sandboxes."""
    env = {**env_for(world, database_url), "SLACK_BOT_TOKEN": bot_token,
           "SLACK_SIGNING_SECRET": signing_secret, "SLACK_API_URL": f"{slack_url}/api/",
           "PORT": str(port)}
    env.pop("SLACK_APP_TOKEN", None)
    return env


def lapse_leases(firm: Firm) -> None:
    """A killed process's leases run out by themselves after ``HARDCOST_LEASE_SECONDS`` (on
    PostgreSQL; on SQLite the next process sees the holder gone and takes them at once). Tests
    that kill a process make them lapse now instead of waiting that long."""
    from sqlalchemy import update

    from hardcost.sync.store import RunLease

    with firm.sessions() as session:
        session.execute(update(RunLease).where(
            RunLease.firm_id == firm.id, RunLease.claim_token.is_not(None))
            .values(lease_until=utcnow() - timedelta(seconds=1)))
        session.commit()


def not_due(firm: Firm, hours: float = 24) -> None:
    """Move the firm's next scheduled run ``hours`` away: a test that starts ``hardcost serve``
    and drives the firm's runs itself (``/hardcost run``) gets no scheduled run beside them.
    (A firm made ready directly in the database is due at once, as one that just connected.)"""
    from sqlalchemy import update

    from hardcost.sync.store import RunLease

    with firm.sessions() as session:
        session.execute(update(RunLease).where(RunLease.firm_id == firm.id)
                        .values(next_run_at=utcnow() + timedelta(hours=hours)))
        session.commit()


def ghost_run(firm: Firm) -> int:
    """A run row as a process killed mid-run leaves it (``running``, started 5 minutes ago)."""
    with firm.sessions() as session:
        run = Run(firm_id=firm.id, trigger="schedule", dry_run=False, status="running",
                  started_at=utcnow() - timedelta(minutes=5))
        session.add(run)
        session.commit()
        return run.id


def run_row(firm: Firm, run_id: int) -> Run:
    with firm.sessions() as session:
        run = session.get(Run, run_id)
        assert run is not None
        return run


def wait_answering(url: str, proc: subprocess.Popen[str], what: str,
                   timeout: float = 30.0) -> None:
    """Until ``url`` answers at all (any status): the process ``proc`` (``what``) listens."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(url, timeout=2)
            return
        except requests.ConnectionError:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, f"{what} never answered {url}"
            time.sleep(0.1)

"""The sandbox QuickBooks and Clio running together, and firms connected to them.

Used by ``hardcost demo``, the tests and the benchmarks: everything talks real HTTP on loopback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from hardcost.sandbox.clio import ClioAccount, ClioSandbox
from hardcost.sandbox.clock import SandboxClock
from hardcost.sandbox.qbo import QboCompany, QboSandbox
from hardcost.sandbox.server import RunningServer, serve_in_thread
from hardcost.sync.config import Settings
from hardcost.sync.firms import FirmSetup, build_importer, create_firm
from hardcost.sync.http import RetryPolicy
from hardcost.sync.importer import Importer
from hardcost.sync.tokens import TokenGrant, store_grant


@dataclass(frozen=True)
class SandboxBooks:
    """One firm's books in the sandboxes: a QuickBooks company with an import account
    ("Reimbursable Expenses") and another ("Office Supplies"), and a Clio account with its
    owner and a hard-cost category."""

    company: QboCompany
    account: ClioAccount
    import_account_id: str
    other_account_id: str
    category_id: int


@dataclass
class SandboxWorld:
    qbo: QboSandbox
    clio: ClioSandbox
    qbo_server: RunningServer
    clio_server: RunningServer
    clock: SandboxClock
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(
        attempts=4, backoff=0.01, max_wait=0.2, throttle_wait=0.05))
    clio_timeout: tuple[float, float] | None = None
    """(connect, read) seconds for the Clio client of ``importer``; ``None``: the client's own
    (a read timeout of 60 s). Shorten it to meet the sandbox's timeout faults quickly."""

    @classmethod
    def start(cls, *, validate: bool = True, **clio_options: Any) -> SandboxWorld:
        clock = SandboxClock()
        qbo = QboSandbox(clock=clock)
        clio = ClioSandbox(clock=clock, validate=validate, **clio_options)
        return cls(qbo, clio, serve_in_thread(qbo), serve_in_thread(clio), clock)

    def stop(self) -> None:
        self.qbo_server.stop()
        self.clio_server.stop()

    def __enter__(self) -> SandboxWorld:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def settings(self) -> Settings:
        """Process settings that point every client at the sandboxes."""
        return Settings(
            QBO_API_BASE=self.qbo_server.url,
            QBO_TOKEN_URL=f"{self.qbo_server.url}/oauth2/v1/tokens/bearer",
            QBO_AUTH_URL=f"{self.qbo_server.url}/connect/oauth2",
            QBO_REVOKE_URL=f"{self.qbo_server.url}/v2/oauth2/tokens/revoke",
            QBO_CLIENT_ID="sandbox-qbo-client", QBO_CLIENT_SECRET="sandbox-qbo-secret",
            QBO_WEBHOOK_VERIFIER="sandbox-qbo-verifier",
            CLIO_BASE_URL=self.clio_server.url,
            CLIO_CLIENT_ID="sandbox-clio-client", CLIO_CLIENT_SECRET="sandbox-clio-secret",
        )

    def environment(self, database_url: str) -> dict[str, str]:
        """The environment a ``hardcost`` process needs to reach these sandboxes and
        ``database_url``: this process's own, less any real ``QBO_*``/``CLIO_*``, plus every
        setting of ``settings()``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QBO_", "CLIO_"))}
        settings = self.settings()
        for name, info in type(settings).model_fields.items():
            value = getattr(settings, name)
            if info.alias and value is not None:
                env[info.alias] = str(value)
        env["DATABASE_URL"] = database_url
        return env

    def open_books(self, name: str = "Sandbox Law") -> SandboxBooks:
        company = self.qbo.add_company(name=name)
        account = self.clio.add_account(name=name)
        account.add_user("Olivia Owner", email="owner@firm.example", account_owner=True)
        reimbursable = company.add_account("Reimbursable Expenses")
        office = company.add_account("Office Supplies")
        category = account.add_expense_category("Client costs", entry_type="hard_cost")
        return SandboxBooks(company, account, reimbursable["Id"], office["Id"], category["id"])

    def connect_firm(self, sessions: sessionmaker[Session], company: QboCompany,
                     account: ClioAccount, *, start_date: date, import_account_ids: list[str],
                     expense_category_id: int | None = None, name: str = "Sandbox Law",
                     **options: Any) -> int:
        """Create a firm whose QuickBooks and Clio are these sandbox ones; returns its id."""
        qbo_grant = self.qbo.issue_tokens(company.realm_id)
        clio_grant = self.clio.issue_tokens(account)
        with sessions() as session:
            firm = create_firm(session, FirmSetup(
                name=name, qbo_realm_id=company.realm_id, start_date=start_date,
                import_account_ids=tuple(import_account_ids),
                expense_category_id=expense_category_id, **options))
            store_grant(session, firm.id, "quickbooks", _grant(qbo_grant))
            store_grant(session, firm.id, "clio", _grant(clio_grant))
            session.commit()
            return firm.id

    def importer(self, sessions: sessionmaker[Session], firm_id: int) -> Importer:
        importer = build_importer(sessions, firm_id, self.settings(), retry=self.retry,
                                  sandbox_links=True, clock=self.clock.now)
        if self.clio_timeout is not None:
            importer.clio.api.timeout = self.clio_timeout
        return importer


def _grant(body: dict[str, Any]) -> TokenGrant:
    return TokenGrant(access_token=body["access_token"], refresh_token=body.get("refresh_token"),
                      expires_in=body.get("expires_in"),
                      refresh_expires_in=body.get("x_refresh_token_expires_in"))

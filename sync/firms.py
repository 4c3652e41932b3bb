"""Creating firms and building the clients and engine that act for one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import and_, select
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync.clio import ClioClient
from hardcost.sync.config import Settings
from hardcost.sync.http import ConfigError, RetryPolicy
from hardcost.sync.importer import Importer
from hardcost.sync.pacing import Pacing
from hardcost.sync.qbo import QboClient
from hardcost.sync.store import Connection, Firm, FirmSettings, utcnow
from hardcost.sync.tokens import StoredTokens, clio_refresher, qbo_refresher


@dataclass(frozen=True)
class FirmSetup:
    """What a firm has chosen; the Slack settings (a later issue) write the same rows."""

    name: str
    qbo_realm_id: str
    start_date: date
    import_account_ids: tuple[str, ...]
    expense_category_id: int | None = None
    clio_region: str = "us"
    clio_user_id: int | None = None
    split_lines: bool = False
    item_lines: bool = False
    bills: str = "off"
    slack_team_id: str | None = None


def create_firm(session: Session, setup: FirmSetup) -> Firm:
    """Insert a firm and its settings (caller commits)."""
    firm = Firm(name=setup.name, qbo_realm_id=setup.qbo_realm_id, clio_region=setup.clio_region,
                slack_team_id=setup.slack_team_id)
    session.add(firm)
    session.flush()
    session.add(FirmSettings(
        firm_id=firm.id, start_date=setup.start_date,
        import_account_ids=list(setup.import_account_ids),
        expense_category_id=setup.expense_category_id, clio_user_id=setup.clio_user_id,
        split_lines=setup.split_lines, item_lines=setup.item_lines, bills=setup.bills))
    return firm


def _require(value: str | None, name: str) -> str:
    if not value:
        raise ConfigError("hardcost", f"{name} is not set; see the README's configuration "
                          "table.")
    return value


def build_importer(sessions: sessionmaker[Session], firm_id: int, config: Settings, *,
                 retry: RetryPolicy | None = None, sandbox_links: bool = False,
                 clock: Callable[[], datetime] = utcnow) -> Importer:
    """The engine for one firm, with clients that refresh tokens stored in the database."""
    with sessions() as session:  # the firm and its Clio connection: one round trip
        row = session.execute(select(Firm.qbo_realm_id, Firm.clio_region, Connection.id)
                              .outerjoin(Connection, and_(Connection.firm_id == Firm.id,
                                                          Connection.provider == "clio"))
                              .where(Firm.id == firm_id)).first()
        if row is None:
            raise ConfigError("hardcost", f"There is no firm with id {firm_id}.")
        realm_id, region, clio_connection = row
    if not realm_id:
        raise ConfigError("hardcost", "This firm has not connected QuickBooks yet.")
    qbo_tokens = StoredTokens(sessions, firm_id, "quickbooks", qbo_refresher(
        config.qbo_token_url, _require(config.qbo_client_id, "QBO_CLIENT_ID"),
        _require(config.qbo_client_secret, "QBO_CLIENT_SECRET")))
    clio_host = config.clio_host(region)
    clio_tokens = StoredTokens(sessions, firm_id, "clio", clio_refresher(
        clio_host, _require(config.clio_client_id, "CLIO_CLIENT_ID"),
        _require(config.clio_client_secret, "CLIO_CLIENT_SECRET")))
    # Shared with every replica on PostgreSQL (rate_buckets), in-process on SQLite.
    pacing = Pacing(sessions.kw.get("bind"), firm_id, config.pacing_unit_seconds)
    qbo = QboClient(base_url=config.qbo_api_base, realm_id=realm_id, tokens=qbo_tokens,
                    retry=retry, pacer=pacing.qbo(realm_id))
    clio = ClioClient(host=clio_host, tokens=clio_tokens, retry=retry,
                      pacer=pacing.clio(clio_connection))
    return Importer(sessions, firm_id, qbo=qbo, clio=clio, sandbox_links=sandbox_links,
                        clock=clock)

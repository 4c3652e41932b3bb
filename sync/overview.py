"""Every firm at a glance, for the IT person (``hardcost firms``): where it posts in Slack, the
health of its QuickBooks and Clio connections, its last and next run, and what waits on
people. Read from the database only; a handful of queries whatever the number of firms."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hardcost.sync.scheduler import ready_query
from hardcost.sync.store import (
    PROVIDER_NAMES,
    Connection,
    Failure,
    Firm,
    FirmSettings,
    Run,
    RunLease,
    WaitingExpense,
)

CONNECTED, BROKEN, MISSING = "connected", "broken", "missing"


@dataclass(frozen=True)
class ConnectionHealth:
    state: str  # connected | broken (the service refused our tokens for good) | missing
    since: datetime | None = None  # broken since
    reason: str | None = None  # what the service answered, when broken


@dataclass(frozen=True)
class FirmOverview:
    id: int
    name: str
    active: bool
    paused: bool
    slack_team_id: str | None
    slack_channel_id: str | None
    quickbooks: ConnectionHealth
    clio: ConnectionHealth
    last_run_at: datetime | None
    last_run_status: str | None  # running | ok | failed | abandoned | stopped
    last_run_error: str | None
    next_run: str  # an ISO time, or paused | inactive | not scheduled
    waiting: int
    open_failures: int

    @property
    def problems(self) -> list[str]:
        """What needs the IT person: a refused connection, a failed last run."""
        found = []
        for service, health in (("QuickBooks", self.quickbooks), ("Clio", self.clio)):
            if health.state == BROKEN:
                found.append(f"the {service} connection was refused"
                             + (f" ({health.reason})" if health.reason else "")
                             + f": reconnect it in Slack (/hardcost connect {service.lower()})")
        if self.last_run_status == "failed":
            found.append("the last run failed" + (f": {self.last_run_error}"
                                                  if self.last_run_error else ""))
        return found

    def as_json(self) -> dict[str, Any]:
        def iso(when: datetime | None) -> str | None:
            return when.isoformat() if when is not None else None

        def health(h: ConnectionHealth) -> dict[str, Any]:
            return {"state": h.state, "broken_since": iso(h.since), "reason": h.reason}

        return {"id": self.id, "name": self.name, "active": self.active, "paused": self.paused,
                "slack_team_id": self.slack_team_id, "slack_channel_id": self.slack_channel_id,
                "quickbooks": health(self.quickbooks), "clio": health(self.clio),
                "last_run": None if self.last_run_at is None else {
                    "started_at": iso(self.last_run_at), "status": self.last_run_status,
                    "error": self.last_run_error},
                "next_run": self.next_run, "waiting": self.waiting,
                "open_failures": self.open_failures, "problems": self.problems}


def _counts(session: Session, model: Any) -> dict[int, int]:
    rows = session.execute(select(model.firm_id, func.count()).where(
        model.resolved_at.is_(None)).group_by(model.firm_id))
    return {int(firm_id): int(count) for firm_id, count in rows}


def _one_line(text: str | None, limit: int = 200) -> str | None:
    if not text:
        return None
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


def firm_overviews(session: Session) -> list[FirmOverview]:
    """Every firm, by id."""
    firms = session.execute(select(Firm, FirmSettings).outerjoin(
        FirmSettings, FirmSettings.firm_id == Firm.id).order_by(Firm.id)).all()
    connections: dict[tuple[int, str], Connection] = {
        (c.firm_id, c.provider): c for c in session.scalars(
            select(Connection).where(Connection.provider.in_(list(PROVIDER_NAMES))))}
    last_ids = select(func.max(Run.id)).where(Run.dry_run.is_(False)).group_by(Run.firm_id)
    last_runs = {run.firm_id: run for run in session.scalars(
        select(Run).where(Run.id.in_(last_ids)))}
    ready = {row[0] for row in session.execute(
        ready_query().add_columns(FirmSettings.import_account_ids)) if row[2]}
    next_at = {int(firm_id): when for firm_id, when in session.execute(
        select(RunLease.firm_id, RunLease.next_run_at))}
    waiting = _counts(session, WaitingExpense)
    failures = _counts(session, Failure)

    def health(firm_id: int, provider: str) -> ConnectionHealth:
        found = connections.get((firm_id, provider))
        if found is None:
            return ConnectionHealth(MISSING)
        if found.broken_at is not None:
            return ConnectionHealth(BROKEN, found.broken_at, _one_line(found.broken_reason))
        return ConnectionHealth(CONNECTED)

    out = []
    for firm, settings in firms:
        paused = bool(settings is not None and settings.paused)
        if not firm.active:
            next_run = "inactive"
        elif paused:
            next_run = "paused"
        elif firm.id in ready and firm.id in next_at:
            next_run = next_at[firm.id].isoformat()
        else:
            next_run = "not scheduled"
        last = last_runs.get(firm.id)
        out.append(FirmOverview(
            id=firm.id, name=firm.name, active=firm.active, paused=paused,
            slack_team_id=firm.slack_team_id,
            slack_channel_id=settings.slack_channel_id if settings is not None else None,
            quickbooks=health(firm.id, "quickbooks"), clio=health(firm.id, "clio"),
            last_run_at=last.started_at if last is not None else None,
            last_run_status=last.status if last is not None else None,
            last_run_error=_one_line(last.error) if last is not None else None,
            next_run=next_run, waiting=waiting.get(firm.id, 0),
            open_failures=failures.get(firm.id, 0)))
    return out

"""Runs whose process died are marked ``abandoned``, never left ``running`` (issue 10 #4):
at ``hardcost serve`` start-up, and whenever a firm's run lease is taken over (issue 13)."""

from __future__ import annotations

import signal
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from hardcost.sync.leases import Leases, RunRow, settle_abandoned_runs
from hardcost.sync.store import Run, RunLease, utcnow
from tests.firmkit import (
    Firm,
    free_port,
    ghost_run,
    make_firm,
    run_row,
    serve_env,
    start_serve,
)


def test_start_up_marks_every_run_of_a_dead_process_abandoned(
        firm: Firm, db_engine: Engine) -> None:
    other = make_firm(firm.world, firm.sessions)
    ghosts = [ghost_run(firm), ghost_run(other)]

    settle_abandoned_runs(db_engine)

    for run_id in ghosts:
        run = run_row(firm, run_id)
        assert run.status == "abandoned" and run.finished_at is not None
        assert run.error is not None and "stopped before it finished" in run.error


def test_finished_runs_are_left_as_they_are(firm: Firm, db_engine: Engine) -> None:
    firm.client("Jane Smith", ["Smith estate"])
    firm.expense(("10.00", "Jane Smith"))
    summary = firm.run()
    assert summary.run_id is not None

    settle_abandoned_runs(db_engine)

    assert run_row(firm, summary.run_id).status == "ok"


@pytest.mark.postgres
def test_a_run_another_replica_holds_is_not_abandoned(firm: Firm, db_engine: Engine) -> None:
    other = make_firm(firm.world, firm.sessions)
    alive, dead = ghost_run(firm), ghost_run(other)
    replica = Leases(db_engine, holder="replica-2")  # another replica, running the first firm
    lease = replica.acquire(firm.id, "schedule")
    assert lease is not None
    try:
        settle_abandoned_runs(db_engine)

        assert run_row(firm, alive).status == "running"
        assert run_row(firm, dead).status == "abandoned"
    finally:
        replica.release(lease)
        replica.close()


def test_taking_a_lapsed_lease_over_marks_the_firms_dead_runs_abandoned(
        firm: Firm, db_engine: Engine) -> None:
    dead = Leases(db_engine, holder="a replica that died")
    lease = dead.acquire(firm.id, "schedule")
    dead.close()  # it renews nothing any more
    assert lease is not None
    ghost = ghost_run(firm)
    alive = Leases(db_engine, holder="replica-2")

    assert alive.acquire(firm.id, "slack") is None  # held until it lapses
    assert run_row(firm, ghost).status == "running"
    with db_engine.begin() as conn:  # the dead replica's lease runs out
        conn.execute(update(RunLease).where(RunLease.firm_id == firm.id).values(
            lease_until=utcnow() - timedelta(seconds=1)))

    with alive.hold(firm.id, "slack") as taken:
        assert taken is not None
        assert run_row(firm, ghost).status == "abandoned"
    alive.close()


def _lapse(db_engine: Engine, firm_id: int) -> None:
    with db_engine.begin() as conn:  # the holder's lease runs out
        conn.execute(update(RunLease).where(RunLease.firm_id == firm_id).values(
            lease_until=utcnow() - timedelta(seconds=1), next_run_at=utcnow()))


def test_a_run_row_made_in_the_claim_of_a_process_that_died_says_abandoned(
        firm: Firm, db_engine: Engine) -> None:
    """The claim pass makes each run's row with its lease (issue 31); a process that dies
    before the run begins leaves it ``running``, and whoever takes the lease over marks it
    ``abandoned`` (never ``ok``) before making its own run's row."""
    _lapse(db_engine, firm.id)
    dead = Leases(db_engine, holder="a replica that died")
    [lease] = dead.claim_due(1, 60.0, run_started=utcnow).leases
    dead.close()
    assert lease.run_id is not None and run_row(firm, lease.run_id).status == "running"
    _lapse(db_engine, firm.id)

    alive = Leases(db_engine, holder="replica-2")
    [taken] = alive.claim_due(1, 60.0, run_started=utcnow).leases
    try:
        assert taken.taken_over and taken.run_id not in (None, lease.run_id)
        gone = run_row(firm, lease.run_id)
        assert gone.status == "abandoned" and gone.finished_at is not None
        assert run_row(firm, taken.run_id).status == "running"  # its own, made after
    finally:
        alive.release(taken)  # it never began either: its row goes with the lease
        alive.close()
    with firm.sessions() as session:
        assert session.scalar(select(Run.id).where(Run.id == taken.run_id)) is None


def test_a_run_row_made_in_the_claim_goes_when_the_run_never_began(
        firm: Firm, db_engine: Engine) -> None:
    """Given back without the run having begun (not ready, the process shutting down): no
    run happened, so no run row is left, as before the claim made it."""
    leases = Leases(db_engine, holder="replica-1")
    lease = leases.acquire(firm.id, "schedule", run=RunRow("schedule", utcnow()))
    assert lease is not None and lease.run_id is not None
    leases.release(lease)
    began = leases.acquire(firm.id, "schedule", run=RunRow("schedule", utcnow()))
    assert began is not None and began.run_id is not None
    began.run_began = True  # the run used it and crashed before its end was written
    leases.release(began)
    leases.close()
    with firm.sessions() as session:
        rows = {run.id: run.status for run in session.scalars(select(Run).where(
            Run.firm_id == firm.id))}
    # the first row went (SQLite may give its id to the second); the second is not ok:
    # start-up or a takeover settles it
    assert rows == {began.run_id: "running"}


def test_serve_settles_abandoned_runs_when_it_starts(firm: Firm, database_url: str) -> None:
    from hardcost.sandbox.server import serve_in_thread
    from hardcost.sandbox.slack import SlackSandbox

    ghost = ghost_run(firm)
    slack = SlackSandbox()
    slack_server = serve_in_thread(slack)
    workspace = slack.add_workspace("T0001")
    port = free_port()
    env = serve_env(firm.world, database_url, bot_token=workspace.bot_token,
                    slack_url=slack_server.url, port=port)
    proc = start_serve(env, port)
    try:
        assert run_row(firm, ghost).status == "abandoned"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        slack_server.stop()
    with firm.sessions() as session:
        statuses = set(session.scalars(select(Run.status)))
    assert "running" not in statuses



"""Run leases and claimed scheduled work (sync/leases.py, issue 13), on the test database.

Several ``Leases`` stand for several processes: each has its own holder name, and on PostgreSQL
its own engine (its own connections), so what one holds the other sees only through the
database, as replicas do.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event, insert, select, text, update
from sqlalchemy.engine import Engine

from hardcost.sandbox.faults import Fault
from hardcost.sandbox.slack_rig import SlackRig, wait_for
from hardcost.sync.engine import PoolSettings, _create_engine, make_engine
from hardcost.sync.importer import SHUTDOWN
from hardcost.sync.leases import LEASE_LOST, Leases, RunStop, next_due, run_soon
from hardcost.sync.store import Connection, FirmSettings, Run, RunLease, utcnow
from hardcost.sync.store import Firm as FirmRow
from tests.firmkit import Firm, ghost_run, make_firm, price, run_row

UNIT = 60.0


@pytest.fixture
def other_engine(database_url: str) -> Iterator[Engine]:
    """A second process's engine on the same database."""
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def _next_run_at(firm: Firm) -> datetime:
    with firm.sessions() as session:
        when = session.scalar(select(RunLease.next_run_at).where(RunLease.firm_id == firm.id))
        assert when is not None
        return when


def _due_now(firm: Firm, when: datetime | None = None) -> None:
    with firm.sessions() as session:
        run_soon(session, firm.id, when or utcnow() - timedelta(seconds=1))
        session.commit()


def test_a_new_firm_has_its_lease_row(firm: Firm) -> None:
    other = make_firm(firm.world, firm.sessions)
    with firm.sessions() as session:
        rows = session.scalars(select(RunLease).where(RunLease.firm_id.in_([firm.id, other.id])))
        assert {row.firm_id for row in rows} == {firm.id, other.id}


def test_one_holder_at_a_time_and_the_lease_is_given_back(
        firm: Firm, db_engine: Engine, other_engine: Engine) -> None:
    here, there = Leases(db_engine, holder="here"), Leases(other_engine, holder="there")
    lease = here.acquire(firm.id, "slack")
    assert lease is not None and lease.held()
    assert there.acquire(firm.id, "webhook") is None
    here.release(lease)
    with there.hold(firm.id, "webhook") as theirs:
        assert theirs is not None
        assert here.acquire(firm.id, "slack") is None
    assert here.acquire(firm.id, "slack") is not None
    here.close()
    there.close()


def test_a_firm_without_a_row_gets_one_when_its_lease_is_taken(
        firm: Firm, db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        conn.execute(RunLease.__table__.delete().where(RunLease.firm_id == firm.id))
    leases = Leases(db_engine)
    with leases.hold(firm.id, "cli") as lease:
        assert lease is not None
        assert leases.acquire(firm.id, "cli") is None
    assert leases.acquire(10**9, "cli") is None  # no such firm: nothing to hold
    leases.close()


def test_claims_take_only_due_ready_firms_and_put_the_others_off(
        firm: Firm, db_engine: Engine) -> None:
    paused = make_firm(firm.world, firm.sessions)
    paused.update_settings(paused=True)
    broken = make_firm(firm.world, firm.sessions)
    with firm.sessions() as session:
        session.execute(update(Connection).where(Connection.firm_id == broken.id,
                                                 Connection.provider == "clio")
                        .values(broken_at=utcnow(), broken_reason="invalid_grant"))
        session.commit()
    later = make_firm(firm.world, firm.sessions)
    for each in (firm, paused, broken):
        _due_now(each)
    _due_now(later, utcnow() + timedelta(hours=1))
    leases = Leases(db_engine)

    before = utcnow()
    claimed = leases.claim_due(10, UNIT)

    assert [lease.firm_id for lease in claimed.leases] == [firm.id]
    lease = claimed.leases[0]
    assert lease.kind == "schedule" and lease.interval == timedelta(minutes=15)
    assert lease.due is not None and lease.due < before
    for put_off in (paused, broken):  # looked at again one interval on, not every pass
        assert _next_run_at(put_off) >= before + timedelta(minutes=15)
    assert _next_run_at(later) > before + timedelta(minutes=59)
    assert leases.claim_due(10, UNIT).leases == []  # held, and nothing else due
    leases.release(lease, next_run_at=next_due(lease.due, lease.interval, utcnow()))
    assert _next_run_at(firm) == lease.due + timedelta(minutes=15)
    leases.close()


def test_an_absurd_schedule_is_reported_and_put_off_without_stopping_the_pass(
        firm: Firm, db_engine: Engine) -> None:
    other = make_firm(firm.world, firm.sessions)
    firm.update_settings(schedule_minutes=2**31 - 1)  # "minutes" of a year: past year 9999
    _due_now(firm)
    _due_now(other)
    leases = Leases(db_engine)
    claimed = leases.claim_due(10, 365 * 24 * 3600.0)
    assert [lease.firm_id for lease in claimed.leases] == [other.id]
    assert claimed.problems == [(firm.id, 2**31 - 1)]
    assert _next_run_at(firm) > utcnow() + timedelta(hours=23)
    leases.close()


def test_two_processes_claiming_together_never_take_the_same_firm(
        firm: Firm, db_engine: Engine, other_engine: Engine) -> None:
    firms = [firm, *(make_firm(firm.world, firm.sessions) for _ in range(11))]
    for each in firms:
        _due_now(each)
    a, b = Leases(db_engine, holder="a"), Leases(other_engine, holder="b")
    got: dict[str, list[int]] = {}
    start = threading.Barrier(2)

    def claim(name: str, leases: Leases) -> None:
        start.wait()
        taken: list[int] = []
        for _ in range(6):
            taken += [lease.firm_id for lease in leases.claim_due(2, UNIT).leases]
        got[name] = taken

    threads = [threading.Thread(target=claim, args=("a", a)),
               threading.Thread(target=claim, args=("b", b))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not set(got["a"]) & set(got["b"])
    assert sorted(got["a"] + got["b"]) == sorted(each.id for each in firms)
    a.close()
    b.close()


def test_a_lease_taken_over_stops_its_run_between_entries(
        firm: Firm, db_engine: Engine, other_engine: Engine) -> None:
    """A process that lost touch (paused, cut off from the database) while its lease lapsed
    and another took the firm over: its renewal finds the lease gone, and its import stops
    before the next entry instead of writing beside the new holder's run."""
    firm.client("Jane Smith", ["Smith estate"])
    for n in range(4):
        firm.expense((f"{n + 1}.00", "Jane Smith"))
    # Each POST takes a while: the takeover lands while the run is among its POSTs.
    firm.world.clio.faults.add(Fault(path=r"/api/v4/activities\.json$", method="POST",
                                     passthrough=True, delay=0.5, times=10))
    slow = Leases(db_engine, holder="slow replica", ttl=3600)
    lease = slow.acquire(firm.id, "schedule")
    assert lease is not None
    engine = firm.engine
    engine.stopping = RunStop(lease, SHUTDOWN)

    def take_over() -> None:
        wait_for(lambda: len(firm.entries()) >= 1, timeout=30, what="the first entry")
        with db_engine.begin() as conn:  # its lease ran out while it was away
            conn.execute(update(RunLease).where(RunLease.firm_id == firm.id)
                         .values(lease_until=utcnow() - timedelta(seconds=1)))
        assert Leases(other_engine, holder="another replica").acquire(
            firm.id, "schedule") is not None
        slow.renew()  # its next renewal finds the lease gone

    taker = threading.Thread(target=take_over)
    taker.start()
    summary = engine.run()
    taker.join(30)

    assert lease.lost.is_set()
    assert 1 <= summary.imported < 4
    assert summary.error == LEASE_LOST
    assert len(firm.entries()) == summary.imported  # nothing sent after it knew
    slow.close()
    firm.world.clio.faults.clear()

    firm.later()
    engine.stopping = SHUTDOWN  # the new holder's run (the default stop: shutdown only)
    assert firm.run().error is None  # the rest, nothing twice
    assert sorted(price(e) for e in firm.entries()) == [Decimal(f"{n}.00") for n in range(1, 5)]


def test_a_holder_that_cannot_renew_gives_up_before_its_lease_can_be_taken(
        firm: Firm, db_engine: Engine) -> None:
    leases = Leases(db_engine, ttl=2.0)
    lease = leases.acquire(firm.id, "schedule")
    assert lease is not None
    stop = RunStop(lease, threading.Event())
    assert not stop.is_set()
    leases.close()  # no renewals from now on
    time.sleep(2.0 * 0.7)  # past HOLD_FRACTION of the lease, still before lease_until
    assert stop.is_set()
    with db_engine.connect() as conn:  # while nobody else could have taken it over yet
        until = conn.scalar(select(RunLease.lease_until).where(RunLease.firm_id == firm.id))
    assert until is not None and until > utcnow()


def test_renewal_keeps_a_long_run_s_lease(firm: Firm, db_engine: Engine) -> None:
    leases = Leases(db_engine, ttl=0.6)  # renewed every 0.1 s
    lease = leases.acquire(firm.id, "schedule")
    assert lease is not None
    deadline = time.monotonic() + 3
    while leases.renewals < 5:
        assert time.monotonic() < deadline, "no renewals"
        time.sleep(0.05)
    assert lease.held()
    assert Leases(db_engine).acquire(firm.id, "slack") is None
    leases.release(lease)
    leases.close()


def test_next_due_keeps_each_firms_rhythm_also_after_an_outage() -> None:
    interval = timedelta(minutes=15)
    due = datetime(2026, 11, 28, 9, 0, tzinfo=utcnow().tzinfo)
    assert next_due(due, interval, due + timedelta(minutes=3)) == due + interval
    # Held up 35 minutes: back to its own slot (9:45), not "now" for every late firm at once.
    assert next_due(due, interval, due + timedelta(minutes=35)) == due + timedelta(minutes=45)
    # Its slot only 2 minutes away: the one after, so it is not run twice in a row.
    assert next_due(due, interval, due + timedelta(minutes=43)) == due + timedelta(minutes=60)
    # Started 10 minutes late (taken over from a dead replica): its next slot, 9:15, is only
    # 5 minutes after this run ended at 9:10, so the one after.
    assert next_due(due, interval, due + timedelta(minutes=10)) == due + timedelta(minutes=30)
    other = due + timedelta(minutes=7)  # another firm's phase stays its own
    assert next_due(other, interval, due + timedelta(minutes=35)) == \
        other + timedelta(minutes=45)  # 9:37 is 2 minutes away: 9:52


@pytest.mark.postgres
def test_a_pooled_connection_the_server_dropped_is_replaced_at_checkout(
        database_url: str) -> None:
    engine = _create_engine(database_url, PoolSettings(size=1, max_overflow=0,
                                                       ping_after_idle=0.0))
    try:
        with engine.connect() as conn:
            pid = conn.scalar(text("SELECT pg_backend_pid()"))
        with make_engine(database_url).connect() as admin:  # the server restarts, say
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with engine.connect() as conn:  # pinged at checkout, replaced: no error
            assert conn.scalar(text("SELECT pg_backend_pid()")) != pid
            assert conn.scalar(select(Run.id).limit(1)) is None
    finally:
        engine.dispose()


def test_resume_and_a_new_schedule_bring_the_next_run_forward(rig: SlackRig) -> None:
    """Slack's commands move ``next_run_at`` (issue 13 #1): resuming or choosing a schedule
    takes effect at the next claim pass, not an old interval later."""
    far = utcnow() + timedelta(hours=6)
    _due_now(rig.firm, far)
    rig.command("pause")
    wait_for(lambda: any("paused" in str(m) for m in rig.replies_to(rig.admin)))
    assert _next_run_at(rig.firm) == far  # pausing leaves it; the claim puts a paused firm off
    rig.command("resume")
    wait_for(lambda: _next_run_at(rig.firm) < far)
    assert _next_run_at(rig.firm) <= utcnow()

    _due_now(rig.firm, far)
    rig.command("set schedule 30")
    wait_for(lambda: _next_run_at(rig.firm) < far)
    _due_now(rig.firm, far)
    rig.command("set split-lines on")  # not about scheduling: leaves it where it is
    wait_for(lambda: any("split" in str(m).lower() for m in rig.replies_to(rig.admin)))
    assert _next_run_at(rig.firm) == far


# -- a dead holder (issue #12) ---------------------------------------------------------------


def _held_by(firm: Firm, holder: str, *, start: str | None, claimed_at: datetime,
             lease_until: datetime) -> None:
    """The firm's lease as another process left it (``holder``, ``start`` as its
    ``run_leases.claimed_by`` and ``holder_start``)."""
    with firm.sessions() as session:
        session.execute(update(RunLease).where(RunLease.firm_id == firm.id).values(
            claim_token="f" * 32, claimed_by=holder, holder_start=start, claim_kind="schedule",
            claimed_at=claimed_at, lease_until=lease_until))
        session.commit()


def _pid_space() -> str:
    """This process's kernel boot id and pid namespace, as ``run_leases.holder_start`` ends."""
    import os
    from pathlib import Path

    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return f"{boot} {os.readlink('/proc/self/ns/pid')}"


def _gone_pid() -> int:
    """The pid of a process of this host that has ended."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


@pytest.mark.postgres
def test_a_lease_of_a_process_of_this_host_that_is_gone_is_taken_at_once(
        firm: Firm, db_engine: Engine) -> None:
    """On PostgreSQL a process restarted on the same host takes its dead predecessor's lease at
    once, as on SQLite, instead of waiting out the lease (issue #12): the holder's pid is gone,
    or it is this process's own pid of an earlier start (pid 1 of a restarted container)."""
    from hardcost.sync.leases import holder_name, holder_name_of

    space = _pid_space()
    now = utcnow()
    leases = Leases(db_engine)
    for holder in (holder_name_of(_gone_pid()), holder_name()):
        _held_by(firm, holder, start=f"{'e' * 32} {space}", claimed_at=now,
                 lease_until=now + timedelta(seconds=170))
        ghost = ghost_run(firm)

        lease = leases.acquire(firm.id, "slack")

        assert lease is not None, holder
        assert lease.taken_over
        assert run_row(firm, ghost).status == "abandoned"
        leases.release(lease)
    leases.close()


@pytest.mark.postgres
def test_a_lease_of_a_live_process_or_of_another_pid_space_waits_for_its_lease_time(
        firm: Firm, db_engine: Engine) -> None:
    """Not taken before its time: a live process of this host, and a gone pid of another pid
    namespace (a container with the same host name, whose pids this process cannot see)."""
    import subprocess
    import sys

    from hardcost.sync.leases import holder_name_of

    space = _pid_space()
    now = utcnow()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    leases = Leases(db_engine)
    try:
        for holder, start in ((holder_name_of(alive.pid), f"{'e' * 32} {space}"),
                              (holder_name_of(_gone_pid()), f"{'e' * 32} boot pid:[1]"),
                              (holder_name_of(_gone_pid()), None)):
            _held_by(firm, holder, start=start, claimed_at=now,
                     lease_until=now + timedelta(seconds=170))
            assert leases.acquire(firm.id, "slack") is None, (holder, start)
    finally:
        alive.kill()
        alive.wait(timeout=30)
        leases.close()


@pytest.mark.postgres
def test_a_dead_replica_on_another_host_is_taken_over_after_its_lease_and_runs_at_once(
        firm: Firm, db_engine: Engine) -> None:
    """A replica that died for good on another host: its lease holds until its time is up,
    then the scheduler takes the firm over at once, though the firm's next scheduled run is
    a day away (issue #12: it waited for the firm's next slot)."""
    from tests.firmkit import not_due

    not_due(firm)
    ghost = ghost_run(firm)
    now = utcnow()
    _held_by(firm, "pid 4242 on replica-gone-for-good", start=f"{'d' * 32} boot pid:[9]",
             claimed_at=now - timedelta(minutes=5), lease_until=now + timedelta(seconds=60))
    clock = [now]
    leases = Leases(db_engine, clock=lambda: clock[0])

    assert leases.acquire(firm.id, "slack") is None  # its lease time is not up
    assert leases.claim_due(4, UNIT).leases == []
    assert run_row(firm, ghost).status == "running"

    clock[0] = now + timedelta(seconds=61)  # the dead replica's lease has run out
    claimed = leases.claim_due(4, UNIT)

    assert [(lease.firm_id, lease.taken_over) for lease in claimed.leases] == [(firm.id, True)]
    assert run_row(firm, ghost).status == "abandoned"
    for lease in claimed.leases:
        leases.release(lease)
    leases.close()


def test_run_says_who_holds_the_lease_and_when_it_will_be_taken_over(rig: SlackRig) -> None:
    """``/hardcost run`` while another process holds the firm's lease says so truthfully (issue
    #12): when that import started, on which host, and, once its holder has gone quiet, for
    how long and by when it will be taken over, in the firm's time zone."""
    import zoneinfo

    rig.firm.update_settings(timezone="America/New_York")
    zone = zoneinfo.ZoneInfo("America/New_York")
    now = utcnow()
    started = now - timedelta(minutes=3)

    _held_by(rig.firm, "pid 77 on replica-b", start=None, claimed_at=started,
             lease_until=now + timedelta(seconds=175))  # renewed 5 s ago
    answer = rig.command("run").text
    assert answer.startswith(f"An import started at {started.astimezone(zone):%H:%M} on "
                             "replica-b is under way"), answer

    lease_until = now + timedelta(seconds=140)  # last renewed 40 s ago
    _held_by(rig.firm, "pid 77 on replica-b", start=None, claimed_at=started,
             lease_until=lease_until)
    answer = rig.command("run").text
    by = (lease_until.astimezone(zone) + timedelta(minutes=1)).replace(second=0, microsecond=0)
    assert answer.startswith(f"An import started at {started.astimezone(zone):%H:%M} on "
                             "replica-b has not reported for 4"), answer
    assert f"will be taken over by {by:%H:%M}" in answer, answer
    assert rig.firm.entries() == []  # nothing started beside it


def _rows_read(plan: dict[str, Any]) -> dict[str, float]:
    """Rows each table's scans returned in an ``EXPLAIN (ANALYZE, FORMAT JSON)`` plan."""
    found: dict[str, float] = {}
    if "Relation Name" in plan and "Scan" in plan.get("Node Type", ""):
        found[plan["Relation Name"]] = (plan.get("Actual Rows", 0) + plan.get(
            "Rows Removed by Filter", 0)) * plan.get("Actual Loops", 1)
    for child in plan.get("Plans", []):
        for table, rows in _rows_read(child).items():
            found[table] = found.get(table, 0) + rows
    return found


def test_a_claim_pass_reads_about_its_limit_of_rows_however_many_firms_are_due(
        firm: Firm, db_engine: Engine) -> None:
    """A backlog (thousands of firms due at once: replicas down, a slow database) must not
    make each claim pass read every due firm with its firm and settings rows: that is what
    made a 10,000-firm fleet's backlog feed on itself (docs/scaling.md). Each statement the
    pass sends is run again under EXPLAIN ANALYZE (rolled back) and its rows read counted."""
    if db_engine.dialect.name != "postgresql":
        pytest.skip("rows read by plan: PostgreSQL's planner is the one production uses")
    due = utcnow() - timedelta(hours=1)
    with db_engine.begin() as conn:
        ids = list(conn.scalars(insert(FirmRow.__table__).returning(
            FirmRow.__table__.c.id, sort_by_parameter_order=True),
            [{"name": f"Backlog {n}", "active": True, "created_at": due}
             for n in range(4000)]))
        conn.execute(insert(FirmSettings.__table__), [
            {"firm_id": i, "schedule_minutes": 15, "updated_at": due} for i in ids])
        conn.execute(insert(RunLease.__table__), [
            {"firm_id": i, "next_run_at": due + timedelta(seconds=n)}
            for n, i in enumerate(ids)])
        for table in ("firms", "firm_settings", "run_leases", "connections"):
            conn.exec_driver_sql(f"ANALYZE {table}")
    selects: list[tuple[str, Any]] = []

    def note(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
             executemany: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "run_leases" in statement:
            selects.append((statement, parameters))

    leases = Leases(db_engine)
    event.listen(db_engine, "before_cursor_execute", note)
    try:
        claimed = leases.claim_due(8, UNIT)
    finally:
        event.remove(db_engine, "before_cursor_execute", note)
    # the backlog's firms have no realm or connections: each is put off, none claimed
    assert claimed.leases == [] and selects
    read: dict[str, float] = {}
    with db_engine.connect() as conn:
        for statement, parameters in selects:
            with conn.begin() as tx:
                plan = conn.exec_driver_sql(
                    "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters).scalar_one()
                tx.rollback()
            for table, rows in _rows_read(plan[0]["Plan"]).items():
                read[table] = read.get(table, 0) + rows
    leases.close()
    assert read.get("run_leases", 0) <= 100, read
    assert read.get("firms", 0) <= 100 and read.get("firm_settings", 0) <= 100, read

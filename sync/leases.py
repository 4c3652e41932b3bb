"""One import of a firm at a time across every process sharing the database, and the
scheduled work each process claims from it (``run_leases``, one row per firm).

**A lease** is the right to run a firm's import now. It is taken with one compare-and-set
``UPDATE`` (free, or its holder's lease ran out), held in the row (``claim_token`` until
``lease_until``), renewed by the holding process every ``ttl / 6`` seconds for every lease it
holds in one statement, and given back at the end. No connection is held for it, so a run
needs one connection (its session), nothing session-level is used (PgBouncer in transaction
mode works), and SQLite takes the same code path.

Every import takes it: the scheduler (``claim_due``), Slack's ``/hardcost run`` and the
buttons that start runs (``BotContext.claim_run``), the QuickBooks webhook worker and
``hardcost run``. A process that dies keeps its leases until ``lease_until``; whoever takes
one over then marks the dead process's ``running`` run ``abandoned``.

**The holder stops before anyone may take over.** Another process may take a lease once its
``lease_until`` (written by the holder's clock) has passed by the taker's clock. The holder
treats its lease as lost ``HOLD_FRACTION`` of the way through (``valid_until``, counted on its
own monotonic clock from the moment its last successful renewal began): a holder that cannot
renew (the database is away, the process was paused) stops between two entries well before
its lease can be taken over. The margin (``ttl`` × ``1 - HOLD_FRACTION``, 45 s of the default
120 s) covers one Clio request in flight (its timeout is 30 s) and the replicas' clock skew
(NTP keeps it far below a second).

**Scheduled work** (``claim_due``): each row's ``next_run_at`` says when the firm's next
scheduled import is due. A process with free import threads takes the earliest due rows
whose lease is free (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two replicas never pick the
same rows and neither waits for the other), leases the ready ones and puts the others
(paused, not connected, no import account) off by their interval, all in one short
transaction. What the scheduler reads is proportional to the firms due, never to all firms.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection as DbConnection
from sqlalchemy import Select, and_, delete, func, insert, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from hardcost.sync.store import (
    PROVIDER_NAMES,
    Connection,
    Firm,
    FirmSettings,
    Run,
    RunLease,
    utcnow,
)
from hardcost.sync.summary import SHUTTING_DOWN, STOPPED_BY_HAND

log = logging.getLogger(__name__)

LEASE_SECONDS = 180.0
"""How long a lease holds without renewal (``HARDCOST_LEASE_SECONDS``): the longest a dead
process's firms wait before another process takes them over."""
RENEW_PARTS = 6  # renewed every ttl / 6 seconds (30 s of 180)
HOLD_FRACTION = 0.5  # the holder gives up half way through (90 s of 180) unless renewed
PUT_OFF = timedelta(days=1)  # a firm whose schedule cannot be computed is looked at daily
SERVE_KINDS = ("schedule", "slack", "webhook")  # the kinds only `hardcost serve` takes
_FREE: dict[str, object] = {"claim_token": None, "claimed_by": None, "claim_kind": None,
                            "claimed_at": None, "lease_until": None, "holder_start": None}


def claim_candidates(now: datetime, limit: int, *, lapsed: bool = False) -> Select[Any]:
    """The claim pass's candidates, with what readiness needs: firms due (``next_run_at``
    passed, lease free), earliest first, or with ``lapsed`` the leases that ran out (their
    holder died), the oldest first. Each is one range of its own index read in order and
    cut at ``limit`` rows, so a pass reads about ``limit`` rows of each table however many
    firms are due (docs/scaling.md): one query ordered by a ``CASE`` over both had to read
    and sort every due firm, with its firm and settings rows, on every pass of a backlog."""
    connected = (select(func.count()).select_from(Connection).where(
        Connection.firm_id == RunLease.firm_id,
        Connection.provider.in_(list(PROVIDER_NAMES)),
        Connection.broken_at.is_(None)).scalar_subquery())
    query = (
        select(RunLease.firm_id, RunLease.next_run_at, RunLease.claim_token, Firm.active,
               Firm.qbo_realm_id, FirmSettings.paused, FirmSettings.schedule_minutes,
               FirmSettings.import_account_ids, FirmSettings.start_date,
               connected.label("connected"))
        .join(Firm, Firm.id == RunLease.firm_id)
        .outerjoin(FirmSettings, FirmSettings.firm_id == RunLease.firm_id))
    if lapsed:
        query = query.where(RunLease.claim_token.is_not(None), RunLease.lease_until < now
                            ).order_by(RunLease.lease_until)
    else:
        query = query.where(RunLease.claim_token.is_(None), RunLease.next_run_at <= now
                            ).order_by(RunLease.next_run_at)
    return query.limit(limit).with_for_update(skip_locked=True, of=RunLease)


def holder_name() -> str:
    """Who holds a lease, as ``run_leases.claimed_by`` shows it: this process."""
    return holder_name_of(os.getpid())


def holder_name_of(pid: int) -> str:
    return f"pid {pid} on {socket.gethostname()}"[:200]


_HOLDER = re.compile(r"pid (\d{1,10}) on (.*)")


def _pid_space() -> str:
    """Where this process's pid means this process: the kernel's boot id and the pid namespace
    (Linux); "" where they cannot be read. Two processes that agree on it see each other's
    pids, so one can tell whether the other still runs."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as boot:
            kernel = boot.read(64).strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except (OSError, ValueError):
        return ""
    return f"{kernel} {namespace}"[:80]


_START_ID = uuid.uuid4().hex
_SPACE = _pid_space()
PROCESS_START = f"{_START_ID} {_SPACE}".strip()[:120]
"""Which start of which process holds a lease (``run_leases.holder_start``): a number made when
this process started, then where its pid counts (``_pid_space``)."""


def holder_host(holder: str | None) -> str | None:
    """The host of a ``claimed_by`` of ``holder_name``'s form ("pid 12 on web-1"), else None."""
    found = _HOLDER.fullmatch(holder or "")
    return found.group(2) if found is not None else None


def _dead_here(holder: str | None, start: str | None, *, one_machine: bool) -> bool:
    """The holder was a process of this host that no longer runs: its pid is gone, or it is
    this process's own pid of an earlier start (a restarted container's pid 1).

    Judged only where pids mean the same process as here: same host name and the same
    ``_pid_space`` (kernel and pid namespace; replicas in other containers with the same host
    name have their own), or anywhere on this host when the database is one machine's
    (``one_machine``: SQLite). A lease written before ``holder_start`` existed is judged on
    SQLite alone."""
    found = _HOLDER.fullmatch(holder or "")
    if found is None:
        return False
    pid = int(found.group(1))
    if holder != holder_name_of(pid) or pid <= 0:
        return False  # another host's
    their_start, _, their_space = (start or "").partition(" ")
    if not one_machine and not (their_start and _SPACE and their_space == _SPACE):
        return False
    if pid == os.getpid():
        return bool(their_start) and their_start != _START_ID
    if pid <= 1:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


@dataclass(eq=False)
class Lease:
    """A lease this process holds. ``due`` and ``interval`` are set for scheduled runs (the
    ``next_run_at`` it was claimed at, and the firm's interval)."""

    firm_id: int
    token: str
    kind: str
    valid_until: float  # time.monotonic() after which this process must act as if lost
    due: datetime | None = None
    interval: timedelta | None = None
    lost: threading.Event = field(default_factory=threading.Event)
    taken_over: bool = False  # taken from a holder that died (its lease ran out, or it is gone)
    given_back: bool = False  # given back in a transaction that committed (``give_back_in``)
    run_id: int | None = None  # the run's ``runs`` row, made in the claim (``RunRow``)
    run_began: bool = False  # the run got as far as using that row (``Importer.began``)

    def held(self) -> bool:
        return not self.lost.is_set() and time.monotonic() < self.valid_until


@dataclass(frozen=True)
class RunRow:
    """The run a lease is taken for: its ``runs`` row is inserted in the claim's transaction
    (``Lease.run_id``), so a scheduled run does not commit a transaction of its own for it
    (issue 31: a quiet run's three commits are the claim, the pacing grant, the end). The row
    says ``running`` until the run finishes it, never ``ok`` before: a run that never began
    (not ready, the process shutting down) has it deleted with the lease given back
    (``Leases.release``), and one whose process died has it marked ``abandoned`` by whoever
    takes the lease over (``mark_abandoned``, before that claim inserts its own row)."""

    trigger: str
    started_at: datetime


def _insert_run(conn: DbConnection, firm_id: int, run: RunRow) -> int:
    made = conn.execute(insert(Run).values(firm_id=firm_id, trigger=run.trigger,
                                           dry_run=False, started_at=run.started_at))
    key = made.inserted_primary_key
    assert key is not None
    return int(key[0])


LEASE_LOST = ("This server lost touch with the database for too long to keep running the "
              "import safely; the next run carries on where this one stopped.")


class RunStop(threading.Event):
    """What an importer checks between two entries (``Importer.stopping``): set by hand, by
    the process shutting down (``sync.importer.SHUTDOWN``), or once its lease is not held."""

    def __init__(self, lease: Lease | None, shutdown: threading.Event) -> None:
        super().__init__()
        self.lease = lease
        self.shutdown = shutdown

    def is_set(self) -> bool:
        if super().is_set() or self.shutdown.is_set():
            return True
        return self.lease is not None and not self.lease.held()

    @property
    def reason(self) -> str:
        """Why the import stops, for its summary (``Importer`` reads it)."""
        if self.lease is not None and not self.lease.held():
            return LEASE_LOST
        if super().is_set() and not self.shutdown.is_set():
            return STOPPED_BY_HAND
        return SHUTTING_DOWN

    isSet = is_set  # noqa: N815 - threading.Event's old name, kept consistent


class Leases:
    """The leases of one process on one database (``hardcost serve`` makes one and shares it
    between the scheduler, Slack and the webhook worker)."""

    def __init__(self, db: Engine, *, ttl: float = LEASE_SECONDS, holder: str | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        if ttl <= 0:
            raise ValueError("a lease must last longer than 0 seconds")
        self.db = db
        self.ttl = ttl
        self.holder = holder or holder_name()
        self.clock = clock
        self._held: dict[str, Lease] = {}
        self._lock = threading.Lock()
        self._keeper: threading.Thread | None = None
        self._closed = threading.Event()
        self.renewals = 0  # successful renewal passes (tests and /metrics read it)

    # -- one firm ---------------------------------------------------------------------------

    def acquire(self, firm_id: int, kind: str, *, run: RunRow | None = None) -> Lease | None:
        """The firm's lease, or None while another import of the firm holds it; with ``run``,
        the run's row is inserted in the same transaction (``Lease.run_id``)."""
        token = uuid.uuid4().hex
        began = time.monotonic()
        now = self.clock()
        values = {"claim_token": token, "claimed_by": self.holder, "claim_kind": kind,
                  "claimed_at": now, "lease_until": now + timedelta(seconds=self.ttl),
                  "holder_start": PROCESS_START}
        taken_over = False
        with self.db.begin() as conn:
            free = conn.execute(update(RunLease).where(
                RunLease.firm_id == firm_id, RunLease.claim_token.is_(None)).values(**values))
            if not free.rowcount:
                expired = conn.execute(update(RunLease).where(
                    RunLease.firm_id == firm_id, RunLease.lease_until < now).values(**values))
                if expired.rowcount or self._take_from_the_dead(conn, firm_id, values):
                    taken_over = True
                    mark_abandoned(conn, firm_id, now)  # its holder died: its run is over
                elif not self._insert_missing(conn, firm_id, values):
                    return None
            run_id = _insert_run(conn, firm_id, run) if run is not None else None
        return self._track(Lease(firm_id, token, kind, began + self.ttl * HOLD_FRACTION,
                                 taken_over=taken_over, run_id=run_id))

    def _take_from_the_dead(self, conn: DbConnection, firm_id: int,
                            values: dict[str, object]) -> bool:
        """A lease whose holder was a process of this host that is gone (``hardcost serve``
        killed and restarted, a crash) is free at once instead of after ``ttl``
        (``_dead_here``: on PostgreSQL only where pids mean the same processes as here, as
        replicas in other containers may carry the same host name)."""
        row = conn.execute(select(RunLease.claim_token, RunLease.claimed_by,
                                  RunLease.holder_start).where(
            RunLease.firm_id == firm_id)).first()
        if row is None or row[0] is None or not _dead_here(
                row[1], row[2], one_machine=self.db.dialect.name == "sqlite"):
            return False
        log.warning("firm %s: the lease of %s, which is no longer running, is taken over",
                    firm_id, row[1])
        return bool(conn.execute(update(RunLease).where(
            RunLease.firm_id == firm_id, RunLease.claim_token == row[0])
            .values(**values)).rowcount)

    def _insert_missing(self, conn: DbConnection, firm_id: int, values: dict[str, object]
                        ) -> bool:
        """A firm without a lease row (made before run_leases, or the row was lost): make
        it, taken. False when the row exists (the lease is held) or the firm does not."""
        if conn.scalar(select(RunLease.firm_id).where(RunLease.firm_id == firm_id)) is not None:
            return False
        try:
            with conn.begin_nested():
                conn.execute(insert(RunLease).values(firm_id=firm_id,
                                                     next_run_at=values["claimed_at"], **values))
        except IntegrityError:  # another process made it first, or there is no such firm
            return False
        return True

    def release(self, lease: Lease, *, next_run_at: datetime | None = None) -> None:
        """Give the lease back (and set when the firm's next scheduled run is due); a lease
        already given back in a committed transaction (``give_back_in``) is only forgotten.
        The row its claim made for a run that never began (``RunRow``) goes with it: no run
        happened."""
        with self._lock:
            self._held.pop(lease.token, None)
        if lease.given_back:
            return
        values: dict[str, object] = dict(_FREE)
        if next_run_at is not None:
            values["next_run_at"] = next_run_at
        try:
            with self.db.begin() as conn:
                conn.execute(update(RunLease).where(
                    RunLease.firm_id == lease.firm_id, RunLease.claim_token == lease.token)
                    .values(**values))
                if lease.run_id is not None and not lease.run_began:
                    conn.execute(delete(Run).where(Run.id == lease.run_id,
                                                   Run.status == "running"))
        except SQLAlchemyError:  # it runs out by itself; the firm waits at most ``ttl``
            log.warning("giving back the lease of firm %s failed; it lapses in %.0f s",
                        lease.firm_id, self.ttl, exc_info=True)

    def give_back_in(self, session: Session, lease: Lease, *,
                     next_run_at: datetime | None = None) -> None:
        """Give the lease back inside the caller's transaction (the one that finishes the
        run's row: ``Importer.finish_with``), so a run's end costs one commit, not two. It is
        no longer renewed from here on; once that transaction has committed the caller sets
        ``lease.given_back`` and ``release`` only forgets it. Should the commit fail, the
        lease is still taken in the database and ``release`` gives it back as usual."""
        with self._lock:
            self._held.pop(lease.token, None)  # not renewed (nor reported lost) any more
        values: dict[str, object] = dict(_FREE)
        if next_run_at is not None:
            values["next_run_at"] = next_run_at
        session.execute(update(RunLease).where(
            RunLease.firm_id == lease.firm_id, RunLease.claim_token == lease.token)
            .values(**values))

    @contextmanager
    def hold(self, firm_id: int, kind: str) -> Iterator[Lease | None]:
        """The firm's lease for the block, or None (the firm's import is under way)."""
        lease = self.acquire(firm_id, kind)
        try:
            yield lease
        finally:
            if lease is not None:
                self.release(lease)

    def held(self) -> list[Lease]:
        with self._lock:
            return list(self._held.values())

    def held_by(self, firm_id: int) -> HeldBy | None:
        """Who holds the firm's lease now; None when it is free or has run out."""
        now = self.clock()
        with self.db.connect() as conn:
            row = conn.execute(select(
                RunLease.claim_token, RunLease.claimed_by, RunLease.claim_kind,
                RunLease.claimed_at, RunLease.lease_until).where(
                RunLease.firm_id == firm_id)).first()
        if row is None or row.claim_token is None or row.lease_until is None \
                or row.lease_until < now:
            return None
        renewed = row.lease_until - timedelta(seconds=self.ttl)
        if row.claimed_at is not None:
            renewed = max(renewed, row.claimed_at)
        with self._lock:
            mine = row.claim_token in self._held
        return HeldBy(str(row.claimed_by or "another process"), holder_host(row.claimed_by),
                      row.claim_kind, row.claimed_at, row.lease_until,
                      max(now - renewed, timedelta(0)), mine,
                      timedelta(seconds=self.ttl / RENEW_PARTS))

    # -- scheduled work ---------------------------------------------------------------------

    def claim_due(self, limit: int, unit_seconds: float, *,
                  run_started: Callable[[], datetime] | None = None) -> Claimed:
        """Lease up to ``limit`` firms whose scheduled run is due, earliest first; firms due
        but not ready to import are put off by their interval, and firms whose interval
        cannot be computed (absurd ``schedule_minutes``) by ``PUT_OFF`` (``problems``). Each
        lease carries ``due`` and ``interval`` (``schedule_minutes`` × ``unit_seconds``).

        A firm whose lease ran out (its holder died: a replica gone for good) is due at once,
        whenever its next scheduled run would be: the dead holder's import is taken over and
        carried on now, not at the firm's next slot.

        With ``run_started`` (the run's clock, read once the firms are claimed: a time read
        before the claim could fall before the previous run's end), each leased firm's run
        row (``RunRow``, trigger ``schedule``) is
        inserted in the same transaction: one commit for up to ``limit`` runs' starts."""
        result = Claimed([], [])
        if limit <= 0:
            return result
        began = time.monotonic()
        now = self.clock()
        claimed = result.leases
        with self.db.begin() as conn:
            rows = list(conn.execute(claim_candidates(now, limit, lapsed=True)).all())
            if len(rows) < limit:
                rows += conn.execute(claim_candidates(now, limit - len(rows))).all()
            for (firm_id, due, previous, active, realm, paused, minutes, accounts, start,
                 services) in rows:
                try:
                    interval = schedule_interval(minutes, unit_seconds)
                    (now + interval).isoformat()
                except (OverflowError, ValueError):
                    result.problems.append((firm_id, (minutes or 0)))
                    self._put_off(conn, firm_id, previous, now, now + PUT_OFF)
                    continue
                ready = bool(active and realm and accounts and start and not paused
                             and services == len(PROVIDER_NAMES))
                if not ready:
                    self._put_off(conn, firm_id, previous, now, now + interval)
                    continue
                token = uuid.uuid4().hex
                got = conn.execute(update(RunLease).where(
                    RunLease.firm_id == firm_id,
                    or_(RunLease.claim_token.is_(None), RunLease.lease_until < now))
                    .values(claim_token=token, claimed_by=self.holder, claim_kind="schedule",
                            claimed_at=now, lease_until=now + timedelta(seconds=self.ttl),
                            holder_start=PROCESS_START))
                if not got.rowcount:  # SQLite: another thread took it since the SELECT
                    continue
                if previous is not None:
                    log.warning("firm %s: a lease that ran out is taken over; its import "
                                "runs now", firm_id)
                    mark_abandoned(conn, firm_id, now)  # before this run's row is made
                run_id = None if run_started is None else _insert_run(
                    conn, firm_id, RunRow("schedule", run_started()))
                claimed.append(Lease(firm_id, token, "schedule",
                                     began + self.ttl * HOLD_FRACTION, due=due,
                                     interval=interval, taken_over=previous is not None,
                                     run_id=run_id))
        for lease in claimed:
            self._track(lease)
        return result

    @staticmethod
    def _put_off(conn: DbConnection, firm_id: int, previous: str | None, now: datetime,
                 until: datetime) -> None:
        """A firm not to run now: its next scheduled run ``until``; a lease of it that ran out
        (its holder died) is given back, and the dead holder's run marked abandoned."""
        values: dict[str, object] = {"next_run_at": until}
        if previous is not None:
            values.update(_FREE)
            mark_abandoned(conn, firm_id, now)
        conn.execute(update(RunLease).where(RunLease.firm_id == firm_id).values(**values))

    # -- keeping leases alive ---------------------------------------------------------------

    def _track(self, lease: Lease) -> Lease:
        with self._lock:
            self._held[lease.token] = lease
            if self._keeper is None or not self._keeper.is_alive():
                self._closed.clear()
                self._keeper = threading.Thread(target=self._keep, name="lease-keeper",
                                                daemon=True)
                self._keeper.start()
        return lease

    def _keep(self) -> None:
        while not self._closed.wait(self.ttl / RENEW_PARTS):
            try:
                self.renew()
            except Exception:  # noqa: BLE001 - the next pass tries again; leases lapse
                log.warning("renewing leases failed; runs stop if it keeps failing",
                            exc_info=True)

    def renew(self) -> None:
        """Move ``lease_until`` on for every lease held (one statement); a lease another
        process took over meanwhile is marked lost, so its run stops between two entries."""
        leases = self.held()
        if not leases:
            return
        began = time.monotonic()
        now = self.clock()
        tokens = [lease.token for lease in leases]
        with self.db.begin() as conn:
            renewed = conn.execute(update(RunLease).where(RunLease.claim_token.in_(tokens))
                                   .values(lease_until=now + timedelta(seconds=self.ttl)))
            kept = set(tokens)
            if renewed.rowcount != len(tokens):
                kept = set(conn.scalars(select(RunLease.claim_token).where(
                    RunLease.claim_token.in_(tokens))))
        with self._lock:
            still = set(self._held)  # a lease given back meanwhile was not lost: its run ended
        for lease in leases:
            if lease.token in kept:
                lease.valid_until = began + self.ttl * HOLD_FRACTION
            elif lease.token in still and not lease.lost.is_set():
                lease.lost.set()
                log.error("the lease of firm %s was taken over while its import ran here; "
                          "the import stops", lease.firm_id)
        self.renewals += 1

    def close(self) -> None:
        self._closed.set()


@dataclass
class Claimed:
    """What one claim pass got: the leases of firms to run now, and the firms whose
    schedule cannot be computed (firm id, ``schedule_minutes``), put off by ``PUT_OFF``."""

    leases: list[Lease]
    problems: list[tuple[int, int]]


def schedule_interval(minutes: int | None, unit_seconds: float) -> timedelta:
    """A firm's interval; ``OverflowError`` when it cannot be represented (absurd minutes)."""
    return timedelta(seconds=max(int(minutes or 1), 1) * unit_seconds)


def next_due(due: datetime | None, interval: timedelta | None, now: datetime) -> datetime:
    """When a firm's next scheduled run is due after one that was due at ``due``: one
    interval on. No drift: each firm keeps the phase it was given (at random over the interval
    when the firms were first scheduled, or when it connected), which is what spreads firms of
    the same interval over it. If that time has passed or is less than half an interval away (a
    run longer than its interval, an outage, a dead replica's firm taken over late), the next
    time in the firm's own rhythm that is at least half an interval away: so firms held up
    together go back to their own slots instead of coming back all at once, and a firm is never
    run twice in a row."""
    if interval is None or interval <= timedelta(0):
        return now
    base = due or now
    try:
        wanted = base + interval
        if wanted <= now:
            wanted = base + interval * ((now - base) // interval + 1)
        if wanted - now < interval / 2:  # a late start (a takeover): not again straight away
            wanted += interval
        return wanted
    except OverflowError:
        return now + PUT_OFF


def run_soon(session: Session, firm_id: int, when: datetime | None = None) -> None:
    """Bring the firm's next scheduled run forward to ``when`` (now): its schedule changed,
    it was resumed or connected (the caller commits)."""
    session.execute(update(RunLease).where(RunLease.firm_id == firm_id)
                    .values(next_run_at=when or utcnow()))


ABANDONED = ("The process running this import stopped before it finished (it was killed or "
             "restarted). Nothing is lost: the next run carries on where it stopped.")


def mark_abandoned(conn: DbConnection, firm_id: int | None, now: datetime) -> int:
    """Mark the firm's (every firm's with None) ``running`` runs ``abandoned``. Only for a
    caller that knows no process runs them: it took the firm's lease over, or it is the only
    process serving the database. Returns how many rows."""
    where = [Run.status == "running"]
    if firm_id is not None:
        where.append(Run.firm_id == firm_id)
    result = conn.execute(update(Run).where(*where).values(
        status="abandoned", finished_at=now, error=ABANDONED))
    count = int(result.rowcount or 0)
    if count:
        log.warning("marked %d run(s)%s abandoned: their process stopped mid-run", count,
                    f" of firm {firm_id}" if firm_id is not None else "")
    return count


def settle_abandoned_runs(db: Engine, now: datetime | None = None) -> None:
    """At start-up: every ``running`` run no live process holds is marked ``abandoned``.

    SQLite has one ``hardcost serve`` (the scheduler's lock file says so): the leases of
    ``serve``'s kinds are a dead predecessor's, given back at once, and every running run
    is marked (as before leases). On PostgreSQL a firm's runs are marked when its lease is
    free, has run out, or was held by a process of this host that is gone (``_dead_here``:
    this process's predecessor, killed); a firm another replica holds is left alone.

    Either way a firm whose run was abandoned or whose lease was taken from the dead is due
    at once (``next_run_at`` now): the dead process's import is carried on straight away,
    not at the firm's next slot."""
    now = now or utcnow()
    if db.dialect.name != "postgresql":
        with db.begin() as conn:
            firms = set(conn.scalars(select(Run.firm_id).where(Run.status == "running")))
            firms.update(conn.scalars(select(RunLease.firm_id).where(
                RunLease.claim_kind.in_(SERVE_KINDS), RunLease.claim_token.is_not(None))))
            conn.execute(update(RunLease).where(RunLease.claim_kind.in_(SERVE_KINDS))
                         .values(**_FREE))
            mark_abandoned(conn, None, now)
            if firms:
                conn.execute(update(RunLease).where(RunLease.firm_id.in_(sorted(firms)))
                             .values(next_run_at=now))
        return
    with db.connect() as conn:
        firms = set(conn.scalars(select(Run.firm_id).where(Run.status == "running")))
        # Leases held now (by live replicas, or by a predecessor of this process): few.
        for firm_id, holder, start in conn.execute(select(
                RunLease.firm_id, RunLease.claimed_by, RunLease.holder_start).where(
                RunLease.claim_token.is_not(None), RunLease.lease_until >= now)):
            if _dead_here(holder, start, one_machine=False):
                firms.add(firm_id)
    leases = Leases(db)
    for firm_id in sorted(firms):
        lease = leases.acquire(firm_id, "settle")
        if lease is None:
            continue  # another replica runs it now
        soon: datetime | None = None
        try:
            with db.begin() as conn:
                if mark_abandoned(conn, firm_id, now) or lease.taken_over:
                    soon = now
        finally:
            leases.release(lease, next_run_at=soon)
    leases.close()


@dataclass(frozen=True)
class HeldBy:
    """Who holds a firm's lease now, for telling people (``Leases.held_by``)."""

    holder: str  # run_leases.claimed_by: "pid 12 on web-1"
    host: str | None  # web-1, when the holder is named so
    kind: str | None
    claimed_at: datetime | None
    lease_until: datetime  # when another process may take it over, unless it is renewed
    silent: timedelta  # since its holder last renewed it (as far as this process's ttl says)
    mine: bool  # held by this process
    every: timedelta = timedelta(seconds=LEASE_SECONDS / RENEW_PARTS)  # how often renewed

    @property
    def quiet(self) -> bool:
        """Its holder has missed a renewal (with a fifth of the period to spare): it may have
        died, or lost the database."""
        return self.silent > self.every * 1.2


def lease_holders(db: Engine) -> list[tuple[int, str, str]]:
    """(firm id, holder, kind) for every lease held and not run out (operations, tests)."""
    now = utcnow()
    with db.connect() as conn:
        return [(int(firm), str(holder), str(kind)) for firm, holder, kind in conn.execute(
            select(RunLease.firm_id, RunLease.claimed_by, RunLease.claim_kind).where(and_(
                RunLease.claim_token.is_not(None), RunLease.lease_until >= now)))]


__all__ = ["ABANDONED", "LEASE_SECONDS", "PROCESS_START", "Claimed", "HeldBy", "Lease",
           "Leases", "RunRow", "RunStop", "holder_host", "holder_name", "holder_name_of",
           "lease_holders", "mark_abandoned", "next_due", "run_soon", "schedule_interval",
           "settle_abandoned_runs"]

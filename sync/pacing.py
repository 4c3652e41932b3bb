"""Pacing shared by every process of a deployment: token buckets kept in PostgreSQL.

QuickBooks allows 500 requests a minute per realm and Clio about 50 a minute per access token,
whichever replica sends them. Each bucket is one ``rate_buckets`` row (``firm_id``, ``key``:
``qbo:<realm>`` or ``clio:<connection id>``, never a token). A process does not ask the row for
every request: it takes a *block* of tokens in one short transaction (``SELECT … FOR UPDATE``,
then ``UPDATE``) and spends them locally; the block grows while it is used up and shrinks when
tokens expire unused, so a busy process makes about one statement per 10-20 requests (Clio's
block is a fifth of the window's budget, 10 at its peak limit of 50, up to ``MAX_BLOCK``).

Every time in a row is the database's (``clock_timestamp()``), read in the same transaction;
a process turns the answer into *durations* at once and waits on its own monotonic clock, so
clock skew between replicas does not matter. A token not sent within ``lifetime`` of becoming
valid is dropped, which is what bounds the sum of all processes' requests:

- **QuickBooks** (:class:`SlidingPolicy`): a token bucket with ``burst`` tokens refilled at
  ``rate`` per second, taken by reservation (a block may drive the level below zero; its tokens
  become valid one by one as the level would climb back, so waiting callers queue instead of
  polling). Requests in any sliding period ≤ ``burst + rate × (period + lifetime)``, which the
  policy sets to the limit less a small margin — however QuickBooks counts its minute.
- **Clio** (:class:`WindowPolicy`): the budget per window that Clio reports
  (``X-RateLimit-Limit``), the window's end moved to Clio's ``X-RateLimit-Reset`` as soon as a
  response tells it, tokens expiring before the window's earliest possible end so none
  spills into the next.
  On top, :class:`~hardcost.sync.http.HeaderPacer` still waits for the reset when a response
  says the window is nearly spent.

With SQLite (one process) the same pacer runs on :class:`LocalBuckets`, in memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import requests
from sqlalchemy import text
from sqlalchemy.engine import Engine

from hardcost.sync.http import HeaderPacer, Pacer

log = logging.getLogger(__name__)

RESET_SLACK_SECONDS = 5.0
"""How far past a window's length a reported reset may move its end (clock skew with Clio)."""

RESET_RESOLUTION_SECONDS = 1.0
"""``X-RateLimit-Reset`` is a whole Unix second."""

MARGIN_SECONDS = 0.5
"""Tokens of a Clio window expire this long before the window's end (a request in flight)."""

MAX_WAIT_SECONDS = 65.0
"""The longest one wait for tokens lasts (a window and its slack)."""

BLOCK_SHARE = 5
"""A Clio block is at most a fifth of the window's budget as Clio last reported it (10 of the
50 at peak), but never less than the policy's ``block``."""

MAX_BLOCK = 50
"""The most tokens one process takes at once, however large the budget Clio reports (the
statements a busy process makes: one grant per 10 calls at peak's 50, per 50 off-peak)."""

MIN_LIFETIME_SECONDS = 1.0
"""The shortest a Clio token's ``lifetime`` is compressed to. A lifetime is the time a process
takes to spend a block: its own requests and database work between them, which a compressed
clock does not shorten (a block of 10 at up to 100 ms each). Production's is 10 s; at 60×
a sixtieth (0.17 s) made tokens expire while a replica was busy, and the window's budget ran
out before the window did. Tokens still never outlive their window (``deadline``)."""

MINUTE = 60.0
"""A minute of the services' limits; ``HARDCOST_PACING_UNIT_SECONDS`` makes pacing's shorter
(tests and benchmarks compress time with the sandbox's Clio window): every duration of a policy
then scales by ``unit ÷ 60`` (:meth:`SlidingPolicy.compressed`), but for a Clio token's lifetime
(:data:`MIN_LIFETIME_SECONDS`). The database's clock still runs at its own pace; only the
lengths measured on it shrink."""


@dataclass(frozen=True)
class BucketState:
    """One bucket as stored: ``capacity`` is the service's limit per period."""

    capacity: int
    tokens: float
    updated_at: datetime
    window_ends_at: datetime | None = None


@dataclass(frozen=True)
class Grant:
    """Tokens handed to one process. Times are seconds after the grant was read.

    Token ``i`` (0-based) is valid from ``ready(i)`` to ``ready(i) + lifetime``, and never after
    ``deadline``. ``count == 0`` means: ask again in ``retry_in`` seconds.
    """

    count: int
    level: float = 0.0  # the bucket's level before this grant (sliding buckets)
    rate: float | None = None  # tokens per second (sliding buckets); None: all valid now
    lifetime: float = 10.0
    deadline: float | None = None
    retry_in: float = 0.0

    def ready(self, index: int) -> float:
        if self.rate is None:
            return 0.0
        return max(0.0, (index + 1 - self.level) / self.rate)

    def expires(self, index: int) -> float:
        end = self.ready(index) + self.lifetime
        return end if self.deadline is None else min(end, self.deadline)


class Policy(Protocol):
    @property
    def block(self) -> int:
        """The most tokens one process takes at once."""
        ...

    def fresh(self, now: datetime, capacity: int | None = None) -> BucketState: ...

    def take(self, state: BucketState, now: datetime, want: int
             ) -> tuple[BucketState, Grant]: ...

    def steer(self, state: BucketState, now: datetime, limit: int | None,
              reset_in: float | None) -> BucketState | None:
        """The state after a response's rate-limit headers, or None when nothing changes."""
        ...

    def give_back(self, state: BucketState, now: datetime, count: int) -> BucketState | None:
        """The state with ``count`` unused tokens of a grant returned, or None (none taken)."""
        ...


@dataclass(frozen=True)
class SlidingPolicy:
    """At most ``limit`` requests in any ``period`` seconds, with ``margin`` kept back.

    ``burst + rate × (period + lifetime) = limit − margin``: a token is valid for ``lifetime``
    after the bucket covered it, so that many more seconds of refill may land in one period.
    """

    limit: int
    period: float = 60.0
    burst: int = 40
    lifetime: float = 5.0
    block: int = 40
    margin: int = 10

    @property
    def rate(self) -> float:
        return (self.limit - self.margin - self.burst) / (self.period + self.lifetime)

    def compressed(self, unit_seconds: float) -> SlidingPolicy:
        """This policy with every duration scaled so that a minute lasts ``unit_seconds`` (the
        lifetime too: it sets the refill rate, which must compress with the period)."""
        if unit_seconds == MINUTE:
            return self
        f = unit_seconds / MINUTE
        return replace(self, period=self.period * f, lifetime=self.lifetime * f)

    def fresh(self, now: datetime, capacity: int | None = None) -> BucketState:
        return BucketState(capacity=self.limit, tokens=float(self.burst), updated_at=now)

    def take(self, state: BucketState, now: datetime, want: int
             ) -> tuple[BucketState, Grant]:
        elapsed = max(0.0, (now - state.updated_at).total_seconds())
        level = min(float(self.burst), state.tokens + self.rate * elapsed)
        after = replace(state, tokens=level - want, updated_at=now)
        return after, Grant(count=want, level=level, rate=self.rate, lifetime=self.lifetime)

    def steer(self, state: BucketState, now: datetime, limit: int | None,
              reset_in: float | None) -> BucketState | None:
        return None

    def give_back(self, state: BucketState, now: datetime, count: int) -> BucketState | None:
        return None  # reserved tokens become valid one by one; QuickBooks' are not handed back


@dataclass(frozen=True)
class WindowPolicy:
    """The service's own windows: ``capacity − reserve`` requests until the reported reset.

    Before the first response of a window tells its end, the window is taken to end ``period``
    seconds after it opened; the service's window opens with its first request, later than
    that, and the first answer moves the end out to the service's.
    """

    limit: int = 50
    period: float = 60.0
    reserve: int = 1
    lifetime: float = 10.0
    block: int = 10
    slack: float = RESET_SLACK_SECONDS
    resolution: float = RESET_RESOLUTION_SECONDS
    margin: float = MARGIN_SECONDS

    def compressed(self, unit_seconds: float) -> WindowPolicy:
        """This policy with every duration scaled so that a minute lasts ``unit_seconds``; the
        tokens' lifetime not below :data:`MIN_LIFETIME_SECONDS` (the process's own pace; here
        it bounds no count: the deadline keeps tokens in their window)."""
        if unit_seconds == MINUTE:
            return self
        f = unit_seconds / MINUTE
        lifetime = max(self.lifetime * f, min(self.lifetime, MIN_LIFETIME_SECONDS))
        return replace(self, period=self.period * f, lifetime=lifetime,
                       slack=self.slack * f, resolution=self.resolution * f,
                       margin=self.margin * f)

    def fresh(self, now: datetime, capacity: int | None = None) -> BucketState:
        capacity = capacity or self.limit
        return BucketState(capacity=capacity, tokens=float(capacity - self.reserve),
                           updated_at=now, window_ends_at=now + timedelta(seconds=self.period))

    def take(self, state: BucketState, now: datetime, want: int
             ) -> tuple[BucketState, Grant]:
        if state.window_ends_at is None or state.window_ends_at <= now:
            state = self.fresh(now, state.capacity)
        assert state.window_ends_at is not None
        left = (state.window_ends_at - now).total_seconds()
        # The reported reset is whole seconds (rounded up): the window may really end up to a
        # second before it, and a token sent after the real end would count in the next one.
        deadline = left - self.resolution - self.margin
        count = max(0, min(want, int(state.tokens)))
        if count == 0 or deadline < self.resolution / 10:
            # Spent, or in the window's last moments, where a token would expire before it
            # could be sent (0.1 s left for it at Clio's pace): none until the reset. Granting
            # them anyway had a process take block after expired block, a transaction each,
            # until the window ended.
            return state, Grant(count=0, retry_in=left)
        after = replace(state, tokens=state.tokens - count, updated_at=now)
        return after, Grant(count=count, lifetime=self.lifetime, deadline=deadline)

    def give_back(self, state: BucketState, now: datetime, count: int) -> BucketState | None:
        # Only into the window the tokens came from: a window that ended is fresh next time.
        if count <= 0 or state.window_ends_at is None or state.window_ends_at <= now:
            return None
        tokens = min(float(state.capacity - self.reserve), state.tokens + count)
        return replace(state, tokens=tokens, updated_at=now) if tokens > state.tokens else None

    def steer(self, state: BucketState, now: datetime, limit: int | None,
              reset_in: float | None) -> BucketState | None:
        changed = state
        if limit is not None and limit > 0 and limit != state.capacity:
            # Tokens already granted this window stay granted; the rest follow the new limit.
            changed = replace(changed, capacity=limit,
                              tokens=max(0.0, changed.tokens + limit - state.capacity))
        if reset_in is not None and changed.window_ends_at is not None \
                and changed.window_ends_at > now:
            # A reset further off than a window is a clock out of step, not a longer window.
            reset_at = now + timedelta(seconds=min(reset_in, self.period + self.slack))
            if reset_at > changed.window_ends_at:  # even by a little: ours must not end first
                changed = replace(changed, window_ends_at=reset_at)
        return None if changed == state else replace(changed, updated_at=now)


QBO_POLICY = SlidingPolicy(limit=500)
CLIO_POLICY = WindowPolicy(limit=50)


class BucketStore(Protocol):
    def take(self, key: str, policy: Policy, want: int) -> Grant: ...

    def steer(self, key: str, policy: Policy, limit: int | None,
              reset_in: float | None) -> None: ...

    def give_back(self, key: str, policy: Policy, count: int) -> None: ...


class LocalBuckets:
    """Buckets in this process's memory (SQLite: one process uses the database)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._states: dict[str, BucketState] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def take(self, key: str, policy: Policy, want: int) -> Grant:
        with self._lock:
            now = self._now()
            state = self._states.get(key) or policy.fresh(now)
            self._states[key], grant = policy.take(state, now, want)
            return grant

    def steer(self, key: str, policy: Policy, limit: int | None,
              reset_in: float | None) -> None:
        with self._lock:
            now = self._now()
            state = self._states.get(key) or policy.fresh(now, limit)
            changed = policy.steer(state, now, limit, reset_in)
            if changed is not None:
                self._states[key] = changed

    def give_back(self, key: str, policy: Policy, count: int) -> None:
        with self._lock:
            state = self._states.get(key)
            changed = None if state is None else policy.give_back(state, self._now(), count)
            if changed is not None:
                self._states[key] = changed


_SELECT = text(
    "SELECT capacity, tokens, updated_at, window_ends_at, clock_timestamp() AS now "
    "FROM rate_buckets WHERE firm_id = :firm_id AND key = :key FOR UPDATE")
_INSERT = text(
    "INSERT INTO rate_buckets (firm_id, key, capacity, tokens, updated_at, window_ends_at) "
    "VALUES (:firm_id, :key, :capacity, :tokens, :updated_at, :window_ends_at) "
    "ON CONFLICT (firm_id, key) DO NOTHING")
_UPDATE = text(
    "UPDATE rate_buckets SET capacity = :capacity, tokens = :tokens, updated_at = :updated_at, "
    "window_ends_at = :window_ends_at WHERE firm_id = :firm_id AND key = :key")
_NOW = text("SELECT clock_timestamp()")


class PostgresBuckets:
    """Buckets in ``rate_buckets``, shared by every process on the database.

    One grant is one transaction of two statements (the row locked, then written); the first
    grant of a key in a process may add the row first.
    """

    def __init__(self, engine: Engine, firm_id: int) -> None:
        self.engine = engine
        self.firm_id = firm_id

    def _locked(self, conn: Any, key: str, policy: Policy,
                capacity: int | None = None) -> tuple[BucketState, datetime]:
        params = {"firm_id": self.firm_id, "key": key}
        row = conn.execute(_SELECT, params).one_or_none()
        if row is None:
            now = _aware(conn.execute(_NOW).scalar_one())
            conn.execute(_INSERT, {**params, **_columns(policy.fresh(now, capacity))})
            row = conn.execute(_SELECT, params).one()
        state = BucketState(capacity=row.capacity, tokens=row.tokens,
                            updated_at=_aware(row.updated_at),
                            window_ends_at=_aware(row.window_ends_at)
                            if row.window_ends_at is not None else None)
        return state, _aware(row.now)

    def take(self, key: str, policy: Policy, want: int) -> Grant:
        with self.engine.begin() as conn:
            state, now = self._locked(conn, key, policy)
            after, grant = policy.take(state, now, want)
            conn.execute(_UPDATE, {"firm_id": self.firm_id, "key": key, **_columns(after)})
        return grant

    def steer(self, key: str, policy: Policy, limit: int | None,
              reset_in: float | None) -> None:
        with self.engine.begin() as conn:
            state, now = self._locked(conn, key, policy, limit)
            changed = policy.steer(state, now, limit, reset_in)
            if changed is not None:
                conn.execute(_UPDATE, {"firm_id": self.firm_id, "key": key,
                                       **_columns(changed)})

    def give_back(self, key: str, policy: Policy, count: int) -> None:
        with self.engine.begin() as conn:
            state, now = self._locked(conn, key, policy)
            changed = policy.give_back(state, now, count)
            if changed is not None:
                conn.execute(_UPDATE, {"firm_id": self.firm_id, "key": key,
                                       **_columns(changed)})


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _columns(state: BucketState) -> dict[str, Any]:
    return {"capacity": state.capacity, "tokens": state.tokens,
            "updated_at": state.updated_at, "window_ends_at": state.window_ends_at}


@dataclass
class _Block:
    grant: Grant
    start: float  # monotonic time the grant was read
    next: int = 0
    wasted: int = 0


class SharedPacer:
    """A :class:`~hardcost.sync.http.Pacer` that spends tokens of a shared bucket.

    One instance per key and process (see :func:`pacer_for`), shared by every client of that
    realm or connection in the process. ``concurrent`` limits requests in flight from this
    process; ``steer_by_headers`` makes Clio's rate-limit headers move the bucket and, through a
    :class:`HeaderPacer`, wait for the reset when a window is nearly spent.
    """

    def __init__(self, store: BucketStore, key: str, policy: Policy, *,
                 concurrent: int | None = None, steer_by_headers: bool = False,
                 max_wait: float = MAX_WAIT_SECONDS, first_block: int = 2,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.store = store
        self.key = key
        self.policy = policy
        self.max_wait = max_wait
        self.grants = 0  # blocks asked of the store (statements ≈ 2 × grants)
        self.block_size = max(1, min(first_block, policy.block))
        self._slots = threading.BoundedSemaphore(concurrent) if concurrent else None
        self._headers = HeaderPacer(max_wait=max_wait, sleep=sleep, clock=wall_clock) \
            if steer_by_headers else None
        self._block: _Block | None = None
        self._lock = threading.Lock()
        self._fetch = threading.Lock()
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._known_limit: int | None = None
        self._known_reset: float | None = None
        self._reset_step = float(getattr(policy, "resolution", RESET_RESOLUTION_SECONDS))
        self.given_back = 0  # unused tokens returned to the bucket (see give_back)
        # What became of the tokens, and where the time went (benchmarks read :meth:`stats`).
        self.granted = 0  # tokens granted by the store
        self.empty_grants = 0  # grants of none (the window spent): a wait for the next
        self.sent = 0  # tokens a request went out on
        self.expired = 0  # tokens that expired here unsent
        self.store_seconds = 0.0  # in the store's transactions (taking blocks)
        self.window_wait_seconds = 0.0  # asleep for the next window (grants of none)
        self.ready_wait_seconds = 0.0  # asleep until a granted token became valid

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._slots if self._slots is not None else nullcontext():
            with self._headers.slot() if self._headers is not None else nullcontext():
                self._acquire()
            yield

    def observe(self, response: requests.Response) -> None:
        if self._headers is None:
            return
        self._headers.observe(response)
        limit = _int(response.headers.get("X-RateLimit-Limit"))
        reset = _float(response.headers.get("X-RateLimit-Reset"))
        with self._lock:
            # Write only what moves the bucket: a new limit, or a later window end.
            new_limit = limit if limit is not None and limit != self._known_limit else None
            new_reset = reset if reset is not None and (
                self._known_reset is None or reset > self._known_reset + self._reset_step
            ) else None
            if new_limit is None and new_reset is None:
                return
            if new_limit is not None:
                self._known_limit = new_limit
            if new_reset is not None:
                self._known_reset = new_reset
        reset_in = None if new_reset is None else max(0.0, new_reset - self._wall_clock())
        self.store.steer(self.key, self.policy, new_limit, reset_in)

    def give_back(self, outlasting: float = 0.0) -> int:
        """Return the current block's unsent tokens to the shared bucket, so another process
        (or this one's next run) spends them in this window instead of their expiring here:
        when a run ends, or before a wait of ``outlasting`` seconds that they would not
        survive. Only tokens of a window that has not ended go back; returns how many."""
        with self._fetch, self._lock:
            block = self._block
            if block is None or block.next >= block.grant.count:
                return 0
            now = self._clock()
            deadline = block.grant.deadline
            if deadline is None or block.start + deadline <= now:
                return 0  # no window end known to be still ahead (or QuickBooks' reservations)
            left = block.start + deadline - now
            if outlasting and outlasting < left:
                return 0  # they outlive the wait: keep them
            count = block.grant.count - block.next
            block.next = block.grant.count  # none of them is sent from here
            self.given_back += count
        self.store.give_back(self.key, self.policy, count)
        return count

    def stats(self) -> dict[str, float]:
        """The counters above, and the header pacer's waits (benchmarks, debugging)."""
        with self._lock:
            unsent = 0 if self._block is None else \
                self._block.grant.count - self._block.next
            return {"grants": self.grants, "empty_grants": self.empty_grants,
                    "granted": self.granted, "sent": self.sent, "expired": self.expired,
                    "given_back": self.given_back, "unsent": unsent,
                    "block_size": self.block_size,
                    "store_s": self.store_seconds,
                    "window_wait_s": self.window_wait_seconds,
                    "ready_wait_s": self.ready_wait_seconds,
                    "header_wait_s": self._headers.waited if self._headers else 0.0,
                    "header_waits": self._headers.waits if self._headers else 0}

    def _claim_local(self, now: float) -> float | None:
        """Seconds to wait for this caller's token of the current block, or None if none."""
        block = self._block
        if block is None:
            return None
        while block.next < block.grant.count:
            index = block.next
            block.next += 1
            if block.start + block.grant.expires(index) > now:
                self.sent += 1
                return max(0.0, block.start + block.grant.ready(index) - now)
            block.wasted += 1
            self.expired += 1
        return None

    def _acquire(self) -> None:
        while True:
            with self._lock:
                wait = self._claim_local(self._clock())
            if wait is not None:
                if wait > 0:
                    self._sleep(wait)
                    self.ready_wait_seconds += wait
                return
            with self._fetch:
                with self._lock:
                    if self._block is not None and self._block.next < self._block.grant.count:
                        continue  # another thread fetched a block meanwhile
                    self._resize()
                    want = self.block_size
                asked = self._clock()
                grant = self.store.take(self.key, self.policy, want)
                self.grants += 1
                with self._lock:
                    self._block = _Block(grant, self._clock())
                    self.store_seconds += self._block.start - asked
                    self.granted += grant.count
                if grant.count == 0:
                    self.empty_grants += 1
                    wait = min(max(grant.retry_in, 0.05), self.max_wait)
                    log.info("shared rate limit spent; waiting %.1fs for the next window", wait)
                    self._sleep(wait)
                    self.window_wait_seconds += wait

    def _resize(self) -> None:
        # Larger blocks while they are used up (fewer statements), smaller when tokens expire.
        block = self._block
        if block is None or block.grant.count == 0:
            return
        if block.wasted:
            self.block_size = max(1, self.block_size // 2)
        else:
            self.block_size = min(self._largest_block(), self.block_size * 2)

    def _largest_block(self) -> int:
        """The policy's block, or a fifth of the budget Clio reports when that is larger (its
        limit is higher off-peak): the same share of the window, fewer statements."""
        limit = self._known_limit
        if limit is None:
            return self.policy.block
        return max(self.policy.block, min(MAX_BLOCK, limit // BLOCK_SHARE))


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class Pacing:
    """Builds the pacers of one firm's clients: shared through PostgreSQL, or in-process.

    On PostgreSQL every process paces a realm or connection against one ``rate_buckets`` row;
    on SQLite (one process) the pacers are the in-process ones of ``sync/http.py``.
    """

    def __init__(self, engine: Engine | None, firm_id: int,
                 unit_seconds: float = MINUTE) -> None:
        self.firm_id = firm_id
        self.unit_seconds = unit_seconds  # HARDCOST_PACING_UNIT_SECONDS: a compressed minute
        shared = engine is not None and engine.dialect.name == "postgresql"
        self.store: BucketStore | None = PostgresBuckets(engine, firm_id) \
            if shared and engine is not None else None

    def qbo(self, realm_id: str) -> Pacer:
        from hardcost.sync.http import rate_pacer_for

        key = f"qbo:{realm_id}"
        if self.store is None:
            return rate_pacer_for(key)
        return pacer_for(self.store, self.firm_id, key, QBO_POLICY.compressed(self.unit_seconds),
                         concurrent=10, first_block=10, max_wait=self._max_wait)

    def clio(self, connection_id: int | None) -> Pacer:
        if self.store is None or connection_id is None:
            return HeaderPacer()
        return pacer_for(self.store, self.firm_id, f"clio:{connection_id}",
                         CLIO_POLICY.compressed(self.unit_seconds), steer_by_headers=True,
                         max_wait=self._max_wait)

    @property
    def _max_wait(self) -> float:
        return MAX_WAIT_SECONDS * self.unit_seconds / MINUTE


_pacers: dict[tuple[object, int, str], SharedPacer] = {}
_pacers_lock = threading.Lock()


def pacer_for(store: BucketStore, firm_id: int, key: str, policy: Policy,
              **options: Any) -> SharedPacer:
    """The process's one pacer for this bucket (its local block is shared by its clients)."""
    owner: object = store.engine if isinstance(store, PostgresBuckets) else store
    with _pacers_lock:
        pacer = _pacers.get((owner, firm_id, key))
        if pacer is None:
            pacer = _pacers[(owner, firm_id, key)] = SharedPacer(store, key, policy, **options)
        return pacer

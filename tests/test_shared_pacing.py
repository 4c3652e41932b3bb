"""Pacing shared across replicas: several processes' calls to one realm or token stay under the
service's limit together, each caller makes progress, and one firm's bucket never slows another.

Each "process" is a thread with its own SQLAlchemy engine and its own pacer, talking real HTTP to
the sandbox; limits and minutes are compressed so a test takes seconds. Nothing here measures a
duration: calls are counted per window from the sandboxes' own call logs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from sqlalchemy import event, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from hardcost.sandbox.world import SandboxWorld
from hardcost.sync.clio import ClioClient
from hardcost.sync.engine import make_engine
from hardcost.sync.firms import build_importer
from hardcost.sync.http import HeaderPacer, RatePacer, RetryPolicy, StaticTokens
from hardcost.sync.pacing import (
    LocalBuckets,
    PostgresBuckets,
    SharedPacer,
    SlidingPolicy,
    WindowPolicy,
)
from hardcost.sync.qbo import QboClient
from hardcost.sync.store import Connection, RateBucket
from tests.firmkit import Firm, make_firm

postgres = pytest.mark.postgres
NO_RETRY = RetryPolicy(attempts=1)  # a 429 surfaces instead of being absorbed


def _hammer(callers: list[Callable[[], None]], calls_each: int) -> list[int]:
    """Run every caller ``calls_each`` times on its own thread; returns each one's successes."""
    done = [0] * len(callers)
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            for _ in range(calls_each):
                callers[index]()
                done[index] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(callers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == [], errors
    return done


def _most_in_any_period(times: list[float], period: float) -> int:
    times = sorted(times)
    most, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= period:
            start += 1
        most = max(most, end - start + 1)
    return most


@pytest.fixture
def engines(database_url: str) -> Iterator[list[Engine]]:
    """Three engines on one database: three replicas' connection pools."""
    made = [make_engine(database_url) for _ in range(3)]
    yield made
    for engine in made:
        engine.dispose()


def _clio_connection(firm: Firm) -> int:
    with firm.sessions() as session:
        found = session.scalar(select(Connection.id).where(
            Connection.firm_id == firm.id, Connection.provider == "clio"))
    assert found is not None
    return found


# -- QuickBooks: a sliding limit per realm -------------------------------------------------------

QBO_SMALL = SlidingPolicy(limit=20, period=2.0, burst=4, lifetime=0.5, block=5, margin=1)


def _qbo_callers(world: SandboxWorld, realm_id: str, pacers: list[Any]) -> list[Callable[[], None]]:
    token = world.qbo.issue_tokens(realm_id)["access_token"]
    clients = [QboClient(base_url=world.qbo_server.url, realm_id=realm_id,
                         tokens=StaticTokens(token), retry=NO_RETRY, pacer=pacer)
               for pacer in pacers]
    return [client.preferences for client in clients]


@postgres
def test_replicas_share_one_realm_budget_and_each_makes_progress(
        firm: Firm, engines: list[Engine]) -> None:
    pacers = [SharedPacer(PostgresBuckets(engine, firm.id), f"qbo:{firm.qbo.realm_id}",
                          QBO_SMALL, concurrent=10) for engine in engines]
    callers = _qbo_callers(firm.world, firm.qbo.realm_id, pacers)
    firm.world.qbo.calls.clear()

    done = _hammer(callers, calls_each=14)

    assert done == [14, 14, 14]
    calls = firm.world.qbo.calls.all()
    assert len(calls) == 42 and all(call.status == 200 for call in calls)
    # 42 calls need at least two compressed minutes; none of them held more than the limit.
    assert _most_in_any_period([call.at for call in calls], QBO_SMALL.period) <= QBO_SMALL.limit


def test_separate_buckets_per_process_would_exceed_the_realm_limit(firm: Firm) -> None:
    """What the shared bucket prevents, and proof the count above can fail: three processes
    each pacing alone (today's per-process pacing) send more than the limit in some period."""
    pacers = [SharedPacer(LocalBuckets(), "qbo:alone", QBO_SMALL, concurrent=10)
              for _ in range(3)]
    callers = _qbo_callers(firm.world, firm.qbo.realm_id, pacers)
    firm.world.qbo.calls.clear()

    _hammer(callers, calls_each=14)

    times = [call.at for call in firm.world.qbo.calls.all()]
    assert _most_in_any_period(times, QBO_SMALL.period) > QBO_SMALL.limit


# -- Clio: the windows its headers report, per token ---------------------------------------------

CLIO_SMALL = WindowPolicy(limit=6, period=3.0, lifetime=1.0, block=4)


@postgres
def test_replicas_share_one_clio_token_without_a_429(firm: Firm, engines: list[Engine]) -> None:
    world = firm.world
    world.clio.rate_limit_per_minute = CLIO_SMALL.limit
    world.clio.rate_window_seconds = CLIO_SMALL.period
    token = world.clio.issue_tokens(firm.clio)["access_token"]
    key = f"clio:{_clio_connection(firm)}"
    clients = [ClioClient(host=world.clio_server.url, tokens=StaticTokens(token),
                          retry=NO_RETRY, pacer=SharedPacer(PostgresBuckets(engine, firm.id),
                                                            key, CLIO_SMALL,
                                                            steer_by_headers=True))
               for engine in engines]
    world.clio.calls.clear()

    done = _hammer([client.users for client in clients], calls_each=6)

    assert done == [6, 6, 6]
    statuses = [call.status for call in world.clio.calls.all()]
    assert len(statuses) == 18 and statuses.count(429) == 0


@postgres
def test_clio_bucket_capacity_follows_the_rate_limit_header(
        firm: Firm, db_engine: Engine) -> None:
    world = firm.world
    world.clio.rate_limit_per_minute = 7
    token = world.clio.issue_tokens(firm.clio)["access_token"]
    key = f"clio:{_clio_connection(firm)}"
    pacer = SharedPacer(PostgresBuckets(db_engine, firm.id), key, WindowPolicy(limit=50),
                        steer_by_headers=True)
    client = ClioClient(host=world.clio_server.url, tokens=StaticTokens(token), pacer=pacer)

    client.users()
    with db_engine.connect() as conn:
        first = conn.execute(select(RateBucket.capacity, RateBucket.tokens).where(
            RateBucket.firm_id == firm.id, RateBucket.key == key)).one()
    world.clio.rate_limit_per_minute = 9  # off-peak: Clio raises the limit
    client.users()
    with db_engine.connect() as conn:
        second = conn.execute(select(RateBucket.capacity).where(
            RateBucket.firm_id == firm.id, RateBucket.key == key)).scalar_one()

    # 50 assumed until Clio said 7: the window keeps 7 − 1 in reserve minus what was granted.
    assert first.capacity == 7 and first.tokens <= 6 - 1
    assert second == 9


# -- Isolation and cost ---------------------------------------------------------------------------

@postgres
def test_a_spent_bucket_of_one_firm_never_slows_another(firm: Firm, db_engine: Engine) -> None:
    other = make_firm(firm.world, firm.sessions)
    store_a, store_b = PostgresBuckets(db_engine, firm.id), PostgresBuckets(db_engine, other.id)
    key = "qbo:same-key-in-both-firms"

    store_a.take(key, QBO_SMALL, 100)  # firm A queues far ahead
    again_a = store_a.take(key, QBO_SMALL, 1)
    first_b = store_b.take(key, QBO_SMALL, 1)

    assert again_a.ready(0) > 0  # A waits for its own bucket …
    assert first_b.count == 1 and first_b.ready(0) == 0  # … B's is untouched
    with db_engine.connect() as conn:
        rows = conn.execute(text("SELECT firm_id FROM rate_buckets WHERE key = :key "
                                 "ORDER BY firm_id"), {"key": key}).scalars().all()
    assert rows == sorted([firm.id, other.id])


@postgres
def test_a_plentiful_budget_costs_at_most_one_statement_per_ten_calls(
        firm: Firm, db_engine: Engine) -> None:
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    plentiful = SlidingPolicy(limit=100_000)
    pacer = SharedPacer(PostgresBuckets(db_engine, firm.id), f"qbo:{firm.qbo.realm_id}",
                        plentiful, concurrent=10, first_block=10)
    (call,) = _qbo_callers(firm.world, firm.qbo.realm_id, [pacer])
    event.listen(db_engine, "before_cursor_execute", count)
    try:
        for _ in range(200):
            call()
    finally:
        event.remove(db_engine, "before_cursor_execute", count)

    assert pacer.grants <= 8
    assert len(statements) / 200 <= 0.1, statements


# -- Wiring ---------------------------------------------------------------------------------------

def test_firm_clients_get_shared_pacers_on_postgres_and_local_ones_on_sqlite(
        firm: Firm, sessions: sessionmaker[Any], db_engine: Engine) -> None:
    importer = build_importer(sessions, firm.id, firm.world.settings())

    if db_engine.dialect.name == "postgresql":
        assert isinstance(importer.qbo.api.pacer, SharedPacer)
        assert isinstance(importer.clio.api.pacer, SharedPacer)
        assert importer.clio.api.pacer.key == f"clio:{_clio_connection(firm)}"
        assert importer.qbo.api.pacer.key == f"qbo:{firm.qbo.realm_id}"
    else:
        assert isinstance(importer.qbo.api.pacer, RatePacer)
        assert isinstance(importer.clio.api.pacer, HeaderPacer)


# -- The bucket arithmetic, on a simulated clock ---------------------------------------------------

@pytest.mark.parametrize("policy", [QBO_SMALL, CLIO_SMALL], ids=["sliding", "window"])
def test_three_pacers_on_one_bucket_never_exceed_the_limit_in_any_period(policy: Any) -> None:
    now = [1_000.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    store = LocalBuckets(clock=lambda: now[0])
    pacers = [SharedPacer(store, "k", policy, clock=lambda: now[0], wall_clock=lambda: now[0],
                          sleep=sleep) for _ in range(3)]
    sent: list[float] = []
    for turn in range(300):
        with pacers[turn % 3].slot():
            sent.append(now[0])
        now[0] += 0.01 * (turn % 7)  # callers of uneven speed

    if isinstance(policy, SlidingPolicy):  # however the service counts its minute
        most = _most_in_any_period(sent, policy.period)
        assert policy.limit // 2 <= most <= policy.limit - policy.margin
    else:  # Clio's windows, which open with the first request after the last one ended
        most = _most_in_server_windows(sent, policy.period)
        assert policy.limit // 2 <= most <= policy.limit - policy.reserve


def _most_in_server_windows(times: list[float], period: float) -> int:
    most, ends, used = 0, float("-inf"), 0
    for at in sorted(round(t, 6) for t in times):  # the pacer reads the clock in microseconds
        if at >= ends:
            ends, used = at + period, 0
        used += 1
        most = max(most, used)
    return most


# -- A compressed pacing clock (HARDCOST_PACING_UNIT_SECONDS) -------------------------------------

def test_pacing_at_the_default_unit_is_production_pacing() -> None:
    """Unchanged at the default: the policies are the very objects production uses."""
    from hardcost.sync.config import Settings
    from hardcost.sync.pacing import (
        CLIO_POLICY,
        MAX_WAIT_SECONDS,
        MIN_LIFETIME_SECONDS,
        QBO_POLICY,
        Pacing,
    )

    assert Settings().pacing_unit_seconds == 60.0
    assert CLIO_POLICY.compressed(60.0) is CLIO_POLICY and QBO_POLICY.compressed(60.0) is QBO_POLICY
    assert Pacing(None, 1).unit_seconds == 60.0 and Pacing(None, 1)._max_wait == MAX_WAIT_SECONDS
    fast = CLIO_POLICY.compressed(1.0)  # 60×: every duration a sixtieth, the budget the same
    assert (fast.period, fast.margin, fast.limit) == (1.0, CLIO_POLICY.margin / 60, 50)
    assert fast.lifetime == MIN_LIFETIME_SECONDS < CLIO_POLICY.lifetime  # the app's own pace
    assert QBO_POLICY.compressed(1.0).rate == pytest.approx(QBO_POLICY.rate * 60)


def test_on_a_compressed_clock_clio_tokens_outlive_the_replicas_own_work() -> None:
    """At 60× two replicas share Clio's 1 s window, each spending 40 ms of its own work per
    request (the database and HTTP, which compression does not shorten). Their blocks grow to
    10 tokens, 0.4 s of that work: none may expire before it is sent, or the window's budget
    runs out before the window does and the replicas wait for the next one."""
    from hardcost.sync.pacing import CLIO_POLICY

    now = [1_000.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    store = LocalBuckets(clock=lambda: now[0])
    policy = CLIO_POLICY.compressed(1.0)
    replicas = [SharedPacer(store, "clio:1", policy, clock=lambda: now[0],
                            wall_clock=lambda: now[0], sleep=sleep) for _ in range(2)]
    for turn in range(44):  # 0.88 s of work, 44 of the window's 49 requests
        with replicas[turn % 2].slot():
            pass
        now[0] += 0.02  # each replica's turn comes every 40 ms

    counts = [r.stats() for r in replicas]
    assert [c["sent"] for c in counts] == [22, 22]
    assert [c["expired"] for c in counts] == [0, 0]
    assert [c["empty_grants"] for c in counts] == [0, 0]
    assert [c["block_size"] for c in counts] == [10, 10]  # the blocks did grow


WINDOW = 0.5  # the sandbox Clio's window, and pacing's minute: 120× compressed
LIMIT = 5  # requests per window


@postgres
def test_two_replicas_importing_for_one_clio_account_on_a_compressed_window_get_no_429(
        firm: Firm, engines: list[Engine]) -> None:
    """Two replicas (engines, importers and pacers of their own) import one firm's purchases
    at once, half each, through the same Clio token; pacing's minute is the sandbox's window.
    The sandbox counts: no 429, and no window held more than the limit."""
    from hardcost.sync.engine import make_session_factory
    from hardcost.sync.store import Run

    world = firm.world
    world.clio.rate_limit_per_minute = LIMIT
    world.clio.rate_window_seconds = WINDOW
    halves: list[set[str]] = [set(), set()]
    for number in range(6):
        name = f"Client {number}"
        firm.client(name, [f"Matter {number}"])
        for amount in ("10.00", "20.00"):
            halves[number % 2].add(str(firm.expense((amount, name))["Id"]))
    settings = world.settings().model_copy(update={"pacing_unit_seconds": WINDOW})
    importers = [build_importer(make_session_factory(engine), firm.id, settings,
                                retry=RetryPolicy(attempts=3, backoff=0.01, max_wait=0.2),
                                sandbox_links=True) for engine in engines[:2]]
    world.clio.calls.clear()
    start = threading.Barrier(2)
    summaries: list[Any] = [None, None]

    def replica(index: int) -> None:
        start.wait()
        summaries[index] = importers[index].run(trigger="replica", purchase_ids=halves[index])

    _hammer([lambda: replica(0), lambda: replica(1)], calls_each=1)

    assert [s.imported for s in summaries] == [6, 6] and [s.error for s in summaries] == [None] * 2
    assert len(firm.entries()) == 12
    calls = [c for c in world.clio.calls.all() if "/api/v4/" in c.path]
    assert [c.status for c in calls].count(429) == 0
    assert _most_in_server_windows([c.at for c in calls], WINDOW) <= LIMIT
    assert len(calls) > 3 * LIMIT  # several windows' worth, shared by the two
    with firm.sessions() as session:  # the runs overlapped
        runs = session.scalars(select(Run).where(Run.firm_id == firm.id)).all()
    assert len(runs) == 2 and all(r.finished_at is not None for r in runs)
    a, b = runs
    assert a.started_at < b.finished_at and b.started_at < a.finished_at


# -- Unused Clio tokens go back to the bucket ------------------------------------------------------

GIVE_BACK = WindowPolicy(limit=6, period=30.0, lifetime=30.0, block=5)


def _no_wait(seconds: float) -> None:
    raise AssertionError(f"had to wait {seconds:.1f} s for the next window")


@pytest.mark.parametrize("store", ["local", "postgres"])
def test_a_block_left_unused_goes_back_for_another_engine_in_the_same_window(
        firm: Firm, engines: list[Engine], database_url: str, store: str) -> None:
    """A takes a whole window's budget (5 of 6, one kept in reserve), sends one request and
    stops: what it gives back lets B send the other four in the same window instead of
    waiting for the next (B's sleep fails the test)."""
    if store == "postgres" and not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only (HARDCOST_TEST_DATABASE_URL)")
    world = firm.world
    world.clio.rate_limit_per_minute = GIVE_BACK.limit
    world.clio.rate_window_seconds = GIVE_BACK.period
    token = world.clio.issue_tokens(firm.clio)["access_token"]
    key = f"clio:{_clio_connection(firm)}"
    local = LocalBuckets()
    stores = [local, local] if store == "local" else \
        [PostgresBuckets(engine, firm.id) for engine in engines[:2]]
    a, b = (SharedPacer(s, key, GIVE_BACK, steer_by_headers=True, first_block=5,
                        sleep=_no_wait) for s in stores)
    clients = [ClioClient(host=world.clio_server.url, tokens=StaticTokens(token),
                          retry=NO_RETRY, pacer=pacer) for pacer in (a, b)]
    world.clio.calls.clear()

    clients[0].users()
    clients[0].give_back()  # A's run ends with 4 tokens unsent
    for _ in range(4):
        clients[1].users()

    assert a.given_back == 4
    statuses = [call.status for call in world.clio.calls.all()]
    assert statuses == [200] * 5


@postgres
def test_a_run_that_ends_gives_its_unsent_clio_tokens_back(
        firm: Firm, db_engine: Engine) -> None:
    """After a run, the bucket holds the window's budget less only what was sent."""
    world = firm.world
    world.clio.rate_limit_per_minute = 50
    for number in range(3):
        firm.client(f"Client {number}", [f"Matter {number}"])
        firm.expense(("10.00", f"Client {number}"))

    summary = firm.run()

    pacer = firm.engine.clio.api.pacer
    assert isinstance(pacer, SharedPacer) and summary.imported == 3
    sent = sum(1 for c in world.clio.calls.all() if "/api/v4/" in c.path)
    assert pacer.given_back > 0  # the last block was not used up (else this proves nothing)
    with db_engine.connect() as conn:
        bucket = conn.execute(select(RateBucket.capacity, RateBucket.tokens).where(
            RateBucket.firm_id == firm.id, RateBucket.key == pacer.key)).one()
    assert bucket.capacity - 1 - bucket.tokens == sent


# -- A window's last moments, and a budget larger than peak's ------------------------------------

class _CountingStore(LocalBuckets):
    """LocalBuckets that fails a test asking it for more grants than it should, instead of
    letting a pacer that asks in a loop spin the test forever."""

    def __init__(self, clock: Callable[[], float], most: int) -> None:
        super().__init__(clock=clock)
        self.takes = 0
        self.most = most

    def take(self, key: str, policy: Any, want: int) -> Any:
        self.takes += 1
        if self.takes > self.most:
            raise AssertionError(f"more than {self.most} grants asked")
        return super().take(key, policy, want)


def test_in_a_windows_last_moments_no_tokens_are_granted_only_to_expire() -> None:
    """Tokens expire 1.5 s (compressed: 25 ms) before a Clio window ends, so none spills into
    the next. A grant in those last moments was all expired tokens, and the pacer asked again
    at once, a transaction each, until the window ended (a third of the grants of a 50,000
    purchase backfill on PostgreSQL). It is now "none until the reset", and one wait."""
    from hardcost.sync.pacing import CLIO_POLICY

    policy = replace(CLIO_POLICY, limit=100_000).compressed(1.0)  # 1 s windows, plentiful
    now = [1_000.0]
    state = policy.fresh(datetime.fromtimestamp(now[0], UTC))
    late = datetime.fromtimestamp(now[0] + 0.99, UTC)  # 10 ms before the window's end
    after, grant = policy.take(state, late, 10)
    assert grant.count == 0 and grant.retry_in == pytest.approx(0.01)
    assert after.tokens == state.tokens  # nothing taken from the bucket

    def sleep(seconds: float) -> None:
        now[0] += seconds

    store = _CountingStore(clock=lambda: now[0], most=400)
    pacer = SharedPacer(store, "clio:1", policy, clock=lambda: now[0],
                        wall_clock=lambda: now[0], sleep=sleep)
    for _ in range(3_000):  # a request every millisecond, for about three windows
        with pacer.slot():
            pass
        now[0] += 0.001
    stats = pacer.stats()
    assert stats["sent"] == 3_000
    assert stats["expired"] <= 3 * 10  # at most part of a block, a window
    assert stats["empty_grants"] <= 3  # one wait for each window's reset
    assert store.takes <= 3_000 / 10 + 20  # blocks of 10 (the policy's), a few cut short


def test_a_clio_block_is_a_fifth_of_the_budget_clio_reports_up_to_a_cap() -> None:
    """At peak (50 a window) a block is 10 tokens, as before; off-peak, when Clio reports a
    larger budget, a fifth of it, up to MAX_BLOCK: fewer grants for the same calls."""
    from hardcost.sync.pacing import CLIO_POLICY, MAX_BLOCK

    def blocks_after(limit: int) -> int:
        now = [1_000.0]

        def sleep(seconds: float) -> None:
            now[0] += seconds

        store = LocalBuckets(clock=lambda: now[0])
        pacer = SharedPacer(store, "clio:1", CLIO_POLICY, steer_by_headers=True,
                            clock=lambda: now[0], wall_clock=lambda: now[0], sleep=sleep)
        with pacer.slot():  # the first request, and Clio's answer to it
            pass
        response = requests.Response()
        response.status_code = 200
        response.headers["X-RateLimit-Limit"] = str(limit)
        response.headers["X-RateLimit-Remaining"] = str(limit - 1)
        response.headers["X-RateLimit-Reset"] = str(int(now[0]) + 60)
        pacer.observe(response)
        for _ in range(min(limit - 3, 400)):
            with pacer.slot():
                pass
            now[0] += 0.001
        return pacer.block_size

    assert blocks_after(50) == CLIO_POLICY.block == 10
    assert blocks_after(150) == 30
    assert blocks_after(100_000) == MAX_BLOCK

"""Slack ack benchmark: how fast the real Bolt app answers Slack's requests under load.

    python -m bench.slack_ack_bench [--requests 200] [--concurrency 20]
                                    [--socket-mode [--rounds 2]]
                                    [--out docs/slack-benchmarks.md] [--seed 7]

Sets up a firm on the sandboxes (QuickBooks, Clio and Slack over real HTTP on loopback) whose
one import left 20 expenses waiting for a matter choice and one failure alert, serves the
production WSGI stack (waitress → Bolt) on a loopback port, and sends requests signed exactly
as Slack signs them — slash commands, clicks on the prompts, options loads and App Home
events — ``--concurrency`` at a time. Each request's time runs from send until the HTTP
response, which is the ack: Slack waits at most 3 s for it, the target here is p99 ≤ 300 ms.
The same number of ``GET /healthz`` requests on the same server at the same concurrency is the
baseline the acks are compared to. Once the lazy work (what Bolt runs after the ack) has
finished, checks that every prompt was answered once and that Clio holds one entry per matter
chosen. Writes a Markdown report; always exits 0 unless the benchmark itself crashes —
benchmarks report, they don't assert.

``--socket-mode``: after the HTTP run, the same again over Socket Mode, in the same process and
the same bench run (so the two are compared under the same conditions on a noisy machine): a
fresh firm seeded alike, the same app built the same way but connected with the app-level token
through Bolt's ``SocketModeHandler`` (``bot.socket_mode.SocketModeLink``, at the production
ping interval) to the sandbox Slack's WebSocket (``sandbox/slack_socket.py``), and the same mix
at the same concurrency sent as envelopes on that one connection. An envelope's time is the
sandbox's own record (:class:`~hardcost.sandbox.slack_socket.Ack`): from just before the
envelope is written to the socket until its ack has been read. The report gains a section
comparing both transports (p50/p95/p99/max, the ratio of the p99s, the p99 at this
concurrency); a run without the flag keeps the section an earlier run wrote. ``--rounds``
repeats both runs, alternating which goes first, and pools each transport's rounds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shlex
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from random import Random
from typing import Any, ParamSpec, TypeAlias, TypeVar

import requests
from slack_bolt import App
from slack_bolt.lazy_listener.thread_runner import ThreadLazyListenerRunner
from slack_bolt.request import BoltRequest
from slack_bolt.response import BoltResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bench.sections import carry_over
from hardcost.bot.socket_mode import PING_INTERVAL
from hardcost.bot.ui.content import (
    ACTION_CHOOSE_MATTER,
    ACTION_NOT_CLIENT_COST,
    ACTION_RETRY_FAILURE,
    ACTION_SEARCH_MATTER,
    PROMPT_BLOCK_PREFIX,
)
from hardcost.sandbox import slack_rig
from hardcost.sandbox.clio import ClioAccount
from hardcost.sandbox.qbo import QboCompany, account_line
from hardcost.sandbox.server import serve_in_thread
from hardcost.sandbox.slack import SlackSandbox
from hardcost.sandbox.slack_rig import SlackRig, SocketAck, make_rig, wait_for
from hardcost.sandbox.world import SandboxWorld
from hardcost.sync.db import upgrade
from hardcost.sync.engine import make_engine, make_session_factory
from hardcost.sync.store import Run, SlackOutbox, WaitingExpense

START_DATE = date(2026, 1, 1)
SEED = 7
RATE_LIMIT = 1_000_000
WAITING = 20  # expenses left waiting by the import: the prompts people click
P99_TARGET_MS = 300.0
SLACK_LIMIT_MS = 3000.0
DRAIN_TIMEOUT_S = 300.0
MARKER = re.compile(r"\[qbo [^\]]+\]")
ANSWERED = ("Already answered", "is answering this one right now", "already in Clio")

MULTI_CLIENT = "Acme Holdings LLC"
MULTI_MATTERS = ["Lease renewal", "Employment claim", "Contract litigation"]
SINGLE_CLIENTS = [("Jane Smith", "Estate of Smith"), ("Harbor Logistics Inc.", "v. Beta Logistics"),
                  ("Robert Brown", "Real estate closing")]
STAFF = ["Priya Singh", "Kenji Nakamura", "Grace Martin", "Oscar Rossi"]
DESCRIPTIONS = ["Filing fee", "Certified copies", "Same-day courier", "Process service",
                "Deposition transcript", "Expert report", "Court reporter appearance"]
SEARCHES = ["", "lease", "emp", "Contract lit", "claim", "zzz"]

# The mix: kind → weight. A team answering a fresh batch of prompts, with people opening
# App Home and asking /hardcost for status and the pending list at the same time.
MIX: list[tuple[str, int]] = [
    ("click: choose a matter", 30),
    ("click: not a client cost", 8),
    ("click: retry a failure", 4),
    ("options: search matters", 12),
    ("event: app_home_opened", 14),
    ("/hardcost status", 10),
    ("/hardcost pending", 8),
    ("/hardcost help", 8),
    ("/hardcost run", 6),
]
CLICK_KINDS = ("click: choose a matter", "click: not a client cost")
BASELINE = "GET /healthz (baseline)"
SOCKET_SECTION = "## Socket Mode"
"""The heading (its start) of the section ``--socket-mode`` writes; kept by runs without it."""
RATIO_TARGET = 1.2  # Socket Mode's ack p99 over HTTP's, in the same run
TRANSPORT_NAMES = {"http": "HTTP", "socket": "Socket Mode"}


# -- the firm and the rig ---------------------------------------------------------------------

@dataclass
class BenchFirm:
    """What ``make_rig`` needs (``world``, ``sessions``, ``id``) and what the seed uses."""

    world: SandboxWorld
    sessions: sessionmaker[Session]
    id: int
    qbo: QboCompany
    clio: ClioAccount
    import_account: str
    customers: dict[str, str] = field(default_factory=dict)  # name → QBO id


def make_bench_firm(world: SandboxWorld, sessions: sessionmaker[Session]) -> BenchFirm:
    books = world.open_books("Benchmark Law LLP")
    qbo, clio = books.company, books.account
    firm_id = world.connect_firm(sessions, qbo, clio, name="Benchmark Law LLP",
                                 start_date=START_DATE,
                                 import_account_ids=[books.import_account_id],
                                 expense_category_id=books.category_id)
    return BenchFirm(world, sessions, firm_id, qbo, clio, books.import_account_id)


def _client(firm: BenchFirm, name: str, matters: list[str]) -> None:
    firm.customers[name] = firm.qbo.add_customer(name)["Id"]
    contact = firm.clio.add_contact(name)
    for description in matters:
        firm.clio.add_matter(contact["id"], description=description)


def _purchase(firm: BenchFirm, rng: Random, client: str, doc_number: str) -> dict[str, Any]:
    cents = rng.randint(1_500, 95_000)
    line = account_line(f"{cents // 100}.{cents % 100:02d}", firm.import_account,
                        customer_id=firm.customers[client],
                        description=rng.choice(DESCRIPTIONS))
    txn_date = date(2026, 2, rng.randint(1, 27)).isoformat()
    return firm.qbo.add_purchase(payment_type="Check", txn_date=txn_date,
                                 doc_number=doc_number, lines=[line])


def seed(firm: BenchFirm, rng: Random) -> None:
    """One client with three matters (its expenses wait), three with one (imported straight
    away), and one purchase QuickBooks holds with an amount the import cannot read."""
    _client(firm, MULTI_CLIENT, MULTI_MATTERS)
    for name, matter in SINGLE_CLIENTS:
        _client(firm, name, [matter])
    number = 3000
    for _ in range(WAITING):
        number += 1
        _purchase(firm, rng, MULTI_CLIENT, str(number))
    for name, _matter in SINGLE_CLIENTS:
        for _ in range(2):
            number += 1
            _purchase(firm, rng, name, str(number))
    broken = _purchase(firm, rng, SINGLE_CLIENTS[0][0], str(number + 1))
    broken["Line"][0]["Amount"] = "ten"
    firm.qbo.put_purchase_raw(broken)


def _elements(message: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for block in message.get("blocks") or []:
        if isinstance(block.get("accessory"), dict):
            found.append(block["accessory"])
        found += [e for e in block.get("elements") or [] if isinstance(e, dict)]
    return [e for e in found if e.get("action_id")]


@dataclass
class Prompt:
    message: dict[str, Any]
    waiting_id: int
    matter_values: list[str]  # "<waiting id>:<matter id>"
    not_client_cost: str


def _prompt(message: dict[str, Any]) -> Prompt:
    elements = _elements(message)
    matters = [str(e["value"]) for e in elements if e["action_id"] == ACTION_CHOOSE_MATTER]
    ncc = next(str(e["value"]) for e in elements if e["action_id"] == ACTION_NOT_CLIENT_COST)
    return Prompt(message, int(ncc), matters, ncc)


@dataclass
class Scene:
    rig: SlackRig
    firm: BenchFirm
    prompts: list[Prompt]
    alert: dict[str, Any]
    retry_value: str
    staff: list[str]
    imported: int  # Clio entries the first import created
    setup_s: float


@contextmanager
def _production_ping_interval() -> Iterator[None]:
    """The rig pings every 0.5 s so that tests notice a dropped socket quickly; the bench
    connects as ``hardcost serve`` does, at Bolt's default interval."""
    saved = slack_rig.SOCKET_PING_INTERVAL
    slack_rig.SOCKET_PING_INTERVAL = PING_INTERVAL
    try:
        yield
    finally:
        slack_rig.SOCKET_PING_INTERVAL = saved


@contextmanager
def scene(rng: Random, transport: str = "http") -> Iterator[Scene]:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hardcost-slack-bench-") as tmp:
        db = make_engine(f"sqlite:///{Path(tmp) / 'bench.sqlite'}")
        try:
            upgrade(db)
            sessions = make_session_factory(db)
            with SandboxWorld.start() as world:
                world.clio.rate_limit_per_minute = RATE_LIMIT
                firm = make_bench_firm(world, sessions)
                seed(firm, rng)
                slack = SlackSandbox(clock=world.clock)
                slack_server = serve_in_thread(slack)
                slack.base_url = slack_server.url
                with _production_ping_interval():
                    rig = make_rig(firm, slack, slack_server, transport)
                try:
                    staff = [rig.staff, *(rig.ws.add_user(n)["id"] for n in STAFF)]
                    progress("importing: /hardcost run …")
                    response = rig.command("run")
                    if response.status_code != 200:
                        raise RuntimeError(f"/hardcost run answered {response.status_code}")
                    messages = wait_for(lambda: _posted(rig), timeout=60,
                                        what=f"{WAITING} prompts and a failure alert")
                    prompts, alert = messages
                    retry = next(str(e["value"]) for e in _elements(alert)
                                 if e["action_id"] == ACTION_RETRY_FAILURE)
                    yield Scene(rig, firm, [_prompt(m) for m in prompts], alert, retry, staff,
                                len(firm.clio.activities), time.perf_counter() - started)
                finally:
                    rig.stop()  # the Socket Mode connection and its sandbox side too
                    slack_server.stop()
        finally:
            db.dispose()


def _posted(rig: SlackRig) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
    # A client's backlog is one grouped message with each expense's prompt in its thread
    # (``sync.prompt_groups``): the prompts are thread replies, not top-level messages.
    prompts = [m for m in rig.ws.channel_messages(rig.channel, top_level_only=False)
               if {ACTION_CHOOSE_MATTER, ACTION_NOT_CLIENT_COST}
               <= {e["action_id"] for e in _elements(m)}]
    alert = next((m for m in rig.channel_messages()
                  if ACTION_RETRY_FAILURE in json.dumps(m.get("blocks") or [])), None)
    if len(prompts) < WAITING or alert is None:
        return None
    return prompts, alert


# -- the requests -----------------------------------------------------------------------------

Reply: TypeAlias = requests.Response | SocketAck
"""What a request gets back: the HTTP response, or (Socket Mode) the envelope's ack."""


@dataclass
class Planned:
    kind: str
    send: Callable[[], Reply]
    expect: Callable[[Reply], str | None] = lambda r: None
    prompt: int | None = None  # the waiting expense a click answers


@dataclass
class Sample:
    kind: str
    seconds: float
    status: int  # 0: no HTTP answer at all; Socket Mode: 200 acked, 408 not within 15 s
    problem: str | None
    done_at: float
    client_seconds: float = 0.0  # Socket Mode: build + send + wait, at the sending thread


def apportion(total: int, weights: list[tuple[str, int]]) -> dict[str, int]:
    """``total`` split by weight, largest remainders first (sums to ``total`` exactly)."""
    whole = sum(w for _, w in weights)
    exact = {kind: total * w / whole for kind, w in weights}
    counts = {kind: int(x) for kind, x in exact.items()}
    rest = sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)
    for kind in rest[:total - sum(counts.values())]:
        counts[kind] += 1
    return counts


def _contains(text: str, *others: str) -> Callable[[Reply], str | None]:
    """The ack says ``text`` (or one of ``others``)."""
    def check(response: Reply) -> str | None:
        found = any(t in response.text for t in (text, *others))
        return None if found else f"ack lacks {text!r}"
    return check


def _options_json(response: Reply) -> str | None:
    try:
        options = response.json().get("options")
    except ValueError:
        return "options ack is not JSON"
    return None if isinstance(options, list) else "options ack has no options list"


def plan(scene: Scene, total: int, rng: Random) -> list[Planned]:
    rig = scene.rig
    counts = apportion(total, MIX)
    planned: list[Planned] = []

    def who() -> str:
        return rng.choice(scene.staff)

    for kind, count in counts.items():
        for _ in range(count):
            user = who()
            if kind == "click: choose a matter":
                p = rng.choice(scene.prompts)
                value = rng.choice(p.matter_values)
                planned.append(Planned(kind, _click(rig, p.message, ACTION_CHOOSE_MATTER,
                                                    value, user), prompt=p.waiting_id))
            elif kind == "click: not a client cost":
                p = rng.choice(scene.prompts)
                planned.append(Planned(kind, _click(rig, p.message, ACTION_NOT_CLIENT_COST,
                                                    p.not_client_cost, user),
                                       prompt=p.waiting_id))
            elif kind == "click: retry a failure":
                planned.append(Planned(kind, _click(rig, scene.alert, ACTION_RETRY_FAILURE,
                                                    scene.retry_value, user)))
            elif kind == "options: search matters":
                block = f"{PROMPT_BLOCK_PREFIX}{rng.choice(scene.prompts).waiting_id}"
                query = rng.choice(SEARCHES)
                planned.append(Planned(kind, _options(rig, block, query, user),
                                       expect=_options_json))
            elif kind == "event: app_home_opened":
                event = {"type": "app_home_opened", "user": user, "tab": "home",
                         "channel": "D0"}
                planned.append(Planned(kind, _event(rig, event)))
            else:
                sub = kind.removeprefix("/hardcost ")
                user = rig.admin if sub == "run" else user
                # /hardcost run: a run from another one or from a Retry may be under way
                expect = {"help": _contains("/hardcost"),
                          "run": _contains("Starting an import", "already under way"),
                          }.get(sub, lambda r: None)
                planned.append(Planned(kind, _command(rig, sub, user), expect=expect))
    rng.shuffle(planned)
    return planned


def _click(rig: SlackRig, message: dict[str, Any], action_id: str, value: str,
           user: str) -> Callable[[], Reply]:
    return lambda: rig.click(message, action_id, value=value, user=user)


def _options(rig: SlackRig, block_id: str, query: str,
             user: str) -> Callable[[], Reply]:
    return lambda: rig.options(block_id, ACTION_SEARCH_MATTER, query, user=user)


def _event(rig: SlackRig, event: dict[str, Any]) -> Callable[[], Reply]:
    return lambda: rig.event(event)


def _command(rig: SlackRig, text: str, user: str) -> Callable[[], Reply]:
    return lambda: rig.command(text, user=user)


def _healthz(rig: SlackRig) -> Planned:
    def send() -> requests.Response:
        return requests.get(f"{rig.web.url}/healthz", timeout=10)
    return Planned(BASELINE, send, expect=_contains('"ok": true'))


def timed(item: Planned) -> Sample:
    """Send one request; its time is from just before sending until the response is read."""
    started = time.perf_counter()
    problem: str | None = None
    response: Reply | None = None
    try:
        response = item.send()
        status = response.status_code
    except requests.RequestException as exc:
        status, problem = 0, f"no answer: {type(exc).__name__}"
    done = time.perf_counter()
    seconds = done - started
    if isinstance(response, SocketAck) and response.ack is not None:
        # The sandbox's record: envelope written to the socket → its ack read (building the
        # payload and waiting for the sending thread's wake-up are left out).
        seconds = response.ack.seconds
    if status == 200 and response is not None:
        problem = item.expect(response)
    elif status:
        problem = f"HTTP {status}" if not isinstance(response, SocketAck) else "no ack"
    return Sample(item.kind, seconds, status, problem, done, done - started)


@dataclass
class Burst:
    samples: list[Sample]
    wall_s: float
    started: float
    ended: float

    @property
    def throughput(self) -> float:
        return len(self.samples) / self.wall_s if self.wall_s else 0.0


def burst(items: list[Planned], concurrency: int) -> Burst:
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="slack-bench") as pool:
        started = time.perf_counter()
        samples = list(pool.map(timed, items))
        ended = max(s.done_at for s in samples) if samples else started
    return Burst(samples, ended - started, started, ended)


# -- instruments: where an ack's time goes, and when the lazy work is done -------------------

P = ParamSpec("P")
T = TypeVar("T")


@dataclass
class Task:
    """One callable Bolt handed its listener executor."""

    kind: str  # the request kind it came from (see kind_of)
    name: str  # the listener's name
    is_ack: bool  # Bolt's wrapper that runs a listener's ack function
    submitted: float
    started: float | None = None
    ended: float | None = None


@dataclass
class Dispatch:
    kind: str
    seconds: float


class Probe(Executor):
    """Stands between Bolt and its own listener executor, and around ``App.dispatch``.

    Changes nothing Bolt does: the same executor runs the same callables in the same order.
    It records, per request kind, the time spent inside Bolt's ``dispatch`` (signature check,
    middleware, listener, waiting for the ack) and how long each callable waited for one of
    the executor's workers; and it knows when every callable handed over so far has finished.
    """

    def __init__(self, app: App) -> None:
        runner = app.listener_runner
        self.inner = runner.listener_executor
        self.workers = getattr(self.inner, "_max_workers", None)
        self.tasks: list[Task] = []
        self.dispatches: list[Dispatch] = []
        self.recording = False
        self._local = threading.local()
        self._cond = threading.Condition()
        self._outstanding = 0
        runner.listener_executor = self
        lazy = runner.lazy_listener_runner
        if isinstance(lazy, ThreadLazyListenerRunner):
            lazy.executor = self
        original = app.dispatch

        def dispatch(req: BoltRequest) -> BoltResponse:
            kind = kind_of(req.body)
            self._local.kind = kind
            started = time.perf_counter()
            try:
                return original(req)
            finally:
                self._local.kind = None
                if self.recording:
                    with self._cond:
                        self.dispatches.append(Dispatch(kind, time.perf_counter() - started))

        vars(app)["dispatch"] = dispatch

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        name = getattr(fn, "__qualname__", type(fn).__name__)
        task = Task(getattr(self._local, "kind", None) or "?", name.rsplit(".", 1)[-1],
                    "run_ack_function_asynchronously" in name, time.perf_counter())
        with self._cond:
            self._outstanding += 1
            if self.recording:
                self.tasks.append(task)

        def run() -> T:
            task.started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                task.ended = time.perf_counter()
                with self._cond:
                    self._outstanding -= 1
                    self._cond.notify_all()

        try:
            return self.inner.submit(run)
        except BaseException:
            with self._cond:
                self._outstanding -= 1
            raise

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.inner.shutdown(wait=wait, cancel_futures=cancel_futures)

    def wait_idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._outstanding == 0, timeout)

    def start_recording(self) -> None:
        with self._cond:
            self.tasks.clear()
            self.dispatches.clear()
            self.recording = True

    def stop_recording(self) -> None:
        with self._cond:
            self.recording = False


class PoolProbe(Executor):
    """Stands between slack-sdk's Socket Mode client and its pool of message workers (the
    threads that run Bolt for each envelope): records how long each envelope waited for one."""

    def __init__(self, client: Any) -> None:
        self.inner: Executor = client.message_workers
        self.workers: int | None = getattr(self.inner, "_max_workers", None)
        self.waits: list[float] = []
        self.recording = False
        self._guard = threading.Lock()
        client.message_workers = self

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        submitted = time.perf_counter()

        def run() -> T:
            if self.recording:
                with self._guard:
                    self.waits.append(time.perf_counter() - submitted)
            return fn(*args, **kwargs)

        return self.inner.submit(run)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.inner.shutdown(wait=wait, cancel_futures=cancel_futures)


ACTION_KINDS = {ACTION_CHOOSE_MATTER: "click: choose a matter",
                ACTION_NOT_CLIENT_COST: "click: not a client cost",
                ACTION_RETRY_FAILURE: "click: retry a failure"}


def kind_of(body: dict[str, Any]) -> str:
    """The benchmark's name for a request Bolt is dispatching (the MIX kinds)."""
    if body.get("command"):
        words = str(body.get("text") or "").split()
        return f"/hardcost {words[0] if words else 'help'}"
    kind = str(body.get("type"))
    if kind == "block_actions":
        action = str(((body.get("actions") or [{}])[0]).get("action_id"))
        return ACTION_KINDS.get(action, f"click: {action}")
    if kind == "block_suggestion":
        return "options: search matters"
    if kind == "event_callback":
        return f"event: {(body.get('event') or {}).get('type')}"
    return kind


def drain(rig: SlackRig, probe: Probe, timeout: float = DRAIN_TIMEOUT_S) -> str | None:
    """Wait until everything Bolt handed its executor has run, then until the store and the
    Slack sandbox are quiet. Returns what did not finish, or None."""
    if not probe.wait_idle(timeout):
        return f"Bolt's listener executor was still busy after {timeout:.0f} s"
    try:
        quiet(rig, timeout)
    except AssertionError as exc:
        return str(exc)
    return None


def quiet(rig: SlackRig, timeout: float) -> None:
    """No prompt half-answered, no import still running (runs go to the scheduler's threads,
    not Bolt's executor), no outbox message left to send (each sent or given up), and nothing
    new (outbox rows, Slack calls) for a whole second: a run's summary is queued a moment
    after the run is recorded as finished, so one quiet look is not enough."""
    sessions = rig.firm.sessions

    def state() -> tuple[bool, int, int]:
        with sessions() as session:
            claimed = session.scalar(select(func.count()).select_from(WaitingExpense).where(
                WaitingExpense.resolution == "claimed")) or 0
            due = session.scalar(select(func.count()).select_from(SlackOutbox).where(
                SlackOutbox.sent_at.is_(None), SlackOutbox.gave_up_at.is_(None))) or 0
            running = session.scalar(select(func.count()).select_from(Run).where(
                Run.finished_at.is_(None))) or 0
            queued = session.scalar(select(func.count()).select_from(SlackOutbox)) or 0
        return claimed == 0 and due == 0 and running == 0, queued, len(rig.slack.calls.all())

    deadline = time.monotonic() + timeout
    last: tuple[bool, int, int] | None = None
    while time.monotonic() < deadline:
        now = state()
        if now[0] and now == last:
            return
        last = now
        time.sleep(1.0)
    raise AssertionError("prompts, imports and the outbox did not settle: "
                         f"settled={last and last[0]}, the Slack sandbox kept getting calls")


class Collect(logging.Handler):
    """Every record at WARNING and above (the app, Bolt, the SDK, waitress), with its phase."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[tuple[str, logging.LogRecord]] = []
        self.phase = "setup"
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._guard:
            self.records.append((self.phase, record))

    def summary(self) -> list[tuple[str, str, int]]:
        """(phase, record with digits as N, count), most frequent first."""
        with self._guard:
            records = list(self.records)
        counts: Counter[tuple[str, str]] = Counter()
        for phase, r in records:
            message = r.getMessage()
            text = re.sub(r"\d+", "N", message.splitlines()[0] if message else "")[:160]
            if r.exc_info and r.exc_info[1] is not None:
                exc = r.exc_info[1]
                first = (str(exc).splitlines() or [""])[0]  # an AssertionError has no message
                text += f" [{type(exc).__name__}: {first[:120]}]"
            counts[(phase, f"{r.levelname} {r.name}: {text}")] += 1
        return [(phase, text, n) for (phase, text), n in counts.most_common()]


# -- checks -----------------------------------------------------------------------------------

@dataclass
class Check:
    what: str
    ok: bool
    detail: str = ""


@dataclass
class Before:
    clio_entries: int
    outbox_max_id: int
    slack_calls: int
    messages: int
    run_max_id: int


def before(scene: Scene) -> Before:
    rig = scene.rig
    with rig.firm.sessions() as session:
        outbox = session.scalar(select(func.max(SlackOutbox.id))) or 0
        runs = session.scalar(select(func.max(Run.id))) or 0
    return Before(len(scene.firm.clio.activities), outbox, len(rig.slack.calls.all()),
                  len(rig.ws.messages), runs)


def _text(message: dict[str, Any] | None) -> str:
    if message is None:
        return ""
    return json.dumps(message.get("blocks") or []) + str(message.get("text") or "")


def _ids(values: set[int] | list[int], limit: int = 8) -> str:
    shown = sorted(values)
    return ", ".join(map(str, shown[:limit])) + (" …" if len(shown) > limit else "")


def verify(scene: Scene, mix: Burst, start: Before, items: list[Planned],
           errors_logged: int) -> tuple[list[Check], dict[str, Any]]:
    rig, firm = scene.rig, scene.firm
    facts: dict[str, Any] = {}
    checks: list[Check] = []

    # -- the acks
    statuses = Counter(s.status for s in mix.samples)
    bad = [s for s in mix.samples if s.status != 200]
    if rig.socket is None:
        checks.append(Check("every ack was HTTP 200", not bad,
                            ", ".join(f"{n} × {st or 'no answer'}"
                                      for st, n in sorted(statuses.items()))))
        severe = [s for s in mix.samples if s.status in (0, 401) or s.status >= 500]
        checks.append(Check("no 401, no 5xx, no request without an answer", not severe,
                            f"{len(severe)} such" if severe else ""))
    else:
        checks.append(Check("every envelope was acked", not bad,
                            f"{len(mix.samples) - len(bad)} of {len(mix.samples)} acked"))
        stray = list(rig.socket.unmatched)
        checks.append(Check("every frame the app sent acked an envelope the sandbox sent "
                            "(none malformed, none for an unknown or already acked envelope)",
                            not stray, f"{len(stray)} stray: {stray[0][:120]}" if stray else ""))
    odd = Counter(f"{s.kind}: {s.problem}" for s in mix.samples
                  if s.status == 200 and s.problem)
    checks.append(Check("every ack's body is what Slack expects (help text, options list …)",
                        not odd, "; ".join(f"{n} × {p}" for p, n in odd.items())))
    slow = [s for s in mix.samples if s.seconds * 1000 > SLACK_LIMIT_MS]
    checks.append(Check("no ack took longer than Slack's 3 s", not slow,
                        f"{len(slow)} did (Slack would show the user an error)" if slow else ""))

    # -- what the clicks did, once the lazy work finished
    ids = [p.waiting_id for p in scene.prompts]
    clicked = {i.prompt for i in items if i.kind in CLICK_KINDS and i.prompt is not None}
    clicks = sum(1 for i in items if i.kind in CLICK_KINDS)
    with firm.sessions() as session:
        rows = {r.id: r for r in session.scalars(select(WaitingExpense).where(
            WaitingExpense.id.in_(ids)))}
        new_runs = list(session.scalars(select(Run).where(Run.id > start.run_max_id)))
        outbox = list(session.scalars(select(SlackOutbox).where(
            SlackOutbox.id > start.outbox_max_id)))
    linked = {i for i, r in rows.items() if r.resolution == "linked"}
    ncc = {i for i, r in rows.items() if r.resolution == "not_client_cost"}
    settled = {i for i, r in rows.items() if r.resolved_at is not None}
    facts.update(clicks=clicks, clicked=len(clicked), linked=len(linked), ncc=len(ncc))

    activities = list(firm.clio.activities.values())
    made = activities[start.clio_entries:]
    facts["created"] = len(made)
    checks.append(Check("Clio entries created = distinct prompts answered with a matter",
                        len(made) == len(linked),
                        f"{len(made)} entries created, {len(linked)} prompts recorded as linked"))
    markers = Counter(m.group() for a in activities
                      for m in [MARKER.search(a.get("note") or "")] if m)
    doubled = {k: n for k, n in markers.items() if n > 1}
    checks.append(Check("no expense is in Clio twice (one entry per QuickBooks marker)",
                        not doubled and len(markers) == len(activities),
                        f"{len(activities)} entries, {len(markers)} distinct markers"
                        + (f"; twice or more: {sorted(doubled)[:5]}" if doubled else "")))
    by_activity = {r.clio_activity_id: i for i, r in rows.items() if r.clio_activity_id}
    unowned = [a["id"] for a in made if a["id"] not in by_activity]
    open_in_clio = {i for i, r in rows.items() if r.clio_activity_id and i not in linked}
    checks.append(Check("every entry made is recorded on its prompt, and that prompt is "
                        "settled as linked",
                        not unowned and not open_in_clio,
                        f"{len(made) - len(unowned)} of {len(made)} recorded"
                        + (f"; in Clio but waiting again: prompts {_ids(open_in_clio)}"
                           if open_in_clio else "")
                        + (f"; entries on no prompt: {unowned[:5]}" if unowned else "")))
    unclicked_open = sum(1 for i in ids if i not in clicked and i not in settled)
    checks.append(Check("every clicked prompt is settled, each exactly once "
                        "(linked or not a client cost), none left claimed",
                        settled == clicked and linked | ncc == clicked and not linked & ncc,
                        f"{len(clicked)} clicked, {len(settled)} settled: {len(linked)} linked, "
                        f"{len(ncc)} not a client cost"
                        + (f"; clicked but open: {_ids(clicked - settled)}"
                           if clicked - settled else "")
                        + f"; not clicked and still open: {unclicked_open} of "
                          f"{len(ids) - len(clicked)}"))
    asked = [r for r in outbox if r.method == "chat.postMessage" and r.ref_kind == "prompt"]
    again = {int(r.ref_id or 0) for r in asked}
    facts["asked_again"] = len(again)
    checks.append(Check("no prompt was asked again while people were answering it",
                        not asked,
                        f"{len(asked)} prompt(s) posted again, for expenses "
                        f"{_ids(again)}, of which {len(again & set(by_activity.values()))} "
                        "already in Clio" if asked else ""))

    new_messages = rig.ws.messages[start.messages:]
    told = sum(1 for m in new_messages if m.get("ephemeral_user")
               and any(a in str(m.get("text") or "") for a in ANSWERED))
    updates = [r for r in outbox if r.method == "chat.update" and r.ref_kind == "prompt"]
    updated = {int(r.ref_id or 0) for r in updates}
    won = len(updated & clicked)
    facts.update(told=told, won=won)
    # The imports started during the mix (/hardcost run, Retry) update prompts too (after a
    # run the notifier re-renders the prompts it settled or saw edited), so only the clicked
    # prompts' updates are counted here.
    checks.append(Check("every click got one answer: the prompt updated for the first, "
                        "'already answered' for the others",
                        clicks == won + told,
                        f"{clicks} clicks; {won} clicked prompts updated + {told} told"
                        + (f"; {len(updates)} prompt updates in all, of {len(updated)} "
                           "prompts, with the imports'" if len(updates) != won else "")))
    prompt_ts: dict[int, set[str]] = {p.waiting_id: {str(p.message["ts"])}
                                      for p in scene.prompts}
    for r in asked:
        if r.result_ts:
            prompt_ts.setdefault(int(r.ref_id or 0), set()).add(r.result_ts)
    stale = {i for i in settled for ts in prompt_ts.get(i, set())
             if ACTION_CHOOSE_MATTER in _text(rig.ws.message(rig.channel, ts))}
    checks.append(Check("no settled expense still shows a prompt with buttons in the channel",
                        not stale, f"still with buttons: prompts {_ids(stale)}" if stale
                        else f"{len(settled)} settled, their messages updated"))

    # -- Slack and the outbox
    calls = rig.slack.calls.all()[start.slack_calls:]
    by_path = Counter("response_url" if c.path.startswith("/response/")
                      else c.path.removeprefix("/api/") for c in calls)
    facts["slack_calls"] = dict(sorted(by_path.items()))
    sent = Counter(r.method for r in outbox if r.sent_at is not None)
    for method in ("chat.postMessage", "chat.update"):
        n = by_path.get(method, 0)
        doubles = [r.id for r in outbox if r.method == method and r.attempts > 1]
        checks.append(Check(f"Slack got each outbox {method} once (no double delivery)",
                            n == sent.get(method, 0),
                            f"{n} calls to Slack for {sent.get(method, 0)} outbox messages"
                            + (f"; {len(doubles)} outbox rows show attempts > 1"
                               if doubles else "")))
    left = [r for r in outbox if r.sent_at is None]
    checks.append(Check("every message queued during the mix was delivered",
                        not left, f"{len(left)} not delivered: "
                        + ", ".join(sorted({str(r.last_error) for r in left}))[:200]
                        if left else f"{len(outbox)} delivered"))
    failed_runs = [r for r in new_runs if r.status != "ok"]
    checks.append(Check("every import started during the mix finished",
                        not failed_runs,
                        f"{len(new_runs)} runs" + (": " + "; ".join(
                            f"run {r.id} {r.status}: {r.error}" for r in failed_runs[:3])
                            if failed_runs else "")))
    facts["runs"] = len(new_runs)
    checks.append(Check("nothing logged at ERROR or above during the mix and its lazy work",
                        errors_logged == 0, f"{errors_logged} records" if errors_logged else ""))
    return checks, facts


# -- figures ----------------------------------------------------------------------------------

@dataclass
class Stats:
    n: int
    p50: float
    p90: float
    p99: float
    max: float
    total: float
    p95: float = 0.0


def stats(seconds: list[float]) -> Stats | None:
    """Milliseconds; percentiles by linear interpolation between the closest ranks."""
    if not seconds:
        return None
    ms = sorted(s * 1000 for s in seconds)
    if len(ms) == 1:
        return Stats(1, ms[0], ms[0], ms[0], ms[0], ms[0], ms[0])
    cuts = statistics.quantiles(ms, n=100, method="inclusive")
    return Stats(len(ms), cuts[49], cuts[89], cuts[98], ms[-1], sum(ms), cuts[94])


@dataclass
class Result:
    args: argparse.Namespace
    scene_setup_s: float
    mix: Burst
    base_before: Burst
    base_after: Burst
    drain_s: float
    drain_problem: str | None
    checks: list[Check]
    facts: dict[str, Any]
    logs: list[tuple[str, str, int]]
    tasks: list[Task]
    dispatches: list[Dispatch]
    waitress_threads: int | None
    bolt_workers: int | None
    imported: int
    clio_validation: str
    transport: str = "http"
    handler_workers: int | None = None  # Socket Mode: the client's message-worker pool
    pool_waits: list[float] = field(default_factory=list)  # … each envelope's wait for one

    @property
    def baseline(self) -> Stats | None:
        return stats([s.seconds for s in [*self.base_before.samples, *self.base_after.samples]])

    @property
    def overall(self) -> Stats | None:
        return stats([s.seconds for s in self.mix.samples])

    def by_kind(self) -> list[tuple[str, Stats | None, int]]:
        rows = []
        for kind, _ in MIX:
            picked = [s for s in self.mix.samples if s.kind == kind]
            rows.append((kind, stats([s.seconds for s in picked]),
                         sum(1 for s in picked if s.status != 200)))
        return rows


def ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def times(value: float, base: float) -> str:
    return f"{value / base:.1f}×" if base > 0 else "n/a"


def pair(s: Stats | None) -> str:
    return "—" if s is None else f"{ms(s.p50)} / {ms(s.p99)}"


def met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def figures(result: Result) -> list[str]:
    base = result.baseline
    b50, b99 = (base.p50, base.p99) if base else (0.0, 0.0)
    rows: list[list[str]] = []

    def row(label: str, s: Stats | None, errors: int | str) -> list[str]:
        if s is None:
            return [label, "0", "—", "—", "—", "—", "—", "—", str(errors)]
        return [label, str(s.n), ms(s.p50), ms(s.p90), ms(s.p99), ms(s.max),
                times(s.p50, b50), times(s.p99, b99), str(errors)]

    for kind, s, errors in result.by_kind():
        rows.append(row(kind, s, errors))
    overall = result.overall
    errors = sum(1 for s in result.mix.samples if s.status != 200)
    rows.append([f"**{c}**" for c in row("All Slack requests", overall, errors)])
    for label, b in (("/healthz just before the mix", result.base_before),
                     ("/healthz after the lazy work", result.base_after)):
        rows.append(row(label, stats([s.seconds for s in b.samples]),
                        sum(1 for s in b.samples if s.status != 200)))
    rows.append([f"**{c}**" for c in row("/healthz baseline (both)", base, "—")])
    return table(["Request", "n", "p50 ms", "p90 ms", "p99 ms", "max ms", "p50 ÷ baseline",
                  "p99 ÷ baseline", "not 200"], rows)


def breakdown(result: Result) -> list[str]:
    """Per kind: at the client, inside Bolt's dispatch, and waiting for an executor worker."""
    rows: list[list[str]] = []
    kinds = [k for k, _ in MIX]
    for kind in [*kinds, None]:
        label = kind or "**All Slack requests**"
        client = stats([s.seconds for s in result.mix.samples if kind in (None, s.kind)])
        inside = stats([d.seconds for d in result.dispatches if kind in (None, d.kind)])
        acks = [t for t in result.tasks if t.is_ack and kind in (None, t.kind)
                and not t.kind.startswith("event:") and t.started is not None]
        waited = stats([(t.started or 0.0) - t.submitted for t in acks])
        if kind is not None and kind.startswith("event:"):
            wait_cell = "— (Bolt acks an event before handing its listener to a worker)"
        else:
            wait_cell = pair(waited)
        rows.append([label, pair(client), pair(inside), wait_cell])
    return table(["Request", "At the client: p50 / p99 ms", "Inside Bolt's dispatch: "
                  "p50 / p99 ms", "Ack function waiting for a listener-executor worker: "
                  "p50 / p99 ms"], rows)


def where_summary(result: Result) -> list[str]:
    """One paragraph of this run's own numbers: how the median ack splits up."""
    client = stats([s.seconds for s in result.mix.samples if not s.kind.startswith("event:")])
    inside = stats([d.seconds for d in result.dispatches if not d.kind.startswith("event:")])
    waited = stats([(t.started or 0.0) - t.submitted for t in result.tasks
                    if t.is_ack and not t.kind.startswith("event:") and t.started is not None])
    ran = stats([(t.ended or 0.0) - (t.started or 0.0) for t in result.tasks
                 if t.is_ack and not t.kind.startswith("event:") and t.ended is not None
                 and t.started is not None])
    events = stats([s.seconds for s in result.mix.samples if s.kind.startswith("event:")])
    if not (client and inside and waited and ran):
        return []
    text = (f"In this run, a median ack of a command, click or options load took "
            f"{ms(client.p50)} ms at the client, {ms(inside.p50)} ms of it inside Bolt's "
            f"dispatch, where the ack function waited a median {ms(waited.p50)} ms for a "
            f"worker and then ran in {ms(ran.p50)} ms.")
    if events:
        base = result.baseline
        text += (f" App Home events, which Bolt acks without waiting for a worker, took a "
                 f"median {ms(events.p50)} ms at the client"
                 + (f" (/healthz: {ms(base.p50)} ms)" if base else "")
                 + ": time outside Bolt, waiting for one of waitress's threads while other "
                 "requests hold them and for the interpreter lock while the lazy work "
                 "holds it.")
    return [text, ""]


def lazy_table(result: Result) -> tuple[list[str], float]:
    groups: dict[str, list[Task]] = {}
    for t in result.tasks:
        if t.started is None or t.ended is None:
            continue
        if t.is_ack and t.kind.startswith("event:"):
            name = f"`{t.kind.removeprefix('event: ')}` listener (after Bolt's auto-ack)"
        elif t.is_ack:
            name = "ack functions (the response waits for these)"
        else:
            name = f"lazy `{t.name}`"
        groups.setdefault(name, []).append(t)
    rows: list[list[str]] = []
    busy = 0.0
    for name, tasks in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        waited = stats([(t.started or 0.0) - t.submitted for t in tasks])
        ran = stats([(t.ended or 0.0) - (t.started or 0.0) for t in tasks])
        assert waited is not None and ran is not None
        busy += ran.total / 1000
        rows.append([name, str(len(tasks)), ms(waited.p50), ms(waited.max), ms(ran.p50),
                     ms(ran.max), f"{ran.total / 1000:.2f}"])
    return table(["Callable on Bolt's listener executor", "n", "waited p50 ms",
                  "waited max ms", "ran p50 ms", "ran max ms", "worker-seconds"], rows), busy


def targets(result: Result) -> tuple[list[str], bool]:
    overall = result.overall
    p99 = overall.p99 if overall else float("inf")
    worst = overall.max if overall else float("inf")
    failed = [c for c in result.checks if not c.ok]
    rows = [
        [f"Ack p99 ≤ {P99_TARGET_MS:.0f} ms (all Slack requests)", f"{ms(p99)} ms",
         met(p99 <= P99_TARGET_MS)],
        [f"Every ack within Slack's {SLACK_LIMIT_MS / 1000:.0f} s", f"max {ms(worst)} ms",
         met(worst <= SLACK_LIMIT_MS)],
    ]
    for kind, s, _ in result.by_kind():
        if s is not None:
            rows.append([f"… p99 ≤ {P99_TARGET_MS:.0f} ms: {kind}", f"{ms(s.p99)} ms",
                         met(s.p99 <= P99_TARGET_MS)])
    rows.append([f"Correctness checks ({len(result.checks)})",
                 f"{len(result.checks) - len(failed)} of {len(result.checks)} passed",
                 met(not failed)])
    all_met = p99 <= P99_TARGET_MS and worst <= SLACK_LIMIT_MS and not failed
    return table(["Target", "Measured", "Result"], rows), all_met


def render_report(result: Result, *, command: str) -> str:
    args = result.args
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    uname = platform.uname()
    mix = result.mix
    facts = result.facts
    counts = apportion(args.requests, MIX)
    overall, base = result.overall, result.baseline
    base_n = len(result.base_before.samples) + len(result.base_after.samples)
    base_wall = result.base_before.wall_s + result.base_after.wall_s
    lazy_lines, busy = lazy_table(result)
    workers = result.bolt_workers
    window = mix.wall_s + result.drain_s
    lines = [
        "# Slack benchmark: how fast the app acknowledges Slack's requests",
        "",
        f"- **Date:** {now}",
        f"- **Machine:** {platform.platform()} ({uname.machine}), {os.cpu_count()} CPUs",
        f"- **Python:** {platform.python_implementation()} {platform.python_version()}",
        f"- **Command:** `{command}`",
        "- **Database:** a temporary SQLite file (WAL), migrated by `sync.db.upgrade`.",
        "- **Server:** the production WSGI app (`bot.web.make_wsgi_app`: `/slack/events` → "
        f"Bolt, `/healthz`) served by waitress with {result.waitress_threads or '?'} threads "
        "on a loopback port, as `sandbox.slack_rig.make_rig` builds it; Bolt's `App` from "
        "`bot.app.build_app` (`process_before_response=True`: each ack function runs in the "
        f"request's own thread; the lazy listeners run on a listener executor of "
        f"{workers or '?'} threads; imports started from Slack run on their own pool).",
        "- **Services:** the built-in Slack, QuickBooks and Clio sandboxes over real HTTP on "
        f"loopback (Clio OpenAPI request validation {result.clio_validation}; Clio's rate "
        f"limit raised to {RATE_LIMIT:,}/min so that lazy work is not paced by it). "
        "Everything — load generator, waitress, Bolt's workers and the sandboxes — runs in "
        "this one Python process.",
        f"- **Firm:** one client with {len(MULTI_MATTERS)} open matters whose {WAITING} "
        f"expenses (from one import) wait for a choice, {len(SINGLE_CLIENTS)} clients with one "
        f"matter ({result.imported} entries imported straight away) and one purchase "
        "QuickBooks holds with an unreadable amount (a failure alert with Retry). The mix "
        "starts right after that import, as when a batch of prompts has just been posted. "
        f"Clicks come from {len(STAFF) + 1} staff users; no approvers list, so anyone may "
        f"answer. Seed `random.Random({args.seed})`; setup took {result.scene_setup_s:.1f} s.",
        f"- **Load:** {args.requests} signed requests, {args.concurrency} at a time "
        "(a thread pool, each thread sending its next request as soon as the last is "
        "answered), in a shuffled mix: "
        + ", ".join(f"{kind} {counts[kind]}" for kind, _ in MIX) + ". The baseline: the same "
        "number of `GET /healthz` just before the mix and again after its lazy work, at the "
        "same concurrency.",
        "- **Instruments:** `App.dispatch` is wrapped and Bolt's listener executor is put "
        "behind a recording proxy (same executor, same callables, same order) to see where "
        "the ack time goes and to know when the lazy work has finished.",
        "",
        "## Ack latency (send → HTTP response)",
        "",
        *figures(result),
        "",
        "## Where the ack time goes",
        "",
        *breakdown(result),
        "",
        "*At the client* is the figure above. *Inside Bolt's dispatch* runs from Bolt being "
        "handed the request to the response being ready: it includes waiting for the ack. "
        "The rest of the client's time is HTTP on loopback and waiting for one of waitress's "
        f"{result.waitress_threads or '?'} threads (a thread is held for the whole dispatch). "
        "*Waiting for a worker*: only with `process_before_response=False` (the earlier "
        "set-up, see the history of this file) does an ack function wait for the executor "
        "that also runs the lazy listeners; now it runs at once in the request thread.",
        "",
        *where_summary(result),
        "## Throughput and lazy work",
        "",
        *table(["", "Value"], [
            ["Slack requests answered per second (mix)",
             f"{mix.throughput:,.1f} ({len(mix.samples)} in {mix.wall_s:.2f} s)"],
            ["/healthz answered per second (baseline, both runs)",
             f"{base_n / base_wall:,.1f}" if base_wall else "n/a"],
            ["Lazy work still running after the last ack",
             f"{result.drain_s:.2f} s" + (f" — {result.drain_problem}"
                                          if result.drain_problem else "")],
            ["Bolt listener executor: worker-seconds used / available during the mix and "
             "its lazy work",
             f"{busy:.2f} / {(workers or 0) * window:.2f} s "
             f"({busy / ((workers or 1) * window):.0%} busy)" if window else "n/a"],
            ["Clicks on prompts / distinct prompts clicked",
             f"{facts.get('clicks', 0)} / {facts.get('clicked', 0)} of {WAITING}"],
            ["Prompts linked to a matter / marked not a client cost",
             f"{facts.get('linked', 0)} / {facts.get('ncc', 0)}"],
            ["Clio entries created by the clicks", str(facts.get("created", 0))],
            ["'Already answered' replies to the other clicks", str(facts.get("told", 0))],
            ["Prompts posted again during the mix", str(facts.get("asked_again", 0))],
            ["Imports run during the mix (/hardcost run and Retry)",
             str(facts.get("runs", 0))],
            ["Calls the app made to the Slack sandbox during the mix", ", ".join(
                f"{path} {n}" for path, n in facts.get("slack_calls", {}).items()) or "none"],
        ]),
        "",
        *lazy_lines,
        "",
    ]
    target_lines, all_met = targets(result)
    lines += ["## Targets", "", *target_lines, ""]
    lines.append("All targets were met." if all_met else
                 "**Not every target was met** — see the rows marked *missed*; the benchmark "
                 "reports, it does not fail.")
    lines += ["", "## Correctness checks (after the lazy work finished)", ""]
    for check in result.checks:
        mark = "✓" if check.ok else "✗"
        lines.append(f"- {mark} {check.what}" + (f" — {check.detail}" if check.detail else ""))
    lines += ["", "## Warnings and errors logged", ""]
    if result.logs:
        lines += table(["During", "Count", "Record (digits shown as N)"],
                       [[phase, str(n), f"`{text.replace('|', '/')}`"]
                        for phase, text, n in result.logs[:15]])
        if len(result.logs) > 15:
            lines += ["", f"…and {len(result.logs) - 15} more distinct records."]
    else:
        lines.append("None: no record at WARNING or above from the app, Bolt, the SDK or "
                     "waitress.")
    p50_ratio = times(overall.p50, base.p50) if overall and base else "n/a"
    p99_ratio = times(overall.p99, base.p99) if overall and base else "n/a"
    lines += [
        "",
        "## How to read this",
        "",
        "Slack shows the user an error if the app has not answered (acknowledged) a request "
        "within 3 s, and retries events; the app is built to ack at once and do slow work — "
        "an import, a Clio entry, a message update — in Bolt's lazy listeners after the "
        "response. The time measured is therefore from just before the request is sent until "
        "its HTTP response has been read, over a fresh loopback connection each time. "
        "Building and signing the body is included (the rig's helpers build and send in one "
        "call, minting a `response_url` and trigger id in the Slack sandbox: tens of "
        "microseconds, a few milliseconds at worst under this load). It is the ack only: "
        "the slow work is measured separately, as how long it kept running after the last "
        "ack, and checked for correctness once it has finished.",
        "",
        "Absolute milliseconds depend on this machine and on everything else it was doing; "
        "the ratios to `/healthz` — the same server, the same concurrency, the same client, a "
        "request that does almost nothing (one `SELECT 1`) — are what to compare between "
        "runs and machines. A ratio near 1× would mean an ack costs no more than the HTTP "
        f"round trip itself; here p50 is {p50_ratio} and p99 {p99_ratio}. The load is a "
        "closed loop (each client thread waits for its answer before sending again), so the "
        "mean latency is about concurrency ÷ throughput: every millisecond of CPU a request "
        "causes, including its lazy work and the sandboxes answering that work, lowers the "
        "throughput and raises everyone's latency. All of it runs in one Python process on "
        f"{os.cpu_count()} CPUs, sharing one interpreter lock; in production Slack, "
        "QuickBooks and Clio are elsewhere, so the absolute figures here are pessimistic, but "
        "the queueing the breakdown shows is the app's own. Percentiles interpolate between "
        "the closest samples, so with a few dozen requests of a kind its p99 is close to its "
        "maximum.",
        "",
        "Clicks go to random prompts, so most prompts are clicked several times, by "
        "different people, often at the same moment: the first click wins (a matter → one "
        "Clio entry; *Not a client cost* → none) and every other click is told the prompt "
        "was already answered. The correctness checks compare Clio's contents with the "
        "prompts' recorded answers and Slack's call log with the app's outbox, so a double "
        "entry, a prompt asked twice or a message sent twice shows up as a failed check.",
        "",
    ]
    return "\n".join(lines)


# -- Socket Mode ------------------------------------------------------------------------------

def quad(s: Stats | None) -> list[str]:
    """p50, p95, p99, max."""
    return ["—"] * 4 if s is None else [ms(s.p50), ms(s.p95), ms(s.p99), ms(s.max)]


def ratio(value: float | None, base: float | None) -> str:
    return "n/a" if value is None or not base else f"{value / base:.2f}×"


def _pooled_burst(bursts: list[Burst]) -> Burst:
    return Burst([x for b in bursts for x in b.samples], sum(b.wall_s for b in bursts),
                 min(b.started for b in bursts), max(b.ended for b in bursts))


def pooled(results: list[Result]) -> Result:
    """Several rounds of one transport as one: every sample, dispatch and wait together; a
    check passes if it passed in every round (the failing rounds' details kept)."""
    if len(results) == 1:
        return results[0]
    first = results[0]
    checks: list[Check] = []
    for i, check in enumerate(first.checks):
        same = [r.checks[i] for r in results if i < len(r.checks)]
        failed = [(n, c) for n, c in enumerate(same, 1) if not c.ok]
        detail = "; ".join(f"round {n}: {c.detail}" for n, c in failed) if failed \
            else f"all {len(same)} rounds" + (f" (round 1: {check.detail})" if check.detail
                                              else "")
        checks.append(Check(check.what, not failed, detail))
    logs: Counter[tuple[str, str]] = Counter()
    for r in results:
        for phase, text, n in r.logs:
            logs[(phase, text)] += n
    return Result(
        first.args, statistics.fmean(r.scene_setup_s for r in results),
        _pooled_burst([r.mix for r in results]),
        _pooled_burst([r.base_before for r in results]),
        _pooled_burst([r.base_after for r in results]),
        max(r.drain_s for r in results),
        "; ".join(r.drain_problem for r in results if r.drain_problem) or None,
        checks, first.facts, [(ph, t, n) for (ph, t), n in logs.most_common()],
        [t for r in results for t in r.tasks], [d for r in results for d in r.dispatches],
        first.waitress_threads, first.bolt_workers, first.imported, first.clio_validation,
        first.transport, first.handler_workers, [w for r in results for w in r.pool_waits])


def socket_targets(http: Result, sock: Result) -> tuple[list[list[str]], bool]:
    h, o = http.overall, sock.overall
    conc = sock.args.concurrency
    r = o.p99 / h.p99 if o and h and h.p99 else float("inf")
    p99 = o.p99 if o else float("inf")
    worst = o.max if o else float("inf")
    failed = [c for c in sock.checks if not c.ok]
    rows = [
        [f"Socket Mode ack p99 ≤ {RATIO_TARGET}× the HTTP ack p99 (same run)",
         f"{ms(p99)} ÷ {ms(h.p99) if h else '—'} ms = {ratio(p99, h.p99 if h else None)}",
         met(r <= RATIO_TARGET)],
        [f"Socket Mode ack p99 < {P99_TARGET_MS:.0f} ms at {conc} concurrent"
         + ("" if conc == 20 else " (this run is not at 20: see the command)"),
         f"{ms(p99)} ms", met(p99 < P99_TARGET_MS)],
        [f"Every envelope acked within Slack's {SLACK_LIMIT_MS / 1000:.0f} s",
         f"max {ms(worst)} ms", met(worst <= SLACK_LIMIT_MS)],
        [f"Correctness checks, Socket Mode run ({len(sock.checks)})",
         f"{len(sock.checks) - len(failed)} of {len(sock.checks)} passed", met(not failed)],
    ]
    ok = r <= RATIO_TARGET and p99 < P99_TARGET_MS and worst <= SLACK_LIMIT_MS and not failed
    return rows, ok


def socket_where(sock: Result) -> list[str]:
    """How the median envelope's time splits: Bolt's dispatch, waiting for a message worker,
    and the rest (framing, the client's receive thread and queue, writing the ack)."""
    acked = stats([s.seconds for s in sock.mix.samples if s.status == 200])
    inside = stats([d.seconds for d in sock.dispatches])
    waited = stats(sock.pool_waits)
    if not (acked and inside and waited):
        return []
    rest = acked.p50 - inside.p50 - waited.p50
    return [
        *table(["Part of an envelope's ack time", "p50 ms", "p99 ms"], [
            ["Envelope sent → ack read, at the sandbox (all kinds)", ms(acked.p50),
             ms(acked.p99)],
            [f"… waiting for one of the client's {sock.handler_workers or '?'} message "
             "workers", ms(waited.p50), ms(waited.p99)],
            ["… inside Bolt's dispatch (as over HTTP: middleware, the ack function)",
             ms(inside.p50), ms(inside.p99)],
            ["… the rest at the median: WebSocket framing both ways, the client's receive "
             "thread and message queue, the run-once wrapper, writing the ack",
             ms(max(rest, 0.0)), "—"],
        ]),
        "",
    ]


def order(rounds: int) -> str:
    """The transports' order over ``rounds`` rounds: HTTP first in odd rounds."""
    return ", ".join("HTTP → Socket Mode" if i % 2 == 0 else "Socket Mode → HTTP"
                     for i in range(rounds))


def round_table(https: list[Result], socks: list[Result]) -> list[str]:
    if len(socks) < 2:
        return []
    rows = []
    for n, (h, o) in enumerate(zip(https, socks, strict=True), 1):
        hs, os_ = h.overall, o.overall
        rows.append([str(n), "HTTP first" if n % 2 else "Socket Mode first",
                     ms(hs.p99) if hs else "—", ms(os_.p99) if os_ else "—",
                     ratio(os_.p99 if os_ else None, hs.p99 if hs else None)])
    return ["Round by round (the spread is this machine's noise):", "",
            *table(["Round", "Order", "HTTP p99 ms", "Socket Mode p99 ms",
                    "Socket Mode ÷ HTTP"], rows), ""]


def analysis(http: Result, sock: Result) -> list[str]:
    """This run's own numbers on why the two transports differ."""
    h, o = http.overall, sock.overall
    hd = stats([d.seconds for d in http.dispatches])
    od = stats([d.seconds for d in sock.dispatches])
    waited = stats(sock.pool_waits)
    if not (h and o and hd and od and waited):
        return []
    conc, workers = sock.args.concurrency, sock.handler_workers or 0
    text = (f"Why they differ, in this run: over HTTP each of the {conc} requests in flight "
            f"has a waitress thread ({http.waitress_threads or '?'}) and all of them run "
            "Bolt's dispatch at once, taking turns on the interpreter lock: dispatch took "
            f"{ms(hd.p50)} ms at the median and {ms(hd.p99)} ms at p99, and a new loopback TCP "
            "connection per request adds to every one. Over Socket Mode there is one open "
            "connection (no connection set-up per envelope), and the client runs at most "
            f"{workers} envelopes at a time: dispatch itself took {ms(od.p50)} / "
            f"{ms(od.p99)} ms (p50 / p99), but ")
    if workers and conc > workers:
        text += (f"with {conc} envelopes in flight the others wait for a worker "
                 f"({ms(waited.p50)} ms at the median, {ms(waited.p99)} ms at p99), which is "
                 "where Socket Mode's tail comes from.")
    else:
        text += (f"an envelope waited {ms(waited.p50)} / {ms(waited.p99)} ms (p50 / p99) for "
                 "a worker.")
    text += (" The median is lower over Socket Mode, the tail of either depends on what else "
             "the process (its lazy work, the sandboxes) and this shared machine were doing at "
             "that moment.")
    return [text, ""]


def render_socket_section(https: list[Result], socks: list[Result], *, command: str) -> str:
    http, sock = pooled(https), pooled(socks)
    args = sock.args
    rounds = len(socks)
    h, o = http.overall, sock.overall
    hb, ob = http.baseline, sock.baseline
    counts = apportion(args.requests, MIX)
    conc = args.concurrency
    unacked = sum(1 for x in sock.mix.samples if x.status != 200)
    not200 = sum(1 for x in http.mix.samples if x.status != 200)
    client = stats([x.client_seconds for x in sock.mix.samples if x.status == 200])
    rows = [
        ["HTTP: request sent → response read", str(h.n if h else 0), *quad(h),
         pair(hb), str(not200)],
        ["Socket Mode: envelope sent → ack read", str(o.n if o else 0), *quad(o),
         pair(ob), str(unacked)],
        ["Socket Mode ÷ HTTP", "", *(ratio(getattr(o, f, None), getattr(h, f, None))
                                     for f in ("p50", "p95", "p99", "max")), "", ""],
    ]
    kind_rows = []
    http_kinds = {k: st for k, st, _ in http.by_kind()}
    for kind, st, _ in sock.by_kind():
        hs = http_kinds.get(kind)
        kind_rows.append([kind, pair(hs), pair(st),
                          ratio(st.p99 if st else None, hs.p99 if hs else None)])
    target_rows, all_met = socket_targets(http, sock)
    lines = [
        f"{SOCKET_SECTION}: the same requests as envelopes over the app's WebSocket",
        "",
        f"- **Command:** `{command}` — the HTTP run above and the Socket Mode run are one "
        "bench run, in one process, so that the ratio is measured under the same conditions "
        "on this shared machine"
        + ("." if rounds == 1 else
           f": {rounds} rounds of each, in the order {order(rounds)} (so that neither "
           "transport always goes first), every figure below pooling all rounds of a "
           "transport (the HTTP section above is round 1's HTTP run)."),
        f"- **Firm and load:** for each run a fresh firm seeded exactly as above (setup took "
        f"{sock.scene_setup_s:.1f} s), the same mix of {args.requests} requests — "
        + ", ".join(f"{kind} {counts[kind]}" for kind, _ in MIX)
        + f" — {conc} at a time, from {conc} sending threads, each sending its next envelope "
        "as soon as the last is acked. The /healthz baseline is taken the same way (HTTP "
        "still serves /healthz, OAuth and webhooks in Socket Mode).",
        "- **App:** `bot.app.build_app` as above, connected as `hardcost serve` connects with "
        "`SLACK_APP_TOKEN`: `bot.socket_mode.SocketModeLink` (Bolt's `SocketModeHandler` on "
        "slack-sdk's built-in client, wrapped so that a redelivered payload is not run twice), "
        f"`apps.connections.open` with the app-level token, a ping every {PING_INTERVAL:.0f} s "
        "(the production setting, not the test rig's 0.5 s). The client's receive thread "
        "queues each envelope; a message processor hands it to a pool of "
        f"{sock.handler_workers or '?'} message workers, each running Bolt's dispatch (the "
        "ack function in that thread, `process_before_response=True`) and writing the ack to "
        f"the socket; lazy listeners run on Bolt's executor of {sock.bolt_workers or '?'} "
        "threads as over HTTP.",
        "- **Slack:** the sandbox's Socket Mode server (`sandbox/slack_socket.py`, websockets' "
        "synchronous server, no compression) on loopback; every envelope goes over the app's "
        "one connection (as Slack does with one connection open).",
        "- **Measured:** each envelope's time as the sandbox records it (`Ack.seconds`): from "
        "just before the envelope is written to the socket until its ack has been read off it. "
        "The HTTP figure runs from just before the request is built and signed until its "
        "response has been read (above); building a payload is tens of microseconds."
        + (f" Seen from the sending thread (building the payload, sending, waking up on the "
           f"ack) the Socket Mode p50/p99 were {pair(client)} ms." if client else ""),
        "",
        "### Ack latency, both transports",
        "",
        *table(["Transport", "n", "p50 ms", "p95 ms", "p99 ms", "max ms",
                "/healthz p50 / p99 ms (same run)", "not acked / not 200"], rows),
        "",
        *round_table(https, socks),
        *analysis(http, sock),
        "### By request kind (p50 / p99 ms)",
        "",
        *table(["Request", "HTTP", "Socket Mode", "p99 Socket Mode ÷ HTTP"], kind_rows),
        "",
        "### Where the Socket Mode ack time goes",
        "",
        *socket_where(sock),
        *table(["Inside Bolt's dispatch", "HTTP p50 / p99 ms", "Socket Mode p50 / p99 ms"], [
            ["All Slack requests", pair(stats([d.seconds for d in http.dispatches])),
             pair(stats([d.seconds for d in sock.dispatches]))]]),
        "",
        "### Targets (issue 15)",
        "",
        *table(["Target", "Measured", "Result"], target_rows),
        "",
        "All Socket Mode targets were met." if all_met else
        "**Not every Socket Mode target was met** — see the rows marked *missed*, the "
        "breakdown above for where the time went and the failed checks below; the benchmark "
        "reports, it does not fail.",
        "",
        "### Correctness checks, Socket Mode run (after the lazy work finished)",
        "",
    ]
    for check in sock.checks:
        mark = "✓" if check.ok else "✗"
        lines.append(f"- {mark} {check.what}" + (f" — {check.detail}" if check.detail else ""))
    lines += ["", "Warnings and errors logged during the Socket Mode run: "
              + ("none." if not sock.logs else "")]
    if sock.logs:
        lines += ["", *table(["During", "Count", "Record (digits shown as N)"],
                             [[phase, str(n), f"`{text.replace('|', '/')}`"]
                              for phase, text, n in sock.logs[:15]])]
    lines += [
        "",
        f"Lazy work still running after the last ack: {sock.drain_s:.2f} s"
        + (f" — {sock.drain_problem}" if sock.drain_problem else "")
        + f"; Slack requests acked per second: {sock.mix.throughput:,.1f} "
        f"(HTTP: {http.mix.throughput:,.1f}).",
        "",
    ]
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------

def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_bench(args: argparse.Namespace, transport: str = "http") -> Result:
    rng = Random(args.seed)
    collector = Collect()
    root = logging.getLogger()
    root.addHandler(collector)
    name = TRANSPORT_NAMES[transport]
    try:
        with scene(rng, transport) as sc:
            rig = sc.rig
            validation = ("on" if sc.firm.world.clio.validation_enabled else
                          f"off ({sc.firm.world.clio.validation_disabled_reason})")
            probe = Probe(rig.app)
            pool = PoolProbe(rig.link.client) if rig.link is not None else None
            for _ in range(5):  # warm up: connections, Bolt's first auth.test, lazy imports
                timed(_healthz(rig))
                timed(Planned("warm-up", lambda: rig.command("help")))
            probe.wait_idle(DRAIN_TIMEOUT_S)
            items = plan(sc, args.requests, rng)

            collector.phase = "baseline before"
            progress(f"baseline: {args.requests} × GET /healthz, {args.concurrency} at a "
                     "time …")
            base_before = burst([_healthz(rig) for _ in range(args.requests)],
                                args.concurrency)
            start = before(sc)
            collector.phase = "mix"
            progress(f"mix ({name}): {args.requests} Slack requests, {args.concurrency} at a "
                     "time …")
            probe.start_recording()
            if pool is not None:
                pool.recording = True
            mix = burst(items, args.concurrency)
            if pool is not None:
                pool.recording = False
            progress(f"  answered in {mix.wall_s:.2f} s; waiting for the lazy work …")
            collector.phase = "lazy work after the mix"
            problem = drain(rig, probe)
            drain_s = time.perf_counter() - mix.ended
            probe.stop_recording()
            progress(f"  lazy work done {drain_s:.2f} s after the last ack")
            errors = sum(1 for phase, r in collector.records
                         if phase in ("mix", "lazy work after the mix")
                         and r.levelno >= logging.ERROR)
            checks, facts = verify(sc, mix, start, items, errors)
            collector.phase = "baseline after"
            progress(f"baseline again: {args.requests} × GET /healthz …")
            base_after = burst([_healthz(rig) for _ in range(args.requests)],
                               args.concurrency)
            server = getattr(rig.web, "_server", None)
            threads = getattr(getattr(server, "adj", None), "threads", None)
            return Result(args, sc.setup_s, mix, base_before, base_after, drain_s, problem,
                          checks, facts, collector.summary(), list(probe.tasks),
                          list(probe.dispatches), threads, probe.workers, sc.imported,
                          validation, transport, pool.workers if pool else None,
                          list(pool.waits) if pool else [])
    finally:
        root.removeHandler(collector)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.slack_ack_bench",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--out", default="docs/slack-benchmarks.md")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--socket-mode", action="store_true",
                        help="after the HTTP run, the same over Socket Mode, compared in a "
                             "section of its own")
    parser.add_argument("--rounds", type=int, default=2,
                        help="with --socket-mode: rounds of both transports, alternating which "
                             "goes first (default 2)")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.rounds < 1:
        parser.error("--requests, --concurrency and --rounds must be at least 1")
    raw = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m bench.slack_ack_bench", *map(shlex.quote, raw)])

    out = Path(args.out)
    if args.socket_mode:
        runs: dict[str, list[Result]] = {"http": [], "socket": []}
        for n in range(args.rounds):
            for transport in ("http", "socket") if n % 2 == 0 else ("socket", "http"):
                progress(f"round {n + 1} of {args.rounds}: {TRANSPORT_NAMES[transport]}")
                runs[transport].append(run_bench(args, transport))
        report = render_report(runs["http"][0], command=command)
        report = report.rstrip() + "\n\n" + render_socket_section(
            runs["http"], runs["socket"], command=command)
    else:
        report = render_report(run_bench(args), command=command)
        report = carry_over(out, report, [SOCKET_SECTION])
    print(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report, encoding="utf-8")
    progress(f"report written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fault injection and call recording shared by the sandbox services.

A test (or the demo) arms a :class:`Fault` on a service; the next matching requests get the
fault's answer instead of the real one. :class:`RandomFaults` instead fails a seeded fraction
of requests with a mix of faults (a flaky service). Every request is recorded in
:class:`CallLog`, which tests and benchmarks use to count API calls.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from werkzeug.wrappers import Request, Response


@dataclass
class Fault:
    """An answer to give instead of the real one, ``times`` times, to matching requests.

    ``path`` is a regular expression searched in the request path; ``method`` an HTTP method or
    ``None`` for any. ``status``/``body``/``headers`` form the response. ``delay`` seconds are
    slept first (longer than a client's timeout = a timeout). ``passthrough`` answers normally
    after the delay (a slow but successful call).
    """

    path: str = ""
    method: str | None = None
    status: int = 500
    body: str | bytes = ""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    times: int = 1
    delay: float = 0.0
    passthrough: bool = False
    after_handler: bool = False
    """Run the real handler first (its effects happen), then answer with the fault: a lost reply."""
    delay_after: float = 0.0
    """Seconds slept after the real handler ran and before answering (with ``passthrough`` or
    ``after_handler``): the work is done, the reply is late — a client may die waiting."""

    def matches(self, request: Request) -> bool:
        if self.method and request.method.upper() != self.method.upper():
            return False
        return re.search(self.path, request.path) is not None


class RandomFaults:
    """Fails a fraction ``rate`` of the requests matching ``path``/``method``, each with a
    fault of one of the ``mix``'s kinds: ``{kind: (weight, fault)}`` (only the fault's answer
    is used; its ``times`` is ignored).

    Every draw comes from one ``random.Random(seed)`` under a lock, in the order requests
    arrive, so a client that sends one request after another meets the same faults on every
    run with the same seed. The kinds are dealt from a shuffled deck holding each kind
    ``weight`` times (whole numbers), so every kind turns up once per ``sum(weights)`` faults
    even in a small run. ``injected`` counts what was given by kind, ``by_method`` by kind and
    HTTP method, and ``considered`` how many requests were drawn for.
    """

    def __init__(self, rate: float, mix: Mapping[str, tuple[int, Fault]], *, seed: int = 0,
                 path: str = "", method: str | None = None) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be between 0 and 1, not {rate!r}")
        if any(weight < 0 for weight, _ in mix.values()) or \
                (rate > 0 and not any(weight for weight, _ in mix.values())):
            raise ValueError("the mix needs a positive weight and no negative one")
        self.rate = rate
        self.mix = dict(mix)
        self.path = path
        self.method = method
        self.considered = 0
        self.injected: Counter[str] = Counter()
        self.by_method: Counter[tuple[str, str]] = Counter()
        self._random = random.Random(seed)
        self._deck: list[str] = []
        self._lock = threading.Lock()

    def matches(self, request: Request) -> bool:
        if self.method and request.method.upper() != self.method.upper():
            return False
        return re.search(self.path, request.path) is not None

    def draw(self, request: Request) -> Fault | None:
        """The fault this request gets, or ``None`` for the real answer."""
        if not self.matches(request):
            return None
        with self._lock:
            self.considered += 1
            if self._random.random() >= self.rate:
                return None
            if not self._deck:
                self._deck = [kind for kind, (weight, _) in self.mix.items()
                              for _ in range(weight)]
                self._random.shuffle(self._deck)
            kind = self._deck.pop()
            self.injected[kind] += 1
            self.by_method[(kind, request.method.upper())] += 1
            return self.mix[kind][1]

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.injected.values())


class FaultPlan:
    """The faults armed on one service, consumed in arming order; then, for a request none
    of them took, ``random`` (a :class:`RandomFaults`) when set."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.random: RandomFaults | None = None

    def add(self, fault: Fault | None = None, **kwargs: Any) -> Fault:
        fault = fault or Fault(**kwargs)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """No more faults: the armed ones and the random ones."""
        with self._lock:
            self._faults.clear()
            self.random = None

    def take(self, request: Request) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and fault.matches(request):
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                    return fault
            chance = self.random
        return chance.draw(request) if chance is not None else None

    def pending(self) -> int:
        with self._lock:
            return sum(f.times for f in self._faults)


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    query: str
    status: int
    at: float
    if_match: str | None = None  # the request's If-Match header (Clio's PATCH and DELETE)
    statement: str | None = None  # a QuickBooks query sent as a POST body (its first 500 chars)


class CallLog:
    """Thread-safe record of every request a service answered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[Call] = []

    def record(self, call: Call) -> None:
        with self._lock:
            self._calls.append(call)

    def all(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def count(self, method: str | None = None, path: str = "") -> int:
        return sum(
            1
            for c in self.all()
            if (method is None or c.method == method) and re.search(path, c.path)
        )

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()


def with_faults(
    faults: FaultPlan,
    calls: CallLog,
    handler: Callable[[Request], Response],
) -> Callable[[Request], Response]:
    """Wrap a request handler so armed faults and call recording apply to it."""

    def dispatch(request: Request) -> Response:
        fault = faults.take(request)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is None or fault.passthrough:
            response = handler(request)
        else:
            if fault.after_handler:
                handler(request)
            response = Response(fault.body, status=fault.status, headers=fault.headers,
                                content_type=fault.content_type)
        if fault is not None and fault.delay_after:
            time.sleep(fault.delay_after)
        statement = request.get_data(as_text=True)[:500] \
            if request.mimetype == "application/text" else None
        calls.record(Call(request.method, request.path, request.query_string.decode(),
                          response.status_code, time.time(), request.headers.get("If-Match"),
                          statement))
        return response

    return dispatch

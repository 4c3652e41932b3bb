"""Fault injection and call recording shared by the sandbox services.

A test (or the demo) arms a :class:`Fault` on a service; the next matching requests get the
fault's answer instead of the real one. Every request is recorded in :class:`CallLog`, which
tests and benchmarks use to count API calls.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
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


class FaultPlan:
    """The faults armed on one service, consumed in arming order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault | None = None, **kwargs: Any) -> Fault:
        fault = fault or Fault(**kwargs)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, request: Request) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and fault.matches(request):
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                    return fault
        return None

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
        calls.record(Call(request.method, request.path, request.query_string.decode(),
                          response.status_code, time.time(), request.headers.get("If-Match")))
        return response

    return dispatch

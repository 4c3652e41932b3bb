"""The one place that does HTTP for QuickBooks and Clio: pacing, retries, token refresh, errors.

Both clients build an :class:`ApiSession` with their own pacer and error decoder and then speak
only their domain. Failures come out as :class:`ApiError` subclasses whose ``kind`` tells the
engine (and later Slack) what a person can do about them.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import requests
import simplejson

from hardcost.sync.metrics import API_RATE_LIMITED, API_REQUESTS, service_label
from hardcost.sync.store import FailureKind

log = logging.getLogger(__name__)
T = TypeVar("T")

USER_AGENT = "hardcost/0.1 (+https://github.com/hardcost)"


class ApiError(Exception):
    """A call to QuickBooks or Clio that did not succeed.

    ``message`` is written for a bookkeeper; ``detail`` keeps what the service said; the
    ``request_id`` (Intuit's ``intuit_tid``, Clio's ``X-Request-Id``) is for support tickets.
    """

    kind: FailureKind = FailureKind.DATA

    def __init__(self, service: str, message: str, *, status: int | None = None,
                 code: str | None = None, detail: str | None = None,
                 request_id: str | None = None) -> None:
        super().__init__(message)
        self.service = service
        self.message = message
        self.status = status
        self.code = code
        self.detail = detail
        self.request_id = request_id

    def __str__(self) -> str:
        parts = [self.message]
        if self.detail and self.detail not in self.message:
            parts.append(f"({self.detail})")
        if self.request_id:
            parts.append(f"[{self.service} request {self.request_id}]")
        return " ".join(parts)


class RequestRejected(ApiError):
    """The service refused this request (4xx): the data or a setting is wrong."""


class NotFound(RequestRejected):
    pass


class ConfigError(ApiError):
    """The firm must act: reconnect, change a setting, enable a feature."""

    kind = FailureKind.CONFIG


class ReconnectRequired(ConfigError):
    """The stored tokens no longer work; the firm has to connect the service again."""


class TransientError(ApiError):
    """Throttling, 5xx, timeouts, connection failures: worth trying again later."""

    kind = FailureKind.TRANSIENT


class Throttled(TransientError):
    pass


class ServiceDown(TransientError):
    """5xx or no answer. ``ambiguous`` is true when a write may have happened anyway;
    ``unanswered`` when the request was sent and no answer came before the read timeout (the
    service may still be working on it)."""

    def __init__(self, *args: Any, ambiguous: bool = False, unanswered: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ambiguous = ambiguous
        self.unanswered = unanswered


class MalformedAnswer(ServiceDown):
    """A success (2xx) whose body does not have the shape the code relies on. Transient: the
    next run asks again. Ambiguous after a write: the write may have happened."""


SHAPE_ERRORS = (KeyError, IndexError, TypeError, ValueError, AttributeError, ArithmeticError)
"""What reading an answer of an unexpected shape raises."""


def shaped(service: str, what: str, read: Callable[[], T], *, ambiguous: bool = False) -> T:
    """``read()``, with any error of an unexpected shape turned into ``MalformedAnswer``."""
    try:
        return read()
    except SHAPE_ERRORS as exc:
        raise MalformedAnswer(
            service, f"{service} answered {what} in a form hardcost does not understand; the "
            "next run tries again.", detail=f"{type(exc).__name__}: {exc}"[:300],
            ambiguous=ambiguous) from None


class TokenSource(Protocol):
    def access_token(self) -> str: ...

    def refresh(self, rejected: str) -> str:
        """Return a working access token, given that ``rejected`` was refused."""
        ...


@dataclass
class StaticTokens:
    """A token that never refreshes (tests and one-off scripts)."""

    token: str

    def access_token(self) -> str:
        return self.token

    def refresh(self, rejected: str) -> str:
        raise ReconnectRequired("token", "The access token was refused and cannot be "
                                "refreshed; reconnect the service.")


class Pacer(Protocol):
    def slot(self) -> Any:
        """A context manager held around one request (concurrency and rate)."""
        ...

    def observe(self, response: requests.Response) -> None: ...


class RatePacer:
    """At most ``per_minute`` requests in any 60 s and ``concurrent`` at once (QBO: per realm).

    One instance per realm is shared by every client of that realm in the process; see
    :func:`rate_pacer_for`.
    """

    def __init__(self, per_minute: int = 500, concurrent: int = 10,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.per_minute = per_minute
        self._slots = threading.BoundedSemaphore(concurrent)
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep

    def _wait_for_rate(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                while self._sent and now - self._sent[0] >= 60.0:
                    self._sent.popleft()
                if len(self._sent) < self.per_minute:
                    self._sent.append(now)
                    return
                wait = 60.0 - (now - self._sent[0])
            self._sleep(max(wait, 0.01))

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._slots:
            self._wait_for_rate()
            yield

    def observe(self, response: requests.Response) -> None:
        return None


_rate_pacers: dict[str, RatePacer] = {}
_rate_pacers_lock = threading.Lock()


def rate_pacer_for(key: str, per_minute: int = 500, concurrent: int = 10) -> RatePacer:
    with _rate_pacers_lock:
        pacer = _rate_pacers.get(key)
        if pacer is None:
            pacer = _rate_pacers[key] = RatePacer(per_minute, concurrent)
        return pacer


class HeaderPacer:
    """Paces by the service's own ``X-RateLimit-Remaining``/``-Reset`` headers (Clio).

    When the window is nearly spent, the next request waits for the window's end instead of
    running into a 429.
    """

    def __init__(self, reserve: int = 1, max_wait: float = 65.0,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time) -> None:
        self.reserve = reserve
        self.max_wait = max_wait
        self._remaining: int | None = None
        self._reset_at: float | None = None
        self._lock = threading.Lock()
        self._sleep = sleep
        self._clock = clock
        self.waits = 0  # waits for a reset, and their seconds (benchmarks)
        self.waited = 0.0

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._lock:
            remaining, reset_at = self._remaining, self._reset_at
        if remaining is not None and reset_at is not None and remaining <= self.reserve:
            wait = min(max(reset_at - self._clock(), 0.0), self.max_wait)
            if wait > 0:
                log.info("rate limit nearly spent; waiting %.1fs for the window to reset", wait)
                self._sleep(wait)
                self.waits += 1
                self.waited += wait
            with self._lock:
                self._remaining = None
        yield

    def observe(self, response: requests.Response) -> None:
        remaining = response.headers.get("X-RateLimit-Remaining")
        reset = response.headers.get("X-RateLimit-Reset")
        with self._lock:
            try:
                self._remaining = int(remaining) if remaining is not None else None
                self._reset_at = float(reset) if reset is not None else None
            except ValueError:
                self._remaining = self._reset_at = None


@dataclass
class RetryPolicy:
    """How often and how long to retry. ``max_wait`` clamps any single wait."""

    attempts: int = 5
    backoff: float = 0.5
    max_wait: float = 120.0
    throttle_wait: float = 60.0  # QBO throttles without Retry-After: ~60 s, per Intuit
    sleep: Callable[[float], None] = field(default=time.sleep)

    def backoff_wait(self, attempt: int) -> float:
        return min(self.backoff * (2 ** (attempt - 1)) * (1 + random.random() / 4), self.max_wait)

    def clamp(self, seconds: float) -> float:
        return min(max(seconds, 0.0), self.max_wait)


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (or Clio's ``Retry-At``): a number or an HTTP date."""
    value = headers.get("Retry-After") or headers.get("Retry-At")
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def dumps(body: Any) -> str:
    """JSON with ``Decimal`` written as exact numbers (never through float)."""
    return simplejson.dumps(body, use_decimal=True)


def loads(text: str) -> Any:
    """JSON with every non-integer number read as ``Decimal``."""
    return simplejson.loads(text, use_decimal=True)


ErrorDecoder = Callable[[requests.Response], ApiError]


class ApiSession:
    """Sends requests for one service and one set of tokens."""

    def __init__(self, service: str, *, tokens: TokenSource, pacer: Pacer,
                 decode_error: ErrorDecoder, retry: RetryPolicy | None = None,
                 timeout: tuple[float, float] = (10.0, 120.0),
                 default_headers: Mapping[str, str] | None = None,
                 is_throttle: Callable[[requests.Response], bool] | None = None,
                 session: requests.Session | None = None) -> None:
        self.service = service
        self.tokens = tokens
        self.pacer = pacer
        self.decode_error = decode_error
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.is_throttle = is_throttle or (lambda r: r.status_code == 429)
        # One connection pool per service session (keep-alive). The environment is read
        # here, once, rather than by ``requests`` on every call (it scans the proxy variables
        # twice a request): proxies per host in ``_proxies_for``, the CA bundle below.
        self.http = session or requests.Session()
        self.http.trust_env = False
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle and self.http.verify is True:
            self.http.verify = bundle
        self._proxies: dict[tuple[str, str], dict[str, str]] = {}
        self.http.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
        if default_headers:
            self.http.headers.update(default_headers)
        self.calls = 0  # requests actually sent, for benchmarks and logs
        self.waited = 0.0  # seconds spent waiting on the rate limit (pacing and 429s)
        self.rate_limit: int | None = None  # the latest ``X-RateLimit-Limit`` (Clio sends it)
        self._label = service_label(service)

    def _note_limit(self, response: requests.Response) -> None:
        limit = response.headers.get("X-RateLimit-Limit")
        if limit is not None and limit.isdigit() and 0 < int(limit) <= 1_000_000:
            self.rate_limit = int(limit)

    def request(self, method: str, url: str, *, params: Mapping[str, Any] | None = None,
                json_body: Any = None, data: str | None = None,
                headers: Mapping[str, str] | None = None,
                idempotent: bool | None = None) -> requests.Response:
        """Send once, retrying only where that cannot duplicate a write.

        ``idempotent`` defaults to true for GET/PUT/DELETE. A non-idempotent request that times
        out or gets a 5xx raises :class:`ServiceDown` with ``ambiguous=True``: the caller must
        check whether the write happened before trying again.
        """
        if idempotent is None:
            idempotent = method.upper() in {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}
        send_headers = dict(headers or {})
        if json_body is not None:
            data = dumps(json_body)
            send_headers.setdefault("Content-Type", "application/json")
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            token = self.tokens.access_token()
            send_headers["Authorization"] = f"Bearer {token}"
            try:
                asked = time.monotonic()
                with self.pacer.slot():
                    self.waited += time.monotonic() - asked
                    self.calls += 1
                    API_REQUESTS.labels(self._label).inc()
                    response = self.http.request(method, url, params=params, data=data,
                                                 headers=send_headers, timeout=self.timeout,
                                                 proxies=self._proxies_for(url))
            except (requests.Timeout, requests.ConnectionError) as exc:
                sent = not isinstance(exc, requests.ConnectTimeout) and \
                    not _is_refused(exc)
                if (idempotent or not sent) and attempt < self.retry.attempts:
                    self._pause(self.retry.backoff_wait(attempt))
                    continue
                raise ServiceDown(
                    self.service,
                    f"{self.service} did not answer ({type(exc).__name__}).",
                    detail=_redact(str(exc)), ambiguous=sent and not idempotent,
                    unanswered=sent,
                ) from None
            self.pacer.observe(response)
            self._note_limit(response)
            if response.status_code == 401 and not refreshed:
                refreshed = True
                self.tokens.refresh(token)
                attempt -= 1
                continue
            if self.is_throttle(response):
                API_RATE_LIMITED.labels(self._label).inc()
                if attempt < self.retry.attempts:
                    asked_wait = retry_after_seconds(response.headers)
                    wait = self.retry.clamp(
                        self.retry.throttle_wait if asked_wait is None else asked_wait)
                    self._pause(wait)
                    self.waited += wait
                    continue
                decoded = self.decode_error(response)  # the service's own words and code
                if isinstance(decoded, Throttled):
                    raise decoded
                raise Throttled(self.service,
                                f"{self.service} is limiting requests; the next run will "
                                "try again.", status=response.status_code, code=decoded.code,
                                request_id=_request_id(response))
            if response.status_code >= 500:
                if idempotent and attempt < self.retry.attempts:
                    self._pause(self.retry.backoff_wait(attempt))
                    continue
                error = self.decode_error(response)
                raise ServiceDown(self.service, error.message, status=response.status_code,
                                  code=error.code, detail=error.detail,
                                  request_id=error.request_id, ambiguous=not idempotent)
            if response.status_code >= 400:
                raise self.decode_error(response)
            return response


    def _pause(self, seconds: float) -> None:
        """A retry's wait; a shared pacer first gives back the tokens it would outlast."""
        give_back = getattr(self.pacer, "give_back", None)
        if give_back is not None:
            give_back(outlasting=seconds)
        self.retry.sleep(seconds)

    def _proxies_for(self, url: str) -> dict[str, str]:
        """``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` and ``NO_PROXY`` for this URL's host,
        read from the environment the first time the session calls that host."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        proxies = self._proxies.get(key)
        if proxies is None:
            proxies = self._proxies[key] = dict(requests.utils.get_environ_proxies(url))
        return proxies


def _is_refused(exc: Exception) -> bool:
    text = str(exc)
    return "Connection refused" in text or "Failed to establish a new connection" in text


def _request_id(response: requests.Response) -> str | None:
    return response.headers.get("intuit_tid") or response.headers.get("X-Request-Id")


def _redact(text: str) -> str:
    """Strip anything that looks like a bearer token from text bound for logs or people."""
    import re

    return re.sub(r"(?i)(bearer\s+|access_token=|refresh_token=)[^\s&'\"]+", r"\1[redacted]",
                  text)


def parse_json(response: requests.Response) -> Any:
    return loads(response.text)


def as_decimal(value: Any) -> Decimal:
    """A money value from JSON as ``Decimal``; raises ``ValueError`` for anything else."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{value!r} is not an amount")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except ArithmeticError:
            raise ValueError(f"{value!r} is not an amount") from None
    else:
        raise ValueError(f"{value!r} is not an amount")
    if not result.is_finite():
        raise ValueError(f"{value!r} is not an amount")
    return result

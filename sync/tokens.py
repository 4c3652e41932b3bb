"""OAuth tokens kept in the database, refreshed when refused or about to expire.

QuickBooks rotates refresh tokens: the newest one must be stored before it is used again, and
two refreshes of one realm must never race (the loser would send a superseded token). Here a
refresh holds a process-wide lock per connection and the connection row's lock
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite serialises writers itself), re-reads the row,
and only refreshes if nobody else already has. The new tokens are committed before returning.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import requests
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync.http import (
    ConfigError,
    ReconnectRequired,
    Throttled,
    TransientError,
    loads,
)
from hardcost.sync.store import PROVIDER_NAMES, Connection, utcnow

log = logging.getLogger(__name__)

EARLY_REFRESH = timedelta(minutes=2)


@dataclass(frozen=True)
class TokenGrant:
    access_token: str = field(repr=False)  # secrets stay out of reprs, logs and errors
    refresh_token: str | None = field(repr=False)  # None: keep ours (Clio may not send one)
    expires_in: int | None
    refresh_expires_in: int | None = None
    hard_expires_in: int | None = None  # QBO's 5-year cap, when asked for


Refresher = Callable[[str], TokenGrant]
QBO_TOKEN_HEADERS = {"Accept": "application/json",
                     "x-include-refresh-token-hard-expires-in": "true"}

_locks: dict[tuple[int, str], threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(firm_id: int, provider: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault((firm_id, provider), threading.Lock())


class StoredTokens:
    """A ``TokenSource`` backed by the ``connections`` row of one firm and provider."""

    def __init__(self, sessions: sessionmaker[Session], firm_id: int, provider: str,
                 refresher: Refresher, clock: Callable[[], datetime] = utcnow) -> None:
        self.sessions = sessions
        self.firm_id = firm_id
        self.provider = provider
        self.refresher = refresher
        self.clock = clock
        self._access: str | None = None
        self._expires_at: datetime | None = None

    def _row(self, session: Session, *, lock: bool = False) -> Connection:
        where = (Connection.firm_id == self.firm_id, Connection.provider == self.provider)
        if lock:
            # A write first: it takes the row lock on PostgreSQL and the database's write
            # lock on SQLite, so refreshes of one connection queue up across processes too.
            session.execute(update(Connection).where(*where).values(
                updated_at=Connection.updated_at))
        row = session.scalars(select(Connection).where(*where)).one_or_none()
        if row is None:
            raise ReconnectRequired(self.provider.title(),
                                    f"{self._service()} is not connected for this firm.")
        return row

    def _service(self) -> str:
        return PROVIDER_NAMES.get(self.provider, self.provider)

    def access_token(self) -> str:
        if self._access is None:
            with self.sessions() as session:
                row = self._row(session)
                self._access, self._expires_at = row.access_token, row.access_expires_at
        assert self._access is not None
        if self._expires_at is not None and self._expires_at - EARLY_REFRESH <= self.clock():
            return self.refresh(self._access)
        return self._access

    def refresh(self, rejected: str) -> str:
        with _lock_for(self.firm_id, self.provider), self.sessions() as session:
            row = self._row(session, lock=True)
            fresh = row.access_expires_at is None or \
                row.access_expires_at - EARLY_REFRESH > self.clock()
            if row.access_token != rejected and fresh:
                # Another thread or process refreshed while we waited for the lock.
                self._access, self._expires_at = row.access_token, row.access_expires_at
                session.commit()
                return row.access_token
            if row.broken_at is not None:
                raise ReconnectRequired(self._service(), f"{self._service()} needs to be "
                                        f"connected again ({row.broken_reason}).")
            if not row.refresh_token:
                raise ReconnectRequired(self._service(), f"{self._service()} needs to be "
                                        "connected again (no refresh token is stored).")
            try:
                grant = self.refresher(row.refresh_token)
            except ReconnectRequired as exc:
                session.rollback()
                mark_broken(self.sessions, self.firm_id, self.provider, broken_reason(exc),
                            self.clock())
                raise
            now = self.clock()
            row.access_token = grant.access_token
            if grant.refresh_token:
                row.refresh_token = grant.refresh_token
            row.access_expires_at = now + timedelta(seconds=grant.expires_in) \
                if grant.expires_in else None
            if grant.refresh_expires_in:
                row.refresh_expires_at = now + timedelta(seconds=grant.refresh_expires_in)
            if grant.hard_expires_in:
                row.hard_expires_at = now + timedelta(seconds=grant.hard_expires_in)
            session.commit()
            log.info("refreshed %s tokens for firm %s", self.provider, self.firm_id)
            self._access, self._expires_at = row.access_token, row.access_expires_at
            return row.access_token


def broken_reason(exc: ReconnectRequired) -> str:
    """Why a connection is broken, in the few words the notices put in brackets: the
    provider's own code (``invalid_grant``) when it gave one, else the whole sentence."""
    return exc.code or exc.message


def mark_broken(sessions: sessionmaker[Session], firm_id: int, provider: str, reason: str,
                now: datetime) -> None:
    """Record that the provider refused the connection for good (once; keeps the first time),
    and log it then: a connection already broken is not logged again by each run or pass that
    meets it (the token refresh and the run that stopped on it both call this)."""
    with sessions() as session:
        broke = session.execute(update(Connection).where(
            Connection.firm_id == firm_id, Connection.provider == provider,
            Connection.broken_at.is_(None)).values(broken_at=now, broken_reason=reason[:500]))
        session.commit()
    if getattr(broke, "rowcount", 0):
        log.warning("%s connection of firm %s is broken: %s", provider, firm_id, reason)


def store_grant(session: Session, firm_id: int, provider: str, grant: TokenGrant,
                now: datetime | None = None) -> Connection:
    """Insert or replace a firm's tokens for ``provider`` (caller commits)."""
    now = now or utcnow()
    row = session.scalars(select(Connection).where(
        Connection.firm_id == firm_id, Connection.provider == provider)).one_or_none()
    if row is None:
        row = Connection(firm_id=firm_id, provider=provider, access_token="")
        session.add(row)
    row.access_token = grant.access_token
    row.refresh_token = grant.refresh_token or row.refresh_token
    row.access_expires_at = now + timedelta(seconds=grant.expires_in) \
        if grant.expires_in else None
    row.refresh_expires_at = now + timedelta(seconds=grant.refresh_expires_in) \
        if grant.refresh_expires_in else None
    row.hard_expires_at = now + timedelta(seconds=grant.hard_expires_in) \
        if grant.hard_expires_in else None
    row.broken_at = row.broken_reason = row.broken_notified_at = None  # a fresh connection
    row.expiry_warned_at = None
    return row


REFUSED_FOR_GOOD = frozenset({"invalid_grant"})
"""OAuth errors that mean this connection is over (revoked, expired, already used): the person
must reconnect. Anything else a token endpoint answers is the service's or our app's trouble."""
APP_REFUSED = frozenset({"invalid_client", "unauthorized_client"})
"""OAuth errors about hardcost's own app credentials: the operator fixes them, not the firm."""


def grant_from_response(response: requests.Response, service: str) -> TokenGrant:
    """The tokens in an OAuth token endpoint's answer, or the error a person can act on.

    Only ``invalid_grant`` ends the connection (``ReconnectRequired``: the firm is paused and
    asked to reconnect). Refused app credentials are a ``ConfigError`` for the operator; a 429,
    a 408, a proxy's 4xx, a 5xx or an answer of an unknown shape is transient: the next run
    tries again with the same refresh token."""
    try:
        body: Any = loads(response.text)
    except ValueError:
        body = {}
    error = body.get("error") if isinstance(body, dict) else None
    code = error if isinstance(error, str) else None
    status = response.status_code
    if status == 200 and isinstance(body, dict) and isinstance(body.get("access_token"), str):
        try:
            return TokenGrant(
                access_token=body["access_token"],
                refresh_token=_text_or_none(body.get("refresh_token")),
                expires_in=_seconds(body.get("expires_in")),
                refresh_expires_in=_seconds(body.get("x_refresh_token_expires_in")),
                hard_expires_in=_seconds(body.get("x_refresh_token_hard_expires_in")),
            )
        except (TypeError, ValueError):
            pass  # an unknown shape: transient, below
    if code in REFUSED_FOR_GOOD:
        raise ReconnectRequired(service, f"{service} no longer accepts hardcost's connection "
                                f"({code}); reconnect {service}.", status=status, code=code)
    if code in APP_REFUSED or (status == 401 and code is None):
        prefix = {"QuickBooks": "QBO", "Clio": "CLIO"}.get(service, service.upper())
        raise ConfigError(service, f"{service} refused hardcost's app credentials "
                          f"({code or status}): check {prefix}_CLIENT_ID and "
                          f"{prefix}_CLIENT_SECRET.", status=status, code=code)
    if status == 429:
        raise Throttled(service, f"{service}'s sign-in service is limiting requests; the next "
                        "run will try again.", status=status, code=code)
    what = "is unavailable" if status >= 500 else f"answered {code or status}"
    raise TransientError(service, f"{service}'s sign-in service {what}; the next run will try "
                         "again.", status=status, code=code)


def _seconds(value: Any) -> int | None:
    """A lifetime in seconds, bounded (a century at most); None when absent."""
    if value in (None, ""):
        return None
    seconds = int(value)
    if not 0 < seconds <= 100 * 365 * 24 * 3600:
        raise ValueError(f"lifetime out of range: {seconds}")
    return seconds


def _text_or_none(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("refresh_token is not a string")
    return value


def qbo_refresher(token_url: str, client_id: str, client_secret: str,
                  timeout: float = 30.0) -> Refresher:
    def refresh(refresh_token: str) -> TokenGrant:
        try:
            response = requests.post(
                token_url, auth=(client_id, client_secret), timeout=timeout,
                data={"grant_type": "refresh_token", "refresh_token": refresh_token},
                headers=QBO_TOKEN_HEADERS)
        except requests.RequestException:
            raise TransientError("QuickBooks", "QuickBooks' sign-in service did not answer; "
                                 "the next run will try again.") from None
        return grant_from_response(response, "QuickBooks")

    return refresh


def clio_refresher(host: str, client_id: str, client_secret: str,
                   timeout: float = 30.0) -> Refresher:
    def refresh(refresh_token: str) -> TokenGrant:
        try:
            response = requests.post(
                f"{host.rstrip('/')}/oauth/token", timeout=timeout,
                data={"grant_type": "refresh_token", "refresh_token": refresh_token,
                      "client_id": client_id, "client_secret": client_secret},
                headers={"Accept": "application/json"})
        except requests.RequestException:
            raise TransientError("Clio", "Clio's sign-in service did not answer; the next run "
                                 "will try again.") from None
        return grant_from_response(response, "Clio")

    return refresh

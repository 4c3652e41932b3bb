"""Intuit OAuth 2.0 token bookkeeping for the QBO sandbox (no HTTP here).

Refresh tokens rotate on every refresh. The token just used is *superseded*: it keeps working for
a grace period, answering with the newest token of its grant, then dies (``invalid_grant``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

REFRESH_TOKEN_SECONDS = 8_726_400  # 101 days, rolling
REFRESH_TOKEN_HARD_SECONDS = 5 * 365 * 86_400
AUTH_CODE_SECONDS = 600


@dataclass
class _Grant:
    """One connection of the app to a company; its refresh tokens form a rotation chain."""

    realm_id: str
    created_at: float
    current: str = ""


@dataclass
class _RefreshToken:
    grant: _Grant
    issued_at: float
    superseded_at: float | None = None


@dataclass
class _AccessToken:
    realm_id: str
    expires_at: float


@dataclass
class _AuthCode:
    realm_id: str
    redirect_uri: str | None
    expires_at: float


@dataclass(frozen=True)
class TokenSet:
    """What a token endpoint call hands out."""

    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int
    hard_expires_in: int

    def body(self, *, include_hard_expiry: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "access_token": self.access_token,
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
            "x_refresh_token_expires_in": self.refresh_expires_in,
        }
        if include_hard_expiry:
            body["x_refresh_token_hard_expires_in"] = self.hard_expires_in
        return body


class TokenBook:
    """Access tokens, refresh tokens and authorization codes of every realm. Not thread-safe:
    the sandbox calls it under its own lock."""

    def __init__(self, access_token_seconds: int) -> None:
        self.access_token_seconds = access_token_seconds
        self._access: dict[str, _AccessToken] = {}
        self._refresh: dict[str, _RefreshToken] = {}
        self._codes: dict[str, _AuthCode] = {}

    def issue(self, realm_id: str, now: float) -> TokenSet:
        """A new grant, as after the authorization-code exchange."""
        grant = _Grant(realm_id, now)
        return self._token_set(grant, self._new_refresh_token(grant, now), now)

    def refresh(self, token: str, now: float, grace_seconds: float) -> TokenSet | None:
        """Rotate; None means ``invalid_grant``."""
        record = self._refresh.get(token)
        if record is None or now >= record.issued_at + REFRESH_TOKEN_SECONDS:
            return None
        grant = record.grant
        if grant.current == token:
            record.superseded_at = now
            return self._token_set(grant, self._new_refresh_token(grant, now), now)
        if record.superseded_at is not None and now < record.superseded_at + grace_seconds:
            return self._token_set(grant, grant.current, now)
        return None

    def authenticate(self, token: str, realm_id: str, now: float) -> bool:
        record = self._access.get(token)
        return record is not None and record.realm_id == realm_id and now < record.expires_at

    def expire_access_tokens(self) -> None:
        self._access.clear()

    def new_code(self, realm_id: str, redirect_uri: str | None, now: float) -> str:
        code = "AB" + secrets.token_urlsafe(24)
        self._codes[code] = _AuthCode(realm_id, redirect_uri, now + AUTH_CODE_SECONDS)
        return code

    def redeem_code(self, code: str, redirect_uri: str | None, now: float) -> str | None:
        """The code's realm, consuming the code; None if unknown, used, expired or mismatched."""
        record = self._codes.pop(code, None)
        if record is None or now >= record.expires_at:
            return None
        if record.redirect_uri is not None and record.redirect_uri != redirect_uri:
            return None
        return record.realm_id

    def revoke(self, token: str) -> None:
        """Disconnect the token's realm: every refresh and access token of it dies."""
        refresh = self._refresh.get(token)
        access = self._access.get(token)
        realm_id = refresh.grant.realm_id if refresh else access.realm_id if access else None
        if realm_id is None:
            return
        self._refresh = {t: r for t, r in self._refresh.items() if r.grant.realm_id != realm_id}
        self._access = {t: a for t, a in self._access.items() if a.realm_id != realm_id}

    def _new_refresh_token(self, grant: _Grant, now: float) -> str:
        token = "AB11" + secrets.token_urlsafe(36)
        self._refresh[token] = _RefreshToken(grant, now)
        grant.current = token
        return token

    def _token_set(self, grant: _Grant, refresh_token: str, now: float) -> TokenSet:
        access = "eyJ" + secrets.token_urlsafe(48)
        self._access[access] = _AccessToken(grant.realm_id, now + self.access_token_seconds)
        issued_at = self._refresh[refresh_token].issued_at
        return TokenSet(
            access_token=access,
            refresh_token=refresh_token,
            expires_in=self.access_token_seconds,
            refresh_expires_in=int(issued_at + REFRESH_TOKEN_SECONDS - now),
            hard_expires_in=int(grant.created_at + REFRESH_TOKEN_HARD_SECONDS - now),
        )

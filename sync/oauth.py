"""Connecting a firm's QuickBooks company and Clio account (OAuth 2.0 authorization code).

Slack-free: the bot asks for a link (:func:`start`), the browser comes back to the callback
route, which calls :func:`finish`. A ``state`` is random, single-use, expires in 10 minutes and
is bound to the Slack team and user who asked. Every outcome is a :class:`Outcome` with a
sentence for the page the person sees.

A connection made and one taken away are kept in the audit trail (``connected`` by the person
who asked for the link, ``disconnected`` by the person who asked), in the transaction that
stores or deletes the tokens. The trail names the service, never a token.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

import requests
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync import audit
from hardcost.sync.bounds import ID, fits
from hardcost.sync.config import CLIO_REGIONS, Settings
from hardcost.sync.http import ApiError, ConfigError
from hardcost.sync.leases import run_soon
from hardcost.sync.store import PROVIDER_NAMES, Connection, Firm, OAuthState, utcnow
from hardcost.sync.tokens import QBO_TOKEN_HEADERS, TokenGrant, grant_from_response, store_grant

log = logging.getLogger(__name__)

STATE_LIFETIME = timedelta(minutes=10)
QBO_SCOPE = "com.intuit.quickbooks.accounting"


@dataclass(frozen=True)
class Outcome:
    ok: bool
    title: str
    message: str
    firm_id: int | None = None
    provider: str | None = None
    slack_user_id: str | None = None
    status: int = 200


def callback_url(config: Settings, provider: str) -> str:
    return f"{config.public_url.rstrip('/')}/oauth/{provider}/callback"


def _require(value: str | None, name: str) -> str:
    if not value:
        raise ConfigError("hardcost", f"{name} is not set, so hardcost cannot connect; the "
                          "person who runs hardcost must set it.")
    return value


def start(sessions: sessionmaker[Session], config: Settings, firm_id: int, provider: str, *,
          slack_team_id: str | None, slack_user_id: str | None, region: str = "us",
          now: datetime | None = None) -> str:
    """A fresh authorization link for ``provider`` (quickbooks | clio)."""
    if provider not in PROVIDER_NAMES:
        raise ValueError(provider)
    if provider == "clio" and region not in CLIO_REGIONS:
        raise ConfigError("hardcost", f"“{region}” is not a Clio region: use one of "
                          f"{', '.join(CLIO_REGIONS)}.")
    now = now or utcnow()
    state = secrets.token_urlsafe(32)
    with sessions() as session:
        session.add(OAuthState(firm_id=firm_id, state=state, provider=provider,
                               region=region if provider == "clio" else None,
                               slack_team_id=slack_team_id, slack_user_id=slack_user_id,
                               created_at=now, expires_at=now + STATE_LIFETIME))
        session.commit()
    if provider == "quickbooks":
        return config.qbo_auth_url + "?" + urlencode({
            "client_id": _require(config.qbo_client_id, "QBO_CLIENT_ID"),
            "response_type": "code", "scope": QBO_SCOPE,
            "redirect_uri": callback_url(config, provider), "state": state})
    return config.clio_host(region) + "/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": _require(config.clio_client_id, "CLIO_CLIENT_ID"),
        "redirect_uri": callback_url(config, provider), "state": state})


def _refused(title: str, message: str, status: int = 400) -> Outcome:
    return Outcome(False, title, message, status=status)


def finish(sessions: sessionmaker[Session], config: Settings, provider: str, *,
           state: str | None, code: str | None, error: str | None, realm_id: str | None,
           now: datetime | None = None) -> Outcome:
    """Check the state, exchange the code, store the tokens; what to tell the person."""
    now = now or utcnow()
    name = PROVIDER_NAMES.get(provider, provider)
    again = f"Start again from Slack with `/hardcost connect {provider}`."
    if not state:
        return _refused("That link is incomplete", f"The answer from {name} had no state. "
                        + again)
    with sessions() as session:
        row = session.scalars(select(OAuthState).where(OAuthState.state == state)).first()
        if row is None or row.provider != provider:
            log.warning("%s callback with an unknown state", provider)
            return _refused("That link is not valid", f"hardcost did not make this {name} "
                            "link, or it was changed on the way. " + again)
        # Claim the state atomically: a replay, even a simultaneous one, finds it used.
        claimed = session.execute(update(OAuthState).where(
            OAuthState.id == row.id, OAuthState.used_at.is_(None)).values(used_at=now))
        session.commit()
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            return _refused("That link was already used", f"Each {name} link works once. "
                            + again)
        if row.expires_at < now:
            _outcome(session, row.id, "expired")
            return _refused("That link has expired", f"{name} links last 10 minutes. " + again)
        firm_id, region, user = row.firm_id, row.region or "us", row.slack_user_id
        if error:
            _outcome(session, row.id, "declined")
            return Outcome(False, f"{name} was not connected",
                           f"{name} said: {error.replace('_', ' ')}. Nothing was changed. "
                           "You can close this tab.", firm_id, provider, user)
        if not code:
            _outcome(session, row.id, "no_code")
            return _refused("That link is incomplete", f"{name} sent no code. " + again)
        if provider == "quickbooks":
            if not realm_id:
                _outcome(session, row.id, "no_realm")
                return _refused("That link is incomplete", "QuickBooks did not say which "
                                "company was chosen. " + again)
            if not fits(realm_id, ID):  # QuickBooks' company ids are numbers of a few digits
                _outcome(session, row.id, "bad_realm")
                return _refused("That link is not valid", "QuickBooks named the company by "
                                "an id it never uses. " + again)
            other = session.scalars(select(Firm).where(
                Firm.qbo_realm_id == realm_id, Firm.id != firm_id,
                Firm.active.is_(True))).first()
            firm = session.get(Firm, firm_id)
            assert firm is not None
            if other is not None:
                _outcome(session, row.id, "wrong_workspace")
                return Outcome(False, "Connected to another workspace",
                               "This QuickBooks company is already connected to another "
                               "Slack workspace's hardcost. Disconnect it there first.",
                               firm_id, provider, user, status=409)
            if firm.qbo_realm_id and firm.qbo_realm_id != realm_id and \
                    _connected(session, firm_id, "quickbooks"):
                _outcome(session, row.id, "other_company")
                return Outcome(False, "A different company is connected",
                               f"This workspace imports from QuickBooks company "
                               f"{firm.qbo_realm_id}. Run `/hardcost disconnect quickbooks` "
                               "first to switch companies.", firm_id, provider, user,
                               status=409)
    try:
        grant = _exchange(config, provider, code, region)
    except ApiError as exc:
        with sessions() as session:
            _outcome(session, row.id, "exchange_failed")
        return Outcome(False, f"{name} was not connected",
                       f"{exc.message} " + again, firm_id, provider, user, status=502)
    with sessions() as session:
        store_grant(session, firm_id, provider, grant, now)
        firm = session.get(Firm, firm_id)
        assert firm is not None
        if provider == "quickbooks":
            firm.qbo_realm_id = realm_id
            where = f"company {realm_id}"
        else:
            firm.clio_region = region
            where = f"region {region.upper()}"
        audit.record(session, firm_id, audit.Action.CONNECTED, user,
                     realm_id=realm_id if provider == "quickbooks" else None,
                     after={"service": provider, "where": where},
                     detail=f"{name} connected ({where}).", at=now)
        _outcome(session, row.id, "connected")
        run_soon(session, firm_id)  # a firm now ready imports at the next claim pass
        session.commit()
    log.info("firm %s connected %s", firm_id, provider)
    return Outcome(True, f"{name} is connected",
                   f"hardcost can now {'read expenses from' if provider == 'quickbooks' else 'write hard costs to'} "  # noqa: E501
                   f"{name}. You can close this tab and go back to Slack.", firm_id,
                   provider, user)


def _connected(session: Session, firm_id: int, provider: str) -> bool:
    return session.scalars(select(Connection.id).where(
        Connection.firm_id == firm_id, Connection.provider == provider)).first() is not None


def _outcome(session: Session, state_id: int, outcome: str) -> None:
    session.execute(update(OAuthState).where(OAuthState.id == state_id).values(outcome=outcome))
    session.commit()


def _exchange(config: Settings, provider: str, code: str, region: str) -> TokenGrant:
    redirect = callback_url(config, provider)
    try:
        if provider == "quickbooks":
            response = requests.post(
                config.qbo_token_url, timeout=30, headers=QBO_TOKEN_HEADERS,
                auth=(_require(config.qbo_client_id, "QBO_CLIENT_ID"),
                      _require(config.qbo_client_secret, "QBO_CLIENT_SECRET")),
                data={"grant_type": "authorization_code", "code": code,
                      "redirect_uri": redirect})
        else:
            response = requests.post(
                config.clio_host(region) + "/oauth/token", timeout=30,
                headers={"Accept": "application/json"},
                data={"grant_type": "authorization_code", "code": code,
                      "redirect_uri": redirect,
                      "client_id": _require(config.clio_client_id, "CLIO_CLIENT_ID"),
                      "client_secret": _require(config.clio_client_secret,
                                                "CLIO_CLIENT_SECRET")})
    except requests.RequestException:
        name = PROVIDER_NAMES[provider]
        raise ApiError(name, f"{name} did not answer.") from None
    return grant_from_response(response, PROVIDER_NAMES[provider])


def disconnect(sessions: sessionmaker[Session], config: Settings, firm_id: int,
               provider: str, *, actor: str | None = None,
               now: datetime | None = None) -> str:
    """Revoke at the provider and forget the tokens; a sentence saying what happened.
    ``actor`` (who asked) goes into the audit trail with the deletion."""
    name = PROVIDER_NAMES[provider]
    with sessions() as session:
        row = session.scalars(select(Connection).where(
            Connection.firm_id == firm_id, Connection.provider == provider)).first()
        firm = session.get(Firm, firm_id)
        if row is None or firm is None:
            return f"{name} was not connected."
        token, access = row.refresh_token or row.access_token, row.access_token
        region = firm.clio_region
    revoked = _revoke(config, provider, token, access, region)
    if revoked:
        done = f"{name} is disconnected: hardcost's access was revoked and its tokens deleted."
    else:
        done = (f"{name} is disconnected here (tokens deleted), but {name} did not confirm "
                f"the revocation: remove hardcost from {name}'s connected apps to be sure.")
    with sessions() as session:
        gone = session.execute(delete(Connection).where(Connection.firm_id == firm_id,
                                                        Connection.provider == provider))
        if gone.rowcount:  # type: ignore[attr-defined]
            audit.record(session, firm_id, audit.Action.DISCONNECTED, actor,
                         before={"service": provider}, at=now,
                         detail=f"{name} disconnected; the revocation was "
                         + ("confirmed." if revoked else f"not confirmed by {name}."))
        session.commit()
    return done


def _revoke(config: Settings, provider: str, token: str, access: str, region: str) -> bool:
    try:
        if provider == "quickbooks":
            response = requests.post(
                config.qbo_revoke_url, timeout=30, json={"token": token},
                auth=(config.qbo_client_id or "", config.qbo_client_secret or ""),
                headers={"Accept": "application/json"})
        else:
            response = requests.post(config.clio_host(region) + "/oauth/deauthorize",
                                     timeout=30, headers={"Authorization": f"Bearer {access}"})
    except requests.RequestException:
        return False
    return response.status_code < 300

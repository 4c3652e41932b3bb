"""Process configuration from the environment (README, "Configuration"; .env.example)."""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

INTUIT_AUTH_URL = "https://appcenter.intuit.com/connect/oauth2"
INTUIT_TOKEN_URL = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"
INTUIT_REVOKE_URL = "https://developer.api.intuit.com/v2/oauth2/tokens/revoke"
QBO_PRODUCTION = "https://quickbooks.api.intuit.com"

CLIO_REGIONS = {
    "us": "https://app.clio.com",
    "ca": "https://ca.app.clio.com",
    "eu": "https://eu.app.clio.com",
    "au": "https://au.app.clio.com",
}
DEFAULT_SQLITE_NAME = "hardcost.sqlite"


class Settings(BaseSettings):
    """Every variable README's "Configuration" names, read once from the environment."""

    # An empty variable is an unset one: an env file (systemd's EnvironmentFile=, or
    # ``set -a; . .env``) sets every ``NAME=`` line it has, empty or not.
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore",
                                      env_ignore_empty=True)

    database_url: str = Field(default="", alias="DATABASE_URL")
    hardcost_secret_key: str | None = Field(default=None, alias="HARDCOST_SECRET_KEY")
    public_url: str = Field(default="http://localhost:3000", alias="PUBLIC_URL")
    port: int = Field(default=3000, ge=0, le=65535, alias="PORT")
    host: str = Field(default="0.0.0.0", min_length=1, max_length=255, alias="HARDCOST_HOST")
    """The address ``hardcost serve`` listens on: ``0.0.0.0`` (every IPv4 address),
    ``127.0.0.1``, ``::`` (every IPv6 address, and IPv4 too where the system allows), ``::1``..."""
    metrics_port: int | None = Field(default=None, ge=1, le=65535,
                                     alias="HARDCOST_METRICS_PORT")
    """When set, ``/metrics`` is served on this port of 127.0.0.1 only, not on ``PORT``."""
    metrics_token: SecretStr | None = Field(default=None, alias="HARDCOST_METRICS_TOKEN")
    """When set, ``/metrics`` answers only ``Authorization: Bearer <this token>`` (401)."""

    slack_bot_token: str | None = Field(default=None, alias="SLACK_BOT_TOKEN")
    slack_signing_secret: str | None = Field(default=None, alias="SLACK_SIGNING_SECRET")
    slack_client_id: str | None = Field(default=None, alias="SLACK_CLIENT_ID")
    slack_client_secret: str | None = Field(default=None, alias="SLACK_CLIENT_SECRET")
    slack_app_token: str | None = Field(default=None, alias="SLACK_APP_TOKEN")
    slack_api_url: str = Field(default="https://slack.com/api/", alias="SLACK_API_URL")

    qbo_client_id: str | None = Field(default=None, alias="QBO_CLIENT_ID")
    qbo_client_secret: str | None = Field(default=None, alias="QBO_CLIENT_SECRET")
    qbo_webhook_verifier: str | None = Field(default=None, alias="QBO_WEBHOOK_VERIFIER")
    qbo_api_base: str = Field(default=QBO_PRODUCTION, alias="QBO_API_BASE")
    qbo_auth_url: str = Field(default=INTUIT_AUTH_URL, alias="QBO_AUTH_URL")
    qbo_token_url: str = Field(default=INTUIT_TOKEN_URL, alias="QBO_TOKEN_URL")
    qbo_revoke_url: str = Field(default=INTUIT_REVOKE_URL, alias="QBO_REVOKE_URL")

    clio_client_id: str | None = Field(default=None, alias="CLIO_CLIENT_ID")
    clio_client_secret: str | None = Field(default=None, alias="CLIO_CLIENT_SECRET")
    clio_base_url: str | None = Field(default=None, alias="CLIO_BASE_URL")

    # For operations and tests (README, "Configuration", second table).
    schedule_unit_seconds: float = Field(default=60.0, gt=0,
                                         alias="HARDCOST_SCHEDULE_UNIT_SECONDS")
    """How long one minute of a firm's ``schedule_minutes`` lasts (tests shorten it)."""
    pacing_unit_seconds: float = Field(default=60.0, ge=0.01, le=60.0,
                                       alias="HARDCOST_PACING_UNIT_SECONDS")
    """How long one minute of QuickBooks' and Clio's rate limits lasts for the shared pacing
    (PostgreSQL): tests and benchmarks shorten it with the sandbox's Clio window."""
    scheduler_refresh_seconds: float = Field(
        default=10.0, gt=0, validation_alias=AliasChoices(
            "HARDCOST_SCHEDULER_REFRESH_SECONDS",
            "HARDCOST_SCHEDULER_RECONCILE_SECONDS"))  # its name before 0.2, still read
    """How often ``hardcost serve`` looks for firms whose scheduled run is due."""

    scheduler_threads: int = Field(default=8, ge=1, le=64, alias="HARDCOST_IMPORT_THREADS")
    """Scheduled imports one process runs at once (each holds one database connection)."""
    lease_seconds: float = Field(default=180.0, ge=1, le=3600, alias="HARDCOST_LEASE_SECONDS")
    """How long a run's lease holds without renewal: a dead replica's firms wait this long."""
    db_pool_size: int = Field(default=10, ge=1, le=200, alias="HARDCOST_DB_POOL_SIZE")
    db_max_overflow: int = Field(default=10, ge=0, le=200, alias="HARDCOST_DB_MAX_OVERFLOW")
    db_pool_timeout: float = Field(default=60.0, gt=0, le=600,
                                   alias="HARDCOST_DB_POOL_TIMEOUT")
    retention_days: int = Field(default=30, ge=1, le=3650, alias="HARDCOST_RETENTION_DAYS")
    """How long sent Slack messages, quiet runs and processed webhook events are kept."""
    progress_after_seconds: float = Field(default=15.0, ge=1, le=3600,
                                          alias="HARDCOST_PROGRESS_AFTER_SECONDS")
    """A run still going after this long posts its progress in the firm's channel."""
    progress_every_seconds: float = Field(default=15.0, ge=1, le=3600,
                                          alias="HARDCOST_PROGRESS_EVERY_SECONDS")
    """How often that progress message is updated, at most."""

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path.cwd() / DEFAULT_SQLITE_NAME}"

    def clio_host(self, region: str) -> str:
        """The Clio host for a firm's region, unless ``CLIO_BASE_URL`` overrides it."""
        if self.clio_base_url:
            return self.clio_base_url.rstrip("/")
        try:
            return CLIO_REGIONS[region]
        except KeyError:
            raise ValueError(
                f"Unknown Clio region {region!r}: use one of {', '.join(CLIO_REGIONS)}"
            ) from None


def variable_names() -> set[str]:
    """Every environment variable :class:`Settings` reads."""
    names: set[str] = set()
    for info in Settings.model_fields.values():
        if info.alias:
            names.add(info.alias)
        if isinstance(info.validation_alias, AliasChoices):
            names.update(c for c in info.validation_alias.choices if isinstance(c, str))
        elif isinstance(info.validation_alias, str):
            names.add(info.validation_alias)
    return names


def unset_empty_variables(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Remove the empty ones of hardcost's variables (and of every ``SLACK_*``) from the
    process environment, so that libraries reading it themselves see them unset as hardcost
    does: Slack's Bolt takes ``SLACK_CLIENT_ID=`` and ``SLACK_CLIENT_SECRET=`` (empty) for
    multi-workspace mode and then answers every command "your installation ... is no longer
    available". Returns the names removed."""
    env = os.environ if environ is None else environ
    names = variable_names()
    empty = [name for name, value in env.items()
             if value == "" and (name in names or name.startswith(("SLACK_", "HARDCOST_")))]
    for name in empty:
        del env[name]
    return empty


class SettingsError(ValueError):
    """A variable holds a value hardcost cannot use; the message names it, one line each."""


def _problem(error: Any) -> str:
    loc = error.get("loc") or ("?",)
    name = str(loc[0])
    shown = str(error.get("input", ""))
    shown = shown if len(shown) <= 40 else shown[:40] + "…"
    return (f"{name}={shown} is not valid: {error.get('msg', 'invalid value')}. Fix {name} "
            "in the environment (or leave it unset for its default; see .env.example).")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings; :class:`SettingsError` names the variables holding unusable values."""
    try:
        return Settings()
    except ValidationError as exc:
        errors = exc.errors()
        lines = [_problem(error) for error in errors[:2]]
        if len(errors) > 2:
            lines.append(f"({len(errors) - 2} more variables are not valid either.)")
        raise SettingsError("\n".join(lines)) from None

"""Connecting to the database: an engine with what each backend needs (SQLite's pragmas and
Unicode ``lower()``, PostgreSQL's pool, idle pings and PgBouncer-safe statements), the key ring
for stored secrets, and the session factory (docs/operations.md, "Database connections")."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, DisconnectionError, NoSuchModuleError
from sqlalchemy.orm import sessionmaker

from hardcost.sync.crypto import configure_encryption

URL_FORMS = ("sqlite:////absolute/path.sqlite or "
             "postgresql://user:password@host:5432/name")


class DatabaseUrlError(ValueError):
    """``DATABASE_URL`` is not a URL of a database hardcost can use (the message says why,
    without the URL: it may hold a password)."""


def _url_problem(url: str, exc: Exception) -> str:
    if "://" not in url or (isinstance(exc, ArgumentError)
                            and not isinstance(exc, NoSuchModuleError)):
        return f"DATABASE_URL is not a database URL: use {URL_FORMS}."
    scheme = url.split("://", 1)[0][:30]
    if isinstance(exc, ModuleNotFoundError) and scheme.startswith(("postgresql", "sqlite")):
        return (f"DATABASE_URL: the driver for {scheme} is not installed ({exc.name}): "
                "reinstall hardcost.")
    return (f"DATABASE_URL names a {scheme} database, which hardcost does not support: use "
            f"{URL_FORMS}.")


def make_engine(url: str, *, secret_key: str | None = None) -> Engine:
    """An engine with the per-backend settings this app relies on.

    Also sets up the key ring that encrypts stored secrets for this engine (and as the process
    default): from ``secret_key`` if given, else ``HARDCOST_SECRET_KEY``, else — SQLite only —
    the ``hardcost.key`` file beside the database. Raises ``SecretKeyError`` when there is none.
    """
    try:
        engine = _create_engine(url)
    except (ArgumentError, NoSuchModuleError, ModuleNotFoundError) as exc:
        raise DatabaseUrlError(_url_problem(url, exc)) from None
    if secret_key is None:
        configure_encryption(url, engine=engine)
    else:
        configure_encryption(url, secret_key, engine=engine)
    return engine


def _sqlite_lower(value: Any) -> Any:
    """SQLite's ``lower()`` as PostgreSQL's: every letter lower-cased, not only ASCII."""
    return value.lower() if isinstance(value, str) else value


def _create_engine(url: str, pool: PoolSettings | None = None) -> Engine:
    # hide_parameters: SQL errors and logs never show bound values, which may be secrets.
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()
            # SQLite's own lower() folds ASCII only; PostgreSQL's folds every letter, so that
            # a search (``audit.latest``) finds "ÖZTÜRK" from "öztürk" on both databases.
            dbapi_conn.create_function("lower", 1, _sqlite_lower, deterministic=True)

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    pool = pool or PoolSettings.from_environment()
    # prepare_threshold=None: no server-side prepared statements, so PgBouncer in transaction
    # mode (where a statement prepared on one server connection is gone on the next) works.
    engine = create_engine(url, hide_parameters=True, pool_size=pool.size,
                           max_overflow=pool.max_overflow, pool_timeout=pool.timeout,
                           pool_recycle=pool.recycle, connect_args={"prepare_threshold": None})
    _ping_when_idle(engine, pool.ping_after_idle)
    return engine


@dataclass(frozen=True)
class PoolSettings:
    """PostgreSQL connections of one process (docs/operations.md, "Database connections").

    At most ``size + max_overflow`` at once: an import holds one for its run, Slack
    listeners and the web routes borrow one for a moment. ``HARDCOST_DB_POOL_SIZE``,
    ``HARDCOST_DB_MAX_OVERFLOW``, ``HARDCOST_DB_POOL_TIMEOUT`` set them."""

    size: int = 10
    max_overflow: int = 10
    timeout: float = 60.0
    recycle: int = 1800  # seconds: connections are replaced before servers or NATs drop them
    ping_after_idle: float = 30.0  # seconds idle in the pool before a checkout pings it

    @classmethod
    def from_environment(cls) -> PoolSettings:
        from hardcost.sync.config import get_settings

        config = get_settings()
        return cls(size=config.db_pool_size, max_overflow=config.db_max_overflow,
                   timeout=config.db_pool_timeout)


def _ping_when_idle(engine: Engine, idle: float) -> None:
    """Ping a pooled connection at checkout only when it sat idle ``idle`` seconds or more
    (a restarted server or a dropped link shows then), instead of before every checkout as
    ``pool_pre_ping`` does: one round trip less for each of a run's many short sessions."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < idle:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # noqa: BLE001 - any failure: the pool takes a new one
            raise DisconnectionError("an idle connection no longer answers") from exc
        if not alive:
            raise DisconnectionError("an idle connection no longer answers")


def make_session_factory(engine: Engine) -> sessionmaker[Any]:
    return sessionmaker(engine, expire_on_commit=False)

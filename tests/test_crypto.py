"""Stored tokens are encrypted at rest (HARDCOST_SECRET_KEY), on both backends."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from alembic import command
from cryptography.fernet import Fernet
from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync.crypto import (
    KEY_FILE_NAME,
    KeyRing,
    RedactSecrets,
    SecretDecryptError,
    SecretKeyError,
    generate_key,
    load_keyring,
    read_or_create_key_file,
)
from hardcost.sync.db import alembic_config
from hardcost.sync.engine import make_engine, make_session_factory
from hardcost.sync.store import Connection
from hardcost.sync.store import Firm as FirmRow
from hardcost.sync.tokens import StoredTokens, TokenGrant, qbo_refresher, store_grant
from tests.firmkit import Firm

ACCESS = "access-TOKEN-a1b2c3d4e5f6"
REFRESH = "refresh-TOKEN-9z8y7x6w5v"


def hardcost(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hardcost", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def _firm_with_tokens(sessions: sessionmaker[Session], access: str = ACCESS,
                      refresh: str | None = REFRESH, provider: str = "quickbooks") -> int:
    with sessions() as session:
        firm = FirmRow(name="Crypto LLP", qbo_realm_id="4620816365")
        session.add(firm)
        session.flush()
        store_grant(session, firm.id, provider, TokenGrant(access, refresh, 3600))
        session.commit()
        return firm.id


def _raw(engine: Engine) -> list[tuple[str | None, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT access_token, refresh_token FROM connections "
                                 "ORDER BY id")).all()
    return [(row[0], row[1]) for row in rows]


def _tokens(sessions: sessionmaker[Session]) -> list[tuple[str, str | None]]:
    with sessions() as session:
        rows = session.scalars(select(Connection).order_by(Connection.id)).all()
        return [(row.access_token, row.refresh_token) for row in rows]


# -- at rest -----------------------------------------------------------------------------------

def test_the_raw_database_holds_no_token_text(
        sessions: sessionmaker[Session], db_engine: Engine, database_url: str) -> None:
    _firm_with_tokens(sessions)

    [(access, refresh)] = _raw(db_engine)

    assert access is not None and refresh is not None
    for stored in (access, refresh):
        assert ACCESS not in stored and REFRESH not in stored
        assert "TOKEN" not in stored
    if database_url.startswith("sqlite"):  # nor anywhere in the file (or its write-ahead log)
        db_engine.dispose()
        path = Path(database_url.removeprefix("sqlite:///"))
        data = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        assert ACCESS.encode() not in data and REFRESH.encode() not in data


def test_tokens_round_trip(sessions: sessionmaker[Session]) -> None:
    _firm_with_tokens(sessions)
    _firm_with_tokens(sessions, access="ünïcode-äccess-tøken", refresh=None, provider="clio")

    assert _tokens(sessions) == [(ACCESS, REFRESH), ("ünïcode-äccess-tøken", None)]


def test_a_null_refresh_token_stays_null(
        sessions: sessionmaker[Session], db_engine: Engine) -> None:
    _firm_with_tokens(sessions, refresh=None)

    assert _raw(db_engine)[0][1] is None


def test_equal_tokens_encrypt_differently(
        sessions: sessionmaker[Session], db_engine: Engine) -> None:
    _firm_with_tokens(sessions, access="same-token-twice", refresh="same-token-twice")

    [(access, refresh)] = _raw(db_engine)
    assert access != refresh


def test_a_refresh_stores_the_new_tokens_encrypted(firm: Firm, db_engine: Engine) -> None:
    firm.world.qbo.expire_access_tokens()

    firm.run()

    with firm.sessions() as session:
        row = session.scalars(select(Connection).where(
            Connection.firm_id == firm.id, Connection.provider == "quickbooks")).one()
        plain = (row.access_token, row.refresh_token)
    raw = [value for pair in _raw(db_engine) for value in pair]
    assert all(token not in stored for token in plain for stored in raw if stored)


# -- where the key comes from -----------------------------------------------------------------

def test_sqlite_key_file_is_created_0600_once_and_reused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'firm.sqlite'}"
    key_file = tmp_path / KEY_FILE_NAME

    first = load_keyring(url, None)
    content = key_file.read_text()
    second = load_keyring(url, None)

    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text() == content
    Fernet(content.strip().encode())  # a real key
    assert second.decrypt(first.encrypt("kept across restarts")) == "kept across restarts"


def test_key_file_is_created_once_by_racing_processes(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE_NAME
    rings: list[KeyRing] = []
    barrier = threading.Barrier(8)

    def load() -> None:
        barrier.wait()
        rings.append(read_or_create_key_file(path))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    secret = rings[0].encrypt("one key for all")
    assert len(rings) == 8 and all(r.decrypt(secret) == "one key for all" for r in rings)


def test_key_file_that_others_can_read_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'firm.sqlite'}"
    load_keyring(url, None)
    key_file = tmp_path / KEY_FILE_NAME
    key_file.chmod(0o644)
    key = key_file.read_text().strip()

    with pytest.raises(SecretKeyError) as refused:
        load_keyring(url, None)

    message = str(refused.value)
    assert f"chmod 600 {key_file}" in message and "0644" in message
    assert key not in message


def test_the_environment_key_wins_over_the_key_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'firm.sqlite'}"
    key = generate_key()

    ring = load_keyring(url, key)

    assert not (tmp_path / KEY_FILE_NAME).exists()
    assert KeyRing([key], "k").decrypt(ring.encrypt("x")) == "x"


@pytest.mark.parametrize("url", ["postgresql://hardcost@db.example/hardcost",
                                 "postgresql+psycopg://u:p@127.0.0.1:5432/x"])
def test_postgresql_without_a_key_is_a_clear_startup_error(url: str) -> None:
    with pytest.raises(SecretKeyError) as refused:
        load_keyring(url, None)

    assert str(refused.value) == ("HARDCOST_SECRET_KEY is required with PostgreSQL: generate "
                                  "one with `hardcost keys generate`.")


def test_cli_on_postgresql_without_a_key_says_so() -> None:
    env = {k: v for k, v in os.environ.items() if k != "HARDCOST_SECRET_KEY"}
    env["DATABASE_URL"] = "postgresql://hardcost@127.0.0.1:9/nowhere"

    result = hardcost("sync", env=env)

    assert result.returncode == 1
    assert "HARDCOST_SECRET_KEY is required with PostgreSQL" in result.stderr
    assert "hardcost keys generate" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("value", ["not-a-key-but-SECRET-looking",
                                   generate_key() + ",short-SECRET-value",
                                   "x" * 44])
def test_malformed_key_names_the_variable_and_never_echoes_it(value: str) -> None:
    with pytest.raises(SecretKeyError) as refused:
        load_keyring("sqlite:///unused.sqlite", value)

    message = str(refused.value)
    assert "HARDCOST_SECRET_KEY" in message and "malformed" in message
    for part in value.split(","):
        assert part not in message
    assert "SECRET" not in message.replace("SECRET_KEY", "")


def test_malformed_key_on_the_command_line(tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite'}",
           "HARDCOST_SECRET_KEY": "hunter2-SECRET"}

    result = hardcost("db", "upgrade", env=env)

    assert result.returncode == 1 and "HARDCOST_SECRET_KEY is malformed" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout and "Traceback" not in result.stderr


def test_a_missing_key_cannot_decrypt_and_says_what_to_do(
        database_url: str, sessions: sessionmaker[Session]) -> None:
    _firm_with_tokens(sessions)
    stranger = make_engine(database_url, secret_key=generate_key())

    with pytest.raises(SecretDecryptError) as refused:
        _tokens(make_session_factory(stranger))
    stranger.dispose()

    assert "cannot be decrypted" in str(refused.value) and ACCESS not in str(refused.value)


# -- rotation ----------------------------------------------------------------------------------

def test_keys_generate_prints_a_fernet_key() -> None:
    result = hardcost("keys", "generate", env=dict(os.environ))

    assert result.returncode == 0, result.stderr
    Fernet(result.stdout.strip().encode())
    assert result.stdout.strip() != hardcost("keys", "generate", env=dict(os.environ)).stdout


def test_rotate_re_encrypts_every_row_with_the_newest_key(database_url: str) -> None:
    old, new = generate_key(), generate_key()
    with_old = make_engine(database_url, secret_key=old)
    _firm_with_tokens(make_session_factory(with_old))
    _firm_with_tokens(make_session_factory(with_old), access="clio-access-XYZ", refresh=None,
                      provider="clio")
    before = _raw(with_old)
    with_old.dispose()
    env = {**os.environ, "DATABASE_URL": database_url, "HARDCOST_SECRET_KEY": f"{new},{old}"}

    result = hardcost("keys", "rotate", env=env)

    assert result.returncode == 0, result.stderr
    assert "Re-encrypted 2 rows" in result.stdout
    assert old not in result.stdout + result.stderr and new not in result.stdout
    only_new = make_engine(database_url, secret_key=new)
    assert _tokens(make_session_factory(only_new)) == [(ACCESS, REFRESH),
                                                       ("clio-access-XYZ", None)]
    after = _raw(only_new)
    assert after != before and after[1][1] is None
    only_new.dispose()
    only_old = make_engine(database_url, secret_key=old)
    with pytest.raises(SecretDecryptError):
        _tokens(make_session_factory(only_old))
    only_old.dispose()


def test_rotate_keeps_a_token_refreshed_meanwhile(database_url: str) -> None:
    from hardcost.sync.crypto import rotate_secrets
    from hardcost.sync.store import Base

    old, new = generate_key(), generate_key()
    engine = make_engine(database_url, secret_key=f"{new},{old}")
    sessions = make_session_factory(engine)
    _firm_with_tokens(sessions)
    ring = KeyRing([new, old], "test")
    real_rotate = ring.rotate
    raced = []

    def rotate_while_a_refresh_lands(ciphertext: str) -> str:
        if not raced:  # a server process stores fresh tokens between read and write
            raced.append(True)
            with sessions() as session:
                row = session.scalars(select(Connection)).one()
                row.access_token, row.refresh_token = "fresh-access-1", "fresh-refresh-1"
                session.commit()
        return real_rotate(ciphertext)

    ring.rotate = rotate_while_a_refresh_lands  # type: ignore[method-assign]
    with engine.begin() as conn:
        rows = rotate_secrets(conn, Base.metadata, ring)

    assert rows == 1 and raced
    only_new = make_engine(database_url, secret_key=new)
    assert _tokens(make_session_factory(only_new)) == [("fresh-access-1", "fresh-refresh-1")]
    only_new.dispose()
    engine.dispose()


def test_rotate_with_one_key_still_re_encrypts(database_url: str) -> None:
    key = generate_key()
    engine = make_engine(database_url, secret_key=key)
    _firm_with_tokens(make_session_factory(engine))
    before = _raw(engine)
    env = {**os.environ, "DATABASE_URL": database_url, "HARDCOST_SECRET_KEY": key}

    result = hardcost("keys", "rotate", env=env)

    assert result.returncode == 0, result.stderr
    assert "Re-encrypted 1 row " in result.stdout
    assert _raw(engine) != before and _tokens(make_session_factory(engine)) == [
        (ACCESS, REFRESH)]
    engine.dispose()


# -- the migration ----------------------------------------------------------------------------

def test_migration_0002_encrypts_existing_rows_and_downgrade_decrypts(
        db_engine: Engine, sessions: sessionmaker[Session]) -> None:
    _firm_with_tokens(sessions)
    config = alembic_config(db_engine.url.render_as_string(hide_password=False))

    def migrate(step: str, revision: str) -> None:
        with db_engine.begin() as conn:
            config.attributes["connection"] = conn
            getattr(command, step)(config, revision)

    try:
        migrate("downgrade", "0001")
        assert _raw(db_engine) == [(ACCESS, REFRESH)]  # plaintext, as 0001 stored it
        with db_engine.begin() as conn:  # nulls pass through the migration untouched
            conn.execute(text("UPDATE connections SET refresh_token = NULL"))
    finally:
        migrate("upgrade", "head")

    [(access, refresh)] = _raw(db_engine)
    assert access is not None and ACCESS not in access and refresh is None
    assert _tokens(sessions) == [(ACCESS, None)]


def test_migration_0002_downgrade_refuses_a_key_it_does_not_have(
        database_url: str, sessions: sessionmaker[Session]) -> None:
    _firm_with_tokens(sessions)
    stranger = make_engine(database_url, secret_key=generate_key())
    config = alembic_config(database_url)

    with pytest.raises(SecretDecryptError), stranger.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0001")
    stranger.dispose()

    assert _tokens(sessions) == [(ACCESS, REFRESH)]  # rolled back, nothing lost


# -- never in logs or errors -------------------------------------------------------------------

def test_failed_refresh_shows_no_token_in_logs_or_errors(
        firm: Firm, caplog: pytest.LogCaptureFixture) -> None:
    firm.world.qbo.refresh_grace_seconds = 0
    with firm.sessions() as session:
        row = session.scalars(select(Connection).where(
            Connection.firm_id == firm.id, Connection.provider == "quickbooks")).one()
    firm.world.qbo.expire_access_tokens()
    # Someone else used the refresh token: ours is superseded and the refresh will be refused.
    tokens = StoredTokens(firm.sessions, firm.id, "quickbooks", qbo_refresher(
        f"{firm.world.qbo_server.url}/oauth2/v1/tokens/bearer", "sandbox-qbo-client",
        "sandbox-qbo-secret"))
    newer = tokens.refresh(row.access_token)
    with firm.sessions() as session:
        stored = session.get(Connection, row.id)
        assert stored is not None
        stored.access_token, stored.refresh_token = row.access_token, row.refresh_token
        session.commit()
    caplog.set_level(logging.DEBUG)

    summary = firm.run()

    assert summary.error is not None and "reconnect QuickBooks" in summary.error
    secrets = [row.access_token, row.refresh_token, newer]
    logged = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    for secret in secrets:
        assert secret and len(secret) > 8
        assert secret not in summary.error
        assert secret not in logged


def test_reprs_never_show_tokens() -> None:
    key = generate_key()
    grant = TokenGrant(ACCESS, REFRESH, 3600)
    ring = KeyRing([key], "HARDCOST_SECRET_KEY")

    assert ACCESS not in repr(grant) and REFRESH not in repr(grant)
    assert key not in repr(ring)


def test_log_filter_hides_stored_tokens(
        sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture) -> None:
    _firm_with_tokens(sessions)
    _tokens(sessions)  # read back: the filter now knows them
    caplog.handler.addFilter(RedactSecrets())
    log = logging.getLogger("tests.crypto")

    log.warning("careless: %s / %s", ACCESS, REFRESH)
    try:
        raise ValueError(f"boom {REFRESH}")
    except ValueError:
        log.exception("failed")
    log.warning("header Authorization: Bearer abc.def.ghi")

    assert ACCESS not in caplog.text and REFRESH not in caplog.text
    assert "abc.def.ghi" not in caplog.text and "[redacted]" in caplog.text


def test_bind_errors_do_not_show_parameters(sessions: sessionmaker[Session]) -> None:
    firm_id = _firm_with_tokens(sessions)

    with pytest.raises(Exception) as failed, sessions() as session:
        session.add(Connection(firm_id=firm_id, provider="quickbooks", access_token=ACCESS,
                               refresh_token=REFRESH))  # a duplicate: integrity error
        session.commit()

    assert ACCESS not in str(failed.value) and "gAAAAA" not in str(failed.value)


# -- Slack workspaces' tokens (multi-workspace mode, issue 10 #8) ------------------------------

SLACK_TOKEN = "xoxb-1111-2222-slackTOKENabcdef"


def _slack_install(engine: Engine) -> None:
    """What Bolt's install flow stores, through the same store class the app uses."""
    from slack_sdk.oauth.installation_store import Installation

    from hardcost.sync.slack_tables import EncryptedInstallationStore

    store = EncryptedInstallationStore(client_id="111.222", engine=engine)
    store.save(Installation(app_id="A1", team_id="T0CRYPTO", team_name="Crypto LLP",
                            bot_token=SLACK_TOKEN, bot_id="B1", bot_user_id="U0BOT",
                            bot_scopes=["commands"], user_id="U0ADMIN",
                            incoming_webhook_url="https://hooks.slack.com/services/T/B/secret"))


def _slack_raw(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        values = [row[0] for row in conn.execute(text("SELECT bot_token FROM slack_bots"))]
        values += [v for row in conn.execute(text(
            "SELECT bot_token, incoming_webhook_url FROM slack_installations")) for v in row]
    return values


def test_slack_bot_tokens_are_stored_encrypted_and_read_back(db_engine: Engine) -> None:
    from hardcost.sync.slack_tables import EncryptedInstallationStore

    _slack_install(db_engine)

    raw = _slack_raw(db_engine)
    assert len(raw) == 3 and all(value and "xoxb" not in value and "hooks.slack" not in value
                                 for value in raw)
    bot = EncryptedInstallationStore(client_id="111.222", engine=db_engine).find_bot(
        enterprise_id=None, team_id="T0CRYPTO")
    assert bot is not None and bot.bot_token == SLACK_TOKEN


def test_rotate_covers_the_slack_tokens(database_url: str) -> None:
    from hardcost.sync.slack_tables import EncryptedInstallationStore

    old, new = generate_key(), generate_key()
    with_old = make_engine(database_url, secret_key=old)
    _slack_install(with_old)
    with_old.dispose()
    env = {**os.environ, "DATABASE_URL": database_url, "HARDCOST_SECRET_KEY": f"{new},{old}"}

    result = hardcost("keys", "rotate", env=env)

    assert result.returncode == 0, result.stderr
    assert "Re-encrypted 2 rows" in result.stdout  # one bot row, one installation row
    only_new = make_engine(database_url, secret_key=new)
    bot = EncryptedInstallationStore(client_id="111.222", engine=only_new).find_bot(
        enterprise_id=None, team_id="T0CRYPTO")
    assert bot is not None and bot.bot_token == SLACK_TOKEN
    only_new.dispose()


def test_migration_0010_encrypts_stored_slack_tokens_and_downgrade_decrypts(
        db_engine: Engine) -> None:
    config = alembic_config(db_engine.url.render_as_string(hide_password=False))

    def migrate(step: str, revision: str) -> None:
        with db_engine.begin() as conn:
            config.attributes["connection"] = conn
            getattr(command, step)(config, revision)

    _slack_install(db_engine)
    try:
        migrate("downgrade", "0009")
        assert SLACK_TOKEN in _slack_raw(db_engine)  # as slack-sdk stored it before 0010
    finally:
        migrate("upgrade", "head")

    assert not any(SLACK_TOKEN in (value or "") for value in _slack_raw(db_engine))

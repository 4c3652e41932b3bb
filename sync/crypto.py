"""Encryption at rest of stored secrets (OAuth tokens), ``HARDCOST_SECRET_KEY`` (README,
"Configuration"; docs/operations.md, "Key rotation").

Keys are Fernet keys. ``HARDCOST_SECRET_KEY`` holds one, or several separated by commas,
newest first: new values are encrypted with the first, and every key in the list can read. To
rotate: put a new key (``hardcost keys generate``) first, keep the old one second, restart every
process, run ``hardcost keys rotate``, then drop the old key.

Without the variable, a SQLite database gets a key generated once into ``hardcost.key`` beside
the database file (mode 0600); PostgreSQL (any other database) refuses to start.

``sync.engine.make_engine`` configures the key ring for the engine it makes (and as the
process-wide default), so nothing else needs setting up. ``EncryptedText`` columns encrypt on
the way in and decrypt on the way out. Error messages never include a key or a secret.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import MetaData, Table, Text, TypeDecorator, select, update
from sqlalchemy import column as sa_column
from sqlalchemy import table as sa_table
from sqlalchemy.engine import Connection, Dialect, Engine, make_url

ENV_VAR = "HARDCOST_SECRET_KEY"
KEY_FILE_NAME = "hardcost.key"
GENERATE_HINT = "generate one with `hardcost keys generate`"

_FROM_ENV: Any = object()  # "read HARDCOST_SECRET_KEY from the environment"


class SecretKeyError(RuntimeError):
    """The key configuration is missing or unusable. The message never contains a key."""


class SecretDecryptError(RuntimeError):
    """A stored secret cannot be read with the configured keys. Never contains the secret."""


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


class KeyRing:
    """Fernet keys, newest first: encrypts with the newest, decrypts with any."""

    def __init__(self, keys: Sequence[str], source: str) -> None:
        if not keys:
            raise SecretKeyError(f"{source} holds no key: {GENERATE_HINT}.")
        fernets = []
        for number, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key.encode("utf-8")))
            except (ValueError, TypeError):
                which = f"key {number} of {len(keys)}" if len(keys) > 1 else "the key"
                raise SecretKeyError(
                    f"{source} is malformed: {which} is not a Fernet key (32 url-safe "
                    f"base64-encoded bytes); {GENERATE_HINT}.") from None
        self.source = source
        self.size = len(fernets)
        self._ring = MultiFernet(fernets)

    def __repr__(self) -> str:
        return f"<KeyRing {self.size} key(s) from {self.source}>"

    @classmethod
    def parse(cls, text: str, source: str) -> KeyRing:
        return cls([part for part in re.split(r"[,\s]+", text) if part], source)

    def encrypt(self, plaintext: str) -> str:
        return self._ring.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._ring.decrypt(ciphertext.encode("utf-8")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise SecretDecryptError(_cannot_decrypt(self.source)) from None

    def can_decrypt(self, value: str) -> bool:
        try:
            self._ring.decrypt(value.encode("utf-8"))
        except (InvalidToken, UnicodeError):
            return False
        return True

    def rotate(self, ciphertext: str) -> str:
        """The same secret, encrypted with the newest key."""
        try:
            return self._ring.rotate(ciphertext.encode("utf-8")).decode("ascii")
        except (InvalidToken, UnicodeError):
            raise SecretDecryptError(_cannot_decrypt(self.source)) from None


def _cannot_decrypt(source: str) -> str:
    return (f"A stored secret cannot be decrypted with the keys of {source}: the key it was "
            f"encrypted with is missing (add it back after the new key, comma-separated), or "
            f"the database was not migrated (`hardcost db upgrade`).")


def looks_encrypted(value: str) -> bool:
    """True for text shaped like a Fernet token (version byte 0x80, url-safe base64)."""
    return value.startswith("gAAAAA") and re.fullmatch(r"[A-Za-z0-9_\-]+=*", value) is not None


# -- where the keys come from ------------------------------------------------------------------

def _env_secret_key() -> str | None:
    from hardcost.sync.config import Settings

    return Settings().hardcost_secret_key


def load_keyring(url: str, secret_key: str | None = _FROM_ENV) -> KeyRing:
    """The key ring for the database at ``url``.

    ``secret_key`` is the value of ``HARDCOST_SECRET_KEY`` (default: read from the environment).
    Unset with SQLite → the key file beside the database (created on first use); unset with
    anything else → ``SecretKeyError``.
    """
    if secret_key is _FROM_ENV:
        secret_key = _env_secret_key()
    if secret_key is not None and secret_key.strip():
        return KeyRing.parse(secret_key, ENV_VAR)
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        backend = "PostgreSQL" if parsed.get_backend_name() == "postgresql" \
            else parsed.get_backend_name()
        raise SecretKeyError(f"{ENV_VAR} is required with {backend}: {GENERATE_HINT}.")
    database = parsed.database or ""
    if database.startswith("file:"):
        database = database.removeprefix("file:").split("?", 1)[0]
    if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
        # An in-memory database lives as long as the process: so can its key.
        return KeyRing([generate_key()], "an in-memory key")
    return read_or_create_key_file(Path(database).absolute().with_name(KEY_FILE_NAME))


def read_or_create_key_file(path: Path) -> KeyRing:
    """The keys in ``path``, which is created (0600, once, atomically) if it does not exist."""
    source = f"the key file {path}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise SecretKeyError(f"Cannot create {source} ({exc.strerror}): set {ENV_VAR} "
                             f"instead ({GENERATE_HINT}).") from None
    else:
        try:
            os.write(fd, (generate_key() + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        logging.getLogger(__name__).info("generated a new secret key in %s", path)
    text = _read_key_file(path, source)
    return KeyRing.parse(text, source)


def _read_key_file(path: Path, source: str) -> str:
    deadline = time.monotonic() + 2.0
    while True:
        try:
            info = path.stat()
            if info.st_mode & 0o077:
                raise SecretKeyError(
                    f"Refusing {source}: other users can access it (mode "
                    f"{stat.S_IMODE(info.st_mode):04o}). Run `chmod 600 {path}` and start "
                    "again.")
            text = path.read_text(encoding="ascii")
        except SecretKeyError:
            raise
        except (OSError, UnicodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not text"
            raise SecretKeyError(f"Cannot read {source} ({reason}).") from None
        if text.strip() or time.monotonic() > deadline:
            return text
        time.sleep(0.02)  # another process has just created it and is writing the key


# -- the key ring in force ---------------------------------------------------------------------

_lock = threading.Lock()
_default: KeyRing | None = None
_by_dialect: weakref.WeakKeyDictionary[Dialect, KeyRing] = weakref.WeakKeyDictionary()


def configure_encryption(url: str, secret_key: str | None = _FROM_ENV, *,
                         engine: Engine | None = None) -> KeyRing:
    """Load the key ring for ``url`` and make it the process-wide default (and ``engine``'s)."""
    global _default
    ring = load_keyring(url, secret_key)
    with _lock:
        _default = ring
        if engine is not None:
            _by_dialect[engine.dialect] = ring
    return ring


def use_keyring(engine: Engine, ring: KeyRing) -> None:
    """Make ``engine`` use ``ring`` (tests; key rotation)."""
    with _lock:
        _by_dialect[engine.dialect] = ring


def keyring_for(bind: Engine | Connection) -> KeyRing:
    """The key ring of ``bind``'s engine, configured from its URL if it has none yet."""
    ring = _by_dialect.get(bind.dialect)
    if ring is None:
        engine = bind if isinstance(bind, Engine) else bind.engine
        ring = configure_encryption(engine.url.render_as_string(hide_password=False),
                                    engine=engine)
    return ring


def _ring(dialect: Dialect) -> KeyRing:
    ring = _by_dialect.get(dialect) or _default
    if ring is None:
        raise SecretKeyError("Encryption of stored secrets is not configured: make engines "
                             "with sync.engine.make_engine (or call configure_encryption).")
    return ring


class EncryptedText(TypeDecorator[str]):
    """Text stored encrypted with the engine's key ring (Fernet: never equal twice).

    Encrypted columns cannot be compared in SQL: look rows up by other columns.
    """

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise TypeError(f"an encrypted column takes text, not {type(value).__name__}")
        secret_seen(value)
        return _ring(dialect).encrypt(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        plaintext = _ring(dialect).decrypt(value)
        secret_seen(plaintext)
        return plaintext

    def process_literal_param(self, value: str | None, dialect: Dialect) -> str:
        raise SecretKeyError("secrets are never rendered into SQL text")


def encrypted_columns(metadata: MetaData) -> list[tuple[Table, list[str]]]:
    """Each table with ``EncryptedText`` columns, and those columns' names."""
    found = []
    for table in metadata.sorted_tables:
        names = [c.name for c in table.columns if isinstance(c.type, EncryptedText)]
        if names:
            found.append((table, names))
    return found


def rotate_secrets(connection: Connection, metadata: MetaData, ring: KeyRing) -> int:
    """Re-encrypt every stored secret with the newest key; returns how many rows changed.

    Runs in the caller's transaction. A row is written only if it still holds what was read (a
    token refreshed meanwhile is read again), so a concurrent refresh is never overwritten.
    """
    rows = 0
    for table, names in encrypted_columns(metadata):
        key = [c.name for c in table.primary_key.columns]
        # The same table seen as plain text: values pass through untouched.
        plain = sa_table(table.name, *[sa_column(c.name, c.type)
                                       for c in table.primary_key.columns],
                         *[sa_column(name, Text) for name in names], schema=table.schema)
        pending = list(connection.execute(select(plain)).mappings())
        for _attempt in range(5):
            changed = []
            for row in pending:
                new = {name: ring.rotate(row[name]) for name in names if row[name] is not None}
                if not new:
                    continue
                where = [plain.c[k] == row[k] for k in key] + \
                    [plain.c[name] == row[name] if row[name] is not None
                     else plain.c[name].is_(None) for name in names]
                if connection.execute(update(plain).where(*where).values(new)).rowcount == 1:
                    rows += 1
                else:
                    changed.append(row)
            if not changed:
                break
            pending = [r for r in connection.execute(select(plain)).mappings()
                       if any(all(r[k] == c[k] for k in key) for c in changed)]
        else:
            raise RuntimeError(f"{table.name}: rows kept changing during the rotation; run "
                               "`hardcost keys rotate` again.")
    return rows


# -- secrets out of logs -----------------------------------------------------------------------

_seen: OrderedDict[str, None] = OrderedDict()
_seen_lock = threading.Lock()
_SEEN_LIMIT = 1024
_TOKEN_PATTERN = re.compile(r"(?i)(bearer\s+|access_token=|refresh_token=)[^\s&'\"]+")


def secret_seen(value: str) -> None:
    """Remember a secret (read or written) so that ``RedactSecrets`` can hide it."""
    if len(value) < 8:
        return
    with _seen_lock:
        _seen[value] = None
        _seen.move_to_end(value)
        while len(_seen) > _SEEN_LIMIT:
            _seen.popitem(last=False)


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    if secrets is None:
        with _seen_lock:
            secrets = list(_seen)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    return _TOKEN_PATTERN.sub(r"\1[redacted]", text)


class RedactSecrets(logging.Filter):
    """A handler filter that hides stored secrets and bearer tokens in log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True

"""``hardcost backup FILE``: a consistent copy of the database of ``DATABASE_URL`` while
``hardcost serve`` runs (docs/operations.md, "Backups and restore").

- SQLite: SQLite's online backup API (``sqlite3.Connection.backup``) in one step, so writers
  in WAL mode go on meanwhile; the copy is one self-contained file (journal mode DELETE),
  checked with ``PRAGMA quick_check``. No ``sqlite3`` program needed.
- PostgreSQL: ``pg_dump --format=custom`` (restored with ``pg_restore``); the password goes
  to it in ``PGPASSWORD``, never on its command line.

The copy is written beside ``FILE`` under a temporary name (mode 0600: it holds the firms'
data), then renamed, so ``FILE`` is never half-written. It never holds the encryption key.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

PG_DUMP_TIMEOUT = 6 * 3600  # seconds: a dump that takes longer is stuck


class BackupError(RuntimeError):
    """The backup could not be made; the message says why, in a line or two."""


@dataclass(frozen=True)
class Backup:
    path: Path
    kind: str  # "sqlite" or "postgresql"
    size: int
    source: str  # the database, without its password


def backup(database_url: str, target: Path) -> Backup:
    try:
        url = make_url(database_url)
    except ArgumentError:
        raise BackupError("DATABASE_URL is not a database URL") from None
    if target.exists():
        raise BackupError(f"{target} already exists: choose another name (a backup never "
                          "overwrites a file)")
    if not target.parent.is_dir():
        raise BackupError(f"{target.parent} is not a directory")
    backend = url.get_backend_name()
    partial = target.with_name(f".{target.name}.partial")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()  # left by a backup that was killed
    try:
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        if backend == "sqlite":
            source = _sqlite(url.database or "", partial)
        elif backend == "postgresql":
            source = _postgresql(database_url, partial)
        else:
            raise BackupError(f"hardcost backup knows SQLite and PostgreSQL, not {backend}")
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    return Backup(target, backend, target.stat().st_size, source)


def _sqlite(database: str, partial: Path) -> str:
    if not database or database == ":memory:" or database.startswith("file:"):
        raise BackupError("DATABASE_URL names no SQLite file to back up")
    path = Path(database)
    if not path.is_file():
        raise BackupError(f"there is no database at {path}: check DATABASE_URL")
    try:
        source = sqlite3.connect(path, timeout=30)  # only read; WAL lets writers go on
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open {path}: {exc}") from None
    try:
        copy = sqlite3.connect(partial)
        try:
            source.backup(copy)  # every page in one step: one read transaction, a consistent copy
            copy.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal beside it
            problems = [row[0] for row in copy.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise BackupError(f"the copy of {path} fails SQLite's check: {problems[0]}")
        finally:
            copy.close()
    except sqlite3.Error as exc:
        raise BackupError(f"the backup of {path} failed: {exc}") from None
    finally:
        source.close()
    return str(path)


def _postgresql(database_url: str, partial: Path) -> str:
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise BackupError("pg_dump is not installed, and a PostgreSQL backup needs it: install "
                          "PostgreSQL's client programs (Debian and Ubuntu: apt-get install "
                          "postgresql-client, the same major version as the server or newer)")
    url = make_url(database_url).set(drivername="postgresql")
    shown = url.render_as_string(hide_password=True)
    env = dict(os.environ)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    plain = url.set(password=None).render_as_string(hide_password=False)
    try:
        done = subprocess.run(
            [pg_dump, "--format=custom", "--no-password", f"--file={partial}",
             f"--dbname={plain}"], env=env, capture_output=True, text=True,
            timeout=PG_DUMP_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise BackupError(f"pg_dump did not finish in {PG_DUMP_TIMEOUT // 3600} hours") from None
    if done.returncode != 0:
        said = [line for line in done.stderr.strip().splitlines() if line.strip()][:2]
        raise BackupError(f"pg_dump failed (exit status {done.returncode}): "
                          + " / ".join(line.strip()[:300] for line in said))
    if partial.stat().st_size == 0:
        raise BackupError("pg_dump wrote nothing")
    return shown

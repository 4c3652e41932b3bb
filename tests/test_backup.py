"""``hardcost backup FILE`` (issue 27, "Running it for months"): a consistent copy while the
database is in use — SQLite's online backup API, PostgreSQL's ``pg_dump -Fc``."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from hardcost.sync import backup as backup_module
from hardcost.sync.backup import BackupError, backup
from tests.conftest import POSTGRES_URL


def hardcost(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | env
    return subprocess.run([sys.executable, "-m", "hardcost", *args], env=full,
                          capture_output=True, text=True, timeout=300)


# -- SQLite --------------------------------------------------------------------------------------

def test_sqlite_backup_while_another_connection_writes(tmp_path: Path) -> None:
    """A writer keeps inserting (WAL mode, as hardcost runs SQLite) while the backup is made:
    the backup opens on its own (one file, no -wal), passes SQLite's check, and holds a
    consistent prefix of the rows — every row up to some id, none missing in between."""
    database = tmp_path / "live.sqlite"
    setup = sqlite3.connect(database)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE entries (id INTEGER PRIMARY KEY, note TEXT NOT NULL)")
    setup.executemany("INSERT INTO entries (note) VALUES (?)", [("x" * 200,)] * 20_000)
    setup.commit()
    setup.close()

    stop = threading.Event()
    written = [0]

    def write() -> None:
        writer = sqlite3.connect(database, timeout=30)
        while not stop.is_set():
            writer.execute("INSERT INTO entries (note) VALUES (?)", ("y" * 200,))
            writer.commit()
            written[0] += 1
        writer.close()

    thread = threading.Thread(target=write)
    thread.start()
    try:
        while written[0] < 50:  # the writer is under way
            time.sleep(0.01)
        made = backup(f"sqlite:///{database}", tmp_path / "copy.sqlite")
        after = written[0]
        time.sleep(0.1)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert written[0] > after  # it kept writing after the backup too

    assert made.kind == "sqlite" and made.size > 20_000 * 200
    assert (tmp_path / "copy.sqlite").stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "copy.sqlite-wal").exists()
    assert not list(tmp_path.glob(".*.partial"))
    copy = sqlite3.connect(f"{(tmp_path / 'copy.sqlite').as_uri()}?mode=ro", uri=True)
    try:
        assert copy.execute("PRAGMA quick_check").fetchone() == ("ok",)
        assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        count, top = copy.execute("SELECT count(*), max(id) FROM entries").fetchone()
    finally:
        copy.close()
    assert count == top, "rows missing in the middle: not a consistent copy"
    assert 20_000 + 50 <= count <= 20_000 + written[0]


def test_hardcost_backup_copies_a_migrated_database_and_never_overwrites(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hardcost.sqlite'}"
    assert hardcost("db", "upgrade", env={"DATABASE_URL": url}).returncode == 0
    target = tmp_path / "backups" / "hardcost-2026-03-06.sqlite"
    target.parent.mkdir()
    made = hardcost("backup", str(target), env={"DATABASE_URL": url})
    assert made.returncode == 0, made.stderr
    assert f"to {target}: SQLite copy" in made.stdout, made.stdout
    assert "encryption key is not in it" in made.stdout
    with sqlite3.connect(target) as copy:
        tables = {row[0] for row in copy.execute("SELECT name FROM sqlite_master")}
        revision = copy.execute("SELECT version_num FROM alembic_version").fetchone()
    assert {"firms", "audit_log", "alembic_version"} <= tables and revision
    assert not list(target.parent.glob("*.key")), "the key stays out of the backup"

    again = hardcost("backup", str(target), env={"DATABASE_URL": url})
    assert again.returncode == 1
    assert again.stderr.strip() == (f"hardcost backup: {target} already exists: choose another "
                                    "name (a backup never overwrites a file)")


@pytest.mark.parametrize("url, said", [
    ("sqlite:///{tmp}/missing.sqlite", "there is no database at"),
    ("sqlite://", "names no SQLite file"),
    ("mysql://u@h/x", "not mysql"),
])
def test_backup_refuses_what_it_cannot_copy(tmp_path: Path, url: str, said: str) -> None:
    with pytest.raises(BackupError, match=said):
        backup(url.format(tmp=tmp_path), tmp_path / "copy")
    assert not list(tmp_path.iterdir())


def test_a_missing_pg_dump_is_said_plainly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backup_module.shutil, "which", lambda name: None)
    with pytest.raises(BackupError) as raised:
        backup("postgresql://hardcost:pw@127.0.0.1:5432/hardcost", tmp_path / "x.dump")
    assert str(raised.value).startswith("pg_dump is not installed")
    assert "postgresql-client" in str(raised.value)
    assert not list(tmp_path.iterdir())


# -- PostgreSQL ----------------------------------------------------------------------------------

@pytest.mark.skipif(not POSTGRES_URL, reason="PostgreSQL only (HARDCOST_TEST_DATABASE_URL)")
@pytest.mark.skipif(shutil.which("pg_dump") is None or shutil.which("pg_restore") is None,
                    reason="pg_dump and pg_restore are not installed")
def test_postgresql_backup_is_a_pg_dump_archive_pg_restore_reads(
        tmp_path: Path, firm: Any) -> None:
    """``hardcost backup`` on PostgreSQL runs pg_dump: a non-empty custom-format archive that
    ``pg_restore --list`` reads, with the firm's tables; a password in DATABASE_URL goes to
    pg_dump in PGPASSWORD and is shown nowhere (the test server trusts, so any will do)."""
    url = make_url(POSTGRES_URL).set(drivername="postgresql+psycopg", password="n0t-shown-pw")
    target = tmp_path / "hardcost.dump"
    made = hardcost("backup", str(target),
                    env={"DATABASE_URL": url.render_as_string(hide_password=False)})
    assert made.returncode == 0, made.stderr
    assert "pg_dump archive (custom format)" in made.stdout, made.stdout
    assert "n0t-shown-pw" not in made.stdout + made.stderr
    assert target.stat().st_size > 0 and target.stat().st_mode & 0o777 == 0o600
    assert target.read_bytes()[:5] == b"PGDMP"  # the custom format's signature
    listed = subprocess.run(["pg_restore", "--list", str(target)], capture_output=True,
                            text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    for table in ("firms", "audit_log", "alembic_version", "runs"):
        assert f"TABLE DATA public {table} " in listed.stdout, table


@pytest.mark.skipif(not POSTGRES_URL, reason="PostgreSQL only (HARDCOST_TEST_DATABASE_URL)")
@pytest.mark.skipif(shutil.which("pg_dump") is None, reason="pg_dump is not installed")
def test_a_failing_pg_dump_is_named_in_a_line(tmp_path: Path) -> None:
    url = make_url(POSTGRES_URL).set(database="hardcost_no_such_database_xyz")
    with pytest.raises(BackupError) as raised:
        backup(url.render_as_string(hide_password=False), tmp_path / "x.dump")
    assert str(raised.value).startswith("pg_dump failed (exit status 1)")
    assert "hardcost_no_such_database_xyz" in str(raised.value)
    assert not list(tmp_path.iterdir())

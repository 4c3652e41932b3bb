"""The package a firm's IT installs: one wheel whose only top-level package is ``hardcost``, so
it lives beside PyPI's own ``sync`` (or any other ``bot``/``sandbox``) without either
overwriting the other; a plain install, without the dev extra, runs the demo; and the wheel
installs with constraints.txt, as docs/setup.md installs it in production.

Built and installed without the network: the wheel is built with the build tools already in
this environment, and the fresh virtual environment borrows this one's declared dependencies
through a path file (which does not carry this checkout's editable install along), with the
dev extra's packages made unimportable."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_pins import NOT_PINNED, PINNED_VENV

ROOT = Path(__file__).resolve().parents[1]
DEV_ONLY = ("jsonschema", "openapi_schema_validator", "referencing", "pytest", "yaml", "mypy")


def _run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result


def _source_copy(into: Path) -> Path:
    """The files git tracks (a clean checkout): nothing of .venv, build/ or caches."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=False)
    source = into / "src"
    if tracked.returncode == 0 and tracked.stdout:
        for name in tracked.stdout.decode().split("\0"):
            if name and (ROOT / name).is_file():
                (source / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, source / name)
    else:  # not a git checkout (an unpacked sdist)
        shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
            ".venv", "build", "*.egg-info", "__pycache__", ".git", "*_cache"))
    return source


def _wheel(source: Path, out: Path) -> Path:
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", out, source, cwd=source)
    return next(out.glob("*.whl"))


def _other_sync(into: Path) -> Path:
    """A distribution with a top-level ``sync`` package, as PyPI's ``sync`` has."""
    project = into / "other-sync"
    (project / "sync").mkdir(parents=True)
    (project / "sync" / "__init__.py").write_text('WHO = "the other sync"\n')
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "other-sync"\nversion = "1.0"\n'
        '[tool.setuptools]\npackages = ["sync"]\n')
    return _wheel(project, into / "other-dist")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(the fresh venv's bin folder, the hardcost wheel), both wheels installed there."""
    tmp = tmp_path_factory.mktemp("wheel")
    wheel = _wheel(_source_copy(tmp), tmp / "dist")
    other = _other_sync(tmp)
    venv = tmp / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=tmp)  # pip from Python's own bundled wheel
    bin_dir = venv / "bin"
    purelib = Path(_run(bin_dir / "python", "-c",
                        "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                        cwd=tmp).stdout.strip())
    _run(bin_dir / "python", "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel,
         other, cwd=tmp)
    ours = sysconfig.get_paths()["purelib"]
    (Path(purelib) / "borrowed.pth").write_text(
        f"{ours}\nimport sys; sys.modules.update(dict.fromkeys({DEV_ONLY!r}))\n")
    yield bin_dir, wheel


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("QBO_", "CLIO_", "SLACK_", "HARDCOST_", "DATABASE_URL"))}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def test_the_wheel_holds_only_the_hardcost_namespace(installed: tuple[Path, Path]) -> None:
    _, wheel = installed
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
        names = set(archive.namelist())
    assert {t for t in tops if not t.endswith(".dist-info")} == {"hardcost"}
    assert {"hardcost/sync/importer.py", "hardcost/bot/app.py", "hardcost/sandbox/world.py",
            "hardcost/sandbox/clio_schema.json",
            "hardcost/cli.py", "hardcost/py.typed",
            "hardcost/sync/migrations/env.py",
            "hardcost/sync/migrations/script.py.mako",
            "hardcost/sync/migrations/versions/0001_initial_schema.py"} <= names


def test_installed_beside_another_sync_both_keep_their_own(
        installed: tuple[Path, Path], tmp_path: Path) -> None:
    bin_dir, _ = installed
    probe = _run(bin_dir / "python", "-c",
                 "import sync, hardcost.sync.importer as i; print(sync.WHO); print(i.__file__)",
                 cwd=tmp_path, env=_env(tmp_path))
    who, where = probe.stdout.splitlines()
    assert who == "the other sync"
    assert "site-packages" in where and str(ROOT) not in where


def test_version_demo_and_db_upgrade_run_from_a_plain_install(
        installed: tuple[Path, Path], tmp_path: Path) -> None:
    bin_dir, wheel = installed
    env = _env(tmp_path)

    version = _run(bin_dir / "hardcost", "--version", cwd=tmp_path, env=env)
    demo = _run(bin_dir / "hardcost", "demo", cwd=tmp_path, env=env)
    upgrade = _run(bin_dir / "hardcost", "db", "upgrade", cwd=tmp_path,
                   env={**env, "DATABASE_URL": f"sqlite:///{tmp_path / 'firm.sqlite'}"})

    assert version.stdout.strip() == f"hardcost {wheel.name.split('-')[1]}"
    assert "Clio now holds 10 hard-cost entries" in demo.stdout
    assert "Traceback" not in demo.stderr
    assert "Database is up to date" in upgrade.stdout
    assert (tmp_path / "firm.sqlite").is_file()


def test_firms_and_doctor_run_from_a_plain_install(installed: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    """The operator commands need no checkout: ``firms`` on a new database, and ``doctor``
    naming the one thing wrong (Slack cannot be reached) in its own line."""
    bin_dir, _ = installed
    env = {**_env(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path / 'firm.sqlite'}",
           "SLACK_SIGNING_SECRET": "s3cret", "SLACK_BOT_TOKEN": "xoxb-1",
           "SLACK_API_URL": "http://127.0.0.1:9/api/"}
    _run(bin_dir / "hardcost", "db", "upgrade", cwd=tmp_path, env=env)
    firms = _run(bin_dir / "hardcost", "firms", cwd=tmp_path, env=env)
    doctor = subprocess.run([str(bin_dir / "hardcost"), "doctor"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)

    assert firms.stdout.startswith("No firm yet")
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    lines = doctor.stdout.splitlines()
    assert lines[:2] == ["configuration: ok", lines[1]] and lines[1].startswith("database: ok")
    assert [line.split(":")[0] for line in lines if ": FAIL: " in line] == ["Slack"]
    assert doctor.stderr == "" and "xoxb-1" not in doctor.stdout


def test_the_dev_extra_is_really_absent_there(installed: tuple[Path, Path],
                                               tmp_path: Path) -> None:
    """The demo test above means something only if request validation's packages could not
    have been imported."""
    bin_dir, _ = installed
    result = subprocess.run([str(bin_dir / "python"), "-c", "import jsonschema"],
                            cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr


@pytest.mark.skipif(not PINNED_VENV, reason=NOT_PINNED)
def test_the_wheel_installs_with_the_pins(installed: tuple[Path, Path], tmp_path: Path) -> None:
    """docs/setup.md's production install, `pip install -c constraints.txt <the wheel>` in a
    fresh venv, without the network: the venv borrows this one's packages (scripts/test.sh
    installed them at the pins) and pip may take nothing from an index or a folder, so it
    installs only if the wheel's requirements, held to the pins, are met by those versions."""
    _, wheel = installed
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    bin_dir = venv / "bin"
    purelib = Path(_run(bin_dir / "python", "-c",
                        "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                        cwd=tmp_path).stdout.strip())
    (purelib / "borrowed.pth").write_text(f"{sysconfig.get_paths()['purelib']}\n")
    env = {k: v for k, v in _env(tmp_path).items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # no configured index, extra index or wheel folder

    _run(bin_dir / "python", "-m", "pip", "install", "--no-index", "-q",
         "-c", ROOT / "constraints.txt", wheel, cwd=tmp_path, env=env)
    own = _run(bin_dir / "python", "-m", "pip", "list", "--path", purelib, "--format=freeze",
               cwd=tmp_path, env=env).stdout.split()
    version = _run(bin_dir / "hardcost", "--version", cwd=tmp_path, env=env)
    check = _run(bin_dir / "python", "-m", "pip", "check", cwd=tmp_path, env=env)

    assert {line.split("==")[0] for line in own} - {"pip", "setuptools"} == {"hardcost"}, own
    assert version.stdout.strip() == f"hardcost {wheel.name.split('-')[1]}"
    assert "No broken requirements" in check.stdout


def test_every_migration_is_in_the_wheel(installed: tuple[Path, Path]) -> None:
    _, wheel = installed
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    versions = sorted(p.name for p in (ROOT / "sync/migrations/versions").glob("*.py"))
    assert versions
    missing = [v for v in versions if f"hardcost/sync/migrations/versions/{v}" not in names]
    assert not missing, missing


def test_db_current_history_and_downgrade_run_from_a_plain_install(
        installed: tuple[Path, Path], tmp_path: Path) -> None:
    """No alembic.ini, no checkout: run from a folder outside the repository."""
    bin_dir, _ = installed
    env = {**_env(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path / 'firm.sqlite'}"}
    heads = sorted(p.name[:4] for p in (ROOT / "sync/migrations/versions").glob("0*.py"))
    head, before = heads[-1], heads[-2]

    def db(*args: str) -> str:
        return _run(bin_dir / "hardcost", "db", *args, cwd=tmp_path, env=env).stdout

    empty = db("current")
    db("upgrade")
    current = db("current")
    listed = db("history")
    down = db("downgrade", "-1")
    after = db("current")
    db("upgrade")

    assert "No schema yet" in empty and "run `hardcost db upgrade`" in empty
    assert current.strip() == f"{head} (head)"
    assert listed.splitlines()[0].startswith(f"{before} -> {head} (head), ")
    assert len(listed.splitlines()) == len(heads)
    assert f"Database is at revision {before}" in down
    assert after.strip().startswith(f"{before} (the newest revision is {head}")
    assert db("current").strip() == f"{head} (head)"
    assert not (tmp_path / "alembic.ini").exists()

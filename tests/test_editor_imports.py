"""What editors and type checkers see of the package in the developer's install.

``sync/``, ``bot/`` and ``sandbox/`` sit at the repository root and install as
``hardcost.sync``, ``hardcost.bot`` and ``hardcost.sandbox``. The editable install is
setuptools' strict mode (setup.cfg): a tree of links with the installed layout, on sys.path
through a plain .pth line, so that tools which never run Python's import hooks follow it too.
These tests ask jedi, pyright and mypy the way an editor or a developer would.

They read only source files: the SQLite half of scripts/test.sh runs them, the PostgreSQL half
would only repeat them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"hardcost": "hardcost", "sync": "hardcost.sync", "bot": "hardcost.bot",
           "sandbox": "hardcost.sandbox"}
REINSTALL = "pip install -e '.[dev]' (scripts/test.sh does it on every run)"

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("HARDCOST_TEST_DATABASE_URL")),
    reason="reads only source files: the SQLite half of the suite runs it")


def _modules() -> dict[str, Path]:
    """Every module of the package by its installed name, with its file in the checkout."""
    found: dict[str, Path] = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if "__pycache__" in parts or not all(p.isidentifier() for p in parts):
                continue  # migration scripts (0001_…) are loaded by Alembic, not imported
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def _jedi_script(code: str) -> Any:
    jedi = pytest.importorskip("jedi")
    # As an editor opens a file of the project: its folder and the project's root come first
    # on jedi's path, then this virtual environment's own (.pth lines included).
    return jedi.Script(code, path=str(ROOT / "tests" / "editor_probe.py"),
                       project=jedi.Project(str(ROOT)),
                       environment=jedi.create_environment(sys.executable, safe=False))


def test_jedi_goes_to_the_importer_class_in_sync() -> None:
    code = "from hardcost.sync.importer import Importer\n\nImporter\n"
    found = _jedi_script(code).goto(3, 3, follow_imports=True)

    assert found, "jedi resolved nothing for hardcost.sync.importer.Importer: " + REINSTALL
    target = Path(str(found[0].module_path))
    # Reached through the install's link, which leads to the source file in sync/
    assert target.resolve().is_relative_to(ROOT / "sync"), target
    assert found[0].type == "class" and found[0].name == "Importer"
    source = target.resolve().read_text().splitlines()
    assert source[found[0].line - 1].lstrip().startswith("class Importer")


def test_jedi_finds_every_module_of_the_package() -> None:
    """Also fails for a module added since the last install, with the command that fixes it."""
    modules = _modules()
    names = sorted(modules)
    code = "".join(f"import {name}\n" for name in names)
    script = _jedi_script(code)
    missing, elsewhere = [], []
    for line, name in enumerate(names, start=1):
        found = script.goto(line, len("import ") + len(name), follow_imports=True)
        if not found or found[0].module_path is None:
            missing.append(name)
        elif Path(str(found[0].module_path)).resolve() != modules[name]:
            elsewhere.append(f"{name} → {found[0].module_path}")
    assert "hardcost.sync.importer" in names and len(names) > 80
    assert not missing, f"jedi cannot find {missing}: {REINSTALL}"
    assert not elsewhere


def test_pyright_resolves_every_import() -> None:
    if shutil.which("node") is None:
        if os.environ.get("CI"):
            pytest.fail("no Node.js for pyright: .ci/run installs Debian's nodejs")
        pytest.skip("pyright needs Node.js: apt-get install nodejs")
    pyright = Path(sys.executable).with_name("pyright")
    if not pyright.exists():
        pytest.skip("pyright is not installed: pip install -e '.[dev]'")
    env = {**os.environ, "PYRIGHT_PYTHON_IGNORE_WARNINGS": "1"}
    result = subprocess.run(
        [str(pyright), "--outputjson", "--pythonpath", sys.executable,
         "sync", "bot", "sandbox", "hardcost"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    report = json.loads(result.stdout)

    unresolved = [f"{d['file']}:{d['range']['start']['line'] + 1}: {d['message']}"
                  for d in report["generalDiagnostics"]
                  if d.get("rule") in ("reportMissingImports", "reportMissingModuleSource")
                  or "is unknown import symbol" in d["message"]]
    assert report["summary"]["filesAnalyzed"] >= len(_modules())
    assert not unresolved, "\n".join(unresolved)


def _mypy(code: str) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("mypy")
    return subprocess.run([sys.executable, "-m", "mypy", "-c", code], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_mypy_on_one_file_sees_the_importer_class() -> None:
    result = _mypy("from hardcost.sync.importer import Importer\n\n"
                   "Importer.this_does_not_exist\n")

    assert result.returncode == 1, f"{result.stdout}{result.stderr}\n{REINSTALL}"
    assert '"type[Importer]" has no attribute "this_does_not_exist"' in result.stdout
    assert "[attr-defined]" in result.stdout
    assert "import-not-found" not in result.stdout


def test_mypy_does_not_pass_over_a_module_it_cannot_find() -> None:
    """``ignore_missing_imports`` is set only for the third-party packages without types."""
    result = _mypy("import hardcost.sync.no_such_module\n")

    assert result.returncode == 1, result.stdout + result.stderr
    assert "[import-not-found]" in result.stdout

"""Pinned installs (issue 27, "Running it for months"): pyproject.toml keeps the lower bounds,
constraints.txt pins the runtime dependencies and dev-constraints.txt the dev tools, both
written by scripts/lock.py. The files agree with pyproject.toml everywhere; the installed
versions are checked against them where scripts/test.sh installed this venv with them (it sets
HARDCOST_PINNED_VENV=1), since a developer's venv may have moved on."""

from __future__ import annotations

import importlib.metadata as metadata
import os
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "constraints.txt"
DEV = ROOT / "dev-constraints.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")
PINNED_VENV = os.environ.get("HARDCOST_PINNED_VENV") == "1"
NOT_PINNED = "this venv was not installed with the pins (scripts/test.sh does it)"


def pins(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of a constraints file; each line a pin or a comment."""
    found: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = PIN.match(line.strip())
        assert match, f"{path.name}:{number}: not `name==version`: {line!r}"
        name = canonicalize_name(match[1])
        assert name not in found, f"{path.name}:{number}: {name} pinned twice"
        found[name] = match[2]
    return found


def requirements(extra: str | None = None) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return [Requirement(r) for r in listed]


def _within_bounds(reqs: list[Requirement], pinned: dict[str, str], where: str) -> None:
    for req in reqs:
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req} has no pin in {where}"
        assert req.specifier.contains(Version(pinned[name]), prereleases=True), (
            f"{where} pins {name}=={pinned[name]}, outside pyproject.toml's {req}")


def test_every_runtime_dependency_has_one_pin_within_its_bounds() -> None:
    runtime = pins(RUNTIME)
    _within_bounds(requirements(), runtime, RUNTIME.name)
    assert "hardcost" not in runtime


def test_every_dev_tool_is_pinned_once_within_its_bounds() -> None:
    runtime, dev = pins(RUNTIME), pins(DEV)
    both = sorted(set(runtime) & set(dev))
    assert not both, f"pinned in both files (dev-constraints.txt adds, never repins): {both}"
    _within_bounds(requirements("dev"), {**runtime, **dev}, "the constraints files")
    assert "hardcost" not in dev and "pip" in dev  # scripts/test.sh installs pip's pin


def test_both_files_say_how_they_were_made() -> None:
    for path in (RUNTIME, DEV):
        head = path.read_text().splitlines()[:4]
        assert any("scripts/lock.py" in line for line in head), path.name


@pytest.mark.skipif(not PINNED_VENV, reason=NOT_PINNED)
def test_the_venv_holds_exactly_the_pinned_versions() -> None:
    """Where scripts/test.sh installed it; in CI (a fresh venv) nothing unpinned either."""
    wanted = {**pins(RUNTIME), **pins(DEV)}
    have: dict[str, str] = {canonicalize_name(d.metadata["Name"]): d.version
                            for d in metadata.distributions()}
    wrong = {n: (have.get(n), v) for n, v in wanted.items() if have.get(n) != v}
    assert not wrong, f"installed, pinned: {wrong}"
    if os.environ.get("CI") == "true":
        extra = sorted(set(have) - set(wanted) - {"hardcost"})
        assert not extra, f"installed without a pin (run scripts/lock.py): {extra}"


@pytest.mark.skipif(not PINNED_VENV, reason=NOT_PINNED)
def test_constraints_txt_alone_pins_everything_production_installs() -> None:
    """The runtime requirements' whole tree, as installed here, is in constraints.txt (not
    only in dev-constraints.txt, which production does not use), and nothing more."""
    runtime = pins(RUNTIME)
    done: set[tuple[str, frozenset[str]]] = set()
    todo = [(canonicalize_name(r.name), frozenset(r.extras)) for r in requirements()]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in done:
            continue
        done.add((name, extras))
        for line in metadata.requires(name) or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e})
                                         for e in extras or {""}):
                todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    seen = {name for name, _ in done}
    assert seen == set(runtime), (
        f"needed, unpinned: {sorted(seen - set(runtime))}; "
        f"pinned, not needed: {sorted(set(runtime) - seen)}")

"""The layers point one way (docs/design.md): ``sync`` knows nothing of Slack or the sandbox,
``bot`` builds on ``sync`` and never on the sandbox, only the command line wires them all, and
``bot`` has no import cycle. Every import counts, the ones inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARTS = {"hardcost": ROOT / "hardcost", "hardcost.sync": ROOT / "sync",
         "hardcost.bot": ROOT / "bot", "hardcost.sandbox": ROOT / "sandbox"}
MAY_IMPORT = {
    "hardcost.sync": {"hardcost.sync"},
    "hardcost.bot": {"hardcost.sync", "hardcost.bot"},
    "hardcost.sandbox": {"hardcost.sync", "hardcost.bot", "hardcost.sandbox"},
    "hardcost": {"hardcost", "hardcost.sync", "hardcost.bot", "hardcost.sandbox"},
}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, folder in PARTS.items():
        for path in sorted(folder.rglob("*.py")):
            relative = path.relative_to(folder).with_suffix("").parts
            names = [p for p in relative if p != "__init__"]
            found[".".join([package, *names])] = path
    return found


MODULES = _modules()


def _imports(path: Path, module: str) -> set[str]:
    """Every module ``path`` imports (absolute names), wherever the import statement is."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names
                         if f"{base}.{alias.name}" in MODULES)
    return found


def _part(module: str) -> str:
    for part in ("hardcost.sync", "hardcost.bot", "hardcost.sandbox"):
        if module == part or module.startswith(part + "."):
            return part
    return "hardcost"


GRAPH = {module: {i for i in _imports(path, module) if i in MODULES}
         for module, path in MODULES.items()}


def test_the_walk_sees_every_part_and_their_imports() -> None:
    # The checks below mean something only if the walk finds the modules and their edges.
    assert {_part(m) for m in MODULES} == set(MAY_IMPORT)
    assert "hardcost.sync.importer" in GRAPH["hardcost.bot.context"]
    assert "hardcost.bot.server" in GRAPH["hardcost.cli"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_one_way(module: str) -> None:
    wrong = sorted(i for i in GRAPH[module] if _part(i) not in MAY_IMPORT[_part(module)])
    assert not wrong, f"{module} imports {wrong}: see docs/design.md for what each layer may use"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_bare_top_level_name(module: str) -> None:
    """``sync``, ``bot`` and ``sandbox`` exist only inside ``hardcost``; a bare ``import sync``
    would load another distribution's package (PyPI has one) or a second copy of ours."""
    bare = sorted(i for i in _imports(MODULES[module], module)
                  if i.split(".")[0] in ("sync", "bot", "sandbox"))
    assert not bare, f"{module} imports {bare}"


def test_nothing_but_the_command_line_imports_it() -> None:
    importers = sorted(m for m, deps in GRAPH.items()
                       if "hardcost.cli" in deps and m not in ("hardcost.cli", "hardcost.__main__"))
    assert not importers


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("part", ["hardcost.sync", "hardcost.bot"])
def test_no_import_cycle(part: str) -> None:
    inside = {m: {d for d in deps if _part(d) == part}
              for m, deps in GRAPH.items() if _part(m) == part}
    assert _cycles(inside) == []


def test_the_run_conductor_and_the_message_builders_stay_small() -> None:
    """A run is conducted by a short ``Importer`` over parts with one job each, and messages
    are built by surface (docs/design.md, "One run, in parts"): a module that grows past its
    bound is a sign that a new job landed in the wrong room."""
    sizes = {module: len(path.read_text().splitlines()) for module, path in MODULES.items()}
    assert sizes["hardcost.sync.importer"] < 400, sizes["hardcost.sync.importer"]
    ui = {m: n for m, n in sizes.items() if m.startswith("hardcost.bot.ui.")}
    assert ui and max(ui.values()) <= 500, ui

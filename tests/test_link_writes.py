"""Every link between a QuickBooks line and a Clio entry is created and settled by the
exactly-once writer alone (sync/writer.py; docs/design.md, "Exactly once").

The walk reads every production module, as test_layers.py walks imports, and finds each place
that makes an ``entry_links`` row, writes the ``pending`` state, settles a link (``created``)
or deletes links. Creating a link and writing ``pending`` belong to the writer alone. A few
other parts change a link after it was settled, each for one reason named here; a new place
must be added to this list with its reason, or moved into the writer.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = [ROOT / "hardcost", ROOT / "sync", ROOT / "bot"]
WRITER = "sync/writer.py"

SETTLED_ELSEWHERE = {
    # (module, what): why it is not the writer's
    ("sync/edits.py", "created"): "an obsolete entry left in Clio is called for again "
                                  "(kept → created); no pending link is touched",
    ("sync/undo.py", "created"): "an undo that did not happen puts its link back "
                                 "(undoing → created)",
    ("sync/undo.py", "delete"): "an undone choice's entry was deleted from Clio, and its "
                                "link with it",
}


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return ""


def _state(node: ast.AST) -> str | None:
    """``pending``/``created`` when ``node`` is ``LinkState.X`` or ``LinkState.X.value``."""
    name = _name(node)
    for state in ("PENDING", "CREATED"):
        if name in (f"LinkState.{state}", f"LinkState.{state}.value"):
            return state.lower()
    return None


def link_writes(path: Path) -> list[tuple[str, int]]:
    """(what, line) for each write of the link table's states, rows or deletions in ``path``.
    Comparisons (``link.state == LinkState.PENDING``) are reads and are not counted."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            called = _name(node.func)
            if called.split(".")[-1] == "EntryLink":
                found.append(("row", node.lineno))
            args = [_name(a) for a in node.args]
            if "EntryLink" in args and called.split(".")[-1] in (
                    "insert", "postgresql_insert", "sqlite_insert"):
                found.append(("row", node.lineno))
            if "EntryLink" in args and called.split(".")[-1] == "delete":
                found.append(("delete", node.lineno))
            for keyword in node.keywords:  # .values(state=LinkState.PENDING), EntryLink(...)
                if keyword.arg == "state" and (state := _state(keyword.value)):
                    found.append((state, node.lineno))
        elif isinstance(node, ast.Assign):  # row.state = LinkState.CREATED
            if any(isinstance(t, ast.Attribute) and t.attr == "state" for t in node.targets) \
                    and (state := _state(node.value)):
                found.append((state, node.lineno))
        elif isinstance(node, ast.Dict):  # {"id": ..., "state": LinkState.CREATED}
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "state" and \
                        (state := _state(value)):
                    found.append((state, node.lineno))
    return found


def _all() -> dict[str, list[tuple[str, int]]]:
    return {str(path.relative_to(ROOT)): writes
            for folder in PRODUCTION for path in sorted(folder.rglob("*.py"))
            if (writes := link_writes(path))}


def test_the_walk_finds_the_writers_own_writes() -> None:
    # The check below means something only if the walk sees each kind in the writer.
    kinds = {what for what, _ in _all()[WRITER]}
    assert kinds == {"row", "pending", "created", "delete"}, kinds


def test_links_are_created_and_settled_by_the_writer_alone() -> None:
    wrong = [f"{module}:{line}: {what}"
             for module, writes in _all().items() if module != WRITER
             for what, line in writes
             if (module, what) not in SETTLED_ELSEWHERE]
    assert not wrong, ("links are created and settled in sync/writer.py alone "
                       f"(docs/design.md, \"Exactly once\"): {wrong}")


def test_each_exception_still_exists() -> None:
    # An exception no code needs any more is taken off the list.
    found = {(module, what) for module, writes in _all().items() for what, _ in writes}
    assert set(SETTLED_ELSEWHERE) <= found, set(SETTLED_ELSEWHERE) - found


def test_the_walk_tells_a_write_from_a_read(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "if link.state == LinkState.PENDING:\n    pass\n"         # a read
        "row.state = LinkState.CREATED\n"                          # a settle
        "session.execute(update(EntryLink).values(state=LinkState.PENDING.value))\n"
        "session.add(EntryLink(firm_id=1))\n"
        "session.execute(delete(EntryLink).where(True))\n"
        "session.execute(update(EntryLink), [{'id': 1, 'state': LinkState.CREATED}])\n")
    assert sorted(link_writes(probe)) == [("created", 3), ("created", 7), ("delete", 6),
                                          ("pending", 4), ("row", 5)]

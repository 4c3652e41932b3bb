"""docs/api-fidelity.md stays true: every QuickBooks key hardcost reads by name is in its
QuickBooks table (issue 25)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "api-fidelity.md"
QUICKBOOKS_READERS = ("sync/qbo.py", "sync/rules.py", "sync/bills.py")
QUICKBOOKS_KEY = re.compile(r"[A-Z][A-Za-z0-9]*")
"""QuickBooks' own keys are CapitalisedNames (``TxnDate``, ``CustomerRef``); hardcost's
lower-case dict keys and QuickBooks' lower-case ones (``value``, ``status``) are left out."""


def keys_read(source: str) -> set[str]:
    """String literals a module reads a mapping by: ``x.get("K")``, ``x.pop("K")``,
    ``x["K"]`` (not an assignment to ``x["K"]``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        key: object = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ("get", "pop") and node.args:
            first = node.args[0]
            key = first.value if isinstance(first, ast.Constant) else None
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) \
                and isinstance(node.slice, ast.Constant):
            key = node.slice.value
        if isinstance(key, str):
            found.add(key)
    return found


def quickbooks_keys_read() -> dict[str, list[str]]:
    """Each CapitalisedName key read in the QuickBooks modules → the modules reading it."""
    keys: dict[str, list[str]] = {}
    for module in QUICKBOOKS_READERS:
        for key in keys_read((ROOT / module).read_text(encoding="utf-8")):
            if QUICKBOOKS_KEY.fullmatch(key):
                keys.setdefault(key, []).append(module)
    return keys


def table(doc: str, heading: str) -> str:
    """The text of the section under ``## heading``, up to the next ``## ``."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", doc, re.M | re.S)
    assert match is not None, f"docs/api-fidelity.md has no section “{heading}”"
    return match.group(1)


def documented(section: str) -> set[str]:
    """Every name the table's first column holds, split at dots, braces, commas and spaces."""
    names: set[str] = set()
    for row in section.splitlines():
        if not row.startswith("|") or row.startswith("|---"):
            continue
        first = row.split("|")[1]
        names.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", first))
    return names


def undocumented(doc: str) -> dict[str, list[str]]:
    names = documented(table(doc, "QuickBooks Online"))
    return {key: modules for key, modules in quickbooks_keys_read().items()
            if key not in names}


def test_every_quickbooks_key_read_is_in_the_quickbooks_table() -> None:
    missing = undocumented(DOC.read_text(encoding="utf-8"))

    assert not missing, ("QuickBooks keys read but not in docs/api-fidelity.md's QuickBooks "
                         f"table (add a row: where, Intuit's page, the fixture): {missing}")


def test_the_walk_finds_the_keys_hardcost_reads() -> None:
    """The check is not vacuous: the walk sees keys of each module."""
    keys = quickbooks_keys_read()

    assert {"TxnDate", "CustomerRef", "PrivateNote"} <= set(keys)  # sync/rules.py
    assert {"LinkedTxn", "Balance", "VendorRef"} <= set(keys)  # sync/bills.py
    assert {"CDCResponse", "TrackingByCustomer", "Fault"} <= set(keys)  # sync/qbo.py
    assert "payment_type" not in keys and "value" not in keys


def test_a_key_read_without_a_row_is_caught() -> None:
    """Removing a row (here, the one for ``Balance``) makes the check fail."""
    doc = DOC.read_text(encoding="utf-8")
    without = "\n".join(line for line in doc.splitlines()
                        if not line.startswith("| `Bill.Balance`"))
    assert without != doc

    assert "Balance" in undocumented(without)


def test_a_new_key_read_is_caught() -> None:
    """A module reading a key the doc does not name is caught."""
    source = 'def f(purchase):\n    return purchase.get("TxnStatus"), purchase["HomeTotalAmt"]\n'

    assert {"TxnStatus", "HomeTotalAmt"} <= keys_read(source)
    assert not {"TxnStatus", "HomeTotalAmt"} & documented(
        table(DOC.read_text(encoding="utf-8"), "QuickBooks Online"))


def test_the_doc_is_linked_and_its_unconfirmed_rows_listed() -> None:
    assert "api-fidelity.md" in (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    trouble = (ROOT / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    assert "## Unconfirmed API behaviour" in trouble and "api-fidelity.md" in trouble
    # (that it cites nothing outside the repository: tests/test_docs_match_code.py)
    doc = DOC.read_text(encoding="utf-8")
    assert doc.count("**unconfirmed**") >= 5

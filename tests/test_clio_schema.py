"""The committed extract of Clio's OpenAPI document (sandbox/clio_schema.json): what
scripts/clio_schema_extract.py makes of the document, facts only, covering every route the
sandbox Clio serves.

Clio's document itself is not in the repository. The test that regenerates the extract looks
for it at ``$HARDCOST_CLIO_OPENAPI``, else in ``shared/specs/`` in the directory holding the
checkout, and is skipped when it is not there (set the variable to a missing path to hide it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from hardcost.sandbox.clio import CLIO_SCHEMA, URL_MAP
from hardcost.sandbox.openapi import load_openapi

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "clio_schema_extract.py"
DOCUMENT_ENV = "HARDCOST_CLIO_OPENAPI"
DOCUMENT_NAME = "clio-openapi-4.0.13.json"

PROSE = {"description", "summary", "example", "examples", "title", "externalDocs", "tags",
         "operationId"}
OPERATION_KEYS = {"parameters", "requestBody", "responses"}
PARAMETER_KEYS = {"name", "in", "required", "schema"}


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("clio_schema_extract", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _document() -> Path | None:
    if DOCUMENT_ENV in os.environ:
        path = Path(os.environ[DOCUMENT_ENV])
    else:
        path = ROOT.parent / "shared" / "specs" / DOCUMENT_NAME
    return path if path.is_file() else None


@pytest.fixture(scope="module")
def extract() -> dict[str, Any]:
    return json.loads(CLIO_SCHEMA.read_text(encoding="utf-8"))


def test_the_extract_is_what_the_script_makes_of_the_document(tmp_path: Path) -> None:
    document = _document()
    if document is None:
        pytest.skip(f"Clio's OpenAPI document is not here (${DOCUMENT_ENV}): the extract is "
                    "not compared with it")
    written = tmp_path / "clio_schema.json"

    assert _script().main([str(document), "-o", str(written)]) == 0
    assert written.read_text(encoding="utf-8") == CLIO_SCHEMA.read_text(encoding="utf-8"), (
        "sandbox/clio_schema.json is not what the script makes of the document: "
        f"python scripts/clio_schema_extract.py {document}")


def _schemas(node: Any) -> Iterator[dict[str, Any]]:
    """Every schema object under ``node`` (a schema), itself first."""
    yield node
    for name in ("items", "not", "additionalProperties"):
        if isinstance(node.get(name), dict):
            yield from _schemas(node[name])
    for name in ("allOf", "anyOf", "oneOf"):
        for sub in node.get(name, []):
            yield from _schemas(sub)
    for sub in node.get("properties", {}).values():  # keys: field names, not keywords
        yield from _schemas(sub)


def _operation_schemas(operation: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for parameter in operation.get("parameters", []):
        yield from _schemas(parameter["schema"])
    for media in operation.get("requestBody", {}).get("content", {}).values():
        yield from _schemas(media["schema"])
    for answer in operation["responses"].values():
        for media in answer.get("content", {}).values():
            yield from _schemas(media["schema"])


def test_the_extract_holds_facts_and_no_prose(extract: dict[str, Any]) -> None:
    """Only the source block names the document; below it every key is a path, a method, a
    parameter's name/place/required/schema, a body or a response, or a schema keyword the
    script keeps (field names only as keys of ``properties``); no string reads as prose."""
    script = _script()
    assert set(extract) == {"source", "paths"}
    assert extract["source"]["made_by"] == "scripts/clio_schema_extract.py"
    assert extract["source"]["title"] and extract["source"]["version"]
    keywords = set(script.SCHEMA_KEYWORDS)
    assert not keywords & PROSE
    for template, methods in extract["paths"].items():
        assert template.startswith("/") and "{" not in template.replace("{id}", "")
        for method, operation in methods.items():
            assert method in ("get", "post", "patch", "delete"), (template, method)
            assert set(operation) <= OPERATION_KEYS, (template, method)
            for parameter in operation.get("parameters", []):
                assert set(parameter) == PARAMETER_KEYS, parameter
            assert set(operation.get("requestBody", {})) <= {"required", "content"}
            for answer in operation["responses"].values():
                assert set(answer) <= {"content"}
            for schema in _operation_schemas(operation):
                assert set(schema) <= keywords, (template, method, set(schema) - keywords)

    def strings(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for value in node.values():
                yield from strings(value)
        elif isinstance(node, list):
            for value in node:
                yield from strings(value)
        elif isinstance(node, str):
            yield node
    assert [s for s in strings(extract["paths"]) if s.count(" ") > 1] == []


def test_the_extract_covers_every_route_the_sandbox_clio_serves() -> None:
    openapi = load_openapi(CLIO_SCHEMA)
    routes = []
    for rule in URL_MAP.iter_rules():
        if not rule.rule.startswith("/api/v4/"):
            continue
        paths = [rule.rule]
        if "<any(" in rule.rule:
            head, _, tail = rule.rule.partition("<any(")
            names = tail.partition(")")[0].split(",")
            paths = [head + name + tail.partition(">")[2] for name in names]
        for path in paths:
            path = path.replace("<int:record_id>", "7").removeprefix("/api/v4")
            routes += [(method, path) for method in sorted(rule.methods or ())
                       if method not in ("HEAD", "OPTIONS")]

    assert len(routes) == 20  # with /utbms/codes.json, /utbms/sets.json and /documents
    assert [route for route in routes if openapi.operation(*route) is None] == []
    documented = {(method.upper(), template) for template, methods in
                  json.loads(CLIO_SCHEMA.read_text(encoding="utf-8"))["paths"].items()
                  for method in methods}
    assert len(documented) == len(routes)


def test_the_script_refuses_a_document_without_an_endpoint(tmp_path: Path) -> None:
    document = tmp_path / "empty.json"
    document.write_text('{"openapi": "3.0.0", "info": {"title": "x", "version": "1"}, '
                        '"paths": {}}')
    written = tmp_path / "out.json"

    assert _script().main([str(document), "-o", str(written)]) == 1
    assert not written.exists()

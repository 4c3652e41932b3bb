#!/usr/bin/env python3
"""Write the facts the sandbox Clio checks against (sandbox/clio_schema.json) from Clio's
OpenAPI document.

    python scripts/clio_schema_extract.py PATH/TO/clio-openapi.json [-o sandbox/clio_schema.json]

Clio's document is not ours to commit (its prose is Clio's), so the repository holds only this
extract: for each endpoint hardcost calls (``ENDPOINTS``), the path and method, its parameters'
names, places and schemas, its JSON request body schema and its 2xx response schemas. Schemas
are reduced to the keywords in ``SCHEMA_KEYWORDS`` (types, formats, enums, required keys,
nested objects and arrays) with every ``$ref`` resolved in place; descriptions, summaries,
examples, titles, tags and operation ids are left out.

Two facts the document states only in its prose are kept as ``nullable``:

- a query parameter whose description says "Use the keyword `null`" (``matter_id=null``:
  the records without one) gets ``"nullable": true`` in its schema;
- an association id in a request body documented as "Use the keyword `null` to specify no
  association" (``"vendor": {"id": null}``) gets ``"nullable": true``.

The output is deterministic (the document's order, ``render``), so running the script
on the same document rewrites the committed file byte for byte; a test checks that whenever
the document is at hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SCRIPT = "scripts/clio_schema_extract.py"
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "sandbox" / "clio_schema.json"

ENDPOINTS: dict[str, tuple[str, ...]] = {
    # What hardcost's Clio client (sync/clio.py) calls, and what the sandbox Clio serves.
    "/users/who_am_i.json": ("get",),
    "/users.json": ("get",),
    "/users/{id}.json": ("get",),
    "/contacts.json": ("get",),
    "/contacts/{id}.json": ("get",),
    "/matters.json": ("get",),
    "/matters/{id}.json": ("get",),
    "/expense_categories.json": ("get",),
    "/expense_categories/{id}.json": ("get",),
    "/activities.json": ("get", "post"),
    "/activities/{id}.json": ("get", "patch", "delete"),
    "/utbms/codes.json": ("get",),
    "/utbms/sets.json": ("get",),
    "/documents.json": ("get", "post"),
    "/documents/{id}.json": ("get", "patch"),
}

SCHEMA_KEYWORDS = (
    "type", "format", "enum", "required", "nullable", "properties", "items",
    "additionalProperties", "allOf", "anyOf", "oneOf", "not", "pattern", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "maxLength", "minItems",
    "maxItems", "uniqueItems", "minProperties", "maxProperties",
)
"""The schema keywords kept; everything else (description, example, title, ...) is dropped."""

NULL_QUERY_KEYWORD = "Use the keyword `null`"
NULL_ASSOCIATION = "Use the keyword `null` to specify no association"


class ExtractError(Exception):
    """The document lacks something the extract needs."""


def extract(document: Mapping[str, Any], *, endpoints: Mapping[str, tuple[str, ...]] = ENDPOINTS
            ) -> dict[str, Any]:
    """The extract of ``document`` for ``endpoints`` (see the module docstring)."""
    info = document.get("info", {})
    paths: dict[str, Any] = {}
    for template, methods in endpoints.items():
        item = document.get("paths", {}).get(template)
        if item is None:
            raise ExtractError(f"the document has no path {template}")
        paths[template] = {}
        for method in methods:
            if method not in item:
                raise ExtractError(f"the document has no {method.upper()} {template}")
            paths[template][method] = _operation(document, item, item[method])
    return {
        "source": {
            "title": info.get("title"),
            "version": info.get("version"),
            "openapi": document.get("openapi"),
            "made_by": SCRIPT,
            "note": "generated (facts only, no prose): regenerate, never edit by hand",
        },
        "paths": paths,
    }


def _operation(document: Mapping[str, Any], item: Mapping[str, Any],
               operation: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    parameters = [*item.get("parameters", []), *operation.get("parameters", [])]
    if parameters:
        result["parameters"] = [_parameter(document, p) for p in parameters]
    body = operation.get("requestBody")
    if body is not None:
        body = _resolve(document, body)
        result["requestBody"] = {
            "required": bool(body.get("required")),
            "content": {kind: {"schema": _schema(document, media.get("schema", {}), ())}
                        for kind, media in body.get("content", {}).items() if "json" in kind},
        }
    responses: dict[str, Any] = {}
    for code, answer in operation.get("responses", {}).items():
        if not (str(code).isdigit() and 200 <= int(code) < 300):
            continue
        answer = _resolve(document, answer)
        content = {kind: {"schema": _schema(document, media.get("schema", {}), ())}
                   for kind, media in (answer.get("content") or {}).items()}
        responses[str(code)] = {"content": content} if content else {}
    result["responses"] = responses
    return result


def _parameter(document: Mapping[str, Any], raw: Mapping[str, Any]) -> dict[str, Any]:
    raw = _resolve(document, raw)
    schema = _schema(document, raw.get("schema", {}), ())
    if raw.get("in") == "query" and NULL_QUERY_KEYWORD in str(raw.get("description", "")):
        schema["nullable"] = True
    return {"name": raw["name"], "in": raw["in"], "required": bool(raw.get("required")),
            "schema": schema}


def _schema(document: Mapping[str, Any], node: Any, resolving: tuple[str, ...]) -> Any:
    """``node`` with its ``$ref``s resolved and only ``SCHEMA_KEYWORDS`` kept."""
    if not isinstance(node, Mapping):
        return node
    if "$ref" in node:
        ref = node["$ref"]
        if ref in resolving:
            raise ExtractError(f"{ref} refers to itself: a cycle cannot be inlined")
        return _schema(document, _pointer(document, ref), (*resolving, ref))
    result: dict[str, Any] = {}
    for key in SCHEMA_KEYWORDS:
        if key not in node:
            continue
        value = node[key]
        if key == "properties":
            value = {name: _schema(document, sub, resolving) for name, sub in value.items()}
        elif key in ("items", "not") or (key == "additionalProperties"
                                           and isinstance(value, Mapping)):
            value = _schema(document, value, resolving)
        elif key in ("allOf", "anyOf", "oneOf"):
            value = [_schema(document, sub, resolving) for sub in value]
        result[key] = value
    if "type" in node and NULL_ASSOCIATION in str(node.get("description", "")):
        result["nullable"] = True
    return result


def _resolve(document: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    seen: set[str] = set()
    while "$ref" in node:
        if node["$ref"] in seen:
            raise ExtractError(f"{node['$ref']} refers to itself")
        seen.add(node["$ref"])
        node = _pointer(document, node["$ref"])
    return node


def _pointer(document: Mapping[str, Any], ref: str) -> Mapping[str, Any]:
    if not ref.startswith("#/"):
        raise ExtractError(f"only references inside the document are supported: {ref}")
    node: Any = document
    for token in ref[2:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or token not in node:
            raise ExtractError(f"{ref} points nowhere")
        node = node[token]
    return node


def render(extract_: Mapping[str, Any]) -> str:
    """The extract as the committed file holds it: two-space indent, but an object or array
    that fits in ``WIDTH`` columns on one line (a field's type and format) stays on one."""
    return _render(extract_, 0, 0) + "\n"


WIDTH = 100


def _render(node: Any, depth: int, taken: int) -> str:
    flat = json.dumps(node, ensure_ascii=False)
    if not isinstance(node, dict | list) or not node or 2 * depth + taken + len(flat) <= WIDTH:
        return flat
    pad = "  " * (depth + 1)
    if isinstance(node, dict):
        lines = []
        for key, value in node.items():
            label = json.dumps(key, ensure_ascii=False) + ": "
            lines.append(pad + label + _render(value, depth + 1, len(label)))
        return "{\n" + ",\n".join(lines) + "\n" + "  " * depth + "}"
    lines = [pad + _render(value, depth + 1, 0) for value in node]
    return "[\n" + ",\n".join(lines) + "\n" + "  " * depth + "]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("document", type=Path, help="Clio's OpenAPI document (JSON)")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"where to write the extract (default: {DEFAULT_OUTPUT})")
    args = parser.parse_args(argv)
    try:
        with args.document.open("rb") as handle:
            document = json.load(handle)
        text = render(extract(document))
    except (OSError, ValueError, ExtractError) as error:
        print(f"clio_schema_extract: {args.document}: {error}", file=sys.stderr)
        return 1
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output} ({len(text.encode())} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

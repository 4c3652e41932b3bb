"""Check requests against an OpenAPI 3.0 document, the way a strict real service would.

The sandbox Clio validates every request it receives against the facts of Clio's own OpenAPI
document, so a client that sends what Clio would refuse fails in tests rather than in
production. It reads them from the extract committed beside it (``clio_schema.json``, made by
``scripts/clio_schema_extract.py`` from Clio's document: the endpoints hardcost calls, their
parameters and schemas with every ``$ref`` resolved, no prose), so every checkout checks the
same way. The extract is parsed once per process and per file; the validators each operation
needs are built on first use and kept.

Where Clio's document and Clio's documented behaviour differ, the behaviour wins, and each such
place is marked "leniency" below. What the document says only in prose the extract states as
``nullable``: a query parameter that takes the keyword ``null`` (``matter_id=null``) and an
association id a body may set to ``null`` (``"vendor": {"id": null}``).

Responses are checked too (``validate_response``): the body of every 2xx answer is validated
against the schema the document gives for that operation and status, so a sandbox that answers
in a shape real Clio would not is caught as surely as a client that asks wrongly. How the
document's schemas read for responses, and what was decided:

- ``required``: in Clio's document only the envelopes (``Activity_Show``, ``Activity_List``, …:
  ``data``) and the error shape (``error``; ``type``, ``message``) list required keys; no
  resource schema (``Activity``, ``Matter_base``, …) has any. That is what ``fields=`` makes
  of a response (only the fields asked for are present), so ``required`` is applied exactly as
  written: ``data`` must be there, and every field present is checked for its type, format and
  enum, while a field that was not asked for may be missing.
- leniency: the document marks no property ``nullable`` (there is not one in its 3 MB), yet
  Clio answers ``null`` for an empty value or a missing association (``"bill": null``,
  ``"reference": null``); the request side already needs the same leniency for associations.
  ``null`` is accepted for any property in a response; a present value must have its type.
- A list answer is one whose schema's ``data`` is an array (the document's ``*_List``
  schemas). The document gives list responses no ``meta``; Clio's paging documentation does
  ("Paging"): a list answer must also carry ``meta.paging`` (an object whose ``next`` and
  ``previous``, when present, are URLs) and ``meta.records``, when present, is an integer.
- A 2xx status the operation does not document, a body that is not JSON where the document
  gives a JSON schema, or a body where it gives none (``204 No Content``) is an error too.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from numbers import Number
from pathlib import Path
from typing import Any

from jsonschema import FormatChecker, ValidationError
from jsonschema.validators import extend
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from referencing import Registry
from referencing.jsonschema import DRAFT4

from hardcost.sandbox.body import NO_BODY

DOCUMENT_URI = "urn:hardcost:openapi-document"
"""Passed as ``body`` when the request carries none."""

_OPERATOR_ENUM = re.compile(r"[<>=]")
_METHODS = ("get", "put", "post", "patch", "delete", "head", "options")


# -- schema semantics --------------------------------------------------------------------------

def _any_number(instance: object) -> bool:
    # Bodies are parsed with parse_float=Decimal so amounts stay exact; a Decimal is a double.
    return True


def _iso_date(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    try:
        date.fromisoformat(instance)
    except ValueError:
        return False
    return len(instance) == 10


def _iso_date_time(instance: object) -> bool:
    # leniency: Clio's date-time filters (start_date, end_date) are documented as taking a date.
    if not isinstance(instance, str):
        return True
    if _iso_date(instance):
        return True
    try:
        datetime.fromisoformat(instance)
    except ValueError:
        return False
    return True


def _is_integer(checker: Any, instance: object) -> bool:
    if isinstance(instance, bool):
        return False
    if isinstance(instance, Decimal):
        return instance == instance.to_integral_value()
    return isinstance(instance, int) or (isinstance(instance, float) and instance.is_integer())


def _is_number(checker: Any, instance: object) -> bool:
    return isinstance(instance, Number) and not isinstance(instance, bool)


def _format_checker() -> FormatChecker:
    checker = FormatChecker(formats=())
    checker.checkers = dict(oas30_format_checker.checkers)
    checker.checks("double")(_any_number)
    checker.checks("float")(_any_number)
    checker.checks("date")(_iso_date)
    checker.checks("date-time")(_iso_date_time)
    return checker


FORMAT_CHECKER = _format_checker()
RequestValidator: Any = extend(
    OAS30Validator,
    type_checker=OAS30Validator.TYPE_CHECKER.redefine_many(
        {"integer": _is_integer, "number": _is_number}
    ),
    format_checker=FORMAT_CHECKER,
)


def _skip_null(keyword: Any) -> Any:
    def check(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        if instance is None:
            return  # leniency: Clio answers null for empty values (see the module docstring)
        yield from keyword(validator, value, instance, schema)
    return check


ResponseValidator: Any = extend(
    RequestValidator,
    validators={keyword: _skip_null(RequestValidator.VALIDATORS[keyword])
                for keyword in ("type", "enum", "format")},
)

LIST_ENVELOPE: Mapping[str, Any] = {
    "type": "object",
    "required": ["data", "meta"],
    "properties": {
        "data": {"type": "array"},
        "meta": {
            "type": "object",
            "required": ["paging"],
            "properties": {
                "paging": {
                    "type": "object",
                    "properties": {"next": {"type": "string", "pattern": "^https?://"},
                                   "previous": {"type": "string", "pattern": "^https?://"}},
                },
                "records": {"type": "integer"},
            },
        },
    },
}
"""What Clio's paging documentation adds to every list answer (the document has no ``meta``)."""


# -- the document ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Parameter:
    name: str
    location: str
    schema: Mapping[str, Any]
    required: bool
    accepts_null_keyword: bool


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    query: Mapping[str, Parameter]
    path: Mapping[str, Parameter]
    body_pointer: str | None
    """JSON pointer (in the document) of the ``application/json`` request body schema."""
    responses: Mapping[int, str | None]
    """Each documented 2xx status → JSON pointer of its JSON body schema (None: no body)."""
    lists: frozenset[int] = frozenset()
    """The 2xx statuses answered with a list (a ``*_List`` schema): Clio adds ``meta``."""


class OpenApiDocument:
    """One parsed OpenAPI 3.0 document, with cached per-operation validators."""

    def __init__(self, document: dict[str, Any], *, source: Path, load_seconds: float) -> None:
        self.source = source
        self.load_seconds = load_seconds
        self._registry: Registry[Any] = Registry().with_resource(
            DOCUMENT_URI, DRAFT4.create_resource(document)
        )
        self._literal: dict[str, Mapping[str, Operation]] = {}
        self._templated: list[tuple[re.Pattern[str], Mapping[str, Operation]]] = []
        self._index_operations(document.get("paths", {}))
        self._validators: dict[str, Any] = {}
        self._parameter_validators: dict[int, Any] = {}
        self._lock = threading.Lock()

    def operation(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
        """The operation serving ``method path`` (path without the server prefix)."""
        operations = self._literal.get(path)
        params: dict[str, str] = {}
        if operations is None:
            for pattern, candidates in self._templated:
                match = pattern.fullmatch(path)
                if match:
                    operations, params = candidates, match.groupdict()
                    break
        if operations is None or method.lower() not in operations:
            return None
        return operations[method.lower()], params

    def validate_request(
        self,
        method: str,
        path: str,
        query: Mapping[str, Sequence[str]],
        body: Any = NO_BODY,
    ) -> list[str]:
        """Every way the request breaks the document; empty when it is valid or unknown."""
        found = self.operation(method, path)
        if found is None:
            return []
        operation, path_values = found
        errors = self._check_parameters(operation.path, {k: [v] for k, v in path_values.items()})
        errors += self._check_parameters(operation.query, query)
        if operation.body_pointer is not None and body is not NO_BODY:
            errors += self._check_body(operation.body_pointer, body)
        return errors

    def validate_response(self, method: str, path: str, status: int, body: bytes,
                          content_type: str | None = None) -> list[str]:
        """Every way a 2xx answer to ``method path`` breaks the document; empty when it is
        valid, not a 2xx, or the operation is unknown."""
        found = self.operation(method, path)
        if found is None or not 200 <= status < 300:
            return []
        operation = found[0]
        where = f"Invalid response to {method.upper()} {path} ({status})"
        if status not in operation.responses:
            documented = ", ".join(str(code) for code in sorted(operation.responses)) or "none"
            return [f"{where}: status {status} is not documented (documented: {documented})"]
        pointer = operation.responses[status]
        if pointer is None:
            return [] if not body.strip() else [f"{where}: a body where none is documented"]
        if content_type is not None and "json" not in content_type.lower():
            return [f"{where}: content type {content_type}, not JSON"]
        try:
            parsed = json.loads(body, parse_float=Decimal)
        except ValueError as error:
            return [f"{where}: the body is not valid JSON: {error}"]
        errors = sorted(self._response_validator(pointer).iter_errors(parsed), key=_error_order)
        messages = [f"{where}: {_describe(error)}" for error in errors]
        if status in operation.lists:
            envelope = self._response_validator(None)
            messages += [f"{where}: {_describe(error)}"
                         for error in sorted(envelope.iter_errors(parsed), key=_error_order)]
        return messages

    # -- building

    def _index_operations(self, paths: Mapping[str, Any]) -> None:
        templated: list[tuple[int, re.Pattern[str], Mapping[str, Operation]]] = []
        for template, item in paths.items():
            operations = {
                method: _operation(method, template, item, op)
                for method, op in item.items()
                if method in _METHODS
            }
            if "{" not in template:
                self._literal[template] = operations
            else:
                templated.append((template.count("{"), _template_pattern(template), operations))
        # A literal segment beats a parameter: /users/who_am_i.json is not /users/{id}.json.
        templated.sort(key=lambda entry: entry[0])
        self._templated = [(pattern, ops) for _, pattern, ops in templated]

    def _validator(self, pointer: str) -> Any:
        with self._lock:
            validator = self._validators.get(pointer)
            if validator is None:
                validator = RequestValidator(
                    {"$ref": f"{DOCUMENT_URI}#{pointer}"}, registry=self._registry,
                    format_checker=FORMAT_CHECKER,
                )
                self._validators[pointer] = validator
            return validator

    def _response_validator(self, pointer: str | None) -> Any:
        """The response schema at ``pointer``; None: the list envelope (``LIST_ENVELOPE``)."""
        key = f"response:{pointer}"
        with self._lock:
            validator = self._validators.get(key)
            if validator is None:
                schema = LIST_ENVELOPE if pointer is None else {
                    "$ref": f"{DOCUMENT_URI}#{pointer}"}
                validator = ResponseValidator(schema, registry=self._registry,
                                              format_checker=FORMAT_CHECKER)
                self._validators[key] = validator
            return validator

    def _schema_validator(self, schema: Mapping[str, Any]) -> Any:
        # Parameter schemas live as long as the document, so their identity is a stable key.
        with self._lock:
            validator = self._parameter_validators.get(id(schema))
            if validator is None:
                validator = RequestValidator(
                    schema, registry=self._registry, format_checker=FORMAT_CHECKER
                )
                self._parameter_validators[id(schema)] = validator
            return validator

    # -- checking

    def _check_body(self, pointer: str, body: Any) -> list[str]:
        errors = sorted(self._validator(pointer).iter_errors(body), key=_error_order)
        return [f"Invalid request body: {_describe(error)}" for error in errors]

    def _check_parameters(
        self, parameters: Mapping[str, Parameter], given: Mapping[str, Sequence[str]]
    ) -> list[str]:
        errors: list[str] = []
        for name, parameter in parameters.items():
            values = list(given.get(name, ()))
            if not values:
                if parameter.required:
                    errors.append(f"Missing {parameter.location} parameter {name}")
                continue
            for raw in values:
                errors += self._check_value(parameter, raw)
        return errors

    def _check_value(self, parameter: Parameter, raw: str) -> list[str]:
        schema = parameter.schema
        where = f"Invalid {parameter.location} parameter {parameter.name}"
        if raw == "null" and parameter.accepts_null_keyword:
            return []
        parts: Iterable[str] = [raw]
        if "enum" in schema and schema.get("type") == "string":
            if _OPERATOR_ENUM.search("".join(map(str, schema["enum"]))):
                return []  # leniency: enums like ">=DATE" are templates, not literal values
            # leniency: Clio takes comma lists (status=open,pending) and any letter case.
            parts = [_enum_member(schema["enum"], part) for part in raw.split(",")]
        errors: list[str] = []
        for part in parts:
            value = _coerce(schema.get("type"), part)
            validator = self._schema_validator(schema)
            errors += [f"{where}: {error.message}" for error in validator.iter_errors(value)]
        return errors


# -- helpers -----------------------------------------------------------------------------------

def _operation(method: str, template: str, item: Mapping[str, Any], op: Mapping[str, Any]
               ) -> Operation:
    parameters = [*item.get("parameters", []), *op.get("parameters", [])]
    by_location: dict[str, dict[str, Parameter]] = {"query": {}, "path": {}}
    for raw in parameters:
        if raw.get("in") in by_location:
            by_location[raw["in"]][raw["name"]] = Parameter(
                name=raw["name"],
                location=raw["in"],
                schema=raw.get("schema", {}),
                required=bool(raw.get("required")),
                accepts_null_keyword=bool(raw.get("schema", {}).get("nullable")),
            )
    body_pointer = None
    if "application/json" in op.get("requestBody", {}).get("content", {}):
        body_pointer = "/".join([
            "", "paths", _escape(template), method, "requestBody", "content",
            _escape("application/json"), "schema",
        ])
    responses: dict[int, str | None] = {}
    lists: set[int] = set()
    for code, answer in op.get("responses", {}).items():
        if not (str(code).isdigit() and 200 <= int(code) < 300):
            continue
        content = answer.get("content") or {}
        json_type = next((kind for kind in content if "json" in kind), None)
        responses[int(code)] = None if json_type is None else "/".join([
            "", "paths", _escape(template), method, "responses", str(code), "content",
            _escape(json_type), "schema",
        ])
        if json_type is not None and _is_list(content[json_type].get("schema", {})):
            lists.add(int(code))
    return Operation(method, template, by_location["query"], by_location["path"], body_pointer,
                     responses, frozenset(lists))


def _template_pattern(template: str) -> re.Pattern[str]:
    pattern = ""
    for literal, name in re.findall(r"([^{]*)(?:\{([^}]+)\})?", template):
        pattern += re.escape(literal)
        if name:
            group = re.sub(r"\W", "_", name)
            pattern += f"(?P<{group}>[^/]+?)"
    return re.compile(pattern)


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _is_list(schema: Mapping[str, Any]) -> bool:
    """A list answer's schema: its ``data`` is an array (Clio's ``*_List`` schemas)."""
    return schema.get("properties", {}).get("data", {}).get("type") == "array"


def _enum_member(members: Sequence[Any], value: str) -> str:
    for member in members:
        if isinstance(member, str) and member.lower() == value.lower():
            return member
    return value


def _coerce(kind: object, raw: str) -> object:
    """A query-string value as the type its schema names; unchanged when it is not one."""
    if kind == "integer" and re.fullmatch(r"[+-]?\d+", raw):
        return int(raw)
    if kind == "number":
        try:
            return Decimal(raw)
        except InvalidOperation:
            return raw
    if kind == "boolean" and raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    return raw


def _error_order(error: ValidationError) -> tuple[str, ...]:
    return tuple(str(part) for part in error.absolute_path)


def _describe(error: ValidationError) -> str:
    where = ".".join(str(part) for part in error.absolute_path) or "(root)"
    return f"{where}: {error.message}"


# -- loading, once per process -----------------------------------------------------------------

_cache: dict[tuple[Path, float], OpenApiDocument] = {}
_cache_lock = threading.Lock()


def load_openapi(path: str | Path) -> OpenApiDocument:
    """The parsed document at ``path``; parsed once per process (while the file is unchanged)."""
    resolved = Path(path).resolve()
    key = (resolved, resolved.stat().st_mtime)
    with _cache_lock:
        document = _cache.get(key)
        if document is None:
            started = time.perf_counter()
            with resolved.open("rb") as handle:
                raw = json.load(handle)
            document = OpenApiDocument(raw, source=resolved, load_seconds=0.0)
            document.load_seconds = time.perf_counter() - started
            _cache[key] = document
        return document

"""The subset of the QuickBooks Online query language the QBO sandbox understands.

``SELECT * | COUNT(*) FROM <Entity> [WHERE c AND c ...] [ORDERBY f [ASC|DESC], ...]
[STARTPOSITION n] [MAXRESULTS n]`` with operators ``= < > <= >= IN LIKE``. Like QBO there is
no ``OR``. Values compare by the stored value's kind: ``Id`` as integers, ISO-8601 datetimes as
instants, ``YYYY-MM-DD`` as dates, numbers as decimals, booleans as booleans, else strings.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

COMPANY_TZ = ZoneInfo("America/Los_Angeles")
DEFAULT_MAX_RESULTS = 100
MAX_RESULTS_LIMIT = 1000

Scalar = str | bool | Decimal
Literal = Scalar | tuple[Scalar, ...]


class QuerySyntaxError(Exception):
    """The statement does not parse (QBO: "Error parsing query", code 4000)."""


class QueryValidationError(Exception):
    """The statement parses but is refused (QBO: "QueryValidationError", code 4001)."""


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: Literal


@dataclass(frozen=True)
class OrderBy:
    field: str
    descending: bool = False


@dataclass(frozen=True)
class Query:
    entity: str
    count: bool = False
    conditions: tuple[Condition, ...] = ()
    order_by: tuple[OrderBy, ...] = ()
    start_position: int = 1
    max_results: int = DEFAULT_MAX_RESULTS

    def mentions(self, field_name: str) -> bool:
        return any(c.field.lower() == field_name.lower() for c in self.conditions)


# --- parsing ----------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<string>'(?:[^'\\]|\\.)*')
      |(?P<op><=|>=|=|<|>)
      |(?P<punct>[(),*])
      |(?P<number>-?\d+(?:\.\d+)?)
      |(?P<word>[A-Za-z_][A-Za-z0-9_.]*)""",
    re.X,
)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    column: int

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.text.upper() in words


_END = _Token("end", "<EOF>", 0)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        match = _TOKEN.match(text, pos)
        if match is None or match.lastgroup is None:
            raise QuerySyntaxError(_encountered(text[pos:pos + 10], pos + 1))
        tokens.append(_Token(match.lastgroup, match.group(), pos + 1))
        pos = match.end()
    return tokens


def _encountered(text: str, column: int) -> str:
    return f'QueryParserError: Encountered "{text}" at line 1, column {column}.'


@dataclass
class _Parser:
    tokens: list[_Token]
    index: int = 0
    conditions: list[Condition] = field(default_factory=list)

    def peek(self) -> _Token:
        return self.tokens[self.index] if self.index < len(self.tokens) else _END

    def take(self) -> _Token:
        token = self.peek()
        self.index += 1
        return token

    def fail(self, token: _Token | None = None, hint: str = "") -> QuerySyntaxError:
        token = token or self.peek()
        message = _encountered(token.text, token.column)
        return QuerySyntaxError(f"{message} {hint}" if hint else message)

    def expect_word(self, *words: str) -> _Token:
        token = self.take()
        if not token.is_word(*words):
            raise self.fail(token, f"Was expecting {' or '.join(words)}.")
        return token

    def expect(self, kind: str, text: str | None = None) -> _Token:
        token = self.take()
        if token.kind != kind or (text is not None and token.text != text):
            raise self.fail(token, f'Was expecting "{text or kind}".')
        return token

    def identifier(self) -> str:
        token = self.take()
        if token.kind != "word":
            raise self.fail(token, "Was expecting a property name.")
        return token.text

    def integer(self) -> int:
        token = self.take()
        if token.kind != "number" or not token.text.lstrip("-").isdigit():
            raise self.fail(token, "Was expecting an integer.")
        return int(token.text)


def parse_query(text: str) -> Query:
    """Parse a statement; raises QuerySyntaxError or QueryValidationError."""
    parser = _Parser(_tokenize(text))
    parser.expect_word("SELECT")
    count = _parse_select_list(parser)
    parser.expect_word("FROM")
    entity = parser.identifier()
    if parser.peek().is_word("WHERE"):
        parser.take()
        _parse_conditions(parser)
    order_by = _parse_order_by(parser) if parser.peek().is_word("ORDERBY", "ORDER") else ()
    start, max_results = _parse_paging(parser)
    if parser.peek() is not _END:
        raise parser.fail()
    return Query(entity, count, tuple(parser.conditions), order_by, start, max_results)


def _parse_select_list(parser: _Parser) -> bool:
    token = parser.take()
    if token.kind == "punct" and token.text == "*":
        return False
    if token.is_word("COUNT"):
        parser.expect("punct", "(")
        parser.expect("punct", "*")
        parser.expect("punct", ")")
        return True
    raise parser.fail(token, "The sandbox supports SELECT * and SELECT COUNT(*) only.")


def _parse_conditions(parser: _Parser) -> None:
    parser.conditions.append(_parse_condition(parser))
    while parser.peek().is_word("AND", "OR"):
        token = parser.take()
        if token.is_word("OR"):
            raise parser.fail(token, "OR is not supported; combine conditions with AND.")
        parser.conditions.append(_parse_condition(parser))


def _parse_condition(parser: _Parser) -> Condition:
    name = parser.identifier()
    token = parser.take()
    if token.kind == "op":
        return Condition(name, token.text, _parse_scalar(parser))
    if token.is_word("LIKE"):
        return Condition(name, "LIKE", _parse_scalar(parser))
    if token.is_word("IN"):
        return Condition(name, "IN", _parse_list(parser))
    raise parser.fail(token, "Was expecting an operator (= < > <= >= IN LIKE).")


def _parse_list(parser: _Parser) -> tuple[Scalar, ...]:
    parser.expect("punct", "(")
    values = [_parse_scalar(parser)]
    while parser.peek().text == ",":
        parser.take()
        values.append(_parse_scalar(parser))
    parser.expect("punct", ")")
    return tuple(values)


def _parse_scalar(parser: _Parser) -> Scalar:
    token = parser.take()
    if token.kind == "string":
        return re.sub(r"\\(.)", r"\1", token.text[1:-1])
    if token.kind == "number":
        return Decimal(token.text)
    if token.is_word("TRUE", "FALSE"):
        return token.text.upper() == "TRUE"
    raise parser.fail(token, "Was expecting a quoted value.")


def _parse_order_by(parser: _Parser) -> tuple[OrderBy, ...]:
    if parser.take().is_word("ORDER"):
        parser.expect_word("BY")
    keys = [_parse_order_key(parser)]
    while parser.peek().text == ",":
        parser.take()
        keys.append(_parse_order_key(parser))
    return tuple(keys)


def _parse_order_key(parser: _Parser) -> OrderBy:
    name = parser.identifier()
    if parser.peek().is_word("ASC", "DESC"):
        return OrderBy(name, parser.take().is_word("DESC"))
    return OrderBy(name)


def _parse_paging(parser: _Parser) -> tuple[int, int]:
    start, max_results = 1, DEFAULT_MAX_RESULTS
    while parser.peek().is_word("STARTPOSITION", "MAXRESULTS"):
        if parser.take().is_word("STARTPOSITION"):
            start = max(1, parser.integer())
        else:
            max_results = parser.integer()
    if max_results > MAX_RESULTS_LIMIT:
        raise QueryValidationError(
            f"QueryValidationError: value {max_results} is too large. "
            f"Max allowed value is {MAX_RESULTS_LIMIT}"
        )
    if max_results < 1:
        raise QueryValidationError(f"QueryValidationError: MAXRESULTS {max_results} must be >= 1")
    return start, max_results


# --- evaluation -------------------------------------------------------------------------------

_MISSING = object()
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T")


def run_query(query: Query, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every row matching the conditions, sorted (default: Id ascending), before paging."""
    tests = [_matcher(c) for c in query.conditions]
    matching = [row for row in rows if all(test(row) for test in tests)]
    matching.sort(key=lambda row: _sort_key("Id", field_value(row, "Id")))
    for key in reversed(query.order_by):
        matching.sort(key=functools.partial(_order_key, key), reverse=key.descending)
    return matching


def page(rows: Sequence[dict[str, Any]], query: Query) -> list[dict[str, Any]]:
    start = query.start_position - 1
    return list(rows[start:start + query.max_results])


def field_value(row: Any, path: str) -> Any:
    """The value at a dotted path, names matched case-insensitively; a Ref yields its value."""
    value = row
    for part in path.split("."):
        if not isinstance(value, dict):
            return _MISSING
        key = next((k for k in value if k.lower() == part.lower()), None)
        if key is None:
            return _MISSING
        value = value[key]
    if isinstance(value, dict) and "value" in value:
        return value["value"]
    return value


def parse_instant(text: str) -> datetime | None:
    """An ISO-8601 datetime (naive = company time) or date (midnight company time)."""
    try:
        if _DATE.match(text):
            return datetime.combine(date.fromisoformat(text), time(), COMPANY_TZ)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=COMPANY_TZ)


def _matcher(condition: Condition) -> Callable[[dict[str, Any]], bool]:
    """The condition as a test of one row. ``Id IN (…)`` is a set lookup: the same answers
    as comparing with each listed id (numbers as numbers, other text as text), without
    ``rows × ids`` comparisons (a replica's share of a backfill lists 200 ids a query)."""
    if condition.op == "IN" and isinstance(condition.value, tuple) \
            and condition.field.split(".")[-1].lower() == "id":
        numbers: set[int] = set()
        texts: set[str] = set()
        for literal in condition.value:
            try:
                numbers.add(int(str(literal)))
            except ValueError:
                texts.add(str(literal))
        return functools.partial(_id_in, condition.field, frozenset(numbers), frozenset(texts))
    return functools.partial(_holds, condition)


def _id_in(name: str, numbers: frozenset[int], texts: frozenset[str],
           row: dict[str, Any]) -> bool:
    stored = field_value(row, name)
    if stored is _MISSING or stored is None:
        return False
    try:
        return int(str(stored)) in numbers
    except ValueError:
        return str(stored) in texts


def _holds(condition: Condition, row: dict[str, Any]) -> bool:
    stored = field_value(row, condition.field)
    if stored is _MISSING or stored is None:
        return False
    if condition.op == "IN":
        values = condition.value if isinstance(condition.value, tuple) else (condition.value,)
        return any(_compare(condition.field, stored, "=", v) for v in values)
    if isinstance(condition.value, tuple):
        return False
    if condition.op == "LIKE":
        return _like(str(stored), str(condition.value))
    return _compare(condition.field, stored, condition.op, condition.value)


def _like(text: str, pattern: str) -> bool:
    regex = ".*".join(re.escape(part) for part in pattern.split("%"))
    return re.fullmatch(regex, text, re.IGNORECASE | re.DOTALL) is not None


def _compare(name: str, stored: Any, op: str, literal: Scalar) -> bool:
    pair = _coerce(name, stored, literal)
    if pair is None:
        return False
    left, right = pair
    try:
        return bool(_OPERATORS[op](left, right))
    except TypeError:
        return False


_OPERATORS = {
    "=": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
}


def _coerce(name: str, stored: Any, literal: Scalar) -> tuple[Any, Any] | None:
    """Both sides as one comparable kind, chosen by the stored value; None = not comparable."""
    if name.split(".")[-1].lower() == "id":
        return _as_ints(stored, literal)
    if isinstance(stored, bool):
        return stored, _as_bool(literal)
    if isinstance(stored, int | float | Decimal):
        return _as_decimals(stored, literal)
    if isinstance(stored, str) and _DATETIME.match(stored):
        return _as_instants(stored, literal)
    if isinstance(stored, str) and _DATE.match(stored):
        return _as_dates(stored, literal)
    return str(stored), str(literal)


def _as_ints(stored: Any, literal: Scalar) -> tuple[Any, Any] | None:
    try:
        return int(str(stored)), int(str(literal))
    except ValueError:
        return str(stored), str(literal)


def _as_bool(literal: Scalar) -> bool | None:
    if isinstance(literal, bool):
        return literal
    return {"true": True, "false": False}.get(str(literal).lower())


def _as_decimals(stored: Any, literal: Scalar) -> tuple[Decimal, Decimal] | None:
    try:
        return Decimal(str(stored)), Decimal(str(literal))
    except InvalidOperation:
        return None


def _as_instants(stored: str, literal: Scalar) -> tuple[datetime, datetime] | None:
    left, right = parse_instant(stored), parse_instant(str(literal))
    return None if left is None or right is None else (left, right)


def _as_dates(stored: str, literal: Scalar) -> tuple[date, date] | None:
    try:
        return date.fromisoformat(stored), date.fromisoformat(str(literal)[:10])
    except ValueError:
        return None


def _order_key(key: OrderBy, row: dict[str, Any]) -> tuple[int, Any]:
    return _sort_key(key.field, field_value(row, key.field))


def _sort_key(name: str, value: Any) -> tuple[int, Any]:
    """A key that never compares across kinds: (kind rank, typed value); missing sorts last."""
    if value is _MISSING or value is None:
        return 9, 0
    if name.split(".")[-1].lower() == "id" and str(value).isdigit():
        return 0, int(str(value))
    if isinstance(value, bool):
        return 1, value
    if isinstance(value, int | float | Decimal):
        return 2, Decimal(str(value))
    if isinstance(value, str):
        instant = parse_instant(value) if _DATETIME.match(value) or _DATE.match(value) else None
        if instant is not None:
            return 3, instant
        return 4, value.casefold()
    return 5, str(value)

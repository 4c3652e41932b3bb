"""The shape Slack's requests must have before Bolt reads them.

Bolt reads signed requests as Slack sends them: ``body["view"]["type"]``,
``body["actions"][0]``, ``body["event"]["type"]``. A signed body of another shape (Slack
never sends one; a test, a replay or a bug somewhere might) made Bolt raise, and the app
answered 500. These checks answer such a body with 400 instead, and name what is wrong.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

OBJECTS = ("team", "user", "channel", "container", "message", "enterprise", "view", "event",
           "workflow_step", "state", "function_data", "bot_access_token")
"""Keys Bolt reads as JSON objects when present."""
MAY_BE_NULL = frozenset({"team", "enterprise"})
"""Of those, the ones Slack sends as ``null`` (org-wide installs) and Bolt reads as absent."""


def payload_problem(body: bytes, content_type: str | None) -> str | None:
    """Why a signed Slack request cannot be handed to Bolt; None when it can."""
    if (content_type or "").startswith("application/x-www-form-urlencoded"):
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=200)
        except (UnicodeDecodeError, ValueError) as exc:
            return f"the form cannot be read ({type(exc).__name__})"
        if "payload" not in form:
            return None  # a slash command: every field is text
        return _json_problem(form["payload"][0], interaction=True)
    return _json_problem(body.decode("utf-8", errors="replace"), interaction=False)


def envelope_problem(kind: str, payload: Any) -> str | None:
    """The same checks for a Socket Mode envelope's payload (``interactive``, ``events_api``,
    ``slash_commands``); None when Bolt can read it."""
    if not isinstance(payload, dict):
        return "the payload is not a JSON object"
    if kind == "slash_commands":
        return None if all(isinstance(v, str) for v in payload.values()) \
            else "a slash command field is not text"
    return _json_problem(json.dumps(payload), interaction=kind == "interactive")


def _json_problem(text: str, *, interaction: bool) -> str | None:
    try:
        data: Any = json.loads(text)
    except ValueError:
        return "the body is not JSON"
    except RecursionError:
        return "the body is nested too deeply"
    if not isinstance(data, dict):
        return "the body is not a JSON object"
    if interaction and not isinstance(data.get("type"), str):
        return "an interaction without a type"
    if "type" in data and not isinstance(data["type"], str):
        return "type is not text"
    for key in OBJECTS:
        if key not in data or isinstance(data[key], dict) or \
                (data[key] is None and key in MAY_BE_NULL):
            continue
        return f"{key} is not an object"
    for key in ("view", "event"):
        if isinstance(data.get(key), dict) and not isinstance(data[key].get("type"), str):
            return f"{key} has no type"
    if "actions" in data:
        actions = data["actions"]
        if not isinstance(actions, list) or not actions or \
                not all(isinstance(a, dict) for a in actions):
            return "actions is not a list of objects"
    for container in ("user", "team"):
        value = data.get(container)
        if isinstance(value, dict) and "id" in value and not isinstance(value["id"], str):
            return f"{container}.id is not text"
    return None


ROW_ID_MAX = 2 ** 31 - 1  # hardcost's own row ids (a PostgreSQL integer)
CLIO_ID_MAX = 2 ** 53  # Clio's ids are JSON numbers: beyond this they are not exact anywhere


def row_id(value: object) -> int:
    """A button's hardcost row id (a prompt, a group, a failure, a rule); 0 when the text is
    not one (not ASCII digits, or out of range): nothing has id 0."""
    text = str(value or "")
    if not (text.isascii() and text.isdigit() and len(text) <= 10):
        return 0
    number = int(text)
    return number if number <= ROW_ID_MAX else 0


def id_pair(value: object) -> tuple[int, int]:
    """``"<row id>:<Clio id>"`` (a prompt or group, and the matter or contact chosen);
    (0, 0) when it is not one."""
    first, sep, second = str(value or "").partition(":")
    if not sep or not (second.isascii() and second.isdigit() and len(second) <= 16):
        return 0, 0
    row, clio = row_id(first), int(second)
    if not row or not 0 < clio < CLIO_ID_MAX:
        return 0, 0
    return row, clio

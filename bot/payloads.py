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

from hardcost.sync.bounds import ID, fits

OBJECTS = ("team", "user", "channel", "container", "message", "enterprise", "view", "event",
           "workflow_step", "state", "function_data", "bot_access_token")
"""Keys Bolt reads as JSON objects when present."""
MAY_BE_NULL = frozenset({"team", "enterprise"})
"""Of those, the ones Slack sends as ``null`` (org-wide installs) and Bolt reads as absent."""
PAYLOAD_IDS = (("user", "id"), ("user", "team_id"), ("team", "id"), ("channel", "id"),
               ("container", "channel_id"), ("enterprise", "id"))
"""Slack ids in an interaction that hardcost may keep (who answered, where): a longer one
is not a Slack id, and is refused with the rest of the payload."""
COMMAND_IDS = ("team_id", "user_id", "channel_id", "enterprise_id")


def payload_problem(body: bytes, content_type: str | None) -> str | None:
    """Why a signed Slack request cannot be handed to Bolt; None when it can."""
    if (content_type or "").startswith("application/x-www-form-urlencoded"):
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=200)
        except (UnicodeDecodeError, ValueError) as exc:
            return f"the form cannot be read ({type(exc).__name__})"
        if "payload" not in form:  # a slash command: every field is text
            return _command_problem({k: v[0] for k, v in form.items() if v})
        return _json_problem(form["payload"][0], interaction=True)
    return _json_problem(body.decode("utf-8", errors="replace"), interaction=False)


def _command_problem(fields: dict[str, str]) -> str | None:
    """A slash command's fields: no NULs (no database keeps them) and Slack ids that fit where
    they are kept (``sync.bounds.ID``). The typed ``text`` may hold one: the person who typed
    it is answered with a usage reply (``bot.listeners.commands``), not a silent refusal."""
    if any("\x00" in value for key, value in fields.items() if key != "text"):
        return "a field holds a NUL character"
    for key in COMMAND_IDS:
        if key in fields and not fits(fields[key], ID):
            return f"{key} is not a Slack id"
    return None


def envelope_problem(kind: str, payload: Any) -> str | None:
    """The same checks for a Socket Mode envelope's payload (``interactive``, ``events_api``,
    ``slash_commands``); None when Bolt can read it."""
    if not isinstance(payload, dict):
        return "the payload is not a JSON object"
    if kind == "slash_commands":
        if not all(isinstance(v, str) for v in payload.values()):
            return "a slash command field is not text"
        return _command_problem(payload)
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
    for container, key in PAYLOAD_IDS:
        value = data.get(container)
        held = value.get(key) if isinstance(value, dict) else None
        if isinstance(held, str) and not fits(held, ID):
            return f"{container}.{key} is not a Slack id"
    # A search's typed text (block_suggestion) is never kept: the search drops its NULs.
    if data.get("type") != "block_suggestion" and _holds_nul(data):
        return "a value holds a NUL character"
    return None


def _holds_nul(data: Any) -> bool:
    """Whether any key or text in the payload holds NUL (PostgreSQL keeps none: Slack never
    sends one, so a payload with one is refused before a listener reads it)."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


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

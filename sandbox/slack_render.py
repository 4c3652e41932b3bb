"""Slack messages as a terminal shows them: the demo prints what the channel would see."""

from __future__ import annotations

import re
import textwrap
from typing import Any

_LINK = re.compile(r"<(https?://[^|>]+)\|([^>]+)>")
_MENTION = re.compile(r"<[@#]([A-Z0-9]+)(?:\|([^>]+))?>")
_DATE = re.compile(r"<!date\^\d+\^[^|]*\|([^>]+)>")


def _plain(text: str, names: dict[str, str] | None = None) -> str:
    """mrkdwn to plain text: links show their label, dates their fallback, people their
    name, no escapes."""
    names = names or {}
    text = _DATE.sub(r"\1", text)
    text = _LINK.sub(r"\2", text)
    text = _MENTION.sub(lambda m: "@" + (m.group(2) or names.get(m.group(1), m.group(1))),
                        text)
    text = text.replace("*", "").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return text


def _element(element: dict[str, Any], names: dict[str, str] | None = None) -> str:
    kind = element.get("type")
    label = element.get("text")
    if isinstance(label, dict):
        label = label.get("text")
    if kind == "button":
        return f"[{label}]"
    if kind in ("static_select", "external_select"):
        placeholder = (element.get("placeholder") or {}).get("text") or "choose"
        count = len(element.get("options") or [])
        return f"[{placeholder} ▾{f' {count} options' if count else ''}]"
    if isinstance(label, str):
        return _plain(label, names)
    return ""


def render(message: dict[str, Any], width: int = 92,
           names: dict[str, str] | None = None) -> str:
    """A message's blocks as indented lines (falls back to its text)."""
    lines: list[str] = []

    def plain(text: str) -> str:
        return _plain(text, names)

    for block in message.get("blocks") or []:
        kind = block.get("type")
        if kind in ("section", "header"):
            text = (block.get("text") or {}).get("text")
            if text:
                lines.append(plain(text))
            fields = [plain(f.get("text", "")).replace("\n", ": ")
                      for f in block.get("fields") or []]
            if fields:
                lines.append("   ".join(fields))
            if block.get("accessory"):
                lines[-1:] = [f"{lines[-1] if lines else ''}  {_element(block['accessory'])}"]
        elif kind == "context":
            lines.append(" · ".join(_element(e, names) for e in block.get("elements") or []))
        elif kind == "actions":
            lines.append("  ".join(_element(e) for e in block.get("elements") or []))
        elif kind == "divider":
            lines.append("─" * 20)
    if not lines:
        lines = [_plain(message.get("text") or "", names)]
    wrapped: list[str] = []
    for line in "\n".join(lines).splitlines():
        wrapped.extend(textwrap.wrap(line, width) or [""])
    return "\n".join("  │ " + line for line in wrapped)

"""Every ``/hardcost`` subcommand, typed with ``&``, ``<`` or ``>`` in its argument, sent as
Slack sends it (escaped: ``sandbox/slack_rig.py`` ``slack_escape``), gets an answer; no listener
raises, and no answer shows the person an entity (``&amp;amp;``, or ``&lt;`` where they typed
``<``) (issue 25)."""

from __future__ import annotations

import json
import logging
import re
import threading
from typing import Any

import pytest

from hardcost.bot.app import LAZY_WORKERS
from hardcost.bot.listeners.commands import SUBCOMMANDS, unescape
from hardcost.sandbox.slack_rig import SlackRig, slack_escape, wait_for

ANSWERED_IN_THE_ACK = {"help", "run"}
OPENS_A_MODAL = {"settings"}
CATEGORY = "Costs & <Fees>"

CASES: dict[str, tuple[str, str | None]] = {
    # subcommand: (what the person types, the part of it the answer shows back, if any)
    "help": ("help", None),
    "status": ("status", None),
    "run": ("run", None),
    "pending": ("pending", None),
    "failures": ("failures", None),
    "connect": ("connect Q&A<b>", "q&a<b>"),
    "disconnect": ("disconnect Q&A<b>", "q&a<b>"),
    "settings": ("settings", None),
    "set": (f"set category {CATEGORY}", CATEGORY),
    "pause": ("pause", None),
    "resume": ("resume", None),
    "check": ("check", None),
    "history": ("history Quill & <Ink>", "Quill & <Ink>"),
    "export": ("export 2026-01-01 <2026&01>", "<2026&01>"),
    "rules": ("rules page <2>&", None),
    "report": ("report <2026&03>", "<2026&03>"),
}
"""Every subcommand that takes an argument has one holding ``&``, ``<`` or ``>``."""

ENTITY = re.compile(r"&(?:amp|lt|gt);")


def test_the_cases_cover_every_subcommand() -> None:
    assert set(CASES) == SUBCOMMANDS


@pytest.mark.parametrize(("text", "escaped"), [
    ("Quill & Ink", "Quill &amp; Ink"),
    ("A < B > C", "A &lt; B &gt; C"),
    ("A &lt; B", "A &amp;lt; B"),
    ("<@U123> <#C123|costs> <!here> <https://example.com/a?b=1&c=2|x & y>",
     "<@U123> <#C123|costs> <!here> <https://example.com/a?b=1&amp;c=2|x &amp; y>"),
    ("<@U1 <b>", "&lt;@U1 &lt;b&gt;"),
    ("<ftp://x> <x>", "&lt;ftp://x&gt; &lt;x&gt;"),
])
def test_the_rig_escapes_command_text_as_slack_does(text: str, escaped: str) -> None:
    assert slack_escape(text) == escaped
    assert unescape(slack_escape(text)) == text


def _texts(node: Any, kind: str = "mrkdwn") -> list[tuple[str, str]]:
    """Every (type, text) in a message or view: text objects by their type; a message's
    fallback ``text`` is mrkdwn."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        if isinstance(node.get("text"), str):
            found.append((str(node.get("type") if node.get("type") in ("plain_text", "mrkdwn")
                              else kind), node["text"]))
        for key, value in node.items():
            if key != "text" or not isinstance(value, str):
                found.extend(_texts(value, kind))
    elif isinstance(node, list):
        for item in node:
            found.extend(_texts(item, kind))
    return found


def _shown(kind: str, text: str) -> str:
    """What the person sees: mrkdwn's three entities are undone once; plain text is shown as
    it is."""
    return unescape(text) if kind == "mrkdwn" else text


def _answer(rig: SlackRig, sub: str, text: str) -> Any:
    before = len(rig.replies_to(rig.admin))
    views = len(rig.ws.views_opened)
    response = rig.command(text)
    assert response.status_code == 200, (text, response.status_code, response.text[:300])
    if sub in ANSWERED_IN_THE_ACK or sub not in SUBCOMMANDS:
        try:
            return response.json()
        except ValueError:
            return {"text": response.text}
    if sub in OPENS_A_MODAL:
        return wait_for(lambda: rig.ws.views_opened[views:] and rig.ws.views_opened[-1],
                        what=f"the modal of {text!r}")
    return wait_for(lambda: rig.replies_to(rig.admin)[before:],
                    what=f"the answer to {text!r}")


def _lazy_listeners_done(rig: SlackRig) -> None:
    """Wait until the lazy listeners queued so far have ended (and logged what they raised):
    one task per worker of the pool, each held until all have started, runs only once every
    earlier task has left its thread."""
    executor = rig.ctx.listener_executor
    assert executor is not None
    barrier = threading.Barrier(LAZY_WORKERS)
    done = [executor.submit(barrier.wait, 15) for _ in range(LAZY_WORKERS)]
    for future in done:
        future.result(timeout=20)


@pytest.mark.parametrize("sub", [*sorted(CASES), "unknown"])
def test_every_subcommand_with_markup_characters_gets_a_clean_answer(
        rig: SlackRig, sub: str, caplog: pytest.LogCaptureFixture) -> None:
    rig.firm.clio.add_expense_category(CATEGORY, entry_type="hard_cost")
    # "unknown": a subcommand that is none, answered in the ack with what was typed
    text, echoed = CASES.get(sub, ("A&b<c> d", "a&b<c>"))

    answer = _answer(rig, sub, text)

    assert answer, text
    raw = json.dumps(answer, ensure_ascii=False)
    assert "&amp;amp;" not in raw and "&amp;lt;" not in raw and "&amp;gt;" not in raw, raw
    shown = [(kind, _shown(kind, value)) for kind, value in _texts(answer)]
    for kind, value in shown:
        assert not ENTITY.search(value), (sub, kind, value)  # an entity the person would see
    if echoed is not None:
        assert any(echoed in value for _, value in shown), (echoed, shown)
    _lazy_listeners_done(rig)
    errors = [r for r in caplog.records
              if r.name.startswith("slack_bolt") and r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]

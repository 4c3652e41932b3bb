"""``/hardcost history <client>`` finds a client by part of its name in any case, for every
letter and not only ASCII, with the same answer on SQLite and PostgreSQL (issue 24 #18)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from hardcost.sandbox.slack_rig import SlackRig, wait_for
from hardcost.sync import audit
from hardcost.sync.audit import Action


def _text(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks") or [], ensure_ascii=False) + message.get("text", "")


def _answer(rig: SlackRig, command: str) -> str:
    before = len(rig.replies_to(rig.admin))
    rig.command(command)
    return _text(wait_for(lambda: rig.replies_to(rig.admin)[before:] and
                          rig.replies_to(rig.admin)[-1], what=f"the answer to {command!r}"))


def test_history_finds_a_non_ascii_client_name_in_any_case(rig: SlackRig) -> None:
    with rig.firm.sessions() as session:
        for n, client in enumerate(["ÖZTÜRK Holdings", "Øster & Co", "Oztruk Ltd",
                                    "ÉCOLE Saint-Ïgnace"]):
            audit.record(session, rig.firm.id, Action.IMPORTED, "schedule",
                         purchase_id=str(300 + n), client=client, amount=Decimal("12.00"),
                         matter=f"{n:05d} Matter", clio_activity_id=700 + n)
        session.commit()

    for query, found, not_found in (("öztürk", "ÖZTÜRK Holdings", "Oztruk"),
                                    ("ÖZTÜRK", "ÖZTÜRK Holdings", "Oztruk"),
                                    ("øster", "Øster", "ÖZTÜRK"),
                                    ("école saint-ï", "ÉCOLE", "ÖZTÜRK")):
        body = _answer(rig, f"history {query}")
        assert "1 entry" in body and found in body and not_found not in body, (query, body)

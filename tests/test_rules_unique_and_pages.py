"""Matter rules held to one per client and payee by the database, and listed page by page
(issue 24 #7, #15), over real HTTP with signed Slack requests, on both databases.

#7: three "Always do this" clicks at the same moment made three identical active rules. The
clicks here are made to overlap for certain: the test holds the database's write lock on the
rules while the three clicks come in, waits until each listener thread is blocked writing its
rule (seen in the threads' stacks), then lets them all go at once.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from alembic import command
from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sandbox.slack_rig import SlackRig, button_value, wait_for
from hardcost.sync.db import alembic_config
from hardcost.sync.engine import make_engine
from hardcost.sync.store import AuditEntry, MatterRule, utcnow
from hardcost.sync.store import Firm as FirmRow

OFFER = "Always do this for"


def _text(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks") or [], ensure_ascii=False) + message.get("text", "")


def _rules(rig: SlackRig) -> list[MatterRule]:
    with rig.firm.sessions() as session:
        return list(session.scalars(select(MatterRule).where(
            MatterRule.firm_id == rig.firm.id, MatterRule.removed_at.is_(None))))


def _actions(rig: SlackRig, action: str) -> int:
    with rig.firm.sessions() as session:
        return len(list(session.scalars(select(AuditEntry.id).where(
            AuditEntry.firm_id == rig.firm.id, AuditEntry.action == action))))


def _answered_offer(rig: SlackRig) -> dict[str, Any]:
    """An Acme expense from Speedy Couriers, asked about and answered (Employment): the
    message offering the rule."""
    firm = rig.firm
    firm.client("Acme Holdings", ["Lease", "Employment", "Litigation"])
    vendor = firm.qbo.add_vendor("Speedy Couriers")["Id"]
    firm.expense(("48.75", "Acme Holdings", "Courier"), doc_number="2001",
                 entity=(vendor, "Vendor"))
    rig.command("run")
    prompt = wait_for(lambda: next((m for m in rig.channel_messages()
                                    if "Which matter" in m.get("text", "")), None),
                      what="the prompt")
    number = firm.clio.matters[firm.matters["Employment"]]["display_number"]
    rig.click(prompt, "hc_choose_matter", value=button_value(prompt, number))
    return wait_for(lambda: (m := rig.ws.message(rig.channel, prompt["ts"]))
                    and OFFER in _text(m) and m, what="the rule offer")


def _threads_in(function: str, inserting: bool = False) -> int:
    """Threads now inside ``function`` (and, with ``inserting``, executing an INSERT into
    matter_rules there: waiting for the write lock)."""
    count = 0
    for frame in sys._current_frames().values():
        inside = writing = False
        walk: Any = frame
        while walk is not None:
            inside = inside or walk.f_code.co_name == function
            statement = walk.f_locals.get("statement") if walk.f_code.co_name.startswith(
                "do_execute") else None
            writing = writing or (isinstance(statement, str)
                                  and statement.lstrip().startswith("INSERT INTO matter_rules"))
            walk = walk.f_back
        count += inside and (writing or not inserting)
    return count


@contextmanager
def _rules_write_lock(database_url: str) -> Iterator[None]:
    """No rule can be written while this is held; rules can still be read."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                driver: Any = conn.connection.driver_connection
                driver.execute("BEGIN IMMEDIATE")
                try:
                    yield
                finally:
                    driver.execute("ROLLBACK")
            else:
                with conn.begin():
                    conn.execute(text("LOCK TABLE matter_rules IN SHARE MODE"))
                    yield
    finally:
        engine.dispose()


def test_clicks_at_the_same_moment_make_one_rule_and_the_others_are_told_it_exists(
        rig: SlackRig, database_url: str) -> None:
    offer = _answered_offer(rig)
    value = button_value(offer, OFFER)
    clickers = [rig.staff, rig.admin, rig.ws.add_user("Pat Paralegal")["id"]]

    with _rules_write_lock(database_url):
        for user in clickers:
            assert rig.click(offer, "hc_make_rule", value=value, user=user).status_code == 200
        wait_for(lambda: _threads_in("on_make_rule", inserting=True) == 3,
                 what="three clicks writing their rule at once")
    wait_for(lambda: _threads_in("on_make_rule") == 0, what="the three clicks answered")

    rules = _rules(rig)
    assert len(rules) == 1 and rules[0].matter_id == rig.firm.matters["Employment"]
    assert _actions(rig, "rule_created") == 1 and _actions(rig, "rule_removed") == 0
    told = [u for u in clickers
            if any("A rule already sends Speedy Couriers → Acme Holdings" in _text(m)
                   for m in rig.replies_to(u))]
    assert len(told) == 2
    shown = wait_for(lambda: (m := rig.ws.message(rig.channel, offer["ts"]))
                     and "Rule made by" in _text(m) and m, what="the rule shown")
    assert "hc_make_rule" not in _text(shown)


def test_the_database_refuses_a_second_active_rule_for_the_same_client_and_payee(
        rig: SlackRig) -> None:
    offer = _answered_offer(rig)
    rig.click(offer, "hc_make_rule", value=button_value(offer, OFFER))
    [rule] = wait_for(lambda: _rules(rig), what="the rule")

    def copy(account_id: str | None) -> MatterRule:
        return MatterRule(firm_id=rule.firm_id, contact_id=rule.contact_id,
                          client_name=rule.client_name, payee_id=rule.payee_id,
                          payee_name=rule.payee_name, account_id=account_id,
                          matter_id=rule.matter_id, matter_label=rule.matter_label,
                          created_by="U0OTHER", created_at=utcnow(), uses=0)

    with rig.firm.sessions() as session:
        session.add(copy(None))
        try:
            session.commit()
            raise AssertionError("a second active rule was stored")
        except IntegrityError:
            session.rollback()
        # one naming the account is another rule, once; a removed one is no longer active
        session.add(copy("57"))
        removed = copy(None)
        removed.removed_at = utcnow() - timedelta(days=1)
        session.add(removed)
        session.commit()
        session.add(copy("57"))
        try:
            session.commit()
            raise AssertionError("a second active rule for the account was stored")
        except IntegrityError:
            session.rollback()
    assert len(_rules(rig)) == 2


def test_the_migration_keeps_the_newest_of_rules_that_repeat_each_other(
        db_engine: Engine, sessions: sessionmaker[Session]) -> None:
    """Databases where concurrent clicks already made repeated rules upgrade: the newest of
    each repetition (the one runs applied) stays active, the others are removed."""
    config = alembic_config(db_engine.url.render_as_string(hide_password=False))

    def migrate(step: str, revision: str) -> None:
        with db_engine.begin() as conn:
            config.attributes["connection"] = conn
            getattr(command, step)(config, revision)

    with sessions() as session:
        firm = FirmRow(name="Rules LLP")
        session.add(firm)
        session.commit()
        firm_id = firm.id
    try:
        migrate("downgrade", "0019")
        with db_engine.begin() as conn:
            for n, (payee, account) in enumerate([("P1", None), ("P1", None), ("P1", None),
                                                  ("P1", "57"), ("P1", "57"), ("P2", None)]):
                conn.execute(text(
                    "INSERT INTO matter_rules (firm_id, contact_id, client_name, payee_id, "
                    "payee_name, account_id, matter_id, matter_label, created_by, created_at, "
                    "uses) VALUES (:f, 7, 'Acme', :p, 'Speedy', :a, :m, 'M', 'U1', :at, 0)"),
                    {"f": firm_id, "p": payee, "a": account, "m": 100 + n,
                     "at": utcnow()})
    finally:
        migrate("upgrade", "head")

    with sessions() as session:
        rules = list(session.scalars(select(MatterRule).order_by(MatterRule.id)))
    active = [(r.payee_id, r.account_id, r.matter_id) for r in rules if r.removed_at is None]
    assert active == [("P1", None, 102), ("P1", "57", 104), ("P2", None, 105)]
    assert {r.removed_by for r in rules if r.removed_at is not None} == {"hardcost"}


# --- /hardcost rules, page by page (#15) ------------------------------------------------------


def _seed_rules(rig: SlackRig, count: int) -> list[int]:
    with rig.firm.sessions() as session:
        rules = [MatterRule(firm_id=rig.firm.id, contact_id=1000 + n, client_name=f"Client {n}",
                            payee_id=str(n), payee_name=f"Payee {n:02d}", matter_id=5000 + n,
                            matter_label=f"{n:05d} Matter", created_by=rig.staff,
                            created_at=utcnow(), uses=0) for n in range(1, count + 1)]
        session.add_all(rules)
        session.commit()
        return [r.id for r in rules]


def _replies_since(rig: SlackRig, user: str, before: int, last: str) -> list[dict[str, Any]]:
    """The replies after the first ``before``, once one of them contains ``last``."""
    return wait_for(lambda: (new := rig.replies_to(user)[before:])
                    and any(last in _text(m) for m in new) and new, what=repr(last))


def _listed(messages: list[dict[str, Any]]) -> set[str]:
    return {e["value"] for m in messages for b in m["blocks"]
            if (e := b.get("accessory") or {}).get("action_id") == "hc_remove_rule"}


def test_every_rule_can_be_seen_and_removed_page_by_page(rig: SlackRig) -> None:
    ids = _seed_rules(rig, 55)
    user = rig.admin

    rig.command("rules", user=user)
    first = _replies_since(rig, user, 0, "hc_rules_page")
    assert "55 matter rules, page 1 of 2" in _text(first[0])
    assert _listed(first) == {str(i) for i in ids[:50]}
    assert "…and 5 more." in _text(first[-1])

    before = len(rig.replies_to(user))
    rig.click(first[-1], "hc_rules_page", value=button_value(first[-1], "More"), user=user)
    second = _replies_since(rig, user, before, "Payee 55")
    assert "page 2 of 2" in _text(second[0]) and "hc_rules_page" not in _text(second[-1])
    assert _listed(second) == {str(i) for i in ids[50:]}

    page = next(m for m in second if "Payee 55" in _text(m))
    rig.click(page, "hc_remove_rule", value=str(ids[-1]), user=user)
    wait_for(lambda: len(_rules(rig)) == 54, what="the 55th rule removed")
    shown = wait_for(lambda: (m := rig.ws.message(page["channel"], page["ts"]))
                     and "54 matter rules, page 2 of 2" in _text(m) and m,
                     what="the page shown again")
    assert _listed([shown]) == {str(i) for i in ids[50:54]}

    before = len(rig.replies_to(user))
    rig.command("rules page 2", user=user)
    again = _replies_since(rig, user, before, "Payee 54")
    assert _listed(again) == {str(i) for i in ids[50:54]}
    before = len(rig.replies_to(user))
    rig.command("rules page two", user=user)
    assert "/hardcost rules [page N]" in _text(_replies_since(rig, user, before, "Usage")[-1])

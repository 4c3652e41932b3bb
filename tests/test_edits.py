"""Purchases edited in QuickBooks after import follow into Clio (docs/purchases.md, "Changes after
import"), over real HTTP against the sandbox QuickBooks and Clio: unbilled entries are patched in
place with ``If-Match``, billed ones are left and reported, entries a person changed in Clio are
not overwritten, and a changed key (customer, lines) removes the old entry and writes the new one
exactly once."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from hardcost.sandbox.clio import server_error_fault
from hardcost.sandbox.faults import Fault
from hardcost.sandbox.qbo import account_line
from hardcost.sandbox.slack_rig import SlackRig, wait_for
from hardcost.sync.leases import settle_abandoned_runs
from hardcost.sync.store import AuditEntry, LinkState
from tests.firmkit import Firm, env_for

ACTIVITY = r"/activities/\d+\.json$"
ACTIVITIES = r"/activities\.json$"


def _audit(firm: Firm, action: str | None = None) -> list[AuditEntry]:
    with firm.sessions() as session:
        query = select(AuditEntry).where(AuditEntry.firm_id == firm.id)
        if action:
            query = query.where(AuditEntry.action == action)
        return list(session.scalars(query.order_by(AuditEntry.id)))


def _imported_one(firm: Firm, amount: str = "1200.00") -> dict[str, object]:
    firm.client("Jane Smith", ["Smith estate"])
    purchase = firm.expense((amount, "Jane Smith", "Expert report"), doc_number="1042")
    assert firm.run().imported == 1
    firm.later()
    return purchase


def _lines(firm: Firm, *lines: tuple[str, str]) -> list[dict[str, object]]:
    return [account_line(amount, firm.import_account, customer_id=firm.customers[who])
            for amount, who in lines]


def test_an_edited_unbilled_purchase_updates_its_entry_in_place(firm: Firm) -> None:
    purchase = _imported_one(firm)
    [before] = firm.entries()
    [link] = firm.links()
    stored_etag = link.clio_etag

    firm.qbo.update_purchase(str(purchase["Id"]), lines=_lines(firm, ("120.00", "Jane Smith")),
                             txn_date="2026-02-05")
    summary = firm.run()

    [after] = firm.entries()
    assert after["id"] == before["id"]  # the same entry, not a new one
    assert after["price"] == Decimal("120.00") and after["date"] == "2026-02-05"
    patches = [c for c in firm.world.clio.calls.all() if c.method == "PATCH"]
    assert len(patches) == 1 and patches[0].if_match == stored_etag
    assert firm.world.clio.calls.count("POST", ACTIVITIES) == 1  # the import only
    assert summary.updated == 1 and summary.imported == 0
    [item] = summary.changed_items
    assert item.before["amount"] == "1200.00" and item.after["amount"] == "120.00"
    [link] = firm.links()
    assert link.amount == Decimal("120.00") and link.clio_etag == after["etag"]
    [row] = _audit(firm, "updated")
    assert row.before is not None and row.after is not None
    assert (row.before["price"], row.after["price"]) == ("1200.00", "120.00")
    assert row.actor == "manual" and row.clio_activity_id == after["id"]

    firm.later()
    again = firm.run()  # nothing changed since: nothing sent
    assert again.updated == 0 and len([c for c in firm.world.clio.calls.all()
                                       if c.method == "PATCH"]) == 1


def test_an_edit_of_a_billed_entry_changes_nothing_in_clio_and_says_what_differs(
        firm: Firm) -> None:
    purchase = _imported_one(firm)
    [entry] = firm.entries()
    firm.clio.mark_billed(entry["id"], state="draft")
    etag = firm.clio.activities[entry["id"]]["etag"]

    firm.qbo.update_purchase(str(purchase["Id"]), lines=_lines(firm, ("120.00", "Jane Smith")))
    summary = firm.run()

    assert firm.world.clio.calls.count("PATCH") == 0
    assert firm.clio.activities[entry["id"]]["price"] == Decimal("1200.00")
    assert firm.clio.activities[entry["id"]]["etag"] == etag
    assert summary.changed_after_billing == 1 and summary.updated == 0
    [item] = summary.changed_items
    assert item.outcome == "billed" and item.bill is not None and "draft" in item.bill
    assert (item.before["amount"], item.after["amount"]) == ("1200.00", "120.00")
    assert len(_audit(firm, "changed_after_billing")) == 1

    firm.later()
    assert firm.run().changed_after_billing == 0  # said once per edit, not every run


def test_an_entry_a_person_changed_in_clio_is_not_overwritten(firm: Firm) -> None:
    purchase = _imported_one(firm)
    [entry] = firm.entries()
    firm.clio.edit_activity(entry["id"], price="1100.00")  # a person's correction in Clio

    firm.qbo.update_purchase(str(purchase["Id"]), lines=_lines(firm, ("120.00", "Jane Smith")))
    summary = firm.run()

    assert firm.world.clio.calls.count("PATCH") == 0
    assert firm.clio.activities[entry["id"]]["price"] == Decimal("1100.00")
    assert summary.not_overwritten == 1 and summary.updated == 0
    assert summary.changed_items[0].outcome == "not_overwritten"
    assert len(_audit(firm, "not_overwritten")) == 1


def test_a_412_is_read_again_and_tried_once_more(firm: Firm) -> None:
    purchase = _imported_one(firm)
    [entry] = firm.entries()
    firm.clio.edit_activity(entry["id"])  # the etag moves, the fields hardcost wrote do not

    firm.qbo.update_purchase(str(purchase["Id"]), lines=_lines(firm, ("120.00", "Jane Smith")))
    summary = firm.run()

    patches = [c for c in firm.world.clio.calls.all() if c.method == "PATCH"]
    assert [c.status for c in patches] == [412, 200]
    assert firm.clio.activities[entry["id"]]["price"] == Decimal("120.00")
    assert summary.updated == 1


def test_an_edit_that_touches_nothing_hardcost_writes_sends_nothing(firm: Firm) -> None:
    purchase = _imported_one(firm)
    other = account_line("55.00", firm.other_account, customer_id=firm.customers["Jane Smith"])
    lines = _lines(firm, ("1200.00", "Jane Smith"))
    lines[0]["Description"] = "Expert report"
    firm.qbo.update_purchase(str(purchase["Id"]), lines=[*lines, other])

    summary = firm.run()

    assert firm.world.clio.calls.count("PATCH") == 0 and summary.updated == 0
    assert summary.unchanged == 1
    [link] = firm.links()
    assert link.sync_token == firm.qbo.purchases[str(purchase["Id"])]["SyncToken"]


def test_a_customer_change_removes_the_old_entry_and_writes_the_new_one_once(
        firm: Firm) -> None:
    purchase = _imported_one(firm, "300.00")
    firm.client("Bob Brown", ["Brown contract"])
    [old] = firm.entries()

    firm.qbo.update_purchase(str(purchase["Id"]), lines=_lines(firm, ("300.00", "Bob Brown")))
    summary = firm.run()

    [new] = firm.entries()
    assert new["id"] != old["id"] and new["matter"]["id"] == firm.matters["Brown contract"]
    assert summary.imported == 1 and summary.deleted == 1
    states = {(link.customer_id, link.state) for link in firm.links()}
    assert states == {(firm.customers["Jane Smith"], LinkState.DELETED),
                      (firm.customers["Bob Brown"], LinkState.CREATED)}
    assert [r.action for r in _audit(firm)][-2:] == ["imported", "deleted"]

    firm.later()
    quiet = firm.run()
    assert quiet.imported == 0 and quiet.deleted == 0 and len(firm.entries()) == 1


def test_a_customer_change_is_finished_by_the_next_run_when_clio_fails_half_way(
        firm: Firm) -> None:
    purchase = _imported_one(firm, "300.00")
    firm.client("Bob Brown", ["Brown contract"])
    [old] = firm.entries()
    firm.world.clio.faults.add(server_error_fault(503, times=1000, path=ACTIVITY))

    firm.qbo.update_purchase(str(purchase["Id"]), lines=_lines(firm, ("300.00", "Bob Brown")))
    half = firm.run()  # the new entry is written; the old one cannot be removed
    assert half.imported == 1 and half.deleted == 0
    assert {e["id"] for e in firm.entries()} >= {old["id"]}
    [marked] = [link for link in firm.links() if link.superseded_at is not None]
    assert marked.clio_activity_id == old["id"] and marked.removed_at is None

    firm.world.clio.faults.clear()
    firm.later()
    done = firm.run()

    assert done.deleted == 1 and done.imported == 0
    [left] = firm.entries()
    assert left["matter"]["id"] == firm.matters["Brown contract"]


def test_a_line_removed_with_split_lines_removes_its_entry(firm: Firm) -> None:
    firm.update_settings(split_lines=True)
    firm.client("Jane Smith", ["Smith estate"])
    purchase = firm.expense(("10.00", "Jane Smith"), ("20.00", "Jane Smith"))
    assert firm.run().imported == 2
    firm.later()
    first_line = purchase["Line"][0]

    firm.qbo.update_purchase(str(purchase["Id"]), lines=[first_line])
    summary = firm.run()

    assert summary.deleted == 1 and summary.imported == 0
    [left] = firm.entries()
    assert left["price"] == Decimal("10.00")


def test_a_billed_entry_whose_customer_changed_is_kept_and_reported(firm: Firm) -> None:
    purchase = _imported_one(firm, "300.00")
    firm.client("Bob Brown", ["Brown contract"])
    [old] = firm.entries()
    firm.clio.mark_billed(old["id"])

    firm.qbo.update_purchase(str(purchase["Id"]), lines=_lines(firm, ("300.00", "Bob Brown")))
    summary = firm.run()

    assert summary.imported == 1 and summary.kept == 1
    assert old["id"] in firm.clio.activities
    assert "on bill" in summary.removed_items[0].note
    assert len(_audit(firm, "kept")) == 1


def test_a_lost_patch_reply_is_checked_by_reading_the_entry(firm: Firm) -> None:
    purchase = _imported_one(firm)
    [entry] = firm.entries()
    firm.world.clio.faults.add(Fault(path=ACTIVITY, method="PATCH", after_handler=True,
                                     status=502, body='{"error": {"type": "BadGateway"}}'))

    firm.qbo.update_purchase(str(purchase["Id"]), lines=_lines(firm, ("120.00", "Jane Smith")))
    summary = firm.run()

    assert summary.updated == 1 and summary.failed == 0
    assert firm.clio.activities[entry["id"]]["price"] == Decimal("120.00")


def test_an_edit_clio_cannot_take_now_is_retried_by_the_next_run(firm: Firm) -> None:
    purchase = _imported_one(firm)
    firm.world.clio.faults.add(server_error_fault(503, times=1000, path=ACTIVITY))
    firm.qbo.update_purchase(str(purchase["Id"]), lines=_lines(firm, ("120.00", "Jane Smith")))

    down = firm.run()
    assert down.updated == 0 and down.failed == 1

    firm.world.clio.faults.clear()
    firm.later()  # past the watermark: the open failure brings the purchase back
    back = firm.run()
    assert back.updated == 1 and firm.open_failures() == []
    assert firm.entries()[0]["price"] == Decimal("120.00")


def test_a_waiting_prompt_follows_an_edit(rig: SlackRig) -> None:
    firm = rig.firm
    firm.client("Acme Holdings", ["Lease", "Employment"])
    purchase = firm.expense(("48.75", "Acme Holdings"))
    assert rig.command("run").status_code == 200
    prompt = wait_for(lambda: rig.prompts()[0] if rig.prompts() else None, what="the prompt")
    assert "48.75" in str(prompt["blocks"])

    firm.later()
    firm.qbo.update_purchase(str(purchase["Id"]),
                             lines=_lines(firm, ("57.25", "Acme Holdings")))
    firm.later()
    assert rig.command("run").status_code == 200

    updated = wait_for(lambda: (m := rig.ws.message(rig.channel, prompt["ts"]))
                       and "57.25" in str(m.get("blocks")) and m, what="the prompt updated")
    assert "hc_choose_matter" in str(updated["blocks"])  # still a question, still its buttons
    assert len(rig.prompts()) == 1  # updated in place, not posted again


def test_a_prompt_whose_purchase_no_longer_needs_a_choice_loses_its_buttons(
        rig: SlackRig) -> None:
    firm = rig.firm
    firm.client("Acme Holdings", ["Lease", "Employment"])
    firm.client("Jane Smith", ["Smith estate"])
    purchase = firm.expense(("48.75", "Acme Holdings"))
    assert rig.command("run").status_code == 200
    prompt = wait_for(lambda: rig.prompts()[0] if rig.prompts() else None, what="the prompt")

    firm.later()
    firm.qbo.update_purchase(str(purchase["Id"]), lines=_lines(firm, ("48.75", "Jane Smith")))
    firm.later()
    assert rig.command("run").status_code == 200

    updated = wait_for(lambda: (m := rig.ws.message(rig.channel, prompt["ts"]))
                       and "Edited in QuickBooks" in str(m.get("blocks")) and m,
                       what="the prompt settled")
    assert "hc_choose_matter" not in str(updated["blocks"])
    assert [e["matter"]["id"] for e in firm.entries()] == [firm.matters["Smith estate"]]


@pytest.mark.parametrize("moment", ["before the new POST", "before the old entry goes"])
def test_a_customer_change_killed_half_way_lands_exactly_once(
        firm: Firm, database_url: str, db_engine: Engine, moment: str) -> None:
    """``hardcost sync`` is SIGKILLed between recording the change and finishing it: after
    the removal was recorded but before the new entry's POST reached Clio, or after the new
    entry was written but before the old one was removed. The next run finishes the step:
    one entry on the new client's matter, the old one deleted, nothing doubled."""
    purchase = _imported_one(firm, "300.00")
    firm.client("Bob Brown", ["Brown contract"])
    [old] = firm.entries()
    firm.qbo.update_purchase(str(purchase["Id"]), lines=_lines(firm, ("300.00", "Bob Brown")))
    bob = firm.customers["Bob Brown"]
    if moment == "before the new POST":  # held before Clio handles it: never reaches Clio
        firm.world.clio.faults.add(Fault(path=ACTIVITIES, method="POST", status=503,
                                         delay=20, times=5))

        def reached() -> bool:
            return any(link.superseded_at is not None for link in firm.links())
    else:  # the read before the old entry's DELETE is held
        firm.world.clio.faults.add(Fault(path=rf"/activities/{old['id']}\.json$",
                                         method="GET", passthrough=True, delay=20, times=5))

        def reached() -> bool:
            return any(link.customer_id == bob and link.state == LinkState.CREATED
                       for link in firm.links())

    proc = subprocess.Popen([sys.executable, "-m", "hardcost", "sync", "--firm", str(firm.id)],
                            env=env_for(firm.world, database_url),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(reached, timeout=60, what=f"the run to get {moment}")
        time.sleep(0.5)  # into the held request
        assert proc.poll() is None, "the run ended before it could be killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    firm.world.clio.faults.clear()
    assert old["id"] in firm.clio.activities  # not removed yet

    settle_abandoned_runs(db_engine)  # hardcost serve starting again
    firm.later()
    summary = firm.run()

    assert summary.error is None
    [left] = firm.entries()
    assert left["matter"]["id"] == firm.matters["Brown contract"]
    assert left["price"] == Decimal("300.00")
    states = sorted((link.customer_id == bob, link.state) for link in firm.links())
    assert states == [(False, LinkState.DELETED), (True, LinkState.CREATED)]
    firm.later()
    assert firm.run().imported == 0 and len(firm.entries()) == 1


def test_a_line_moved_to_another_matter_of_the_same_client_is_one_patch(firm: Firm) -> None:
    firm.client("Acme Holdings", ["Lease", "Employment"])
    firm.client("Lease", contact=False, parent="Acme Holdings")
    firm.client("Employment", contact=False, parent="Acme Holdings")
    purchase = firm.expense(("75.00", "Lease"))
    assert firm.run().imported == 1
    [before] = firm.entries()
    assert before["matter"]["id"] == firm.matters["Lease"]
    firm.later()
    posts = firm.world.clio.calls.count("POST", ACTIVITIES)

    firm.qbo.update_purchase(str(purchase["Id"]), lines=_lines(firm, ("80.00", "Employment")))
    summary = firm.run()

    [after] = firm.entries()
    assert after["id"] == before["id"] and after["matter"]["id"] == firm.matters["Employment"]
    assert after["price"] == Decimal("80.00")
    assert firm.world.clio.calls.count("POST", ACTIVITIES) == posts
    assert firm.world.clio.calls.count("DELETE") == 0
    assert summary.updated == 1 and summary.imported == summary.deleted == 0
    assert summary.changed_items[0].outcome == "moved"
    [link] = firm.links()
    assert link.customer_id == firm.customers["Employment"] and link.superseded_at is None
    assert f"/{firm.customers['Employment']}]" in after["note"]
    assert [r.action for r in _audit(firm, "moved")] == ["moved"]

    firm.later()
    quiet = firm.run()
    assert quiet.updated == quiet.imported == quiet.deleted == 0


def test_the_channel_is_told_what_changed_after_billing(rig: SlackRig) -> None:
    firm = rig.firm
    purchase = _imported_one(firm)
    [entry] = firm.entries()
    firm.clio.mark_billed(entry["id"], state="awaiting_payment")
    firm.qbo.update_purchase(str(purchase["Id"]), lines=_lines(firm, ("120.00", "Jane Smith")))
    firm.later()

    assert rig.command("run").status_code == 200

    summary = wait_for(lambda: next((m for m in rig.channel_messages()
                                     if "Changed after billing" in str(m.get("blocks"))), None),
                       what="the run summary")
    details = wait_for(lambda: (text := " ".join(
        str(m.get("blocks")) for m in rig.ws.thread(rig.channel, summary["ts"])[1:]))
        and "Edited in QuickBooks" in text and text, what="the details in the thread")
    assert "$1,200.00 → *$120.00*" in details
    assert f"Clio #{entry['id']}" in details and "awaiting payment" in details
    assert "Open the matter in Clio" in details
    assert firm.clio.activities[entry["id"]]["price"] == Decimal("1200.00")


def test_a_dry_run_says_an_edit_would_be_followed_and_sends_nothing(firm: Firm) -> None:
    purchase = _imported_one(firm)
    firm.qbo.update_purchase(str(purchase["Id"]), lines=_lines(firm, ("120.00", "Jane Smith")))

    dry = firm.run(dry_run=True)

    assert dry.updated == 1 and firm.world.clio.calls.count("PATCH") == 0
    assert firm.entries()[0]["price"] == Decimal("1200.00")
    assert firm.run().updated == 1  # the dry run stored nothing: the real run still follows


def test_history_shows_who_ran_the_import_and_what_the_edit_changed(rig: SlackRig) -> None:
    firm = rig.firm
    firm.client("Jane Smith", ["Smith estate"])
    purchase = firm.expense(("1200.00", "Jane Smith"))
    assert rig.command("run").status_code == 200
    wait_for(lambda: _audit(firm, "imported"), what="the import's audit row")
    [imported] = _audit(firm, "imported")
    assert imported.actor == rig.admin  # the person who typed /hardcost run
    firm.later()
    firm.qbo.update_purchase(str(purchase["Id"]), lines=_lines(firm, ("120.00", "Jane Smith")))
    firm.later()
    firm.run()

    asked = len(rig.replies_to(rig.admin))
    rig.command(f"history {purchase['Id']}")
    reply = wait_for(lambda: rig.replies_to(rig.admin)[asked:] or None, what="the history")[0]
    text = str(reply["blocks"])
    assert "updated in Clio" in text and "$1,200.00 → $120.00" in text
    assert "imported" in text and f"<@{rig.admin}>" in text

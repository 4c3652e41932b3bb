"""QuickBooks webhooks end to end: signed deliveries over HTTP into the served app, stored
before the 200, then imported by ``process_pending`` with the rig's context."""

from __future__ import annotations

import json
from typing import Any

import requests
from sqlalchemy import select

from hardcost.bot.webhooks import WebhookWorker
from hardcost.sandbox.slack_rig import SlackRig, wait_for
from hardcost.sync.store import WebhookEvent
from hardcost.sync.webhooks import process_pending
from tests.firmkit import price


def _url(rig: SlackRig) -> str:
    return rig.web.url + "/webhooks/quickbooks"


def _post(rig: SlackRig, payload: Any, *, content_type: str = "application/json",
          signature: str | None = None, raw: bytes | None = None,
          timeout: float = 10) -> requests.Response:
    body = raw if raw is not None else json.dumps(payload).encode()
    sig = signature if signature is not None else rig.firm.world.qbo.sign_webhook(body)
    headers = {"Content-Type": content_type}
    if sig:
        headers["intuit-signature"] = sig
    return requests.post(_url(rig), data=body, headers=headers, timeout=timeout)


def _legacy(realm: str, purchase_id: str, operation: str = "Create",
            updated: str = "2026-02-03T10:00:00.000Z", name: str = "Purchase") -> dict[str, Any]:
    return {"eventNotifications": [{"realmId": realm, "dataChangeEvent": {"entities": [
        {"name": name, "id": purchase_id, "operation": operation, "lastUpdated": updated}]}}]}


def _cloud(realm: str, purchase_id: str, verb: str = "created", event_id: str = "ev-1",
           time: str = "2026-02-03T10:00:00Z") -> dict[str, Any]:
    return {"specversion": "1.0", "id": event_id, "source": "intuit.quickbooks",
            "type": f"qbo.purchase.{verb}.v1", "datacontenttype": "application/json",
            "time": time, "intuitaccountid": realm, "intuitentityid": purchase_id, "data": {}}


def _events(rig: SlackRig) -> list[WebhookEvent]:
    with rig.ctx.sessions() as session:
        return list(session.scalars(select(WebhookEvent).order_by(WebhookEvent.id)))


def _process(rig: SlackRig) -> Any:
    return process_pending(rig.ctx.sessions, rig.ctx.importer_for, clock=rig.ctx.clock)


def _one_expense(rig: SlackRig) -> dict[str, Any]:
    rig.firm.client("Acme Holdings", ["Lease"])
    return rig.firm.expense(("48.75", "Acme Holdings", "Courier"), doc_number="2001")


# -- signatures --------------------------------------------------------------------------------

def test_a_forged_signature_gets_401_and_stores_nothing(rig: SlackRig) -> None:
    response = _post(rig, _legacy(rig.firm.qbo.realm_id, "1"), signature="Zm9yZ2Vk")

    assert response.status_code == 401
    assert _events(rig) == []


def test_a_missing_signature_gets_401_and_stores_nothing(rig: SlackRig) -> None:
    response = _post(rig, _legacy(rig.firm.qbo.realm_id, "1"), signature="")

    assert response.status_code == 401
    assert _events(rig) == []


def test_a_server_without_the_verifier_answers_503(rig: SlackRig) -> None:
    rig.ctx.config = rig.ctx.config.model_copy(update={"qbo_webhook_verifier": None})

    response = _post(rig, _legacy(rig.firm.qbo.realm_id, "1"))

    assert response.status_code == 503
    assert "QBO_WEBHOOK_VERIFIER" in response.text
    assert _events(rig) == []


# -- deliveries --------------------------------------------------------------------------------

def test_a_legacy_delivery_imports_the_purchase(rig: SlackRig) -> None:
    purchase = _one_expense(rig)

    response = _post(rig, _legacy(rig.firm.qbo.realm_id, purchase["Id"]))
    assert response.status_code == 200
    assert rig.firm.entries() == []  # stored, not yet imported

    done = _process(rig)

    [entry] = rig.firm.entries()
    assert price(entry) == price({"price": "48.75"})
    assert done.runs[rig.firm.id].imported == 1
    [event] = _events(rig)
    assert event.processed_at is not None and event.last_error is None
    assert event.firm_id == rig.firm.id


def test_a_cloudevents_delivery_imports_the_purchase(rig: SlackRig) -> None:
    purchase = _one_expense(rig)

    response = _post(rig, [_cloud(rig.firm.qbo.realm_id, purchase["Id"])],
                     content_type="application/cloudevents+json")
    assert response.status_code == 200
    _process(rig)

    [entry] = rig.firm.entries()
    assert f"/{purchase['Id']}/" in entry["note"]


def test_the_same_delivery_twice_makes_one_entry(rig: SlackRig) -> None:
    purchase = _one_expense(rig)
    delivery = [_cloud(rig.firm.qbo.realm_id, purchase["Id"], event_id="ev-twice")]

    assert _post(rig, delivery).status_code == 200
    second = _post(rig, delivery)
    assert second.status_code == 200 and second.json()["duplicates"] == 1
    _process(rig)
    assert _post(rig, delivery).status_code == 200  # a redelivery after the import
    _process(rig)

    assert len(rig.firm.entries()) == 1
    assert len(_events(rig)) == 1


def test_two_events_for_one_purchase_out_of_order_make_one_entry(rig: SlackRig) -> None:
    purchase = _one_expense(rig)
    realm = rig.firm.qbo.realm_id

    _post(rig, _legacy(realm, purchase["Id"], "Update", "2026-02-03T10:05:00.000Z"))
    _post(rig, _legacy(realm, purchase["Id"], "Create", "2026-02-03T10:00:00.000Z"))
    done = _process(rig)

    assert len(rig.firm.entries()) == 1
    assert len(_events(rig)) == 2
    assert done.events == 2 and len(done.runs) == 1  # one run for the firm


def test_an_unknown_company_is_acknowledged_and_nothing_stored(rig: SlackRig) -> None:
    response = _post(rig, _legacy("999999999", "1"))

    assert response.status_code == 200
    assert response.json()["ignored"] == 1
    assert _events(rig) == []


def test_other_entities_are_acknowledged_and_not_stored(rig: SlackRig) -> None:
    response = _post(rig, _legacy(rig.firm.qbo.realm_id, "7", name="Invoice"))

    assert response.status_code == 200
    assert _events(rig) == []


def test_a_malformed_body_gets_400_and_stores_nothing(rig: SlackRig) -> None:
    assert _post(rig, None, raw=b"{not json").status_code == 400
    assert _post(rig, {"eventNotifications": [{"realmId": "1"}]}).status_code == 400
    assert _post(rig, [{"specversion": "1.0", "type": "qbo.purchase.created.v1"}]).status_code \
        == 400
    # Issue 10 #6: signed, valid JSON, nested 100,000 deep once gave a 500.
    assert _post(rig, None, raw=b"[" * 100_000 + b"]" * 100_000).status_code == 400
    assert _post(rig, None, raw=b'{"a":' * 50_000 + b"1" + b"}" * 50_000).status_code == 400
    assert _events(rig) == []


def test_a_deletion_webhook_deletes_the_unbilled_clio_entry(rig: SlackRig) -> None:
    purchase = _one_expense(rig)
    realm = rig.firm.qbo.realm_id
    _post(rig, _legacy(realm, purchase["Id"]))
    _process(rig)
    assert len(rig.firm.entries()) == 1

    rig.firm.qbo.delete_purchase(purchase["Id"])
    _post(rig, [_cloud(realm, purchase["Id"], verb="deleted", event_id="ev-del")])
    done = _process(rig)

    assert rig.firm.entries() == []
    deleted = _events(rig)[-1]
    assert deleted.operation == "Delete" and deleted.processed_at is not None
    assert deleted.last_error is None
    [summary] = done.runs.values()
    assert summary.deleted == 1 and summary.removed_items[0].outcome == "deleted"
    [link] = rig.firm.links()
    assert link.state == "deleted" and link.removed_at is not None


def test_a_repeated_deletion_webhook_deletes_once(rig: SlackRig) -> None:
    purchase = _one_expense(rig)
    realm = rig.firm.qbo.realm_id
    _post(rig, _legacy(realm, purchase["Id"]))
    _process(rig)
    rig.firm.qbo.delete_purchase(purchase["Id"])
    calls_before = rig.firm.world.clio.calls.count("DELETE", r"/activities/")

    _post(rig, _legacy(realm, purchase["Id"], operation="Delete"))
    _process(rig)
    _post(rig, [_cloud(realm, purchase["Id"], verb="deleted", event_id="ev-del-2")])
    second = _process(rig)

    assert rig.firm.entries() == []
    assert rig.firm.world.clio.calls.count("DELETE", r"/activities/") - calls_before == 1
    assert all(s.removed_items == [] for s in second.runs.values())


def test_a_void_webhook_deletes_the_unbilled_clio_entry(rig: SlackRig) -> None:
    purchase = _one_expense(rig)
    realm = rig.firm.qbo.realm_id
    _post(rig, _legacy(realm, purchase["Id"]))
    _process(rig)

    rig.firm.qbo.void_purchase(purchase["Id"])
    _post(rig, _legacy(realm, purchase["Id"], operation="Void",
                       updated="2026-02-04T10:00:00.000Z"))
    done = _process(rig)

    assert rig.firm.entries() == []
    [summary] = done.runs.values()
    assert [(r.kind, r.outcome) for r in summary.removed_items] == [("voided", "deleted")]


def test_a_failed_run_keeps_the_events_for_the_next_pass(rig: SlackRig) -> None:
    purchase = _one_expense(rig)
    _post(rig, _legacy(rig.firm.qbo.realm_id, purchase["Id"]))

    def broken(firm_id: int) -> Any:
        raise RuntimeError("QuickBooks is down")

    done = process_pending(rig.ctx.sessions, broken, clock=rig.ctx.clock)

    assert done.deferred == 1
    [event] = _events(rig)
    assert event.processed_at is None and event.attempts == 1
    assert "QuickBooks is down" in (event.last_error or "")
    assert _process(rig).runs == {}  # not due again yet
    rig.firm.later(5)
    _process(rig)
    assert len(rig.firm.entries()) == 1


def test_two_workers_never_process_the_same_event(rig: SlackRig) -> None:
    purchase = _one_expense(rig)
    _post(rig, _legacy(rig.firm.qbo.realm_id, purchase["Id"]))

    first = _process(rig)
    second = _process(rig)

    assert first.events == 1 and second.events == 0 and second.runs == {}


def test_the_request_calls_neither_quickbooks_nor_clio(rig: SlackRig) -> None:
    purchase = _one_expense(rig)
    world = rig.firm.world
    qbo_before, clio_before = len(world.qbo.calls.all()), len(world.clio.calls.all())

    response = _post(rig, [_cloud(rig.firm.qbo.realm_id, purchase["Id"])])

    assert response.status_code == 200
    assert len(world.qbo.calls.all()) == qbo_before
    assert len(world.clio.calls.all()) == clio_before


def test_the_worker_imports_and_tells_the_channel(rig: SlackRig) -> None:
    purchase = _one_expense(rig)
    worker = WebhookWorker(rig.ctx, rig.app.client, every=0.05)
    worker.start()
    try:
        assert _post(rig, _legacy(rig.firm.qbo.realm_id, purchase["Id"])).status_code == 200
        wait_for(lambda: rig.firm.entries(), what="the entry in Clio")
        wait_for(lambda: any("48.75" in json.dumps(m) for m in rig.channel_messages()),
                 what="the run summary in the channel")
    finally:
        worker.stopped.set()
        worker.join(timeout=5)


def test_a_firm_already_running_keeps_its_events_for_the_next_pass(rig: SlackRig) -> None:
    purchase = _one_expense(rig)
    _post(rig, _legacy(rig.firm.qbo.realm_id, purchase["Id"]))

    with rig.ctx.claim_run(rig.firm.id):
        busy = process_pending(rig.ctx.sessions, rig.ctx.importer_for, guard=rig.ctx.claim_run,
                               clock=rig.ctx.clock)
    assert busy.busy == 1 and busy.runs == {} and rig.firm.entries() == []

    process_pending(rig.ctx.sessions, rig.ctx.importer_for, guard=rig.ctx.claim_run,
                    clock=rig.ctx.clock)
    assert len(rig.firm.entries()) == 1


def test_a_delivery_of_ten_thousand_entities_is_stored_in_a_bounded_number_of_statements(
        rig: SlackRig) -> None:
    """Issue 10 #5: one SELECT and commit per event took 14 s for 9,000 entities, past
    Intuit's 3 seconds (then Intuit redelivers). The time is measured by
    ``bench/webhook_bench.py``; here, that the work does not grow per entity."""
    from sqlalchemy import event

    realm = rig.firm.qbo.realm_id
    entities = [{"name": "Purchase", "id": str(n), "operation": "Update",
                 "lastUpdated": "2026-02-03T10:00:00.000Z"} for n in range(1, 10_001)]
    entities += [{"name": "Invoice", "id": "1", "operation": "Create",
                  "lastUpdated": "2026-02-03T10:00:00.000Z"}]
    body = {"eventNotifications": [{"realmId": realm, "dataChangeEvent": {
        "entities": entities}}]}
    statements: list[str] = []
    engine = rig.ctx.sessions.kw["bind"]

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        # The statement count is the measure; a shared CI machine may take long to store them.
        first = _post(rig, body, timeout=120)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    again = _post(rig, body, timeout=120)

    assert first.status_code == 200, first.text
    assert first.json() == {"ok": True, "stored": 10_000, "duplicates": 0, "ignored": 1}
    assert again.json() == {"ok": True, "stored": 0, "duplicates": 10_000, "ignored": 1}
    assert len(_events(rig)) == 10_000
    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 1  # one executemany
    assert len(statements) <= 5 + 10_000 // 500  # firms, known keys in chunks, the insert


def test_a_body_beyond_the_bound_is_refused_with_413(rig: SlackRig) -> None:
    from hardcost.bot.webhooks import MAX_BODY

    body = b'{"eventNotifications": []' + b" " * MAX_BODY + b"}"

    assert _post(rig, None, raw=body).status_code == 413
    assert _events(rig) == []

"""Property-based fuzzing over real HTTP (issue 10): slash commands, Slack interactions,
QuickBooks webhooks and QuickBooks purchases, each with hostile and absurd values, against the
running app and the sandboxes.

Properties: every request is answered 2xx or 4xx, never 5xx; no reply shows a stack trace, a
token or a secret; ``/healthz`` stays healthy; every malformed purchase is recorded as a
failure or a skip (or imported) and the run's record tells the truth; another firm's run is
unaffected.

Sized for CI (``HYPOTHESIS_PROFILE=ci``, the default here: under a minute each);
``HYPOTHESIS_PROFILE=long`` runs 10,000 examples each by hand.
"""

from __future__ import annotations

import json
import logging
import os
import time
from decimal import Decimal
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.reliability import LEAKS, secrets_of
from hardcost.sandbox.slack_rig import SlackRig
from hardcost.sync.store import Run
from tests.firmkit import Firm, make_firm

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                 HealthCheck.too_slow])
settings.register_profile("long", max_examples=10_000, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                 HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SUBCOMMANDS = ["help", "status", "run", "pending", "failures", "settings", "set", "pause",
               "resume", "check", "connect", "history", "export", "rules", "", "SET", "Run"]
SET_KEYS = ["channel", "start-date", "account", "category", "user", "schedule",
            "split-lines", "item-lines", "deletions", "approvers", "bills", "colour"]
ABSURD = st.sampled_from([
    "10000000000", "99999999999999999999999", "3000000000", "-5", "0", "²", "٣٠", "1e9",
    "NaN", "Infinity", "0x10", "５", "2026-02-30", "0001-01-01", "9999-12-31", "２０２６-01-31",
    "<!here>", "<!channel>", "<@U999>", "<#C999|x>", "<https://evil.example|click>",
    "&amp;&lt;", "\u202e", "\x00", "' OR 1=1 --", "x" * 5000, "🤖" * 100, "+", "-", "@",
    "anyone", "owner", "on", "off", "delete", "alert", "#costs", "Reimbursable Expenses",
])
TEXT = st.one_of(ABSURD, st.text(max_size=200))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=5),
    max_leaves=30)


def _assert_no_leak(rig: SlackRig, texts: list[str]) -> None:
    secrets = secrets_of(rig)
    for text in texts:
        for leak in LEAKS:
            assert leak not in text, text[:500]
        for secret in secrets:
            assert secret not in text


def _settle(rig: SlackRig, seconds: float = 1.0) -> None:
    """Let lazy listeners finish before the next checks read the sandbox Slack."""
    time.sleep(seconds)


def _healthy(rig: SlackRig) -> None:
    response = requests.get(f"{rig.web.url}/healthz", timeout=10)
    assert response.status_code == 200, response.text


# -- slash commands ----------------------------------------------------------------------------

@given(sub=st.sampled_from(SUBCOMMANDS),
       key=st.sampled_from(SET_KEYS),
       value=TEXT,
       shape=st.sampled_from(["sub value", "set key value", "raw"]))
def test_no_slash_command_text_gets_a_5xx_or_a_trace(rig: SlackRig, sub: str, key: str,
                                                    value: str, shape: str) -> None:
    text = {"sub value": f"{sub} {value}", "set key value": f"set {key} {value}",
            "raw": value}[shape]

    response = rig.command(text)

    assert response.status_code < 500, (text, response.status_code, response.text[:300])
    _assert_no_leak(rig, [response.text])


def test_after_the_command_fuzz_every_reply_is_clean_and_the_app_healthy(
        rig: SlackRig) -> None:
    """The same fuzz, then every reply the sandbox Slack received is read (lazy listeners
    answer after the ack)."""
    @given(value=TEXT, key=st.sampled_from(SET_KEYS))
    def fuzz(value: str, key: str) -> None:
        assert rig.command(f"set {key} {value}").status_code < 500

    fuzz()
    _settle(rig)
    texts = [m.get("text", "") + json.dumps(m.get("blocks") or []) for m in rig.ws.messages]
    assert texts  # the fuzz got answers to read
    _assert_no_leak(rig, texts)
    _healthy(rig)


# -- interactions ------------------------------------------------------------------------------

ACTIONS = ["hc_choose_matter", "hc_select_matter", "hc_search_matter", "hc_choose_contact",
           "hc_select_contact", "hc_not_client_cost", "hc_retry_failure", "hc_open_settings",
           "hc_run_now", "hc_show_pending", "hc_reconnect", "hc_open_qbo", "hc_history_older",
           "hc_undo_choice", "hc_group_matter", "hc_make_rule", "hc_remove_rule", "nonsense"]


@given(kind=st.sampled_from(["block_actions", "block_suggestion", "view_submission",
                             "view_closed", "shortcut", "", "nonsense"]),
       action=st.sampled_from(ACTIONS), value=st.one_of(TEXT, JSON.map(json.dumps)),
       team=st.sampled_from(["own", "foreign", "missing", "wrong-type"]),
       extra=st.dictionaries(st.sampled_from(["user", "team", "actions", "view", "container",
                                              "message", "state", "trigger_id"]), JSON,
                             max_size=3))
def test_no_interaction_payload_gets_a_5xx(rig: SlackRig, kind: str, action: str,
                                           value: str, team: str,
                                           extra: dict[str, Any]) -> None:
    team_id: Any = {"own": rig.ws.team_id, "foreign": "T0FOREIGN", "missing": None,
                    "wrong-type": ["T"]}[team]
    payload: dict[str, Any] = {
        "type": kind, "team": {"id": team_id}, "user": {"id": rig.staff, "team_id": team_id},
        "actions": [{"action_id": action, "block_id": "hc_prompt:1", "value": value,
                     "selected_option": {"value": value}}],
        "action_id": action, "block_id": "hc_prompt:1", "value": value,
        "view": {"id": "V1", "callback_id": "hc_settings", "state": {"values": {}}},
        "container": {"type": "message", "message_ts": "1.1", "channel_id": rig.channel},
        **extra}
    if team_id is None:
        payload.pop("team")

    response = rig.interaction(payload)

    assert response.status_code < 500, (payload, response.status_code)
    _assert_no_leak(rig, [response.text])


# -- QuickBooks webhooks -----------------------------------------------------------------------

def _legacy_entity() -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries({}, optional={
        "name": st.one_of(st.sampled_from(["Purchase", "Bill", "Customer"]), JSON),
        "id": st.one_of(TEXT, JSON), "operation": st.one_of(
            st.sampled_from(["Create", "Update", "Delete", "Void", "Merge"]), JSON),
        "lastUpdated": st.one_of(st.sampled_from(["2026-02-03T10:00:00Z", "soon"]), JSON)})


@given(body=st.one_of(
    JSON,
    st.builds(lambda realm, entities: {"eventNotifications": [{
        "realmId": realm, "dataChangeEvent": {"entities": entities}}]},
        st.one_of(st.just("REALM"), TEXT, JSON), st.lists(_legacy_entity(), max_size=20)),
    st.lists(st.fixed_dictionaries({"specversion": st.just("1.0")}, optional={
        "id": st.one_of(TEXT, JSON), "type": st.one_of(
            st.sampled_from(["qbo.purchase.created.v1", "qbo.purchase.deleted.v1"]), JSON),
        "intuitaccountid": st.one_of(st.just("REALM"), JSON),
        "intuitentityid": st.one_of(TEXT, JSON), "time": st.one_of(TEXT, JSON)}),
        max_size=10)))
def test_no_signed_webhook_body_gets_a_5xx(rig: SlackRig, body: Any) -> None:
    raw = json.dumps(body).replace('"REALM"', json.dumps(rig.firm.qbo.realm_id)).encode()
    response = requests.post(f"{rig.web.url}/webhooks/quickbooks", data=raw, timeout=10,
                             headers={"Content-Type": "application/json",
                                      "intuit-signature": rig.firm.world.qbo.sign_webhook(raw)})

    assert response.status_code in (200, 400, 413, 415), (body, response.text[:300])
    _assert_no_leak(rig, [response.text])


# -- QuickBooks purchases ----------------------------------------------------------------------

def _hostile_purchase(firm: Firm) -> st.SearchStrategy[dict[str, Any]]:
    customer = {"value": "C1", "name": "Jane Smith"}
    line = st.fixed_dictionaries({}, optional={
        "Id": st.one_of(st.integers(), TEXT, JSON),
        "Amount": st.one_of(st.decimals(allow_nan=False, allow_infinity=False, places=2),
                            st.decimals(allow_nan=True, allow_infinity=True),
                            st.integers(), TEXT, JSON),
        "DetailType": st.one_of(st.sampled_from(["AccountBasedExpenseLineDetail",
                                                 "ItemBasedExpenseLineDetail"]), JSON),
        "AccountBasedExpenseLineDetail": st.one_of(st.just({
            "AccountRef": {"value": firm.import_account}, "CustomerRef": customer}), JSON),
        "Description": st.one_of(TEXT, JSON)})
    return st.fixed_dictionaries({}, optional={
        "TxnDate": st.one_of(st.sampled_from(["2026-02-03", "2026-02-30", "soon", ""]), JSON),
        "PaymentType": st.one_of(st.sampled_from(["Check", "Cash", "CreditCard", "Bitcoin"]),
                                 JSON),
        "Credit": JSON, "DocNumber": st.one_of(TEXT, JSON), "PrivateNote": st.one_of(TEXT, JSON),
        "TotalAmt": JSON, "CurrencyRef": st.one_of(st.just({"value": "EUR"}), JSON),
        "ExchangeRate": st.one_of(st.decimals(allow_nan=True), JSON),
        "EntityRef": JSON, "SyncToken": JSON,
        "Line": st.one_of(st.lists(line, max_size=4), JSON)})


def test_no_purchase_crashes_a_run_and_other_firms_are_unaffected(firm: Firm) -> None:
    other = make_firm(firm.world, firm.sessions)
    other.client("Jane Smith", ["Smith estate"])
    firm.client("Jane Smith", ["Smith estate"])
    seen: list[int] = []

    @given(purchases=st.lists(_hostile_purchase(firm), min_size=1, max_size=5))
    def fuzz(purchases: list[dict[str, Any]]) -> None:
        ids = [firm.qbo.put_purchase_raw(json.loads(json.dumps(
            p, default=lambda d: str(d) if isinstance(d, Decimal) else repr(d))))["Id"]
            for p in purchases]
        firm.later()
        summary = firm.world.importer(firm.sessions, firm.id).run()  # must not raise
        assert summary.run_id is not None
        with firm.sessions() as session:
            run = session.get(Run, summary.run_id)
            assert run is not None and run.finished_at is not None
            assert run.status == ("failed" if summary.error else "ok")
        dated = sum(1 for p in purchases if p.get("TxnDate") == "2026-02-03")
        if summary.error is None:  # every purchase QuickBooks' date filter keeps was read
            assert summary.purchases_read >= dated
        seen.append(len(ids))

    fuzz()
    other.expense(("12.34", "Jane Smith"))
    other.later()
    assert other.run().imported == 1  # the other firm's books never noticed
    assert seen


@pytest.mark.parametrize("action", ["hc_undo_choice", "hc_group_matter", "hc_make_rule",
                                    "hc_remove_rule", "hc_history_older", "hc_choose_matter",
                                    "hc_not_client_cost", "hc_retry_failure",
                                    "hc_choose_contact"])
@pytest.mark.parametrize("value", ["x", "-1", "１２", "²", "99999999999999999999999999", "1:2:3",
                                   "9999999999999999999:1", "1:99999999999999999999", "", "0"])
def test_buttons_answer_absurd_values_without_an_exception(
        rig: SlackRig, action: str, value: str, caplog: pytest.LogCaptureFixture) -> None:
    """The lazy work after the ack (not only the ack) copes with any button value."""
    payload = {
        "type": "block_actions", "team": {"id": rig.ws.team_id},
        "user": {"id": rig.staff, "team_id": rig.ws.team_id},
        "actions": [{"action_id": action, "block_id": "hc_prompt:1", "value": value,
                     "selected_option": {"value": value}}],
        "container": {"type": "message", "message_ts": "1.1", "channel_id": rig.channel},
        "response_url": rig.slack.response_url(rig.ws.team_id, user_id=rig.staff,
                                               channel_id=rig.channel),
        "trigger_id": rig.ws.trigger_id()}
    caplog.set_level(logging.ERROR)

    response = rig.interaction(payload)
    _settle(rig, 0.5)

    assert response.status_code < 500
    # Bolt logs a lazy listener's exception as "Failed to run an internal function (…)"
    crashes = [r for r in caplog.records
               if r.exc_info or "Failed to run an internal function" in r.getMessage()]
    assert not crashes, [r.getMessage() for r in crashes]


# -- QuickBooks Bills ---------------------------------------------------------------------------

def _hostile_bill(firm: Firm) -> st.SearchStrategy[dict[str, Any]]:
    purchase_like = _hostile_purchase(firm)
    link = st.one_of(st.fixed_dictionaries({"TxnId": st.one_of(st.just("1"), JSON),
                                            "TxnType": st.sampled_from(
                                                ["BillPaymentCheck", "BillPaymentCreditCard",
                                                 "BillPayment", "x"])}),
                     JSON)
    extra = st.fixed_dictionaries({}, optional={
        "Balance": st.one_of(st.just(0), st.decimals(allow_nan=True), JSON),
        "LinkedTxn": st.one_of(st.lists(link, max_size=3), JSON),
        "VendorRef": st.one_of(st.just({"value": "V1", "name": "Expert"}), JSON),
        "MetaData": JSON})
    return st.tuples(purchase_like, extra).map(lambda pair: {**pair[0], **pair[1]})


def test_no_bill_crashes_a_run(firm: Firm) -> None:
    firm.client("Jane Smith", ["Smith estate"])
    firm.update_settings(bills="on-payment")
    paid = firm.qbo.add_bill(lines=[], txn_date="2026-02-03")
    firm.qbo.pay_bill(paid["Id"], 0, txn_date="2026-02-21")  # Bills may link payment "1"

    @settings(max_examples=30, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(bills=st.lists(_hostile_bill(firm), min_size=1, max_size=4))
    def fuzz(bills: list[dict[str, Any]]) -> None:
        for bill in bills:
            firm.qbo.put_bill_raw(json.loads(json.dumps(
                {k: v for k, v in bill.items() if k != "Id"},
                default=lambda d: str(d) if isinstance(d, Decimal) else repr(d))))
        firm.later()
        summary = firm.world.importer(firm.sessions, firm.id).run()  # must not raise
        with firm.sessions() as session:
            run = session.get(Run, summary.run_id)
            assert run is not None and run.finished_at is not None

    fuzz()


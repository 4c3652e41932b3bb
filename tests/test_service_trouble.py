"""Throttling, outages, expired and rotated tokens, malformed data: clear messages, nothing lost."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from urllib.parse import unquote_plus

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sandbox.clio import rate_limit_fault
from hardcost.sandbox.clio import server_error_fault as clio_server_error
from hardcost.sandbox.qbo import (
    account_line,
    server_error_fault,
    throttle_fault_json,
    throttle_fault_xml,
    timeout_fault,
)
from hardcost.sandbox.world import SandboxWorld
from hardcost.sync.http import ReconnectRequired, RetryPolicy
from hardcost.sync.qbo import QboClient
from hardcost.sync.store import Connection, Run
from hardcost.sync.tokens import StoredTokens, qbo_refresher
from tests.firmkit import Firm, make_firm


@pytest.fixture
def firm(firm: Firm) -> Firm:
    """The conftest firm with one client, Jane Smith, who has one matter."""
    firm.client("Jane Smith", ["Smith estate"])
    return firm


def _purchase_queries(firm: Firm) -> int:
    """Queries of purchases the sandbox QuickBooks answered or refused (a first import also
    reads the Attachables once: receipts, docs/purchases.md)."""
    return sum(1 for c in firm.world.qbo.calls.all()
               if c.path.endswith("/query")
               and "from purchase" in unquote_plus(f"{c.query} {c.statement or ''}").lower())


# -- QuickBooks throttling and outages ---------------------------------------------------------

@pytest.mark.parametrize("fault", [throttle_fault_xml, throttle_fault_json],
                         ids=["xml-body", "json-body"])
def test_qbo_throttle_waits_and_retries(firm: Firm, fault: object) -> None:
    firm.expense(("10.00", "Jane Smith"))
    firm.world.qbo.faults.add(fault(times=2))  # type: ignore[operator]

    summary = firm.run()

    assert summary.imported == 1 and summary.error is None
    assert _purchase_queries(firm) == 3


def test_qbo_throttle_that_outlasts_the_retries_is_a_clear_transient_error(firm: Firm) -> None:
    firm.expense(("10.00", "Jane Smith"))
    firm.world.qbo.faults.add(throttle_fault_xml(times=10))

    summary = firm.run()

    assert summary.error is not None and "limiting requests" in summary.error
    assert "QuickBooks request" in summary.error  # intuit_tid, for a support ticket
    firm.world.qbo.faults.clear()
    assert firm.run().imported == 1  # the watermark had not moved: nothing lost


def test_qbo_server_error_is_retried(firm: Firm) -> None:
    firm.expense(("10.00", "Jane Smith"))
    firm.world.qbo.faults.add(server_error_fault(503, times=2))

    assert firm.run().imported == 1


def test_qbo_that_does_not_answer_fails_the_run_with_a_reason(firm: Firm) -> None:
    firm.expense(("10.00", "Jane Smith"))
    firm.world.qbo.faults.add(timeout_fault(1.0, times=10))
    firm.engine.qbo.api.timeout = (1.0, 0.3)

    summary = firm.run()

    assert summary.error is not None and "did not answer" in summary.error
    with firm.sessions() as session:
        run = session.get(Run, summary.run_id)
        assert run is not None and run.status == "failed" and run.error == summary.error


def test_qbo_is_paced_per_realm() -> None:
    from hardcost.sync.http import RatePacer

    clock = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock[0] += seconds

    pacer = RatePacer(per_minute=3, concurrent=2, clock=lambda: clock[0], sleep=sleep)
    for _ in range(4):
        with pacer.slot():
            pass

    assert waits and sum(waits) == pytest.approx(60.0)


# -- Clio throttling ---------------------------------------------------------------------------

def test_clio_429_honours_retry_after(firm: Firm) -> None:
    firm.expense(("10.00", "Jane Smith"))
    firm.world.clio.faults.add(rate_limit_fault(retry_after=0, times=2, path=r"/contacts"))

    summary = firm.run()

    assert summary.imported == 1 and summary.error is None


@pytest.mark.parametrize("pacing", ["in-process", "shared"])
def test_clio_rate_limit_headers_pace_requests_instead_of_hitting_429(
        world: SandboxWorld, sessions: sessionmaker[Session], pacing: str) -> None:
    from hardcost.sync.http import HeaderPacer
    from hardcost.sync.pacing import CLIO_POLICY, LocalBuckets, SharedPacer

    world.clio.rate_limit_per_minute = 4
    firm = make_firm(world, sessions)
    for name in ("A Client", "B Client", "C Client"):
        firm.client(name, [f"{name} matter"])
        firm.expense(("10.00", name))
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        world.clock.advance(61)

    # Both pacers on the sandbox's clock, so a wait for the window moves the sandbox on. The
    # shared one runs its bucket logic in memory here (tests/test_shared_pacing.py: PostgreSQL).
    firm.engine.clio.api.pacer = HeaderPacer(sleep=sleep, clock=world.clock.timestamp) \
        if pacing == "in-process" else SharedPacer(
            LocalBuckets(clock=world.clock.timestamp), "clio:1", CLIO_POLICY,
            steer_by_headers=True, clock=world.clock.timestamp,
            wall_clock=world.clock.timestamp, sleep=sleep)

    summary = firm.run()

    assert summary.imported == 3
    assert waits, "the pacer never waited for the window to reset"
    assert world.clio.calls.count(None, r"/api/v4/") == sum(
        1 for c in world.clio.calls.all() if c.status != 429)


def test_clio_server_errors_on_reads_are_retried(firm: Firm) -> None:
    firm.expense(("10.00", "Jane Smith"))
    firm.world.clio.faults.add(clio_server_error(502, times=2, path=r"/matters"))

    assert firm.run().imported == 1


# -- tokens ------------------------------------------------------------------------------------

def _connection(firm: Firm, provider: str) -> Connection:
    with firm.sessions() as session:
        row = session.scalars(select(Connection).where(
            Connection.firm_id == firm.id, Connection.provider == provider)).one()
        return row


def test_expired_qbo_access_token_is_refreshed_and_the_rotated_token_stored(firm: Firm) -> None:
    firm.world.qbo.refresh_grace_seconds = 0  # a superseded refresh token dies at once
    firm.expense(("10.00", "Jane Smith"))
    before = _connection(firm, "quickbooks")
    firm.world.qbo.expire_access_tokens()

    assert firm.run().imported == 1
    after = _connection(firm, "quickbooks")
    assert after.refresh_token != before.refresh_token
    assert after.access_token != before.access_token

    # A fresh engine (another process, say) starts from the stored tokens and still works.
    firm.world.qbo.expire_access_tokens()
    firm.expense(("20.00", "Jane Smith"))
    firm.later()
    fresh = firm.world.importer(firm.sessions, firm.id)
    assert fresh.run().imported == 1


def test_qbo_access_token_is_refreshed_before_it_expires(firm: Firm) -> None:
    firm.update_settings()  # no-op: settings unchanged
    with firm.sessions() as session:
        row = session.scalars(select(Connection).where(
            Connection.firm_id == firm.id, Connection.provider == "quickbooks")).one()
        row.access_expires_at = row.access_expires_at - timedelta(minutes=59)  # type: ignore
        session.commit()
    firm.expense(("10.00", "Jane Smith"))

    firm.run()

    assert firm.world.qbo.calls.count("POST", r"/tokens/bearer") == 1
    assert _purchase_queries(firm) == 1  # no 401 round trip first


def test_revoked_qbo_connection_says_reconnect(firm: Firm) -> None:
    firm.world.qbo.refresh_grace_seconds = 0
    row = _connection(firm, "quickbooks")
    firm.world.qbo.expire_access_tokens()
    # Someone else used our refresh token (e.g. a restored backup): ours is now superseded.
    tokens = StoredTokens(firm.sessions, firm.id, "quickbooks", qbo_refresher(
        f"{firm.world.qbo_server.url}/oauth2/v1/tokens/bearer", "sandbox-qbo-client",
        "sandbox-qbo-secret"))
    tokens.refresh(row.access_token)
    with firm.sessions() as session:  # put the superseded token back
        stored = session.get(Connection, row.id)
        assert stored is not None
        stored.refresh_token = row.refresh_token
        stored.access_token = "expired"
        session.commit()

    summary = firm.run()

    assert summary.error is not None and "reconnect QuickBooks" in summary.error
    assert "invalid_grant" in summary.error
    assert row.refresh_token not in summary.error


def test_concurrent_refreshes_of_one_realm_are_serialised(firm: Firm) -> None:
    import threading

    firm.world.qbo.refresh_grace_seconds = 0
    firm.world.qbo.expire_access_tokens()
    settings = firm.world.settings()
    errors: list[Exception] = []

    def read() -> None:
        tokens = StoredTokens(firm.sessions, firm.id, "quickbooks", qbo_refresher(
            settings.qbo_token_url, "sandbox-qbo-client", "sandbox-qbo-secret"))
        client = QboClient(base_url=settings.qbo_api_base, realm_id=firm.qbo.realm_id,
                           tokens=tokens, retry=RetryPolicy(attempts=2, max_wait=0.01))
        try:
            client.preferences()
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert firm.world.qbo.calls.count("POST", r"/tokens/bearer") == 1


def test_expired_clio_token_is_refreshed_once(firm: Firm) -> None:
    firm.expense(("10.00", "Jane Smith"))
    firm.world.clio.expire_access_tokens()

    assert firm.run().imported == 1
    assert firm.world.clio.calls.count("POST", r"/oauth/token") == 1


def test_missing_connection_is_a_reconnect_message(firm: Firm) -> None:
    with firm.sessions() as session:
        session.delete(session.scalars(select(Connection).where(
            Connection.firm_id == firm.id, Connection.provider == "clio")).one())
        session.commit()
    firm.expense(("10.00", "Jane Smith"))

    summary = firm.run()

    assert summary.error is not None and "Clio is not connected" in summary.error
    assert firm.entries() == []


def test_reconnect_required_is_a_config_error() -> None:
    assert ReconnectRequired("QuickBooks", "x").kind == "config"


# -- malformed purchases -----------------------------------------------------------------------

# Purchases with unreadable dates never pass QuickBooks' own TxnDate filter, so they cannot
# reach the engine over HTTP; tests/test_rules.py shows plan_purchase's answer to them.
MALFORMED = {
    "no-lines": {"PaymentType": "Check", "TxnDate": "2026-02-01"},
    "empty-lines": {"PaymentType": "Check", "TxnDate": "2026-02-01", "Line": []},
    "lines-not-a-list": {"PaymentType": "Check", "TxnDate": "2026-02-01", "Line": "oops"},
    "line-not-an-object": {"PaymentType": "Check", "TxnDate": "2026-02-01", "Line": [7]},
    "bad-exchange-rate": {"PaymentType": "Check", "TxnDate": "2026-02-01", "ExchangeRate": "x",
                          "Line": []},
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_purchase_is_a_readable_failure_and_the_run_completes(
        firm: Firm, name: str) -> None:
    firm.expense(("10.00", "Jane Smith"))
    firm.qbo.put_purchase_raw(dict(MALFORMED[name]))

    summary = firm.run()

    assert summary.error is None and summary.imported == 1 and summary.failed == 1
    message = summary.failures[0].message
    assert message[0].isupper() and "Traceback" not in message


@pytest.mark.parametrize("amount", ["abc", None, True, [1]], ids=["text", "null", "bool", "list"])
def test_non_numeric_amount_fails_that_customer_only(firm: Firm, amount: object) -> None:
    firm.client("Acme Holdings", ["Acme v. Beta"])
    purchase = firm.expense(("10.00", "Jane Smith"), ("20.00", "Acme Holdings"))
    purchase["Line"][1]["Amount"] = amount
    firm.qbo.put_purchase_raw(purchase)

    summary = firm.run()

    assert summary.imported == 1 and summary.failed == 1
    assert [e["matter"]["id"] for e in firm.entries()] == [firm.matters["Smith estate"]]
    assert "not a number" in summary.failures[0].message or \
        "no amount" in summary.failures[0].message


def test_unknown_line_detail_type_is_a_failure(firm: Firm) -> None:
    purchase = firm.expense(("10.00", "Jane Smith"))
    line = purchase["Line"][0]
    line["DetailType"] = "FancyNewLineDetail"
    line["FancyNewLineDetail"] = line.pop("AccountBasedExpenseLineDetail")
    firm.qbo.put_purchase_raw(purchase)

    summary = firm.run()

    assert summary.failed == 1 and "FancyNewLineDetail" in summary.failures[0].message
    assert firm.entries() == []


def test_absent_customer_ref_is_skipped_with_reason(firm: Firm) -> None:
    firm.update_settings(no_customer="skip")  # (with the default, ask, it waits: below)
    purchase = firm.expense(("10.00", "Jane Smith"))
    del purchase["Line"][0]["AccountBasedExpenseLineDetail"]["CustomerRef"]
    firm.qbo.put_purchase_raw(purchase)

    summary = firm.run()

    assert summary.skipped == 1 and "no customer" in summary.skips[0]


def test_absent_customer_ref_waits_for_a_matter_by_default(firm: Firm) -> None:
    purchase = firm.expense(("10.00", "Jane Smith"))
    del purchase["Line"][0]["AccountBasedExpenseLineDetail"]["CustomerRef"]
    firm.qbo.put_purchase_raw(purchase)

    summary = firm.run()

    assert summary.skipped == 0 and summary.waiting == 1 and summary.untagged_waiting == 1


def test_failure_fixed_in_quickbooks_is_resolved_and_imported(firm: Firm) -> None:
    purchase = firm.expense(("10.00", "Jane Smith"))
    purchase["Line"][0]["Amount"] = "ten"
    firm.qbo.put_purchase_raw(purchase)
    first = firm.run()
    assert first.failed == 1 and len(firm.open_failures()) == 1

    firm.later()
    again = firm.run()  # not edited: not read again, still open, not re-counted
    assert again.failed == 0 and len(firm.open_failures()) == 1

    firm.qbo.update_purchase(purchase["Id"], lines=[
        account_line("10.00", firm.import_account, customer_id=firm.customers["Jane Smith"])])
    firm.later()
    fixed = firm.run()

    assert fixed.imported == 1 and firm.open_failures() == []
    assert firm.entries()[0]["price"] == Decimal("10.00")


def test_same_failure_seen_again_is_not_counted_as_new(firm: Firm) -> None:
    purchase = firm.expense(("10.00", "Jane Smith"))
    purchase["Line"][0]["Amount"] = "ten"
    firm.qbo.put_purchase_raw(purchase)

    first = firm.run()
    second = firm.run()  # inside the margin: read again

    assert first.failed == 1 and second.failed == 0 and second.still_failing == 1
    [failure] = firm.open_failures()
    assert failure.occurrences == 2


@pytest.mark.parametrize("status, body", [
    (429, '{"error": "too_many_requests"}'),
    (408, ""),
    (403, "<html>proxy says no</html>"),
    (400, '{"error": "temporarily_unavailable"}'),
    (200, '{"token_type": "bearer"}'),  # a success without the tokens
    (200, '{"access_token": "a", "expires_in": "soon"}'),
])
def test_a_token_refresh_that_fails_for_a_while_never_ends_the_connection(
        firm: Firm, status: int, body: str) -> None:
    """Issue 10 #10: any token answer but 200 or 5xx once paused the firm for good."""
    from hardcost.sandbox.faults import Fault

    firm.expense(("10.00", "Jane Smith"))
    firm.world.qbo.refresh_grace_seconds = 0
    firm.world.qbo.expire_access_tokens()
    firm.world.qbo.faults.add(Fault(path=r"/tokens/bearer$", method="POST", status=status,
                                    body=body, times=1))

    first = firm.run()
    second = firm.run()

    assert first.error is not None and "reconnect" not in first.error.lower()
    assert "will try again" in first.error
    assert _connection(firm, "quickbooks").broken_at is None
    assert second.error is None and second.imported == 1


def test_only_invalid_grant_ends_the_connection(firm: Firm) -> None:
    from hardcost.sandbox.faults import Fault

    firm.world.qbo.refresh_grace_seconds = 0
    firm.world.qbo.expire_access_tokens()
    firm.world.qbo.faults.add(Fault(path=r"/tokens/bearer$", method="POST", status=400,
                                    body='{"error": "invalid_grant"}', times=1))

    summary = firm.run()

    assert summary.error is not None and "reconnect QuickBooks" in summary.error
    row = _connection(firm, "quickbooks")
    assert row.broken_at is not None
    # The provider's code, so the notice reads "no longer accepts hardcost's connection
    # (invalid_grant)" instead of repeating that sentence inside itself.
    assert row.broken_reason == "invalid_grant"


def test_refused_app_credentials_are_the_operators_to_fix(firm: Firm) -> None:
    from hardcost.sandbox.faults import Fault

    firm.world.qbo.refresh_grace_seconds = 0
    firm.world.qbo.expire_access_tokens()
    firm.world.qbo.faults.add(Fault(path=r"/tokens/bearer$", method="POST", status=401,
                                    body='{"error": "invalid_client"}', times=1))

    summary = firm.run()

    assert summary.error is not None and "QBO_CLIENT_ID and QBO_CLIENT_SECRET" in summary.error
    assert _connection(firm, "quickbooks").broken_at is None


@pytest.mark.parametrize("body", ['{"QueryResponse": []}', '{"QueryResponse": {"Purchase": 7}}',
                                  "[]", "null", "<html>maintenance</html>", '"text"'])
def test_a_quickbooks_success_of_the_wrong_shape_stops_the_run_with_a_reason(
        firm: Firm, body: str) -> None:
    """Issue 10 #3: a 2xx with the wrong shape is a transient failure, said in words, never a
    crash; the next run reads again."""
    from hardcost.sandbox.faults import Fault

    firm.expense(("10.00", "Jane Smith"))
    firm.world.qbo.faults.add(Fault(path=r"/query$", method="POST", status=200, body=body))

    first = firm.run()
    second = firm.run()

    assert first.error is not None and "does not understand" in first.error
    with firm.sessions() as session:
        statuses = [r.status for r in session.scalars(select(Run).where(
            Run.firm_id == firm.id).order_by(Run.id))]
    assert statuses == ["failed", "ok"]
    assert second.imported == 1

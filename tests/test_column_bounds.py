"""Every ``String(N)`` column is bounded where its values enter, never at the database (issue 24
#8-10 and the class behind them).

Built from the models' metadata: every bounded column of every table is named by a case (a
path that writes it from outside: QuickBooks data, Clio data, Slack payloads and replies,
webhooks, settings) or by :data:`INTERNAL` (filled only from hardcost's own vocabulary or
values already bounded upstream, with the reason). A new column with neither fails
:func:`test_every_bounded_column_is_covered`.

Each case pushes values one longer than the columns it names, and NUL characters, through
the real path (signed requests into the app, the sandboxes over HTTP, an import run); then
every bounded column of every table is read back and must hold at most its length and no NUL.
On PostgreSQL (scripts/test.sh's second half) an unbounded value fails the write itself; on
SQLite, which keeps any length, the read-back finds it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from sqlalchemy import String, select

from hardcost.sandbox.qbo import account_line
from hardcost.sandbox.slack_rig import SlackRig, wait_for
from hardcost.sync.bounds import clip
from hardcost.sync.slack_tables import SLACK_METADATA
from hardcost.sync.store import (
    AccountCoding,
    Base,
    PromptGroup,
    ReceiptLink,
    WaitingExpense,
    WebhookEvent,
)
from hardcost.sync.webhooks import process_pending

NUL = "\x00"


def bounded_columns() -> dict[str, int]:
    """``table.column`` → N for every ``String(N)`` column of every table."""
    found = {}
    for metadata in (Base.metadata, SLACK_METADATA):
        for table in metadata.sorted_tables:
            for column in table.columns:
                if isinstance(column.type, String) and column.type.length:
                    found[f"{table.name}.{column.name}"] = column.type.length
    return found


def over(column: str, fill: str = "x") -> str:
    """A value one longer than ``column`` holds."""
    return fill * (bounded_columns()[column] + 1)


def assert_all_bounded(rig: SlackRig) -> None:
    """Read every bounded column of every table back: nothing longer than N, no NUL."""
    sizes = bounded_columns()
    with rig.firm.sessions() as session:
        for metadata in (Base.metadata, SLACK_METADATA):
            for table in metadata.sorted_tables:
                columns = [c for c in table.columns if f"{table.name}.{c.name}" in sizes]
                if not columns:
                    continue
                for row in session.execute(select(*columns)):
                    for column, value in zip(columns, row, strict=True):
                        name = f"{table.name}.{column.name}"
                        if value is None:
                            continue
                        assert len(value) <= sizes[name], (name, len(value), value[:80])
                        assert NUL not in value, (name, value[:80])


# -- the paths ---------------------------------------------------------------------------------

def _webhook(rig: SlackRig, payload: Any) -> requests.Response:
    raw = json.dumps(payload).encode()
    return requests.post(f"{rig.web.url}/webhooks/quickbooks", data=raw, timeout=10, headers={
        "Content-Type": "application/json",
        "intuit-signature": rig.firm.world.qbo.sign_webhook(raw)})


def quickbooks_data(rig: SlackRig) -> None:
    """Purchases whose customer name, ids, SyncToken, payee and memo run past their columns
    (and hold NULs), for a client with 95 matters of ten-digit ids (a grouped prompt), then
    an import through ``/hardcost run``; then an edit and a second run."""
    firm = rig.firm
    firm.clio.ids_from(1_500_000_000)
    long_name = "Jane " + NUL + over("waiting_expenses.customer_name", "y")
    customer = firm.qbo.add_customer("Jane Long")["Id"]
    shown = clip(long_name, bounded_columns()["waiting_expenses.customer_name"])
    contact = firm.clio.add_contact(shown)  # found by the name as it enters, clipped
    for n in range(95):
        firm.matters[f"Matter {n:03d}"] = firm.clio.add_matter(
            contact["id"], description=f"Matter {n:03d}")["id"]
    payee = {"value": "V" + over("matter_rules.payee_id", "7"),
             "name": over("matter_rules.payee_name", "p") + NUL, "type": "Vendor"}

    def purchase(amount: str, **extra: Any) -> dict[str, Any]:
        line = account_line(amount, firm.import_account, customer_id=customer,
                            description="Courier" + NUL)
        line["AccountBasedExpenseLineDetail"]["CustomerRef"]["name"] = long_name
        return {"TxnDate": "2026-02-03", "PaymentType": "Check", "Line": [line],
                "PrivateNote": "memo" + NUL, "EntityRef": payee, **extra}

    for n in range(3):  # a grouped prompt: the choice key of 95 ten-digit ids
        firm.qbo.put_purchase_raw(purchase(f"1{n}.00", DocNumber=f"D{n}" + NUL * 2,
                                           SyncToken=over("entry_links.sync_token", "3")))
    firm.qbo.put_purchase_raw(purchase("9.00", Id="P" + over("entry_links.purchase_id", "1")))
    bad_line = purchase("8.00")
    bad_line["Line"][0]["Id"] = over("failures.line_id", "2")
    firm.qbo.put_purchase_raw(bad_line)
    bad_customer = purchase("7.00")
    bad_customer["Line"][0]["AccountBasedExpenseLineDetail"]["CustomerRef"]["value"] = \
        over("entry_links.customer_id", "4")
    firm.qbo.put_purchase_raw(bad_customer)
    firm.later()

    assert rig.command("run").status_code == 200
    wait_for(lambda: any("hc_group_matter" in json.dumps(m.get("blocks") or [])
                         for m in rig.channel_messages()), what="the grouped prompt")
    with firm.sessions() as session:
        names = set(session.scalars(select(WaitingExpense.customer_name)))
        assert len(list(session.scalars(select(PromptGroup)))) == 1
    assert names == {shown}


def clio_data(rig: SlackRig) -> None:
    """Clio matters whose number, description, status and client name run past the cache's
    columns (with NULs), read by a run that refreshes the matter cache; an entry whose etag
    runs past ``clio_etag``, read back by the run that updates it."""
    firm = rig.firm
    contact = firm.clio.add_contact(over("matter_cache.client_name", "c") + NUL)
    firm.clio.add_matter(contact["id"], description=over("matter_cache.description", "d") + NUL,
                         display_number=over("matter_cache.display_number", "9") + NUL)
    firm.client("Acme Holdings", ["Lease"])
    purchase = firm.expense(("48.75", "Acme Holdings"))
    firm.later()
    assert firm.run().imported == 1
    [activity] = firm.clio.activities.values()
    activity["etag"] = over("entry_links.clio_etag", "e")
    firm.qbo.update_purchase(purchase["Id"], lines=[account_line(
        "60.00", firm.import_account, customer_id=firm.customers["Acme Holdings"])])
    firm.later()
    assert firm.run().error is None
    firm.update_settings(matters_cached_at=None)
    firm.engine.run()  # refreshes the matter cache (and finds nothing new)


def webhook_data(rig: SlackRig) -> None:
    """Deliveries whose ids, operation, entity and type run past their columns or hold NULs,
    beside a valid event: the valid one is kept."""
    realm = rig.firm.qbo.realm_id
    entities = [
        {"name": "Purchase", "id": over("webhook_events.entity_id", "5"), "operation": "Create"},
        {"name": "Purchase", "id": "7", "operation": over("webhook_events.operation", "C")},
        {"name": "Purchase", "id": "7" + NUL, "operation": "Create"},
        {"name": over("webhook_events.entity"), "id": "8", "operation": "Create"},
        {"name": "Purchase", "id": "9", "operation": "Update",
         "lastUpdated": over("webhook_events.dedupe_key", "2") + NUL}]
    response = _webhook(rig, {"eventNotifications": [
        {"realmId": realm, "dataChangeEvent": {"entities": entities}},
        {"realmId": over("webhook_events.realm_id", "1"),
         "dataChangeEvent": {"entities": entities[-1:]}}]})
    assert response.status_code == 200, response.text
    cloud = [{"specversion": "1.0", "id": over("webhook_events.dedupe_key", "i"),
              "type": f"qbo.purchase.{'frobnicated' * 3}.v1", "intuitaccountid": realm,
              "intuitentityid": "10", "time": "0001-01-01T00:00:00+05:00"},
             {"specversion": "1.0", "id": "ok-1", "type": "qbo.purchase.created.v1",
              "intuitaccountid": realm, "intuitentityid": "11", "time": "2026-02-03T10:00:00Z"}]
    assert _webhook(rig, cloud).status_code == 200
    with rig.firm.sessions() as session:
        kept = {(e.entity_id, e.operation) for e in session.scalars(select(WebhookEvent))}
    assert kept == {("9", "Update"), ("11", "Create")}


def slack_payloads(rig: SlackRig) -> None:
    """Slash commands and clicks whose user, team or channel id runs past the columns that
    keep Slack ids (who answered, who stopped, who made a rule, the actor of the trail), or
    whose values hold NUL: refused with a 4xx before any listener reads them. NUL in the typed
    text gets a usage reply (the person sees why), and nothing is stored."""
    long_user = "U" + over("matter_rules.created_by", "0")
    for fields in ({"user_id": long_user}, {"team_id": "T" + over("firms.slack_team_id", "0")},
                   {"channel_id": "C" + over("runs.slack_channel", "0")}):
        body = rig.command_fields("status")
        body.update(fields)
        response = rig.post(urlencode(body), "application/x-www-form-urlencoded")
        assert 400 <= response.status_code < 500, (fields, response.status_code)
    assert rig.command("set timezone UTC" + NUL, user=rig.admin).status_code == 200
    wait_for(lambda: any("NUL character" in str(m) for m in rig.replies_to(rig.admin)),
             what="a usage reply naming the NUL")
    click = {"type": "block_actions", "team": {"id": rig.ws.team_id},
             "user": {"id": long_user, "team_id": rig.ws.team_id},
             "actions": [{"action_id": "hc_undo_choice", "block_id": "b", "value": "1"}],
             "container": {"type": "message", "message_ts": "1.1", "channel_id": rig.channel}}
    for payload in (click, {**click, "user": {"id": rig.staff, "team_id": rig.ws.team_id},
                            "actions": [{"action_id": "hc_history_older", "block_id": "b",
                                         "value": "10:" + NUL}]}):
        response = rig.interaction(payload)
        assert 400 <= response.status_code < 500, response.status_code


def settings_values(rig: SlackRig) -> None:
    """``/hardcost set`` with values one longer than the settings' columns: refused with a
    reason, nothing stored."""
    for key, column in (("timezone", "firm_settings.timezone"),
                        ("deletions", "firm_settings.deletions"),
                        ("bills", "firm_settings.bills"),
                        ("prompts", "firm_settings.prompts"),
                        ("no-customer", "firm_settings.no_customer"),
                        ("not-billable", "firm_settings.not_billable"),
                        ("report", "firm_settings.report"),
                        ("channel", "firm_settings.slack_channel_id")):
        value = over(column, "A") if key != "channel" else f"<#C{over(column, 'A')}>"
        assert rig.command(f"set {key} {value}").status_code == 200
    assert rig.command("connect clio " + over("oauth_states.region", "e")).status_code == 200
    wait_for(lambda: len(rig.replies_to(rig.admin)) >= 8, what="every refusal")


def account_codings(rig: SlackRig) -> None:
    """A QuickBooks account, a Clio category and a UTBMS code with names one longer than the
    columns that keep them, mapped with ``set category|utbms … for <account>``: clipped."""
    firm = rig.firm
    account = firm.qbo.add_account(over("account_codings.account_name"))["Id"]
    category = firm.clio.add_expense_category(over("account_codings.category_name"))["id"]
    codes = firm.clio.add_utbms_set("LEDES")
    code = firm.clio.add_utbms_code(codes["id"], over("account_codings.utbms_code", "E"),
                                    "Long")["id"]
    for text in (f"set account +{account}", f"set category {category} for {account}",
                 f"set utbms {code} for {account}", f"set utbms {code}"):
        before = len(rig.replies_to(rig.admin))
        assert rig.command(text).status_code == 200
        wait_for(lambda n=before: len(rig.replies_to(rig.admin)) > n, what=text)
    with firm.sessions() as session:
        row = session.scalars(select(AccountCoding)).one()
        assert row.utbms_code_id == code and row.expense_category_id == category


def receipts_data(rig: SlackRig) -> None:
    """Attachables whose file name and content type run past their columns (and hold NULs),
    one whose id and one whose transaction id are longer than an id (refused), filed by an
    import through ``/hardcost run``: the document's name is clipped too."""
    firm = rig.firm
    firm.client("Jane Smith", ["Smith estate"])
    purchase = firm.expense(("12.00", "Jane Smith"))
    ref = [{"EntityRef": {"type": "Purchase", "value": purchase["Id"]}}]
    firm.qbo.put_attachable_raw({
        "AttachableRef": ref, "FileName": NUL + over("receipt_files.file_name", "f"),
        "ContentType": over("receipt_files.content_type", "t") + NUL}, data=b"receipt")
    firm.qbo.put_attachable_raw({"Id": over("receipt_files.attachable_id", "9"),
                                 "AttachableRef": ref, "FileName": "a.pdf"}, data=b"a")
    firm.qbo.put_attachable_raw({
        "AttachableRef": [{"EntityRef": {"type": "Purchase",
                                         "value": over("receipt_files.txn_key", "8")}}],
        "FileName": "b.pdf"}, data=b"b")
    firm.later()

    def filed() -> bool:
        with firm.sessions() as session:
            return session.scalars(select(ReceiptLink.state)).all() == ["created"]

    assert rig.command("run").status_code == 200
    wait_for(filed, what="the receipt filed")


CASES: dict[str, tuple[Callable[[SlackRig], None], frozenset[str]]] = {
    "quickbooks": (quickbooks_data, frozenset({
        "entry_links.realm_id", "entry_links.purchase_id", "entry_links.customer_id",
        "entry_links.line_id", "entry_links.marker", "entry_links.sync_token",
        "failures.realm_id", "failures.purchase_id", "failures.customer_id", "failures.line_id",
        "waiting_expenses.realm_id", "waiting_expenses.purchase_id",
        "waiting_expenses.customer_id", "waiting_expenses.line_id",
        "waiting_expenses.customer_name", "prompt_groups.customer_id",
        "prompt_groups.customer_name", "prompt_groups.choice_key",
        "audit_log.realm_id", "audit_log.purchase_id", "audit_log.customer_id",
        "audit_log.line_id", "audit_log.client", "contact_links.qbo_id",
        "matter_rules.payee_id", "matter_rules.payee_name", "matter_rules.account_id",
        "matter_rules.client_name", "purchase_removals.realm_id",
        "purchase_removals.purchase_id"})),
    "clio": (clio_data, frozenset({
        "matter_cache.display_number", "matter_cache.description", "matter_cache.client_name",
        "matter_cache.status", "matter_cache.number_key", "matter_cache.search_text",
        "entry_links.clio_etag", "matter_rules.matter_label", "audit_log.matter"})),
    "webhooks": (webhook_data, frozenset({
        "webhook_events.realm_id", "webhook_events.entity", "webhook_events.entity_id",
        "webhook_events.operation", "webhook_events.dedupe_key"})),
    "slack": (slack_payloads, frozenset({
        "firms.slack_team_id", "contact_links.chosen_by", "matter_rules.created_by",
        "matter_rules.removed_by", "waiting_expenses.resolved_by", "prompt_groups.resolved_by",
        "runs.stop_requested_by", "audit_log.actor", "oauth_states.slack_team_id",
        "oauth_states.slack_user_id",
        # Slack's replies (channel, ts): bot.outbox keeps only ids that fit
        "failures.slack_channel", "failures.slack_ts", "waiting_expenses.slack_channel",
        "waiting_expenses.slack_ts", "prompt_groups.slack_channel", "prompt_groups.slack_ts",
        "runs.slack_ts", "runs.slack_channel", "slack_outbox.result_channel",
        "slack_outbox.result_ts"})),
    "settings": (settings_values, frozenset({
        "firm_settings.timezone", "firm_settings.deletions", "firm_settings.bills",
        "firm_settings.prompts", "firm_settings.no_customer", "firm_settings.slack_channel_id",
        "firm_settings.not_billable", "firm_settings.report",
        "oauth_states.region", "firms.clio_region"})),
    "receipts": (receipts_data, frozenset({
        "receipt_files.file_name", "receipt_files.content_type", "receipt_files.attachable_id",
        "receipt_files.txn_key", "receipt_files.realm_id", "receipt_links.realm_id",
        "receipt_links.attachable_id", "receipt_links.txn_key", "receipt_links.name"})),
    "codings": (account_codings, frozenset({
        "account_codings.account_id", "account_codings.account_name",
        "account_codings.category_name", "account_codings.utbms_code",
        "firm_settings.utbms_code"})),
}

INTERNAL: dict[str, str] = {
    "firm_settings.report_month": "a month as bot.month_report writes it (YYYY-MM)",
    **{f"{table}.{column}": "hardcost's own vocabulary (an enum or a fixed word)"
       for table, column in [
           ("connections", "provider"), ("contact_links", "qbo_type"),
           ("contact_links", "source"), ("entry_links", "state"), ("failures", "kind"),
           ("failures", "code"), ("purchase_removals", "kind"), ("purchase_removals", "source"),
           ("runs", "trigger"), ("runs", "status"), ("run_leases", "claim_kind"),
           ("slack_outbox", "method"), ("slack_outbox", "ref_kind"),
           ("waiting_expenses", "reason"), ("waiting_expenses", "resolution"),
           ("prompt_groups", "resolution"), ("oauth_states", "provider"),
           ("oauth_states", "outcome"), ("watermarks", "stream"), ("audit_log", "action"),
           ("firm_settings", "clio_entry_type"), ("receipt_links", "state")]},
    "receipt_links.uuid": "Clio's version uuid, clipped in sync.receipts (a uuid: 36)",
    "receipt_files.qbo_updated_at": "QuickBooks' LastUpdatedTime, kept only when it fits "
                                    "(sync.receipts), else none",
    **{f"{table}.{column}": "a random token hardcost makes (uuid4 hex, token_urlsafe)"
       for table, column in [("run_leases", "claim_token"), ("webhook_events", "claim_token"),
                             ("oauth_states", "state"), ("slack_oauth_states", "state")]},
    "run_leases.claimed_by": "\"pid N on host\", clipped in sync.leases.holder",
    "run_leases.holder_start": "sync.leases.PROCESS_START (a uuid4 hex, the kernel's boot id "
                               "and pid namespace), clipped there",
    "rate_buckets.key": "\"qbo:<realm>\" or \"clio:<connection id>\": the realm is a stored, "
                        "bounded id",
    "watermarks.value": "QuickBooks' server time as sync.qbo reads it (an ISO instant)",
    "firms.qbo_realm_id": "the OAuth callback's realmId: refused in sync.oauth.finish "
                          "unless it fits (not pushed here: the callback needs a code)",
    "firms.name": "the Slack workspace's name at install, or the CLI's --name",
    **{f"{table}.{column}": "slack-sdk's installation and OAuth-state stores, from Slack's "
                            "own OAuth reply (oauth.v2.access)"
       for table in ("slack_bots", "slack_installations")
       for column in ("client_id", "app_id", "enterprise_id", "enterprise_name", "team_id",
                      "team_name", "bot_id", "bot_user_id", "bot_scopes")},
    **{f"slack_installations.{column}": "slack-sdk's installation store, from Slack's own "
                                        "OAuth reply (oauth.v2.access)"
       for column in ("enterprise_url", "user_id", "user_scopes", "incoming_webhook_channel",
                      "incoming_webhook_channel_id", "incoming_webhook_configuration_url",
                      "token_type")},
}


def test_every_bounded_column_is_covered() -> None:
    """A new ``String(N)`` column needs a case that pushes N+1 through its paths (or a reason
    it never holds outside text); names of columns that are gone fail too."""
    named = set(INTERNAL).union(*(columns for _, columns in CASES.values()))
    columns = set(bounded_columns())
    assert columns - named == set(), "bounded columns without a case"
    assert named - columns == set(), "cases name columns that do not exist"
    assert not set(INTERNAL) & set().union(*(c for _, c in CASES.values()))


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_path_bounds_what_it_writes(rig: SlackRig, case: str) -> None:
    push, _ = CASES[case]

    push(rig)

    assert_all_bounded(rig)


# -- the regressions of issue 24 #9 and #10 -----------------------------------------------------

def test_a_customer_name_past_300_characters_waits_and_the_firm_still_imports(
        rig: SlackRig) -> None:
    """#9: ``_wait`` stored the name unclipped into ``String(300)``: on PostgreSQL every run
    of the firm crashed, other clients' expenses included. The name enters clipped."""
    firm = rig.firm
    firm.client("Acme Holdings", ["Lease"])
    customer = firm.qbo.add_customer("Long Name")["Id"]
    line = account_line("20.00", firm.import_account, customer_id=customer)
    line["AccountBasedExpenseLineDetail"]["CustomerRef"]["name"] = "L" * 320
    firm.qbo.put_purchase_raw({"TxnDate": "2026-02-03", "PaymentType": "Check", "Line": [line]})
    firm.expense(("48.75", "Acme Holdings"))
    firm.later()

    summary = firm.run()

    assert summary.error is None and summary.imported == 1
    [waiting] = firm.waiting()
    assert waiting.customer_name == "L" * 299 + "…"


def test_a_webhook_with_an_overlong_id_or_operation_keeps_the_valid_event(
        rig: SlackRig) -> None:
    """#10: a 41-character id, a 21-character operation or an unknown CloudEvent verb made
    the whole signed delivery a 500 on PostgreSQL, losing the valid event beside it. The bad
    entity is skipped (logged), the valid one kept and imported, the answer a 200."""
    rig.firm.client("Acme Holdings", ["Lease"])
    purchase = rig.firm.expense(("48.75", "Acme Holdings"))
    realm = rig.firm.qbo.realm_id
    legacy = {"eventNotifications": [{"realmId": realm, "dataChangeEvent": {"entities": [
        {"name": "Purchase", "id": "1" * 41, "operation": "Create"},
        {"name": "Purchase", "id": "2", "operation": "C" * 21},
        {"name": "Purchase", "id": purchase["Id"], "operation": "Create"},
    ]}}]}
    verb = "reconsideredatgreatlength"  # 25 characters: no operation QuickBooks sends
    cloud = [{"specversion": "1.0", "id": "ev-odd", "type": f"qbo.purchase.{verb}.v1",
              "intuitaccountid": realm, "intuitentityid": "3"},
             {"specversion": "1.0", "id": "ev-ok", "type": "qbo.purchase.updated.v1",
              "intuitaccountid": realm, "intuitentityid": purchase["Id"]}]

    assert _webhook(rig, legacy).status_code == 200
    assert _webhook(rig, cloud).status_code == 200
    assert _webhook(rig, {"eventNotifications": [{"realmId": realm, "dataChangeEvent": {
        "entities": [{"name": "Purchase", "id": "1" * 41, "operation": "Create"}]}}]}
    ).status_code == 400  # nothing in it can be read

    with rig.firm.sessions() as session:
        kept = [(e.entity_id, e.operation) for e in session.scalars(select(WebhookEvent))]
    assert sorted(kept) == [(purchase["Id"], "Create"), (purchase["Id"], "Update")]
    process_pending(rig.ctx.sessions, rig.ctx.importer_for, clock=rig.ctx.clock)
    assert len(rig.firm.entries()) == 1

"""Housekeeping (sync/housekeeping.py, issue 13 #4): old sent Slack messages and processed
webhook events go after the retention period, quiet runs after two days; what prompts'
in-place updates need, unsent messages, each firm's latest run and anything recent stay."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from hardcost.sync.housekeeping import prune, table_sizes
from hardcost.sync.store import Run, SlackOutbox, WebhookEvent, utcnow
from tests.firmkit import Firm, make_firm

OLD = utcnow() - timedelta(days=45)
RECENT = utcnow() - timedelta(days=2)


def _outbox(firm: Firm, *, at: datetime, sent: bool = True, ref_kind: str | None = None,
            parent: int | None = None, gave_up: bool = False) -> int:
    with firm.sessions() as session:
        row = SlackOutbox(firm_id=firm.id, method="chat.postMessage", payload={"text": "x"},
                          ref_kind=ref_kind, ref_id=1 if ref_kind else None, parent_id=parent,
                          created_at=at, next_attempt_at=at,
                          sent_at=at if sent else None, gave_up_at=at if gave_up else None)
        session.add(row)
        session.commit()
        return row.id


def _run(firm: Firm, *, at: datetime, quiet: bool, status: str = "ok") -> int:
    with firm.sessions() as session:
        row = Run(firm_id=firm.id, trigger="schedule", dry_run=False, status=status,
                  started_at=at, finished_at=at, quiet=quiet)
        session.add(row)
        session.commit()
        return row.id


def _event(firm: Firm, n: int, *, processed: datetime | None) -> int:
    with firm.sessions() as session:
        row = WebhookEvent(firm_id=firm.id, realm_id=firm.qbo.realm_id, entity="Purchase",
                           entity_id=str(n), operation="Update", dedupe_key=f"k{n}",
                           received_at=OLD, next_attempt_at=OLD, processed_at=processed)
        session.add(row)
        session.commit()
        return row.id


def _ids(firm: Firm, table: type) -> set[int]:
    with firm.sessions() as session:
        return set(session.scalars(select(table.id)))  # type: ignore[attr-defined]


def test_old_rows_go_and_what_is_still_needed_stays(firm: Firm, db_engine: Engine) -> None:
    other = make_firm(firm.world, firm.sessions)
    gone_post = _outbox(firm, at=OLD, ref_kind="run")
    gone_given_up = _outbox(firm, at=OLD, sent=False, gave_up=True)
    kept_recent = _outbox(firm, at=RECENT, ref_kind="run")
    kept_unsent = _outbox(firm, at=OLD, sent=False)
    kept_prompt = _outbox(firm, at=OLD, ref_kind="prompt")  # its updates find it
    kept_group = _outbox(firm, at=OLD, ref_kind="group")
    kept_parent = _outbox(firm, at=OLD, ref_kind="run")  # its thread reply is still to go
    _outbox(firm, at=OLD, sent=False, parent=kept_parent)

    quiet_old = _run(firm, at=OLD, quiet=True)
    busy_old = _run(firm, at=OLD, quiet=False)
    failed_old = _run(firm, at=OLD, quiet=True, status="failed")
    quiet_days_ago = _run(firm, at=utcnow() - timedelta(days=3), quiet=True)  # says nothing
    quiet_recent = _run(firm, at=utcnow() - timedelta(days=1), quiet=True)
    only_run = _run(other, at=OLD, quiet=True)  # the other firm's latest: status shows it

    processed_old = _event(firm, 1, processed=OLD)
    processed_recent = _event(firm, 2, processed=RECENT)
    unprocessed = _event(firm, 3, processed=None)

    pruned = prune(db_engine, 30, batch=2)  # small batches: several rounds each

    assert (pruned.outbox, pruned.runs, pruned.webhook_events) == (2, 2, 1)
    outbox = _ids(firm, SlackOutbox)
    assert gone_post not in outbox and gone_given_up not in outbox
    assert {kept_recent, kept_unsent, kept_prompt, kept_group, kept_parent} <= outbox
    assert _ids(firm, Run) == {busy_old, failed_old, quiet_recent, only_run}
    assert quiet_old not in _ids(firm, Run) and quiet_days_ago not in _ids(firm, Run)
    assert _ids(firm, WebhookEvent) == {processed_recent, unprocessed}
    assert processed_old not in _ids(firm, WebhookEvent)

    assert prune(db_engine, 30).total == 0  # a second pass (another replica) finds nothing
    assert table_sizes(db_engine) == {"slack_outbox": 6, "runs": 4, "webhook_events": 2}


def test_retention_must_keep_something(db_engine: Engine) -> None:
    with pytest.raises(ValueError):
        prune(db_engine, 0)


def test_a_run_that_did_nothing_is_recorded_quiet(firm: Firm) -> None:
    firm.client("Jane Smith", ["Smith estate"])
    firm.expense(("10.00", "Jane Smith"))
    busy = firm.run()
    firm.later()
    quiet = firm.run()
    with firm.sessions() as session:
        runs = {run.id: run.quiet for run in session.scalars(select(Run))}
    assert runs == {busy.run_id: False, quiet.run_id: True}

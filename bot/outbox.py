"""Everything the firm must see goes through the outbox: stored first, then sent.

A message Slack does not take (429 past retries, 5xx, network down) stays in ``slack_outbox``
and is sent by a later :func:`deliver` (after each run, each interaction, and on the
scheduler's tick). Errors Slack will never accept (an unknown channel, bad blocks) are given up
on and kept with the reason, for ``/hardcost status`` to show.

Each firm's messages go out with its own workspace's bot token: :func:`deliver` takes either
the one ``WebClient`` (single-workspace mode) or a function from a firm id to that firm's
client (multi-workspace mode; ``None`` when the workspace has no installation).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync.bounds import ID, fits
from hardcost.sync.store import (
    Failure,
    PromptGroup,
    Run,
    SlackOutbox,
    WaitingExpense,
    utcnow,
)

log = logging.getLogger(__name__)

RETRYABLE_ERRORS = {"ratelimited", "service_unavailable", "fatal_error", "internal_error",
                    "request_timeout"}
MAX_BACKOFF = timedelta(minutes=30)
GIVE_UP_AFTER = timedelta(days=3)
REFS = {"prompt": WaitingExpense, "failure": Failure, "run": Run, "group": PromptGroup}
NOT_INSTALLED = "not_installed"

ClientFor = WebClient | Callable[[int], WebClient | None]
"""The one client for every firm, or firm id → that firm's workspace client (or None)."""


def enqueue(session: Session, firm_id: int, method: str, payload: dict[str, Any], *,
            parent: SlackOutbox | None = None, ref_kind: str | None = None,
            ref_id: int | None = None, now: datetime | None = None) -> SlackOutbox:
    """Add a Slack call to the outbox (the caller commits)."""
    row = SlackOutbox(firm_id=firm_id, method=method, payload=payload,
                      parent_id=parent.id if parent is not None else None,
                      ref_kind=ref_kind, ref_id=ref_id, next_attempt_at=now or utcnow())
    session.add(row)
    session.flush()
    return row


def deliver(sessions: sessionmaker[Session], client: ClientFor, *,
            firm_id: int | None = None, clock: Callable[[], datetime] = utcnow,
            limit: int = 200) -> int:
    """Send what is due, oldest first; returns how many were sent.

    ``client`` is a ``WebClient`` or a function firm id → ``WebClient | None``. A firm whose
    workspace has no installation (uninstalled) keeps its messages, retried with backoff until
    ``GIVE_UP_AFTER``: a reinstall soon after gets them out.
    """
    sent = 0
    now = clock()
    with sessions() as session:
        query = select(SlackOutbox).where(SlackOutbox.sent_at.is_(None),
                                          SlackOutbox.gave_up_at.is_(None),
                                          SlackOutbox.next_attempt_at <= now)
        if firm_id is not None:
            query = query.where(SlackOutbox.firm_id == firm_id)
        due = list(session.scalars(query.order_by(SlackOutbox.id).limit(limit)))
    clients: dict[int, WebClient | None] = {}
    behind: list[tuple[WebClient, SlackOutbox]] = []
    for row in due:
        if isinstance(client, WebClient):
            firm_client: WebClient | None = client
        else:
            if row.firm_id not in clients:
                clients[row.firm_id] = client(row.firm_id)
            firm_client = clients[row.firm_id]
        if firm_client is None:
            _failed(sessions, row, NOT_INSTALLED, now, True)
            continue
        outcome = _send(sessions, firm_client, row, now)
        if outcome is True:
            sent += 1
        elif outcome is AFTER_OLDER:
            behind.append((firm_client, row))
    # An edit whose older edit another sender was sending: sent once that one is out (the
    # run's summary after its last progress update), rather than at the next delivery.
    deadline = time.monotonic() + ORDER_WAIT
    while behind and time.monotonic() < deadline:
        time.sleep(0.05)
        waiting, behind = behind, []
        for firm_client, row in waiting:
            outcome = _send(sessions, firm_client, row, clock())
            if outcome is True:
                sent += 1
            elif outcome is AFTER_OLDER:
                behind.append((firm_client, row))
    return sent


class _AfterOlder:
    """``_send``'s answer for an edit that must wait for an older edit of its message."""

    def __bool__(self) -> bool:
        return False


AFTER_OLDER = _AfterOlder()
ORDER_WAIT = 5.0  # seconds a delivery waits for another sender's older edit to go out


def _send(sessions: sessionmaker[Session], client: WebClient, row: SlackOutbox,
          now: datetime) -> bool | _AfterOlder:
    payload = dict(row.payload)
    with sessions() as session:
        if row.parent_id is not None:
            parent = session.get(SlackOutbox, row.parent_id)
            if parent is None or parent.gave_up_at is not None:
                _give_up(session, row.id, "its parent message could not be posted", now)
                return False
            if parent.result_ts is None:
                return False  # the thread's first message is not out yet
            payload["thread_ts"] = parent.result_ts
            payload.setdefault("channel", parent.result_channel)
        if row.method == "chat.update" and row.ref_kind and row.ref_id:
            older = _older_update(session, row)
            if older is not None:  # edits of one message go out in order (the last one wins)
                # Another sender has it now (claimed, no error yet): worth a moment's wait.
                sending = older.last_error is None and older.next_attempt_at > now
                return AFTER_OLDER if sending else False
            ts = _ref_ts(session, row.ref_kind, row.ref_id)
            if ts is None:
                if _post_given_up(session, row):
                    _give_up(session, row.id, "the message to update could not be posted", now)
                return False  # the message to update has not been posted yet
            payload["channel"], payload["ts"] = ts
    if not _claim(sessions, row.id, now):
        return False  # another thread or process is sending it
    try:
        response = client.api_call(row.method, json=payload)
    except SlackApiError as exc:
        error = str(exc.response.get("error") or exc.response.status_code)
        status = exc.response.status_code
        retryable = error in RETRYABLE_ERRORS or status == 429 or status >= 500
        _failed(sessions, row, error, now, retryable)
        return False
    except (SlackClientError, OSError) as exc:  # no answer at all
        _failed(sessions, row, type(exc).__name__, now, True)
        return False
    channel = _slack_value(response.get("channel"))
    # A 2xx whose ``message`` is not an object is still a message Slack took: it is recorded
    # as sent (without a ts to edit later), never sent again.
    message = response.get("message")
    sent_ts = _slack_value(response.get("ts") or
                           (message.get("ts") if isinstance(message, dict) else None))
    with sessions() as session:
        stored = session.get(SlackOutbox, row.id)
        assert stored is not None
        stored.sent_at = now
        stored.attempts += 1
        stored.result_channel = channel
        stored.result_ts = sent_ts
        stored.last_error = None
        if row.method == "chat.postMessage" and row.ref_kind and row.ref_id and sent_ts:
            model = REFS.get(row.ref_kind)
            if model is not None:
                values: dict[str, Any] = {"slack_ts": sent_ts}
                if hasattr(model, "slack_channel"):
                    values["slack_channel"] = channel
                session.execute(update(model).where(model.id == row.ref_id,  # type: ignore
                                                    model.firm_id == row.firm_id)  # type: ignore
                                .values(**values))
        session.commit()
    return True


def _slack_value(value: Any) -> str | None:
    """A channel id or message ts from Slack's reply, kept only when it is one (Slack's are
    short: a reply with another shape is not remembered, and the message is not edited
    later, rather than failing the write of the whole reply)."""
    if not isinstance(value, str) or not fits(value, ID):
        if value is not None:
            log.warning("Slack replied with a channel or ts that is not one; not kept")
        return None
    return value


def _older_update(session: Session, row: SlackOutbox) -> SlackOutbox | None:
    """An earlier edit of the same message that is not out yet (another sender may be sending
    it: then it has no error yet, and is worth waiting a moment for)."""
    return session.scalars(select(SlackOutbox).where(
        SlackOutbox.firm_id == row.firm_id, SlackOutbox.ref_kind == row.ref_kind,
        SlackOutbox.ref_id == row.ref_id, SlackOutbox.method == "chat.update",
        SlackOutbox.id < row.id, SlackOutbox.sent_at.is_(None),
        SlackOutbox.gave_up_at.is_(None)).order_by(SlackOutbox.id).limit(1)).first()


def _post_given_up(session: Session, row: SlackOutbox) -> bool:
    """The post an update waits for was given up on (and none went out): so is the update."""
    posts = session.execute(select(SlackOutbox.sent_at, SlackOutbox.gave_up_at).where(
        SlackOutbox.firm_id == row.firm_id, SlackOutbox.ref_kind == row.ref_kind,
        SlackOutbox.ref_id == row.ref_id, SlackOutbox.method == "chat.postMessage")).all()
    return bool(posts) and all(p.sent_at is None and p.gave_up_at is not None for p in posts)


def _ref_ts(session: Session, kind: str, ref_id: int) -> tuple[str, str] | None:
    model = REFS.get(kind)
    if model is None:
        return None
    row = session.get(model, ref_id)
    channel = getattr(row, "slack_channel", None)
    ts = getattr(row, "slack_ts", None)
    return (channel, ts) if channel and ts else None


def _failed(sessions: sessionmaker[Session], row: SlackOutbox, error: str, now: datetime,
            retryable: bool) -> None:
    with sessions() as session:
        stored = session.get(SlackOutbox, row.id)
        assert stored is not None
        stored.attempts += 1
        stored.last_error = error
        if not retryable or now - stored.created_at > GIVE_UP_AFTER:
            stored.gave_up_at = now
            log.error("gave up on Slack %s for firm %s: %s", row.method, row.firm_id, error)
        else:
            wait = min(timedelta(seconds=15 * 2 ** min(stored.attempts, 10)), MAX_BACKOFF)
            stored.next_attempt_at = now + wait
            log.warning("Slack %s failed (%s); will retry in %s", row.method, error, wait)
        session.commit()


def _give_up(session: Session, row_id: int, reason: str, now: datetime) -> None:
    stored = session.get(SlackOutbox, row_id)
    if stored is not None:
        stored.gave_up_at = now
        stored.last_error = reason
        session.commit()


def undelivered(session: Session, firm_id: int) -> tuple[int, list[str]]:
    """(messages still waiting to be sent, reasons messages were given up on)."""
    waiting = session.scalars(select(SlackOutbox.id).where(
        SlackOutbox.firm_id == firm_id, SlackOutbox.sent_at.is_(None),
        SlackOutbox.gave_up_at.is_(None))).all()
    given_up = session.scalars(select(SlackOutbox.last_error).where(
        SlackOutbox.firm_id == firm_id, SlackOutbox.gave_up_at.is_not(None))
        .order_by(SlackOutbox.id.desc()).limit(3)).all()
    return len(waiting), [e or "unknown" for e in given_up]


CLAIM_FOR = timedelta(minutes=2)


def _claim(sessions: sessionmaker[Session], row_id: int, now: datetime) -> bool:
    """Take the row for this sender: concurrent deliveries (a click's and a run's, or two
    replicas') must not post the same message twice."""
    with sessions() as session:
        taken = session.execute(update(SlackOutbox).where(
            SlackOutbox.id == row_id, SlackOutbox.sent_at.is_(None),
            SlackOutbox.gave_up_at.is_(None), SlackOutbox.next_attempt_at <= now,
        ).values(next_attempt_at=now + CLAIM_FOR))
        session.commit()
        return bool(taken.rowcount == 1)  # type: ignore[attr-defined]

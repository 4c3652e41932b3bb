"""What the firm's channel is told after a run, and reminders; all through the outbox.

The database decides what to post, not the run's memory: every open failure without a
message gets its alert, every waiting expense without a prompt gets one. A message that could
not be posted is therefore posted later, and an identical failure seen again is not posted again.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.orm import Session, sessionmaker

from hardcost.bot.live import run_post
from hardcost.bot.outbox import ClientFor, deliver, enqueue
from hardcost.bot.ui.content import (
    Choice,
    FailureNotice,
    Message,
    Prompt,
    PromptAnswer,
    PromptGroupView,
)
from hardcost.bot.ui.failures import failure_alert
from hardcost.bot.ui.groups import prompt_group, prompt_group_done
from hardcost.bot.ui.notices import expiry_warning, reconnect_notice
from hardcost.bot.ui.prompts import prompt, prompt_answered, prompt_reminder
from hardcost.bot.ui.runs import run_details, run_summary
from hardcost.sync import prompt_groups
from hardcost.sync.qbo import transaction_url
from hardcost.sync.rules import PlannedEntry, is_bill
from hardcost.sync.store import (
    PROVIDER_NAMES,
    Connection,
    Failure,
    Firm,
    FirmSettings,
    PromptGroup,
    Run,
    SlackOutbox,
    WaitingExpense,
    WaitReason,
    utcnow,
)
from hardcost.sync.summary import RunSummary, matter_label

REMIND_AFTER = timedelta(days=1)
EXPIRY_WARNING = timedelta(days=30)
CONTACT_REASONS = {"no_contact", "several_contacts"}


SETTLED_BY_RUNS = ("imported", "removed_deleted", "removed_voided", "superseded")


def to_prompt(row: WaitingExpense, *, sandbox_links: bool = False) -> Prompt:
    entry = PlannedEntry.from_json(row.entry)
    kind = "contact" if row.reason in CONTACT_REASONS else "matter"
    choices = []
    for candidate in row.candidates:
        if candidate.get("kind") == "matter":
            label = matter_label(str(candidate.get("display_number") or ""),
                                 str(candidate.get("description") or ""))
        else:
            email = candidate.get("email")
            label = str(candidate.get("name") or "") + (f" <{email}>" if email else "")
        choices.append(Choice(int(candidate["id"]), label))
    hints = row.suggestion or {}
    suggested = hints.get("matter_id")
    return Prompt(
        id=row.id, kind=kind, reason=row.reason, amount=row.amount, txn_date=row.txn_date,
        client=row.customer_name, payee=entry.payee.name if entry.payee else None,
        memo=entry.memo, reference=entry.reference,
        qbo_url=transaction_url(row.purchase_id, sandbox=sandbox_links),
        choices=tuple(choices), waiting_since=row.created_at,
        suggested=int(suggested) if isinstance(suggested, int) else None,
        suggestion=str(hints["reason"]) if hints.get("reason") else None,
        note=str(hints["note"]) if hints.get("note") else None,
        bill=is_bill(row.purchase_id))


def to_group_view(session: Session, group: PromptGroup, *,
                  sandbox_links: bool = False) -> PromptGroupView:
    """The group as its message shows it: its open members and their shared choices."""
    open_rows = prompt_groups.open_members(session, group)
    members = tuple(to_prompt(row, sandbox_links=sandbox_links) for row in open_rows)
    choices = members[0].choices if members else ()
    return PromptGroupView(id=group.id, client=group.customer_name, members=members,
                           choices=choices)


def to_failure_notice(row: Failure, *, sandbox_links: bool = False) -> FailureNotice:
    url = transaction_url(row.purchase_id, sandbox=sandbox_links) \
        if row.purchase_id != "?" else None
    return FailureNotice(id=row.id, kind=row.kind, message=row.message, qbo_url=url,
                         occurrences=row.occurrences, first_seen=row.first_seen,
                         refused_by_clio=row.code.startswith("clio_"))


def _post(message: Message, channel: str, **extra: Any) -> dict[str, Any]:
    return {"channel": channel, "text": message.text, "blocks": message.blocks,
            "unfurl_links": False, "unfurl_media": False, **extra}


class Notifier:
    """Queues and sends a firm's messages."""

    def __init__(self, sessions: sessionmaker[Session], client: ClientFor, *,
                 sandbox_links: bool = False, clock: Callable[[], datetime] = utcnow) -> None:
        self.sessions = sessions
        self.client = client
        self.sandbox_links = sandbox_links
        self.clock = clock

    def after_run(self, firm_id: int, summary: RunSummary | None) -> int:
        """Queue the run's summary (if it did something), new alerts and prompts; send.
        One statement first says whether there is anything to queue or send at all (after a
        quiet run there is not: nothing more is read, nothing committed, nothing sent)."""
        with self.sessions() as session:
            row = session.execute(self._anything_query(firm_id, summary)).first()
            if row is None:
                return 0
            firm, settings, anything = row
            channel = settings.slack_channel_id if settings else None
            if firm is None or not channel:
                return 0
            if not anything and not (summary is not None and not summary.dry_run
                                     and summary.did_something):
                return 0
            if summary is not None and not summary.dry_run:
                self._queue_summary(session, firm_id, firm.name, channel, summary)
            self._queue_connection_notices(session, firm_id, channel)
            self._queue_alerts(session, firm_id, channel)
            self._queue_prompts(session, firm_id, channel)
            self._queue_settled_prompts(session, firm_id)
            self._queue_edited_prompts(session, firm_id)
            self._queue_reminders(session, firm_id)
            session.commit()
        return deliver(self.sessions, self.client, firm_id=firm_id, clock=self.clock)

    def _anything_query(self, firm_id: int, summary: RunSummary | None) -> Any:
        """The firm, its settings, and whether any of ``after_run``'s steps has something to
        do: each step's own condition as an ``EXISTS`` (a run's progress message to end,
        a connection to tell about, an alert, a prompt to post, settle, show edited or
        remind, a message due in the outbox)."""
        now = self.clock()
        due = now - REMIND_AFTER
        waiting = (WaitingExpense.firm_id == firm_id, WaitingExpense.resolved_at.is_(None),
                   WaitingExpense.resolution.is_(None))
        updated = (select(SlackOutbox.id).where(
            SlackOutbox.firm_id == firm_id, SlackOutbox.ref_kind == "prompt",
            SlackOutbox.method == "chat.update", SlackOutbox.ref_id == WaitingExpense.id,
            or_(WaitingExpense.resolved_at.is_(None),
                SlackOutbox.created_at >= WaitingExpense.resolved_at)).exists())
        steps = [
            exists().where(Connection.firm_id == firm_id, or_(
                and_(Connection.broken_at.is_not(None), Connection.broken_notified_at.is_(None)),
                and_(Connection.hard_expires_at.is_not(None),
                     Connection.expiry_warned_at.is_(None),
                     Connection.hard_expires_at <= now + EXPIRY_WARNING))),
            exists().where(Failure.firm_id == firm_id, Failure.resolved_at.is_(None),
                           Failure.slack_ts.is_(None)),
            exists().where(*waiting, WaitingExpense.reason != WaitReason.PAYMENT.value,
                           WaitingExpense.slack_ts.is_(None)),
            exists().where(WaitingExpense.firm_id == firm_id,
                           WaitingExpense.resolution.in_(SETTLED_BY_RUNS),
                           WaitingExpense.slack_ts.is_not(None), ~updated),
            exists().where(*waiting, WaitingExpense.prompt_stale.is_(True),
                           WaitingExpense.slack_ts.is_not(None)),
            exists().where(*waiting, WaitingExpense.slack_ts.is_not(None),
                           WaitingExpense.created_at <= due,
                           or_(WaitingExpense.reminded_at.is_(None),
                               WaitingExpense.reminded_at <= due)),
            exists().where(SlackOutbox.firm_id == firm_id, SlackOutbox.sent_at.is_(None),
                           SlackOutbox.gave_up_at.is_(None),
                           SlackOutbox.next_attempt_at <= now),
        ]
        if summary is not None and summary.run_id is not None and not summary.dry_run:
            steps.append(exists().where(
                SlackOutbox.firm_id == firm_id, SlackOutbox.ref_kind == "run",
                SlackOutbox.ref_id == summary.run_id,
                SlackOutbox.method == "chat.postMessage"))
        return (select(Firm, FirmSettings, or_(*steps))
                .outerjoin(FirmSettings, FirmSettings.firm_id == Firm.id)
                .where(Firm.id == firm_id))

    def _queue_summary(self, session: Session, firm_id: int, firm_name: str, channel: str,
                       summary: RunSummary) -> None:
        """The run's summary, for a run that did something: in place of its progress message
        when it had one (``bot.live``; then even a run that found nothing ends its message),
        with the details in that message's thread."""
        run = session.get(Run, summary.run_id) if summary.run_id is not None else None
        progress = run_post(session, firm_id, run.id) if run is not None else None
        if progress is None and not summary.did_something:
            return
        message = run_summary(
            summary, firm_name=firm_name,
            stopped_by=run.stop_requested_by if run is not None else None,
            handled_of=(summary.handled, summary.entries_expected))
        if progress is None:
            top = enqueue(session, firm_id, "chat.postMessage", _post(message, channel),
                          ref_kind="run", ref_id=summary.run_id)
        else:
            top = progress
            enqueue(session, firm_id, "chat.update",
                    {"text": message.text, "blocks": message.blocks},
                    ref_kind="run", ref_id=summary.run_id, now=self.clock())
        for reply in run_details(summary):
            enqueue(session, firm_id, "chat.postMessage", _post(reply, channel), parent=top)

    def _queue_connection_notices(self, session: Session, firm_id: int, channel: str) -> None:
        """"Reconnect" once per broken connection; a warning 30 days before a hard expiry."""
        now = self.clock()
        for row in session.scalars(select(Connection).where(Connection.firm_id == firm_id)):
            service = PROVIDER_NAMES.get(row.provider, row.provider)
            if row.broken_at is not None and row.broken_notified_at is None:
                message = reconnect_notice(service, row.provider, row.broken_reason)
                enqueue(session, firm_id, "chat.postMessage", _post(message, channel))
                row.broken_notified_at = now
            if row.hard_expires_at is not None and row.expiry_warned_at is None and \
                    row.hard_expires_at - now <= EXPIRY_WARNING:
                message = expiry_warning(service, row.provider, row.hard_expires_at)
                enqueue(session, firm_id, "chat.postMessage", _post(message, channel))
                row.expiry_warned_at = now

    def _queue_alerts(self, session: Session, firm_id: int, channel: str) -> None:
        queued = _queued_refs(session, firm_id, "failure")
        for row in session.scalars(select(Failure).where(
                Failure.firm_id == firm_id, Failure.resolved_at.is_(None),
                Failure.slack_ts.is_(None)).order_by(Failure.id)):
            if row.id not in queued:
                message = failure_alert(to_failure_notice(row,
                                                     sandbox_links=self.sandbox_links))
                enqueue(session, firm_id, "chat.postMessage", _post(message, channel),
                        ref_kind="failure", ref_id=row.id)

    def _queue_prompts(self, session: Session, firm_id: int, channel: str) -> None:
        """A prompt for every waiting expense without one; several of one client with the
        same choice (``prompt_groups.GROUP_MIN``) under one grouped message, their own prompts
        in its thread. In ``digest`` mode nothing here: the daily digest lists them."""
        settings = session.get(FirmSettings, firm_id)
        if settings is not None and settings.prompts == "digest":
            return
        queued = _queued_refs(session, firm_id, "prompt")
        new = [row for row in session.scalars(select(WaitingExpense).where(
            WaitingExpense.firm_id == firm_id, WaitingExpense.resolved_at.is_(None),
            WaitingExpense.resolution.is_(None),
            # A Bill waiting for payment asks nobody: it imports by itself once paid.
            WaitingExpense.reason != WaitReason.PAYMENT.value,
            WaitingExpense.slack_ts.is_(None)).order_by(WaitingExpense.id))
            if row.id not in queued]
        alike: dict[tuple[str, str], list[WaitingExpense]] = {}
        for row in new:
            key = prompt_groups.choice_key(row)
            if key is not None:
                alike.setdefault((row.customer_id, key), []).append(row)
        grouped: set[int] = set()
        for (customer_id, key), rows in alike.items():
            group = prompt_groups.open_group(session, firm_id, customer_id, key)
            if group is not None and group.slack_ts is None and \
                    self._group_post(session, group) is None:
                group = None  # a digest's group (no message of its own): start a new one
            if group is not None and not prompt_groups.open_members(session, group):
                group.resolved_at = self.clock()  # all answered one by one: it is done
                group.resolution = "answered"
                group = None
            if group is None and len(rows) < prompt_groups.GROUP_MIN:
                continue
            self._queue_group(session, firm_id, channel, rows, group, customer_id, key)
            grouped.update(row.id for row in rows)
        for row in new:
            if row.id not in grouped:
                self.queue_prompt(session, row, channel)

    def _queue_group(self, session: Session, firm_id: int, channel: str,
                     rows: list[WaitingExpense], group: PromptGroup | None, customer_id: str,
                     key: str) -> None:
        """Post a new group (message, then each member's prompt in its thread), or add
        members to an unanswered one (their prompts in its thread; its message updated)."""
        if group is None:
            group = PromptGroup(firm_id=firm_id, customer_id=customer_id,
                                customer_name=rows[0].customer_name, choice_key=key,
                                created_at=self.clock(), shown=[row.id for row in rows])
            session.add(group)
            session.flush()
            for row in rows:
                row.group_id = group.id
            session.flush()
            view = to_group_view(session, group, sandbox_links=self.sandbox_links)
            parent = enqueue(session, firm_id, "chat.postMessage",
                             _post(prompt_group(view), channel),
                             ref_kind="group", ref_id=group.id)
        else:
            for row in rows:
                row.group_id = group.id
            session.flush()
            # the message is updated to show them: its menu answers them too
            group.shown = [row.id for row in prompt_groups.open_members(session, group)]
            found = self._group_post(session, group)
            assert found is not None
            parent = found
            self.update_group(session, group)
        for row in rows:
            message = prompt(to_prompt(row, sandbox_links=self.sandbox_links))
            enqueue(session, firm_id, "chat.postMessage", _post(message, channel),
                    parent=parent, ref_kind="prompt", ref_id=row.id)

    @staticmethod
    def _group_post(session: Session, group: PromptGroup) -> SlackOutbox | None:
        return session.scalars(select(SlackOutbox).where(
            SlackOutbox.firm_id == group.firm_id, SlackOutbox.ref_kind == "group",
            SlackOutbox.ref_id == group.id, SlackOutbox.method == "chat.postMessage")
            .order_by(SlackOutbox.id).limit(1)).first()

    def update_group(self, session: Session, group: PromptGroup) -> None:
        """The group message shows its open members again (one was answered, one joined)."""
        if self._group_post(session, group) is None:
            return  # a digest's group: no message of its own
        view = to_group_view(session, group, sandbox_links=self.sandbox_links)
        if view.members:
            self.update_message(session, group.firm_id, "group", group.id,
                                prompt_group(view))
        elif group.resolution is None:
            group.resolution = "answered"
            group.resolved_at = self.clock()
            self.update_message(session, group.firm_id, "group", group.id,
                                prompt_group_done(group.customer_name))

    def _queue_settled_prompts(self, session: Session, firm_id: int) -> None:
        """Prompts a run settled by itself (a matter appeared, the purchase was deleted or
        voided in QuickBooks) lose their buttons."""
        updated: dict[int, datetime] = {}  # prompt → its latest update (a stale prompt's too)
        for ref, at in session.execute(select(SlackOutbox.ref_id, SlackOutbox.created_at).where(
                SlackOutbox.firm_id == firm_id, SlackOutbox.ref_kind == "prompt",
                SlackOutbox.method == "chat.update")):
            if ref is not None and (ref not in updated or at > updated[ref]):
                updated[ref] = at
        for row in session.scalars(select(WaitingExpense).where(
                WaitingExpense.firm_id == firm_id,
                WaitingExpense.resolution.in_(SETTLED_BY_RUNS),
                WaitingExpense.slack_ts.is_not(None))):
            if row.id in updated and (row.resolved_at is None or
                                      updated[row.id] >= row.resolved_at):
                continue
            answer = PromptAnswer(by_user="hardcost", outcome=str(row.resolution),
                                  clio_entry_id=row.clio_activity_id)
            message = prompt_answered(
                to_prompt(row, sandbox_links=self.sandbox_links), answer)
            self.update_message(session, firm_id, "prompt", row.id, message)

    def _queue_edited_prompts(self, session: Session, firm_id: int) -> None:
        """Prompts whose expense was edited in QuickBooks show the new figures, in place."""
        for row in session.scalars(select(WaitingExpense).where(
                WaitingExpense.firm_id == firm_id, WaitingExpense.prompt_stale.is_(True),
                WaitingExpense.resolved_at.is_(None), WaitingExpense.resolution.is_(None),
                WaitingExpense.slack_ts.is_not(None))):
            message = prompt(to_prompt(row, sandbox_links=self.sandbox_links))
            self.update_message(session, firm_id, "prompt", row.id, message)
            row.prompt_stale = False

    def queue_prompt(self, session: Session, row: WaitingExpense, channel: str) -> None:
        message = prompt(to_prompt(row, sandbox_links=self.sandbox_links))
        enqueue(session, row.firm_id, "chat.postMessage", _post(message, channel),
                ref_kind="prompt", ref_id=row.id)

    def _queue_reminders(self, session: Session, firm_id: int) -> None:
        now = self.clock()
        due = now - REMIND_AFTER
        for row in session.scalars(select(WaitingExpense).where(
                WaitingExpense.firm_id == firm_id, WaitingExpense.resolved_at.is_(None),
                WaitingExpense.resolution.is_(None), WaitingExpense.slack_ts.is_not(None),
                WaitingExpense.created_at <= due,
                or_(WaitingExpense.reminded_at.is_(None), WaitingExpense.reminded_at <= due))):
            message = prompt_reminder(to_prompt(row,
                                                  sandbox_links=self.sandbox_links),
                                      now=now)
            enqueue(session, firm_id, "chat.postMessage",
                    _post(message, str(row.slack_channel), thread_ts=row.slack_ts))
            row.reminded_at = now

    def update_message(self, session: Session, firm_id: int, ref_kind: str, ref_id: int,
                       message: Message) -> None:
        """Edit a prompt's or alert's message in place (once it has been posted)."""
        enqueue(session, firm_id, "chat.update",
                {"text": message.text, "blocks": message.blocks},
                ref_kind=ref_kind, ref_id=ref_id)

    def update_message_at(self, session: Session, firm_id: int, where: tuple[str, str],
                          message: Message) -> None:
        """Edit a message known by its channel and ts."""
        channel, ts = where
        enqueue(session, firm_id, "chat.update",
                {"channel": channel, "ts": ts, "text": message.text, "blocks": message.blocks})

    def send(self, firm_id: int) -> int:
        return deliver(self.sessions, self.client, firm_id=firm_id, clock=self.clock)

    def tell(self, firm_id: int, message: Message) -> int:
        """Post ``message`` in the firm's channel (when it has one), through the outbox."""
        with self.sessions() as session:
            settings = session.get(FirmSettings, firm_id)
            if settings is None or not settings.slack_channel_id:
                return 0
            enqueue(session, firm_id, "chat.postMessage",
                    _post(message, settings.slack_channel_id))
            session.commit()
        return self.send(firm_id)


def _queued_refs(session: Session, firm_id: int, kind: str) -> set[int]:
    """Refs with a post already waiting in the outbox (not to be queued twice)."""
    return {ref for ref in session.scalars(select(SlackOutbox.ref_id).where(
        SlackOutbox.firm_id == firm_id, SlackOutbox.ref_kind == kind,
        SlackOutbox.method == "chat.postMessage", SlackOutbox.sent_at.is_(None),
        SlackOutbox.gave_up_at.is_(None))) if ref is not None}

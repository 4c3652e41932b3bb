"""A long run's one message in the firm's channel: its progress, then its summary.

``sync.live.LiveProgress`` decides when a run has figures to show; :class:`SlackProgress` is
its ``publish``. The first publication posts the message (through the outbox, referring to the
run, so ``runs.slack_ts`` records it); later ones update it in place (``chat.update``),
replacing an update that has not gone out yet rather than queueing another. Sending happens
on a background thread (``BotContext.deliver_soon``): Slack being slow or down never slows
the import, and what is not sent stays in the outbox. ``Notifier.after_run`` turns the same
message into the run's summary.

``watch(link)`` is told the message's link once it is posted: the person who typed
``/hardcost run`` gets it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from hardcost.bot.outbox import ClientFor, enqueue
from hardcost.bot.ui.runs import run_progress
from hardcost.sync.live import STOP_POLL_EVERY, LiveFigures, LiveProgress
from hardcost.sync.store import Firm, FirmSettings, Run, SlackOutbox

if TYPE_CHECKING:
    from hardcost.sync.importer import Importer

log = logging.getLogger(__name__)

Watch = Callable[[str], None]
"""Told the link to a run's message once it is posted."""


def run_post(session: Session, firm_id: int, run_id: int) -> SlackOutbox | None:
    """The outbox row that posts (or posted) the run's one message, if it has one."""
    return session.scalars(select(SlackOutbox).where(
        SlackOutbox.firm_id == firm_id, SlackOutbox.ref_kind == "run",
        SlackOutbox.ref_id == run_id, SlackOutbox.method == "chat.postMessage")
        .order_by(SlackOutbox.id).limit(1)).first()


def queue_run_update(session: Session, firm_id: int, run_id: int, text: str,
                     blocks: list[dict[str, Any]], now: datetime) -> None:
    """Update the run's progress message in place: an update not sent yet (nor being sent:
    a sender's claim moves ``next_attempt_at`` on) takes the new content; else a new update
    is queued (the caller commits)."""
    payload = {"text": text, "blocks": blocks}
    pending = session.scalars(select(SlackOutbox.id).where(
        SlackOutbox.firm_id == firm_id, SlackOutbox.ref_kind == "run",
        SlackOutbox.ref_id == run_id, SlackOutbox.method == "chat.update",
        SlackOutbox.sent_at.is_(None), SlackOutbox.gave_up_at.is_(None),
        SlackOutbox.attempts == 0, SlackOutbox.next_attempt_at <= now)
        .order_by(SlackOutbox.id.desc()).limit(1)).first()
    if pending is not None:
        replaced = session.execute(update(SlackOutbox).where(
            SlackOutbox.id == pending, SlackOutbox.sent_at.is_(None),
            SlackOutbox.attempts == 0, SlackOutbox.next_attempt_at <= now)
            .values(payload=payload))
        if replaced.rowcount:  # type: ignore[attr-defined]
            return
    enqueue(session, firm_id, "chat.update", payload, ref_kind="run", ref_id=run_id, now=now)


DeliverSoon = Callable[[int, ClientFor, Callable[[], None] | None], None]
"""``deliver_soon(firm_id, clients, then)``: send the firm's outbox off the caller's thread."""


class SlackProgress:
    """``publish`` for a run's ``LiveProgress``: its message in the firm's channel."""

    def __init__(self, sessions: sessionmaker[Session], firm_id: int, clients: ClientFor, *,
                 deliver_soon: DeliverSoon, clock: Callable[[], datetime],
                 watch: Watch | None = None) -> None:
        self.sessions = sessions
        self.firm_id = firm_id
        self.clients = clients
        self.deliver_soon = deliver_soon
        self.clock = clock
        self.watch = watch

    def __call__(self, figures: LiveFigures, first: bool) -> None:
        with self.sessions() as session:
            firm = session.get(Firm, self.firm_id)
            settings = session.get(FirmSettings, self.firm_id)
            channel = settings.slack_channel_id if settings is not None else None
            if firm is None or not channel:
                return
            message = run_progress(figures, firm_name=firm.name)
            if run_post(session, self.firm_id, figures.run_id) is None:
                enqueue(session, self.firm_id, "chat.postMessage",
                        {"channel": channel, "text": message.text, "blocks": message.blocks,
                         "unfurl_links": False, "unfurl_media": False},
                        ref_kind="run", ref_id=figures.run_id, now=self.clock())
            else:
                queue_run_update(session, self.firm_id, figures.run_id, message.text,
                                 message.blocks, self.clock())
            session.commit()
        then = self._tell_watcher(figures.run_id) if self.watch is not None else None
        self.deliver_soon(self.firm_id, self.clients, then)

    def _tell_watcher(self, run_id: int) -> Callable[[], None]:
        def then() -> None:
            watch = self.watch
            if watch is None:
                return
            with self.sessions() as session:
                where = session.execute(select(Run.slack_channel, Run.slack_ts).where(
                    Run.id == run_id, Run.firm_id == self.firm_id)).first()
            if where is None or not where.slack_channel or not where.slack_ts:
                return  # not posted yet: the next publication tries again
            self.watch = None
            client = self.clients if isinstance(self.clients, WebClient) else \
                self.clients(self.firm_id)
            if client is None:
                return
            try:
                link = client.chat_getPermalink(channel=where.slack_channel,
                                                message_ts=where.slack_ts).get("permalink")
            except (SlackApiError, SlackClientError, OSError) as exc:
                log.info("no link to run %s's message: %s", run_id, exc)
                return
            if isinstance(link, str) and link.startswith("https://"):
                watch(link)
        return then


def attach(importer: Importer, sessions: sessionmaker[Session], firm_id: int,
           clients: ClientFor, *, deliver_soon: DeliverSoon, clock: Callable[[], datetime],
           after: float, every: float, watch: Watch | None = None) -> LiveProgress:
    """Give ``importer`` a live progress message in the firm's channel."""
    live = LiveProgress(sessions, firm_id, stopping=lambda: importer.stopping,
                        publish=SlackProgress(sessions, firm_id, clients,
                                              deliver_soon=deliver_soon, clock=clock,
                                              watch=watch),
                        after=after, every=every, poll_every=min(STOP_POLL_EVERY, every),
                        now=clock)
    importer.on_progress = live
    return live

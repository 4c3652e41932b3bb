"""The daily digest (``/hardcost set prompts digest``): one message a day, at the firm's hour in
its time zone, listing what waits, by client, instead of one prompt per expense.

:func:`send_due_digests` is the scheduler's daily job (``hardcost serve`` calls it every
minute with the time; tests call it with a chosen clock). A firm's digest for a local day is
claimed by a compare-and-set on ``firm_settings.digest_sent_on`` in the same transaction that
puts the digest in the outbox: a second tick, a restart or another replica sends nothing more
that day, and a digest claimed is a digest sent (the outbox keeps it until Slack takes it).
A process that was down at the hour sends the day's digest when it is back, the same day.
"""

from __future__ import annotations

import logging
import zoneinfo
from datetime import UTC, datetime, time, timedelta

from sqlalchemy import or_, select, union_all, update
from sqlalchemy.orm import Session

from hardcost.bot.notify import Notifier, to_group_view, to_prompt
from hardcost.bot.outbox import enqueue
from hardcost.bot.ui.content import DigestClient, Message
from hardcost.bot.ui.groups import digest
from hardcost.sync import prompt_groups
from hardcost.sync.firm_settings import SettingError, zone_name
from hardcost.sync.metrics import DIGEST_FAILURES
from hardcost.sync.store import FirmSettings, PromptGroup, WaitingExpense, WaitReason

log = logging.getLogger(__name__)

DIGEST = "digest"


def local_now(settings: FirmSettings, now: datetime) -> datetime:
    """``now`` in the firm's time zone (UTC when the stored name is unknown here, or no zone
    a firm is in: ``localtime``, ``Factory``… stored before ``set`` refused them)."""
    try:
        zone = zoneinfo.ZoneInfo(zone_name(settings.timezone or "UTC"))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, SettingError):
        log.warning("firm %s: unknown time zone %r; using UTC", settings.firm_id,
                    settings.timezone)
        zone = zoneinfo.ZoneInfo("UTC")
    return now.astimezone(zone)


def send_due_digests(notifier: Notifier, now: datetime) -> int:
    """Queue and send the digest of every firm in digest mode whose hour has come today and
    whose digest for today is not sent yet; returns how many firms got one.

    One firm's failure (its data, its Slack workspace's answer, the database for a moment) is
    logged with the firm's id and counted (``hardcost_digest_failures``); the other firms get
    theirs all the same. A digest queued before its firm failed stays in the outbox, which
    sends it later; one not queued is tried again at the next tick (each minute) that day."""
    # By index (prompts, digest_due_at), two ranges: the firms due, and those whose time is
    # not known yet (their digest settings changed): never every firm's settings.
    due = union_all(
        select(FirmSettings.firm_id).where(FirmSettings.prompts == DIGEST,
                                           FirmSettings.digest_due_at <= now),
        select(FirmSettings.firm_id).where(FirmSettings.prompts == DIGEST,
                                           FirmSettings.digest_due_at.is_(None)))
    with notifier.sessions() as session:
        firms = list(session.scalars(select(FirmSettings).where(
            FirmSettings.firm_id.in_(due), FirmSettings.slack_channel_id.is_not(None))
            .order_by(FirmSettings.firm_id)))
    sent = 0
    for settings in firms:
        firm_id = settings.firm_id
        try:
            local = local_now(settings, now)
            if local.hour >= settings.digest_hour and _queue_digest(notifier, firm_id, local):
                sent += 1
                notifier.send(firm_id)
            _look_again(notifier, settings, local)
        except Exception:  # noqa: BLE001 - one firm's failure never stops another's digest
            DIGEST_FAILURES.inc()
            log.exception("firm %s: the daily digest failed; the other firms' go on", firm_id)
    return sent


def next_digest_at(settings: FirmSettings, local: datetime) -> datetime:
    """When the firm's next digest is due after the local time ``local`` (UTC): today at its
    hour if that is still to come, else tomorrow at its hour (wall-clock, across DST)."""
    day = local.date() if local.hour < settings.digest_hour else local.date() + timedelta(days=1)
    hour = min(max(int(settings.digest_hour), 0), 23)
    return datetime.combine(day, time(hour), tzinfo=local.tzinfo).astimezone(UTC)


def _look_again(notifier: Notifier, settings: FirmSettings, local: datetime) -> None:
    """The firm is looked at again at its next digest hour, unless its digest settings
    changed meanwhile (a setter clears ``digest_due_at``: the next tick looks)."""
    with notifier.sessions() as session:
        session.execute(update(FirmSettings).where(
            FirmSettings.firm_id == settings.firm_id, FirmSettings.prompts == DIGEST,
            FirmSettings.digest_hour == settings.digest_hour,
            FirmSettings.timezone == settings.timezone,
        ).values(digest_due_at=next_digest_at(settings, local)))
        session.commit()


def _queue_digest(notifier: Notifier, firm_id: int, local: datetime) -> bool:
    today = local.date()
    with notifier.sessions() as session:
        claimed = session.execute(update(FirmSettings).where(
            FirmSettings.firm_id == firm_id, FirmSettings.prompts == DIGEST,
            or_(FirmSettings.digest_sent_on.is_(None), FirmSettings.digest_sent_on < today),
        ).values(digest_sent_on=today))
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            session.rollback()
            return False
        settings = session.get(FirmSettings, firm_id)
        assert settings is not None and settings.slack_channel_id
        parts = _clients(session, notifier, firm_id)
        if parts:  # nothing waits: nothing to say (the day is still marked done)
            pages = digest(parts, on=today)
            top = enqueue(session, firm_id, "chat.postMessage",
                          _payload(pages[0], settings.slack_channel_id))
            for page in pages[1:]:
                enqueue(session, firm_id, "chat.postMessage",
                        _payload(page, settings.slack_channel_id), parent=top)
        session.commit()
    log.info("firm %s: digest for %s queued (%d client(s))", firm_id, today, len(parts))
    return bool(parts)


def _payload(message: Message, channel: str) -> dict[str, object]:
    return {"channel": channel, "text": message.text, "blocks": message.blocks,
            "unfurl_links": False, "unfurl_media": False}


def _clients(session: Session, notifier: Notifier, firm_id: int) -> list[DigestClient]:
    """What waits, by client (oldest client first); expenses sharing one matter choice get a
    new group, so the digest can offer one menu for them (answering those alone)."""
    rows = list(session.scalars(select(WaitingExpense).where(
        WaitingExpense.firm_id == firm_id, WaitingExpense.resolved_at.is_(None),
        WaitingExpense.resolution.is_(None),
        WaitingExpense.reason != WaitReason.PAYMENT.value).order_by(WaitingExpense.id)))
    by_client: dict[str, list[WaitingExpense]] = {}
    for row in rows:
        by_client.setdefault(row.customer_id, []).append(row)
    parts = []
    for customer_id, client_rows in by_client.items():
        alike: dict[str, list[WaitingExpense]] = {}
        for row in client_rows:
            key = prompt_groups.choice_key(row)
            if key is not None:
                alike.setdefault(key, []).append(row)
        group_view = None
        if alike:
            key, members = max(alike.items(), key=lambda item: len(item[1]))
            if len(members) >= 2:  # a menu for two saves a click in a digest already
                # A group of its own for each digest: its menu answers the expenses this
                # digest shows, never one that arrives before someone answers it.
                group = PromptGroup(firm_id=firm_id, customer_id=customer_id,
                                    customer_name=members[0].customer_name,
                                    choice_key=key, created_at=notifier.clock(),
                                    shown=[row.id for row in members])
                session.add(group)
                session.flush()
                for row in members:
                    row.group_id = group.id
                session.flush()
                group_view = to_group_view(session, group, sandbox_links=notifier.sandbox_links)
        prompts = tuple(to_prompt(row, sandbox_links=notifier.sandbox_links)
                        for row in client_rows)
        parts.append(DigestClient(client=client_rows[0].customer_name, prompts=prompts,
                                  group=group_view))
    return parts

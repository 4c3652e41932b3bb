"""The monthly hard-cost report in Slack (docs/reports.md): ``/hardcost report [YYYY-MM]`` and the
automatic post on the first working day of each month.

One message with the figures (``bot.ui.reports``); in its thread the details, the chart (a PNG,
``sync.report_chart``) and the CSV of the month's entries, both uploaded with slack-sdk's
``files_upload_v2`` (the bot needs ``files:write``). Approvers and workspace admins who ask get
it in the firm's channel; anyone else in their direct messages with hardcost, as ``export``.

:func:`send_due_reports` is part of the scheduler's daily job (``hardcost serve`` calls it
every minute with the time). On the month's first working day (Monday to Friday), from the
firm's digest hour in its time zone, a firm with ``report monthly`` and a channel gets last
month's report. The month is claimed first by a compare-and-set on
``firm_settings.report_month`` / ``report_claimed_at`` (committed before Clio is read, which
may take minutes): a second tick, a restart or another replica finds it claimed and sends
nothing. The claim's time is cleared once the report is posted; the claim of a report that
failed, or whose process died, lapses after ``CLAIM_LEASE`` and the next tick tries again
(so a Clio outage costs one attempt every two hours, not one a minute). A process that was
down on that day sends the report when it is back, that month.

A tick reads only the firms whose ``firm_settings.report_due_at`` has come (or is unknown: the
report, time zone, digest hour or channel changed), by index: the claim moves it to when its
claim lapses, the post to next month's report time, and a firm looked at and not due to its
own next report time (compare-and-set on what it was computed from). Between two reports a
tick is one statement and reads no firm.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from functools import partial

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError
from sqlalchemy import and_, or_, select, union_all, update
from sqlalchemy.orm import Session, sessionmaker

from hardcost.bot.digest import local_now
from hardcost.bot.outbox import ClientFor
from hardcost.bot.ui.reports import headline, report_details, report_message
from hardcost.bot.ui.text import Mrkdwn, channel, md, mention
from hardcost.sync import month_report, report_chart
from hardcost.sync.http import ApiError
from hardcost.sync.importer import Importer
from hardcost.sync.month_report import Month, MonthReport, first_working_day
from hardcost.sync.store import FirmSettings, utcnow

log = logging.getLogger(__name__)

MONTHLY = "monthly"
CLAIM_LEASE = timedelta(hours=2)
"""A claim older than this whose report was never posted (its process died) is taken over."""
PROGRESS_EVERY = 30.0  # seconds between two "still reading" notes to the person who asked


@dataclass(frozen=True)
class Shared:
    channel: str  # where it went (a channel id, or the DM's)
    ts: str
    report: MonthReport


def make_report(importer: Importer, sessions: sessionmaker[Session], firm_id: int,
                month: Month, today: date,
                progress: Callable[[int], None] | None = None) -> MonthReport:
    return month_report.build(sessions, firm_id, month, clio=importer.clio, qbo=importer.qbo,
                              today=today, progress=progress)


def share(client: WebClient, report: MonthReport, *, to: str,
          comment: str | None = None, posted: Callable[[], None] | None = None) -> Shared:
    """Post the report to ``to`` (a channel id, or a user id for their DM): the message, its
    details in the thread, then the chart and the CSV in the thread. ``posted`` is called
    once the message is out: a failure after it (the thread, the files) must not post the
    report a second time."""
    top = report_message(report)
    answer = client.chat_postMessage(channel=to, text=top.text, blocks=top.blocks,
                                     unfurl_links=False, unfurl_media=False)
    where, ts = str(answer["channel"]), str(answer["ts"])
    if posted is not None:
        posted()
    for detail in report_details(report):
        client.chat_postMessage(channel=where, thread_ts=ts, text=detail.text,
                                blocks=detail.blocks, unfurl_links=False, unfurl_media=False)
    png = report_chart.render_png(report)
    alt = report_chart.alt_text(report)
    handle, csv_path = tempfile.mkstemp(prefix="hardcost-report-", suffix=".csv")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            month_report.write_csv(report, out)
        slug = report.month.slug
        client.files_upload_v2(
            file_uploads=[
                {"content": png, "filename": f"hardcost-report-{slug}.png",
                 "title": alt[:250], "alt_txt": alt[:1000]},
                {"file": csv_path, "filename": f"hardcost-report-{slug}.csv",
                 "title": f"Hard costs {report.month}: one row per entry"},
            ],
            channel=where, thread_ts=ts, initial_comment=comment)
    finally:
        os.unlink(csv_path)
    return Shared(where, ts, report)


def on_demand(importer: Importer, sessions: sessionmaker[Session], client: WebClient,
              firm_id: int, user_id: str, month: Month, today: date, *,
              channel_id: str | None, tell: Callable[[str], None] | None = None) -> Mrkdwn:
    """``/hardcost report``: make the month's report and share it in ``channel_id`` (or with
    ``user_id`` alone when None); a sentence for the person, saying where it went or why
    not. ``tell`` hears how far a long read of Clio has come, every ``PROGRESS_EVERY`` s."""
    last = [time.monotonic()]

    def progress(read: int) -> None:
        if tell is not None and time.monotonic() - last[0] >= PROGRESS_EVERY:
            last[0] = time.monotonic()
            tell(f"Still reading Clio for the {month} report: {read:,} entries so far…")

    try:
        report = make_report(importer, sessions, firm_id, month, today, progress)
    except ApiError as exc:
        log.warning("firm %s: report %s not made: %s", firm_id, month.slug, exc)
        return md(f"The {month} report could not be made: {exc} Nothing was shared.")
    try:
        share(client, report, to=channel_id or user_id,
              comment=md("Asked for by ", mention(user_id), "."))
    except SlackApiError as exc:
        error = str(exc.response.get("error") or "unknown error")
        log.warning("firm %s: report %s not shared: %s", firm_id, month.slug, error)
        return md(f"Slack did not take the report ({error}). "
                  + ("Invite @hardcost to the channel, or ask again. " if channel_id else "")
                  + "Nothing more was shared.")
    except SlackRequestError as exc:
        log.warning("firm %s: report %s not shared: %s", firm_id, month.slug, exc)
        return md("The report could not be posted to Slack; try again in a minute.")
    log.info("firm %s: report %s shared by %s (%d entries)", firm_id, month.slug, user_id,
             report.split.count)
    where = (md("in ", channel(channel_id) or "the channel") if channel_id
             else Mrkdwn("in your direct messages with hardcost"))
    return md(f"{headline(report)}: the report is ", where, ".")


# -- the automatic post ------------------------------------------------------------------------


def due_month(settings: FirmSettings, now: datetime) -> Month | None:
    """The month whose report is due for the firm at ``now``, if any: last month's, from the
    firm's digest hour on this month's first working day (in its time zone)."""
    local = local_now(settings, now)
    this = Month.of(local.date())
    first = first_working_day(this)
    if local.date() < first or (local.date() == first and local.hour < settings.digest_hour):
        return None
    return this.shift(-1)


def next_report_at(settings: FirmSettings, now: datetime) -> datetime:
    """When the firm's next automatic report time comes after ``now`` (UTC): this month's
    first working day at its digest hour if that is still to come, else next month's."""
    local = local_now(settings, now)
    hour = min(max(int(settings.digest_hour), 0), 23)
    this = Month.of(local.date())
    for month in (this, this.shift(1)):
        at = datetime.combine(first_working_day(month), clock_time(hour),
                              tzinfo=local.tzinfo).astimezone(UTC)
        if at > now:
            return at
    return at  # not reached: next month's time is always to come


def claim(sessions: sessionmaker[Session], firm_id: int, month: Month, now: datetime) -> bool:
    """Take the firm's report of ``month`` (compare-and-set, committed): True for one caller
    only, until the claim is given back or lapses after ``CLAIM_LEASE`` (when the job looks
    at the firm again: ``report_due_at``)."""
    with sessions() as session:
        taken = session.execute(update(FirmSettings).where(
            FirmSettings.firm_id == firm_id, FirmSettings.report == MONTHLY,
            or_(FirmSettings.report_month.is_(None), FirmSettings.report_month < month.slug,
                and_(FirmSettings.report_month == month.slug,
                     FirmSettings.report_claimed_at.is_not(None),
                     FirmSettings.report_claimed_at < now - CLAIM_LEASE)),
        ).values(report_month=month.slug, report_claimed_at=now,
                 report_due_at=now + CLAIM_LEASE + timedelta(minutes=1)))
        session.commit()
        return taken.rowcount == 1  # type: ignore[attr-defined]


def _posted(sessions: sessionmaker[Session], settings: FirmSettings, month: Month,
            now: datetime) -> None:
    with sessions() as session:
        session.execute(update(FirmSettings).where(
            FirmSettings.firm_id == settings.firm_id, FirmSettings.report_month == month.slug,
        ).values(report_claimed_at=None, report_due_at=next_report_at(settings, now)))
        session.commit()


def _look_again(sessions: sessionmaker[Session], settings: FirmSettings, now: datetime,
                when: datetime | None = None) -> None:
    """A firm looked at and not due: looked at again ``when`` (at its next report time by
    default), unless its time or what it was computed from changed meanwhile (another
    replica's claim, a setter clearing ``report_due_at``)."""
    with sessions() as session:
        session.execute(update(FirmSettings).where(
            FirmSettings.firm_id == settings.firm_id, FirmSettings.report == MONTHLY,
            FirmSettings.report_due_at.is_not_distinct_from(settings.report_due_at),
            FirmSettings.digest_hour == settings.digest_hour,
            FirmSettings.timezone == settings.timezone,
            FirmSettings.slack_channel_id.is_not_distinct_from(settings.slack_channel_id),
        ).values(report_due_at=when or next_report_at(settings, now)))
        session.commit()


def send_due_reports(sessions: sessionmaker[Session], importer_for: Callable[[int], Importer],
                     clients: ClientFor, now: datetime | None = None) -> int:
    """Make and post every due monthly report (see the module docstring); returns how many
    were posted. One firm's failure is logged (its claim lapses later); the others go on."""
    now = now or utcnow()
    # By index (report, report_due_at), two ranges: the firms whose time has come, and those
    # whose time is not known yet (their settings changed): never every firm's settings.
    due = union_all(
        select(FirmSettings.firm_id).where(FirmSettings.report == MONTHLY,
                                           FirmSettings.report_due_at <= now),
        select(FirmSettings.firm_id).where(FirmSettings.report == MONTHLY,
                                           FirmSettings.report_due_at.is_(None)))
    with sessions() as session:
        firms = list(session.scalars(select(FirmSettings).where(
            FirmSettings.firm_id.in_(due)).order_by(FirmSettings.firm_id)))
    sent = 0
    for settings in firms:
        firm_id = settings.firm_id
        month = due_month(settings, now)
        if month is None or not settings.slack_channel_id or (
                (settings.report_month or "") >= month.slug
                and settings.report_claimed_at is None):
            _look_again(sessions, settings, now)  # a channel set later clears the time
            continue
        if not claim(sessions, firm_id, month, now):  # another's, under way: when it lapses
            _look_again(sessions, settings, now, (settings.report_claimed_at or now)
                        + CLAIM_LEASE + timedelta(minutes=1))
            continue
        try:
            client = clients(firm_id) if callable(clients) else clients
            if client is None:
                raise RuntimeError("no Slack client for the firm")
            today = local_now(settings, now).date()
            report = make_report(importer_for(firm_id), sessions, firm_id, month, today)
            share(client, report, to=str(settings.slack_channel_id),
                  posted=partial(_posted, sessions, settings, month, now))
            sent += 1
            log.info("firm %s: monthly report %s posted", firm_id, month.slug)
        except Exception:  # noqa: BLE001 - one firm's failure never stops another's report
            log.exception("firm %s: the monthly report %s failed; tried again in %s",
                          firm_id, month.slug, CLAIM_LEASE)
    return sent

"""``/hardcost export``: the audit trail of a period as a CSV file in Slack.

The file goes up with slack-sdk's ``files_upload_v2`` (``files.getUploadURLExternal``, the bytes
to the upload URL, ``files.completeUploadExternal``; the bot needs ``files:write``): into the
firm's channel when an approver asks, else to the person alone (``channels`` = their user id,
which Slack takes for the bot's direct messages with them).

The CSV is ``hardcost.sync.audit.write_csv``'s, with a UTF-8 byte-order mark first so that
spreadsheet programs read accented client names right. It is written row by row to a temporary
file as the rows are read (in batches), never built in memory, and the file is uploaded from
its path. One export holds at most ``MAX_ROWS`` entries: a longer trail is refused with a
sentence asking for narrower dates.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError

from hardcost.bot.context import BotContext
from hardcost.bot.ui.text import Mrkdwn, channel, md, mention, plural
from hardcost.sync import audit
from hardcost.sync.audit_period import Period

log = logging.getLogger(__name__)

BOM = "\ufeff"
MAX_ROWS = 100_000
"""The most entries one export holds (about 25 MB of CSV): more are refused."""


@dataclass(frozen=True)
class TrailFile:
    name: str
    title: str
    path: str
    rows: int


@contextmanager
def trail_file(ctx: BotContext, firm_id: int, period: Period) -> Iterator[TrailFile]:
    """The period's trail (at most ``MAX_ROWS`` entries) as a CSV file on disk, written row by
    row as the rows are read in batches, oldest first; the file is gone once the block ends."""
    handle, path = tempfile.mkstemp(prefix="hardcost-audit-", suffix=".csv")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(BOM)
            with ctx.sessions() as session:
                rows = audit.write_csv(islice(audit.between(session, firm_id, period.start,
                                                            period.end), MAX_ROWS), out)
        yield TrailFile(name=f"hardcost-audit-{period.slug}.csv",
                        title=f"hardcost audit trail {period}", path=path, rows=rows)
    finally:
        os.unlink(path)


def too_many(ctx: BotContext, firm_id: int, period: Period) -> int | None:
    """How many entries the period holds when that is more than one export takes."""
    with ctx.sessions() as session:
        count = audit.count_between(session, firm_id, period.start, period.end)
    return count if count > MAX_ROWS else None


def upload_trail(ctx: BotContext, client: WebClient, firm_id: int, user_id: str,
                 period: Period, *, channel_id: str | None) -> Mrkdwn:
    """Upload the period's trail to ``channel_id`` (or to ``user_id`` alone when None); a
    sentence for the person who asked, saying where it went or why it did not."""
    count = too_many(ctx, firm_id, period)
    if count is not None:
        log.info("firm %s: audit export %s refused: %d entries", firm_id, period, count)
        return md(f"That is {count:,} entries from {period}; export at most {MAX_ROWS:,} at a "
                  "time: narrow the dates. Nothing was shared.")
    with trail_file(ctx, firm_id, period) as file:
        return _upload(client, firm_id, user_id, period, file, channel_id=channel_id)


def _upload(client: WebClient, firm_id: int, user_id: str, period: Period, file: TrailFile,
            *, channel_id: str | None) -> Mrkdwn:
    entries = plural(file.rows, "entry", "entries")
    comment = md(f"Audit trail {period} ({entries}), exported by ", mention(user_id), ".")
    try:
        client.files_upload_v2(filename=file.name, file=file.path, title=file.title,
                               initial_comment=comment, channel=channel_id,
                               channels=None if channel_id else [user_id])
    except SlackApiError as exc:
        error = str(exc.response.get("error") or "unknown error")
        log.warning("firm %s: audit export not uploaded: %s", firm_id, error)
        return md(f"Slack did not take the export ({error}). "
                  + ("Invite @hardcost to the channel, or ask again. " if channel_id else "")
                  + "Nothing was shared.")
    except SlackRequestError as exc:
        log.warning("firm %s: audit export not uploaded: %s", firm_id, exc)
        return md("The export could not be uploaded to Slack; nothing was shared. "
                  "Try again in a minute.")
    log.info("firm %s: audit trail %s exported by %s (%d rows)", firm_id, period, user_id,
             file.rows)
    where = (md("in ", channel(channel_id) or "the channel") if channel_id
             else Mrkdwn("in your direct messages with hardcost"))
    return md(f"The audit trail from {period} ({entries}) is ", where, ".")

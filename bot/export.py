"""``/hardcost export``: the audit trail of a period as a CSV file in Slack.

The file goes up with slack-sdk's ``files_upload_v2`` (``files.getUploadURLExternal``, the bytes
to the upload URL, ``files.completeUploadExternal``; the bot needs ``files:write``): into the
firm's channel when an approver asks, else to the person alone (``channels`` = their user id,
which Slack takes for the bot's direct messages with them).

The CSV is ``hardcost.sync.audit.write_csv``'s, with a UTF-8 byte-order mark first so that
spreadsheet programs read accented client names right.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError

from hardcost.bot.context import BotContext
from hardcost.bot.ui.text import Mrkdwn, channel, md, mention, plural
from hardcost.sync import audit
from hardcost.sync.audit_period import Period

log = logging.getLogger(__name__)

BOM = "\ufeff"


@dataclass(frozen=True)
class TrailFile:
    name: str
    title: str
    data: bytes
    rows: int


def trail_file(ctx: BotContext, firm_id: int, period: Period) -> TrailFile:
    """The period's trail as the CSV file's bytes (read in batches, oldest first)."""
    out = io.StringIO()
    with ctx.sessions() as session:
        rows = audit.write_csv(audit.between(session, firm_id, period.start, period.end), out)
    return TrailFile(name=f"hardcost-audit-{period.slug}.csv",
                     title=f"hardcost audit trail {period}",
                     data=(BOM + out.getvalue()).encode("utf-8"), rows=rows)


def upload_trail(ctx: BotContext, client: WebClient, firm_id: int, user_id: str,
                 period: Period, *, channel_id: str | None) -> Mrkdwn:
    """Upload the period's trail to ``channel_id`` (or to ``user_id`` alone when None); a
    sentence for the person who asked, saying where it went or why it did not."""
    file = trail_file(ctx, firm_id, period)
    entries = plural(file.rows, "entry", "entries")
    comment = md(f"Audit trail {period} ({entries}), exported by ", mention(user_id), ".")
    try:
        client.files_upload_v2(filename=file.name, content=file.data, title=file.title,
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

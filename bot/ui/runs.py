"""Run messages: the summary of a finished run, its details in the thread, and a long run's
progress message while it runs (pure builders, see ``bot.ui.blocks``)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from decimal import Decimal

from slack_sdk.models.blocks import ActionsBlock

from hardcost.bot.ui.blocks import (
    MESSAGE_BLOCKS,
    MESSAGE_CHARS,
    QBO_LINK,
    Block,
    _confirmed_button,
    _context,
    _fallback,
    _fields,
    _part,
    _section,
)
from hardcost.bot.ui.content import ACTION_STOP_RUN, Message
from hardcost.bot.ui.failures import _KIND_WORDS
from hardcost.bot.ui.prompts import NO_CLIENT, NO_CUSTOMER_REASON
from hardcost.bot.ui.text import (
    day,
    duration,
    escape,
    fit,
    is_http_url,
    link,
    mention,
    mrkdwn,
    name,
    one_line,
    plural,
    time_left,
)
from hardcost.sync.live import LiveFigures
from hardcost.sync.report import REASONS, money
from hardcost.sync.summary import RunSummary

DETAIL_LINES = 40  # lines per section block in the run details
DETAIL_CHARS = 2500  # characters per section block in the run details
DETAIL_ROWS = 200  # rows across all of a run's details; the rest is "and N more"


def _details_exist(summary: RunSummary) -> bool:
    return bool(summary.imported_entries or summary.waiting_items or summary.failures
                or summary.skips or summary.removed_items or summary.changed_items
                or summary.receipts_filed or summary.receipts_skipped)


def size_words(count: int) -> str:
    """Bytes as a person reads them: "640 bytes", "48 KB", "1.2 MB"."""
    if count < 1024:
        return plural(count, "byte")
    if count < 1024 * 1024:
        return f"{count / 1024:,.0f} KB"
    return f"{count / 1024 / 1024:,.1f} MB"


def _receipts_field(summary: RunSummary) -> str:
    return (f"*Receipts filed in Clio*\n{summary.receipts_filed:,} "
            f"({size_words(summary.receipt_bytes)})")


def run_summary(summary: RunSummary, *, firm_name: str, stopped_by: str | None = None,
                handled_of: tuple[int, int | None] | None = None) -> Message:
    """One compact message per run: imported (count and total), waiting, failed, skipped,
    duration. Details go in the thread (``run_details``). A run someone stopped says who, and
    how far it got (``handled_of``: entries done, of how many)."""
    firm = name(firm_name)
    count = plural(summary.imported, "expense")
    if summary.imported_bills:
        count += f" ({summary.imported_bills:,} from Bills)"
    total = money(summary.imported_total)
    if summary.dry_run:
        head = (f"*{firm}* — dry run, nothing written: would import *{count}* into Clio, "
                f"*{total}*")
    elif not summary.imported and (summary.deleted or summary.kept):
        head = f"*{firm}* — nothing new to import; expenses deleted or voided in QuickBooks " \
               "were followed into Clio"
    elif not summary.imported and summary.changed_items and \
            all(c.outcome == "unpaid" for c in summary.changed_items):
        head = f"*{firm}* — nothing new to import; Bills no longer paid in QuickBooks were " \
               "kept in Clio (see the thread)"
    elif not summary.imported and summary.changed_items:
        head = f"*{firm}* — nothing new to import; expenses edited in QuickBooks were " \
               "followed into Clio"
    elif not summary.imported and summary.receipts_filed:
        head = f"*{firm}* — nothing new to import; files attached in QuickBooks were filed " \
               "on their matters in Clio"
    else:
        head = f"*{firm}* — imported *{count}* into Clio, *{total}*"
    for_payment = summary.waiting_for_payment
    waiting = f"{summary.waiting - for_payment:,} new"
    if summary.still_waiting:
        waiting += f", {summary.still_waiting:,} from earlier runs"
    if summary.untagged_waiting:
        waiting += f" ({summary.untagged_waiting:,} with no client)"
    failed = f"{summary.failed:,} new"
    if summary.still_failing:
        failed += f", {summary.still_failing:,} still open"
    fields = [f"*Waiting for a choice*\n{waiting}", f"*Failed*\n{failed}",
              f"*Skipped*\n{summary.skipped:,}"]
    if summary.receipts_skipped:
        fields.append(f"*Receipts to add by hand*\n{len(summary.receipts_skipped):,} "
                      "(see the thread)")  # among the first ten: Slack shows no more
    if for_payment:
        fields.append(f"*Bills waiting for payment*\n{for_payment:,} new (they import once "
                      "paid)")
    if summary.receipts_filed:
        fields.append(_receipts_field(summary))
    if summary.unchanged:
        fields.append(f"*Already in Clio*\n{summary.unchanged:,}")
    if summary.deleted:
        fields.append(f"*Deleted from Clio*\n{summary.deleted:,} (gone from QuickBooks)")
    if summary.kept:
        fields.append(f"*Left in Clio, check them*\n{summary.kept:,} (gone from QuickBooks)")
    if summary.unpaid:
        fields.append(f"*No longer paid in QuickBooks, check them*\n{summary.unpaid:,} "
                      "(Bills; their Clio entries are kept)")
    if summary.updated:
        fields.append(f"*Updated in Clio*\n{summary.updated:,} (edited in QuickBooks)")
    if summary.changed_after_billing:
        fields.append(f"*Changed after billing, check them*\n{summary.changed_after_billing:,}")
    if summary.not_overwritten:
        fields.append(f"*Changed in Clio, not overwritten*\n{summary.not_overwritten:,}")
    if len(fields) > 10 and summary.unchanged:  # Slack shows ten: the least news goes
        fields = [f for f in fields if not f.startswith("*Already in Clio*")]
    blocks = [_section(head), _fields(fields)]
    notice = _reconcile_notice(summary)
    if notice:
        blocks.append(_section(notice))
    if summary.stopped_by_hand:
        who = f" by {mention(stopped_by)}" if stopped_by else ""
        far = ""
        if handled_of is not None:
            done, expected = handled_of
            far = f" after {done:,} of {expected:,} expenses" if expected is not None and \
                expected >= done else f" after {plural(done, 'expense')}"
        blocks.append(_section(f":octagonal_sign: *Stopped{who}*{far}. The next run carries on "
                               "where this one stopped."))
    elif summary.error:
        blocks.append(_section(f":octagonal_sign: *Stopped early:* {mrkdwn(summary.error, 1000)}"))
    facts = []
    if summary.run_id is not None:
        facts.append(f"Run #{summary.run_id}")
    facts.append(f"{plural(summary.purchases_read, 'QuickBooks purchase')} read")
    facts.append(f"took {duration(summary.duration_s)}")
    if _details_exist(summary):
        facts.append("details in the thread")
    blocks.append(_context(" · ".join(facts)))
    verb = "dry run, would import" if summary.dry_run else "imported"
    text = (f"{firm}: {verb} {count} ({total}), {summary.waiting:,} waiting, "
            f"{summary.failed:,} failed, {summary.skipped:,} skipped")
    if summary.deleted or summary.kept:
        text += f", {summary.deleted:,} deleted, {summary.kept:,} left in Clio"
    if summary.unpaid:
        text += f", {summary.unpaid:,} no longer paid (kept)"
    if summary.receipts_filed:
        text += f", {plural(summary.receipts_filed, 'receipt')} filed"
    if summary.changed_items:
        text += (f", {summary.updated:,} updated, {summary.changed_after_billing:,} changed "
                 "after billing")
        if summary.not_overwritten:
            text += f", {summary.not_overwritten:,} not overwritten"
    return Message(text=_fallback(text), blocks=blocks)


def live_line(f: LiveFigures) -> str:
    """A run under way in one line (plain text: every part is ours or a number):
    "400 of 2,000 expenses done · about 32 minutes left · Clio allows 50 requests a minute"."""
    if f.stage == "reading" and not f.handled:
        of = f" of {f.purchases_expected:,}" if f.purchases_expected else ""
        parts = [f"reading QuickBooks: {f.purchases_read:,}{of} purchases read"]
    else:
        total = f.total
        parts = [f"{f.handled:,} of {total:,} expenses done" if total is not None
                 else f"{plural(f.handled, 'expense')} done",
                 time_left(f.remaining_s)]
    if f.receipts_filed or f.stage == "receipts":
        parts.append(f"{plural(f.receipts_filed, 'receipt')} filed")
    if f.clio_rate_limit:
        parts.append(f"Clio allows {plural(f.clio_rate_limit, 'request')} a minute")
    return " · ".join(parts)


def run_progress(f: LiveFigures, *, firm_name: str) -> Message:
    """A long run's one message while it runs (``bot.live``): how far, how fast, when it will
    be done, and *Stop*. The run's summary replaces it at the end."""
    firm = name(firm_name)
    head = f":hourglass_flowing_sand: *{firm}* — importing from QuickBooks: {live_line(f)}"
    read = f"{f.purchases_read:,}" + (f" of {f.purchases_expected:,}"
                                       if f.purchases_expected else "")
    fields = [f"*Written to Clio*\n{f.imported:,}", f"*Waiting for a choice*\n{f.waiting:,}",
              f"*Failed*\n{f.failed:,}", f"*QuickBooks purchases read*\n{read}",
              f"*Running for*\n{duration(f.elapsed_s)}",
              f"*Waiting on rate limits*\n{duration(f.rate_limit_wait_s)}"]
    blocks = [_section(head), _fields(fields)]
    if f.stop_requested_by:
        blocks.append(_section(f":octagonal_sign: Stopping, as {mention(f.stop_requested_by)} "
                               "asked: the import stops after the entry it is writing, and "
                               "the next run carries on from there."))
    else:
        stop = _confirmed_button(
            "Stop", ACTION_STOP_RUN, str(f.run_id), title="Stop this import?",
            text="The import stops after the entry it is writing. Nothing is lost: the next "
                 "run carries on where this one stopped.", confirm="Stop")
        blocks.append(ActionsBlock(elements=[stop]).to_dict())
    blocks.append(_context(f"Run #{f.run_id} · updated every few seconds while it runs"))
    text = f"{firm}: importing from QuickBooks: {live_line(f)}"
    return Message(text=_fallback(text), blocks=blocks)


def _reconcile_notice(summary: RunSummary) -> str | None:
    """Why the run compared every imported expense with QuickBooks, when a person should know."""
    note = summary.reconciled
    if note is None or note.reason == "first":
        return None
    found = f"{note.removed:,} had been deleted or voided" if note.removed \
        else "none had been deleted or voided"
    compared = f"compared all {plural(note.checked, 'imported expense')} with QuickBooks"
    if note.reason == "offline":
        since = _since_words(note.last_swept)
        return (f":mag: hardcost had not checked QuickBooks for deletions {since}: longer than "
                f"the 30 days QuickBooks keeps them, so it {compared}; {found}.")
    if note.reason == "saturated":
        return (f":mag: More changes came back from QuickBooks than it lists at once, so "
                f"hardcost {compared}; {found}.")
    return (f":mag: QuickBooks would not list its recent deletions, so hardcost {compared}; "
            f"{found}.")


def _since_words(value: str | None) -> str:
    if not value:
        return "for a long time"
    try:
        return f"since {day(datetime.fromisoformat(value).date())}"
    except ValueError:
        return "for a long time"


_REMOVAL_WORDS = {
    "deleted": "deleted from Clio",
    "already_gone": "already removed in Clio",
    "kept_billed": "left in Clio: it is on a bill",
    "kept_alert": "left in Clio (deletions are set to alert)",
}


CLIO_LINK = "Open the matter in Clio"
_CHANGE_WORDS = {
    "updated": "Updated",
    "moved": "Moved to another matter",
    "billed": "Changed after billing, check it",
    "not_overwritten": "Changed in Clio, not overwritten",
    "gone": "Deleted in Clio, not re-created",
    "unpaid": "No longer paid in QuickBooks, check it",
    "billed_in_qbo": "Billed in QuickBooks too, check it",
}


def _difference(before: dict[str, str], after: dict[str, str]) -> str:
    """"$1,200.00 → $120.00, 2026-03-02 → 2026-03-04": only what differs (escaped)."""
    parts = []
    for key in ("amount", "date", "matter"):
        old, new = before.get(key), after.get(key)
        if key == "matter" and not new:
            continue
        if old == new:
            continue
        if key == "amount":
            old, new = _money_text(old), _money_text(new)
        parts.append(f"{escape(old or '—')} → *{escape(new or '—')}*")
    return ", ".join(parts) or "no figure changed (the note or reference did)"


def _money_text(value: str | None) -> str | None:
    if not value:
        return value
    try:
        return money(Decimal(value))
    except ArithmeticError:
        return value


def _detail_rows(summary: RunSummary) -> list[tuple[str, list[str]]]:
    """(title, rows) per kind of detail, with DETAIL_ROWS shared across them: failures first,
    then waiting, skips and imported entries, so problems are never crowded out."""
    skips = Counter(summary.skips)
    removed = sorted(summary.removed_items, key=lambda r: not r.outcome.startswith("kept"))
    changed = sorted(summary.changed_items, key=lambda c: c.outcome == "updated")
    sizes = {"failed": len(summary.failures), "removed": len(removed), "changed": len(changed),
             "waiting": len(summary.waiting_items), "skipped": len(skips),
             "receipts": len(summary.receipts_skipped),
             "imported": len(summary.imported_entries)}
    room = DETAIL_ROWS
    shown: dict[str, int] = {}
    for key in ("failed", "removed", "changed", "waiting", "skipped", "receipts", "imported"):
        shown[key] = min(sizes[key], room)
        room -= shown[key]

    def more(key: str) -> list[str]:
        hidden = sizes[key] - shown[key]
        return [f"_…and {hidden:,} more_"] if hidden > 0 else []

    out: list[tuple[str, list[str]]] = []
    if sizes["imported"]:
        rows = []
        for e in summary.imported_entries[: shown["imported"]]:
            row = f"• {day(e.date)} · *{money(e.amount)}* · {name(e.customer, 80)} → " \
                  f"{name(e.matter, 100)}"
            if e.clio_id:
                row += f" · Clio #{e.clio_id}"
            if e.rule:
                row += (f" · by the rule {name(e.rule, 120)}"
                        + (f", made by {mention(e.rule_by)}" if e.rule_by else ""))
            rows.append(row)
        total = sum((e.amount for e in summary.imported_entries), Decimal("0.00"))
        out.append((f"*Imported into Clio* — {plural(sizes['imported'], 'entry', 'entries')}, "
                    f"{money(total)}", rows + more("imported")))
    if summary.receipts_filed:  # counted only: /hardcost history names each document
        out.append((f"*Receipts filed in Clio* — {summary.receipts_filed:,}", [
            f"• {plural(summary.receipts_filed, 'file')} attached in QuickBooks "
            f"({size_words(summary.receipt_bytes)}) filed in the documents of their entries' "
            "matters; `/hardcost history &lt;purchase&gt;` names each document"]))
    if sizes["receipts"]:  # files over the size limit, or gone: a person adds them
        out.append((f"*Receipts not filed, add them to the matter by hand* — "
                    f"{sizes['receipts']:,}", [
                        f"• purchase {name(s.purchase_id, 40)} · {name(s.reason, 400)}"
                        for s in summary.receipts_skipped[: shown["receipts"]]]
                    + more("receipts")))
    if sizes["waiting"]:
        rows = []
        for w in summary.waiting_items[: shown["waiting"]]:
            client = name(w.customer, 80) or (NO_CLIENT if w.reason == NO_CUSTOMER_REASON
                                              else "")
            row = (f"• {day(w.date)} · *{money(w.amount)}* · {client} — "
                   f"{escape(REASONS.get(w.reason, w.reason))}")
            if w.choices:
                row += f" ({w.choices:,} to choose from)"
            if not w.new:
                row += " · _still waiting from an earlier run_"
            rows.append(row)
        out.append((f"*Waiting for someone to choose* — {sizes['waiting']:,}",
                    rows + more("waiting")))
    if sizes["failed"]:
        rows = []
        for f in summary.failures[: shown["failed"]]:
            row = f"• _{escape(_KIND_WORDS.get(f.kind, f.kind))}_: {mrkdwn(f.message, 300)}"
            if is_http_url(f.url):
                row += f" · {link(f.url, QBO_LINK)}"
            if not f.new:
                row += " · _still open_"
            rows.append(row)
        out.append((f"*Failed, needs attention* — {sizes['failed']:,}", rows + more("failed")))
    if sizes["removed"]:
        rows = []
        for r in removed[: shown["removed"]]:
            what = "Deleted" if r.kind == "deleted" else "Voided"
            row = (f"• {day(r.date)} · *{money(r.amount)}* · {what} in QuickBooks (expense "
                   f"#{escape(r.purchase_id)}) → Clio #{r.clio_id}"
                   + (f" ({escape(r.matter)})" if r.matter else "")
                   + f": {escape(_REMOVAL_WORDS.get(r.outcome, r.outcome))}")
            if r.outcome == "kept_billed":
                row += " — credit or adjust the bill in Clio if the client should not pay it"
            elif r.outcome == "kept_alert":
                row += " — delete it in Clio if it should go"
            rows.append(row)
        out.append((f"*Gone from QuickBooks* — {sizes['removed']:,}", rows + more("removed")))
    if sizes["changed"]:
        rows = []
        for c in changed[: shown["changed"]]:
            row = (f"• {escape(_CHANGE_WORDS.get(c.outcome, c.outcome))} · expense "
                   f"#{escape(c.purchase_id)} → Clio #{c.clio_id}"
                   + (f" ({escape(c.matter)})" if c.matter else ""))
            if c.outcome not in ("unpaid", "billed_in_qbo"):  # no figure changed
                row += f": {_difference(c.before, c.after)}"
            if c.outcome not in ("updated", "moved"):
                row += f" — {escape(c.note)}"
            if is_http_url(c.url):
                row += f" · {link(c.url, CLIO_LINK)}"
            rows.append(row)
        out.append((f"*Edited in QuickBooks* — {sizes['changed']:,}", rows + more("changed")))
    if sizes["skipped"]:
        rows = []
        for reason, n in list(skips.items())[: shown["skipped"]]:
            rows.append(f"• {mrkdwn(one_line(reason), 300)}" + (f" (×{n:,})" if n > 1 else ""))
        out.append((f"*Skipped* — {sum(skips.values()):,}", rows + more("skipped")))
    return out


def _line_chunks(rows: list[str], max_lines: int, max_chars: int) -> list[list[str]]:
    chunks: list[list[str]] = []
    chunk: list[str] = []
    size = 0
    for row in rows:
        row = fit(row, max_chars)
        if chunk and (len(chunk) >= max_lines or size + len(row) + 1 > max_chars):
            chunks.append(chunk)
            chunk, size = [], 0
        chunk.append(row)
        size += len(row) + 1
    if chunk:
        chunks.append(chunk)
    return chunks


def run_details(summary: RunSummary) -> list[Message]:
    """The thread under a run summary: imported entries, waiting expenses (why, in words),
    failures (with a QuickBooks link) and skip reasons. Each section block stays within
    DETAIL_LINES lines / DETAIL_CHARS characters, each message within MESSAGE_BLOCKS blocks."""
    pages: list[list[Block]] = []
    page: list[Block] = []
    chars = 0
    for title, rows in _detail_rows(summary):
        # one line of each chunk is kept free for the title ("continued" after a page break)
        for i, chunk in enumerate(_line_chunks(rows, DETAIL_LINES - 1,
                                               DETAIL_CHARS - len(title) - 20)):
            text = "\n".join(chunk)
            if page and (len(page) >= MESSAGE_BLOCKS or chars + len(text) > MESSAGE_CHARS):
                pages.append(page)
                page, chars = [], 0
            if i == 0:
                text = f"{title}\n{text}"
            elif not page:
                text = f"{title} _(continued)_\n{text}"
            page.append(_section(text))
            chars += len(text)
    if page:
        pages.append(page)
    label = f"Run #{summary.run_id} details" if summary.run_id is not None else "Run details"
    return [Message(text=_part(label, i, len(pages)), blocks=blocks)
            for i, blocks in enumerate(pages, start=1)]

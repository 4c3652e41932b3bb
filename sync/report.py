"""Plain-text rendering of a run for terminals (the CLI and the demo)."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from decimal import Decimal

from hardcost.sync.summary import RunSummary

REASONS = {
    "no_contact": "no Clio contact matches the QuickBooks customer",
    "several_contacts": "several Clio contacts match the QuickBooks customer",
    "several_matters": "the client has several open matters",
    "no_matter": "the client has no open or pending matter yet",
    "payment": "a Bill not fully paid yet: it imports by itself once paid",
    "no_customer": "the expense has no customer in QuickBooks",
}


def money(amount: Decimal) -> str:
    return f"${amount:,.2f}"


def _table(rows: Iterable[tuple[str, ...]], indent: str = "  ") -> list[str]:
    rows = list(rows)
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


def render_summary(summary: RunSummary) -> str:
    title = "Dry run (nothing written)" if summary.dry_run else f"Run {summary.run_id or ''}"
    bills = f", {summary.imported_bills} from Bills" if summary.imported_bills else ""
    lines = [
        f"{title.strip()}: imported {summary.imported} ({money(summary.imported_total)}{bills}), "
        f"waiting {summary.waiting}, failed {summary.failed}, skipped {summary.skipped} "
        f"— {summary.purchases_read} purchases read in {summary.duration_s:.1f}s",
    ]
    if summary.untagged_waiting:
        lines.append(f"  of those waiting, {summary.untagged_waiting} with no client in "
                     "QuickBooks (someone picks the matter in Slack)")
    if summary.unchanged:
        lines.append(f"  {summary.unchanged} already in Clio, left as they are")
    if summary.still_waiting or summary.still_failing:
        lines.append(f"  still waiting from earlier runs: {summary.still_waiting}; "
                     f"failures still open: {summary.still_failing}")
    if summary.deleted or summary.kept:
        lines.append(f"  gone from QuickBooks: {summary.deleted} deleted from Clio, "
                     f"{summary.kept} left in Clio (see below)")
    if summary.unpaid:
        lines.append(f"  {summary.unpaid} Bills no longer paid in QuickBooks, their Clio "
                     "entries kept (see below)")
    if summary.changed_items:
        lines.append(f"  edited in QuickBooks: {summary.updated} updated in Clio, "
                     f"{summary.changed_after_billing} changed after billing, "
                     f"{summary.not_overwritten} changed in Clio and not overwritten "
                     "(see below)")
    note = summary.reconciled
    if note is not None and note.reason != "first":
        lines.append(f"  compared all {note.checked} imported purchases with QuickBooks "
                     f"({note.reason}; last deletion check {note.last_swept or 'never'}): "
                     f"{note.removed} deleted or voided")
    if summary.receipts_filed or summary.receipts_failed or summary.receipts_skipped:
        lines.append(f"  receipts: {summary.receipts_filed} filed in Clio "
                     f"({summary.receipt_bytes:,} bytes), {summary.receipts_failed} failed, "
                     f"{len(summary.receipts_skipped)} to add by hand (see below)")
    if summary.error:
        lines.append(f"  Stopped: {summary.error}")
    if summary.removed_items:
        lines += ["", "Gone from QuickBooks:"]
        lines += [f"  {r.date.isoformat()}  {money(r.amount)}  {r.note}"
                  for r in summary.removed_items]
    if summary.changed_items:
        lines += ["", "Edited in QuickBooks:"]
        for c in summary.changed_items:
            change = ", ".join(f"{key} {c.before.get(key, '—')} → {c.after.get(key, '—')}"
                               for key in ("amount", "date", "matter")
                               if key in c.after and c.before.get(key) != c.after.get(key))
            lines.append(f"  expense #{c.purchase_id} → Clio #{c.clio_id}: {c.note}"
                         + (f" ({change})" if change else ""))
    if summary.imported_entries:
        lines += ["", "Imported into Clio:"]
        lines += _table(
            (e.date.isoformat(), money(e.amount), e.customer, "→ " + e.matter,
             f"#{e.clio_id}" if e.clio_id else "")
            for e in summary.imported_entries)
    choices = [w for w in summary.waiting_items if w.reason != "payment"]
    if choices:
        lines += ["", "Waiting for someone to choose:"]
        lines += _table(
            (w.date.isoformat(), money(w.amount), w.customer, REASONS.get(w.reason, w.reason)
             + (f" ({w.choices} to choose from)" if w.choices else "")
             + ("" if w.new else " — still"))
            for w in choices)
    unpaid = [w for w in summary.waiting_items if w.reason == "payment"]
    if unpaid:
        lines += ["", "Bills waiting for payment (they import by themselves once paid):"]
        lines += _table((w.date.isoformat(), money(w.amount), w.customer,
                         "" if w.new else "still") for w in unpaid)
    if summary.failures:
        lines += ["", "Failed (needs attention):"]
        for f in summary.failures:
            lines.append(f"  [{f.kind}{'' if f.new else ', still open'}] {f.message}")
            if f.url:
                lines.append(f"      open in QuickBooks: {f.url}")
    if summary.skips:
        lines += ["", "Skipped:"]
        lines += [f"  {reason}" for reason in summary.skips]
    if summary.receipts_skipped:
        lines += ["", "Receipts not filed (add them to the matter in Clio by hand):"]
        lines += [f"  purchase {_plain(s.purchase_id)}: {_plain(s.reason)}"
                  for s in summary.receipts_skipped]
    return "\n".join(lines)


def _plain(text: str) -> str:
    """Outside text (a file name from QuickBooks) on one terminal line: control characters,
    escape sequences' ESC included, shown as ``?``."""
    return "".join("?" if unicodedata.category(c) in ("Cc", "Cf") else c for c in text)

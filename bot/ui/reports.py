"""The monthly hard-cost report in Slack (docs/reports.md): one message with the month's figures,
its details in the thread (every matter, the ageing, what is not in Clio yet, the
reconciliation). Pure: a ``MonthReport`` in, ``Message``s out; names from Clio are escaped and
clipped."""

from __future__ import annotations

from hardcost.bot.ui.blocks import _context, _fallback, _header, _pack, _section
from hardcost.bot.ui.content import Message
from hardcost.bot.ui.text import name, plural
from hardcost.sync.month_report import TOP_MATTERS, MatterLine, MonthReport


def _matter(line: MatterLine) -> str:
    client = name(line.client, 80) or "(no client)"
    matter = name(line.matter, 60)
    return f"{client} — {matter}" if matter else client


def _split_words(report: MonthReport, line: MatterLine) -> str:
    split = line.split
    parts = [f"{report.money(split['unbilled'])} unbilled"]
    if split["draft"]:
        parts.append(f"{report.money(split['draft'])} on draft bills")
    if split["billed"]:
        parts.append(f"{report.money(split['billed'])} billed")
    if split["non_billable"]:
        parts.append(f"{report.money(split['non_billable'])} non-billable")
    return ", ".join(parts)


def headline(report: MonthReport) -> str:
    split = report.split
    return (f"Hard costs for {report.month}: {plural(split.count, 'entry', 'entries')} "
            f"imported, {report.money(split.total)}")


def report_message(report: MonthReport) -> Message:
    """The message in the channel (or the person's DM): the month in figures, the ten
    matters with most unbilled, the money at risk, and what is not in Clio yet."""
    split, money = report.split, report.money
    blocks = [_header(headline(report))]
    blocks.append(_section(
        "", fields=[f"*Billed* (issued bills)\n{money(split['billed'])}",
                    f"*On draft bills*\n{money(split['draft'])}",
                    f"*Unbilled* (on no bill)\n{money(split['unbilled'])}",
                    f"*Non-billable or written off*\n{money(split['non_billable'])}"]))
    if report.matters:
        top = report.matters[:TOP_MATTERS]
        lines = "\n".join(f"• {_matter(m)}: {_split_words(report, m)}" for m in top)
        more = (f"\n…and {plural(len(report.matters) - len(top), 'more matter')} in the "
                "thread and the CSV" if len(report.matters) > len(top) else "")
        blocks.append(_section(f"*By matter, most unbilled first*\n{lines}{more}"))
    at_risk = [b for b in report.ageing if b.amount]
    risk = ", ".join(f"{money(b.amount)} {b.label} old" for b in at_risk) or "nothing"
    oldest = (" Oldest: " + "; ".join(f"{_matter_old(o)} ({o.days} days, {money(o.amount)})"
                                      for o in report.oldest[:3]) + "."
              if report.oldest else "")
    blocks.append(_section(f"*Unbilled, all months* ({money(report.unbilled_total)}): "
                           f"{risk}.{oldest}"))
    blocks.append(_section(f"*Not in Clio yet:* {_outstanding(report)}"))
    if report.reconciliation is not None:
        blocks.append(_section(f"*QuickBooks against Clio:* {_reconciled(report)}"))
    blocks.append(_context(f"Read from Clio on {report.as_of.isoformat()}: amounts in "
                           f"{report.currency}, by expense date. Details, the chart and the "
                           "CSV are in the thread."))
    return Message(text=_fallback(f"{headline(report)}: {money(split['billed'])} billed, "
                                  f"{money(split['draft'])} on draft bills, "
                                  f"{money(split['unbilled'])} unbilled."),
                   blocks=blocks)


def _matter_old(old: object) -> str:
    client = name(getattr(old, "client", ""), 80) or "(no client)"
    matter = name(getattr(old, "matter", ""), 60)
    return f"{client} — {matter}" if matter else client


def _outstanding(report: MonthReport) -> str:
    out, money = report.outstanding, report.money
    failed = f"{plural(out.failures, 'open failure')} ({money(out.failures_total)}"
    failed += (f"; {out.failures_unknown} without an amount)" if out.failures_unknown else ")")
    parts = [f"{plural(out.waiting, 'expense')} waiting for someone's answer "
             f"({money(out.waiting_total)})", failed]
    if out.payment:
        parts.append(f"{plural(out.payment, 'Bill')} waiting for payment "
                     f"({money(out.payment_total)})")
    return "; ".join(parts) + "."


def _reconciled(report: MonthReport) -> str:
    rec, money = report.reconciliation, report.money
    assert rec is not None
    said = (f"{money(rec.qbo_total)} in the import accounts in {report.month}, "
            f"{money(rec.reached)} reached Clio")
    if not rec.difference:
        return said + "; nothing is missing."
    why = []
    if rec.waiting:
        why.append(f"{money(rec.waiting)} waiting")
    if rec.failed:
        why.append(f"{money(rec.failed)} failed")
    for reason, amount in rec.skipped:
        why.append(f"{money(amount)} skipped ({name(reason, 120)})")
    if rec.not_yet:
        why.append(f"{money(rec.not_yet)} not read by a run yet")
    return f"{said}; the {money(rec.difference)} difference: " + ", ".join(why) + "."


def report_details(report: MonthReport) -> list[Message]:
    """The thread: every matter of the month, then the unbilled by age with the oldest
    matters; as many messages as Slack's limits need."""
    groups = [[_section(f"*{_matter(m)}*: {_split_words(report, m)} "
                        f"({plural(m.split.count, 'entry', 'entries')})")]
              for m in report.matters]
    ages = "\n".join(f"• {b.label}: {report.money(b.amount)} "
                     f"({plural(b.count, 'entry', 'entries')})" for b in report.ageing)
    oldest = "\n".join(f"• {_matter_old(o)}: {o.days} days, {report.money(o.amount)} unbilled"
                       for o in report.oldest)
    groups.append([_section(f"*Unbilled by age* (as of {report.as_of.isoformat()})\n{ages}"
                            + (f"\n*Oldest unbilled matters*\n{oldest}" if oldest else ""))])
    if report.missing:
        groups.append([_context(f"{plural(report.missing, 'entry', 'entries')} hardcost "
                                f"imported for {report.month} are no longer in Clio.")])
    pages = _pack(groups, separator=False)
    return [Message(text=_fallback(f"Details of {headline(report)}"), blocks=page)
            for page in pages]

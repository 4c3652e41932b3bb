"""The monthly report's chart (docs/reports.md): a PNG drawn with matplotlib's Agg backend (no
display, no network).

Left, the last six months stacked: billed, on draft bills, unbilled, waiting (in QuickBooks,
not in Clio yet), each month's total written above its bar. Right, everything hardcost
imported that is still unbilled, by age (0–30, 31–60, 61–90, over 90 days), each bar labelled
with its amount. 1400 × 700 pixels: readable at Slack's preview size.

Colours are the Okabe–Ito palette, told apart with the common kinds of colour blindness; the
bars also carry hatching, so they differ in grey as well. The drawing is deterministic on one
machine: fixed size and DPI, the DejaVu Sans font matplotlib ships, no date or version in the
file (tests/test_report_chart.py compares it with a stored image).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from io import BytesIO
from typing import Any

from hardcost.sync.month_report import HistoryMonth, MonthReport, money

WIDTH_PX, HEIGHT_PX, DPI = 1400, 700, 100
SERIES = (  # (label, HistoryMonth field, colour, hatch)
    ("Billed", "billed", "#0072B2", ""),
    ("On draft bills", "draft", "#56B4E9", ".."),
    ("Unbilled", "unbilled", "#E69F00", "//"),
    ("Waiting (not in Clio yet)", "waiting", "#CC79A7", "xx"),
)
AGE_COLOURS = ("#009E73", "#F0E442", "#E69F00", "#D55E00")
STYLE: dict[str, Any] = {
    "font.family": "DejaVu Sans", "font.size": 13, "axes.titlesize": 16,
    "axes.titleweight": "bold", "axes.spines.top": False, "axes.spines.right": False,
    "hatch.linewidth": 0.6, "svg.hashsalt": "hardcost", "path.simplify": False,
}


def alt_text(report: MonthReport) -> str:
    """What the chart shows, in words (the upload's title and alt text)."""
    last = report.history[-1] if report.history else None
    shown = (f"{money(last.billed, report.currency)} billed, "
             f"{money(last.draft, report.currency)} on draft bills, "
             f"{money(last.unbilled, report.currency)} unbilled, "
             f"{money(last.waiting, report.currency)} waiting") if last else "no figures"
    ages = ", ".join(f"{b.label} {money(b.amount, report.currency)}" for b in report.ageing)
    return (f"Hard costs by month, {report.history[0].month.short} to {report.month.short}"
            f" ({report.month}: {shown}); unbilled by age: {ages}."
            if report.history else f"Hard costs, {report.month}: {shown}.")


def render_png(report: MonthReport) -> bytes:
    """The chart as PNG bytes."""
    return draw(report.history, [(b.label, b.amount) for b in report.ageing],
                title=f"Hard costs — {report.firm_name}"[:80], currency=report.currency)


def _short(amount: Decimal, currency: str) -> str:
    """``$1,234`` (whole units; the exact figures are in the message and the CSV)."""
    return money(amount.quantize(Decimal(1)), currency).replace(".00", "")


def draw(history: Sequence[HistoryMonth], ageing: Sequence[tuple[str, Decimal]], *,
         title: str, currency: str = "USD") -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    with matplotlib.rc_context(STYLE):  # type: ignore[arg-type]
        figure = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
        FigureCanvasAgg(figure)
        months, ages = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
        figure.suptitle(title, fontsize=18, fontweight="bold")
        labels = [h.month.short for h in history]
        positions = list(range(len(history)))
        bottoms = [0.0] * len(history)
        for label, attribute, colour, hatch in SERIES:
            values = [float(getattr(h, attribute)) for h in history]
            months.bar(positions, values, 0.6, bottom=bottoms, label=label, color=colour,
                       hatch=hatch, edgecolor="#333333", linewidth=0.6)
            bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
        top = max(bottoms + [1.0])
        for x, h, height in zip(positions, history, bottoms, strict=True):
            total = h.billed + h.draft + h.unbilled + h.waiting
            months.text(x, height + top * 0.015, _short(total, currency), ha="center",
                        va="bottom", fontsize=12, fontweight="bold")
        months.set_xticks(positions, labels)
        months.set_ylim(0, top * 1.15)
        months.yaxis.set_major_formatter(FuncFormatter(
            lambda value, _: _short(Decimal(str(round(value))), currency)))
        months.set_title("Hard costs by expense month")
        months.legend(loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=2,
                      frameon=False, fontsize=12)
        months.grid(axis="y", color="#dddddd", linewidth=0.8)
        months.set_axisbelow(True)

        names = [label for label, _ in ageing]
        amounts = [float(amount) for _, amount in ageing]
        rows = list(range(len(ageing)))
        ages.barh(rows, amounts, 0.6, color=AGE_COLOURS[:len(ageing)], edgecolor="#333333",
                  linewidth=0.6)
        widest = max(amounts + [1.0])
        for y, (_, amount) in zip(rows, ageing, strict=True):
            ages.text(float(amount) + widest * 0.02, y, money(amount, currency), va="center",
                      fontsize=12, fontweight="bold")
        ages.set_yticks(rows, names)
        ages.invert_yaxis()
        ages.set_xlim(0, widest * 1.45)
        ages.xaxis.set_major_formatter(FuncFormatter(
            lambda value, _: _short(Decimal(str(round(value))), currency)))
        ages.set_title("Still unbilled, by age")
        ages.grid(axis="x", color="#dddddd", linewidth=0.8)
        ages.set_axisbelow(True)
        figure.tight_layout(rect=(0, 0, 1, 0.95))
        out = BytesIO()
        figure.savefig(out, format="png", dpi=DPI, metadata={"Software": None})
    return out.getvalue()

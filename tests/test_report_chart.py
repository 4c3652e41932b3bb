"""The monthly report's chart (sync/report_chart.py) for fixed figures, compared with the stored
image tests/golden/report_chart.png within a small tolerance: a chart that breaks (a series
gone, labels moved, colours changed) is noticed.

Regenerate the stored image after a deliberate change with
``HARDCOST_UPDATE_GOLDEN=1 pytest tests/test_report_chart.py`` and look at it.
"""

from __future__ import annotations

import io
import os
from decimal import Decimal
from pathlib import Path

from PIL import Image, ImageChops, ImageStat

from hardcost.sync.month_report import HistoryMonth, Month
from hardcost.sync.report_chart import DPI, HEIGHT_PX, WIDTH_PX, draw

D = Decimal
GOLDEN = Path(__file__).parent / "golden" / "report_chart.png"
TOLERANCE = 0.5
"""The most the mean difference per channel (0–255) may be: text rendered a hair apart passes;
a bar, a label or a colour gone does not."""

HISTORY = [HistoryMonth(Month(2026, 3).shift(-back), D(1000 * back) + D("12.34"), D("500.00"),
                        D(300 * back), D("80.00")) for back in range(5, -1, -1)]
AGEING = [("0–30 days", D("1234.56")), ("31–60 days", D("800.00")), ("61–90 days", D("0.00")),
          ("over 90 days", D("4321.09"))]


def _chart(history: list[HistoryMonth] = HISTORY,
           ageing: list[tuple[str, Decimal]] = AGEING) -> Image.Image:
    png = draw(history, ageing, title="Hard costs — Sandbox Law")
    return Image.open(io.BytesIO(png)).convert("RGB")


def _difference(one: Image.Image, other: Image.Image) -> float:
    assert one.size == other.size
    return max(ImageStat.Stat(ImageChops.difference(one, other)).mean)


def test_the_chart_matches_the_stored_image() -> None:
    chart = _chart()
    if os.environ.get("HARDCOST_UPDATE_GOLDEN") == "1":
        chart.save(GOLDEN)
    assert chart.size == (WIDTH_PX, HEIGHT_PX) and WIDTH_PX >= 1200 and DPI == 100
    assert _difference(chart, Image.open(GOLDEN).convert("RGB")) <= TOLERANCE


def test_a_broken_chart_is_noticed() -> None:
    golden = Image.open(GOLDEN).convert("RGB")
    no_waiting = [HistoryMonth(h.month, h.billed, h.draft, h.unbilled, D("0.00"))
                  for h in HISTORY]
    assert _difference(_chart(history=no_waiting), golden) > TOLERANCE
    assert _difference(_chart(ageing=AGEING[:3]), golden) > TOLERANCE


def test_the_same_figures_draw_the_same_bytes() -> None:
    assert draw(HISTORY, AGEING, title="x") == draw(HISTORY, AGEING, title="x")

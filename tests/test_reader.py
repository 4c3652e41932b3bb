"""The reader alone (sync/reader.py): pages under each stream's watermark, purchases read
again by id, and how far a watermark may move."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from hardcost.sync.reader import BILLS_STREAM, WATERMARK_MARGIN, PageReader, lagged
from tests.firmkit import Firm
from tests.partkit import Parts, parts

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _changed(at: datetime, purchase_id: str = "1") -> dict[str, object]:
    return {"Id": purchase_id, "MetaData": {"LastUpdatedTime": at.isoformat()}}


def test_the_watermark_moves_past_a_recorded_page_never_past_quickbooks_clock() -> None:
    reader = PageReader(None, None, date(2026, 1, 1), set())
    assert reader.progress_mark(NOW) is None  # nothing read yet
    answered = NOW.isoformat()
    reader.saw([_changed(NOW - timedelta(hours=2)), _changed(NOW - timedelta(seconds=5), "2")],
               answered, main=True)
    # The newest change on the page is within the margin of QuickBooks' clock: held back.
    assert reader.progress_mark(NOW) == (NOW - WATERMARK_MARGIN).isoformat(timespec="seconds")
    assert reader.final_mark(NOW) == lagged(answered, NOW)


def test_a_change_during_the_read_holds_the_watermark_at_the_page_before() -> None:
    reader = PageReader(None, None, date(2026, 1, 1), set())
    first = NOW - timedelta(minutes=30)
    reader.saw([_changed(first - timedelta(hours=3))], first.isoformat(), main=True)
    # A purchase edited while the run wrote comes back on a later page: rows may have shifted.
    reader.saw([_changed(NOW, "7")], NOW.isoformat(), main=True)
    assert reader.cap == first - timedelta(hours=3)
    assert reader.final_mark(NOW) == reader.cap.isoformat(timespec="seconds")


def test_a_watermark_never_moves_back() -> None:
    since = (NOW + timedelta(hours=1)).isoformat(timespec="seconds")
    reader = PageReader(since, date(2026, 1, 1), date(2026, 1, 1), set())
    reader.saw([_changed(NOW)], NOW.isoformat(), main=True)
    assert reader.progress_mark(NOW) is None
    assert reader.final_mark(NOW) == since


def test_a_start_date_moved_earlier_is_read_once() -> None:
    reader = PageReader("2026-02-01T00:00:00+00:00", date(2026, 1, 1), date(2025, 6, 1), set())
    assert reader.backfill_from == date(2026, 1, 1)
    assert reader.progress_start == date(2026, 1, 1)  # until the older dates are read


@pytest.fixture
def kit(firm: Firm) -> Parts:
    firm.client("Jane Smith", ["Smith estate"])
    return parts(firm)


def test_each_stream_keeps_its_own_watermark(kit: Parts) -> None:
    assert kit.reader.watermark() == (None, None)
    kit.reader.save_watermark("2026-02-01T00:00:00+00:00", date(2026, 1, 1))
    kit.reader.save_watermark("2026-02-02T00:00:00+00:00", None, stream=BILLS_STREAM)
    assert kit.reader.watermark() == ("2026-02-01T00:00:00+00:00", date(2026, 1, 1))
    assert kit.reader.watermark(BILLS_STREAM) == ("2026-02-02T00:00:00+00:00", None)


def test_pages_bring_what_changed_then_what_is_read_again(kit: Parts) -> None:
    firm = kit.firm
    old = firm.expense(("10.00", "Jane Smith"))["Id"]
    firm.later()
    kit.reader.save_watermark(firm.world.clock.now().isoformat(timespec="seconds"),
                              kit.state.settings.start_date)
    firm.later()
    new = firm.expense(("20.00", "Jane Smith"))["Id"]
    reader = PageReader(*kit.reader.watermark(), kit.state.settings.start_date, {old})
    read = [([p["Id"] for p in page], source is reader)
            for page, source in kit.reader.pages(kit.state, reader)]
    # The changed purchase moves the watermark; the one read by id does not.
    assert read == [([new], True), ([old], False)]
    assert reader.refetch == set() and "reading" in kit.stages

"""Which days of the audit trail to export: ``/hardcost export [from] [to]`` and
``hardcost audit --from D --to D``.

Days are UTC dates written ``YYYY-MM-DD`` (ASCII digits), both ends included. Without dates
the period is this month so far; with only ``from``, it runs to today.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

EARLIEST, LATEST = date(2000, 1, 1), date(2099, 12, 31)
"""Days the trail can hold (as the start dates a firm may set)."""
MAX_DAYS = 5 * 366
"""The longest period one export covers: a file a spreadsheet still opens."""
_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class PeriodError(ValueError):
    """A sentence saying what is wrong with the dates."""


@dataclass(frozen=True)
class Period:
    start: date
    end: date

    def __str__(self) -> str:
        return f"{self.start.isoformat()} to {self.end.isoformat()}"

    @property
    def slug(self) -> str:
        """For a file name: ``2026-03-01-to-2026-03-31``."""
        return f"{self.start.isoformat()}-to-{self.end.isoformat()}"


def parse_day(raw: str) -> date:
    """One ``YYYY-MM-DD`` day from 2000 to 2099; PeriodError otherwise."""
    text = raw.strip()
    try:
        day = date.fromisoformat(text) if _ISO_DAY.fullmatch(text) else None
    except ValueError:
        day = None
    if day is None:
        raise PeriodError(f"“{text[:40]}” is not a date like 2026-03-31.")
    if not EARLIEST <= day <= LATEST:
        raise PeriodError(f"{day.isoformat()} is outside {EARLIEST.year} to {LATEST.year}.")
    return day


def check(start: date, end: date) -> Period:
    """The period from ``start`` to ``end``; PeriodError when it runs backwards or is longer
    than ``MAX_DAYS``."""
    if start > end:
        raise PeriodError(f"The period runs backwards: {start.isoformat()} is after "
                          f"{end.isoformat()}.")
    if (end - start).days + 1 > MAX_DAYS:
        raise PeriodError(f"{start.isoformat()} to {end.isoformat()} is more than five years; "
                          "export at most five years at a time.")
    return Period(start, end)


def this_month(today: date) -> Period:
    return Period(today.replace(day=1), today)


def parse_period(words: Sequence[str], today: date) -> Period:
    """``[]`` → this month so far, ``[from]`` → from then to today, ``[from, to]``."""
    if not words:
        return this_month(today)
    if len(words) > 2:
        raise PeriodError("Give at most two dates: from and to.")
    start = parse_day(words[0])
    end = parse_day(words[1]) if len(words) == 2 else max(today, start)
    return check(start, end)

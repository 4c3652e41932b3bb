"""A long run's live figures (how far, how fast, when it will be done) and a person's *Stop*.

The importer tells its ``on_progress`` after each page read and each entry handled.
:class:`LiveProgress` is that callback for runs people watch: once a run has lasted
``after`` seconds, and then at most every ``every`` seconds, it

- works out the figures (:class:`LiveFigures`): entries written, waiting and failed, the
  estimate of the time left from the pace measured so far (rate-limit waits included);
- stores them on the run's row (``runs.progress``), so ``/hardcost status`` and App Home on any
  replica show them;
- reads whether someone asked the run to stop (``runs.stop_requested_by``, set by
  :func:`request_stop` from any replica) and, if so, sets the run's ``RunStop``: the importer
  stops between two entries, as on shutdown, and the next run carries on;
- hands the figures to ``publish`` (the Slack message, ``bot.live``), which must not block.

Nothing here slows the import beyond one short transaction per ``every`` seconds (and one
read per ``poll_every`` seconds once the run is published, for the *Stop*); a failing
database or ``publish`` is logged and the import goes on.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync.leases import RunStop
from hardcost.sync.store import Run, utcnow
from hardcost.sync.summary import RunProgress

log = logging.getLogger(__name__)

PROGRESS_AFTER = 15.0
"""Seconds a run must have lasted before it shows its progress (short runs never do)."""
PROGRESS_EVERY = 15.0
"""Seconds between two publications of a run's figures (Slack's ``chat.update`` is Tier 3)."""
STOP_POLL_EVERY = 5.0
"""Seconds between two looks at the run's row for a *Stop*, once the run is published."""
MIN_PACE_ENTRIES = 3
"""Entries handled before the pace (and so an estimate) means anything."""
SAMPLES = 200
"""About how many (time, entries handled) samples the pace keeps."""
MAX_COUNT = 100_000_000
"""Bound on every count read back from ``runs.progress``."""


@dataclass(frozen=True)
class LiveFigures:
    """What a long run has done so far, as stored on its row and shown in Slack."""

    run_id: int
    stage: str  # reading | writing
    purchases_read: int
    purchases_expected: int | None  # what the run will read in all, when counted
    entries_expected: int | None  # entries it will write or ask about in all (estimated)
    handled: int  # of those, done (written, waiting or failed)
    imported: int
    waiting: int
    failed: int
    rate_limit_wait_s: float
    elapsed_s: float
    remaining_s: float | None  # the estimate; None until the pace is known
    clio_rate_limit: int | None  # requests a minute Clio allows, as it last said
    stop_requested_by: str | None = None
    receipts_filed: int = 0  # files attached in QuickBooks filed in Clio so far (issue 28)
    updated_at: str = ""  # ISO time of this publication

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> LiveFigures | None:
        """The figures stored on a run's row, or None when they are missing or misshapen."""
        if not isinstance(data, dict):
            return None
        try:
            values: dict[str, Any] = {}
            for f in fields(cls):
                value = data.get(f.name)
                if f.name in ("stage", "updated_at"):
                    values[f.name] = str(value or "")[:40]
                elif f.name == "stop_requested_by":
                    values[f.name] = str(value)[:40] if value else None
                elif f.name in ("rate_limit_wait_s", "elapsed_s", "remaining_s"):
                    if value is None and f.name == "remaining_s":
                        values[f.name] = None
                        continue
                    number = float(value) if isinstance(value, int | float | str) else -1.0
                    if not math.isfinite(number) or number < 0:
                        return None
                    values[f.name] = min(number, 1e9)
                elif value is None and f.name in ("purchases_expected", "entries_expected",
                                                  "clio_rate_limit"):
                    values[f.name] = None
                elif value is None and f.name == "receipts_filed":  # stored before receipts
                    values[f.name] = 0
                else:
                    if isinstance(value, bool) or not isinstance(value, int):
                        return None
                    values[f.name] = max(0, min(value, MAX_COUNT))
            return cls(**values)
        except (TypeError, ValueError):
            return None

    @property
    def total(self) -> int | None:
        """The entries to show as "of N": never fewer than are already handled."""
        if self.entries_expected is None:
            return None
        return max(self.entries_expected, self.handled)


class Pace:
    """Entries handled per second over the latter half of the time since the first one (page
    reads and rate-limit waits included, as they are part of how long the rest takes). The
    latter half only: a run starts fast (Clio's window starts full, the first answers are
    cached) and would otherwise promise too soon; half of all the time so far is still long
    enough to smooth the waits of Clio's windows out."""

    def __init__(self) -> None:
        self._start: float | None = None
        self._samples: deque[tuple[float, int]] = deque()

    def remaining(self, now: float, handled: int, total: int | None) -> float | None:
        """Seconds until ``total`` entries are handled at the pace so far, or None."""
        if total is None:
            return None
        if handled >= total:
            return 0.0
        if self._start is None:
            if handled > 0:
                self._start = now
                self._samples.append((now, handled))
            return None
        elapsed = now - self._start
        if now - self._samples[-1][0] >= max(elapsed / SAMPLES, 1e-6):
            self._samples.append((now, handled))  # about SAMPLES kept, whatever the length
        half = self._start + elapsed / 2
        while len(self._samples) > 1 and self._samples[1][0] <= half:
            self._samples.popleft()
        began, at_start = self._samples[0]
        done, spent = handled - at_start, now - began
        if done < MIN_PACE_ENTRIES or spent <= 0:
            return None
        return (total - handled) * spent / done


def request_stop(session: Session, firm_id: int, run_id: int, user_id: str,
                 now: datetime | None = None) -> tuple[Run | None, bool]:
    """Ask the firm's run ``run_id`` to stop (a *Stop* button): the run's row, now saying
    who asked (or who asked first), or None when it has finished or is not the firm's; and
    whether this request is the one that asked (False: someone had already). The
    caller commits; until then the row is locked, so the run cannot finish in between and
    whatever the caller queues about it comes before the run's summary. The run's process
    sees it within ``STOP_POLL_EVERY``."""
    asked = session.execute(update(Run).where(
        Run.id == run_id, Run.firm_id == firm_id, Run.finished_at.is_(None),
        Run.stop_requested_by.is_(None),
    ).values(stop_requested_by=user_id[:40], stop_requested_at=now or utcnow()))
    run = session.scalars(select(Run).where(
        Run.id == run_id, Run.firm_id == firm_id, Run.finished_at.is_(None))
        .execution_options(populate_existing=True)).first()
    if run is None or not run.stop_requested_by:
        return None, False
    return run, bool(asked.rowcount)  # type: ignore[attr-defined]


def live_figures(session: Session, firm_id: int) -> LiveFigures | None:
    """The figures of the firm's run under way, when it has published any."""
    row = session.execute(select(Run.progress, Run.stop_requested_by).where(
        Run.firm_id == firm_id, Run.finished_at.is_(None), Run.progress.is_not(None))
        .order_by(Run.id.desc()).limit(1)).first()
    if row is None:
        return None
    figures = LiveFigures.from_json(row.progress)
    if figures is None or not row.stop_requested_by:
        return figures
    return LiveFigures(**{**asdict(figures), "stop_requested_by": row.stop_requested_by})


Publish = Callable[[LiveFigures, bool], None]
"""``publish(figures, first)``: show the figures (``first``: the run's first publication)."""


class LiveProgress:
    """``Importer.on_progress`` for runs people watch (see the module's docstring)."""

    def __init__(self, sessions: sessionmaker[Session], firm_id: int, *,
                 stopping: Callable[[], object], publish: Publish | None = None,
                 after: float = PROGRESS_AFTER, every: float = PROGRESS_EVERY,
                 poll_every: float = STOP_POLL_EVERY,
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = utcnow) -> None:
        self.sessions = sessions
        self.firm_id = firm_id
        self.stopping = stopping  # the importer's current ``stopping`` (a RunStop to set)
        self.publish = publish
        self.after = after
        self.every = every
        self.poll_every = poll_every
        self.clock = clock
        self.now = now
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._run_id: int | None = None
        self._began = self.clock()
        self._last_publish: float | None = None
        self._last_poll = 0.0
        self._pace = Pace()
        self._stop_by: str | None = None

    def __call__(self, progress: RunProgress) -> None:
        with self._lock:
            try:
                self._see(progress)
            except Exception:  # noqa: BLE001 - progress must never stop an import
                log.exception("could not publish the progress of run %s", progress.run_id)

    def _see(self, progress: RunProgress) -> None:
        if progress.run_id is None:
            return  # a dry run: nothing stored, nothing shown
        if progress.run_id != self._run_id:
            self._reset()
            self._run_id = progress.run_id
        if progress.stage == "done":
            self._run_id = None
            return
        now = self.clock()
        remaining = self._pace.remaining(now, progress.handled, progress.entries_expected)
        if self._last_publish is not None and now - self._last_poll >= self.poll_every:
            self._poll_stop(now)
        if now - self._began < self.after:
            return
        if self._last_publish is not None and now - self._last_publish < self.every:
            return
        figures = self.figures(progress, now - self._began, remaining)
        first = self._last_publish is None
        self._last_publish = self._last_poll = now
        self._store(figures)
        if self.publish is not None:
            self.publish(figures, first)

    def figures(self, p: RunProgress, elapsed: float, remaining: float | None) -> LiveFigures:
        assert self._run_id is not None
        return LiveFigures(
            run_id=self._run_id, stage=p.stage, purchases_read=p.purchases_read,
            purchases_expected=p.purchases_expected, entries_expected=p.entries_expected,
            handled=p.handled, imported=p.imported, waiting=p.waiting, failed=p.failed,
            rate_limit_wait_s=round(p.rate_limit_wait_s, 1), elapsed_s=round(elapsed, 1),
            remaining_s=None if remaining is None else round(remaining, 1),
            clio_rate_limit=p.clio_rate_limit, stop_requested_by=self._stop_by,
            receipts_filed=p.receipts_filed,
            updated_at=self.now().isoformat(timespec="seconds"))

    def _store(self, figures: LiveFigures) -> None:
        """Store the figures and read a *Stop*, in one short transaction."""
        with self.sessions() as session:
            asked = session.execute(update(Run).where(Run.id == figures.run_id,
                                              Run.firm_id == self.firm_id)
                            .values(progress=figures.to_json()))
            asked = session.scalar(select(Run.stop_requested_by).where(
                Run.id == figures.run_id, Run.firm_id == self.firm_id))
            session.commit()
        self._stopped(asked)

    def _poll_stop(self, now: float) -> None:
        self._last_poll = now
        with self.sessions() as session:
            asked = session.scalar(select(Run.stop_requested_by).where(
                Run.id == self._run_id, Run.firm_id == self.firm_id))
        self._stopped(asked)

    def _stopped(self, asked: str | None) -> None:
        if not asked or self._stop_by:
            return
        self._stop_by = asked
        stopping = self.stopping()
        if isinstance(stopping, RunStop):
            log.info("run %s stopped by %s", self._run_id, asked)
            stopping.set()  # the importer stops between two entries
        else:  # a run without its own RunStop (never one a person can see): say so
            log.warning("run %s was asked to stop but cannot be stopped alone", self._run_id)

"""Progress of ``hardcost sync`` runs: a live bar on a terminal (tqdm), and plain lines, at most
one every few seconds, when the output is a file or a pipe (cron, systemd, CI logs)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TextIO

from tqdm import tqdm

from hardcost.sync.summary import RunProgress

PLAIN_EVERY = 5.0  # seconds between plain progress lines


def _figures(p: RunProgress) -> str:
    waited = f", {p.rate_limit_wait_s:.0f} s waiting on rate limits" \
        if p.rate_limit_wait_s >= 1 else ""
    return (f"{p.purchases_read} purchases read, {p.imported} written, {p.waiting} waiting, "
            f"{p.failed} failed{waited}")


class ProgressDisplay:
    """``on_progress`` for one firm's run."""

    def __init__(self, label: str, stream: TextIO, *, terminal: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.stream = stream
        self.terminal = stream.isatty() if terminal is None else terminal
        self.clock = clock
        self._bar: tqdm[Any] | None = None
        self._last_line = 0.0
        self._stage = ""

    def __call__(self, progress: RunProgress) -> None:
        if self.terminal:
            self._draw(progress)
        else:
            self._line(progress)

    def _draw(self, p: RunProgress) -> None:
        if p.stage == "done":
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            return
        if self._bar is None or (p.stage != self._stage and p.stage == "writing"):
            if self._bar is not None:
                self._bar.close()
            unit = "purchase" if p.stage == "reading" else "entry"
            self._bar = tqdm(total=p.to_write or None, desc=f"{self.label}: {p.stage}",
                             unit=unit, file=self.stream, leave=False, dynamic_ncols=True)
            self._stage = p.stage
        bar = self._bar
        bar.n = p.purchases_read if p.stage == "reading" else p.handled
        bar.set_postfix_str(_figures(p), refresh=False)
        bar.refresh()

    def _line(self, p: RunProgress) -> None:
        now = self.clock()
        if p.stage != "done" and p.stage == self._stage and now - self._last_line < PLAIN_EVERY:
            return
        self._stage, self._last_line = p.stage, now
        if p.stage == "done":
            return  # the summary follows
        where = f" ({p.handled} of {p.to_write} entries)" if p.stage == "writing" else ""
        self.stream.write(f"{self.label}: {p.stage}{where}: {_figures(p)}\n")
        self.stream.flush()

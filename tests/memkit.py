"""How much memory a process holds while something runs: its resident set (RSS) sampled from
``/proc`` (Linux). For tests that prove a large file streams instead of sitting in memory,
in this process (``RssSampler()``) or in a child such as ``hardcost serve``
(``RssSampler(pid)``)."""

from __future__ import annotations

import gc
import os
import threading
from types import TracebackType

MB = 1024 * 1024


def rss_bytes(pid: int | None = None) -> int:
    """The process's resident set size now (``VmRSS``), in bytes."""
    with open(f"/proc/{pid or os.getpid()}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid or os.getpid()}")


class RssSampler:
    """``with RssSampler() as rss: ...`` samples the RSS every ``interval`` seconds while the
    block runs; ``rss.growth`` is then the highest sample less the one taken on entry."""

    def __init__(self, pid: int | None = None, *, interval: float = 0.005) -> None:
        self.pid = pid
        self.interval = interval
        self.baseline = 0
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        if self.pid is None:
            gc.collect()
        self.baseline = self.peak = rss_bytes(self.pid)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._take()

    @property
    def growth(self) -> int:
        return self.peak - self.baseline

    def _take(self) -> None:
        try:
            self.peak = max(self.peak, rss_bytes(self.pid))
            self.samples += 1
        except (OSError, RuntimeError):  # the process ended
            self._stop.set()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._take()

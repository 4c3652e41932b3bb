"""The firm and run a log line belongs to.

A run sets them for its thread (``run_context``); ``RunContextFilter`` copies them onto every
record, so each line of a run can be found by firm id and run id, whichever module wrote it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class _Ids:
    firm_id: int | None = None
    run_id: int | None = None


_CURRENT: ContextVar[_Ids | None] = ContextVar("hardcost_run_ids", default=None)


@contextmanager
def run_context(firm_id: int | None, run_id: int | None = None) -> Iterator[None]:
    """Log lines written in this block (in this thread) carry ``firm_id`` and ``run_id``."""
    token = _CURRENT.set(_Ids(firm_id, run_id))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def set_run_id(run_id: int | None) -> None:
    """The run's id, once its row exists (the block of ``run_context`` started without it)."""
    ids = _CURRENT.get()
    if ids is not None:
        ids.run_id = run_id


class RunContextFilter(logging.Filter):
    """A handler filter that adds ``firm_id`` and ``run_id`` (None outside a run) to records."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = _CURRENT.get()
        if not hasattr(record, "firm_id"):
            record.firm_id = ids.firm_id if ids is not None else None
        if not hasattr(record, "run_id"):
            record.run_id = ids.run_id if ids is not None else None
        return True

"""Logging of every ``hardcost`` command: timestamps, level, logger, and the firm and run a
line belongs to; plain text for people or one JSON object per line for log collectors
(``HARDCOST_LOG_FORMAT=json``). Stored tokens and bearer tokens are redacted on every line.
APScheduler's own INFO lines (a line per job run: "Running job …", "… executed successfully",
every claim pass every 10 s) are dropped unless the level is DEBUG."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

from hardcost.sync.crypto import RedactSecrets
from hardcost.sync.log_context import RunContextFilter

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("text", "json")
QUIET_LOGGERS = ("apscheduler",)
"""Libraries whose INFO lines are routine (APScheduler logs every job run): WARNING and above,
unless ``HARDCOST_LOG_LEVEL=DEBUG``."""


class LogSettingError(ValueError):
    """A logging variable has a value we do not know; the message names the choices."""


class TextFormatter(logging.Formatter):
    """``2026-11-28 10:15:02,113 INFO hardcost.sync.importer [firm 3 run 41] message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(ids)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        firm, run = getattr(record, "firm_id", None), getattr(record, "run_id", None)
        parts = [f"firm {firm}"] if firm is not None else []
        if run is not None:
            parts.append(f"run {run}")
        record.ids = f" [{' '.join(parts)}]" if parts else ""
        return super().format(record)


class _JsonFormatter(JsonFormatter):
    """``time`` with milliseconds: ``2026-11-28T10:15:02.113+0000`` (lines of one second
    stay in order once a collector sorts them)."""

    def formatTime(self, record: logging.LogRecord,  # noqa: N802 - logging's name
                   datefmt: str | None = None) -> str:
        when = self.converter(record.created)
        return (f"{time.strftime('%Y-%m-%dT%H:%M:%S', when)}.{int(record.msecs):03d}"
                f"{time.strftime('%z', when)}")


def json_formatter() -> logging.Formatter:
    return _JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s %(firm_id)s "
                          "%(run_id)s", rename_fields={"asctime": "time", "levelname": "level",
                                                       "name": "logger"})


def configure(level: str | None, fmt: str | None, *, default_level: str,
              stream: TextIO | None = None) -> None:
    """Set up the root logger once for the process. ``level``/``fmt`` come from
    ``HARDCOST_LOG_LEVEL``/``HARDCOST_LOG_FORMAT`` (None: the command's default)."""
    chosen = (level or default_level).strip().upper()
    if chosen not in LEVELS:
        raise LogSettingError(f"HARDCOST_LOG_LEVEL is {level!r}: use one of "
                              f"{', '.join(LEVELS)}.")
    style = (fmt or "text").strip().lower()
    if style not in FORMATS:
        raise LogSettingError(f"HARDCOST_LOG_FORMAT is {fmt!r}: use text or json.")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(json_formatter() if style == "json" else TextFormatter())
    handler.addFilter(RunContextFilter())
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(chosen)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if chosen == "DEBUG" else logging.WARNING)

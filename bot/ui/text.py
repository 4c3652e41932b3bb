"""Text helpers for Block Kit: Slack escaping, safe truncation, links, mentions, dates.

Pure functions. ``mrkdwn`` is for user data going into mrkdwn text; ``fit`` is for mrkdwn we
built ourselves (it never cuts an entity, a link or a mention in half).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from slack_sdk.models.blocks import Option

ELLIPSIS = "…"
OPTION_TEXT = 75  # Slack's limit on an option's text
_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_USER_ID = re.compile(r"[UW][A-Z0-9]+")
_CHANNEL_ID = re.compile(r"[CG][A-Z0-9]{2,}")


class Mrkdwn(str):
    """mrkdwn the code composed on purpose (mentions of Slack ids, links, formatting) around
    outside text it escaped. Builders such as ``notice`` keep it as it is and escape any plain
    ``str``, so text from QuickBooks, Clio or a person can never become a link or a ping."""


def md(*parts: str) -> Mrkdwn:
    """Parts joined: ``Mrkdwn`` parts kept, plain ``str`` parts escaped."""
    return Mrkdwn("".join(p if isinstance(p, Mrkdwn) else escape(p) for p in parts))


def escape(text: str) -> str:
    """Slack's three control characters as entities (required in mrkdwn built from user data)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def one_line(text: str) -> str:
    """Whitespace (newlines, tabs) collapsed to single spaces."""
    return " ".join(text.split())


def clip(text: str, limit: int) -> str:
    """Plain text cut to at most ``limit`` characters, ending with … when cut."""
    if len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + ELLIPSIS


def mrkdwn(text: str, limit: int) -> str:
    """User text made safe for mrkdwn: escaped, then cut to at most ``limit`` characters
    (counted after escaping) without splitting an entity."""
    escaped = escape(text)
    if len(escaped) <= limit:
        return escaped
    budget = limit - 1
    out: list[str] = []
    size = 0
    for ch in text:
        piece = _ESCAPES.get(ch, ch)
        if size + len(piece) > budget:
            break
        out.append(piece)
        size += len(piece)
    return "".join(out).rstrip() + ELLIPSIS


def name(text: str | None, limit: int = 100) -> str:
    """A user-provided name or short value on one line, escaped and clipped for mrkdwn."""
    return mrkdwn(one_line(text or ""), limit)


def fit(text: str, limit: int) -> str:
    """Already-escaped mrkdwn cut to ``limit`` characters, never inside ``&amp;`` or ``<...>``."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    lt = cut.rfind("<")
    if lt != -1 and ">" not in cut[lt:]:
        cut = cut[:lt]
    return cut.rstrip() + ELLIPSIS


def link(url: str | None, label: str) -> str:
    """``<url|label>`` for an http(s) URL (label already mrkdwn-safe); just the label otherwise."""
    if not url or not url.startswith(("https://", "http://")):
        return label
    safe = (url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E")
            .replace("|", "%7C").replace(" ", "%20"))
    return f"<{safe}|{label}>"


def is_http_url(url: str | None) -> bool:
    return bool(url) and str(url).startswith(("https://", "http://")) and len(str(url)) <= 3000


def mention(user_id: str) -> Mrkdwn:
    """``<@U123>`` for a Slack user id; anything else shown as escaped text."""
    return Mrkdwn(f"<@{user_id}>" if _USER_ID.fullmatch(user_id) else escape(user_id))


def channel(channel_id: str | None) -> Mrkdwn | None:
    """``<#C123>`` for a Slack channel id; None when there is none."""
    if not channel_id:
        return None
    return Mrkdwn(f"<#{channel_id}>" if _CHANNEL_ID.fullmatch(channel_id)
                  else escape(channel_id))


def day(d: date) -> str:
    """"Jan 5, 2026": unambiguous for firms in any country."""
    return f"{d:%b} {d.day}, {d.year}"


def as_utc(dt: datetime) -> datetime:
    """Naive datetimes are UTC (as the store keeps them)."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def slack_date(dt: datetime) -> str:
    """A date each reader sees in their own time zone, with a plain fallback."""
    utc = as_utc(dt)
    return f"<!date^{int(utc.timestamp())}^{{date_short}}|{day(utc.date())}>"


def slack_time(dt: datetime) -> str:
    """A date and time each reader sees in their own time zone, with a UTC fallback."""
    utc = as_utc(dt)
    return (f"<!date^{int(utc.timestamp())}^{{date_short}} {{time}}|"
            f"{day(utc.date())} {utc:%H:%M} UTC>")


def plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (words or word + 's')}"


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs} s"


def time_left(seconds: float | None) -> str:
    """"about 32 minutes left", rounded as a person would say it."""
    if seconds is None:
        return "working out the time left"
    if seconds <= 0:
        return "finishing"
    if seconds < 59.5:
        return f"about {plural(max(1, round(seconds)), 'second')} left"
    minutes = int(round(seconds / 60))
    if minutes < 60:
        return f"about {plural(minutes, 'minute')} left"
    hours, minutes = divmod(minutes, 60)
    if hours >= 48:
        return f"about {plural(round(hours / 24), 'day')} left"
    return f"about {plural(hours, 'hour')}" + (f" {plural(minutes, 'minute')}" if minutes
                                                 else "") + " left"


def option(label: str, value: str, description: str | None = None, *,
           unnamed: str = "(no name)") -> Option:
    """A select option: the label on one line, clipped to Slack's limit; ``unnamed`` when the
    label is empty."""
    return Option(value=value, text=clip(one_line(label), OPTION_TEXT) or unnamed,
                  description=description)

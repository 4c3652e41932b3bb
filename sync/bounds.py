"""Outside text bounded where it enters, never at the database.

Every ``String(N)`` column is filled from values that were made to fit before they reached the
session: text from QuickBooks, Clio, Slack or a webhook is clipped (ending with :data:`MARK`)
or, where a shortened value would mean something else (an id, a key), refused with a reason
or replaced by a fixed-length digest. PostgreSQL also refuses the NUL character in any text,
so every outside string loses its NULs here too. ``tests/test_column_bounds.py`` pushes a value
one longer than each bounded column through every path that writes it.
"""

from __future__ import annotations

import hashlib

MARK = "…"
"""Ends a clipped text: a person sees it was cut."""

ID = 40
"""QuickBooks ids (company, purchase, customer, line, account, vendor) and Slack ids, as the
tables keep them. QuickBooks' are numbers of a few digits; anything longer is not one."""
NAME = 300
"""A QuickBooks customer's or payee's full name, a Clio client's name or matter label."""
SYNC_TOKEN = 20
"""QuickBooks' ``SyncToken`` as an entry link keeps it (a version number)."""


def clean(text: str) -> str:
    """``text`` without NUL characters (PostgreSQL cannot store them in any text column)."""
    return text.replace("\x00", "") if "\x00" in text else text


def clip(text: str, limit: int) -> str:
    """Outside text cleaned and cut to at most ``limit`` characters, ending with … when cut."""
    text = clean(text)
    if len(text) <= limit:
        return text
    return text[: limit - len(MARK)] + MARK


def clip_or_none(text: str | None, limit: int) -> str | None:
    return None if text is None else clip(text, limit)


def fits(text: str, limit: int) -> bool:
    """Whether an id or key can be kept as it is: at most ``limit`` characters, no NUL. A
    value that does not fit is refused (or digested), never cut: a cut id names another."""
    return len(text) <= limit and "\x00" not in text


def digest_key(text: str, limit: int) -> str:
    """``text`` when it fits in ``limit``; otherwise a digest of it of exactly ``limit``
    characters (``sha256:`` and hex digits), equal for equal texts. For keys compared for
    equality only (a version token, a dedupe key), never shown."""
    if fits(text, limit):
        return text
    hexdigest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return ("sha256:" + hexdigest)[:limit]

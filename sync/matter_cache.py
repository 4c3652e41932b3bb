"""The firm's open and pending Clio matters, kept locally for the "which matter?" search.

An expense with no customer (``no-customer ask``) may belong to any matter of the firm, and the
person answering picks it from a search menu (Slack's external select). Slack wants the
options within 3 seconds and Clio allows about 50 requests a minute, while a firm may have
10,000 matters (50 pages): asking Clio on each keystroke is out of the question. So a run that
asks such a question reads every open and pending matter once (when the copy is older than
:data:`MATTER_CACHE_TTL`), and the menu searches the copy with one SQL query.

Slack-free: the bot shows what :func:`search` returns; choices check :func:`cached_matter`.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from hardcost.sync.batches import chunks
from hardcost.sync.bounds import NAME, clip
from hardcost.sync.clio import ClioClient, Matter
from hardcost.sync.store import CachedMatter, FirmSettings

log = logging.getLogger(__name__)

MATTER_CACHE_TTL = timedelta(hours=1)
"""How old the copy may be before a run that asks about an expense with no client reads the
matters again (50 Clio calls for 10,000 matters: a minute of the firm's Clio budget, so not
every run)."""
MATTER_CACHE_LIMIT = 25_000
"""The most matters kept for a firm (125 Clio pages). A firm with more has the first ones by
id; the search says nothing of the rest, and the choice stays possible through its client."""
SEARCH_LIMIT = 100  # options Slack shows in an external select at most
QUERY_CHARS = 100
"""Characters of a search that count: more is not a search a person typed."""
QUERY_WORDS = 6  # each must appear; more words than this are ignored
_LIKE_ESCAPE = "\\"


@dataclass(frozen=True)
class MatterChoice:
    """A matter as the search menu offers it."""

    id: int
    display_number: str
    description: str
    client_name: str


def _fold(text: str) -> str:
    """Case and accents do not matter to a search: "Müller" is found by "muller"."""
    text = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()


def search_words(query: str) -> list[str]:
    """The words of a person's search, bounded, without control characters."""
    text = "".join(ch if ch.isprintable() else " " for ch in query[:QUERY_CHARS])
    return _fold(text).split()[:QUERY_WORDS]


def _like(word: str) -> str:
    """A word as a LIKE pattern matching itself only: ``%`` and ``_`` are literal."""
    return (word.replace(_LIKE_ESCAPE, _LIKE_ESCAPE * 2).replace("%", _LIKE_ESCAPE + "%")
            .replace("_", _LIKE_ESCAPE + "_"))


def _row(firm_id: int, matter: Matter) -> dict[str, object]:
    number = clip(matter.display_number, 100)
    description = clip(matter.description, NAME)
    client = clip(matter.client_name, NAME)
    return {"firm_id": firm_id, "matter_id": matter.id, "display_number": number,
            "description": description, "client_name": client,
            "status": clip(matter.status, 20), "number_key": _fold(number)[:100],
            "search_text": _fold(f"{number} {client} {description}")[:720]}


def store(session: Session, firm_id: int, matters: Sequence[Matter], at: datetime) -> None:
    """Replace the firm's copy with ``matters`` (in the caller's transaction)."""
    session.execute(delete(CachedMatter).where(CachedMatter.firm_id == firm_id))
    seen: set[int] = set()
    rows = []
    for matter in matters[:MATTER_CACHE_LIMIT]:
        if matter.id not in seen:
            seen.add(matter.id)
            rows.append(_row(firm_id, matter))
    for batch in chunks(rows, 1000):
        session.execute(insert(CachedMatter), batch)
    settings = session.get(FirmSettings, firm_id)
    if settings is not None:
        settings.matters_cached_at = at


def is_stale(session: Session, firm_id: int, now: datetime) -> bool:
    settings = session.get(FirmSettings, firm_id)
    cached_at = settings.matters_cached_at if settings is not None else None
    return cached_at is None or now - cached_at >= MATTER_CACHE_TTL


def refresh_if_stale(sessions: sessionmaker[Session], firm_id: int, clio: ClioClient,
                     clock: Callable[[], datetime]) -> bool:
    """Read the firm's open and pending matters from Clio when the copy is stale; True when
    it was read. Clio's errors reach the caller (the copy is left as it was)."""
    with sessions() as session:
        if not is_stale(session, firm_id, clock()):
            return False
    matters, complete = clio.open_matters_upto(MATTER_CACHE_LIMIT)
    if not complete:
        log.warning("firm %s has more than %s open matters; the search offers the first ones",
                    firm_id, MATTER_CACHE_LIMIT)
    with sessions() as session:
        store(session, firm_id, matters, clock())
        session.commit()
    return True


def search(session: Session, firm_id: int, query: str,
           limit: int = SEARCH_LIMIT) -> list[MatterChoice]:
    """The firm's matters whose display number, client name or description contain every word
    of ``query`` (any order, any case), at most ``limit``: the display number equal to the
    first word first, then those starting with it, then the rest, each by display number."""
    words = search_words(query)
    conditions = [CachedMatter.firm_id == firm_id]
    conditions += [CachedMatter.search_text.like(f"%{_like(w)}%", escape=_LIKE_ESCAPE)
                   for w in words]
    order: list[Any] = [CachedMatter.number_key, CachedMatter.matter_id]
    if words:
        prefix = CachedMatter.number_key.like(f"{_like(words[0])}%", escape=_LIKE_ESCAPE)
        order.insert(0, case((CachedMatter.number_key == words[0], 0), (prefix, 1), else_=2))
    rows = session.execute(
        select(CachedMatter.matter_id, CachedMatter.display_number, CachedMatter.description,
               CachedMatter.client_name)
        .where(*conditions).order_by(*order).limit(max(1, min(limit, SEARCH_LIMIT)))).all()
    return [MatterChoice(int(r[0]), r[1], r[2], r[3]) for r in rows]


def cached_matter(session: Session, firm_id: int, matter_id: int) -> MatterChoice | None:
    """One of the firm's open or pending matters as last read, or None."""
    row = session.scalars(select(CachedMatter).where(
        CachedMatter.firm_id == firm_id, CachedMatter.matter_id == matter_id)).first()
    if row is None:
        return None
    return MatterChoice(row.matter_id, row.display_number, row.description, row.client_name)


def count(session: Session, firm_id: int) -> int:
    return int(session.scalar(select(func.count()).select_from(CachedMatter).where(
        CachedMatter.firm_id == firm_id)) or 0)

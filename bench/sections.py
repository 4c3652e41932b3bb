"""Sections of a benchmark report that more than one benchmark writes (``docs/benchmarks.md``).

A section is a level-2 heading (``## ...``) and everything up to the next level-2 heading. The
import benchmark rewrites the file and carries the sections other benchmarks own over; those
benchmarks replace only their own section.
"""

from __future__ import annotations

from pathlib import Path

FAULT_SECTION = "## Import under Clio faults"
"""The heading (its start) of ``bench.fault_bench``'s section of ``docs/benchmarks.md``."""
PROMPT_SECTION = "## Prompt load"
"""The heading (its start) of ``bench.prompt_load``'s section of ``docs/benchmarks.md``."""
BACKFILL_SECTION = "## Backfill"
"""The heading (its start) of ``bench.backfill_bench``'s section of ``docs/benchmarks.md``."""
PROGRESS_SECTION = "## Progress estimate"
"""The heading (its start) of ``bench.progress_bench``'s section of ``docs/benchmarks.md``."""
MATTER_SEARCH_SECTION = "## Matter search"
"""The heading (its start) of ``bench.matter_search_bench``'s section of ``docs/benchmarks.md``."""
EXPORT_SECTION = "## Export"
"""The heading (its start) of ``bench.export_bench``'s section of ``docs/benchmarks.md``."""
HAND_PASS_SECTION = "## Hand-tried pass"
"""The heading (its start) of the hand-written sections of ``docs/reliability.md``: one per pass
of people trying hardcost as hostile and careless users would (what was tried, what held, what was
fixed). ``bench.reliability`` rewrites the file and carries them over."""
HEALTH_SECTION = "## Health probe"
"""The heading (its start) of ``bench.health_bench``'s section of ``docs/benchmarks.md``."""
RECEIPTS_SECTION = "## Receipts: files filed on the matter"
"""The heading (its start) of ``bench.receipts_bench``'s section of ``docs/benchmarks.md``."""
SCALE_SECTION = "## Scale"
"""The heading (its start) of ``bench.scale_bench``'s sections of ``docs/benchmarks.md``: one
per number of firms (``## Scale: 10,000 firms …``), so that two sizes side by side show how the
cost grows."""


def find_section(text: str, heading: str) -> tuple[int, int] | None:
    """Line indexes ``[start, end)`` of the section whose heading starts with ``heading``."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(heading)), None)
    if start is None:
        return None
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))
    return start, end


def section(text: str, heading: str) -> str | None:
    """The section whose heading starts with ``heading``, or ``None``."""
    span = find_section(text, heading)
    if span is None:
        return None
    return "\n".join(text.splitlines()[span[0]:span[1]]).rstrip() + "\n"


def sections(text: str, heading: str) -> list[str]:
    """Every section whose heading starts with ``heading``, in order."""
    lines = text.splitlines()
    found = []
    for start, line in enumerate(lines):
        if line.startswith(heading):
            end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                       len(lines))
            found.append("\n".join(lines[start:end]).rstrip() + "\n")
    return found


def replace_section(text: str, heading: str, new: str) -> str:
    """``text`` with its section under ``heading`` replaced by ``new`` (appended if absent)."""
    lines = text.splitlines()
    block = new.rstrip().splitlines()
    span = find_section(text, heading)
    if span is None:
        kept = "\n".join(lines).rstrip()
        return (kept + "\n\n" if kept else "") + "\n".join(block) + "\n"
    start, end = span
    after = lines[end:]
    merged = [*lines[:start], *block, *([""] + after if after else [])]
    return "\n".join(merged).rstrip() + "\n"


def write_section(path: Path, heading: str, new: str) -> None:
    """Replace (or append) one section of the report at ``path``, keeping the rest."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(replace_section(old, heading, new), encoding="utf-8")


def carry_over(path: Path, report: str, headings: list[str]) -> str:
    """``report`` followed by the sections under ``headings`` that the file at ``path`` holds
    now (a benchmark that rewrites the whole file keeps the ones it does not own)."""
    if not path.exists():
        return report
    old = path.read_text(encoding="utf-8")
    kept = [s for heading in headings for s in sections(old, heading)]
    if not kept:
        return report
    return report.rstrip() + "\n\n" + "\n".join(kept)

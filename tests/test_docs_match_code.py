"""The docs say what the code does (issue 27): variables, ``/hardcost set`` keys and the numbers
the docs quote are read from the code and looked for in the docs; links between the docs lead
somewhere; nothing cites a document that is not in the repository.

Pure file and AST checks: no database, no server.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

from hardcost.sync import config, firm_settings, leases, scheduler
from hardcost.sync.store import FirmSettings

ROOT = Path(__file__).resolve().parents[1]
CODE_DIRS = ("hardcost", "sync", "bot")


def read(relative: str) -> str:
    return (ROOT / relative).read_text(encoding="utf-8")


def flat(text: str) -> str:
    """``text`` with its line breaks and runs of spaces as one space (sentences wrap)."""
    return re.sub(r"\s+", " ", text)


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    return [line for line in out.splitlines() if line]


# -- environment variables ---------------------------------------------------------------------

def _environ_reads() -> set[str]:
    """Names read straight from ``os.environ`` / ``os.getenv`` in the production packages."""
    names: set[str] = set()
    for part in CODE_DIRS:
        for path in (ROOT / part).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                arg: ast.expr | None = None
                if isinstance(node, ast.Call) and node.args:
                    func = ast.unparse(node.func)
                    if func in ("os.environ.get", "os.getenv"):
                        arg = node.args[0]
                elif isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
                    arg = node.slice
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) \
                        and arg.value.isupper():
                    names.add(arg.value)
    return names


def variables() -> set[str]:
    return config.variable_names() | _environ_reads()


def test_the_variable_list_sees_settings_and_direct_reads() -> None:
    names = variables()
    assert {"DATABASE_URL", "HARDCOST_IMPORT_THREADS", "HARDCOST_LOG_LEVEL",
            "REQUESTS_CA_BUNDLE"} <= names


def _former_names() -> set[str]:
    """Old names still read (the second and later of a field's ``AliasChoices``)."""
    return {c for info in config.Settings.model_fields.values()
            if isinstance(info.validation_alias, config.AliasChoices)
            for c in info.validation_alias.choices[1:] if isinstance(c, str)}


def test_every_variable_is_in_env_example() -> None:
    """A ``NAME=`` line (commented or not) each; a former name is mentioned by its new one."""
    text = read(".env.example")
    missing = sorted(n for n in variables() - _former_names()
                     if not re.search(rf"^#?{re.escape(n)}=", text, re.MULTILINE))
    missing += sorted(n for n in _former_names() if n not in text)
    assert not missing, f".env.example lacks {missing}"


def test_every_variable_is_in_the_readme_configuration_tables() -> None:
    readme = read("README.md")
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    missing = sorted(n for n in variables() if f"`{n}`" not in rows)
    assert not missing, f"README's configuration tables lack {missing}"


def _number(value: float) -> str:
    return f"{value:g}"


NUMERIC_SETTINGS = [name for name, info in config.Settings.model_fields.items()
                    if isinstance(info.default, int | float) and not isinstance(info.default, bool)]


def _alias(field: str) -> str:
    info = config.Settings.model_fields[field]
    if info.alias:
        return info.alias
    assert isinstance(info.validation_alias, config.AliasChoices)
    first = info.validation_alias.choices[0]
    assert isinstance(first, str)
    return first


@pytest.mark.parametrize("field", NUMERIC_SETTINGS)
def test_env_example_shows_each_numeric_default(field: str) -> None:
    """``#NAME=value`` and "(default N)" in the comment above it say the code's default."""
    name, default = _alias(field), _number(config.Settings.model_fields[field].default)
    lines = read(".env.example").splitlines()
    found = [i for i, line in enumerate(lines) if re.match(rf"#?{name}=", line)]
    assert found, f"{name} is not in .env.example"
    value = lines[found[0]].split("=", 1)[1]
    assert value == default, f".env.example: {name}={value}, the default is {default}"
    comment = lines[found[0] - 1]
    said = re.findall(r"\(default (\d+(?:\.\d+)?)", comment)
    assert said == [default], f".env.example, above {name}: {comment!r} (default is {default})"


@pytest.mark.parametrize("field", NUMERIC_SETTINGS)
def test_readme_table_shows_each_numeric_default(field: str) -> None:
    name = _alias(field)
    default = _number(config.Settings.model_fields[field].default)
    rows = [line for line in read("README.md").splitlines()
            if line.startswith(("| `", "|`")) and f"`{name}`" in line.split("|")[1]]
    assert rows, f"README has no table row for {name}"
    first_cell = rows[0].split("|")[1]
    last_cell = rows[0].rstrip().rstrip("|").split("|")[-1].strip()
    names = re.findall(r"`([A-Z_]+)`", first_cell)
    shown = [v.strip() for v in last_cell.split(",")]
    assert len(shown) == len(names), f"README row for {name}: {rows[0]!r}"
    assert shown[names.index(name)] == default, (
        f"README says {name} defaults to {shown[names.index(name)]}, the code {default}")


# -- /hardcost set keys ------------------------------------------------------------------------

SET_KEY_COLUMNS = {"schedule": "schedule_minutes", "channel": "slack_channel_id",
                   "account": "import_account_ids", "category": "expense_category_id",
                   "user": "clio_user_id", "utbms": "utbms_code_id"}


def _shown_default(key: str) -> str | None:
    """The default of ``key`` as the settings table shows it, when it is a plain value."""
    column = FirmSettings.__table__.columns[SET_KEY_COLUMNS.get(key, key.replace("-", "_"))]
    default = column.default.arg if column.default is not None else None
    if default is None or callable(default):
        return None  # none, or an empty list: said in words
    if isinstance(default, bool):
        return "on" if default else "off"
    return str(default)


def test_every_set_key_and_its_default_is_in_commands_md() -> None:
    doc = read("docs/commands.md")
    table = doc.split("## Settings (`/hardcost set <key> <value>`)", 1)[1].split("\n### ", 1)[0]
    rows = {re.match(r"\| \[`([a-z-]+)`\]", line).group(1): line  # type: ignore[union-attr]
            for line in table.splitlines() if re.match(r"\| \[`[a-z-]+`\]", line)}
    keys = sorted(firm_settings.USAGE)
    assert sorted(rows) == keys, f"docs/commands.md's settings table: {sorted(rows)}, code: {keys}"
    for key in firm_settings.USAGE:
        default = _shown_default(key)
        if default is not None:
            cell = rows[key].rstrip().rstrip("|").split("|")[-1].strip()
            assert cell == default, f"docs/commands.md: {key} defaults to {cell!r}, not {default!r}"
        heading = "### " + key
        assert heading in doc or key in ("prompts", "digest-hour", "timezone"), heading


# -- numbers the docs quote --------------------------------------------------------------------

def _quoted() -> list[tuple[str, str]]:
    s = config.Settings.model_fields
    refresh = _number(s["scheduler_refresh_seconds"].default)
    threads = _number(s["scheduler_threads"].default)
    lease = _number(s["lease_seconds"].default)
    progress = _number(s["progress_after_seconds"].default)
    from hardcost.bot import export, server
    from hardcost.bot.ui.content import HISTORY_MAX
    cap = f"{export.MAX_ROWS:,}"
    outbox = _number(server.OUTBOX_EVERY)
    renew = _number(leases.LEASE_SECONDS / leases.RENEW_PARTS)
    assert s["scheduler_refresh_seconds"].default == scheduler.REFRESH_EVERY
    stale = _number(scheduler.STALE_PERIODS * float(refresh) + scheduler.STALE_SLACK)
    return [
        ("README.md", f"every {refresh} s (`HARDCOST_SCHEDULER_REFRESH_SECONDS`)"),
        ("README.md", f"(`HARDCOST_LEASE_SECONDS`, {int(float(lease)) // 60} minutes)"),
        ("README.md", f"a run still going after {progress} s shows its progress"),
        ("docs/operations.md", f"up to {threads} scheduled imports at once"),
        ("docs/operations.md", f"re-reading the firms table every {refresh} seconds"),
        ("docs/operations.md", f"(`HARDCOST_IMPORT_THREADS`, {threads})"),
        ("docs/operations.md", f"(`HARDCOST_LEASE_SECONDS`, {lease} s)"),
        ("docs/operations.md", f"renewed every {renew} s"),
        ("docs/operations.md", f"({stale} s with the default {refresh} s)"),
        ("docs/operations.md", f"every {outbox} seconds"),
        ("docs/operations.md", f"at most {cap} entries"),
        ("docs/scaling.md", f"`HARDCOST_IMPORT_THREADS` threads ({threads})"),
        ("docs/scaling.md", f"(`HARDCOST_LEASE_SECONDS`, {lease} s;"),
        ("docs/commands.md", f"pause and resume, within about {refresh} seconds"),
        ("docs/commands.md", f"The new interval applies within about {refresh} seconds"),
        ("docs/commands.md", f"table every {refresh} seconds"),
        ("docs/commands.md", f"sent again every {outbox} seconds"),
        ("docs/commands.md", f"(1 to {HISTORY_MAX})"),
        ("docs/commands.md", f"takes one number from 1 to {HISTORY_MAX}."),
        ("docs/commands.md", f"One file holds at most {cap} entries."),
        ("docs/commands.md", f"export at most {cap} at a time"),
        ("docs/troubleshooting.md", f"scheduled runs resume within {refresh} seconds"),
        ("docs/troubleshooting.md", f"restarts the schedule within {refresh} seconds"),
        ("docs/troubleshooting.md", f"(it should every {refresh} s)"),
        ("docs/troubleshooting.md", f"every {outbox} seconds by `hardcost serve`"),
    ]


@pytest.mark.parametrize("doc, sentence", _quoted())
def test_numbers_quoted_in_the_docs_are_the_codes(doc: str, sentence: str) -> None:
    assert sentence in flat(read(doc)), f"{doc} should say: {sentence!r}"


WRONG = [
    ("docs/operations.md", "every 30 seconds;"),  # the scheduler's pass, formerly 30 s
    ("docs/operations.md", "up to 10 scheduled imports"),
    ("docs/troubleshooting.md", "not built yet)"),  # bills and no-customer are built
    ("docs/troubleshooting.md", "it should every 30 s"),
    ("docs/commands.md", "It does not wait for a run of the same firm"),
    ("docs/setup.md", "subscribe to the **Purchase** entity (create"),
    ("docs/setup.md", "Only purchase events are"),
    (".env.example", "(default 30); formerly"),
]


@pytest.mark.parametrize("doc, sentence", WRONG)
def test_sentences_the_code_contradicts_are_gone(doc: str, sentence: str) -> None:
    assert sentence not in flat(read(doc)), f"{doc} still says {sentence!r}"


def test_setup_subscribes_the_webhook_entities_hardcost_handles() -> None:
    from hardcost.sync import webhooks
    text = flat(read("docs/setup.md"))
    for entity in (webhooks.PURCHASE, webhooks.BILL, webhooks.BILL_PAYMENT):
        assert f"**{entity}**" in text, f"docs/setup.md does not subscribe {entity}"


def test_operations_says_slack_bot_tokens_are_encrypted() -> None:
    assert (ROOT / "sync/migrations/versions/0010_encrypt_slack_tokens.py").exists()
    text = flat(read("docs/operations.md"))
    section = text.split("## Security notes", 1)[1]
    assert "not encrypted" not in section.replace("*", ""), section[:600]
    assert re.search(r"Slack bot tokens?[^.]*encrypted", section), section[:600]


def test_commands_says_socket_mode_serves_http() -> None:
    text = flat(read("docs/commands.md")).split("### hardcost serve", 1)[1]
    assert "HTTP" in text
    for wrong in ("no HTTP", "without HTTP", "without the HTTP"):
        assert wrong not in text, wrong


# -- nothing outside the repository ------------------------------------------------------------

OUTSIDE = re.compile(r"\.\./shared|\bSPEC\b|API_FACTS")  # a spec and API notes kept elsewhere
NOT_CHECKED = {"CHANGELOG.md", "tests/test_docs_match_code.py"}  # history; this list itself


def test_nothing_cites_a_document_outside_the_repository() -> None:
    found = []
    for name in tracked_files():
        if name in NOT_CHECKED or not (ROOT / name).is_file():
            continue
        try:
            text = (ROOT / name).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{name}:{number}: {line.strip()}")
    assert not found, "cites a document outside the repository:\n" + "\n".join(found)


# -- links between the docs --------------------------------------------------------------------

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else re.match(r"#{1,6} (.+?)\s*#*$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def test_the_anchor_maker_follows_github() -> None:
    assert _anchors("# A `b` (c) — d\n## “Quoted” x\n## x\n## x\n") == {
        "a-b-c--d", "quoted-x", "x", "x-1"}


def markdown_files() -> list[str]:
    return [n for n in tracked_files() if n.endswith(".md")]


@pytest.mark.parametrize("name", markdown_files())
def test_links_lead_to_files_and_anchors_that_exist(name: str) -> None:
    source = ROOT / name
    text = source.read_text(encoding="utf-8")
    text_no_code = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    broken = []
    for target in LINK.findall(text_no_code):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        path, _, anchor = target.partition("#")
        file = (source.parent / path).resolve() if path else source
        if not file.exists():
            broken.append(f"{target}: no such file")
            continue
        if anchor and file.suffix == ".md" and anchor not in _anchors(
                file.read_text(encoding="utf-8")):
            broken.append(f"{target}: no such heading")
    assert not broken, f"{name}: " + "; ".join(broken)

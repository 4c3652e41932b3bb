"""``hardcost`` command line: db, keys, sync, audit, backup, report, firms, doctor, serve,
demo.

The composition root: the only module that wires ``sync`` (the import engine), ``bot`` (the
Slack app) and ``sandbox`` (the built-in QuickBooks, Clio and Slack of ``demo`` and
``serve --sandbox``) together."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path

from alembic.util import CommandError
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from hardcost import __version__, doctor
from hardcost.bot.digest import local_now
from hardcost.bot.server import SchemaOutOfDate, serve
from hardcost.logs import LogSettingError
from hardcost.logs import configure as configure_logging
from hardcost.progress import ProgressDisplay
from hardcost.sandbox.demo import run_demo, start_sandbox
from hardcost.sync import audit, month_report, report_chart
from hardcost.sync.audit_period import PeriodError, parse_day
from hardcost.sync.backup import BackupError, backup
from hardcost.sync.config import SettingsError, get_settings, unset_empty_variables
from hardcost.sync.crypto import (
    ENV_VAR,
    SecretDecryptError,
    SecretKeyError,
    generate_key,
    keyring_for,
    rotate_secrets,
)
from hardcost.sync.db import downgrade, history, schema_state, upgrade
from hardcost.sync.engine import DatabaseUrlError, make_engine, make_session_factory
from hardcost.sync.firms import build_importer
from hardcost.sync.http import ApiError
from hardcost.sync.importer import SHUTDOWN, FirmNotReady
from hardcost.sync.leases import Leases, RunStop
from hardcost.sync.overview import FirmOverview, firm_overviews
from hardcost.sync.report import render_summary
from hardcost.sync.slack_tables import SLACK_METADATA
from hardcost.sync.store import Base, Firm, FirmSettings, utcnow


def _cmd_db(args: argparse.Namespace) -> int:
    url = get_settings().resolved_database_url()
    upgrade(make_engine(url))
    print(f"Database is up to date ({make_engine(url).url.render_as_string()}).")
    return 0


def _cmd_db_current(args: argparse.Namespace) -> int:
    """The database's revision, and what to do when it is not the newest."""
    engine = make_engine(get_settings().resolved_database_url())
    try:
        state = schema_state(engine)
    finally:
        engine.dispose()
    if state.current is None:
        print(f"No schema yet (the newest revision is {state.head}): run `hardcost db upgrade`.")
    elif state.at_head:
        print(f"{state.current} (head)")
    else:
        print(f"{state.current} (the newest revision is {state.head}: run "
              "`hardcost db upgrade`)")
    return 0


def _cmd_db_history(args: argparse.Namespace) -> int:
    sys.stdout.write(history())
    return 0


def _cmd_db_downgrade(args: argparse.Namespace) -> int:
    engine = make_engine(get_settings().resolved_database_url())
    try:
        downgrade(engine, args.revision)
        state = schema_state(engine)
    except CommandError as exc:
        print(f"hardcost db downgrade: {_first_line(exc)} (see `hardcost db history`)",
              file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"Database is at revision {state.current or 'base (the schema is gone)'} "
          f"({engine.url.render_as_string()}).")
    return 0


def _cmd_keys_generate(args: argparse.Namespace) -> int:
    print(generate_key())
    return 0


def _cmd_keys_rotate(args: argparse.Namespace) -> int:
    engine = make_engine(get_settings().resolved_database_url())
    ring = keyring_for(engine)
    with engine.begin() as connection:
        rows = rotate_secrets(connection, Base.metadata, ring)
        rows += rotate_secrets(connection, SLACK_METADATA, ring)  # Slack workspaces' tokens
    engine.dispose()
    print(f"Re-encrypted {rows} row{'s' if rows != 1 else ''} of stored secrets with the newest "
          f"key of {ring.source}.")
    if ring.size > 1:
        print(f"Every process can now drop the older key{'s' if ring.size > 2 else ''} of "
              f"{ENV_VAR}.")
    return 0


def _cmd_sync(args: argparse.Namespace) -> int:
    config = get_settings()
    engine = make_engine(config.resolved_database_url())
    sessions = make_session_factory(engine)
    with sessions() as session:
        query = select(Firm.id).join(FirmSettings, FirmSettings.firm_id == Firm.id).where(
            Firm.active.is_(True))
        if args.firm is not None:
            query = select(Firm.id).where(Firm.id == args.firm)
        else:
            query = query.where(FirmSettings.paused.is_(False))
        firm_ids = list(session.scalars(query))
    if not firm_ids:
        print("No firm to run" + (f": there is no firm {args.firm}." if args.firm else "."),
              file=sys.stderr)
        return 1
    status = 0
    leases = Leases(engine, ttl=config.lease_seconds)
    for firm_id in firm_ids:
        # The firm's lease, as hardcost serve's runs take it: never two imports of a firm at
        # once, and dead runs are marked abandoned when it is taken over.
        with leases.hold(firm_id, "cli") as lease:
            if lease is None:
                print(f"Firm {firm_id}: an import of this firm is under way in another "
                      "process; try again when it has finished.", file=sys.stderr)
                status = 1
                continue
            try:
                importer = build_importer(sessions, firm_id, config)
                importer.on_progress = ProgressDisplay(f"Firm {firm_id}", sys.stdout)
                importer.stopping = RunStop(lease, SHUTDOWN)
                summary = importer.run(trigger="manual", dry_run=args.dry_run)
            except (FirmNotReady, ApiError) as exc:
                print(f"Firm {firm_id}: {exc}", file=sys.stderr)
                status = 1
                continue
        print(f"Firm {firm_id}: " + render_summary(summary))
        if summary.error:
            status = 1
    return status


def _cmd_audit(args: argparse.Namespace) -> int:
    """The firm's audit trail as CSV on stdout (oldest first; every day unless told)."""
    if args.start is not None and args.end is not None and args.start > args.end:
        print(f"hardcost audit: the period runs backwards: --from {args.start.isoformat()} "
              f"is after --to {args.end.isoformat()}.", file=sys.stderr)
        return 2
    engine = make_engine(get_settings().resolved_database_url())
    sessions = make_session_factory(engine)
    try:
        with sessions() as session:
            if session.get(Firm, args.firm) is None:
                print(f"hardcost audit: there is no firm {args.firm}.", file=sys.stderr)
                return 1
            audit.write_csv(audit.between(session, args.firm, args.start, args.end),
                            sys.stdout)
    finally:
        engine.dispose()
    return 0


def _cmd_backup(args: argparse.Namespace) -> int:
    """A consistent copy of the database in ``args.file`` (sync.backup); never the key."""
    try:
        made = backup(get_settings().resolved_database_url(), Path(args.file))
    except BackupError as exc:
        print(f"hardcost backup: {exc}", file=sys.stderr)
        return 1
    what = "SQLite copy" if made.kind == "sqlite" else "pg_dump archive (custom format)"
    print(f"Backed up {made.source} to {made.path}: {what}, {made.size:,} bytes.")
    print("The encryption key is not in it: keep HARDCOST_SECRET_KEY (or hardcost.key) "
          "apart from the backups.")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    """The month's hard-cost report on stdout; the chart and the CSV to files when asked."""
    config = get_settings()
    engine = make_engine(config.resolved_database_url())
    sessions = make_session_factory(engine)
    try:
        with sessions() as session:
            settings = session.get(FirmSettings, args.firm)
            if settings is None:
                print(f"hardcost report: there is no firm {args.firm}.", file=sys.stderr)
                return 1
        today = local_now(settings, utcnow()).date()
        try:
            month = month_report.parse_month(args.month, today)
        except month_report.MonthError as exc:
            print(f"hardcost report: {exc}", file=sys.stderr)
            return 2
        importer = build_importer(sessions, args.firm, config)
        report = month_report.build(
            sessions, args.firm, month, clio=importer.clio, qbo=importer.qbo, today=today,
            progress=lambda read: print(f"  read {read:,} Clio entries…", file=sys.stderr))
        print(month_report.render_text(report))
        if args.png:
            Path(args.png).write_bytes(report_chart.render_png(report))
            print(f"chart: {args.png}")
        if args.csv:
            with open(args.csv, "w", encoding="utf-8", newline="") as out:
                month_report.write_csv(report, out)
            print(f"CSV: {args.csv}")
    finally:
        engine.dispose()
    return 0


def _cmd_firms(args: argparse.Namespace) -> int:
    """Every firm, one row each; exit 1 when a connection was refused or a last run failed."""
    engine = make_engine(get_settings().resolved_database_url())
    sessions = make_session_factory(engine)
    try:
        with sessions() as session:
            firms = firm_overviews(session)
    finally:
        engine.dispose()
    troubled = any(firm.problems for firm in firms)
    if args.json:
        json.dump([firm.as_json() for firm in firms], sys.stdout, indent=2)
        print()
        return 1 if troubled else 0
    if not firms:
        print("No firm yet: a firm is made by the first /hardcost connect in Slack.")
        return 0
    rows = [("id", "name", "workspace", "channel", "quickbooks", "clio", "last run", "next run",
             "waiting", "failures")]
    rows += [(str(f.id), _cell(f.name, 30), f.slack_team_id or "-", f.slack_channel_id or "-",
              f.quickbooks.state, f.clio.state, _last_run(f), _when(f.next_run),
              str(f.waiting), str(f.open_failures)) for f in firms]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip())
    for firm in firms:
        for problem in firm.problems:
            print(f"Firm {firm.id}: {_cell(problem, 300)}")
    return 1 if troubled else 0


def _cell(text: str, limit: int) -> str:
    """One line of printable text, cut at ``limit`` characters."""
    line = "".join(ch if ch.isprintable() else " " for ch in " ".join(text.split()))
    return line if len(line) <= limit else line[:limit - 1] + "…"


def _when(value: str | datetime | None) -> str:
    """A stored UTC time as "2026-03-06 09:15 UTC"; words as they are."""
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return value
    elif value is None:
        return "-"
    else:
        when = value
    return when.strftime("%Y-%m-%d %H:%M UTC")


def _last_run(firm: FirmOverview) -> str:
    return "never" if firm.last_run_at is None else \
        f"{_when(firm.last_run_at)} {firm.last_run_status}"


FIRM_ID_MAX = 2 ** 31 - 1
"""A firm's id is a row id (a PostgreSQL integer): a larger number names no firm, and SQLite
cannot even look it up (OverflowError past 2**63)."""


def _firm_id(raw: str) -> int:
    """``--firm``: ASCII digits naming a possible firm id (1 to :data:`FIRM_ID_MAX`)."""
    text = raw.strip()
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"not a firm id: {raw[:40]!r} (the firm's number)")
    if len(text) > 10 or not 0 < int(text) <= FIRM_ID_MAX:
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise argparse.ArgumentTypeError(f"There is no firm {shown}.")
    return int(text)


def _day(raw: str) -> date:
    try:
        return parse_day(raw)
    except PeriodError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cmd_serve(args: argparse.Namespace) -> int:
    config = get_settings()
    world = None
    if args.sandbox:
        world, config = start_sandbox(config)
    try:
        return serve(config, sandbox_links=args.sandbox)
    except (SchemaOutOfDate, RuntimeError) as exc:
        print(f"hardcost serve: {exc}", file=sys.stderr)
        return 1
    finally:
        if world is not None:
            world.stop()


def _cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(database_url=args.database_url, out=sys.stdout, verbose=args.verbose)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hardcost", description="Import QuickBooks hard costs into Clio.")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log what happens (INFO; HARDCOST_LOG_LEVEL sets any level)")
    parser.add_argument("--version", action="version", version=f"hardcost {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("upgrade", help="create or migrate the schema").set_defaults(
        func=_cmd_db)
    db_commands.add_parser("current", help="the database's schema revision").set_defaults(
        func=_cmd_db_current)
    db_commands.add_parser("history", help="every schema revision, newest first").set_defaults(
        func=_cmd_db_history)
    down = db_commands.add_parser(
        "downgrade", help="take the schema back to an older revision (drops what the later "
        "migrations added; stop every server and back up first)")
    down.add_argument("revision", help="a revision of `hardcost db history`, e.g. 0020, or -1 "
                      "for one step back")
    down.set_defaults(func=_cmd_db_downgrade)

    keys = commands.add_parser("keys", help=f"the key that encrypts stored tokens ({ENV_VAR})")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    keys_commands.add_parser("generate", help=f"print a new key for {ENV_VAR}").set_defaults(
        func=_cmd_keys_generate)
    keys_commands.add_parser(
        "rotate", help=f"re-encrypt every stored secret with the first key of {ENV_VAR} "
        "(list the old key second, comma-separated)").set_defaults(func=_cmd_keys_rotate)

    sync = commands.add_parser("sync", help="run one import now and print its summary "
                               "(progress on stderr)")
    sync.add_argument("--firm", type=_firm_id, help="the firm's id (default: every active firm)")
    sync.add_argument("--dry-run", action="store_true",
                      help="show what would be imported; write nothing")
    sync.set_defaults(func=_cmd_sync)

    trail = commands.add_parser(
        "audit", help="a firm's audit trail (imports, updates, deletions, choices, setting "
        "changes) as CSV on stdout")
    trail.add_argument("--firm", type=_firm_id, required=True, help="the firm's id")
    trail.add_argument("--from", dest="start", type=_day, metavar="YYYY-MM-DD",
                       help="from this day (UTC; default: the first entry)")
    trail.add_argument("--to", dest="end", type=_day, metavar="YYYY-MM-DD",
                       help="to this day, included (UTC; default: the last entry)")
    trail.add_argument("--csv", action="store_true", required=True,
                       help="CSV (the only format): a header, then one row per entry")
    trail.set_defaults(func=_cmd_audit)

    saved = commands.add_parser(
        "backup", help="a consistent copy of the database while hardcost serve runs (SQLite: "
        "a copy of the file; PostgreSQL: pg_dump's custom format)")
    saved.add_argument("file", help="the new file (an existing one is never overwritten)")
    saved.set_defaults(func=_cmd_backup)

    report = commands.add_parser(
        "report", help="a firm's monthly hard-cost report (billed, draft, unbilled, ageing, "
        "waiting, failures, reconciliation) read from Clio now")
    report.add_argument("--firm", type=_firm_id, required=True, help="the firm's id")
    report.add_argument("--month", metavar="YYYY-MM", help="the month (default: last month)")
    report.add_argument("--png", metavar="FILE", help="write the chart (PNG) here")
    report.add_argument("--csv", metavar="FILE", help="write one row per entry (CSV) here")
    report.set_defaults(func=_cmd_report)

    firms = commands.add_parser(
        "firms", help="every firm: Slack channel, QuickBooks and Clio connections, last and "
        "next run, waiting expenses, open failures (exit 1 when a connection was refused or a "
        "last run failed)")
    firms.add_argument("--json", action="store_true", help="as JSON, a list of objects")
    firms.set_defaults(func=_cmd_firms)

    commands.add_parser(
        "doctor", help="check the configuration, the database, Slack, each firm's QuickBooks "
        "and Clio, and PUBLIC_URL: one line each, exit 1 when any fails").set_defaults(
        func=lambda args: doctor.run(sys.stdout))

    serve = commands.add_parser(
        "serve", help="the Slack app: /slack/events over HTTP (PORT), or Socket Mode with "
        "SLACK_APP_TOKEN")
    serve.add_argument("--sandbox", action="store_true",
                       help="use the built-in sandbox QuickBooks and Clio (the demo firm's "
                       "books) instead of real ones: try hardcost in a real Slack first")
    serve.set_defaults(func=_cmd_serve)

    demo = commands.add_parser(
        "demo", help="the whole flow against the built-in sandbox QuickBooks and Clio")
    demo.add_argument("--database-url", help="keep the demo's data here (default: a "
                      "temporary SQLite file)")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    unset_empty_variables()  # NAME= in an env file means unset, for us and for Slack's Bolt
    # serve is a service: its INFO lines are what operators read. Other commands print what
    # they did; their logs are for -v.
    default_level = "INFO" if args.verbose or args.command == "serve" else "WARNING"
    try:
        configure_logging(os.environ.get("HARDCOST_LOG_LEVEL") or None,
                          os.environ.get("HARDCOST_LOG_FORMAT") or None,
                          default_level=default_level)
    except LogSettingError as exc:
        print(f"hardcost: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except (SecretKeyError, SecretDecryptError, SettingsError, DatabaseUrlError) as exc:
        print("\n".join(f"hardcost: {line}" for line in str(exc).splitlines()),
              file=sys.stderr)
        return 1
    except OperationalError as exc:  # the database is down, unreachable or refuses us
        print(f"hardcost: the database of DATABASE_URL ({_shown_database()}) cannot be used: "
              f"{_first_line(exc.orig or exc)}\nhardcost: check that it is running and that "
              "DATABASE_URL is right.", file=sys.stderr)
        return 1


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _shown_database() -> str:
    """DATABASE_URL without its password."""
    try:
        return make_url(get_settings().resolved_database_url()).render_as_string(
            hide_password=True)
    except Exception:  # noqa: BLE001 - only a label for the message
        return "unreadable"


if __name__ == "__main__":
    sys.exit(main())

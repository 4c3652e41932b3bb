"""``/hardcost status``, ``/hardcost help`` and the answer to a bad command (pure builders,
see ``bot.ui.blocks``)."""

from __future__ import annotations

from hardcost.bot.ui.blocks import _context, _fallback, _fields, _header, _section
from hardcost.bot.ui.content import Message, StatusReport
from hardcost.bot.ui.text import channel as channel_ref
from hardcost.bot.ui.text import escape, fit, mention, name, one_line, plural

COMMANDS: tuple[tuple[str, str], ...] = (
    ("help", "this list"),
    ("status", "connections, last and next run, waiting expenses, open failures"),
    ("run", "start a run now; the summary follows in the channel"),
    ("pending", "expenses waiting for a contact or matter choice, with their buttons"),
    ("failures", "open sync failures, each with Retry"),
    ("connect quickbooks|clio [us|ca|eu|au]",
     "a link to connect QuickBooks, or Clio in its region (us if not given)"),
    ("disconnect quickbooks|clio", "revoke access and forget the tokens"),
    ("settings", "open the settings form"),
    ("set <key> <value>", "change one setting (keys below)"),
    ("pause", "stop scheduled runs"),
    ("resume", "restart scheduled runs"),
    ("check", "verify QuickBooks, Clio and Slack prerequisites"),
    ("history [purchase id | client name | last N]",
     "the audit trail's latest entries: imports, updates, deletions, choices (who, which "
     "matter), setting changes"),
    ("export [from] [to]", "the audit trail from one day to another (YYYY-MM-DD; this month "
                           "if none) as a CSV file"),
    ("rules [page N]", "the matter rules staff made (“Always do this for a payee → a "
                       "client”): who made each, when, how often used, with Remove"),
    ("report [YYYY-MM]", "the month's hard costs (last month if none): billed, on draft bills, "
                         "unbilled, ageing, what is not in Clio yet; a chart and a CSV"),
)
SET_KEYS: tuple[tuple[str, str], ...] = (
    ("channel #name", "where summaries, alerts and prompts are posted"),
    ("start-date YYYY-MM-DD", "import purchases dated on or after this day"),
    ("account <QBO account name or id>",
     "the QuickBooks expense account whose lines are client costs; "
     "`account +name` adds one, `account -name` removes one"),
    ("category <Clio category name or id> [for <QBO account>]",
     "the Clio hard-cost category for new entries; with `for`, for one import account's"),
    ("utbms <code>|off [for <QBO account>]",
     "the UTBMS expense code (E101, E112, E124, …) new entries carry (LEDES billing); "
     "with `for`, one import account's"),
    ("not-billable import|skip", "lines QuickBooks marks not billable: imported as "
                                 "non-billable entries, or skipped"),
    ("user <Clio user name or id | owner>", "the Clio user entries are recorded under"),
    ("schedule <minutes>", "how often scheduled runs happen"),
    ("split-lines on|off", "one Clio entry per QuickBooks line, instead of per customer"),
    ("item-lines on|off", "also import Item details lines whose item's expense account is an "
                          "import account"),
    ("deletions delete|alert", "when a purchase is deleted or voided in QuickBooks: delete the "
                               "unbilled Clio entry, or only tell the channel"),
    ("bills off|on-entry|on-payment", "vendor Bills: not imported (off), imported as entered, "
                                      "or once fully paid, dated the payment"),
    ("no-customer ask|skip", "import-account lines with no customer in QuickBooks: ask in "
                             "Slack which matter (search over all open and pending matters), "
                             "or skip them"),
    ("approvers @a @b | anyone", "who may change settings and answer prompts, besides "
                                 "workspace admins"),
    ("prompts each|digest", "one prompt per waiting expense (each), or one message a day "
                            "listing what waits, by client (digest)"),
    ("digest-hour <0-23>", "when the daily digest goes out, in the firm's time zone"),
    ("timezone <IANA name>", "the firm's time zone, like America/New_York"),
    ("report monthly|off", "the month's hard-cost report in the channel on the first working "
                           "day of each month, at the digest hour (monthly), or only on demand"),
    ("receipts on|off", "files attached to an imported expense in QuickBooks are filed in the "
                        "documents of each matter its entries went to (on), or not (off)"),
)


def help_message() -> Message:
    """Every ``/hardcost`` subcommand and every ``set`` key, one line each."""
    commands = "\n".join(f"• `/hardcost {escape(c)}` — {d}" for c, d in COMMANDS)
    keys = "\n".join(f"• `{escape(k)}` — {d}" for k, d in SET_KEYS)
    blocks = [
        _section(f"*hardcost commands*\n{commands}"),
        _section(f"*Settings for* `/hardcost set &lt;key&gt; &lt;value&gt;`\n{keys}"),
        _context("Settings changes need a workspace admin or one of the firm's approvers."),
    ]
    names = ", ".join(c.split(" ")[0] for c, _ in COMMANDS)
    return Message(text=f"hardcost commands: {names}", blocks=blocks)


def usage_error(problem: str, usage: str) -> Message:
    """A bad command: what is wrong, then how to write it."""
    problem_text = fit(escape(one_line(problem)), 1500)
    usage_text = fit(escape(one_line(usage).replace("`", "'")), 1000)
    blocks = [_section(f":warning: {problem_text}\nUsage: `{usage_text}`"),
              _context("`/hardcost help` lists every command.")]
    return Message(text=_fallback(f"{problem_text} Usage: {usage_text}"), blocks=blocks)


BILLS_WORDS = {"on-entry": "as entered", "on-payment": "once fully paid"}


def _waiting_count(status: StatusReport) -> str:
    """"2" or "2 (1 with no client)"."""
    text = f"{status.waiting - status.waiting_for_payment:,}"
    if status.untagged_waiting:
        text += f" ({status.untagged_waiting:,} with no client)"
    return text


def coding_lines(status: StatusReport) -> str:
    """"Category and UTBMS code": each import account with its own, then the rest; empty
    when the firm uses one category, no code and imports not-billable lines."""
    if not status.codings and status.default_code is None and status.not_billable == "import":
        return ""
    rows = []
    for account, category, code in status.codings[:20]:
        parts = [name(category, 200) if category else "default category",
                 f"UTBMS {name(code, 20)}" if code else "no code of its own"]
        rows.append(f"• {name(account, 200)} — {' · '.join(parts)}")
    default = f"UTBMS {name(status.default_code, 20)}" if status.default_code else "no UTBMS code"
    rows.append(f"• {'other accounts' if status.codings else 'every account'} — default "
                f"category · {default}")
    billable = ("skipped" if status.not_billable == "skip"
                else "imported as non-billable entries")
    rows.append(f"Lines marked not billable in QuickBooks are {billable}; lines already billed "
                "there are not imported.")
    return "*Category and UTBMS code*\n" + "\n".join(rows)


def check_coding_lines(problems: list[tuple[bool, str]]) -> str:
    """``/hardcost check``'s lines on the category and UTBMS code mappings: ✅ or ❌ and what
    to fix (escaped)."""
    return "\n".join(("✅ " if ok else "❌ ") + escape(text) for ok, text in problems)


def status_blocks(status: StatusReport) -> Message:
    """``/hardcost status``: connections, channel, schedule, last/next run, waiting, failures,
    and anything that needs attention."""
    chan = channel_ref(status.channel_id) or "_not chosen_"
    if status.paused:
        schedule = ":double_vertical_bar: paused (`/hardcost resume` restarts it)"
        next_run = name(status.next_run, 300) if status.next_run else "paused"
    else:
        schedule = f"every {plural(status.schedule_minutes, 'minute')}"
        next_run = name(status.next_run, 300) if status.next_run else "not scheduled"
    fields = [
        f"*QuickBooks*\n{name(status.quickbooks, 300)}",
        f"*Clio*\n{name(status.clio, 300)}",
        f"*Channel*\n{chan}",
        f"*Schedule*\n{schedule}",
        f"*Last run*\n{name(status.last_run, 300) if status.last_run else 'never'}",
        f"*Next run*\n{next_run}",
        f"*Waiting for a choice*\n{_waiting_count(status)}",
        f"*Open failures*\n{status.open_failures:,}",
    ]
    fields.append("*Receipts*\n" + ("filed on each entry's matter in Clio" if status.receipts
                                    else "not filed (`/hardcost set receipts on`)"))
    if status.bills != "off":
        fields.append(f"*Vendor Bills*\nimported {BILLS_WORDS.get(status.bills, 'off')}; "
                      f"{status.waiting_for_payment:,} waiting for payment")
    blocks = [_header(f"hardcost — {one_line(status.firm_name)}"), _fields(fields)]
    coding = coding_lines(status)
    if coding:
        blocks.append(_section(coding))
    if status.live:
        line = f":hourglass_flowing_sand: *Import under way:* {name(status.live, 500)}"
        if status.stopping_by:
            line += f"\n:octagonal_sign: Stopping, as {mention(status.stopping_by)} asked."
        blocks.append(_section(line))
    if not status.webhooks:
        blocks.append(_context(
            "QuickBooks webhooks are not set up on this server (no `QBO_WEBHOOK_VERIFIER`): "
            "changes in QuickBooks come in with the scheduled runs only"
            + ("." if status.paused else f", every {plural(status.schedule_minutes, 'minute')}.")
            + " `/hardcost run` imports at once."))
    if status.problems:
        lines = "\n".join(f"• {name(p, 300)}" for p in status.problems[:20])
        more = len(status.problems) - 20
        if more > 0:
            lines += f"\n_…and {more} more_"
        blocks.append(_section(f":warning: *Needs attention*\n{lines}"))
    text = (f"hardcost status for {name(status.firm_name)}: QuickBooks "
            f"{name(status.quickbooks, 200)}; Clio {name(status.clio, 200)}; "
            f"{_waiting_count(status)} waiting; "
            f"{plural(status.open_failures, 'open failure')}")
    if status.paused:
        text += "; paused"
    if status.live:
        text += f"; import under way: {name(status.live, 500)}"
    return Message(text=_fallback(text), blocks=blocks)

"""Notices: a one-section message, the connect link, and the reconnect and expiry warnings
for QuickBooks and Clio (pure builders, see ``bot.ui.blocks``)."""

from __future__ import annotations

from datetime import datetime

from slack_sdk.models.blocks import ActionsBlock, ButtonElement, LinkButtonElement

from hardcost.bot.ui.blocks import SECTION_TEXT, _fallback, _section
from hardcost.bot.ui.content import ACTION_OPEN_QBO, ACTION_RECONNECT, Message
from hardcost.bot.ui.text import Mrkdwn, as_utc, escape, fit, mrkdwn


def notice(text: str) -> Message:
    """A one-section message ("QuickBooks connected", ...). Plain ``text`` is shown as it is
    written: its ``&``, ``<`` and ``>`` are escaped, so a link, mention or ``<!here>`` that came
    from QuickBooks, Clio or a person is shown, never live. Mentions and links the code means
    come as ``Mrkdwn`` (``md(...)``, ``mention(...)``) and are kept."""
    body = fit(text if isinstance(text, Mrkdwn) else escape(text),
               SECTION_TEXT) or "(nothing to say)"
    return Message(text=_fallback(body), blocks=[_section(body)])


def connect_link(service: str, url: str, *, expires_minutes: int = 10) -> Message:
    """The ephemeral answer to ``/hardcost connect``: a button that opens the consent screen."""
    text = (f"Connect *{escape(service)}*: the button opens {escape(service)}'s sign-in, "
            f"where you approve hardcost. The link works once, for {expires_minutes} minutes.")
    blocks = [
        _section(text),
        ActionsBlock(elements=[LinkButtonElement(text=f"Connect {service}"[:75], url=url,
                                                 action_id=ACTION_OPEN_QBO)]).to_dict(),
    ]
    return Message(text=_fallback(f"Connect {escape(service)}: {escape(url)}"), blocks=blocks)


def reconnect_notice(service: str, provider: str, reason: str | None) -> Message:
    """Posted once when QuickBooks or Clio refuses hardcost's connection for good."""
    why = f" ({mrkdwn(reason, 300)})" if reason else ""
    text = (f":electric_plug: *Reconnect {escape(service)}.* {escape(service)} no longer "
            f"accepts hardcost's connection{why}. Imports are paused; nothing is lost — once "
            "reconnected, hardcost picks up where it stopped.")
    blocks = [_section(text), ActionsBlock(elements=[ButtonElement(
        text=f"Reconnect {service}"[:75], action_id=ACTION_RECONNECT, value=provider,
        style="primary")]).to_dict()]
    return Message(text=_fallback(f"Reconnect {escape(service)}: imports are paused"),
                   blocks=blocks)


def expiry_warning(service: str, provider: str, expires: datetime) -> Message:
    """Posted once, 30 days before QuickBooks' 5-year limit on a connection."""
    when = as_utc(expires).strftime("%B %-d, %Y")
    text = (f":hourglass_flowing_sand: {escape(service)}'s connection to hardcost ends on "
            f"*{when}* (QuickBooks limits a connection to five years). Reconnect before then "
            "to keep imports running.")
    blocks = [_section(text), ActionsBlock(elements=[ButtonElement(
        text=f"Reconnect {service}"[:75], action_id=ACTION_RECONNECT,
        value=provider)]).to_dict()]
    return Message(text=_fallback(f"{escape(service)} connection ends on {when}"),
                   blocks=blocks)

"""Answering a click that came without a ``response_url``.

Slack sends a ``response_url`` with every click on a message and with every slash command; a
forged or replayed payload may come without one, and Bolt's ``respond()`` then raises after the
ack: the clicker hears nothing and the listener dies. :func:`fallback_respond` (a middleware)
gives such a request a ``respond()`` that answers the clicker with ``chat.postEphemeral`` in the
channel the payload names, or drops the answer with a log line when it names none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from slack_bolt import BoltContext, BoltResponse, Respond
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookResponse

log = logging.getLogger(__name__)


def _channel_and_user(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """The channel and person a request came from, as its payload names them."""
    container = body.get("container")
    channel = body.get("channel")
    user = body.get("user")
    found = (container.get("channel_id") if isinstance(container, dict) else None) or \
        (channel.get("id") if isinstance(channel, dict) else None) or body.get("channel_id")
    who = (user.get("id") if isinstance(user, dict) else None) or body.get("user_id")
    return (found if isinstance(found, str) and found else None,
            who if isinstance(who, str) and who else None)


class EphemeralRespond(Respond):
    """``respond()`` without a response URL: an ephemeral message to the person in the
    channel (what a response URL's answer would show them), or nothing, logged."""

    def __init__(self, client: WebClient, channel: str | None, user: str | None,
                 kind: str) -> None:
        super().__init__(response_url=None)
        self.client, self.channel, self.user, self.kind = client, channel, user, kind

    def __call__(self, text: str | dict[str, Any] = "",
                 blocks: Sequence[Any] | None = None, *args: Any,
                 delete_original: bool | None = None, **kwargs: Any) -> WebhookResponse:
        done = WebhookResponse(url="", status_code=200, body="", headers={})
        if delete_original:
            return done  # nothing of ours to delete
        if isinstance(text, dict):  # respond({...}): the whole message
            whole = text
            text, blocks = str(whole.get("text") or ""), whole.get("blocks")
        if self.channel is None or self.user is None:
            log.warning("a %s came with no response_url and no channel: its answer is dropped",
                        self.kind)
            return done
        try:
            self.client.chat_postEphemeral(channel=self.channel, user=self.user, text=text,
                                           blocks=list(blocks) if blocks else None)
        except SlackApiError as exc:
            log.warning("a %s came with no response_url; its answer could not be posted in "
                        "%s: %s", self.kind, self.channel, exc.response.get("error"))
            return WebhookResponse(url="", status_code=400, body=str(exc), headers={})
        return done


def fallback_respond(context: BoltContext, body: dict[str, Any],
                     next: Callable[[], BoltResponse]) -> BoltResponse:  # noqa: A002 (Bolt's name)
    """A Bolt middleware: a request without ``response_url`` gets :class:`EphemeralRespond`."""
    if not context.response_url and isinstance(body, dict) and \
            (body.get("type") != "event_callback"):
        channel, user = _channel_and_user(body)
        context["respond"] = EphemeralRespond(context.client, channel, user,
                                              str(body.get("type") or "command"))
    return next()

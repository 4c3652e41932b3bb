"""``/oauth/quickbooks/callback`` and ``/oauth/clio/callback``: where the browser comes back.

``client`` is the one Slack client or, in multi-workspace mode, firm id → its workspace's client
(``bot.install.slack_clients``): the channel notice goes out with the firm's own token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.wrappers import Request, Response

from hardcost.bot.context import BotContext
from hardcost.bot.outbox import ClientFor
from hardcost.bot.ui.notices import notice
from hardcost.bot.ui.pages import oauth_page
from hardcost.bot.ui.text import md, mention
from hardcost.sync.oauth import finish
from hardcost.sync.store import PROVIDER_NAMES


def oauth_callback(ctx: BotContext, client: ClientFor,
                   provider: str) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        args = Request(environ).args
        outcome = finish(ctx.sessions, ctx.config, provider, state=args.get("state"),
                         code=args.get("code"), error=args.get("error"),
                         realm_id=args.get("realmId"), now=ctx.clock())
        if outcome.ok and outcome.firm_id is not None:
            name = PROVIDER_NAMES[provider]
            ctx.notifier(client).tell(outcome.firm_id, notice(
                md(f"{name} connected by ", mention(outcome.slack_user_id), ".")
                if outcome.slack_user_id else f"{name} connected."))
        page = oauth_page(outcome.title, outcome.message, ok=outcome.ok)
        response = Response(page, status=outcome.status, content_type="text/html; charset=utf-8",
                            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
        return response(environ, start_response)

    return app


def oauth_routes(ctx: BotContext,
                 client: ClientFor) -> dict[str, Callable[..., Iterable[bytes]]]:
    return {f"/oauth/{provider}/callback": oauth_callback(ctx, client, provider)
            for provider in PROVIDER_NAMES}

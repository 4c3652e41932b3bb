"""``POST /webhooks/quickbooks`` and the worker that imports what it stored.

The route answers within Intuit's 3 s: it checks the signature before reading anything, stores
the purchase events (``sync.webhooks``) and commits, then says 200. No QuickBooks or Clio call
happens in the request. :class:`WebhookWorker` (in ``hardcost serve``) runs
``sync.webhooks.process_pending`` every few seconds and tells the firm's channel about each run
like any other run.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from slack_sdk import WebClient
from werkzeug.wrappers import Request, Response

from hardcost.bot.context import BotContext
from hardcost.bot.outbox import ClientFor
from hardcost.sync.summary import RunSummary
from hardcost.sync.webhooks import (
    MalformedDelivery,
    RunGuard,
    parse_delivery,
    process_pending,
    record_changes,
    signature_valid,
)

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/quickbooks"
SIGNATURE_HEADER = "intuit-signature"
CONTENT_TYPES = frozenset({"application/json", "application/cloudevents+json",
                           "application/cloudevents-batch+json"})
MAX_BODY = 8 * 1024 * 1024  # a bulk edit: 9,000 entities came as 927 KB; bounded all the same
WORKER_EVERY = 1.0  # seconds between passes: one indexed query when there is nothing to do


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def quickbooks_webhook(ctx: BotContext) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return _answer(ctx, Request(environ))(environ, start_response)

    return app


def _answer(ctx: BotContext, request: Request) -> Response:
    if request.method != "POST":
        return _json(405, {"error": "POST only"})
    verifier = ctx.config.qbo_webhook_verifier
    if not verifier:
        log.error("webhook: QBO_WEBHOOK_VERIFIER is not set, so QuickBooks deliveries cannot be "
                  "verified; answering 503 (Intuit retries)")
        return _json(503, {"error": "QBO_WEBHOOK_VERIFIER is not set on this server: QuickBooks "
                                    "webhooks cannot be verified"})
    if (request.content_length or 0) > MAX_BODY:
        return _json(413, {"error": "body too large"})
    body = request.get_data(cache=False)
    if not signature_valid(verifier, body, request.headers.get(SIGNATURE_HEADER)):
        log.warning("webhook: missing or wrong %s from %s; refused", SIGNATURE_HEADER,
                    request.remote_addr)
        return _json(401, {"error": "bad signature"})
    if request.mimetype not in CONTENT_TYPES:
        log.warning("webhook: content type %r refused", request.mimetype)
        return _json(415, {"error": "expected application/json or "
                                    "application/cloudevents+json"})
    try:
        changes = parse_delivery(body)
    except MalformedDelivery as exc:
        log.warning("webhook: malformed delivery refused: %s", exc)
        return _json(400, {"error": f"malformed delivery: {exc}"})
    recorded = record_changes(ctx.sessions, changes, ctx.clock())
    log.info("webhook: %d stored, %d duplicates, %d ignored", recorded.stored,
             recorded.duplicates, recorded.ignored)
    return _json(200, {"ok": True, "stored": recorded.stored,
                       "duplicates": recorded.duplicates, "ignored": recorded.ignored})


def webhook_routes(ctx: BotContext) -> dict[str, Callable[..., Iterable[bytes]]]:
    return {WEBHOOK_PATH: quickbooks_webhook(ctx)}


def notify_after_run(ctx: BotContext, clients: ClientFor) -> Callable[[int, RunSummary], None]:
    """Tell the firm's channel about a webhook run, as other runs do (``Notifier.after_run``);
    a firm whose workspace has no client now (uninstalled) is skipped."""
    def after_run(firm_id: int, summary: RunSummary) -> None:
        client = clients if isinstance(clients, WebClient) else clients(firm_id)
        if client is None:
            log.info("webhook run for firm %s: no Slack client, summary not posted", firm_id)
            return
        ctx.notifier(client).after_run(firm_id, summary)

    return after_run


class WebhookWorker(threading.Thread):
    """Imports stored webhook events every ``every`` seconds until stopped."""

    def __init__(self, ctx: BotContext, clients: ClientFor | None,
                 every: float = WORKER_EVERY, *, guard: RunGuard | None = None) -> None:
        super().__init__(name="webhooks", daemon=True)
        self.ctx = ctx
        self.every = every
        self.after_run = notify_after_run(ctx, clients) if clients is not None else None
        self.guard = guard  # BotContext.claim_run: not beside a Slack or scheduled run
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            self.run_once()

    def run_once(self) -> None:
        try:
            process_pending(self.ctx.sessions, self.ctx.importer, after_run=self.after_run,
                            guard=self.guard, clock=self.ctx.clock)
        except Exception:  # noqa: BLE001 - the worker must outlive any one failure
            log.exception("webhook processing failed; will try again")

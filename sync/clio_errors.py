"""Clio's error answers as hardcost's failure classes (``sync/http.py``): which status and
error type means reconnect, a setting to change in Clio, a record someone changed, a rejected
entry or a refused upload (docs/operations.md says what a person does about each)."""

from __future__ import annotations

import logging
from typing import Any

import requests

from hardcost.sync.http import (
    ApiError,
    ConfigError,
    NotFound,
    ReconnectRequired,
    RequestRejected,
    ServiceDown,
    Throttled,
    parse_json,
)
from hardcost.sync.store import FailureKind

log = logging.getLogger(__name__)

SERVICE = "Clio"


def decode_error(response: requests.Response) -> ApiError:
    status = response.status_code
    request_id = response.headers.get("X-Request-Id")
    message: str | None = None
    error_type: str | None = None
    try:
        body = parse_json(response)
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message = error.get("message")
            error_type = error.get("type")
        elif isinstance(error, str):  # OAuth shape
            error_type = error
            message = body.get("error_description") or error
    kwargs: dict[str, Any] = dict(status=status, code=error_type, detail=message,
                                  request_id=request_id)
    log.warning("Clio error %s %s: %s", status, error_type, message)
    if status == 401:
        return ReconnectRequired(SERVICE, "Clio refused our sign-in; reconnect Clio.", **kwargs)
    if status == 403:
        return ConfigError(SERVICE, "Clio says the connected user may not do this; reconnect "
                           "Clio as a user with access to all matters.", **kwargs)
    if status == 410:
        return ConfigError(SERVICE, "Clio no longer accepts this API version; hardcost needs "
                           "an update.", **kwargs)
    if status == 429:
        return Throttled(SERVICE, "Clio is limiting requests; the next run will try again.",
                         **kwargs)
    if status >= 500:
        return ServiceDown(SERVICE, "Clio had an internal error.", **kwargs)
    if status == 404:
        return NotFound(SERVICE, message or "Clio could not find that record.", **kwargs)
    if status == 412:
        return PreconditionFailed(SERVICE, "The Clio entry changed since hardcost last read it.",
                                  **kwargs)
    if status == 422 and message and "utbms" in message.lower():
        return UtbmsRefused(SERVICE, f"Clio wants a UTBMS expense code: {message}", **kwargs)
    if status == 422 and message and "hard cost" in message.lower():
        return HardCostsDisabled(SERVICE, "Hard costs are not enabled in Clio (Settings → "
                                 "Billing → enable recording of soft and hard costs).", **kwargs)
    return RequestRejected(SERVICE, f"Clio rejected the entry: {message or status}", **kwargs)


class HardCostsDisabled(ConfigError):
    pass


class UtbmsRefused(RequestRejected):
    """422 over the entry's UTBMS expense code (none on a LEDES matter, or one Clio no longer
    takes): the firm must set a code for the account. A configuration failure of that entry
    alone: other entries are still written."""

    kind = FailureKind.CONFIG


class PreconditionFailed(RequestRejected):
    """412: the entry's etag is not the one sent in ``If-Match`` (someone changed it)."""


class DocumentsForbidden(ConfigError):
    """403 on ``/documents``: the Clio connection lacks the documents permission."""


class UploadRefused(RequestRejected):
    """The document storage refused the PUT (``status``; S3's error code in ``code`` and the
    message), or Clio would not complete the document because of its upload."""


class UploadNotFound(UploadRefused):
    """``PATCH fully_uploaded`` answered ``UploadNotFoundError``: no bytes reached the
    ``put_url`` (upload again, into a new version)."""

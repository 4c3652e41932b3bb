"""The S3-like file storage behind the sandbox Clio's documents.

Clio answers a new document (or version) with a ``put_url`` (a pre-signed S3 URL that lasts
10 minutes) and the ``put_headers`` the upload must carry; the bytes go there, not to Clio's
API. This storage enforces what S3 does with such a URL:

- exactly the signed headers (``put_headers``) with their values: another value → 403
  ``SignatureDoesNotMatch``; an ``x-amz-*`` header that was not signed → 403 ``AccessDenied``;
- a ``Content-Length`` (411 ``MissingContentLength`` without one); a chunked body
  (``Transfer-Encoding: chunked``) → 501 ``NotImplemented``;
- no ``Authorization`` header (the URL is the credential) → 400 ``InvalidArgument``;
- the URL's expiry on the sandbox clock → 403 ``AccessDenied`` ("Request has expired").

The body is read 64 KiB at a time into a SHA-256 (and MD5, S3's ``ETag``), so a 200 MB upload
never sits in memory; only files up to :data:`SMALL_FILE` keep their bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote
from xml.sax.saxutils import escape

from werkzeug.wrappers import Request, Response

from hardcost.sandbox.clock import SandboxClock

PUT_URL_SECONDS = 600
"""A ``put_url`` works for 10 minutes (Clio's document: "It expires in 10 minutes")."""
STORAGE_PREFIX = "/storage/"
SMALL_FILE = 1 << 20
"""Uploads up to this many bytes keep their bytes (``StoredUpload.data``) for tests to read."""
READ_CHUNK = 64 * 1024
DRAIN_LIMIT = 256 << 20
"""A refused upload's body is read and dropped up to this size before answering, so the
client sees the answer rather than a connection reset."""
_PATH = re.compile(r"^/storage/uploads/document_version/file/(?P<uuid>[0-9a-f-]{36})/.+$")
AMZ_DATE = "%Y%m%dT%H%M%SZ"


@dataclass
class StoredUpload:
    """One document version's upload slot (by its ``uuid``) and what arrived there."""

    uuid: str
    put_headers: list[tuple[str, str]]
    expires: float
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None
    data: bytes | None = None
    puts: int = 0
    """How many PUTs stored bytes here (a later one replaces the earlier ones)."""


class Storage:
    """Upload slots and what was uploaded, keyed by document version ``uuid``."""

    def __init__(self, clock: SandboxClock) -> None:
        self.clock = clock
        self.put_url_seconds = PUT_URL_SECONDS
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._uploads: dict[str, StoredUpload] = {}

    def issue(self, base_url: str, uuid: str, filename: str, content_type: str
              ) -> tuple[str, list[dict[str, str]]]:
        """A new slot for ``uuid``: (its ``put_url``, its ``put_headers`` as Clio lists them)."""
        now = self.clock.now()
        stamp = now.strftime(AMZ_DATE)
        headers = [("x-amz-server-side-encryption", "AES256"), ("Content-Type", content_type)]
        signed = ";".join(sorted(["host", *(name.lower() for name, _ in headers)]))
        signature = self._sign(uuid, stamp, self.put_url_seconds)
        url = (f"{base_url.rstrip('/')}/storage/uploads/document_version/file/{uuid}/"
               f"{quote(filename or 'file', safe='')}?X-Amz-Expires={self.put_url_seconds}"
               f"&X-Amz-Date={stamp}&X-Amz-Algorithm=AWS4-HMAC-SHA256"
               f"&X-Amz-SignedHeaders={quote(signed, safe='')}&X-Amz-Signature={signature}")
        with self._lock:
            self._uploads[uuid] = StoredUpload(uuid, headers,
                                               now.timestamp() + self.put_url_seconds)
        return url, [{"name": name, "value": value} for name, value in headers]

    def upload(self, uuid: str) -> StoredUpload | None:
        with self._lock:
            return self._uploads.get(uuid)

    def uploaded(self, uuid: str) -> bool:
        upload = self.upload(uuid)
        return upload is not None and upload.sha256 is not None

    def _sign(self, uuid: str, stamp: str, seconds: int) -> str:
        message = f"{uuid}\n{stamp}\n{seconds}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    # -- the PUT ------------------------------------------------------------------------------

    def put(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            drain(request)
            return refusal
        match = _PATH.match(request.path)
        assert match is not None  # _refusal checked it
        upload = self.upload(match.group("uuid"))
        assert upload is not None
        length = int(request.headers["Content-Length"])
        sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
        kept = bytearray() if length <= SMALL_FILE else None
        received = 0
        stream = request.stream
        while received < length:
            chunk = stream.read(min(READ_CHUNK, length - received))
            if not chunk:
                break
            received += len(chunk)
            sha256.update(chunk)
            md5.update(chunk)
            if kept is not None:
                kept += chunk
        if received != length:
            return s3_error(400, "IncompleteBody", "You did not provide the number of bytes "
                            "specified by the Content-Length HTTP header")
        with self._lock:
            upload.sha256, upload.md5, upload.size = sha256.hexdigest(), md5.hexdigest(), length
            upload.data = bytes(kept) if kept is not None else None
            upload.puts += 1
        return Response(b"", status=200, headers={"ETag": f'"{upload.md5}"'})

    def _refusal(self, request: Request) -> Response | None:
        headers = request.headers
        if request.method != "PUT":
            return s3_error(405, "MethodNotAllowed", "The specified method is not allowed "
                            "against this resource.")
        if "Authorization" in headers:
            return s3_error(400, "InvalidArgument", "Only one auth mechanism allowed; only the "
                            "X-Amz-Algorithm query parameter, Signature query string parameter "
                            "or the Authorization header should be specified")
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            return s3_error(501, "NotImplemented", "A header you provided implies "
                            "functionality that is not implemented (Transfer-Encoding)")
        if not headers.get("Content-Length", "").isdigit():
            return s3_error(411, "MissingContentLength", "You must provide the Content-Length "
                            "HTTP header.")
        match = _PATH.match(request.path)
        args = request.args
        stamp = args.get("X-Amz-Date", "")
        seconds = args.get("X-Amz-Expires", "")
        upload = self.upload(match.group("uuid")) if match else None
        if upload is None or not seconds.isdigit() or not hmac.compare_digest(
                self._sign(upload.uuid, stamp, int(seconds)), args.get("X-Amz-Signature", "")):
            return s3_error(403, "SignatureDoesNotMatch", "The request signature we "
                            "calculated does not match the signature you provided.")
        issued = datetime.strptime(stamp, AMZ_DATE).replace(tzinfo=UTC).timestamp()
        if self.clock.timestamp() >= issued + int(seconds):
            return s3_error(403, "AccessDenied", "Request has expired")
        for name, value in upload.put_headers:
            if headers.get(name) != value:
                return s3_error(403, "SignatureDoesNotMatch", "The request signature we "
                                f"calculated does not match the signature you provided "
                                f"({name}).")
        signed = {name.lower() for name, _ in upload.put_headers}
        unsigned = sorted(name for name, _ in headers.items()
                          if name.lower().startswith("x-amz-") and name.lower() not in signed)
        if unsigned:
            return s3_error(403, "AccessDenied", "There were headers present in the request "
                            f"which were not signed: {', '.join(unsigned)}")
        return None


def drain(request: Request) -> None:
    """Read and drop what is left of the body (up to :data:`DRAIN_LIMIT`)."""
    length = request.headers.get("Content-Length", "")
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if not chunked and not (length.isdigit() and int(length) <= DRAIN_LIMIT):
        return
    stream = request.stream
    read = 0
    while read < DRAIN_LIMIT:
        chunk = stream.read(READ_CHUNK)
        if not chunk:
            return
        read += len(chunk)


def s3_error(status: int, code: str, message: str) -> Response:
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{escape(message)}</Message>"
            f"<RequestId>{secrets.token_hex(8).upper()}</RequestId></Error>")
    return Response(body, status=status, content_type="application/xml",
                    headers={"Connection": "close"})

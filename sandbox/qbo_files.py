"""The bytes of QuickBooks attachments (``Attachable`` files) in the QBO sandbox.

A test gives a file's bytes, or only its size: then its content is generated from a seed, one
64 KiB block at a time, so a 200 MB receipt never sits in the sandbox's memory and the same
seed always gives the same bytes (tests compare SHA-256 digests, see :meth:`FileBody.sha256`).

Files are downloaded from a ``TempDownloadUri``: a loopback URL signed with a key only the
sandbox knows and carrying its expiry on the sandbox clock (15 minutes, as Intuit documents
for its download links), like the pre-signed S3 links QuickBooks hands out. No
``Authorization`` header is needed (or looked at).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import random
from collections.abc import Iterator
from dataclasses import dataclass

BLOCK = 64 * 1024
"""Bytes generated (and sent) at a time."""
DOWNLOAD_SECONDS = 15 * 60
"""How long a ``TempDownloadUri`` works: Intuit documents 15 minutes."""


@functools.lru_cache(maxsize=16)
def _base_block(seed: str) -> bytes:
    return random.Random(seed).randbytes(BLOCK)


@dataclass(frozen=True)
class FileBody:
    """A file's content: ``data`` when given, else ``size`` bytes generated from ``seed``."""

    size: int
    seed: str
    data: bytes | None = None

    @classmethod
    def of(cls, data: bytes | None, size: int | None, seed: str) -> FileBody:
        if data is not None:
            if size is not None and size != len(data):
                raise ValueError(f"size {size} does not match the {len(data)} bytes given")
            return cls(len(data), seed, bytes(data))
        if size is None or size < 0:
            raise ValueError("give the file's data or a size of 0 bytes or more")
        return cls(size, seed)

    def chunks(self) -> Iterator[bytes]:
        """The content, at most ``BLOCK`` bytes at a time (each block generated on demand:
        block ``n`` is the seed's block with ``n`` in its first 8 bytes)."""
        if self.data is not None:
            for start in range(0, len(self.data), BLOCK):
                yield self.data[start:start + BLOCK]
            return
        base = _base_block(self.seed)
        left = self.size
        index = 0
        while left > 0:
            block = index.to_bytes(8, "big") + base[8:]
            yield block[:left]
            left -= len(block[:left])
            index += 1

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for chunk in self.chunks():
            digest.update(chunk)
        return digest.hexdigest()

    def read(self) -> bytes:
        """All of it (for small files in tests)."""
        return b"".join(self.chunks())


def download_signature(key: bytes, realm_id: str, attachable_id: str, expires: int,
                       generation: int) -> str:
    message = f"{realm_id}\n{attachable_id}\n{expires}\n{generation}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()

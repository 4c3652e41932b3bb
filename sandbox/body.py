"""The sandbox servers' marker for a request that has no JSON body (not the same as a body of
``null``), shared by the Clio server and its OpenAPI request checks."""

from __future__ import annotations

from typing import Any

NO_BODY: Any = object()

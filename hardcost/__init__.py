"""hardcost: QuickBooks Online hard costs into Clio Manage, run from Slack.

The installed package is one namespace: ``hardcost.sync`` (the import engine, no Slack),
``hardcost.bot`` (the Slack app, built on ``sync``), ``hardcost.sandbox`` (QuickBooks, Clio and
Slack on loopback, for the demo and the tests) and, here at the top, the command line that
wires them (``hardcost.cli``). The source folders ``sync/``, ``bot/`` and ``sandbox/`` sit at
the repository root and are mapped into this namespace by ``pyproject.toml``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pkgutil import extend_path

# This folder holds only the top of the package; hardcost.sync, .bot and .sandbox live at the
# repository root. Where this folder comes first on sys.path (Python started in the checkout,
# pytest's `pythonpath`, an editor's project root), the rest is found in the editable
# install's tree of links (setup.cfg) further down sys.path. One folder only in a wheel.
__path__ = extend_path(__path__, __name__)

try:
    __version__ = version("hardcost")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

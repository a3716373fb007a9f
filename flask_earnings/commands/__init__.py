"""``flask earnings ...``: commands for the records of an app that uses the extension.

Registered for every Flask app through the ``flask.commands`` entry point. One module per
concern: ``records`` (report, tasks), ``rates`` and ``operations`` (recover, spool, init-db).
"""

from __future__ import annotations

from . import operations, rates, records
from .group import earnings_cli

__all__ = ["earnings_cli", "operations", "rates", "records"]

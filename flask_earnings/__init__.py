"""flask-earnings: every inference call through a Flask gateway becomes a task record with exact earnings."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .endpoints import Route
from .extension import Earnings
from .rates import DEFAULT_RATES, RateTable, RateTableError
from .tasks import EarningsBreakdown, Task, TaskStatus, TokensSource

try:
    __version__ = version("flask-earnings")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "DEFAULT_RATES",
    "Earnings",
    "EarningsBreakdown",
    "RateTable",
    "RateTableError",
    "Route",
    "Task",
    "TaskStatus",
    "TokensSource",
    "__version__",
]

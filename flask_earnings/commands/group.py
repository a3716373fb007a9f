"""The ``flask earnings`` group, and what its commands share: the app's registration, times."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import click
from flask import current_app

if TYPE_CHECKING:
    from ..extension import _AppState


@click.group("earnings")
def earnings_cli() -> None:
    """flask-earnings: reports, task records, rates, recovery and the spool."""


def app_state() -> _AppState:
    """The current app's registration; a clear error for an app without the extension."""
    state: _AppState | None = current_app.extensions.get("earnings")
    if state is None:
        raise click.ClickException("This app does not use flask-earnings (no Earnings registered on it).")
    return state


_AGO = re.compile(r"^(\d+)([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def moment(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """A ``--since``/``--until`` time: ISO 8601 (``2026-12-04``, ``2026-12-04T10:00``, UTC
    unless a zone is given), or a span ago (``30m``, ``24h``, ``7d``)."""
    if value is None:
        return None
    ago = _AGO.match(value.strip())
    if ago:
        return datetime.now(UTC) - timedelta(**{_UNITS[ago[2]]: int(ago[1])})
    try:
        found = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a time: give ISO 8601 (2026-12-04T10:00Z) or a span ago (24h, 7d)."
        ) from None
    return found if found.tzinfo is not None else found.replace(tzinfo=UTC)
